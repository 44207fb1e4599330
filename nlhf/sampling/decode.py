"""One explicit KV-cached decode loop, and the token-level geometric mixture sampler (THEORY.md Sec. 4, 6).

Everything here is plain PyTorch around a Hugging Face causal LM's forward::

    model(input_ids=(B, T), attention_mask=(B, T_past + T), position_ids=(B, T),
          cache=<DynamicCache>, use_cache=True).logits          # (B, T, V)

(the cache keyword is ``past_key_values`` before transformers 5.2x; the right one is read
from the model's signature). Prompts are left-padded, so position ids are counted from
each row's first real token (:func:`position_ids_from_mask`), as ``generate`` does.

The loop, per step (:func:`generate`):

1. logits of the next token from the cached forward of the last token (the prompt once, at
   the start: "prefill");
2. :func:`process_logits`: divide by the temperature, keep the top-k, keep the top-p mass;
3. :func:`sample_tokens`: one uniform per row (inverse CDF) from the caller's
   ``torch.Generator``, or from the row's own stream of a :class:`RowGenerator` (per-row
   counter-based streams: a row's tokens then do not depend on which other rows share its
   batch, which makes training invariant to the number of processes); a call is
   deterministic given the generator's state;
4. record log q (the sampling distribution) and log pi at temperature 1 of the token;
5. a row that has emitted EOS is finished: it keeps being fed the pad token, which is
   masked out of the response by its length (never by its id: pad == eos for SmolLM2).
   The loop stops when every row is finished or after ``max_new_tokens``.

The token-level geometric mixture (Nash-MD's opponent, THEORY.md Sec. 4) samples from
``softmax((1 - mixture_coef) logits_pi + mixture_coef logits_mu)`` at each step
(:func:`mixture_logits`), with a SEPARATE cache per model: each model only ever sees the
states of its own forward passes, and the cost is linear in the response length. (TRL 1.13
with transformers 5 passes one cache to both models, which then attend to each other's
states; its correct configuration, ``use_cache=False``, recomputes the whole prefix at
every step: quadratic. See docs/PEERS.md.)

:func:`sample_policy_and_mixture` runs the policy once per step on 2B rows (B continuing
the policy sample y, B continuing the mixture sample y') and the reference on the B rows of
y' only, so one loop gives y with log pi of its tokens and y' ~ pi^(1-beta) mu^beta (token
level); log mu of y (the KL term of Nash-MD-PG) comes from one teacher-forced forward of mu
after the loop, cheaper than B more rows at every step.

Cost notes: rows that repeat a prompt (same ids and mask: Nash-MD's y and y' rows, k
samples of one prompt) are prefilled once and their cache rows copied (:mod:`nlhf.sampling.cached_lm`);
finished rows stay in the batch until every row has finished (no compaction).

Beside it: the per-step recording of tokens and log-probs into a :class:`Rollout`
(:mod:`nlhf.sampling.recorder`), logits processing and the mixture (:mod:`nlhf.sampling.logits`),
the cached-model wrapper (:mod:`nlhf.sampling.cached_lm`), the row streams (:mod:`nlhf.sampling.streams`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from nlhf.models.forward import forward_signature, unwrap_model
from nlhf.sampling.cached_lm import CachedLM, sampling_mode
from nlhf.sampling.config import SamplingConfig
from nlhf.sampling.logits import (
    mixture_logits,
    position_ids_from_mask,
    process_logits,
    sample_tokens,
    token_logps_at,
)
from nlhf.sampling.recorder import ResponseRecorder
from nlhf.sampling.rollout import Rollout
from nlhf.sampling.streams import RowGenerator, RowStream

# --------------------------------------------------------------------------------------
# Random streams
# --------------------------------------------------------------------------------------


def make_generator(seed: int, device: Any = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed`` (save ``get_state()`` in checkpoints)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    return generator


def _stream(generator: Any, rows: int, where: str) -> Any:
    """What the decode loop draws from: a :class:`RowStream` for a RowGenerator, else the torch.Generator."""
    if isinstance(generator, RowGenerator):
        return generator.stream(rows, where)
    return generator


# --------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------


def _check_prompts(where: str, prompt_ids: Tensor, prompt_mask: Tensor) -> None:
    if prompt_ids.dim() != 2 or prompt_ids.shape != prompt_mask.shape:
        raise ValueError(
            f"{where}: prompt_ids {tuple(prompt_ids.shape)} and prompt_mask {tuple(prompt_mask.shape)} must both be "
            "(B, P)"
        )
    if prompt_ids.shape[0] == 0 or prompt_ids.shape[1] == 0:
        raise ValueError(f"{where}: empty prompt batch {tuple(prompt_ids.shape)}")
    if prompt_ids.dtype not in (torch.long, torch.int32, torch.int64):
        raise ValueError(f"{where}: prompt_ids must be integer token ids, got {prompt_ids.dtype}")
    mask = prompt_mask.long()  # (B, P)
    if bool(((mask != 0) & (mask != 1)).any()):
        raise ValueError(f"{where}: prompt_mask must be 0/1")
    empty = (mask.sum(dim=-1) == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"{where}: prompt rows {empty} have no tokens (prompt_mask all 0)")
    not_left = (mask[:, 1:] < mask[:, :-1]).any(dim=-1).nonzero().flatten().tolist()
    if not_left:
        raise ValueError(
            f"{where}: prompt rows {not_left} are not left-padded (a 0 after a 1 in prompt_mask); new tokens are "
            "appended on the right, so pad prompts on the left (nlhf.data.collate.collate_prompts does)"
        )


def _check_mixture_coef(where: str, mixture_coef: float) -> float:
    beta = float(mixture_coef)
    if not (0.0 <= beta <= 1.0) or math.isnan(beta):
        raise ValueError(f"{where}: mixture_coef must be in [0, 1], got {mixture_coef!r}")
    return beta


def _as_id_list(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


def _special_ids(
    where: str,
    model: Any,
    cfg: SamplingConfig,
    eos_token_id: int | Sequence[int] | None,
    pad_token_id: int | None,
    device: Any,
) -> tuple[Tensor | None, int]:
    """(stop ids as a tensor or None, pad id), from the arguments or else the model's configs."""
    target = unwrap_model(model)
    eos = _as_id_list(eos_token_id)
    if not eos:
        for source in (getattr(target, "generation_config", None), getattr(target, "config", None)):
            eos = _as_id_list(getattr(source, "eos_token_id", None))
            if eos:
                break
    if cfg.stop_on_eos and not eos:
        raise ValueError(
            f"{where}: stop_on_eos is set but no EOS id is known: pass eos_token_id= (the tokenizer's) or set "
            "sampling.stop_on_eos=false"
        )
    if pad_token_id is None:
        pad_token_id = getattr(getattr(target, "config", None), "pad_token_id", None)
    if pad_token_id is None:
        pad_token_id = eos[0] if eos else 0
    stop_ids = torch.tensor(eos, dtype=torch.long, device=device) if cfg.stop_on_eos else None
    return stop_ids, int(pad_token_id)


