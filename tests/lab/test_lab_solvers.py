"""Exact solvers against hand values: LP equilibria, exploitability, regularised equilibria."""

import numpy as np
import pytest

from nlhf.lab import (
    bradley_terry,
    exploitability,
    kl,
    nash_equilibrium,
    nontransitive_dice,
    pg_stationary_point,
    random_game,
    rater_population,
    regularized_best_response,
    regularized_exploitability,
    regularized_nash,
    regularized_preference,
    rlhf_optimum,
    rock_paper_scissors,
    stationary_residual,
)


def test_rps_equilibrium_is_uniform():
    pi = nash_equilibrium(rock_paper_scissors())
    np.testing.assert_allclose(pi, [1 / 3, 1 / 3, 1 / 3], atol=1e-12)
    assert exploitability(rock_paper_scissors(), pi) <= 1e-12


def test_rater_population_equilibrium_by_hand():
    """Raters a>b>c (0.4), b>c>a (0.35), c>a>b (0.25).

    P(a > b) = 0.4 + 0.25 = 0.65, P(b > c) = 0.4 + 0.35 = 0.75, P(c > a) = 0.35 + 0.25 = 0.6:
    a Condorcet cycle. With A = P - 1/2, the margins are A_ab = 0.15, A_bc = 0.25, A_ca = 0.1.
    The equilibrium makes every pure response tie against it (A pi = 0):
      row a: 0.15 pi_b - 0.1 pi_c = 0;  row b: -0.15 pi_a + 0.25 pi_c = 0.
    So pi_c = 1.5 pi_b and pi_a = (0.25/0.15) pi_c = 2.5 pi_b; normalising (2.5 + 1 + 1.5) pi_b = 1:
    pi = (0.5, 0.2, 0.3). The majority favourite a gets half, the "middle" b the least.
    """
    game = rater_population([(0, 1, 2), (1, 2, 0), (2, 0, 1)], [0.4, 0.35, 0.25])
    pi = nash_equilibrium(game)
    np.testing.assert_allclose(pi, [0.5, 0.2, 0.3], atol=1e-12)


def test_exploitability_of_pure_strategies_by_hand():
    """Rock is beaten surely by paper: max_y P(y > rock) - 1/2 = 1 - 1/2 = 1/2.

    Die 0 is beaten by die 2 with probability 5/9: exploitability 5/9 - 1/2 = 1/18.
    Raters (0.4, 0.35, 0.25), pure a: the best reply c wins with 0.35 + 0.25 = 0.6 -> 0.1.
    """
    assert exploitability(rock_paper_scissors(), [1, 0, 0]) == pytest.approx(0.5, abs=1e-15)
    assert exploitability(nontransitive_dice(), [1, 0, 0]) == pytest.approx(1 / 18, abs=1e-15)
    raters = rater_population([(0, 1, 2), (1, 2, 0), (2, 0, 1)], [0.4, 0.35, 0.25])
    assert exploitability(raters, [1, 0, 0]) == pytest.approx(0.1, abs=1e-15)


@pytest.mark.parametrize("kind", ["uniform", "tournament"])
def test_lp_equilibrium_unexploitable_on_random_games(kind):
    for n in (3, 7, 20, 60):
        for seed in range(3):
            game = random_game(n, seed, kind)
            pi = nash_equilibrium(game)
            assert pi.min() >= 0 and abs(pi.sum() - 1) < 1e-12
            assert exploitability(game, pi) <= 1e-9, (n, seed)


def test_nash_of_bradley_terry_is_the_top_response():
    pi = nash_equilibrium(bradley_terry([0.3, 2.0, -1.0, 1.0]))
    np.testing.assert_allclose(pi, [0, 1, 0, 0], atol=1e-12)


