"""SPPO's and INPO's square losses (nlhf.losses.successors) on hand-worked numbers."""

import pytest
import torch

from nlhf.losses.successors import inpo_loss, sppo_loss


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_sppo_loss_hand_example():
    logp = t(-1.0, -1.0).requires_grad_(True)
    out = sppo_loss(logp, t(-1.5, -1.5), t(0.75, 0.25), eta=2.0)
    # log_ratio 0.5; targets 2 (0.25) = 0.5 and 2 (-0.25) = -0.5
    torch.testing.assert_close(out.loss, t(0.0, 1.0))
    torch.testing.assert_close(out.metrics["target"], t(0.5, -0.5))
    out.loss.sum().backward()
    torch.testing.assert_close(logp.grad, t(0.0, 2.0))  # 2 (0.5 - (-0.5))


def test_sppo_loss_no_gradient_through_the_snapshot_and_checks():
    snap = t(-1.5).requires_grad_(True)
    out = sppo_loss(t(-1.0).requires_grad_(True), snap, t(0.5), eta=1.0)
    out.loss.sum().backward()
    assert snap.grad is None
    with pytest.raises(ValueError, match="eta"):
        sppo_loss(t(-1.0), t(-1.0), t(0.5), eta=0.0)
    with pytest.raises(ValueError, match="win_rate"):
        sppo_loss(t(-1.0), t(-1.0), t(1.5), eta=1.0)


def test_inpo_loss_hand_example():
    first, second = t(-1.0).requires_grad_(True), t(-2.0).requires_grad_(True)
    out = inpo_loss(first, second, t(-1.5), t(-1.5), t(-2.0), t(-1.0), t(0.9), eta=1.0, tau=0.5)
    # h = (-1 + 2) - 0.5 (-2 + 1) - 0.5 (0) = 1.5; target 1 (0.9 - 0.5) = 0.4; loss 1.1^2
    torch.testing.assert_close(out.metrics["h"], t(1.5))
    torch.testing.assert_close(out.loss, t(1.21))
    out.loss.sum().backward()
    torch.testing.assert_close(first.grad, t(2.2))
    torch.testing.assert_close(second.grad, t(-2.2))


def test_inpo_soft_label_equals_the_ordered_pair_loss_up_to_a_constant():
    """p (h - eta/2)^2 + (1 - p) (-h - eta/2)^2 = (h - eta (p - 1/2))^2 + eta^2 p (1 - p), for every h."""
    eta, tau, p = 0.8, 0.5, 0.7
    for margin in (-1.0, 0.3, 2.0):
        a = t(margin)
        zero = t(0.0)
        soft = inpo_loss(a, zero, zero, zero, zero, zero, t(p), eta=eta, tau=tau).loss
        forward = inpo_loss(a, zero, zero, zero, zero, zero, t(1.0), eta=eta, tau=tau).loss  # y wins
        backward = inpo_loss(zero, a, zero, zero, zero, zero, t(1.0), eta=eta, tau=tau).loss  # y' wins
        torch.testing.assert_close(p * forward + (1 - p) * backward, soft + eta**2 * p * (1 - p))


def test_inpo_loss_refuses_eta_tau_above_one():
    zero = t(0.0)
    with pytest.raises(ValueError, match="eta \\* tau <= 1"):
        inpo_loss(zero, zero, zero, zero, zero, zero, t(0.5), eta=4.0, tau=0.5)