def _decode_setup(
    where: str,
    model: Any,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    cfg: SamplingConfig,
    generator: Any,
    eos_token_id: int | Sequence[int] | None,
    pad_token_id: int | None,
    rows_per_prompt: int = 1,
) -> tuple[Tensor | None, int, Any]:
    """What every sampler starts from: ``(stop ids or None, pad id, the stream to draw from)``.

    Checks the prompts, resolves the special ids from the arguments or ``model``'s configs,
    seeds a fresh ``torch.Generator`` from ``cfg.seed`` when ``generator`` is None, and opens
    the stream over ``rows_per_prompt * B`` decode rows (:func:`_stream`).
    """
    _check_prompts(where, prompt_ids, prompt_mask)
    stop_ids, pad_id = _special_ids(where, model, cfg, eos_token_id, pad_token_id, prompt_ids.device)
    generator = generator if generator is not None else make_generator(cfg.seed)
    return stop_ids, pad_id, _stream(generator, rows_per_prompt * prompt_ids.shape[0], where)


# --------------------------------------------------------------------------------------
# The samplers
# --------------------------------------------------------------------------------------


def _generate(
    model: Any,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    cfg: SamplingConfig,
    generator: torch.Generator | None,
    eos_token_id: int | Sequence[int] | None,
    pad_token_id: int | None,
    return_step_logits: bool,
    where: str,
    logps_name: str,
) -> Rollout:
    stop_ids, pad_id, generator = _decode_setup(where, model, prompt_ids, prompt_mask, cfg, generator, eos_token_id,
                                                pad_token_id)  # fmt: skip
    B = prompt_ids.shape[0]
    recorder = ResponseRecorder(B, stop_ids, pad_id, prompt_ids.device, return_step_logits)
    with sampling_mode(model):
        lm = CachedLM(model, prompt_mask, cfg.max_new_tokens)
        logits = lm.prefill(prompt_ids)  # (B, V)
        for t in range(cfg.max_new_tokens):
            processed = process_logits(logits, cfg.temperature, cfg.top_k, cfg.top_p)  # (B, V)
            tokens, sampling_logps = sample_tokens(processed, generator)  # (B,), (B,)
            tokens = recorder.add(
                tokens, sampling_logps, logits, **{logps_name: token_logps_at(logits, tokens)}
            )
            if recorder.done or t == cfg.max_new_tokens - 1:
                break
            logits = lm.step(tokens)  # (B, V)
    return recorder.build(prompt_ids, prompt_mask)


