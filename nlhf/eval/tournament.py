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

The stages live beside this module: sampling and KL in :mod:`nlhf.eval.samples`, exploitability
in :mod:`nlhf.eval.exploitability`, intervals in :mod:`nlhf.eval.intervals`. Importing this
module is cheap; torch loads inside the sampling stage.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from nlhf.eval.config import TournamentConfig
from nlhf.eval.exploitability import (  # noqa: F401 - re-exported: tests and callers import them from here
    Exploitability,
    class_exploitabilities,
    class_exploitability,
    class_win_rates,
    pool_exploitabilities,
)
from nlhf.eval.intervals import binomial_interval, cluster_t_interval, effective_comparisons
from nlhf.eval.policies import PolicyEntry
from nlhf.eval.result import TournamentResult
from nlhf.eval.samples import (  # noqa: F401 - re-exported
    PolicySamples,
    derive_seed,
    kl_columns,
    kl_estimate,
    progress_bar,
    sample_pool,
    sample_responses,
)

COUPLED_PAIRS_NOTE = (
    "One sample per prompt: sample k of one policy is judged against sample k of the other, drawn with the "
    "same random stream (common random numbers), so the two responses are coupled, not independent; in a "
    "cyclic game the mean over coupled pairs can differ from the win rate of independent draws. Use "
    "samples_per_prompt >= 2 for independent pairs."
)


def is_class_judge(judge: Any) -> bool:
    """A class-level oracle: ``.classify(prompts, responses) -> (B,) int`` and a class matrix ``.P`` (K, K)."""
    return callable(getattr(judge, "classify", None)) and getattr(judge, "P", None) is not None


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


