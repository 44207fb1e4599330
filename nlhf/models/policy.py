"""The policy pi being trained and the explicit reference mu (THEORY.md Sec. 0, 4-6).

mu is the reference (SFT) policy: never updated, and never silently the adapted model
(docs/PEERS.md: with LoRA and no explicit reference, TRL's reference was long the adapted
model itself, turning Nash-MD into self-play). :func:`build_policy` returns both, with mu
made explicit in one of two ways:

* full fine-tuning: mu is a frozen deep copy of the model as passed in
  (``requires_grad=False``, eval mode);
* LoRA: pi is the model with fresh adapters (base weights frozen), and mu is the SAME
  base model with the adapter disabled: a :class:`Reference` whose forward runs inside
  ``policy.disable_adapter()``, under ``torch.no_grad()`` and in eval mode. No second
  copy of the weights is held.

Either way ``reference(**inputs)`` gives mu's outputs and holds no trainable parameter.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nlhf.models.lora import LoraSettings, apply_lora, is_peft_model


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` in eval mode for the block, then restore every submodule's own flag."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in flags:
            m.training = training


class Reference(nn.Module):
    """The reference policy mu: a causal LM whose calls never build a graph.

    ``Reference(frozen_model)`` wraps a frozen copy (registered as a submodule, so
    ``.to(device)`` moves it). ``Reference(adapter_of=peft_policy)`` runs the policy's
    base model with its LoRA adapter disabled; the policy is NOT registered as a submodule
    (its parameters stay out of ``reference.parameters()``).
    """

    def __init__(self, model: nn.Module | None = None, *, adapter_of: Any | None = None) -> None:
        super().__init__()
        if (model is None) == (adapter_of is None):
            raise ValueError("give exactly one of model (a frozen copy) or adapter_of (a LoRA policy)")
        if adapter_of is not None and not is_peft_model(adapter_of):
            raise TypeError(f"adapter_of must be a peft PeftModel, got {type(adapter_of).__name__}")
        self.mode = "frozen_copy" if model is not None else "adapter_disabled"
        self.model = model  # None in adapter mode
        object.__setattr__(self, "_adapter_of", adapter_of)  # unregistered on purpose

    @property
    def config(self) -> Any:
        return self._target().config

    @property
    def generation_config(self) -> Any:
        return getattr(self._target(), "generation_config", None)

    @property
    def device(self) -> torch.device:
        return next(self._target().parameters()).device

    def _target(self) -> Any:
        return self.model if self.model is not None else self._adapter_of

    @contextlib.contextmanager
    def _as_reference(self) -> Iterator[Any]:
        with torch.no_grad():
            if self.model is not None:
                yield self.model
                return
            policy = self._adapter_of
            with eval_mode(policy), policy.disable_adapter():
                yield policy

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """mu's forward (e.g. ``reference(input_ids=..., attention_mask=...).logits``), no grad."""
        with self._as_reference() as model:
            return model(*args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """Sample from mu (``generate`` of the frozen copy, or of the base with the adapter off)."""
        with self._as_reference() as model:
            return model.generate(*args, **kwargs)

    def train(self, mode: bool = True) -> Reference:
        """mu is never in training mode: this is a no-op that keeps the frozen copy in eval."""
        if self.model is not None:
            self.model.eval()
        self.training = False
        return self


def build_policy(model: Any, lora: LoraSettings | None = None) -> tuple[Any, Reference]:
    """``(policy, reference)`` from a causal LM (THEORY.md Sec. 0: pi and mu).

    ``lora=None``: full fine-tuning; ``policy`` is ``model`` itself (all parameters
    trainable) and ``reference`` a frozen deep copy taken now. With ``LoraSettings``:
    ``policy`` is a peft model with fresh adapters (LoRA's B = 0, so pi = mu at start) and
    ``reference`` the base model with the adapter disabled. Either way the reference is
    the model as passed in, never the adapted one.
    """
    if lora is None:
        frozen = copy.deepcopy(model)
        frozen.requires_grad_(False)
        frozen.eval()
        model.requires_grad_(True)
        return model, Reference(frozen)
    if is_peft_model(model):
        raise ValueError(
            "build_policy(lora=...) got a model that already has peft adapters; merge them first "
            "(model.merge_and_unload()) so the reference is well defined, or pass lora=None to "
            "fine-tune it with a frozen copy as reference"
        )
    policy = apply_lora(model, lora, task_type="CAUSAL_LM")
    return policy, Reference(adapter_of=policy)


def _replaceable(path: Path) -> bool:
    if not path.exists():
        return True
    if not path.is_dir():
        return False
    entries = list(path.iterdir())
    return not entries or any((path / f).is_file() for f in ("config.json", "adapter_config.json"))


def save_policy(
    policy: Any, path: str | os.PathLike[str], *, merge: bool = True, tokenizer: Any | None = None
) -> Path:
    """Save a policy with ``save_pretrained`` (safetensors), atomically.

    A LoRA policy is saved merged (``merge=True``: a plain checkpoint, adapters folded
    into the weights; the training policy itself is left unmerged) or as an adapter
    directory (``merge=False``; its ``adapter_config.json`` names the base model, which
    :func:`nlhf.models.load_causal_lm` loads first). ``path`` may be an earlier save (it
    is replaced) or an empty/new directory; anything else is refused.
    """
    from nlhf.models.loading import atomic_directory

    path = Path(path)
    if not _replaceable(path):
        raise FileExistsError(f"{path} exists and is not an earlier model save; refusing to replace it")
    with atomic_directory(path, overwrite=True) as tmp:
        if is_peft_model(policy) and merge:
            copy.deepcopy(policy).merge_and_unload().save_pretrained(tmp, safe_serialization=True)
        else:
            policy.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return path
