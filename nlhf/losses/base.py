"""What every loss returns, and the input checks they share.

Every loss of :mod:`nlhf.losses` returns a :class:`LossOutput` of *unreduced* values:
one loss per example (pair, sample) -- or per token for the token-level PPO surrogate --
so that the training loop can normalise by the number of pairs or tokens over the whole
accumulated batch, not by micro-batch (a mean of micro-batch means is not the large-batch
loss when micro-batches differ in size or length).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass(frozen=True)
class LossOutput:
    """Unreduced loss and metrics.

    loss: (B,) per example, or (B, T) per token (zero outside the mask) for token-level losses;
        differentiable. The trainer sums and divides by its own count.
    metrics: name -> detached tensor of the same shape as ``loss`` (each loss's docstring
        names them and, for every KL, its estimator).
    """

    loss: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)


def check_tau(tau: float, where: str) -> float:
    """tau > 0 as a Python float (THEORY.md Sec. 0)."""
    if isinstance(tau, Tensor):
        tau = float(tau)
    if not (isinstance(tau, int | float) and tau > 0 and tau != float("inf")):
        raise ValueError(f"{where}: tau must be a finite number > 0, got {tau!r}")
    return float(tau)


def check_same_shape(where: str, ndim: int, **tensors: Tensor) -> tuple[int, ...]:
    """All tensors have one shape with ``ndim`` dimensions; returns it."""
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    first = next(iter(shapes.values()))
    if any(s != first for s in shapes.values()) or len(first) != ndim:
        listed = ", ".join(f"{k} {v}" for k, v in shapes.items())
        raise ValueError(f"{where}: expected tensors of one shape with {ndim} dimension(s), got {listed}")
    return first


def check_probabilities(where: str, name: str, values: Tensor) -> None:
    """Values in [0, 1] (labels, preferences); names the first bad row."""
    bad = ~((values >= 0) & (values <= 1))  # NaN is bad too
    if bool(bad.any()):
        row = int(bad.flatten().nonzero()[0])
        raise ValueError(f"{where}: {name} must lie in [0, 1]; row {row} is {float(values.flatten()[row])}")


def zero_outside(values: Tensor, mask: Tensor) -> Tensor:
    """``values`` where ``mask`` is set, exactly 0 elsewhere (also for inf/NaN padding, and with zero gradient)."""
    return torch.where(mask.to(torch.bool), values, torch.zeros((), dtype=values.dtype, device=values.device))


def as_mask(mask: Tensor, like: Tensor) -> Tensor:
    """A 0/1 mask in ``like``'s dtype (a bool mask is the usual input)."""
    return mask.to(dtype=like.dtype if like.is_floating_point() else torch.float32)


def metric_sums(output: LossOutput, mask: Tensor | None = None) -> dict[str, Tensor]:
    """Sums of the loss and of every metric, plus ``count``, for accumulation across micro-batches.

    The trainer adds these sums over all micro-batches of a step and divides by the total
    ``count`` at the end (a mean of micro-batch means would weight small micro-batches more).
    ``count`` is the number of examples for a (B,) loss, or of mask tokens for a (B, T) loss
    (then ``mask`` (B, T) is required). All values are detached 0-d tensors (no device sync).
    Example: loss (1, 2, 3), metric a (0, 1, 1) -> loss 6, a 2, count 3.
    """
    loss = output.loss.detach()
    if loss.dim() == 2:
        if mask is None or tuple(mask.shape) != tuple(loss.shape):
            raise ValueError(f"metric_sums: a per-token loss {tuple(loss.shape)} needs its (B, T) mask")
        weights = as_mask(mask, loss)  # (B, T)
    elif loss.dim() == 1:
        weights = torch.ones_like(loss)  # (B,)
    else:
        raise ValueError(f"metric_sums: loss must be (B,) or (B, T), got {tuple(loss.shape)}")
    sums = {"loss": (loss * weights).sum(), "count": weights.sum()}
    for name, value in output.metrics.items():
        if tuple(value.shape) != tuple(loss.shape):
            raise ValueError(
                f"metric_sums: metric {name!r} has shape {tuple(value.shape)}, loss {tuple(loss.shape)}"
            )
        sums[name] = (value.detach() * weights).sum()
    return sums
