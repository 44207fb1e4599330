"""BCE for the pairwise preference model and Bradley-Terry: hand-worked numbers (THEORY.md Sec. 1)."""

import math

import pytest
import torch

from nlhf.losses.preference import bce_preference_loss, bradley_terry_loss

D = torch.float64
LN3 = math.log(3.0)


def test_bce_hand_values_soft_labels_and_gradient():
    """z = ln 3 (sigmoid 0.75). label 1: -ln 0.75 = 0.287682; label 0.25: -(0.25 ln 0.75 + 0.75 ln 0.25)
    = 1.111641; label 0: -ln 0.25 = 1.386294. z = 0: ln 2 = 0.693147 whatever the label.
    d loss / d z = sigmoid(z) - p: -0.25, 0.5, 0.75, 0 (z = 0, p = 1/2)."""
    z = torch.tensor([LN3, LN3, LN3, 0.0], dtype=D, requires_grad=True)
    p = torch.tensor([1.0, 0.25, 0.0, 0.5], dtype=D)
    out = bce_preference_loss(z, p)
    torch.testing.assert_close(
        out.loss, torch.tensor([0.2876820725, 1.1116412890, 1.3862943611, 0.6931471806], dtype=D)
    )
    out.loss.sum().backward()
    torch.testing.assert_close(z.grad, torch.tensor([-0.25, 0.5, 0.75, 0.0], dtype=D))
    torch.testing.assert_close(out.metrics["prob"], torch.tensor([0.75, 0.75, 0.75, 0.5], dtype=D))
    assert out.metrics["accuracy"].tolist() == [1.0, 0.0, 0.0, 0.5]


def test_bce_soft_label_minimum_is_the_label():
    """At sigmoid(z) = p the gradient vanishes and the loss is the label's entropy:
    p = 0.25, z = -ln 3: H = -(0.25 ln 0.25 + 0.75 ln 0.75) = 0.562335."""
    z = torch.tensor([-LN3], dtype=D, requires_grad=True)
    out = bce_preference_loss(z, torch.tensor([0.25], dtype=D))
    out.loss.sum().backward()
    assert abs(float(out.loss[0].detach()) - 0.5623351446) < 1e-9
    assert abs(float(z.grad[0])) < 1e-12


def test_bce_is_stable_for_large_logits():
    """z = 100, label 0: the loss is 100 + log(1 + e^-100) = 100 exactly in float64 (a probability
    rounded to 1 would give inf)."""
    out = bce_preference_loss(torch.tensor([100.0], dtype=D), torch.tensor([0.0], dtype=D))
    assert float(out.loss[0]) == 100.0


def test_bce_is_symmetric_under_swapping_the_pair():
    """Swapping first and second negates the antisymmetric logit and turns p into 1 - p: the loss is
    unchanged. z = 1.1, p = 0.3 and z = -1.1, p = 0.7 both give -(0.3 ln sig(1.1) + 0.7 ln sig(-1.1))
    = 0.3 * 0.287335 + 0.7 * 1.387335 = 1.057335."""
    z = torch.tensor([1.1, -1.1], dtype=D)
    out = bce_preference_loss(z, torch.tensor([0.3, 0.7], dtype=D))
    torch.testing.assert_close(out.loss, torch.full((2,), 1.0573353251, dtype=D), rtol=0, atol=1e-6)


def test_bradley_terry_hand_values():
    """r = (1, 1 - ln 3): margin ln 3, label 1 -> 0.287682; d/dr1 = sigmoid(ln 3) - 1 = -0.25, d/dr2 = +0.25.
    r = (0, 0): ln 2 with label 0.3."""
    r1 = torch.tensor([1.0, 0.0], dtype=D, requires_grad=True)
    r2 = torch.tensor([1.0 - LN3, 0.0], dtype=D, requires_grad=True)
    out = bradley_terry_loss(r1, r2, torch.tensor([1.0, 0.3], dtype=D))
    torch.testing.assert_close(out.loss, torch.tensor([0.2876820725, 0.6931471806], dtype=D))
    out.loss.sum().backward()
    torch.testing.assert_close(r1.grad, torch.tensor([-0.25, 0.2], dtype=D))
    torch.testing.assert_close(r2.grad, torch.tensor([0.25, -0.2], dtype=D))
    torch.testing.assert_close(out.metrics["reward_margin"], torch.tensor([LN3, 0.0], dtype=D))


def test_preference_errors():
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\]; row 1 is -0.5"):
        bce_preference_loss(torch.zeros(2), torch.tensor([1.0, -0.5]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\]; row 0 is nan"):
        bradley_terry_loss(torch.zeros(1), torch.zeros(1), torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match="one shape"):
        bce_preference_loss(torch.zeros(2), torch.zeros(3))
