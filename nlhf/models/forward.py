"""What a causal LM's ``forward`` accepts: the one signature check nlhf makes.

Transformers 5 takes the KV cache as ``cache``, earlier versions as ``past_key_values``;
newer models take ``logits_to_keep``; nlhf's own :class:`~nlhf.models.tabular.TabularLM`
takes no cache at all. The decode loop (:mod:`nlhf.sampling.decode`), the offline
trainer's prompt sharing (:mod:`nlhf.train.pair_logps`) and the scorers' shared-prefix
cache (:mod:`nlhf.models.scorer`) all read it here, behind nlhf's ``Reference`` and peft's
wrappers.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ForwardSignature:
    """How a model's forward takes a KV cache back, and whether it takes ``logits_to_keep``."""

    cache_arg: str | None  # "cache" (transformers >= 5.x), "past_key_values", or None: no cache argument
    logits_to_keep: bool


def unwrap_model(model: Any) -> Any:
    """The innermost model behind nlhf's :class:`~nlhf.models.policy.Reference` and peft wrappers."""
    for _ in range(8):
        target = getattr(model, "_target", None)  # nlhf.models.Reference
        if callable(target):
            model = target()
            continue
        base = getattr(model, "get_base_model", None)  # peft
        if callable(base) and base() is not model:
            model = base()
            continue
        break
    return model


@functools.lru_cache(maxsize=64)
def signature_of(model_type: type) -> ForwardSignature:
    """The :class:`ForwardSignature` of a model class (no cache argument when the signature cannot be read)."""
    try:
        params = inspect.signature(model_type.forward).parameters
    except (TypeError, ValueError):
        return ForwardSignature(None, False)
    cache_arg = "cache" if "cache" in params else "past_key_values" if "past_key_values" in params else None
    return ForwardSignature(cache_arg, "logits_to_keep" in params)


def forward_signature(model: Any) -> ForwardSignature:
    """The :class:`ForwardSignature` of ``model``'s innermost causal LM (:func:`unwrap_model`)."""
    return signature_of(type(unwrap_model(model)))


__all__ = ["ForwardSignature", "forward_signature", "signature_of", "unwrap_model"]
