"""The optimiser and the learning-rate schedule of the shared loop: AdamW, warm-up, cosine / linear decay."""

from __future__ import annotations

import math
from typing import Any

from nlhf.train.config import OptimConfig


def make_optimizer(model: Any, cfg: OptimConfig, fused: bool | None = None) -> Any:
    """AdamW over the trainable parameters; no weight decay on vectors (biases, norms).

    ``fused`` (default: wherever torch supports it) uses torch's fused AdamW kernel, which
    updates all parameters in one pass: on one CPU thread ~4x faster than the
    per-parameter loop (4 ms instead of 14-23 ms a step for 4.3M parameters; Hugging Face's
    Trainer, hence TRL, uses it by default). It falls back to the plain implementation
    where the kernel refuses the parameters' device or dtype. The update is AdamW's either way.
    """
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [
        g
        for g in (
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        )
        if g["params"]
    ]
    kwargs = dict(lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    if fused is not False:
        try:
            return torch.optim.AdamW(groups, fused=True, **kwargs)
        except (RuntimeError, ValueError, TypeError):
            if fused:
                raise
    return torch.optim.AdamW(groups, **kwargs)


def lr_factor(updates: int, cfg: OptimConfig, total_steps: int) -> float:
    """The multiplier of ``cfg.lr`` for the update that follows ``updates`` earlier ones.

    Warm-up: ``(updates + 1) / (warmup_steps + 1)`` while ``updates < warmup_steps`` (the
    first update is not wasted at lr 0). Then, with ``p`` the fraction of the remaining
    ``total_steps - warmup_steps`` updates done, ``cosine``:
    ``m + (1 - m) (1 + cos(pi p)) / 2``, ``linear``: ``m + (1 - m)(1 - p)``, ``constant``: 1,
    where ``m = min_lr_ratio``.
    """
    if updates < cfg.warmup_steps:
        return (updates + 1) / (cfg.warmup_steps + 1)
    if cfg.schedule == "constant":
        return 1.0
    p = min(1.0, (updates - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
    m = cfg.min_lr_ratio
    if cfg.schedule == "cosine":
        return m + (1.0 - m) * 0.5 * (1.0 + math.cos(math.pi * p))
    return m + (1.0 - m) * (1.0 - p)


def make_scheduler(optimizer: Any, cfg: OptimConfig, total_steps: int) -> Any:
    """A ``LambdaLR`` following :func:`lr_factor`."""
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda updates: lr_factor(updates, cfg, total_steps))


__all__ = ["lr_factor", "make_optimizer", "make_scheduler"]
