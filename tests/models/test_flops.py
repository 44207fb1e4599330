"""LinearFlopCounter against torch's own FlopCounterMode (an independent count) and a hand count."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nlhf.models.flops import LinearFlopCounter, sgemm_peak_gflops


def _net(frozen_first: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3), torch.nn.Linear(3, 2)
    )
    if frozen_first:  # like LoRA on the last blocks: the first layer neither needs nor passes gradients
        net[0].requires_grad_(False)
    return net


def test_hand_count_forward_and_backward():
    net = _net(frozen_first=True)
    x = torch.randn(4, 7, 6)  # N = 28 rows
    with LinearFlopCounter() as flops:
        net(x).sum().backward()
    per = [2 * 28 * 6 * 5, 2 * 28 * 5 * 3, 2 * 28 * 3 * 2]
    assert flops.forward == sum(per)
    # layer 0: input and weight need no gradient; layer 1: weight only (its input comes from a frozen layer);
    # layer 2: weight and input
    assert flops.backward == per[1] * 1 + per[2] * 2


@pytest.mark.parametrize("frozen_first", [False, True])
def test_matches_torch_flop_counter(frozen_first):
    net = _net(frozen_first)
    x = torch.randn(3, 6, requires_grad=not frozen_first)
    with FlopCounterMode(display=False) as reference, LinearFlopCounter() as flops:
        net(x).sum().backward()
    assert flops.total == reference.get_total_flops()


def test_no_grad_counts_forward_only_and_hook_is_removed():
    net = _net(frozen_first=False)
    with LinearFlopCounter() as flops, torch.no_grad():
        net(torch.randn(2, 6))
    assert (flops.forward, flops.backward) == (2 * 2 * (30 + 15 + 6), 0)
    before = flops.total
    net(torch.randn(2, 6))  # outside the context: not counted
    assert flops.total == before
    with pytest.raises(RuntimeError, match="already active"), flops, flops:
        pass


def test_sgemm_peak_is_a_rate():
    peak = sgemm_peak_gflops(threads=1, size=128, seconds=0.05)
    assert 0.05 < peak < 1e5
