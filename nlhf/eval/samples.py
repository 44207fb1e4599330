"""The tournament's sampling stage: every policy's responses, and the log pi - log mu of each (issue 6).

:func:`sample_pool` draws ``cfg.samples_per_prompt`` responses per prompt for every policy
(and the best-of-n reference candidates), each response row on its own random stream
seeded from ``(cfg.seed, tag, prompt index, sample index)``; :func:`kl_columns` turns the
recorded log-ratios into the KL(pi || mu) column. The semantics are in
:mod:`nlhf.eval.tournament`'s docstring.

Importing this module is cheap; torch loads inside the sampling functions.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nlhf.data.collate import pad_token_id
from nlhf.eval.config import TournamentConfig
from nlhf.eval.policies import PolicyEntry

# Seed-sequence tags: each random stream of the tournament is seeded from (seed, tag, ...).
_SAMPLE, _BEST_OF_N, _BOOTSTRAP, _CLASS_WIN = 0, 1, 3, 4  # (2 was the old outcome draws)


def derive_seed(*words: int) -> int:
    """A 63-bit seed from integer words (numpy SeedSequence: independent streams per tuple)."""
    state = np.random.SeedSequence([int(w) % 2**63 for w in words]).generate_state(1, dtype=np.uint64)[0]
    return int(state >> np.uint64(1))


@dataclass
class PolicySamples:
    """One policy's N responses: texts, token lengths, truncation flags and per-sample log pi - log mu."""

    texts: list[str]  # (N,)
    lengths: np.ndarray  # (N,) int, response tokens (EOS included)
    truncated: np.ndarray  # (N,) bool
    log_ratio: np.ndarray | None  # (N,) float64 sum_t log pi - log mu (None: no mu)


def progress_bar(total: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar on stderr counting rows (disabled when ``enabled`` is False)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="row", disable=not enabled, file=sys.stderr, dynamic_ncols=True)


def _model_device(model: Any) -> Any:
    device = getattr(model, "device", None)
    if device is not None:
        return device
    return next(model.parameters()).device


