"""The prompt-clustered t interval (issue 14): a hand-worked value, coverage by simulation, width.

The simulations have a known truth and fixed seeds. "Oracle-like" data: per prompt g, a
shared prompt effect z_g shifts both policies' class logits (the same prompt pushes both
towards the same classes), each sample's class is drawn from its policy's prompt-level
distribution, and the comparison's value is the demo environment's exact class matrix
P*[class_a, class_b] (mostly 1/2 or near it): the data the tournament sees under the
rater-population oracle. The truth E_z[pi_a,g^T P* pi_b,g] is a Monte Carlo integral over
400,000 prompt effects (its own error ~1e-4, far below the intervals' widths).
"""

import numpy as np
import pytest

from nlhf.eval.intervals import cluster_t_interval, effective_comparisons, wilson_interval

# the demo environment's class matrix (nlhf.envs.default_rater_population().P; checked below)
P_STAR = np.array(
    [[0.5, 0.35, 0.65, 0.95], [0.65, 0.5, 0.35, 0.95], [0.35, 0.65, 0.5, 0.95], [0.05, 0.05, 0.05, 0.5]]
)
PI_A = np.array([0.20, 0.22, 0.48, 0.10])  # a policy that left `unfocused` partly
PI_B = np.array([0.10, 0.23, 0.47, 0.20])  # the reference's mix (about the demo's mu)


def test_p_star_is_the_demo_environment():
    from nlhf.envs import default_rater_population

    np.testing.assert_allclose(default_rater_population().P, P_STAR, atol=1e-12)


def test_cluster_t_hand_example():
    """Rows (0.5, 0.5), (0.7, 0.5), (0.5, 0.3), (1.0, 0.8): means (0.5, 0.6, 0.4, 0.9), p = 0.6,
    sd = sqrt(((-.1)^2 + 0 + (-.2)^2 + .3^2) / 3) = sqrt(0.14 / 3) = 0.216025, se = 0.108012,
    t_{0.975}(3) = 3.182446, half = 0.343743 -> [0.256257, 0.943743]."""
    low, high, se = cluster_t_interval(np.array([[0.5, 0.5], [0.7, 0.5], [0.5, 0.3], [1.0, 0.8]]))
    assert se == pytest.approx(0.108012, abs=1e-6)
    assert low == pytest.approx(0.256257, abs=1e-6)
    assert high == pytest.approx(0.943743, abs=1e-6)
    # clipping to [0, 1], one prompt, bad input
    assert cluster_t_interval(np.array([[1.0], [1.0], [0.0]]))[0] == 0.0
    assert all(np.isnan(cluster_t_interval(np.array([[0.2, 0.4]]))))
    with pytest.raises(ValueError, match="non-empty"):
        cluster_t_interval(np.zeros((0, 2)))
    with pytest.raises(ValueError, match="confidence"):
        cluster_t_interval(np.ones((3, 2)), confidence=1.0)


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _oracle_like(rng: np.random.Generator, G: int, S: int, sigma: float) -> np.ndarray:
    """(G, S) values P*[c_a, c_b]: sample k of policy A against an independent sample of policy B on prompt g."""
    z = sigma * rng.standard_normal((G, 4))  # (G, K) prompt effects shared by both policies
    pa, pb = _softmax(np.log(PI_A) + z), _softmax(np.log(PI_B) + z)  # (G, K) each
    ua, ub = rng.random((G, S, 1)), rng.random((G, S, 1))
    ca = (ua > np.cumsum(pa, axis=1)[:, None, :]).sum(axis=2).clip(max=3)  # (G, S) inverse-CDF classes
    cb = (ub > np.cumsum(pb, axis=1)[:, None, :]).sum(axis=2).clip(max=3)
    return P_STAR[ca, cb]


def _truth(sigma: float) -> float:
    z = sigma * np.random.default_rng(123).standard_normal((400_000, 4))
    pa, pb = _softmax(np.log(PI_A) + z), _softmax(np.log(PI_B) + z)
    return float(np.einsum("gi,ij,gj->g", pa, P_STAR, pb).mean())


@pytest.mark.parametrize(
    "G, S, sigma",
    [(48, 6, 1.0), (8, 6, 1.0), (48, 1, 0.5), (12, 3, 2.0)],
    ids=["demo-size", "few-prompts", "one-sample", "strong-prompt-effect"],
)
def test_cluster_t_covers_with_prompt_effects_and_values_near_one_half(G, S, sigma):
    """2,000 replications per setting: coverage >= 93% at 95% nominal (binomial SE of the coverage ~0.5%)."""
    truth = _truth(sigma)
    rng = np.random.default_rng(0)
    reps, hits = 2000, 0
    for _ in range(reps):
        low, high, _ = cluster_t_interval(_oracle_like(rng, G, S, sigma))
        hits += low <= truth <= high
    assert hits / reps >= 0.93, f"coverage {hits / reps:.3f} at G={G}, S={S}, sigma={sigma}"


def test_cluster_t_is_narrower_than_the_binomial_interval_on_oracle_like_data():
    """Same kind of data as the demo's tournament (48 prompts x 6): the clustered t interval is less than 0.6 times
    as wide as Wilson on the effective number of comparisons, which assumes the coin-flip variance p(1 - p) while
    most comparisons are 1/2 or near it (measured median ratio about 0.45), and it keeps its coverage (above)."""
    rng = np.random.default_rng(1)
    ratios = []
    for _ in range(200):
        values = _oracle_like(rng, 48, 6, 1.0)
        low, high, _ = cluster_t_interval(values)
        n_eff = effective_comparisons(values)
        w_low, w_high = wilson_interval(values.mean() * n_eff, n_eff)
        ratios.append((high - low) / (w_high - w_low))
    assert np.median(ratios) < 0.6, np.median(ratios)


def test_negative_control_treating_samples_as_independent_prompts_loses_coverage():
    """12 prompts x 6 samples, each prompt with its own level q_g ~ Beta(2, 2) (mean 1/2) and values q_g + N(0,
    0.05^2) clipped: the clustered interval covers 1/2 (>= 93%); the same t interval with every comparison taken as
    its own prompt (72 "independent" units) covers it in well under 90% (measured about 0.6)."""
    rng = np.random.default_rng(2)
    hits = {"clustered": 0, "naive": 0}
    for _ in range(1000):
        q = rng.beta(2.0, 2.0, size=12)
        values = np.clip(q[:, None] + 0.05 * rng.standard_normal((12, 6)), 0.0, 1.0)
        for kind, v in (("clustered", values), ("naive", values.reshape(-1, 1))):
            low, high, _ = cluster_t_interval(v)
            hits[kind] += low <= 0.5 <= high
    assert hits["clustered"] / 1000 >= 0.93, hits
    assert hits["naive"] / 1000 < 0.80, hits
