"""LoRA settings and their application through peft (imported lazily).

One frozen dataclass, :class:`LoraSettings`, used by policies (:mod:`nlhf.models.policy`)
and by the preference / reward models (:mod:`nlhf.models.scorer`). Field names follow
peft's ``LoraConfig`` (``r``, ``lora_alpha``, ``lora_dropout``, ``target_modules``), so a
YAML ``lora:`` block reads the same as peft's documentation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from nlhf.config import check


@dataclass(frozen=True)
class LoraSettings:
    """Low-rank adapters on the linear layers named in ``target_modules``.

    ``target_modules=None`` uses peft's default for the model type (``q_proj``/``v_proj``
    for Llama, ``query``/``value`` for BERT). The update is scaled by ``lora_alpha / r``.
    ``quantize`` (QLoRA, policies only): the frozen base loaded in ``4bit`` (NF4) or ``8bit``
    by bitsandbytes, CUDA only (:mod:`nlhf.models.memory`); None: the base in ``dtype``.
    """

    r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    target_modules: tuple[str, ...] | None = None
    quantize: Literal["4bit", "8bit"] | None = None

    def __post_init__(self) -> None:
        check(self.r >= 1, "lora.r", f"must be >= 1, got {self.r}")
        check(self.lora_alpha > 0, "lora.lora_alpha", f"must be > 0, got {self.lora_alpha}")
        check(
            0.0 <= self.lora_dropout < 1.0, "lora.lora_dropout", f"must be in [0, 1), got {self.lora_dropout}"
        )
        if self.target_modules is not None:
            check(len(self.target_modules) > 0, "lora.target_modules", "must be null or a non-empty list")
        check(self.quantize in (None, "4bit", "8bit"), "lora.quantize",
              f"must be one of ['4bit', '8bit'] or null, got {self.quantize!r}")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["target_modules"] = list(self.target_modules) if self.target_modules is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoraSettings:
        tm = d.get("target_modules")
        return cls(
            r=int(d["r"]),
            lora_alpha=float(d["lora_alpha"]),
            lora_dropout=float(d.get("lora_dropout", 0.0)),
            target_modules=tuple(tm) if tm is not None else None,
            quantize=d.get("quantize"),
        )

    def peft_config(self, task_type: str | None = None) -> Any:
        """The equivalent ``peft.LoraConfig``."""
        from peft import LoraConfig

        return LoraConfig(
            r=self.r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=list(self.target_modules) if self.target_modules is not None else None,
            task_type=task_type,
        )


def apply_lora(model: Any, settings: LoraSettings, task_type: str | None = None) -> Any:
    """Wrap ``model`` in a peft ``PeftModel`` with fresh LoRA adapters (base weights frozen).

    peft injects the adapter layers into ``model`` in place; the returned wrapper is the
    trainable module. ``task_type="CAUSAL_LM"`` for policies, ``None`` for bare backbones.
    """
    from peft import get_peft_model

    try:
        return get_peft_model(model, settings.peft_config(task_type))
    except ValueError as exc:
        raise ValueError(
            f"LoRA could not be applied to {type(model).__name__} "
            f"(model_type {getattr(model.config, 'model_type', '?')!r}, "
            f"target_modules={settings.target_modules}): {exc}"
        ) from exc


def prepare_quantized(model: Any, gradient_checkpointing: bool) -> Any:
    """peft's ``prepare_model_for_kbit_training`` on a bitsandbytes-quantised base (QLoRA), before :func:`apply_lora`.

    It freezes the base, casts the norms to float32 and makes the input embeddings require
    grad; with ``gradient_checkpointing`` it also enables non-reentrant checkpointing.
    CUDA only: not run in nlhf's tests (no GPU, no bitsandbytes).
    """
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(
        model,
        use_gradient_checkpointing=gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
    )


def is_peft_model(model: Any) -> bool:
    """Whether ``model`` is a peft ``PeftModel`` (checked without importing peft if unused)."""
    import sys

    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def base_state_dict(peft_model: Any) -> dict[str, Any]:
    """The base model's own state dict from a LoRA-wrapped model, adapters left out.

    peft renames each adapted ``layer.weight`` to ``layer.base_layer.weight`` and adds
    ``layer.lora_A.<name>.weight`` etc.; this undoes the renaming and drops the adapters,
    so ``base_model.save_pretrained(d, state_dict=...)`` writes a plain checkpoint.
    """
    out = {}
    for key, value in peft_model.get_base_model().state_dict().items():
        if ".lora_" in key:
            continue
        out[key.replace(".base_layer.", ".")] = value
    return out
