"""Scoring K responses to the same prompt with the prompt run ONCE (its KV cache repeated K times).

Online trainers draw several responses per prompt (Nash-MD-PG's ``responses_per_prompt``,
RLHF's ``group_size``, the tournament's samples per prompt): their rollouts hold each
prompt row K times in a row (prompt-major). A plain teacher-forced forward over
``prompt + response`` recomputes the prompt K times; with SmolLM2's chat template a
prompt is about 38 tokens against 16 response tokens in the demo, so about 70% of that
forward is repeated prompt work. :func:`grouped_response_logps` runs each distinct prompt
once and attends the K responses to its cache: the same log-probs and the same gradients
(they flow through the repeated cache into the prompt forward), for about
(P + K R) / (K (P + R)) of the token work (0.47 at P = 38, R = 16, K = 4).

:func:`nlhf.sampling.decode.response_logps` takes this path by itself when the rollout's
rows come in groups (:func:`prompt_group_size`) and the model takes a KV cache
(not a DDP-wrapped model: two forwards before one backward would confuse its reducer).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from nlhf.models.backbone import output_cache
from nlhf.models.forward import forward_signature
from nlhf.sampling.rollout import Rollout


def prompt_group_size(rollout: Rollout) -> int:
    """The largest K > 1 such that rows [g K, (g + 1) K) of the rollout share one prompt row, for every g; else 1.

    Checked on the token ids and the attention mask, so it never groups rows that differ.
    """
    ids, mask = rollout.prompt_ids, rollout.prompt_mask  # (N, P)
    N = int(ids.shape[0])
    if N < 2:
        return 1
    same_as_previous = torch.cat(
        [torch.zeros(1, dtype=torch.bool, device=ids.device),
         (ids[1:] == ids[:-1]).all(dim=1) & (mask[1:] == mask[:-1]).all(dim=1)]
    )  # (N,) row n repeats row n - 1  # fmt: skip
    starts = (~same_as_previous).nonzero().flatten().tolist() + [N]  # first row of each run
    runs = {b - a for a, b in zip(starts[:-1], starts[1:])}
    if len(runs) != 1:
        return 1
    return max(1, runs.pop())


def can_share_prompt(model: Any) -> bool:
    """A causal LM whose forward takes a KV cache back, not wrapped in DDP and not gradient-checkpointed
    (checkpointed layers drop the cache when gradients are taken)."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return False
    if isinstance(model, torch.nn.Module) and any(
        getattr(m, "gradient_checkpointing", False) is True for m in model.modules()
    ):
        return False
    return forward_signature(model).cache_arg is not None


def grouped_response_logps(model: Any, rollout: Rollout, group: int, temperature: float = 1.0) -> Tensor:
    """(N, R) log-probs of ``rollout.response_ids`` under ``model``, each distinct prompt run once; 0 off the mask.

    ``group`` = K: rows [g K, (g + 1) K) share prompt g (:func:`prompt_group_size`). Two forwards:

    1. the G = N / K distinct prompts WITHOUT their last token (left-padded, ``use_cache=True``,
       logits of the last position only): their KV cache, repeated K times;
    2. the N rows ``[last prompt token, response without its last token]`` on that cache, with
       position ids ``prompt_length - 1 + j`` (as in sampling: positions count real tokens)
       and the mask ``[prompt mask | 1 | response mask]``: position j predicts response token j.

    The same numbers as the plain forward of :func:`nlhf.sampling.decode.response_logps` up
    to float rounding (tests/sampling/test_sampling_shared_prompt.py checks values and gradients).
    """
    sig = forward_signature(model)
    ids, mask = rollout.prompt_ids, rollout.prompt_mask  # (N, P)
    resp, resp_mask = rollout.response_ids, rollout.response_mask  # (N, R)
    N, P = ids.shape
    R = int(resp.shape[1])
    if group < 2 or N % group:
        raise ValueError(f"grouped_response_logps: {N} rows do not form groups of {group} (>= 2)")
    K, dev = group, ids.device
    prompts, prompt_mask = ids[::K], mask[::K]  # (G, P) one row per distinct prompt
    plen = prompt_mask.sum(dim=1)  # (G,) real prompt tokens
    start = P - plen  # (G,) first real column (left padding)
    kw: dict[str, Any] = {}
    if P > 1:  # 1. the prompts minus their last token: only their cache is used
        head_kw: dict[str, Any] = {"logits_to_keep": 1} if sig.logits_to_keep else {}
        head_mask = prompt_mask[:, :-1]  # (G, P - 1)
        if not bool(head_mask.all()):
            head_kw["attention_mask"] = head_mask
            head_kw["position_ids"] = (
                torch.arange(P - 1, device=dev).unsqueeze(0) - start.unsqueeze(1)
            ).clamp(min=0)
        cache = output_cache(model(input_ids=prompts[:, :-1], use_cache=True, **head_kw))
        if cache is None or not hasattr(cache, "batch_repeat_interleave"):
            raise RuntimeError(f"{type(model).__name__} returned no repeatable KV cache")
        cache.batch_repeat_interleave(K)  # rows g K .. g K + K - 1 <- prompt g
        kw[sig.cache_arg] = cache
        kw["attention_mask"] = torch.cat(
            [head_mask.repeat_interleave(K, dim=0), torch.ones_like(resp_mask[:, :1]), resp_mask[:, :-1]],
            dim=1,
        )  # (N, P - 1 + R)
    # 2. [last prompt token, response minus its last token]: position j predicts response token j
    tail = torch.cat([prompts[:, -1:].repeat_interleave(K, dim=0), resp[:, :-1]], dim=1)  # (N, R)
    kw["position_ids"] = (plen - 1).repeat_interleave(K).unsqueeze(1) + torch.arange(R, device=dev)  # (N, R)
    logits = model(input_ids=tail, use_cache=P > 1, **kw).logits  # (N, R, V)
    logits = logits.float()  # (N, R, V) float32 (a no-op for a float32 model)
    if temperature != 1.0:
        logits = logits / temperature
    logps = torch.log_softmax(logits, dim=-1).gather(-1, resp.unsqueeze(-1)).squeeze(-1)  # (N, R)
    return torch.where(resp_mask.bool(), logps, torch.zeros((), dtype=logps.dtype, device=dev))  # (N, R)


__all__ = ["can_share_prompt", "grouped_response_logps", "prompt_group_size"]