def sample_responses(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Any],
    cfg: TournamentConfig,
    stream: tuple[int, ...],
    *,
    samples: int | None = None,
    reference_model: Any = None,
    bar: Any = None,
) -> PolicySamples:
    """``samples`` (default ``cfg.samples_per_prompt``) responses per prompt, prompt-major (module docstring).

    ``stream``: words identifying the random stream (e.g. ``(_SAMPLE,)``); the
    stream of response row (p, k) is seeded from ``(cfg.seed, *stream, p, k)``.
    ``reference_model``: mu, to record sum_t log pi - log mu per response (temperature 1).
    """
    import torch

    from nlhf.data.collate import eos_id
    from nlhf.data.prompt_batches import make_prompt_collate as make_collate
    from nlhf.data.prompt_batches import repeat_prompts, tokenize_prompts
    from nlhf.sampling.decode import generate, response_logps
    from nlhf.sampling.streams import RowGenerator

    S = cfg.samples_per_prompt if samples is None else samples
    sampling = cfg.sampling()
    device = _model_device(model)
    collate = make_collate(pad_token_id(tokenizer))
    per_batch = max(1, cfg.batch_size // S)
    texts: list[str] = []
    lengths, truncated, ratios = [], [], []
    for start in range(0, len(prompts), per_batch):
        chunk = list(prompts[start : start + per_batch])
        batch = collate(tokenize_prompts(tokenizer, chunk, cfg.max_prompt_tokens)).prompts
        rows = repeat_prompts(batch, S).to(device)  # (b S, P): rows [i S, (i+1) S) are prompt i
        seeds = [derive_seed(cfg.seed, *stream, start + i, k) for i in range(len(chunk)) for k in range(S)]
        generator = RowGenerator(seeds, device=device)  # row i S + k: sample k of prompt start + i
        rollout = generate(
            model, rows.input_ids, rows.attention_mask, sampling, generator,
            eos_token_id=eos_id(tokenizer), pad_token_id=pad_token_id(tokenizer),
        )  # fmt: skip
        texts.extend(rollout.response_texts(tokenizer))
        lengths.append(rollout.response_lengths.cpu().numpy())
        truncated.append(rollout.truncated.cpu().numpy())
        if reference_model is not None:
            with torch.no_grad():  # mu may live on another device than pi
                ref_logps = response_logps(
                    reference_model, rollout.to(_model_device(reference_model))
                )  # (b S, R)
            ref_logps = ref_logps.to(device=rollout.policy_logps.device, dtype=torch.float64)
            mask = rollout.response_mask.to(torch.float64)  # (b S, R)
            ratio = ((rollout.policy_logps.double() - ref_logps) * mask).sum(-1)  # (b S,)
            ratios.append(ratio.double().cpu().numpy())
        if bar is not None:
            bar.update(len(chunk) * S)
    return PolicySamples(
        texts=texts,
        lengths=np.concatenate(lengths).astype(np.int64),
        truncated=np.concatenate(truncated).astype(bool),
        log_ratio=np.concatenate(ratios) if reference_model is not None else None,
    )


def _same_vocab(tok_a: Any, tok_b: Any) -> bool:
    if tok_a is tok_b:
        return True
    try:
        return tok_a.get_vocab() == tok_b.get_vocab()
    except AttributeError:  # pragma: no cover - tokenizers without get_vocab
        return len(tok_a) == len(tok_b)


def _mu_for(entry: PolicyEntry, reference: PolicyEntry | None) -> tuple[Any, str | None]:
    """(mu's model or None, a note when there is none)."""
    if entry.reference is not None:
        return entry.reference, None
    from nlhf.models.lora import is_peft_model

    if is_peft_model(entry.model):
        from nlhf.models.policy import Reference

        return Reference(adapter_of=entry.model), None
    if reference is not None:
        if not _same_vocab(entry.tokenizer, reference.tokenizer):
            return None, f"{entry.name}: no KL (its tokenizer differs from the reference {reference.name}'s)"
        return reference.model, None
    return None, f"{entry.name}: no KL (no reference model)"


def sample_pool(
    policies: Sequence[PolicyEntry],
    prompts: Sequence[Any],
    cfg: TournamentConfig,
    reference: PolicyEntry | None,
    ref_index: int | None,
    use_best_of_n: bool,
    notes: list[str],
    progress: bool,
) -> tuple[list[PolicySamples], PolicySamples | None]:
    """Stage 1: (every policy's samples, the reference's best-of-n candidates or None).

    Each policy records log pi - log mu against its mu (:func:`_mu_for`; none for the
    reference policy itself, index ``ref_index``); a policy without mu appends a note to
    ``notes``. The best-of-n candidates: S * M reference samples per prompt, row
    ``r * M + m`` the m-th candidate against response ``r = p S + k``.
    """
    import torch

    S, M = cfg.samples_per_prompt, cfg.best_of_n
    N = len(prompts) * S
    bon_rows = N * M if use_best_of_n else 0
    samples: list[PolicySamples] = []
    bon = None
    with torch.no_grad(), progress_bar(len(policies) * N + bon_rows, "sampling", progress) as bar:
        for i, entry in enumerate(policies):
            mu, note = (None, None) if i == ref_index else _mu_for(entry, reference)
            if note:
                notes.append(note)
            samples.append(sample_responses(entry.model, entry.tokenizer, prompts, cfg, (_SAMPLE,),
                                            reference_model=mu, bar=bar))  # fmt: skip
        if use_best_of_n:
            bon = sample_responses(reference.model, reference.tokenizer, prompts, cfg, (_BEST_OF_N, 0),
                                   samples=S * M, bar=bar)  # fmt: skip
    return samples, bon


def kl_estimate(log_ratio: np.ndarray) -> tuple[float, float]:
    """(mean, standard error std/sqrt(n)) of per-sample sum_t log pi - log mu: the Monte Carlo KL(pi || mu)."""
    x = np.asarray(log_ratio, dtype=np.float64)
    n = x.shape[0]
    if n == 0:
        return float("nan"), float("nan")
    se = float(x.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return float(x.mean()), se


def kl_columns(samples: Sequence[PolicySamples], ref_index: int | None) -> tuple[np.ndarray, ...]:
    """Stage 4: (kl, kl_se, mean_length, truncated fraction), each (n,); the reference policy's KL is 0 exactly."""
    n = len(samples)
    kl = np.full(n, np.nan)
    kl_se = np.full(n, np.nan)
    for i, s in enumerate(samples):
        if i == ref_index:
            kl[i], kl_se[i] = 0.0, 0.0
        elif s.log_ratio is not None:
            kl[i], kl_se[i] = kl_estimate(s.log_ratio)
    mean_length = np.array([s.lengths.mean() for s in samples], dtype=np.float64)
    truncated = np.array([s.truncated.mean() for s in samples], dtype=np.float64)
    return kl, kl_se, mean_length, truncated
