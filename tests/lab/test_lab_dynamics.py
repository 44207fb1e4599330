"""Exact dynamics: Nash-MD step by step against hand numbers, limits against the exact solvers."""

import numpy as np
import pytest

from nlhf.lab import (
    ema_opponent_dynamics,
    fixed_mixture_dynamics,
    kl_from,
    mirror_descent,
    multiplicative_weights,
    nash_md,
    pg_stationary_point,
    random_game,
    regularized_best_response,
    regularized_nash,
    rock_paper_scissors,
    running_average,
    theorem1_bound,
)


def test_first_two_nash_md_steps_by_hand():
    """Rock-paper-scissors, mu = (1/2, 1/4, 1/4), tau = 1, eta_t = 2/(t+2): eta_0 = 1, eta_1 = 2/3.

    A = P - 1/2 has rows rock (0, -1/2, 1/2), paper (1/2, 0, -1/2), scissors (-1/2, 1/2, 0).
    Step 0 (eta tau = 1, so the mixture is mu): A mu = (0, 1/8, -1/8);
      pi_1 ~ mu exp(A mu) = (0.5, 0.25 e^{1/8}, 0.25 e^{-1/8}) = (0.5, 0.28328711, 0.22062423),
      Z_1 = 1.00391134, pi_1 = (0.49805195, 0.28218340, 0.21976465).
    Step 1 (eta = 2/3, eta tau = 2/3): mixture ~ pi_1^{1/3} mu^{2/3} ~ mu exp(A mu / 3)
      = (0.5, 0.25 e^{1/24}, 0.25 e^{-1/24}), normalised (0.49978305, 0.26052364, 0.23969332);
      A mix = ((m_s - m_p)/2, (m_r - m_s)/2, (m_p - m_r)/2) = (-0.01041516, 0.13004487, -0.11962971);
      pi_2 ~ mix exp((2/3) A mix), normalised (0.49545165, 0.28361829, 0.22093007).
    """
    traj = nash_md(rock_paper_scissors(), [0.5, 0.25, 0.25], 1.0, steps=2)
    assert traj.shape == (3, 3)
    np.testing.assert_allclose(traj[0], [0.5, 0.25, 0.25], atol=1e-15)
    np.testing.assert_allclose(traj[1], [0.49805195, 0.28218340, 0.21976465], atol=1e-8)
    np.testing.assert_allclose(traj[2], [0.49545165, 0.28361829, 0.22093007], atol=1e-8)


def test_first_step_is_regularised_best_response_to_mu():
    """eta_0 tau = 1: the mixture is mu itself, so pi_1 = BR_tau(mu)."""
    rng = np.random.default_rng(1)
    game = random_game(12, seed=3)
    mu = rng.dirichlet(np.ones(12))
    for tau in (0.05, 0.3):
        traj = nash_md(game, mu, tau, steps=1)
        np.testing.assert_allclose(traj[1], regularized_best_response(game, mu, mu, tau), atol=1e-14)
        assert np.abs(traj[1] - mu).max() > 1e-2


@pytest.mark.parametrize("tau, eta", [(0.2, 2.5), (0.1, 4.0), (0.5, 2.0)])
def test_constant_step_nash_md_converges_to_pg_stationary_point(tau, eta):
    """THEORY Sec. 3: constant eta -> the stationary point with beta = eta tau, not pi*_tau."""
    rng = np.random.default_rng(2)
    game = random_game(6, seed=11)
    mu = rng.dirichlet(np.ones(6))
    traj = nash_md(game, mu, tau, steps=3000, eta=eta)
    target = pg_stationary_point(game, mu, tau, beta=eta * tau)
    np.testing.assert_allclose(traj[-1], target, atol=1e-10, rtol=0)
    assert np.abs(traj[-1] - regularized_nash(game, mu, tau)).max() > 1e-3  # the bias is real