@pytest.mark.parametrize("kind", ["uniform", "tournament"])
@pytest.mark.parametrize("tau", [0.02, 0.1, 0.5])
def test_regularized_nash_residual_on_random_games(kind, tau):
    rng = np.random.default_rng(7)
    for n in (3, 10, 50, 200):
        game = random_game(n, seed=n, kind=kind)
        mu = rng.dirichlet(np.ones(n))
        pi = regularized_nash(game, mu, tau)
        assert stationary_residual(game, pi, mu, tau) <= 1e-12, (n, tau, kind)
        assert regularized_exploitability(game, pi, mu, tau) <= 1e-12


def test_regularized_exploitability_is_the_regularised_gap():
    """tau KL(pi, BR_tau(pi)) = max_pi' P_tau(pi' > pi) - 1/2, the max attained at BR_tau(pi)."""
    rng = np.random.default_rng(0)
    game = random_game(6, seed=2)
    mu, pi, tau = rng.dirichlet(np.ones(6)), rng.dirichlet(np.ones(6)), 0.3
    br = regularized_best_response(game, pi, mu, tau)
    gap = regularized_preference(game, br, pi, mu, tau) - 0.5
    assert regularized_exploitability(game, pi, mu, tau) == pytest.approx(gap, abs=1e-14)
    assert gap > 0.01
    for _ in range(20):  # no other policy does better against pi
        other = rng.dirichlet(np.ones(6))
        assert regularized_preference(game, other, pi, mu, tau) - 0.5 <= gap + 1e-14


def test_regularized_nash_of_rps_with_uniform_mu_is_uniform():
    pi = regularized_nash(rock_paper_scissors(), np.full(3, 1 / 3), 0.05)
    np.testing.assert_allclose(pi, 1 / 3, atol=1e-15)


def test_regularised_nash_is_not_rlhf_under_bradley_terry():
    """THEORY Sec. 7: r = (0, .5, 1, 1.5, 2), uniform mu, tau = 0.1: TV(pi*_tau, mu e^(r/tau)) = 0.31."""
    r = np.array([0.0, 0.5, 1.0, 1.5, 2.0])
    mu = np.full(5, 0.2)
    pi_tau = regularized_nash(bradley_terry(r), mu, 0.1)
    tv = 0.5 * np.abs(pi_tau - rlhf_optimum(r, mu, 0.1)).sum()
    assert tv == pytest.approx(0.31, abs=0.005)


@pytest.mark.parametrize("beta", [0.0, 0.125, 0.5, 0.9, 1.0])
def test_pg_stationary_point(beta):
    rng = np.random.default_rng(3)
    game = random_game(30, seed=5, kind="tournament")
    mu = rng.dirichlet(np.ones(30))
    pi = pg_stationary_point(game, mu, 0.05, beta)
    assert stationary_residual(game, pi, mu, 0.05, beta) <= 1e-12
    if beta == 0.0:
        np.testing.assert_allclose(pi, regularized_nash(game, mu, 0.05), atol=1e-14)
    else:  # biased: not pi*_tau (and beta = 1 is the best response to mu)
        assert np.abs(pi - regularized_nash(game, mu, 0.05)).max() > 1e-3
    if beta == 1.0:
        np.testing.assert_allclose(pi, regularized_best_response(game, mu, mu, 0.05), atol=1e-14)


def test_kl_values():
    assert kl([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.5 * np.log(2) + 0.5 * np.log(2 / 3))
    assert kl([1.0, 0.0], [0.5, 0.5]) == pytest.approx(np.log(2))
    assert kl([0.5, 0.5], [1.0, 0.0]) == np.inf


def test_solver_input_errors():
    game = rock_paper_scissors()
    with pytest.raises(ValueError, match="tau must be > 0"):
        regularized_nash(game, np.full(3, 1 / 3), 0.0)
    with pytest.raises(ValueError, match=r"mu\[1\] = 0.0 must be > 0"):
        regularized_nash(game, [0.5, 0.0, 0.5], 0.1)
    with pytest.raises(ValueError, match="mu: entries sum to"):
        regularized_nash(game, [0.5, 0.2, 0.2], 0.1)
    with pytest.raises(ValueError, match=r"beta \(mixture_coef\) must be in \[0, 1\]"):
        pg_stationary_point(game, np.full(3, 1 / 3), 0.1, 1.5)
