"""The round-robin tournament: sample, judge every ordered pair, and summarise (issue 6, THEORY.md Sec. 1, 2, 7).

:func:`run_tournament` takes policies (:class:`~nlhf.eval.policies.PolicyEntry`), prompts
and any :class:`~nlhf.judges.Judge`, and returns a
:class:`~nlhf.eval.result.TournamentResult`. What each number means:

Sampling
    ``cfg.samples_per_prompt`` (S) responses per prompt for every policy, by
    :func:`nlhf.sampling.generate` (KV-cached, stop at EOS, ``cfg.max_new_tokens``). Prompts
    are tokenised as the online trainers do (:func:`nlhf.data.prompt_batches.tokenize_prompts`:
    chat template with the generation prompt when the tokenizer has one; cut from the left
    to ``cfg.max_prompt_tokens`` if set) and
    left-padded (:func:`nlhf.data.prompt_batches.make_prompt_collate`). Batches hold
    ``max(1, cfg.batch_size // S)`` prompts; every response row has its own random stream
    (:class:`nlhf.sampling.decode.RowGenerator`) seeded from ``(cfg.seed, prompt index,
    sample index)``, so adding a policy leaves the other policies' samples unchanged, and
    the samples do not depend on ``batch_size``. The streams are the SAME for every policy
    (common random numbers): sample k of prompt p uses the same uniforms under each policy,
    so two policies that barely differ mostly give the same response and their comparison
    is not drowned in sampling noise; comparisons on different (p, k) stay independent, which
    is all the intervals below need.
    N = len(prompts) * S responses per policy; response ``r = p * S + k`` is sample k of prompt p.

Win rates
    Every ordered pair (i, j), i != j, is judged on the same prompts, N comparisons per pair,
    in batches of ``cfg.batch_size``: sample k of policy i against sample k + 1 (mod S) of
    policy j (``cfg.independent_pairs``, the default), whose random stream differs, so the
    two responses are independent draws given the prompt. (Sample k against sample k would
    pair two responses drawn with the SAME uniforms; that coupling changes the expectation
    in a cyclic game: tests/eval/test_eval_tournament_pairs.py has a case where the coupled
    mean is 0 and the win rate 0.375. With S = 1 there is no other sample, and a note says
    the pairs are coupled.) ``win_rate[i, j]`` is the mean judge probability
    P(y_i > y_j | x) (both orders are asked, on the same pairs: a judge that is not exactly
    symmetric may give ``win_rate[i, j] + win_rate[j, i] != 1``); the diagonal is 1/2.
    Interval (``cfg.interval``): ``"auto"`` takes ``"cluster_t"`` when the judge returns
    probabilities and ``"wilson"`` when every comparison is a 0/1 outcome.
    ``cluster_t`` (:func:`nlhf.eval.intervals.cluster_t_interval`): the mean of the G
    per-prompt means +- t(G - 1) x their standard deviation / sqrt(G): the prompts are the
    independent units, and the observed spread of the probabilities is used (no binomial
    variance), so a judge whose probabilities sit near 1/2 gets the narrower interval it
    supports; ``win_se`` holds the standard error. ``wilson`` / ``clopper_pearson``: a
    binomial interval on ``wins[i, j] = sum P`` (a fractional count) out of
    ``n_effective[i, j]`` (:func:`nlhf.eval.intervals.effective_comparisons`, the number of
    comparisons the spread of the per-prompt means supports, at most N) with
    ``cfg.cluster_prompts``, else out of N.
    Class oracles also give the plug-in class-level win rate pi_i^T P* pi_j of each pair
    (:func:`class_win_rates`: independent draws, the oracle's exact class matrix in place of
    sampled pairs) with a percentile bootstrap over prompts, and keep every sample's class
    (``class_labels``) for paired differences (:mod:`nlhf.eval.paired`).

KL(pi || mu)
    The Monte Carlo mean over the policy's own N samples of
    ``sum_t [log pi(y_t | x, y_<t) - log mu(y_t | x, y_<t)]`` at temperature 1
    (log pi recorded by the sampler, log mu by one forward of mu,
    :func:`nlhf.sampling.response_logps`), with standard error ``std / sqrt(N)``. mu is the
    entry's ``reference``; else, for a peft (LoRA) model, its base with the adapter
    disabled; else the tournament's ``reference`` policy; else no KL (nan). The reference
    policy itself gets KL 0 exactly. When ``cfg`` does not sample at temperature 1 without
    cuts, the samples are not from pi and the number is not KL(pi || mu) (a note says so).

Exploitability (THEORY.md Sec. 2: max_pi' P(pi' > pi) - 1/2)
    * class-level oracle (a judge with ``.classify`` and ``.P``, e.g.
      :class:`nlhf.envs.RaterPopulation`): exactly, at the class level, on the policy's
      empirical class distribution with :func:`nlhf.lab.exploitability`; interval: a
      percentile bootstrap over prompts (``cfg.bootstrap`` resamples). Method ``class_exact``.
    * otherwise a lower bound: the best win rate against the policy that another policy of
      the pool achieves, or a best-of-n response of the reference (``cfg.best_of_n``
      reference samples per comparison; the one with the highest judge probability against
      the policy's response), minus 1/2; the same bootstrap. Method ``pool_best_of_n``
      (or ``pool`` without a reference / with ``best_of_n = 0``).

Importing this module is cheap; torch loads inside :func:`run_tournament`.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nlhf.data.collate import pad_token_id
from nlhf.eval.config import TournamentConfig
from nlhf.eval.intervals import (
    binomial_interval,
    bootstrap_interval,
    cluster_t_interval,
    effective_comparisons,
)
from nlhf.eval.policies import PolicyEntry
from nlhf.eval.result import TournamentResult

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


def is_class_judge(judge: Any) -> bool:
    """A class-level oracle: ``.classify(prompts, responses) -> (B,) int`` and a class matrix ``.P`` (K, K)."""
    return callable(getattr(judge, "classify", None)) and getattr(judge, "P", None) is not None


def _progress(total: int, desc: str, enabled: bool) -> Any:
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


def judge_all(judge: Any, prompts: Sequence[Any], first: Sequence[str], second: Sequence[str], batch_size: int,
              bar: Any = None) -> np.ndarray:  # fmt: skip
    """P(first > second | prompt) for every row, in batches of ``batch_size``: (B,) float64."""
    out = []
    for b in range(0, len(first), batch_size):
        p = judge.prob(list(prompts[b : b + batch_size]), list(first[b : b + batch_size]),
                       list(second[b : b + batch_size]))  # fmt: skip
        out.append(np.asarray(p.detach().cpu().numpy() if hasattr(p, "detach") else p, dtype=np.float64))
        if bar is not None:
            bar.update(len(out[-1]))
    return np.concatenate(out) if out else np.zeros(0)


def kl_estimate(log_ratio: np.ndarray) -> tuple[float, float]:
    """(mean, standard error std/sqrt(n)) of per-sample sum_t log pi - log mu: the Monte Carlo KL(pi || mu)."""
    x = np.asarray(log_ratio, dtype=np.float64)
    n = x.shape[0]
    if n == 0:
        return float("nan"), float("nan")
    se = float(x.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return float(x.mean()), se


def class_exploitability(P: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, float]:
    """(class distribution (K,), exact exploitability max_y P(y > pi) - 1/2) of class labels (nlhf.lab)."""
    from nlhf.lab.solvers import exploitability

    P = np.asarray(P, dtype=np.float64)
    dist = np.bincount(np.asarray(labels).ravel(), minlength=P.shape[0]).astype(np.float64)
    dist = dist / dist.sum()
    return dist, float(exploitability(P, dist))


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


def _check_inputs(policies: Sequence[PolicyEntry], prompts: Sequence[Any]) -> None:
    if not policies:
        raise ValueError("run_tournament: no policies")
    names = [p.name for p in policies]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"run_tournament: policy names must be unique, repeated: {dup}")
    if len(prompts) == 0:
        raise ValueError("run_tournament: no prompts")


def run_tournament(
    policies: Sequence[PolicyEntry],
    prompts: Sequence[Any],
    judge: Any,
    cfg: TournamentConfig = TournamentConfig(),  # noqa: B008 - frozen, immutable default
    *,
    reference: PolicyEntry | None = None,
    progress: bool = True,
) -> TournamentResult:
    """Round-robin tournament of ``policies`` on ``prompts`` under ``judge`` (module docstring).

    Args:
        policies: the pool (unique names); the win-rate matrix is over them.
        prompts: ``Prompt`` (str or messages) or ``PromptExample`` / ``PreferenceExample`` objects.
        judge: any :class:`nlhf.judges.Judge`; a class-level oracle (``.classify`` and
            ``.P``) also gives exact exploitabilities and class distributions.
        cfg: :class:`TournamentConfig`.
        reference: mu: the KL reference of entries without their own (non-LoRA) and the
            source of the best-of-n exploiter. It may be one of ``policies`` (then its KL
            is 0 exactly) or a policy outside the pool.
        progress: tqdm bars (stderr) while sampling and judging.
    """
    _check_inputs(policies, prompts)
    import torch

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    prompt_list = [getattr(p, "prompt", p) for p in prompts]
    n, S, n_prompts = len(policies), cfg.samples_per_prompt, len(prompt_list)
    N = n_prompts * S
    flat_prompts = [prompt_list[r // S] for r in range(N)]  # (N,) the prompt of response r
    ref_index = next(
        (
            i
            for i, p in enumerate(policies)
            if reference is not None and (p is reference or p.model is reference.model)
        ),
        None,
    )
    class_judge = is_class_judge(judge)
    use_best_of_n = (not class_judge) and reference is not None and cfg.best_of_n > 0 and n >= 1
    notes: list[str] = []
    if not cfg.is_exact:
        notes.append(
            f"Samples were drawn at temperature {cfg.temperature:g}, top_k {cfg.top_k}, top_p {cfg.top_p:g}: they "
            "are not samples of pi, so the win rates are those of the sampled distributions and the KL column is "
            "E_q[log pi - log mu], not KL(pi || mu)."
        )

    # 1. Sampling (and log pi - log mu of every response)
    t0 = time.perf_counter()
    bon_rows = N * cfg.best_of_n if use_best_of_n else 0
    samples: list[PolicySamples] = []
    with torch.no_grad(), _progress(n * N + bon_rows, "sampling", progress) as bar:
        for i, entry in enumerate(policies):
            mu, note = (None, None) if i == ref_index else _mu_for(entry, reference)
            if note:
                notes.append(note)
            samples.append(sample_responses(entry.model, entry.tokenizer, prompt_list, cfg, (_SAMPLE,),
                                            reference_model=mu, bar=bar))  # fmt: skip
        bon = None
        if use_best_of_n:
            # S * M samples per prompt; row r * M + m is the m-th candidate against response r = p S + k
            bon = sample_responses(reference.model, reference.tokenizer, prompt_list, cfg, (_BEST_OF_N, 0),
                                   samples=S * cfg.best_of_n, bar=bar)  # fmt: skip
    timings["sampling"] = time.perf_counter() - t0

    # 2. Judging every ordered pair (and the best-of-n candidates)
    t0 = time.perf_counter()
    M = cfg.best_of_n
    pair_probs = np.full((n, n, N), 0.5)  # (n, n, N) P(y_i > y_j), diagonal 1/2
    independent = cfg.independent_pairs and S > 1
    if cfg.independent_pairs and S == 1:
        notes.append(
            "One sample per prompt: sample k of one policy is judged against sample k of the other, drawn with the "
            "same random stream (common random numbers), so the two responses are coupled, not independent; in a "
            "cyclic game the mean over coupled pairs can differ from the win rate of independent draws. Use "
            "samples_per_prompt >= 2 for independent pairs."
        )
    bon_best = np.full((n, N), np.nan)  # (n, N) best candidate's P(y_bon > y_i)
    with _progress(n * (n - 1) * N + (n * N * M if use_best_of_n else 0), "judging", progress) as bar:
        for i in range(n):
            for j in range(n):
                if i != j:
                    opponent = samples[j].texts
                    if independent:  # i < j: sample k of i vs k + 1 of j; i > j: k vs k - 1 (the same pairs)
                        opponent = shifted_samples(opponent, S, 1 if i < j else -1)
                    pair_probs[i, j] = judge_all(judge, flat_prompts, samples[i].texts, opponent,
                                                 cfg.batch_size, bar)  # fmt: skip
        if use_best_of_n:
            rep_prompts = [x for x in flat_prompts for _ in range(M)]  # (N M,)
            for i in range(n):
                rep_policy = [y for y in samples[i].texts for _ in range(M)]  # (N M,)
                p = judge_all(judge, rep_prompts, bon.texts, rep_policy, cfg.batch_size, bar)  # (N M,)
                bon_best[i] = p.reshape(N, M).max(axis=1)  # (N,)
    timings["judging"] = time.perf_counter() - t0

    # 3. Win rates and their intervals
    win_rate = pair_probs.mean(axis=2)  # (n, n)
    wins = pair_probs.sum(axis=2)  # (n, n) expected wins: each comparison counts P(row > column)
    np.fill_diagonal(wins, 0.0)  # a policy plays no games against itself
    n_games = np.where(np.eye(n, dtype=bool), 0, N).astype(np.int64)  # (n, n)
    interval = resolve_interval(cfg.interval, pair_probs, n)
    n_effective, win_low, win_high, win_se = win_intervals(pair_probs, n_prompts, S, interval, cfg)

    # 4. KL, length, truncation
    kl = np.full(n, np.nan)
    kl_se = np.full(n, np.nan)
    for i, s in enumerate(samples):
        if i == ref_index:
            kl[i], kl_se[i] = 0.0, 0.0
        elif s.log_ratio is not None:
            kl[i], kl_se[i] = kl_estimate(s.log_ratio)
    mean_length = np.array([s.lengths.mean() for s in samples], dtype=np.float64)
    truncated = np.array([s.truncated.mean() for s in samples], dtype=np.float64)

    # 5. Exploitability
    t0 = time.perf_counter()
    exploit = np.full(n, np.nan)
    exploit_low = np.full(n, np.nan)
    exploit_high = np.full(n, np.nan)
    class_dist = None
    class_names = None
    class_labels = None
    class_win = None
    details: dict[str, Any] = {}
    if class_judge:
        method = "class_exact"
        P = np.asarray(judge.P, dtype=np.float64)
        K = P.shape[0]
        class_names = tuple(getattr(judge, "classes", None) or (f"class{k}" for k in range(K)))
        class_dist = np.zeros((n, K))
        class_labels = np.zeros((n, n_prompts, S), dtype=np.int64)
        for i, s in enumerate(samples):
            labels = np.asarray(judge.classify(flat_prompts, s.texts)).reshape(n_prompts, S)  # (n_prompts, S)
            class_labels[i] = labels
            class_dist[i], exploit[i] = class_exploitability(P, labels)
            rng = np.random.default_rng(derive_seed(cfg.seed, _BOOTSTRAP, i))
            exploit_low[i], exploit_high[i] = bootstrap_interval(
                lambda idx, labels=labels: class_exploitability(P, labels[idx])[1],
                n_prompts, cfg.bootstrap, rng, cfg.confidence,
            )  # fmt: skip
    else:
        method = "pool_best_of_n" if use_best_of_n else "pool"
        # per prompt: mean over its S samples of P(opponent > policy i), (n_prompts,) per opponent
        pool_best, pool_best_name = [], []
        for i in range(n):
            against = [pair_probs[j, i].reshape(n_prompts, S).mean(axis=1) for j in range(n) if j != i]
            others = [policies[j].name for j in range(n) if j != i]
            if use_best_of_n:
                against.append(bon_best[i].reshape(n_prompts, S).mean(axis=1))
            if not against:
                pool_best.append(float("nan"))
                pool_best_name.append(None)
                continue
            per_prompt = np.stack(against)  # (n_opponents, n_prompts)
            means = per_prompt.mean(axis=1)  # (n_opponents,)
            exploit[i] = float(means.max() - 0.5)
            if n > 1:
                k = int(np.argmax(means[: n - 1]))
                pool_best.append(float(means[k]))
                pool_best_name.append(others[k])
            else:
                pool_best.append(float("nan"))
                pool_best_name.append(None)
            rng = np.random.default_rng(derive_seed(cfg.seed, _BOOTSTRAP, i))
            exploit_low[i], exploit_high[i] = bootstrap_interval(
                lambda idx, per_prompt=per_prompt: float(per_prompt[:, idx].mean(axis=1).max() - 0.5),
                n_prompts, cfg.bootstrap, rng, cfg.confidence,
            )  # fmt: skip
        details = {"pool_best_win_rate": pool_best, "pool_best_opponent": pool_best_name}
        if use_best_of_n:
            details["best_of_n"] = M
            details["best_of_n_win_rate"] = bon_best.mean(axis=1).tolist()
            details["best_of_n_reference"] = reference.name
    if class_judge and n_prompts > 0:
        class_win = class_win_rates(
            P, class_labels, cfg.bootstrap, cfg.confidence, derive_seed(cfg.seed, _CLASS_WIN)
        )
    timings["exploitability"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start

    from nlhf.judges import judge_name

    return TournamentResult(
        names=[p.name for p in policies],
        win_rate=win_rate,
        wins=wins,
        n_games=n_games,
        n_effective=n_effective,
        win_low=win_low,
        win_high=win_high,
        kl=kl,
        kl_se=kl_se,
        mean_length=mean_length,
        truncated=truncated,
        exploitability=exploit,
        exploit_low=exploit_low,
        exploit_high=exploit_high,
        exploitability_method=method,
        class_distribution=class_dist,
        class_names=class_names,
        judge=judge_name(judge),
        interval=interval,
        config=cfg,
        prompts=prompt_list,
        responses=[s.texts for s in samples],
        response_lengths=[s.lengths.tolist() for s in samples],
        pair_probs=pair_probs,
        reference=policies[ref_index].name
        if ref_index is not None
        else (reference.name if reference else None),
        exploit_details=details,
        notes=notes,
        timings=timings,
        win_se=win_se,
        class_labels=class_labels,
        class_P=np.asarray(judge.P, dtype=np.float64) if class_judge else None,
        class_win_rate=None if class_win is None else class_win[0],
        class_win_low=None if class_win is None else class_win[1],
        class_win_high=None if class_win is None else class_win[2],
        independent_pairs=independent,
    )


def shifted_samples(texts: Sequence[str], S: int, shift: int) -> list[str]:
    """Responses ``r = p S + k`` reordered so that position ``p S + k`` holds sample ``(k + shift) mod S`` of prompt p.

    >>> shifted_samples(["a0", "a1", "a2", "b0", "b1", "b2"], 3, 1)
    ['a1', 'a2', 'a0', 'b1', 'b2', 'b0']
    """
    return [texts[(r // S) * S + (r % S + shift) % S] for r in range(len(texts))]


def resolve_interval(method: str, pair_probs: np.ndarray, n: int) -> str:
    """``"auto"``: ``"wilson"`` when every off-diagonal comparison is a 0/1 outcome, else ``"cluster_t"``."""
    if method != "auto":
        return method
    off = pair_probs[~np.eye(n, dtype=bool)]
    binary = off.size > 0 and bool(np.all((off == 0.0) | (off == 1.0)))
    return "wilson" if binary else "cluster_t"


def win_intervals(
    pair_probs: np.ndarray, n_prompts: int, S: int, interval: str, cfg: TournamentConfig
) -> tuple:
    """(n_effective, low, high, se), each (n, n), for every ordered pair (nan on the diagonal).

    ``cluster_t``: :func:`nlhf.eval.intervals.cluster_t_interval` on the (prompts, samples)
    comparisons; n_effective there reports p (1 - p) / se^2 (NOT clipped: the binomial
    variance p (1 - p) overstates the variance of probabilities near 1/2). Binomial methods:
    the fractional win count out of n_effective (``cfg.cluster_prompts``) or N comparisons.
    """
    n = pair_probs.shape[0]
    N = n_prompts * S
    n_effective = np.where(np.eye(n, dtype=bool), 0, N).astype(np.float64)
    low, high, se = (np.full((n, n), np.nan) for _ in range(3))
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            values = pair_probs[i, j].reshape(n_prompts, S)  # (G, S)
            p = float(values.mean())
            if interval == "cluster_t":
                low[i, j], high[i, j], se[i, j] = cluster_t_interval(values, cfg.confidence)
                if se[i, j] > 0:
                    n_effective[i, j] = p * (1.0 - p) / se[i, j] ** 2
                continue
            if cfg.cluster_prompts:  # the S samples of a prompt are one cluster
                n_effective[i, j] = effective_comparisons(values)
            m = n_effective[i, j]
            low[i, j], high[i, j] = binomial_interval(
                float(np.clip(p * m, 0.0, m)), m, interval, cfg.confidence
            )
            se[i, j] = math.sqrt(p * (1.0 - p) / m)
    return n_effective, low, high, se


def class_win_rates(P: np.ndarray, labels: np.ndarray, resamples: int, confidence: float, seed: int) -> tuple:
    """Plug-in class-level win rates pi_i^T P pi_j from each policy's class labels, with a bootstrap over prompts.

    ``labels``: (n, G, S) class of sample k of prompt g under policy i. pi_i is the class
    distribution of policy i's samples; the estimate is the win rate of INDEPENDENT draws
    of the two policies under an oracle that depends only on classes (the same estimand as
    the win rate, with the judge's exact P in place of sampled pairs, so less noise).
    Interval: percentile bootstrap resampling PROMPTS, the same prompts for every policy
    (paired). Returns (win (n, n), low (n, n), high (n, n)); nan intervals when ``resamples`` is 0.
    """
    n, G, S = labels.shape
    K = P.shape[0]

    def dists(idx: np.ndarray) -> np.ndarray:  # (n, K) class distributions on the prompts idx
        flat = labels[:, idx].reshape(n, -1)
        return np.stack([np.bincount(flat[i], minlength=K) / flat.shape[1] for i in range(n)])

    def matrix(idx: np.ndarray) -> np.ndarray:
        d = dists(idx)
        return d @ P @ d.T  # (n, n)

    win = matrix(np.arange(G))
    low, high = np.full((n, n), np.nan), np.full((n, n), np.nan)
    if resamples > 0:
        rng = np.random.default_rng(seed)
        draws = np.stack([matrix(rng.integers(0, G, size=G)) for _ in range(resamples)])  # (R, n, n)
        alpha = 1.0 - confidence
        low, high = np.quantile(draws, alpha / 2.0, axis=0), np.quantile(draws, 1.0 - alpha / 2.0, axis=0)
    return win, low, high
