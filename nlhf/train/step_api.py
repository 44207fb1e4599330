"""What a trainer's step function and the shared loop (:mod:`nlhf.train.loop`) exchange.

A step function maps one micro-batch to a :class:`StepOutput` (per-example loss sums,
weights and metrics); the loop tells it where the micro-batch sits in the run with a
:class:`StepContext`. Objects handed to the loop as ``stateful`` follow :class:`Stateful`;
:class:`TrainResult` is what ``TrainLoop.run`` returns. The normalisation these shapes
serve is in :mod:`nlhf.train.loop`'s docstring.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass
class StepOutput:
    """What a step (or eval) function returns for one micro-batch.

    ``losses[i]`` is example i's loss already *summed* over its weight units (its tokens,
    or 1 for a pair-level loss), and ``weights[i]`` the number of those units. The loop
    divides the global sum of ``losses`` by the global sum of ``weights``.
    """

    losses: Any  # (B,) per-example summed loss; must carry grad in training
    weights: Any  # (B,) per-example weight (tokens or pairs), >= 0
    metrics: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # name -> ((B,) values, (B,) weights)
    outputs: dict[str, Any] = field(default_factory=dict)  # eval only: name -> (B, ...) per-example outputs


@dataclass(frozen=True)
class StepContext:
    """Where a micro-batch sits in the run (for per-example seeding, e.g. of samplers)."""

    step: int  # optimiser step being computed, 0-based
    micro_step: int  # micro-batch within the step, 0 .. grad_accum_steps - 1
    indices: tuple[int, ...]  # dataset indices of the examples
    positions: tuple[int, ...]  # their positions in the global data stream (unique over the run)
    process_index: int = 0
    training: bool = True


StepFn = Callable[[Any, Any, StepContext], StepOutput]


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


@dataclass
class TrainResult:
    step: int  # optimiser steps attempted (== max_steps when the run finished)
    updates: int  # steps that changed the weights
    nonfinite_steps: int  # steps skipped for a NaN/inf loss or gradient
    train_metrics: dict[str, float]  # the last logged window
    eval_metrics: dict[str, float]  # the last evaluation ({} if none)
    eval_outputs: dict[str, Any]  # per-example outputs of the last evaluation, in dataset order
    checkpoint: Path | None  # the newest checkpoint
