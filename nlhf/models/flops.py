"""Model-FLOP accounting: the matmul FLOPs of every ``nn.Linear`` call, forward and backward, and the
machine's sgemm peak to compare them with (issue 14: "report each stage's achieved GFLOP/s").

:class:`LinearFlopCounter` is a context manager that installs one global module forward hook
(``torch.nn.modules.module.register_module_forward_hook``), so it sees every model in the process
(policy, reference, LoRA adapters, the judges) without being passed to them. For a call of a Linear
layer with ``in_features`` = I, ``out_features`` = O on an input of N rows (all leading dimensions)::

    forward  = 2 N I O                                  (one multiply-add = 2 FLOPs; the bias is not counted)
    backward = 2 N I O x ([input requires grad] + [weight requires grad])   when the output requires grad

The backward term is counted at forward time, on the assumption that a forward run with the output in
the autograd graph is back-propagated once (true for the trainers here; a recomputed forward under
gradient checkpointing is counted again, as it is computed again). Not counted: attention scores and
their weighted sums (4 T C d per layer for T new tokens over a context of C: under 5% of the linears'
FLOPs at the demo's lengths), element-wise ops, embedding lookups. Cost: one Python call per module
call (about 1-2% of a SmolLM2 decode step).
"""

from __future__ import annotations

import time
from typing import Any

import torch

__all__ = ["LinearFlopCounter", "sgemm_peak_gflops"]


class LinearFlopCounter:
    """Counts ``forward`` and ``backward`` matmul FLOPs of every ``nn.Linear`` call while active.

    >>> with LinearFlopCounter() as flops:
    ...     model(x).sum().backward()
    >>> flops.total  # forward + backward
    """

    def __init__(self) -> None:
        self.forward = 0
        self.backward = 0
        self._handle: Any = None

    @property
    def total(self) -> int:
        return self.forward + self.backward

    def _hook(self, module: torch.nn.Module, args: tuple, output: Any) -> None:
        if not isinstance(module, torch.nn.Linear) or not args or not isinstance(args[0], torch.Tensor):
            return
        x = args[0]
        rows = x.numel() // module.in_features  # N: every leading dimension
        flops = 2 * rows * module.in_features * module.out_features
        self.forward += flops
        if torch.is_grad_enabled() and isinstance(output, torch.Tensor) and output.requires_grad:
            self.backward += flops * (int(x.requires_grad) + int(module.weight.requires_grad))

    def __enter__(self) -> LinearFlopCounter:
        if self._handle is not None:
            raise RuntimeError("LinearFlopCounter is already active")
        self._handle = torch.nn.modules.module.register_module_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._handle.remove()
        self._handle = None


def sgemm_peak_gflops(threads: int | None = None, size: int = 1024, seconds: float = 1.0) -> float:
    """The best GFLOP/s of a float32 ``size x size`` matmul on the CPU over about ``seconds`` (the
    machine's practical sgemm peak at ``threads`` torch threads; None: the current setting)."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        a, b = torch.randn(size, size), torch.randn(size, size)
        torch.mm(a, b)  # warm-up
        best, start = float("inf"), time.perf_counter()
        while time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t0)
        return 2 * size**3 / best / 1e9
    finally:
        torch.set_num_threads(previous)
