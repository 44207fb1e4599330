"""PsiPO: closed-form optima, the sampled losses, and the Sec. 5.4 bandit runs."""

import numpy as np
import pytest
from scipy.special import expit

from nlhf.lab import (
    bandit_dataset,
    bradley_terry,
    dpo_loss,
    dpo_loss_grad,
    empirical_preference,
    ipo_dataset_optimum,
    ipo_loss,
    ipo_loss_grad,
    psipo_optimum,
    rlhf_optimum,
    summarize_bandit,
    train_bandit,
)


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0, 3.0])
def test_ipo_closed_form_on_d1(tau):
    """Least squares of three targets c = 1/(2 tau) on gaps (d1, d2, d1 + d2) gives d1 = d2 = 2c/3 = 1/(3 tau)."""
    _, pairs = bandit_dataset("D1")
    pi = ipo_dataset_optimum(pairs, 3, tau)
    assert np.log(pi[0] / pi[1]) == pytest.approx(1 / (3 * tau), rel=1e-12)
    assert np.log(pi[1] / pi[2]) == pytest.approx(1 / (3 * tau), rel=1e-12)
    # The population form mu exp(p_hat(y > nu_hat)/tau) of the same data agrees:
    # p_hat(a > nu) = (1/2 + 1 + 1)/3 = 5/6, b: 1/2, c: 1/6 -> gaps (1/3)/tau.
    p_hat, nu_hat = empirical_preference(pairs, 3)
    np.testing.assert_allclose(psipo_optimum(p_hat, nu_hat, np.full(3, 1 / 3), tau), pi, atol=1e-12)


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_ipo_closed_form_two_actions_and_cycle(tau):
    _, two = bandit_dataset("two")
    assert ipo_dataset_optimum(two, 2, tau)[0] == pytest.approx(expit(0.5 / tau), rel=1e-12)
    # general reference: pi(y1)/pi(y2) = (mu1/mu2) exp(1/(2 tau))
    pi = ipo_dataset_optimum(two, 2, tau, ref=[0.2, 0.8])
    assert pi[0] / pi[1] == pytest.approx(0.25 * np.exp(0.5 / tau), rel=1e-12)
    _, d2 = bandit_dataset("D2")
    np.testing.assert_allclose(ipo_dataset_optimum(d2, 3, tau), 1 / 3, atol=1e-12)


def test_logit_psipo_is_rlhf_under_bradley_terry_for_any_behaviour():
    """E_{y'~nu} logit sigmoid(r_y - r_y') = r_y - E_nu r: the nu-term cancels in the softmax."""
    rng = np.random.default_rng(0)
    r = rng.normal(size=6)
    mu = rng.dirichlet(np.ones(6))
    for _ in range(3):
        nu = rng.dirichlet(np.ones(6))
        np.testing.assert_allclose(
            psipo_optimum(bradley_terry(r), nu, mu, 0.4, psi="logit"), rlhf_optimum(r, mu, 0.4), atol=1e-13
        )


@pytest.mark.parametrize("tau", [0.1, 1.0, 10.0])
def test_dpo_optimum_collapses_with_deterministic_preferences(tau):
    """D1's preferences are certain: logit = +-inf and the optimum is (1, 0, 0) whatever tau is."""
    p_hat, nu_hat = empirical_preference(bandit_dataset("D1")[1], 3)
    np.testing.assert_array_equal(
        psipo_optimum(p_hat, nu_hat, np.full(3, 1 / 3), tau, psi="logit"), [1, 0, 0]
    )
    ipo = psipo_optimum(p_hat, nu_hat, np.full(3, 1 / 3), tau, psi="identity")
    assert ipo.min() > 0  # IPO stays regularised


