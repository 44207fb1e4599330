"""DNO's contrastive loss and the mirror-prox pairwise loss (nlhf.losses.successors) on hand-worked numbers."""

import math

import pytest
import torch

from nlhf.losses.successors import dno_loss


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_dno_loss_hand_example_hard_and_soft_labels():
    chosen, rejected = t(-1.0, -1.0).requires_grad_(True), t(-2.0, -2.0).requires_grad_(True)
    out = dno_loss(chosen, rejected, t(-1.5, -1.5), t(-1.5, -1.5), t(1.0, 0.75), beta=2.0)
    # h = (-1 + 1.5) - (-2 + 1.5) = 1; beta h = 2; log(1 + e^-2) = 0.126928; log(1 + e^2) = 2.126928
    torch.testing.assert_close(out.metrics["h"], t(1.0, 1.0))
    torch.testing.assert_close(out.loss, t(0.126928, 0.626928), atol=1e-6, rtol=0)
    out.loss.sum().backward()
    s = 1.0 / (1.0 + math.exp(-2.0))  # sigma(2) = 0.880797
    # d loss / d log pi(y_w) = -beta (l - sigma(beta h)): l = 1 -> -0.238406; l = 0.75 -> +0.261594
    torch.testing.assert_close(chosen.grad, t(-2 * (1 - s), -2 * (0.75 - s)))
    torch.testing.assert_close(rejected.grad, -chosen.grad)


def test_dno_soft_label_minimiser_is_beta_h_equal_to_the_logit_of_the_label():
    """sigma(beta h) = l at the minimum: the tabular DNO step beta h = r(y_w) - r(y_l) (lab dno)."""
    beta, gap = 0.5, 0.3  # r(y_w) - r(y_l)
    h = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([h], lr=1.0, max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-15)
    zero = t(0.0)

    def closure():
        opt.zero_grad()
        loss = dno_loss(h, zero, zero, zero, torch.sigmoid(t(gap)), beta=beta).loss.sum()
        loss.backward()
        return loss

    opt.step(closure)
    assert float(beta * h.detach()) == pytest.approx(gap, abs=1e-6)


def test_dno_loss_no_gradient_through_the_snapshot_and_checks():
    snap = t(-1.5).requires_grad_(True)
    out = dno_loss(t(-1.0).requires_grad_(True), t(-2.0), snap, t(-1.0), t(1.0), beta=1.0)
    out.loss.sum().backward()
    assert snap.grad is None
    with pytest.raises(ValueError, match="beta"):
        dno_loss(t(-1.0), t(-1.0), t(-1.0), t(-1.0), t(1.0), beta=0.0)
    with pytest.raises(ValueError, match="label"):
        dno_loss(t(-1.0), t(-1.0), t(-1.0), t(-1.0), t(1.5), beta=1.0)
    with pytest.raises(ValueError, match="one shape"):
        dno_loss(t(-1.0, 0.0), t(-1.0), t(-1.0), t(-1.0), t(1.0), beta=1.0)


def test_mirror_pair_loss_hand_example_and_inpo_as_a_special_case():
    from nlhf.losses.successors import inpo_loss, mirror_pair_loss

    first, second = t(-1.0).requires_grad_(True), t(-2.0).requires_grad_(True)
    out = mirror_pair_loss(first, second, t(-1.5), t(-1.5), t(-2.0), t(-1.0), t(-0.2), eta=1.0, tau=0.5)
    # h = 1 - 0.5 (-1) - 0.5 (0) = 1.5; target -0.2; loss 1.7^2
    torch.testing.assert_close(out.metrics["h"], t(1.5))
    torch.testing.assert_close(out.loss, t(2.89))
    out.loss.sum().backward()
    torch.testing.assert_close(first.grad, t(3.4))
    torch.testing.assert_close(second.grad, t(-3.4))
    args = (t(-0.3, 0.2), t(-1.1, -0.4), t(-0.5, 0.1), t(-0.9, -0.2), t(-2.0, -0.1), t(-1.0, -0.7))
    torch.testing.assert_close(inpo_loss(*args, t(0.9, 0.15), eta=2.0, tau=0.3).loss,
                               mirror_pair_loss(*args, t(0.4, -0.35), eta=2.0, tau=0.3).loss)  # fmt: skip
    with pytest.raises(ValueError, match="payoff_gap"):
        mirror_pair_loss(*args, t(0.4, -1.5), eta=2.0, tau=0.3)
