"""Sampling responses from causal LMs: one KV-cached decode loop and the Nash-MD mixture sampler.

THEORY.md Sec. 4 and 6. The pieces:

* :class:`SamplingConfig` (max_new_tokens, temperature, top_k, top_p, stop_on_eos, seed);
* :class:`Rollout`: left-padded prompts, right-padded responses, masks from lengths (pad ==
  eos for SmolLM2), truncation flags, and per-token log-probs recorded while sampling
  (``sampling_logps`` under the distribution sampled; ``policy_logps`` / ``ref_logps`` at
  temperature 1);
* :func:`generate`: y ~ pi with the explicit cached loop (left-padded batches, temperature,
  top-k, top-p, stop on EOS per row), deterministic given a ``torch.Generator`` or a
  :class:`RowGenerator` (one counter-based stream per row: a row's sample does not depend
  on its batch, which the trainers need for multi-process invariance);
* :func:`sample_mixture`: y' ~ the token-level geometric mixture
  softmax((1 - mixture_coef) logits_pi + mixture_coef logits_mu), one cache per model;
  with a second model that is not mu (an EMA copy) and ``mixture_coef=1`` it samples that model;
* :func:`sample_policy_and_mixture`: Nash-MD-PG's pair (y with log pi and log mu of its
  tokens, and y') from one loop (policy on 2B rows, reference on the B rows of y', then
  one teacher-forced forward of the reference for log mu of y);
* :func:`response_logps`: a trainer's (differentiable) re-scoring of a rollout;
* :class:`Sampler`: the interface the trainers use; :class:`HFSampler` implements it with
  the functions above. A faster backend (vLLM on GPUs) can be added later as another
  :class:`Sampler` without touching the trainers.

Importing this package is cheap: names are loaded on first use, and torch only with
:mod:`nlhf.sampling.decode`.
"""

from __future__ import annotations

from nlhf._lazy import lazy_exports

_EXPORTS = {
    "SamplingConfig": "nlhf.sampling.config",
    "Rollout": "nlhf.sampling.rollout",
    "Sampler": "nlhf.sampling.sampler",
    "HFSampler": "nlhf.sampling.sampler",
    "generate": "nlhf.sampling.decode",
    "sample_mixture": "nlhf.sampling.decode",
    "sample_policy_and_mixture": "nlhf.sampling.decode",
    "response_logps": "nlhf.sampling.decode",
    "mixture_logits": "nlhf.sampling.logits",
    "process_logits": "nlhf.sampling.logits",
    "sample_tokens": "nlhf.sampling.logits",
    "position_ids_from_mask": "nlhf.sampling.logits",
    "make_generator": "nlhf.sampling.decode",
    "RowGenerator": "nlhf.sampling.streams",
    "row_generator": "nlhf.sampling.streams",
    "row_seeds": "nlhf.sampling.streams",
}

__all__ = sorted(_EXPORTS)  # the names are declared once, in _EXPORTS

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