def test_losses_by_hand():
    """DPO: -log sigmoid(tau h); at h = 0 it is log 2, slope -tau/2.
    IPO with tau = 0.25: target 1/(2 tau) = 2; h = 3 -> (3 - 2)^2 = 1, slope 2 (3 - 2) = 2;
    soft label p = 0.75: target (0.75 - 0.5)/0.25 = 1, h = 3 -> 4."""
    assert dpo_loss(0.0, 0.7) == pytest.approx(np.log(2))
    assert dpo_loss_grad(0.0, 0.7) == pytest.approx(-0.35)
    assert ipo_loss(3.0, 0.25) == pytest.approx(1.0)
    assert ipo_loss_grad(3.0, 0.25) == pytest.approx(2.0)
    assert ipo_loss(3.0, 0.25, label=0.75) == pytest.approx(4.0)
    h, eps = np.array([-2.0, 0.3, 5.0]), 1e-6  # gradients against central differences
    np.testing.assert_allclose(
        dpo_loss_grad(h, 0.5), (dpo_loss(h + eps, 0.5) - dpo_loss(h - eps, 0.5)) / (2 * eps), rtol=1e-6
    )


def _reference_adam_run(pairs, n, method, tau, seed, steps, batch=9, lr=0.01):
    """Unvectorised reference: one run, the batch summed pair by pair, Adam by the textbook."""
    draws = np.random.default_rng(seed).integers(0, len(pairs), size=(steps, batch))
    theta, m, v = np.zeros(n), np.zeros(n), np.zeros(n)
    for t in range(steps):
        grad = np.zeros(n)
        for k in draws[t]:
            w, l = pairs[k]
            h = theta[w] - theta[l]
            g = 2 * (h - 1 / (2 * tau)) if method == "ipo" else -tau * expit(-tau * h)
            grad[w] += g / batch
            grad[l] -= g / batch
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad**2
        theta -= lr * (m / (1 - 0.9 ** (t + 1))) / (np.sqrt(v / (1 - 0.999 ** (t + 1))) + 1e-8)
    return np.exp(theta) / np.exp(theta).sum()


def test_vectorised_bandit_equals_a_plain_loop():
    run = train_bandit("D1", taus=(0.3, 1.0), seeds=(0, 5), steps=40, record_every=10)
    pairs = bandit_dataset("D1")[1]
    for mi, method in enumerate(run.methods):
        for ki, tau in enumerate(run.taus):
            for si, seed in enumerate(run.seeds):
                expected = _reference_adam_run(pairs, 3, method, tau, seed, 40)
                np.testing.assert_allclose(run.final[mi, ki, si], expected, atol=1e-13)
    assert run.curves.shape == (2, 2, 2, 5, 3)  # records at steps 0, 10, 20, 30, 40
    np.testing.assert_allclose(run.curves[..., 0, :], 1 / 3)


def test_reduced_bandit_run_ipo_matches_closed_form_and_dpo_collapses():
    """3000 steps, 4 seeds: IPO sits at its closed form, DPO drives b and c to ~0 on D1."""
    run = train_bandit("D1", taus=(0.5, 1.0), seeds=4, steps=3000)
    summary = summarize_bandit(run)
    for tau in ("0.5", "1"):
        ipo = summary["methods"]["ipo"][tau]
        np.testing.assert_allclose(ipo["mean"], ipo["closed_form"], atol=0.01)
        assert summary["methods"]["dpo"][tau]["mean"][0] > 0.99
    two = summarize_bandit(train_bandit("two", taus=(0.5,), seeds=2, steps=3000))
    assert two["methods"]["ipo"]["0.5"]["mean"][0] == pytest.approx(expit(1.0), abs=1e-3)
    assert two["methods"]["dpo"]["0.5"]["mean"][0] > 0.99


def test_bandit_input_errors():
    with pytest.raises(ValueError, match="unknown bandit dataset 'D3'"):
        train_bandit("D3")
    with pytest.raises(ValueError, match=r"pairs\[1\] = \(2, 2\)"):
        train_bandit([(0, 1), (2, 2)], n_actions=3)
    with pytest.raises(ValueError, match="unknown method 'kto'"):
        train_bandit("D1", methods=("kto",))
