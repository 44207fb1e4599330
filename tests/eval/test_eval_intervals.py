"""Binomial intervals against hand-computed values, and the bootstrap helper."""

import math

import numpy as np
import pytest

from nlhf.eval.intervals import (
    binomial_interval,
    bootstrap_interval,
    clopper_pearson_interval,
    effective_comparisons,
    normal_quantile,
    wilson_interval,
)


def test_wilson_8_of_10():
    """k = 8, n = 10, 95%: z = 1.959964, z^2 = 3.841459, p = 0.8.

    denominator 1 + z^2/n = 1.3841459
    centre (0.8 + 3.841459/20) / 1.3841459 = 0.9920729 / 1.3841459 = 0.716740
    half   1.959964 * sqrt(0.8 * 0.2 / 10 + 3.841459 / 400) / 1.3841459
         = 1.959964 * 0.1600114 / 1.3841459 = 0.3136166 / 1.3841459 = 0.226578
    -> [0.490162, 0.943318]
    """
    low, high = wilson_interval(8, 10, 0.95)
    assert low == pytest.approx(0.490162, abs=2e-6)
    assert high == pytest.approx(0.943318, abs=2e-6)


def test_wilson_0_of_20_and_symmetry():
    """k = 0, n = 20: p = 0, centre = (z^2/40) / (1 + z^2/20) = 0.0960365 / 1.1920730 = 0.0805626,
    half = z * sqrt(z^2/1600) / (1 + z^2/20) = z^2/40 / 1.1920730, the same: low = 0, high = 0.161125."""
    low, high = wilson_interval(0, 20)
    assert low == pytest.approx(0.0, abs=1e-12)
    assert high == pytest.approx(0.161125, abs=2e-6)
    lo2, hi2 = wilson_interval(20, 20)  # mirror image
    assert lo2 == pytest.approx(1 - high, abs=1e-12) and hi2 == pytest.approx(1.0, abs=1e-12)


def test_clopper_pearson_closed_forms():
    """k = 0 of n = 10: [0, 1 - (alpha/2)^(1/n)] = [0, 1 - 0.025^(0.1)] = [0, 1 - 0.691503] = [0, 0.308497].
    k = n = 10: [0.025^(0.1), 1] = [0.691503, 1]. k = 5 of 10 (textbook): [0.187086, 0.812914]."""
    assert clopper_pearson_interval(0, 10) == pytest.approx((0.0, 0.308497), abs=2e-6)
    assert clopper_pearson_interval(10, 10) == pytest.approx((0.691503, 1.0), abs=2e-6)
    assert clopper_pearson_interval(5, 10) == pytest.approx((0.187086, 0.812914), abs=2e-6)
    # exact is wider than Wilson here
    w = wilson_interval(5, 10)
    cp = clopper_pearson_interval(5, 10)
    assert cp[0] < w[0] and cp[1] > w[1]


def test_normal_quantile_and_dispatch():
    assert normal_quantile(0.95) == pytest.approx(1.959964, abs=1e-6)
    assert binomial_interval(8, 10, "wilson") == wilson_interval(8, 10)
    assert binomial_interval(8, 10, "clopper_pearson") == clopper_pearson_interval(8, 10)
    with pytest.raises(ValueError, match="wilson"):
        binomial_interval(8, 10, "agresti")
    with pytest.raises(ValueError, match="n > 0"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="k=11"):
        wilson_interval(11, 10)


def test_bootstrap_interval_of_a_mean():
    """The percentile interval of a mean over 200 groups brackets the sample mean, width about 2 * 1.96 * SE."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    low, high = bootstrap_interval(lambda idx: float(x[idx].mean()), 200, 2000, np.random.default_rng(1))
    se = x.std(ddof=1) / math.sqrt(200)
    assert low < x.mean() < high
    assert (high - low) == pytest.approx(2 * 1.959964 * se, rel=0.15)
    assert all(math.isnan(v) for v in bootstrap_interval(lambda idx: 0.0, 5, 0, rng))


def test_effective_comparisons_worked_examples():
    """n_eff = p(1 - p) / (var(row means) / G), clipped to [1, G S].

    * rows (1, 1), (1, 0), (0, 0): p = 1/2, row means (1, 1/2, 0) with unbiased variance
      ((1/2)^2 + 0 + (1/2)^2) / 2 = 1/4, v = 1/12, n_eff = (1/4) / (1/12) = 3 of 6;
    * rows (1, 1), (0, 0): row means (1, 0), variance 1/2, v = 1/4, n_eff = 1 of 4 (two
      prompts that disagree completely are worth about one comparison);
    * rows (1, 0), (1, 0): the prompts agree (v = 0): all 4 comparisons count;
    * one prompt with 4 samples: 1 (nothing is known about other prompts); one sample per
      prompt: no clusters, G.
    """
    assert effective_comparisons(np.array([[1, 1], [1, 0], [0, 0]])) == pytest.approx(3.0)
    assert effective_comparisons(np.array([[1, 1], [0, 0]])) == pytest.approx(1.0)
    assert effective_comparisons(np.array([[1, 0], [1, 0]])) == 4.0
    assert effective_comparisons(np.array([[0.7, 0.2, 0.9, 0.4]])) == 1.0
    assert effective_comparisons(np.array([[1.0], [0.0], [1.0]])) == 3.0
    # p(1 - p) / v above G S (consistent fractional probabilities) is clipped to G S
    assert effective_comparisons(np.array([[0.9, 0.7], [0.7, 0.9], [0.8, 0.8]])) == 6.0
    with pytest.raises(ValueError, match="non-empty"):
        effective_comparisons(np.zeros((0, 3)))


def test_clustered_interval_keeps_its_coverage_where_the_independent_one_loses_it():
    """Simulation with a known truth: 30 prompts x 8 samples, each prompt with its own win probability.

    q_g ~ Beta(2.2, 1.8) (mean 0.55, a strong prompt effect), outcomes Bernoulli(q_g); 400
    replications, seed 0. The Wilson interval on the effective number of comparisons covers
    0.55 in 94% of them (nominal 95%); counting the 240 comparisons as independent covers it
    in 82% only.
    """
    rng = np.random.default_rng(0)
    hits = {"clustered": 0, "independent": 0}
    for _ in range(400):
        q = rng.beta(2.2, 1.8, size=30)  # (G,)
        values = (rng.random((30, 8)) < q[:, None]).astype(float)  # (G, S)
        p = values.mean()
        for kind, n in (("clustered", effective_comparisons(values)), ("independent", values.size)):
            low, high = wilson_interval(p * n, n)
            hits[kind] += low <= 0.55 <= high
    assert hits["clustered"] / 400 >= 0.92
    assert hits["independent"] / 400 <= 0.86
