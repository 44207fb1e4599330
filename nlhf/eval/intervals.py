"""Confidence intervals: the prompt-clustered t interval, binomial proportions (Wilson,
Clopper-Pearson) and the percentile bootstrap.

numpy and scipy only. Used by the tournament (:mod:`nlhf.eval.tournament`):

* a win rate is reported as the mean judge probability. When the judge returns
  probabilities (an oracle P*, a preference model), its interval is
  :func:`cluster_t_interval`: the cluster-robust standard error of the mean over prompts,
  from the OBSERVED spread of the per-prompt means, with a Student t quantile on G - 1
  degrees of freedom (G prompts). It is valid whatever the distribution of the P values,
  and narrow when they sit near 1/2 (under the rater oracle most comparisons are exactly
  1/2, which a coin-flip variance p (1 - p) ignores). Coverage is checked by simulation in
  tests/eval/test_eval_intervals.py (prompt effects, few prompts, P concentrated near 1/2);
* for binary outcomes (sampled rater labels) or on request, a binomial
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


def cluster_t_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """(low, high, standard error) for the mean of ``values`` (G, S): S comparisons of each of G prompts.

    The prompts are the independent units: with m_g the mean of row g,

        p = mean_g m_g,   se = sd_g(m_g) / sqrt(G)   (sd with ddof 1),
        [p - t se, p + t se] clipped to [0, 1],   t = Student t quantile (1 + confidence)/2 on G - 1 df.

    This is the cluster-robust (CR1-style, balanced clusters) standard error of the mean:
    the correlation of a prompt's S samples, any distribution of the values in [0, 1], and
    the spread of P around its mean are all in sd_g(m_g); no binomial variance is assumed.
    The t quantile (rather than the normal one) keeps the coverage with few prompts.
    G = 1 gives (nan, nan, nan): the spread between prompts cannot be estimated from one.
    Worked example (tests): rows (0.5, 0.5), (0.7, 0.5), (0.5, 0.3), (1.0, 0.8) have means
    (0.5, 0.6, 0.4, 0.9), p = 0.6, sd = 0.216025, se = 0.108012, t(3) = 3.182446,
    interval [0.256257, 0.943743].
    """
    from scipy.stats import t as student_t

    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.size == 0:
        raise ValueError(
            f"cluster_t_interval needs a non-empty (prompts, samples) array, got shape {values.shape}"
        )
    if not (0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    G = values.shape[0]
    means = values.mean(axis=1)  # (G,)
    p = float(means.mean())
    if G < 2:
        return float("nan"), float("nan"), float("nan")
    se = float(means.std(ddof=1) / math.sqrt(G))
    half = float(student_t.ppf(0.5 + confidence / 2.0, G - 1)) * se
    return max(0.0, p - half), min(1.0, p + half), se


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
