"""Sequence log-probs of preference pairs under a causal LM: the forwards of offline DPO / IPO / cDPO.

* :func:`sequence_logps`: one forward over (2B, T) rows ``prompt + response``;
* :func:`shared_prompt_logps`: the same log-probs running each prompt ONCE for its two
  responses (its KV cache repeated), on the layout of :func:`collate_shared_prompt`, for
  models whose forward takes a cache (:func:`prompt_sharing`);
* :func:`pair_logps`: whichever of the two applies, firsts then seconds (2B,);
* :func:`token_kl`: the exact teacher-forced KL(pi || mu) along the data's prefixes.

Used by the trainer (:mod:`nlhf.train.dpo`) and its reference cache
(:mod:`nlhf.train.ref_cache`), so mu's cached log-probs come from the same code as pi's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nlhf.models.forward import ForwardSignature, forward_signature


def collate_shared_prompt(pairs: Sequence[Any], pad_token_id: int) -> dict[str, Any]:
    """The prompt-sharing layout of B pairs: each prompt once, both responses after it.

    ``prompt_ids`` (B, P) LEFT-padded (every prompt ends at column P - 1), ``prompt_lengths``
    (B,); ``completion_ids`` (2B, C) right-padded with rows 2i / 2i + 1 the first / second
    response of pair i (interleaved, to match the prompt cache repeated with
    ``repeat_interleave(2)``), ``completion_lengths`` (2B,). Lengths, never ``ids != pad``.
    """
    import torch

    P = max(len(p.prompt_ids) for p in pairs)
    completions = [ids for p in pairs for ids in (p.first_ids, p.second_ids)]  # 2B, interleaved
    C = max(len(c) for c in completions)
    return {
        "prompt_ids": torch.tensor(
            [[pad_token_id] * (P - len(p.prompt_ids)) + p.prompt_ids for p in pairs]
        ),  # (B, P)
        "prompt_lengths": torch.tensor([len(p.prompt_ids) for p in pairs]),  # (B,)
        "completion_ids": torch.tensor([c + [pad_token_id] * (C - len(c)) for c in completions]),  # (2B, C)
        "completion_lengths": torch.tensor([len(c) for c in completions]),  # (2B,)
    }


def sequence_logps(
    model: Any, input_ids: Any, attention_mask: Any, completion_mask: Any, reduction: str
) -> tuple[Any, Any]:
    """One forward of ``model`` on (R, T) rows: completion log-probs (R,) and the logits (R, T, V).

    Calls ``model(...)`` (so that DDP synchronises) with ``use_cache=False``; the attention
    mask is dropped when no row is padded (the model's causal fast path).
    """
    from nlhf.logprobs import seq_logps, token_logps  # torch

    mask = None if bool(attention_mask.all()) else attention_mask
    logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits  # (R, T, V)
    tok = token_logps(logits, input_ids, completion_mask)  # (R, T-1)
    return seq_logps(tok, completion_mask[:, 1:], reduction), logits  # (R,), (R, T, V)


PromptSharing = ForwardSignature  # how a model takes a prompt's KV cache back (cache_arg, logits_to_keep)


def prompt_sharing(model: Any, accelerator: Any = None) -> PromptSharing | None:
    """Whether :func:`shared_prompt_logps` can run ``model``: a causal LM whose forward takes a cache.

    None for models without a cache argument (e.g. :class:`nlhf.models.tabular.TabularLM`)
    and for wrapped models: DDP (two forwards before one backward would confuse its gradient
    reducer), and, given the ``accelerator``, any launch of more than one process or under
    FSDP / DeepSpeed (prompt sharing needs an unwrapped model).
    """
    import torch

    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return None
    if accelerator is not None and (
        accelerator.num_processes != 1
        or getattr(accelerator.distributed_type, "name", "NO") not in ("NO", "MULTI_CPU", "MULTI_GPU")
    ):
        return None
    signature = forward_signature(model)
    return signature if signature.cache_arg is not None else None


def shared_prompt_logps(model: Any, batch: dict[str, Any], reduction: str, sharing: PromptSharing) -> Any:
    """Completion log-probs of both responses of B pairs, running each prompt ONCE: (2B,) firsts then seconds.

    Two forwards instead of one over 2B full rows:

    1. the B prompts WITHOUT their last token (left-padded, ``use_cache=True``): only the
       KV cache is used, so no logits, final norm or final-layer MLP of these positions
       enter the backward pass;
    2. the 2B rows ``[last prompt token, response without its final token]`` (layout of
       :func:`collate_shared_prompt`; no row needs its final token as an input) attending
       to that cache repeated for the two responses of each prompt, with position ids
       ``prompt_length - 1 + j`` and the attention mask ``[prompt mask | 1 | response
       mask]``. Position j predicts response token j: :func:`nlhf.logprobs.token_logps`
       scores tokens 0 .. C-2, and the last position (which its shift never reads) token
       C-1 of the rows that have one.

    Mathematically the same log-probs (and gradients: they flow through the cache into
    the prompt forward) as :func:`sequence_logps` on ``prompt + response`` rows, while each
    prompt token is computed once instead of twice: it saves about prompt / (2 prompt +
    2 response) of the token work, forward and backward.
    """
    import torch

    from nlhf.logprobs import token_logps
    from nlhf.models.backbone import output_cache

    prompt_ids, plen = batch["prompt_ids"], batch["prompt_lengths"]  # (B, P) left-padded, (B,)
    comp_ids, clen = batch["completion_ids"], batch["completion_lengths"]  # (R, C) right-padded, (R,)
    B, P = prompt_ids.shape
    R, C = comp_ids.shape
    dev = comp_ids.device
    start = P - plen  # (B,) first real column of each left-padded prompt
    head_mask = (torch.arange(P - 1, device=dev).unsqueeze(0) >= start.unsqueeze(1)).long()  # (B, P-1)
    padded = bool((plen < P).any())
    comp_mask = (torch.arange(C, device=dev).unsqueeze(0) < clen.unsqueeze(1)).long()  # (R, C)

    kw: dict[str, Any] = {}
    if P > 1:  # 1. the prompts minus their last token, for the cache
        head_kw: dict[str, Any] = {"logits_to_keep": 1} if sharing.logits_to_keep else {}
        if padded:
            head_kw["attention_mask"] = head_mask
            head_kw["position_ids"] = (
                torch.arange(P - 1, device=dev).unsqueeze(0) - start.unsqueeze(1)
            ).clamp(min=0)
        cache = output_cache(model(input_ids=prompt_ids[:, :-1], use_cache=True, **head_kw))
        if cache is None or not hasattr(cache, "batch_repeat_interleave"):
            raise RuntimeError(
                f"{type(model).__name__} returned no repeatable KV cache; set share_prompt=false for this model"
            )
        cache.batch_repeat_interleave(2)  # rows 2i, 2i + 1 <- prompt i
        kw[sharing.cache_arg] = cache

    # 2. [last prompt token, response minus its final token]: position j predicts response token j
    ids = torch.cat([prompt_ids[:, -1:].repeat_interleave(2, dim=0), comp_ids[:, :-1]], dim=1)  # (R, C)
    kw["position_ids"] = (plen - 1).repeat_interleave(2).unsqueeze(1) + torch.arange(C, device=dev)  # (R, C)
    if padded or not bool(comp_mask.all()):
        kw["attention_mask"] = torch.cat(
            [head_mask.repeat_interleave(2, dim=0), torch.ones_like(comp_mask[:, :1]), comp_mask[:, :-1]],
            dim=1,
        )  # (R, P - 1 + C)
    logits = model(input_ids=ids, use_cache=P > 1, **kw).logits  # (R, C, V)
    # tokens 0 .. C-2: token_logps's shift (position t scores ids[t + 1] = response token t) ...
    total = torch.zeros(R, dtype=torch.promote_types(logits.dtype, torch.float32), device=dev)  # (R,)
    if C > 1:
        scored = torch.cat([torch.zeros_like(comp_mask[:, :1]), comp_mask[:, :-1]], dim=1)  # (R, C)
        total = total + token_logps(logits, ids, scored).sum(dim=-1)
    # ... and token C-1 (rows of full width only) from the last position, which token_logps never reads
    last = (
        torch.log_softmax(logits[:, -1].to(total.dtype), dim=-1).gather(-1, comp_ids[:, -1:]).squeeze(-1)
    )  # (R,)
    total = total + torch.where(comp_mask[:, -1].bool(), last, torch.zeros_like(last))
    if reduction == "mean":
        total = total / clen.to(total.dtype)
    elif reduction != "sum":
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    return torch.cat([total[0::2], total[1::2]])  # (2B,) firsts, then seconds


def pair_logps(model: Any, batch: dict[str, Any], reduction: str, sharing: PromptSharing | None) -> Any:
    """(2B,) sequence log-probs, firsts then seconds: prompt-shared when ``sharing`` is set, else one forward."""
    if sharing is not None and "prompt_ids" in batch:
        return shared_prompt_logps(model, batch, reduction, sharing)
    seq, _ = sequence_logps(
        model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"], reduction
    )
    return seq


def token_kl(policy_logits: Any, ref_logits: Any, completion_mask: Any) -> Any:
    """Exact teacher-forced KL per row: sum over completion positions of KL(pi(.|prefix) || mu(.|prefix)).

    ``policy_logits``/``ref_logits`` (R, T, V) of the same rows, ``completion_mask`` (R, T).
    Position t predicts token t + 1, so the positions summed are those with
    ``completion_mask[:, 1:]`` (as in :func:`nlhf.logprobs.token_logps`). Each term is the
    full sum over the vocabulary, sum_v pi_v (log pi_v - log mu_v) >= 0, in float32 at
    least, one row at a time (no (R, T, V) log-softmax is held). Returns (R,), detached.
    """
    import torch

    mask = completion_mask[:, 1:].to(torch.bool)  # (R, T-1)
    out = torch.zeros(mask.shape[0], dtype=torch.float64)
    for r in range(mask.shape[0]):
        pos = mask[r].nonzero().squeeze(-1)  # (n,)
        if pos.numel() == 0:
            continue
        dtype = torch.promote_types(policy_logits.dtype, torch.float32)
        lp = torch.log_softmax(policy_logits[r, pos].detach().to(dtype), dim=-1)  # (n, V)
        lq = torch.log_softmax(ref_logits[r, pos].detach().to(dtype), dim=-1)  # (n, V)
        out[r] = float((lp.exp() * (lp - lq)).sum())
    return out


__all__ = [
    "PromptSharing",
    "collate_shared_prompt",
    "pair_logps",
    "prompt_sharing",
    "sequence_logps",
    "shared_prompt_logps",
    "token_kl",
]
