"""Memory and speed settings of the models the trainers load: dtype ``auto``, the attention kernel,
QLoRA's quantised base and gradient checkpointing (README, "Memory and speed").

* ``dtype: auto`` (:func:`resolve_auto_dtype`): bfloat16 when the run uses a CUDA GPU, float32 on
  the CPU; resolved once, before the model loads, and saved so in the run's ``config.yaml``.
* ``attn_implementation`` (:data:`ATTN_IMPLEMENTATIONS`): passed to ``from_pretrained``;
  ``flash_attention_2`` needs a CUDA GPU and the ``flash_attn`` package (:func:`check_attn_implementation`).
* ``lora.quantize`` (:data:`QUANTIZE_MODES`): the frozen base loaded in 4bit NF4 (compute dtype
  bfloat16) or 8bit by bitsandbytes, CUDA only (:func:`check_quantize`, :func:`quantization_config`);
  the trainers then run peft's ``prepare_model_for_kbit_training`` before adding the adapters.
  Written, not run here (no GPU, no bitsandbytes in CI).
* ``gradient_checkpointing`` (:func:`enable_gradient_checkpointing`): each decoder layer's
  activations recomputed in the backward pass (non-reentrant), the same gradients.

The checks raise :class:`nlhf.config.ConfigError` naming the key, before any model loads.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from nlhf.config import check
from nlhf.models.files import resolve_dtype
from nlhf.models.lora import is_peft_model

#: ``attn_implementation`` values passed to ``from_pretrained`` (``sdpa``: torch's fused attention, the default)
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")
#: ``lora.quantize`` values (QLoRA through bitsandbytes, CUDA only)
QUANTIZE_MODES = ("4bit", "8bit")


def cuda_in_use(device: str = "auto") -> bool:
    """Whether a run on ``device`` (``loop.device``: auto / cpu / cuda) puts its models on a CUDA GPU."""
    import torch

    return device != "cpu" and torch.cuda.is_available()


def resolve_auto_dtype(dtype: str, device: str = "auto") -> str:
    """``dtype: auto`` -> ``bfloat16`` when the run uses a CUDA GPU, else ``float32``; other values unchanged."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if cuda_in_use(device) else "float32"


def check_attn_implementation(name: str, device: str = "auto", key: str = "attn_implementation") -> None:
    """A :class:`ConfigError` naming ``key`` unless ``name`` can run here (flash_attention_2: CUDA + flash_attn)."""
    check(name in ATTN_IMPLEMENTATIONS, key, f"must be one of {list(ATTN_IMPLEMENTATIONS)}, got {name!r}")
    if name == "flash_attention_2":
        check(
            cuda_in_use(device), key, "flash_attention_2 needs a CUDA GPU (this run is on the CPU); use sdpa"
        )
        check(importlib.util.find_spec("flash_attn") is not None, key,
              "flash_attention_2 needs the flash_attn package (pip install flash-attn); use sdpa")  # fmt: skip


def check_quantize(mode: str | None, device: str = "auto", key: str = "lora.quantize") -> None:
    """A :class:`ConfigError` naming ``key`` unless QLoRA's ``mode`` can run here (a CUDA GPU and bitsandbytes)."""
    if mode is None:
        return
    check(mode in QUANTIZE_MODES, key, f"must be one of {list(QUANTIZE_MODES)} or null, got {mode!r}")
    check(cuda_in_use(device), key, f"{mode} (QLoRA, bitsandbytes) needs a CUDA GPU; this run is on the CPU")
    check(importlib.util.find_spec("bitsandbytes") is not None, key,
          f"{mode} needs the bitsandbytes package (pip install bitsandbytes)")  # fmt: skip


def quantization_config(mode: str, compute_dtype: Any = "bfloat16") -> Any:
    """transformers' ``BitsAndBytesConfig`` of QLoRA: 4bit NF4 with double quantisation and ``compute_dtype``, or 8bit."""
    from transformers import BitsAndBytesConfig

    if mode == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=resolve_dtype(compute_dtype))  # fmt: skip


def load_kwargs(attn_implementation: str | None, quantize: str | None, dtype: Any) -> dict[str, Any]:
    """``from_pretrained``'s extra arguments: the attention kernel, and bitsandbytes' config on this GPU."""
    kw: dict[str, Any] = {}
    if attn_implementation is not None:
        kw["attn_implementation"] = attn_implementation
    if quantize is not None:
        import torch

        check_quantize(quantize, "cuda")
        compute = dtype if dtype in (torch.bfloat16, torch.float16) else torch.bfloat16
        kw["quantization_config"] = quantization_config(quantize, compute)
        kw["device_map"] = {"": torch.cuda.current_device()}
    return kw


def enable_gradient_checkpointing(model: Any, key: str = "gradient_checkpointing") -> Any:
    """Recompute each layer's activations in the backward pass (non-reentrant ``torch.utils.checkpoint``).

    ``model``: a transformers model or a peft model around one. Layers skip checkpointing
    when no gradient is taken (sampling, the reference, evaluation), so a KV cache works there;
    under gradients the layers drop their cache, so the trainers turn prompt sharing off. A
    LoRA model's input embeddings are made to require grad (peft's
    ``enable_input_require_grads``), which reentrant checkpointing would need. A model without
    the feature (e.g. :class:`nlhf.models.tabular.TabularLM`) is a :class:`ConfigError` naming ``key``.
    """
    base = model.get_base_model() if is_peft_model(model) else model
    check(bool(getattr(base, "supports_gradient_checkpointing", False)), key,
          f"{type(base).__name__} does not support gradient checkpointing")  # fmt: skip
    kwargs = {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:  # transformers < 5
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if is_peft_model(model):
        base.enable_input_require_grads()
    return model


__all__ = [
    "ATTN_IMPLEMENTATIONS",
    "QUANTIZE_MODES",
    "check_attn_implementation",
    "check_quantize",
    "cuda_in_use",
    "enable_gradient_checkpointing",
    "load_kwargs",
    "quantization_config",
    "resolve_auto_dtype",
]
