"""Slow, obviously-correct samplers the tests compare nlhf.sampling against.

* :func:`uncached_mixture`: no KV cache at all; every step runs each model on the WHOLE
  sequence so far (prompt + tokens sampled), like TRL's ``use_cache=False`` configuration.
  With ``ref=None`` it is plain sampling from ``policy``. It uses nlhf's own
  ``process_logits`` / ``sample_tokens`` (tested separately), so with the same generator
  seed it must draw the same tokens as the cached loop.
* :func:`shared_cache_mixture`: the FAULTY sampler of TRL 1.13 with transformers 5: one
  cache object passed to both models, called one after the other with identical arguments
  (what TRL's ``GeometricMixtureWrapper.forward(*args, **kwargs)`` does inside
  ``generate``), so each model appends its states to the same cache and attends to the
  other's. It exists only to show that the distribution tests detect it.
"""

from __future__ import annotations

import inspect

import torch

from nlhf.sampling import mixture_logits, position_ids_from_mask, process_logits, sample_tokens


@torch.no_grad()
def uncached_mixture(
    policy, ref, prompt_ids, prompt_mask, mixture_coef, cfg, generator, eos_token_id, pad_token_id
):
    """(tokens (B, n), lengths (B,), step_logits (B, n, V)) with a full recompute at every step."""
    B = prompt_ids.shape[0]
    ids, mask = prompt_ids, prompt_mask.long()
    finished = torch.zeros(B, dtype=torch.bool)
    lengths = torch.zeros(B, dtype=torch.long)
    tokens_out, logits_out = [], []
    for _ in range(cfg.max_new_tokens):
        pos = position_ids_from_mask(mask)
        policy_logits = policy(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1].float()
        if ref is None:
            logits = policy_logits
        else:
            ref_logits = ref(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1].float()
            logits = mixture_logits(policy_logits, ref_logits, mixture_coef)
        tokens, _ = sample_tokens(process_logits(logits, cfg.temperature, cfg.top_k, cfg.top_p), generator)
        tokens = torch.where(finished, torch.full_like(tokens, pad_token_id), tokens)
        lengths += (~finished).long()
        if cfg.stop_on_eos:
            finished |= tokens == eos_token_id
        tokens_out.append(tokens)
        logits_out.append(logits)
        ids = torch.cat([ids, tokens[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones(B, 1, dtype=mask.dtype)], dim=1)
        if bool(finished.all()):
            break
    return torch.stack(tokens_out, dim=1), lengths, torch.stack(logits_out, dim=1)


@torch.no_grad()
def shared_cache_mixture(
    policy, ref, prompt_ids, prompt_mask, mixture_coef, max_new_tokens, generator, eos_token_id
):
    """(response tokens (B, max_new_tokens) of the one-shared-cache "mixture", final cache length).

    Pad = eos after a row's end. Both models append to the cache, so it ends twice as long as
    the sequence it was fed: 2 (P + max_new_tokens - 1).
    """
    from transformers import DynamicCache

    B = prompt_ids.shape[0]
    cache = DynamicCache(config=policy.config)  # ONE cache for both models: the bug
    cache_kw = "cache" if "cache" in inspect.signature(type(policy).forward).parameters else "past_key_values"
    ids, mask = prompt_ids, prompt_mask.long()
    pos = position_ids_from_mask(mask)
    finished = torch.zeros(B, dtype=torch.bool)
    out = []
    for _ in range(max_new_tokens):
        kwargs = {
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": pos,
            cache_kw: cache,
            "use_cache": True,
        }
        policy_logits = policy(**kwargs).logits[:, -1]
        ref_logits = ref(**kwargs).logits[:, -1]
        mixed = torch.log_softmax(mixture_coef * ref_logits + (1 - mixture_coef) * policy_logits, dim=-1)
        tokens, _ = sample_tokens(mixed, generator)
        tokens = torch.where(finished, torch.full_like(tokens, eos_token_id), tokens)
        finished |= tokens == eos_token_id
        out.append(tokens)
        ids = tokens[:, None]
        mask = torch.cat([mask, torch.ones(B, 1, dtype=mask.dtype)], dim=1)
        pos = pos[:, -1:] + 1
    return torch.stack(out, dim=1), cache.get_seq_length()