def generate(
    model: Any,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    cfg: SamplingConfig,
    generator: torch.Generator | None = None,
    *,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    return_step_logits: bool = False,
) -> Rollout:
    """Sample one response per prompt from ``model`` with a KV cache (the loop of the module docstring).

    Args:
        model: a causal LM (a Hugging Face model, a peft model, or :class:`nlhf.models.Reference`).
            Run in eval mode under ``torch.no_grad()`` (its training flags are restored after).
        prompt_ids: (B, P) long, LEFT-padded, on the model's device.
        prompt_mask: (B, P) 0/1, 1 on prompt tokens.
        cfg: :class:`SamplingConfig` (max_new_tokens, temperature, top_k, top_p, stop_on_eos).
        generator: the random stream (one uniform per row per step): a ``torch.Generator``
            (rows draw in turn from one stream), or a :class:`RowGenerator` with one stream per
            row (a row's tokens then do not depend on its batch; what the trainers pass). None:
            a fresh ``torch.Generator`` seeded with ``cfg.seed`` (so the call alone is reproducible).
        eos_token_id: id(s) that end a response (default: the model's generation config / config).
        pad_token_id: the id written after a row's end (default: the model config's pad id, else EOS).
        return_step_logits: also return the (B, R, V) logits each step sampled from (tests, diagnostics).

    Returns:
        :class:`Rollout` with ``sampling_logps`` and ``policy_logps`` (the model's own log-probs
        at temperature 1; for this function "policy" means the model that sampled).
    """
    return _generate(
        model,
        prompt_ids,
        prompt_mask,
        cfg,
        generator,
        eos_token_id,
        pad_token_id,
        return_step_logits,
        "generate",
        "policy_logps",
    )


