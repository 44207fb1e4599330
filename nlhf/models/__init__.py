"""Causal LMs, the pairwise preference model, the reward model, policies and references.

* :func:`load_causal_lm` / :func:`load_encoder` / :func:`load_backbone`: by short name
  (``"smollm2"``, ``"minilm"``), local path, GGUF file or hub name (:mod:`.loading`);
* :class:`PairwisePreferenceModel`: P(y > y' | x) = sigmoid(f(x, y, y') - f(x, y', y))
  (THEORY.md Sec. 1);
* :class:`RewardModel`: P(y > y' | x) = sigmoid(r(x, y) - r(x, y'));
* :class:`GeneralPreferenceModel`: P(y > y' | x) = sigmoid(v(x, y)^T S v(x, y')), S skew-symmetric
  (one preference embedding per response; represents cycles);
* :func:`build_policy` -> ``(policy, reference)`` with an explicit, frozen mu;
  :func:`save_policy`; :class:`LoraSettings`;
* :class:`TabularLM` / :class:`TabularConfig`: the tabular policy softmax(theta) in the
  causal-LM interface (model type ``nlhf_tabular``, :mod:`.tabular`).
* :mod:`.memory`: the trainers' memory and speed settings (``dtype: auto``, the attention
  kernel, QLoRA's quantised base, gradient checkpointing).

Importing this package is cheap: the names below are loaded on first use (module
``__getattr__``), so ``import nlhf.models`` does not import torch or transformers.
"""

from __future__ import annotations

from nlhf._lazy import lazy_exports

_EXPORTS = {
    "load_causal_lm": "nlhf.models.loading",
    "load_encoder": "nlhf.models.loading",
    "load_backbone": "nlhf.models.loading",
    "load_model": "nlhf.models.loading",
    "load_scorer": "nlhf.models.saved",
    "ModelLoadError": "nlhf.models.loading",
    "default_cache_dir": "nlhf.models.loading",
    "LoraSettings": "nlhf.models.lora",
    "SequenceScorer": "nlhf.models.scorer",
    "PairwisePreferenceModel": "nlhf.models.preference_model",
    "RewardModel": "nlhf.models.reward_model",
    "GeneralPreferenceModel": "nlhf.models.general_preference",
    "Reference": "nlhf.models.policy",
    "build_policy": "nlhf.models.policy",
    "save_policy": "nlhf.models.policy",
    "tiny_causal_lm": "nlhf.models.tiny",
    "tiny_tokenizer": "nlhf.models.tiny",
    "TabularConfig": "nlhf.models.tabular",
    "TabularLM": "nlhf.models.tabular",
}

__all__ = sorted(_EXPORTS)  # the names are declared once, in _EXPORTS

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
