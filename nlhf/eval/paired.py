"""Paired differences between two policies of one tournament, each with an interval on the DIFFERENCE.

Two overlapping intervals say little about a difference: the policies were judged on the
same prompts, so their numbers are correlated, and the difference has its own (usually
narrower) interval. numpy only; works on a :class:`~nlhf.eval.result.TournamentResult`.

* :func:`exploitability_difference`: exploitability(a) - exploitability(b) under a class
  oracle (exact class-level exploitability of each policy's empirical class mix), with a
  percentile bootstrap that resamples PROMPTS, the same prompts for both policies.
* :func:`win_rate_difference`: P(a > c) - P(b > c) against a common opponent c, with the
  prompt-clustered t interval (:func:`nlhf.eval.intervals.cluster_t_interval`) on the
  per-prompt differences.

Coverage of both is checked by simulation in tests/eval/test_eval_paired.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nlhf.eval.intervals import cluster_t_interval
from nlhf.lab import exploitability


def class_exploitability_difference(
    P: np.ndarray, labels_a: np.ndarray, labels_b: np.ndarray, resamples: int, confidence: float, seed: int
) -> dict[str, Any]:
    """exploit(pi_a) - exploit(pi_b) from (G, S) class labels of two policies on the same G prompts.

    pi = the empirical class distribution of a policy's labels; exploit(pi) = max_y (P pi)_y - 1/2
    (:func:`nlhf.lab.exploitability`). Interval: percentile bootstrap over prompts, rows of
    both label arrays resampled together (paired). Returns ``{"difference", "low", "high",
    "a", "b", "resamples", "confidence"}``.
    """
    P = np.asarray(P, dtype=np.float64)
    K = P.shape[0]
    labels_a, labels_b = np.asarray(labels_a), np.asarray(labels_b)
    if labels_a.shape != labels_b.shape or labels_a.ndim != 2:
        raise ValueError(
            f"labels must be two (prompts, samples) arrays of one shape, got {labels_a.shape}, {labels_b.shape}"
        )
    G = labels_a.shape[0]

    def exploit(labels: np.ndarray) -> float:
        return float(exploitability(P, np.bincount(labels.ravel(), minlength=K) / labels.size))

    ea, eb = exploit(labels_a), exploit(labels_b)
    low = high = float("nan")
    if resamples > 0 and G > 1:
        rng = np.random.default_rng(seed)
        draws = np.empty(resamples)
        for r in range(resamples):
            idx = rng.integers(0, G, size=G)
            draws[r] = exploit(labels_a[idx]) - exploit(labels_b[idx])
        alpha = 1.0 - confidence
        low, high = (float(v) for v in np.quantile(draws, [alpha / 2.0, 1.0 - alpha / 2.0]))
    return {"difference": ea - eb, "low": low, "high": high, "a": ea, "b": eb, "resamples": resamples,
            "confidence": confidence}  # fmt: skip


def exploitability_difference(
    result: Any, a: str, b: str, resamples: int | None = None, seed: int = 0
) -> dict[str, Any]:
    """exploitability(a) - exploitability(b) of a tournament judged by a class oracle (module docstring)."""
    if result.class_labels is None:
        raise ValueError(
            "exploitability_difference needs a tournament judged by a class-level oracle (class labels); "
            f"this one was judged by {result.judge}"
        )
    P = np.asarray(result.class_P, dtype=np.float64)
    n_boot = int(result.config.bootstrap if resamples is None else resamples)
    return class_exploitability_difference(P, result.class_labels[result.index(a)], result.class_labels[result.index(b)],
                                           n_boot, result.confidence, seed)  # fmt: skip


def win_rate_difference(result: Any, a: str, b: str, opponent: str) -> dict[str, Any]:
    """P(a > opponent) - P(b > opponent) on the same prompts, with the prompt-clustered t interval.

    Per prompt g: d_g = mean_k P(a_k > c) - mean_k P(b_k > c); the interval is
    :func:`~nlhf.eval.intervals.cluster_t_interval` on those G differences (shifted to [0, 1]
    and back, since that function clips to [0, 1]). Needs ``result.pair_probs``.
    """
    if result.pair_probs is None:
        raise ValueError("win_rate_difference needs the per-comparison probabilities (result.pair_probs)")
    i, j, c = result.index(a), result.index(b), result.index(opponent)
    G, S = len(result.prompts), result.samples_per_prompt
    diff = result.pair_probs[i, c].reshape(G, S).mean(axis=1) - result.pair_probs[j, c].reshape(G, S).mean(
        axis=1
    )
    low, high, se = cluster_t_interval(
        (diff[:, None] + 1.0) / 2.0, result.confidence
    )  # d in [-1, 1] -> [0, 1]
    return {"difference": float(diff.mean()), "low": 2.0 * low - 1.0, "high": 2.0 * high - 1.0, "se": 2.0 * se,
            "confidence": result.confidence}  # fmt: skip