def sample_mixture(
    policy: Any,
    ref: Any,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    mixture_coef: float,
    cfg: SamplingConfig,
    generator: torch.Generator | None = None,
    *,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    return_step_logits: bool = False,
) -> Rollout:
    """Sample from the token-level geometric mixture pi^(1-beta) mu^beta (THEORY.md Sec. 4).

    Each step draws from ``process_logits((1 - beta) logits_pi + beta logits_mu)``, with one
    KV cache per model (cost linear in the length). ``ref`` may be any second model: with an
    EMA copy of the policy and ``mixture_coef=1`` this samples Nash-EMA-PG's opponent.

    ``mixture_coef = 0`` is exactly :func:`generate` on ``policy`` and ``1`` exactly
    :func:`generate` on ``ref`` (same tokens for the same generator state); only that model
    is run, so the other log-probs field is None. Otherwise the rollout carries
    ``policy_logps`` and ``ref_logps`` (temperature 1) of the mixture's tokens as well.
    Arguments as in :func:`generate`; the random stream is consumed the same way.
    """
    beta = _check_mixture_coef("sample_mixture", mixture_coef)
    if beta in (0.0, 1.0):
        model, name = (policy, "policy_logps") if beta == 0.0 else (ref, "ref_logps")
        return _generate(
            model,
            prompt_ids,
            prompt_mask,
            cfg,
            generator,
            eos_token_id,
            pad_token_id,
            return_step_logits,
            "sample_mixture",
            name,
        )
    stop_ids, pad_id, generator = _decode_setup("sample_mixture", policy, prompt_ids, prompt_mask, cfg, generator,
                                                eos_token_id, pad_token_id)  # fmt: skip
    B = prompt_ids.shape[0]
    recorder = ResponseRecorder(B, stop_ids, pad_id, prompt_ids.device, return_step_logits)
    with sampling_mode(policy, ref):
        policy_lm = CachedLM(policy, prompt_mask, cfg.max_new_tokens)
        ref_lm = CachedLM(ref, prompt_mask, cfg.max_new_tokens)
        policy_logits = policy_lm.prefill(prompt_ids)  # (B, V)
        ref_logits = ref_lm.prefill(prompt_ids)  # (B, V)
        for t in range(cfg.max_new_tokens):
            mixed = mixture_logits(policy_logits, ref_logits, beta)  # (B, V)
            processed = process_logits(mixed, cfg.temperature, cfg.top_k, cfg.top_p)  # (B, V)
            tokens, sampling_logps = sample_tokens(processed, generator)  # (B,), (B,)
            tokens = recorder.add(
                tokens,
                sampling_logps,
                mixed,
                policy_logps=token_logps_at(policy_logits, tokens),
                ref_logps=token_logps_at(ref_logits, tokens),
            )
            if recorder.done or t == cfg.max_new_tokens - 1:
                break
            policy_logits = policy_lm.step(tokens)  # (B, V)
            ref_logits = ref_lm.step(tokens)  # (B, V)
    return recorder.build(prompt_ids, prompt_mask)


def sample_policy_and_mixture(
    policy: Any,
    ref: Any,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    mixture_coef: float,
    cfg: SamplingConfig,
    generator: torch.Generator | None = None,
    *,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    return_step_logits: bool = False,
) -> tuple[Rollout, Rollout]:
    """Nash-MD-PG's two samples per prompt from one decode loop: y ~ pi and y' ~ pi^(1-beta) mu^beta.

    Each step the policy runs once on 2B rows and the reference once on B rows, each model
    with its own cache: rows ``0..B-1`` continue y (sampled from
    ``process_logits(logits_pi)``), rows ``B..2B-1`` continue y' (from
    ``process_logits(mixture_logits(logits_pi, logits_mu, beta))``); only y' needs the
    reference while decoding. The reference's log-probs of y then come from ONE
    teacher-forced forward of mu on the finished y (cheaper than B more rows at every
    step). The prompt is prefilled once per model (the 2B policy rows share it, see
    ``CachedLM.prefill``). y and y' are drawn with independent uniforms (2B per step), so
    they are independent given x. With a :class:`RowGenerator` of B rows, y and y' of
    prompt b use two sub-streams of row b's.

    Returns:
        ``(policy_rollout, mixture_rollout)``, both with ``sampling_logps``, ``policy_logps``
        and ``ref_logps`` (temperature 1, under ``policy`` and ``ref``). For y these give the
        per-token log-ratio log pi - log mu of Nash-MD-PG's KL term (THEORY.md Sec. 4).
        ``beta = 0`` is SelfPlay's pair, ``beta = 1`` BestResponse's. Arguments as in
        :func:`sample_mixture`.
    """
    beta = _check_mixture_coef("sample_policy_and_mixture", mixture_coef)
    where = "sample_policy_and_mixture"
    # a RowGenerator of B rows: y and y' on two sub-streams
    stop_ids, pad_id, generator = _decode_setup(where, policy, prompt_ids, prompt_mask, cfg, generator, eos_token_id,
                                                pad_token_id, rows_per_prompt=2)  # fmt: skip
    B = prompt_ids.shape[0]
    both_ids = torch.cat([prompt_ids, prompt_ids], dim=0)  # (2B, P)
    both_mask = torch.cat([prompt_mask, prompt_mask], dim=0)  # (2B, P)
    policy_rec = ResponseRecorder(B, stop_ids, pad_id, prompt_ids.device, return_step_logits)
    mixture_rec = ResponseRecorder(B, stop_ids, pad_id, prompt_ids.device, return_step_logits)
    with sampling_mode(policy, ref):
        policy_lm = CachedLM(policy, both_mask, cfg.max_new_tokens)
        ref_lm = CachedLM(ref, prompt_mask, cfg.max_new_tokens)  # y' rows only
        policy_logits = policy_lm.prefill(both_ids)  # (2B, V)
        ref_logits = ref_lm.prefill(prompt_ids)  # (B, V)
        for t in range(cfg.max_new_tokens):
            mixed = mixture_logits(policy_logits[B:], ref_logits, beta)  # (B, V)
            sampled_from = torch.cat([policy_logits[:B], mixed], dim=0)  # (2B, V)
            processed = process_logits(sampled_from, cfg.temperature, cfg.top_k, cfg.top_p)  # (2B, V)
            tokens, sampling_logps = sample_tokens(processed, generator)  # (2B,), (2B,)
            policy_tokens = policy_rec.add(
                tokens[:B],
                sampling_logps[:B],
                policy_logits[:B],
                policy_logps=token_logps_at(policy_logits[:B], tokens[:B]),
            )
            mixture_tokens = mixture_rec.add(
                tokens[B:],
                sampling_logps[B:],
                mixed,
                policy_logps=token_logps_at(policy_logits[B:], tokens[B:]),
                ref_logps=token_logps_at(ref_logits, tokens[B:]),
            )
            if (policy_rec.done and mixture_rec.done) or t == cfg.max_new_tokens - 1:
                break
            policy_logits = policy_lm.step(torch.cat([policy_tokens, mixture_tokens], dim=0))  # (2B, V)
            ref_logits = ref_lm.step(mixture_tokens)  # (B, V)
        y = policy_rec.build(prompt_ids, prompt_mask)
        y = dataclasses.replace(
            y, ref_logps=response_logps(ref, y)
        )  # (B, R) log mu of y: one teacher-forced forward
    return y, mixture_rec.build(prompt_ids, prompt_mask)


