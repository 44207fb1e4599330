"""Step callbacks: ``on_step(step, metrics) -> bool``, called by the shared loop after every optimiser step.

A callback is a function ``on_step(step, metrics)`` or an object with an ``on_step``
method. ``step`` counts optimiser steps from 1; ``metrics`` holds the step's own weighted
means (``loss``, the trainer's metrics, ``grad_norm``, ``lr``; ``skipped_steps`` on a
NaN/inf step) and, on a step that evaluates every ``loop.eval_every`` steps, the
evaluation's metrics as ``eval/<name>``. Returning ``True`` stops the run cleanly after
that step: the loop treats it as the last step (the train metrics logged, the end-of-run
evaluation, a final checkpoint when ``loop.save_every`` is set), and the trainer then saves
the policy and ``metrics.json`` as at a normal end. ``False`` or ``None`` continues; any
other return value is an error (a callback that returns a metric by mistake must not stop a
run silently). Under several processes every process calls its callbacks and the run stops
when any of them asks to (the decision is all-reduced, so all processes stop together).

Callbacks are passed in Python, never read from YAML: :class:`nlhf.train.loop.TrainLoop`
takes ``callbacks=``, and since the trainers build their loop themselves, the Python API
(``nlhf.train_nash_md(..., callbacks=[...])``) sets them for the duration of the run with
:func:`step_callbacks`, which every loop built inside picks up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from nlhf.train.metrics_log import MetricsWindow

StepCallback = Callable[[int, Mapping[str, float]], "bool | None"]

_ACTIVE: ContextVar[tuple[StepCallback, ...]] = ContextVar("nlhf_step_callbacks", default=())


def as_callbacks(callbacks: Any) -> tuple[StepCallback, ...]:
    """``None`` -> ``()``; a callable or an object with ``on_step`` -> one callback; a sequence -> each of its items.

    A ``TypeError`` naming ``callbacks`` for anything else.
    """
    if callbacks is None:
        return ()
    items = callbacks if isinstance(callbacks, Sequence) and not isinstance(callbacks, str) else [callbacks]
    out = []
    for i, item in enumerate(items):
        on_step = getattr(item, "on_step", None)
        if callable(on_step):
            out.append(on_step)
        elif callable(item):
            out.append(item)
        else:
            raise TypeError(
                f"callbacks[{i}]: expected on_step(step, metrics) -> bool or an object with an on_step method, "
                f"got {type(item).__name__}"
            )
    return tuple(out)


@contextmanager
def step_callbacks(callbacks: Any) -> Iterator[tuple[StepCallback, ...]]:
    """Within the block, every :class:`~nlhf.train.loop.TrainLoop` built without ``callbacks=`` calls these."""
    token = _ACTIVE.set(as_callbacks(callbacks))
    try:
        yield _ACTIVE.get()
    finally:
        _ACTIVE.reset(token)


def active_callbacks() -> tuple[StepCallback, ...]:
    """The callbacks set by the innermost :func:`step_callbacks` block (``()`` outside any)."""
    return _ACTIVE.get()


def call_callbacks(callbacks: Sequence[StepCallback], step: int, metrics: Mapping[str, float]) -> bool:
    """Call every callback (each with its own copy of ``metrics``); True when any returned True."""
    stop = False
    for callback in callbacks:
        answer = callback(step, dict(metrics))
        if answer is not None and not isinstance(answer, bool):
            name = getattr(callback, "__qualname__", type(callback).__name__)
            raise TypeError(
                f"callback {name} returned {answer!r} at step {step}: on_step must return True (stop), False or None"
            )
        stop = stop or bool(answer)
    return stop


def should_stop(
    callbacks: Sequence[StepCallback], step: int, metrics: Mapping[str, float], accelerator: Any
) -> bool:
    """:func:`call_callbacks`, the answer all-reduced over processes (any True stops every process at this step)."""
    stop = call_callbacks(callbacks, step, metrics)
    if getattr(accelerator, "num_processes", 1) > 1:
        import torch

        flag = torch.tensor([float(stop)], device=accelerator.device)  # (1,)
        stop = bool(accelerator.reduce(flag, reduction="sum").item() > 0)
    return stop


def loop_should_stop(loop: Any, totals: Mapping[str, float], grad_norm: float, skipped: str | None,
                     evaluated: Mapping[str, float] | None) -> bool:  # fmt: skip
    """The :class:`~nlhf.train.loop.TrainLoop`'s callbacks on its step's metrics (the step's ``totals`` as
    :class:`~nlhf.train.metrics_log.MetricsWindow` means, ``grad_norm``, ``lr``, and ``eval/<name>`` of an
    evaluation at this step); True: stop after this step."""
    if not loop.callbacks:
        return False
    window = MetricsWindow()
    window.add(totals, grad_norm, skipped)
    metrics = {**window.means(), "lr": loop.lr_used, **{f"eval/{k}": v for k, v in (evaluated or {}).items()}}
    return should_stop(loop.callbacks, loop.step, metrics, loop.accelerator)


__all__ = [
    "StepCallback",
    "loop_should_stop",
    "active_callbacks",
    "as_callbacks",
    "call_callbacks",
    "should_stop",
    "step_callbacks",
]
