"""A causal LM called with its own KV cache: the model side of the decode loop.

:class:`CachedLM` holds one model's cache, attention mask and next positions for a batch of
left-padded prompts: ``prefill`` runs the prompts once (rows that repeat a prompt, e.g. the
k samples of one prompt, are prefilled once and their cache rows copied), ``step`` feeds
one new token per row. Each model has its own cache, so in the geometric mixture each model
only ever attends to its own states (docs/PEERS.md: the shared-cache pitfall).
:func:`sampling_mode` puts models in eval mode, without gradients, for a sampling call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from nlhf.models.forward import forward_signature, unwrap_model
from nlhf.sampling.logits import position_ids_from_mask


def _new_cache(model: Any) -> Any:
    from transformers import DynamicCache

    config = getattr(model, "config", None)
    try:
        return DynamicCache(config=config) if config is not None else DynamicCache()
    except TypeError:  # pragma: no cover - older signatures
        return DynamicCache()


def distinct_rows(prompt_ids: Tensor, prompt_mask: Tensor) -> tuple[Tensor | None, Tensor | None]:
    """(first, inverse): row indices of the distinct (ids, mask) rows and, per row, its distinct row's
    position in ``first`` (``rows == rows[first][inverse]``); ``(None, None)`` when no row repeats."""
    B = prompt_ids.shape[0]
    if B < 2:
        return None, None
    key = torch.where(prompt_mask.bool(), prompt_ids, torch.full_like(prompt_ids, -1))  # (B, P): pads ignored
    unique, inverse = torch.unique(key, dim=0, return_inverse=True)  # (U, P), (B,)
    U = unique.shape[0]
    if U == B:
        return None, None
    first = torch.full((U,), B, dtype=torch.long, device=prompt_ids.device)
    first = first.scatter_reduce(0, inverse, torch.arange(B, device=prompt_ids.device), reduce="amin")  # (U,)
    order = torch.argsort(first)  # keep the distinct rows in batch order
    rank = torch.empty_like(order)
    rank[order] = torch.arange(U, device=order.device)
    return first[order], rank[inverse]


def _selectable(cache: Any) -> bool:
    from transformers import DynamicCache

    return type(cache) is DynamicCache and hasattr(cache, "batch_select_indices")


def _cache_rows_are(cache: Any, rows: int) -> bool:
    """Whether every layer of the cache holds ``rows`` rows (False for an empty cache)."""
    layers = getattr(cache, "layers", None) or []
    keys = [getattr(layer, "keys", None) for layer in layers]
    return bool(keys) and all(k is not None and k.dim() > 0 and k.shape[0] == rows for k in keys)


class CachedLM:
    """One causal LM with its own KV cache over B rows of left-padded prompts.

    ``prefill(prompt_ids)`` and ``step(tokens)`` each return the next-token logits (B, V)
    float32. Every appended token is attended (mask 1), finished rows included: their
    continuations are ignored, and rows never attend to each other.
    """

    def __init__(self, model: Any, prompt_mask: Tensor, max_new_tokens: int) -> None:
        self.model = model
        signature = forward_signature(model)
        self.cache_kw = signature.cache_arg or "past_key_values"
        self.keeps_logits = signature.logits_to_keep
        self.cache = _new_cache(unwrap_model(model))
        B, P = prompt_mask.shape
        ones = torch.ones((B, max_new_tokens), dtype=prompt_mask.dtype, device=prompt_mask.device)
        self.mask = torch.cat([prompt_mask, ones], dim=1)  # (B, P + max_new_tokens)
        self.width = P  # tokens in the cache so far
        self.next_position = prompt_mask.long().sum(dim=-1, keepdim=True)  # (B, 1)

    def _forward(
        self, input_ids: Tensor, position_ids: Tensor, attention_mask: Tensor | None = None
    ) -> Tensor:
        kwargs = {self.cache_kw: self.cache, "use_cache": True}
        if self.keeps_logits:
            kwargs["logits_to_keep"] = 1
        out = self.model(
            input_ids=input_ids,
            attention_mask=self.mask[:, : self.width] if attention_mask is None else attention_mask,
            position_ids=position_ids,
            **kwargs,
        )
        return out.logits[:, -1].float()  # (B, V)

    def prefill(self, prompt_ids: Tensor) -> Tensor:
        """Run the prompts; rows repeating an earlier row's prompt (same ids and mask) are run once.

        Trainers and samplers often repeat a prompt (Nash-MD's y and y' rows, k samples per
        prompt): the distinct rows are prefilled and the cache rows copied
        (``DynamicCache.batch_select_indices``), the same keys and values for a fraction of
        the work. Models whose cache is not a plain ``DynamicCache`` run every row.
        """
        mask = self.mask[:, : self.width]  # (B, P)
        positions = position_ids_from_mask(mask)  # (B, P)
        first, inverse = distinct_rows(prompt_ids, mask)
        if first is None or not _selectable(self.cache):
            return self._forward(prompt_ids, positions)
        logits = self._forward(prompt_ids[first], positions[first], mask[first])  # (U, V)
        if not _cache_rows_are(self.cache, first.numel()):  # the model kept no per-row cache: run every row
            self.cache = _new_cache(unwrap_model(self.model))
            return self._forward(prompt_ids, positions)
        self.cache.batch_select_indices(inverse)  # (U, ...) -> (B, ...)
        return logits[inverse]  # (B, V)

    def step(self, tokens: Tensor) -> Tensor:
        self.width += 1
        logits = self._forward(tokens.unsqueeze(-1), self.next_position)  # tokens (B,) -> (B, 1)
        self.next_position = self.next_position + 1
        return logits


@contextlib.contextmanager
def sampling_mode(*models: Any) -> Iterator[None]:
    """No autograd graph and eval mode (no dropout) for the block; training flags restored after."""
    from nlhf.models.policy import eval_mode

    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.no_grad())
        seen: set[int] = set()
        for model in models:
            if isinstance(model, torch.nn.Module) and id(model) not in seen:
                seen.add(id(model))
                stack.enter_context(eval_mode(model))
        yield


__all__ = ["CachedLM", "distinct_rows", "sampling_mode"]
