"""A scorer's backbone: what kind it is, its base transformer, and its KV cache (:mod:`nlhf.models.scorer`).

The scorers (:class:`~nlhf.models.scorer.SequenceScorer` and its preference / reward
models) read a Hugging Face backbone: an encoder (MiniLM, BERT) or the base transformer of a
causal LM with its LM head dropped. For causal backbones the preference model's two
orders share a prefix, run once from a KV cache (:func:`shared_prefix_lengths`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from nlhf.models.forward import forward_signature
from nlhf.models.lora import is_peft_model


def backbone_kind(model: Any) -> str:
    """``"causal"`` for decoder-only LMs (Llama, GPT-2, ...), ``"encoder"`` for BERT-like models."""
    if is_peft_model(model):
        model = model.get_base_model()
    if type(model).__name__.endswith("ForCausalLM") or getattr(model.config, "is_decoder", False):
        return "causal"
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    model_type = getattr(model.config, "model_type", None)
    if (
        model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    ):
        return "causal"
    return "encoder"


def strip_lm_head(model: Any) -> Any:
    """The base transformer of a ``*ForCausalLM`` (LM head dropped); other models unchanged."""
    if is_peft_model(model):
        return model
    base = getattr(model, "base_model", model)
    return base if base is not None else model


def cache_argument(backbone: Any) -> str | None:
    """The keyword under which ``backbone``'s forward takes a KV cache (``"cache"`` in transformers 5,
    ``"past_key_values"`` before), or None when it takes none (:func:`nlhf.models.forward.forward_signature`)."""
    return forward_signature(backbone).cache_arg


def output_cache(output: Any) -> Any:
    """The KV cache a Hugging Face model output returned (``cache`` or ``past_key_values``), else None."""
    keys = output.keys() if hasattr(output, "keys") else ()
    for name in ("cache", "past_key_values"):
        if name in keys:
            return output[name]
    return None


def shared_prefix_lengths(input_ids: Tensor, attention_mask: Tensor, segment_ids: Tensor) -> Tensor | None:
    """Per pair, the length of the prefix both orders share, or None when rows i and B + i differ there.

    Rows 0..B-1 are (x, a, b), rows B..2B-1 (x, b, a) (2B, T), right-padded. The prefix of
    a row is everything before its first non-zero segment id (prompt and first marker);
    it must be the same tokens in both orders, non-empty, and leave at least one token to continue.
    """
    B = input_ids.shape[0] // 2
    T = input_ids.shape[1]
    lengths = attention_mask.long().sum(-1)  # (2B,)
    cols = torch.arange(T, device=input_ids.device).expand_as(input_ids)  # (2B, T)
    first = torch.where(segment_ids != 0, cols, T).amin(-1)  # (2B,) first response token
    if not torch.equal(first[:B], first[B:]) or bool((first >= lengths).any()) or bool((first < 1).any()):
        return None
    same = (input_ids[:B] == input_ids[B:]) | (cols[:B] >= first[:B].unsqueeze(1))  # (B, T)
    return first[:B] if bool(same.all()) else None
