"""Confidence intervals: binomial proportions (Wilson, Clopper-Pearson) and the percentile bootstrap.

numpy and scipy only. Used by the tournament (:mod:`nlhf.eval.tournament`):

* a win rate is reported as the mean judge probability; its interval is a binomial
  interval on the fractional win count k = sum P out of n comparisons (conservative: a
  probability in [0, 1] with mean p has variance at most p(1 - p));
* the S comparisons of one prompt are not independent (a prompt that favours one policy
  favours it in all its samples): :func:`effective_comparisons` turns the n = G S
  comparisons of G prompts into the effective number n_eff <= n that the spread of the
  per-prompt means supports, and the interval is taken on p n_eff out of n_eff;
* an exploitability interval is a percentile bootstrap over prompts.

Formulas (z = Phi^-1(1 - alpha/2), alpha = 1 - confidence, p = k/n):

* Wilson score interval: centre (p + z^2/(2n)) / (1 + z^2/n), half-width
  z sqrt(p(1-p)/n + z^2/(4n^2)) / (1 + z^2/n).
* Clopper-Pearson ("exact"): [Beta^-1(alpha/2; k, n-k+1), Beta^-1(1-alpha/2; k+1, n-k)],
  with 0 when k = 0 and 1 when k = n. Conservative: coverage >= the confidence.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


def _check_counts(k: float, n: float, confidence: float) -> None:
    if not (0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n <= 0:
        raise ValueError(f"a binomial interval needs n > 0 trials, got n={n}")
    if not (0 <= k <= n):
        raise ValueError(f"successes k={k} must lie in [0, n={n}]")


def normal_quantile(confidence: float) -> float:
    """z with P(|Z| <= z) = confidence for a standard normal Z (1.959964 at 0.95)."""
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2.0))


def wilson_interval(k: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion with k successes in n trials (module docstring)."""
    _check_counts(k, n, confidence)
    z = normal_quantile(confidence)
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2.0 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def clopper_pearson_interval(k: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson ("exact") interval from Beta quantiles (module docstring)."""
    from scipy.stats import beta

    _check_counts(k, n, confidence)
    alpha = 1.0 - confidence
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2.0, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1.0 - alpha / 2.0, k + 1, n - k))
    return low, high


def binomial_interval(
    k: float, n: float, method: str = "wilson", confidence: float = 0.95
) -> tuple[float, float]:
    """``method`` in {"wilson", "clopper_pearson"}."""
    if method == "wilson":
        return wilson_interval(k, n, confidence)
    if method == "clopper_pearson":
        return clopper_pearson_interval(k, n, confidence)
    raise ValueError(f"interval method must be 'wilson' or 'clopper_pearson', got {method!r}")


def effective_comparisons(values: np.ndarray) -> float:
    """Effective number of comparisons of a mean over (G, S) values clustered by row (prompt).

    ``values[g, s]`` is comparison s of prompt g (a judge probability in [0, 1]). The mean
    p over the G S values has the cluster-robust variance v = var_g(m_g) / G, with m_g the
    mean of row g and var the unbiased variance over the G rows (balanced rows: the mean of
    row means is p). A binomial proportion of n_eff trials has variance p (1 - p) / n_eff, so

        n_eff = p (1 - p) / v, clipped to [1, G S].

    Rows that agree (v small, e.g. every prompt gives 0.7) keep n_eff = G S: the
    conservative binomial bound of the module docstring; rows that disagree (each prompt
    all 1 or all 0) give about G - 1, one comparison per prompt. One row (G = 1) gives 1
    when S > 1: the spread between prompts cannot be estimated from one prompt. Worked
    example: rows (1, 1), (1, 0), (0, 0): p = 1/2, row means (1, 1/2, 0), var = 1/4,
    v = 1/12, n_eff = (1/4) / (1/12) = 3 of 6.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.size == 0:
        raise ValueError(
            f"effective_comparisons needs a non-empty (prompts, samples) array, got shape {values.shape}"
        )
    G, S = values.shape
    n = float(G * S)
    if S == 1:  # no clusters
        return n
    if G == 1:
        return 1.0
    p = float(values.mean())
    v = float(values.mean(axis=1).var(ddof=1)) / G
    binomial = p * (1.0 - p)
    if v <= 0.0 or binomial <= 0.0:
        return n
    return float(min(n, max(1.0, binomial / v)))


def bootstrap_interval(
    statistic: Callable[[np.ndarray], float],
    n_groups: int,
    resamples: int,
    rng: np.random.Generator,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(indices)`` over groups resampled with replacement.

    ``statistic`` gets an int array of ``n_groups`` group indices (drawn with replacement;
    a group is a prompt, with all its samples) and returns a number. ``resamples == 0``
    gives (nan, nan).
    """
    if resamples == 0:
        return float("nan"), float("nan")
    if n_groups < 1:
        raise ValueError("bootstrap_interval: no groups to resample")
    values = np.array([statistic(rng.integers(0, n_groups, size=n_groups)) for _ in range(resamples)])
    alpha = 1.0 - confidence
    low, high = np.quantile(values, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)