def judge_pairs(
    judge: Any,
    samples: Sequence[PolicySamples],
    bon: PolicySamples | None,
    flat_prompts: Sequence[Any],
    cfg: TournamentConfig,
    independent: bool,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Stage 2: (pair_probs (n, n, N) P(y_i > y_j), diagonal 1/2; bon_best (n, N) best candidate's P(y_bon > y_i)).

    ``independent``: sample k of policy i against sample k + 1 (mod S) of policy j (i < j;
    k - 1 for i > j: the same pairs), else sample k against sample k. ``bon``: the
    best-of-n candidates (:func:`nlhf.eval.samples.sample_pool`); without them bon_best is nan.
    """
    n, N = len(samples), len(flat_prompts)
    S, M = cfg.samples_per_prompt, cfg.best_of_n
    pair_probs = np.full((n, n, N), 0.5)  # (n, n, N)
    bon_best = np.full((n, N), np.nan)  # (n, N)
    with progress_bar(n * (n - 1) * N + (n * N * M if bon is not None else 0), "judging", progress) as bar:
        for i in range(n):
            for j in range(n):
                if i != j:
                    opponent = samples[j].texts
                    if independent:
                        opponent = shifted_samples(opponent, S, 1 if i < j else -1)
                    pair_probs[i, j] = judge_all(judge, flat_prompts, samples[i].texts, opponent,
                                                 cfg.batch_size, bar)  # fmt: skip
        if bon is not None:
            rep_prompts = [x for x in flat_prompts for _ in range(M)]  # (N M,)
            for i in range(n):
                rep_policy = [y for y in samples[i].texts for _ in range(M)]  # (N M,)
                p = judge_all(judge, rep_prompts, bon.texts, rep_policy, cfg.batch_size, bar)  # (N M,)
                bon_best[i] = p.reshape(N, M).max(axis=1)  # (N,)
    return pair_probs, bon_best


def _check_inputs(policies: Sequence[PolicyEntry], prompts: Sequence[Any]) -> None:
    if not policies:
        raise ValueError("run_tournament: no policies")
    names = [p.name for p in policies]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"run_tournament: policy names must be unique, repeated: {dup}")
    if len(prompts) == 0:
        raise ValueError("run_tournament: no prompts")


def _reference_index(policies: Sequence[PolicyEntry], reference: PolicyEntry | None) -> int | None:
    """The index of ``reference`` in the pool (the same entry or the same model), or None."""
    if reference is None:
        return None
    return next((i for i, p in enumerate(policies) if p is reference or p.model is reference.model), None)


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
    from nlhf.judges import judge_name

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    prompt_list = [getattr(p, "prompt", p) for p in prompts]
    n, S, n_prompts = len(policies), cfg.samples_per_prompt, len(prompt_list)
    N = n_prompts * S
    flat_prompts = [prompt_list[r // S] for r in range(N)]  # (N,) the prompt of response r
    ref_index = _reference_index(policies, reference)
    class_judge = is_class_judge(judge)
    use_best_of_n = (not class_judge) and reference is not None and cfg.best_of_n > 0 and n >= 1
    notes: list[str] = [] if cfg.is_exact else [_inexact_sampling_note(cfg)]

    # 1. Sampling (and log pi - log mu of every response)
    t0 = time.perf_counter()
    samples, bon = sample_pool(
        policies, prompt_list, cfg, reference, ref_index, use_best_of_n, notes, progress
    )
    timings["sampling"] = time.perf_counter() - t0

    # 2. Judging every ordered pair (and the best-of-n candidates)
    t0 = time.perf_counter()
    independent = cfg.independent_pairs and S > 1
    if cfg.independent_pairs and S == 1:
        notes.append(COUPLED_PAIRS_NOTE)
    pair_probs, bon_best = judge_pairs(judge, samples, bon, flat_prompts, cfg, independent, progress)
    timings["judging"] = time.perf_counter() - t0

    # 3. Win rates and their intervals
    wins = win_rate_fields(pair_probs, n_prompts, S, cfg)

    # 4. KL, length, truncation
    kl, kl_se, mean_length, truncated = kl_columns(samples, ref_index)

    # 5. Exploitability
    t0 = time.perf_counter()
    if class_judge:
        ex = class_exploitabilities(judge, samples, flat_prompts, S, cfg)
    else:
        names = [p.name for p in policies]
        ex = pool_exploitabilities(pair_probs, bon_best if use_best_of_n else None, names, n_prompts, S, cfg,
                                   reference.name if use_best_of_n else None)  # fmt: skip
    timings["exploitability"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start

    return TournamentResult(
        names=[p.name for p in policies],
        **wins,
        kl=kl,
        kl_se=kl_se,
        mean_length=mean_length,
        truncated=truncated,
        **ex.result_fields(),
        judge=judge_name(judge),
        config=cfg,
        prompts=prompt_list,
        responses=[s.texts for s in samples],
        response_lengths=[s.lengths.tolist() for s in samples],
        pair_probs=pair_probs,
        reference=policies[ref_index].name
        if ref_index is not None
        else (reference.name if reference else None),
        notes=notes,
        timings=timings,
        independent_pairs=independent,
    )


def _inexact_sampling_note(cfg: TournamentConfig) -> str:
    return (
        f"Samples were drawn at temperature {cfg.temperature:g}, top_k {cfg.top_k}, top_p {cfg.top_p:g}: they "
        "are not samples of pi, so the win rates are those of the sampled distributions and the KL column is "
        "E_q[log pi - log mu], not KL(pi || mu)."
    )


def win_rate_fields(pair_probs: np.ndarray, n_prompts: int, S: int, cfg: TournamentConfig) -> dict[str, Any]:
    """Stage 3: the win-rate fields of :class:`TournamentResult` from ``pair_probs`` (n, n, N) P(y_i > y_j).

    ``win_rate`` (n, n) the mean; ``wins`` the expected wins (each comparison counts
    P(row > column); 0 on the diagonal); ``n_games`` N off the diagonal; ``interval`` the
    method (:func:`resolve_interval`) and its ``n_effective``, ``win_low``, ``win_high``,
    ``win_se`` (:func:`win_intervals`).
    """
    n = pair_probs.shape[0]
    wins = pair_probs.sum(axis=2)  # (n, n)
    np.fill_diagonal(wins, 0.0)  # a policy plays no games against itself
    interval = resolve_interval(cfg.interval, pair_probs, n)
    n_effective, low, high, se = win_intervals(pair_probs, n_prompts, S, interval, cfg)
    return {
        "win_rate": pair_probs.mean(axis=2),  # (n, n)
        "wins": wins,
        "n_games": np.where(np.eye(n, dtype=bool), 0, n_prompts * S).astype(np.int64),  # (n, n)
        "n_effective": n_effective,
        "win_low": low,
        "win_high": high,
        "win_se": se,
        "interval": interval,
    }


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