# --------------------------------------------------------------------------------------
# Scoring a rollout (with gradient, for the trainers)
# --------------------------------------------------------------------------------------


def response_logps(model: Any, rollout: Rollout, temperature: float = 1.0) -> Tensor:
    """(B, R) log-probs of ``rollout.response_ids`` under ``model``, aligned with them; 0 off the mask.

    One forward of ``model`` on ``rollout.sequences()`` (position ids from the mask, as when
    sampling), scored by :func:`nlhf.logprobs.token_logps`; or, when the rows come in runs of
    K identical prompts and the model takes a KV cache, each prompt once with its cache
    repeated (:func:`nlhf.sampling.shared_prompt.grouped_response_logps`: the same numbers,
    about (P + K R) / (K (P + R)) of the work). Differentiable when called with
    gradients enabled (the trainer's policy forward). At temperature 1 it reproduces the
    sampler's recorded ``policy_logps`` / ``ref_logps`` up to float rounding. Only the logits
    of the last R + 1 positions are materialised when the model accepts ``logits_to_keep``.
    """
    from nlhf.logprobs import token_logps
    from nlhf.sampling.shared_prompt import can_share_prompt, grouped_response_logps, prompt_group_size

    group = prompt_group_size(rollout)  # rows in runs of K identical prompts: run each prompt once
    if group > 1 and can_share_prompt(model):
        return grouped_response_logps(model, rollout, group, temperature)
    input_ids, attention_mask, completion_mask = rollout.sequences()  # (B, P+R) each
    P = rollout.prompt_width
    R = int(rollout.response_ids.shape[1])
    kwargs: dict[str, Any] = {}
    keeps_logits = forward_signature(model).logits_to_keep
    if keeps_logits:
        kwargs["logits_to_keep"] = R + 1
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
        **kwargs,
    ).logits  # (B, R+1, V) or (B, P+R, V)
    logits = logits[:, -(R + 1) :]  # (B, R+1, V): positions P-1 .. P+R-1
    out = token_logps(
        logits, input_ids[:, P - 1 :], completion_mask[:, P - 1 :], temperature=temperature
    )  # (B, R)
    return out


__all__ = [
    "generate",
    "make_generator",
    "RowGenerator",
    "RowStream",
    "mixture_logits",
    "position_ids_from_mask",
    "process_logits",
    "response_logps",
    "sample_mixture",
    "sample_policy_and_mixture",
    "sample_tokens",
]