def test_decaying_schedule_reaches_regularised_nash():
    """eta_t = 2/(tau(t+2)): KL(pi*_tau, pi_T) falls to ~1e-8 and below Theorem 1's bound."""
    rng = np.random.default_rng(4)
    game = random_game(8, seed=4)
    mu, tau, T = rng.dirichlet(np.ones(8)), 0.1, 5000
    traj = nash_md(game, mu, tau, steps=T)
    pi_tau = regularized_nash(game, mu, tau)
    kl = kl_from(pi_tau, traj)
    assert kl[T] < 1e-7
    assert kl[T] < kl[500] / 10  # still improving, not stuck at a biased point
    np.testing.assert_allclose(traj[-1], pi_tau, atol=1e-3)
    # Theorem 1 (T >= 1), a sanity check only: the bound is orders of magnitude loose.
    bounds = np.array([theorem1_bound(tau, t) for t in range(1, T + 1)])
    assert np.all(kl[1:] <= bounds)


def test_fixed_mixture_family():
    """beta = eta tau is Nash-MD exactly; beta = 1 converges to BR_tau(mu); beta = 0 to pi*_tau."""
    rng = np.random.default_rng(5)
    game = random_game(5, seed=9)
    mu, tau, eta = rng.dirichlet(np.ones(5)), 0.2, 1.5
    np.testing.assert_allclose(
        fixed_mixture_dynamics(game, mu, tau, eta * tau, 50, eta),
        nash_md(game, mu, tau, 50, eta=eta),
        atol=1e-14,
    )
    best_to_mu = fixed_mixture_dynamics(game, mu, tau, 1.0, 2000, eta)
    np.testing.assert_allclose(best_to_mu[-1], regularized_best_response(game, mu, mu, tau), atol=1e-10)
    self_play = mirror_descent(game, mu, tau, 3000, 0.5)
    np.testing.assert_allclose(self_play[-1], regularized_nash(game, mu, tau), atol=1e-10)


def test_ema_opponent_converges_to_regularised_nash():
    rng = np.random.default_rng(6)
    game = random_game(5, seed=1)
    mu, tau = rng.dirichlet(np.ones(5)), 0.2
    traj = ema_opponent_dynamics(game, mu, tau, 4000, eta=0.5, ema_decay=0.9)
    np.testing.assert_allclose(traj[-1], regularized_nash(game, mu, tau), atol=1e-9)


def test_multiplicative_weights_cycles_but_its_average_converges():
    """On RPS the last iterate drifts away from the uniform equilibrium; the average approaches it."""
    game = rock_paper_scissors()
    pi0 = np.array([0.6, 0.3, 0.1])
    traj = multiplicative_weights(game, pi0, 3000, eta=0.1)
    uniform = np.full(3, 1 / 3)
    kl_last = kl_from(uniform, traj)
    kl_avg = kl_from(uniform, running_average(traj))
    assert kl_last[-1] > kl_last[0]  # moved away
    assert kl_avg[-1] < 1e-3 < kl_avg[0]
    # One step by hand: pi_1 ~ pi_0 exp(0.1 (P pi_0)), P pi_0 = (0.4, 0.75, 0.35).
    expected = pi0 * np.exp(0.1 * np.array([0.4, 0.75, 0.35]))
    np.testing.assert_allclose(traj[1], expected / expected.sum(), atol=1e-15)


def test_dynamics_shapes_and_step_checks():
    game, mu = rock_paper_scissors(), np.array([0.6, 0.3, 0.1])
    traj = nash_md(game, mu, 0.1, steps=7)
    assert traj.shape == (8, 3)
    np.testing.assert_allclose(traj.sum(axis=1), 1.0, atol=1e-14)
    with pytest.raises(ValueError, match=r"eta_0 \* tau = 2 > 1"):
        nash_md(game, mu, 0.1, steps=3, eta=20.0)
    with pytest.raises(ValueError, match="needs 3 step sizes"):
        nash_md(game, mu, 0.1, steps=3, eta=[1.0, 1.0])
    with pytest.raises(ValueError, match=r"eta_1 = -1.0 must be"):
        nash_md(game, mu, 0.1, steps=2, eta=lambda t: 1.0 - 2.0 * t)
