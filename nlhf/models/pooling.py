"""Pooling: a scorer's hidden states (N, T, H) into one vector per row (:mod:`nlhf.models.scorer`'s docstring)."""

from __future__ import annotations

import torch
from torch import Tensor

POOLINGS = ("last", "mean", "cls", "segments")


def pool_hidden(
    hidden: Tensor,
    attention_mask: Tensor,
    pooling: str,
    segment_ids: Tensor | None = None,
    num_segments: int = 2,
) -> Tensor:
    """Pool hidden states (N, T, H) into one vector per row (N, H) under ``attention_mask`` (N, T).

    ``"last"`` reads the last position whose mask is 1 (works for right or left padding),
    ``"mean"`` the masked mean, ``"cls"`` position 0. Every row must have a real token.
    ``"segments"`` returns (N, num_segments * H): for k = 1..num_segments the masked mean
    over the positions with ``segment_ids == k`` (N, T) (a zero vector for an empty slot).
    """
    mask = attention_mask.to(dtype=torch.long)  # (N, T)
    lengths = mask.sum(-1)  # (N,)
    if bool((lengths == 0).any()):
        raise ValueError(
            f"rows {torch.nonzero(lengths == 0).flatten().tolist()} have no tokens (all-zero mask)"
        )
    if pooling == "last":
        positions = torch.arange(mask.shape[1], device=mask.device)  # (T,)
        last = (mask * positions).amax(-1)  # (N,) index of the last real token
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # (N, H)
    if pooling == "mean":
        weights = mask.to(hidden.dtype).unsqueeze(-1)  # (N, T, 1)
        return (hidden * weights).sum(1) / lengths.to(hidden.dtype).unsqueeze(-1)  # (N, H)
    if pooling == "segments":
        if segment_ids is None:
            raise ValueError(
                "'segments' pooling needs segment_ids (N, T) (1 for the first response's tokens, 2 for the "
                "second's); the model's encode() returns them"
            )
        if segment_ids.shape != mask.shape:
            raise ValueError(
                f"segment_ids {tuple(segment_ids.shape)} and attention_mask {tuple(mask.shape)} differ"
            )
        pooled = []
        for k in range(1, num_segments + 1):
            slot = ((segment_ids == k) & (mask > 0)).to(hidden.dtype).unsqueeze(-1)  # (N, T, 1)
            count = slot.sum(1).clamp(min=1.0)  # (N, 1)
            pooled.append((hidden * slot).sum(1) / count)  # (N, H)
        return torch.cat(pooled, -1)  # (N, num_segments * H)
    if pooling == "cls":
        if bool((mask[:, 0] == 0).any()):
            raise ValueError("'cls' pooling needs right-padded rows (position 0 is padding in some row)")
        return hidden[:, 0]  # (N, H)
    raise ValueError(f"pooling must be one of {list(POOLINGS)}, got {pooling!r}")
