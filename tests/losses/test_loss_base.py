"""LossOutput accumulation helper and shared input checks."""

import pytest
import torch

from nlhf.losses.base import LossOutput, check_tau, metric_sums


def test_metric_sums_per_example_hand_values():
    """loss (1, 2, 3), metric a (0, 1, 1): sums loss 6, a 2, count 3."""
    out = LossOutput(loss=torch.tensor([1.0, 2.0, 3.0]), metrics={"a": torch.tensor([0.0, 1.0, 1.0])})
    sums = metric_sums(out)
    assert {k: float(v) for k, v in sums.items()} == {"loss": 6.0, "count": 3.0, "a": 2.0}


def test_metric_sums_per_token_hand_values():
    """Per-token loss ((1, 2, 9), (3, 9, 9)) with mask ((1, 1, 0), (1, 0, 0)): loss 6 over 3 tokens."""
    out = LossOutput(
        loss=torch.tensor([[1.0, 2.0, 9.0], [3.0, 9.0, 9.0]]),
        metrics={"r": torch.tensor([[1.0, 1.0, 5.0], [0.5, 5.0, 5.0]])},
    )
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    sums = metric_sums(out, mask)
    assert {k: float(v) for k, v in sums.items()} == {"loss": 6.0, "count": 3.0, "r": 2.5}
    with pytest.raises(ValueError, match="needs its"):
        metric_sums(out)


def test_check_tau():
    assert check_tau(torch.tensor(0.5), "x") == 0.5
    for bad in (0.0, -1.0, float("inf"), float("nan"), "0.1", None):
        with pytest.raises(ValueError, match="x: tau must be"):
            check_tau(bad, "x")
