"""Nash-MD's successors (THEORY Sec. 8): SPPO, INPO, DNO, MPO, Nash mirror prox, against the solvers.

Targets come from independent computations: ``regularized_nash`` (Newton on the fixed-point
equation) and ``nash_equilibrium`` (a linear program). Rates are measured over T on
rock-paper-scissors and random_game(n), n in {5, 50}.
"""

import numpy as np
import pytest

from nlhf.lab import (
    exploitability,
    kl_from,
    mirror_descent,
    multiplicative_weights,
    nash_equilibrium,
    nash_md,
    random_game,
    regularized_nash,
    rock_paper_scissors,
    running_average,
)
from nlhf.lab.successors import (
    _margin_pairs_support,
    dno,
    inpo,
    magnetic_mirror_descent,
    mpo,
    nash_mirror_prox,
    sppo,
)

TAU = 0.1
GAMES = {
    "rps": (rock_paper_scissors(), np.array([0.6, 0.3, 0.1])),
    "random5": (random_game(5, seed=0), np.full(5, 0.2)),
    "random50": (random_game(50, seed=0), np.full(50, 0.02)),
}


def _tv(p, q):
    return 0.5 * np.abs(np.asarray(p) - np.asarray(q)).sum(axis=-1)


def _kl_rate(kl: np.ndarray) -> tuple[float, float]:
    """Per-step contraction of KL fitted on the steps where 1e-14 < KL < 1e-4, and the fit's R^2."""
    t = np.flatnonzero((kl > 1e-14) & (kl < 1e-4))
    assert t.size >= 20, f"too few points in the fitting window ({t.size})"
    y = np.log(kl[t])
    slope, intercept = np.polyfit(t, y, 1)
    r2 = 1.0 - np.sum((y - (slope * t + intercept)) ** 2) / np.sum((y - y.mean()) ** 2)
    return float(np.exp(slope)), float(r2)


# ----------------------------------------------------------------------------------------
# SPPO


def test_sppo_is_multiplicative_weights():
    for game, mu in GAMES.values():
        np.testing.assert_allclose(
            sppo(game, mu, 200, 0.7), multiplicative_weights(game, mu, 200, 0.7), atol=1e-13
        )


def test_sppo_average_meets_the_hedge_bound_and_last_iterate_spirals_out_on_rps():
    """SPPO Theorem 4.1, exact form: with eta = sqrt(8 ln n / T) the average of pi_0..pi_{T-1}
    has exploitability = regret / T <= sqrt(ln n / (2T)). On rps the last iterate moves away:
    KL(Nash, pi_t) increases at every step (Hedge with an interior equilibrium)."""
    for game, mu in GAMES.values():
        for T in (10, 100, 1000):
            eta = np.sqrt(8.0 * np.log(game.n) / T)
            average = sppo(game, mu, T, eta)[:-1].mean(axis=0)
            assert exploitability(game, average) <= np.sqrt(np.log(game.n) / (2.0 * T))
    game, mu = GAMES["rps"]
    nash = nash_equilibrium(game)
    traj = sppo(game, mu, 1000, 1.0)
    kl = kl_from(nash, traj)
    assert np.all(np.diff(kl) > 0)  # spirals outwards, every step
    assert _tv(traj[-1], nash) > 0.5 and kl[1000] > 30 * kl[0]
    avg_tv = _tv(running_average(traj), nash)
    assert avg_tv[1000] < 0.02 and avg_tv[1000] < avg_tv[100] / 3


def test_sppo_last_iterate_converges_where_nash_is_pure_and_extragradient_fixes_rps():
    """Negative controls: the cycling is the game's (interior equilibrium) and the update's
    (no extrapolation), not the code's. random5 has a Condorcet winner: SPPO's last iterate
    reaches it. The same step with extrapolation (mirror prox at tau = 0) converges on rps."""
    game, mu = GAMES["random5"]
    nash = nash_equilibrium(game)
    assert nash.max() == pytest.approx(1.0)
    assert _tv(sppo(game, mu, 1000, 1.0)[-1], nash) < 1e-12
    game, mu = GAMES["rps"]
    assert _tv(nash_mirror_prox(game, mu, 0.0, 1000, 1.0)[-1], nash_equilibrium(game)) < 1e-8


# ----------------------------------------------------------------------------------------
# INPO, magnetic mirror descent, Nash mirror prox: fixed point pi*_tau, geometric rates


def test_inpo_loss_minimiser_is_the_mirror_descent_step():
    """INPO's per-iteration pairwise loss, minimised by least squares, gives exactly the
    closed form pi_t^(1 - eta tau) mu^(eta tau) exp(eta P(y > pi_t)) of mirror_descent."""
    for game, mu in GAMES.values():
        np.testing.assert_allclose(
            inpo(game, mu, TAU, 60, 2.0), mirror_descent(game, mu, TAU, 60, 2.0), atol=1e-12
        )


def test_mmd_is_inpo_with_step_eta_over_one_plus_eta_tau():
    game, mu = GAMES["random50"]
    for eta in (0.5, 3.0, 20.0):  # eta tau = 2 > 1 is a valid MMD step
        np.testing.assert_allclose(
            magnetic_mirror_descent(game, mu, TAU, 80, eta),
            mirror_descent(game, mu, TAU, 80, eta / (1.0 + eta * TAU)),
            atol=1e-12,
        )


@pytest.mark.parametrize("name", list(GAMES))
def test_last_iterate_methods_reach_regularized_nash(name):
    game, mu = GAMES[name]
    pi_tau = regularized_nash(game, mu, TAU)
    for run in (inpo, magnetic_mirror_descent, nash_mirror_prox):
        np.testing.assert_allclose(run(game, mu, TAU, 400, 1.0)[-1], pi_tau, atol=1e-10)
    assert _tv(pi_tau, nash_equilibrium(game)) > 1e-2  # the target is not the tau = 0 Nash


@pytest.mark.parametrize("name", list(GAMES))
@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_geometric_rates_against_nash_md(name, eta):
    """KL(pi*_tau, pi_t) falls geometrically: per-step factor <= 1/(1 + eta tau) for INPO and
    MMD, <= 1/(1 + 2 eta tau) for mirror prox (Nash-MP's (1 + 2 beta)^(-N/2) with N = 2
    queries a step), with a log-linear fit R^2 > 0.999. Nash-MD falls polynomially."""
    game, mu = GAMES[name]
    pi_tau = regularized_nash(game, mu, TAU)
    for run, bound in (
        (inpo, 1 / (1 + eta * TAU)),
        (magnetic_mirror_descent, 1 / (1 + eta * TAU)),
        (nash_mirror_prox, 1 / (1 + 2 * eta * TAU)),
    ):
        rho, r2 = _kl_rate(kl_from(pi_tau, run(game, mu, TAU, 600, eta)))
        assert r2 > 0.999, (run.__name__, r2)
        assert rho <= bound, (run.__name__, rho, bound)
    kl = kl_from(pi_tau, nash_md(game, mu, TAU, 1000))
    T = np.array([100, 200, 400, 1000])
    slope = np.polyfit(np.log(T), np.log(kl[T]), 1)[0]
    assert -2.3 < slope < -0.9  # O(1/T) (Theorem 1) or a little faster; not geometric
    assert kl[1000] > 1e-12


def test_mirror_prox_takes_steps_where_mmd_cycles():
    """Negative control on rps (eta tau = 0.5 and 1): MMD's last iterate does not settle,
    mirror prox's does; at eta = 1 mirror prox's rate beats MMD's on the cyclic modes."""
    game, mu = GAMES["rps"]
    pi_tau = regularized_nash(game, mu, TAU)
    for eta in (5.0, 10.0):
        assert _tv(magnetic_mirror_descent(game, mu, TAU, 300, eta)[-1], pi_tau) > 0.2
    assert _tv(nash_mirror_prox(game, mu, TAU, 300, 5.0)[-1], pi_tau) < 1e-12
    rho_mp, _ = _kl_rate(kl_from(pi_tau, nash_mirror_prox(game, mu, TAU, 600, 1.0)))
    rho_mmd, _ = _kl_rate(kl_from(pi_tau, magnetic_mirror_descent(game, mu, TAU, 600, 1.0)))
    assert rho_mp < rho_mmd - 0.05


# ----------------------------------------------------------------------------------------
# MPO: the magnet follows the policy, the target is the tau = 0 Nash


def test_mpo_converges_to_nash_not_to_pi_tau():
    for name in ("rps", "random5"):
        game, mu = GAMES[name]
        traj = mpo(game, mu, TAU, 1000, 1.0, magnet_every=10)
        assert _tv(traj[-1], nash_equilibrium(game)) < 1e-8
        assert _tv(traj[-1], regularized_nash(game, mu, TAU)) > 1e-2
    game, mu = GAMES["random50"]  # slow here: a proximal-point outer loop on a 27-action support
    traj = mpo(game, mu, TAU, 1000, 1.0, magnet_every=10)
    floor = exploitability(game, regularized_nash(game, mu, TAU))
    assert exploitability(game, traj[1000]) < 0.5 * floor < exploitability(game, traj[100])


def test_mpo_with_magnet_every_step_is_multiplicative_weights():
    game, mu = GAMES["rps"]
    eta = 1.0
    np.testing.assert_allclose(
        mpo(game, mu, TAU, 300, eta, magnet_every=1), sppo(game, mu, 300, eta / (1 + eta * TAU)), atol=1e-12
    )


# ----------------------------------------------------------------------------------------
# DNO: the exact per-iteration maximiser is soft policy iteration on the kept pairs


def test_dno_without_margin_is_soft_policy_iteration():
    for game, mu in GAMES.values():
        np.testing.assert_allclose(dno(game, mu, 200, 0.25), sppo(game, mu, 200, 4.0), atol=1e-12)


def test_dno_step_solves_every_kept_pair_exactly():
    """The contrastive objective is maximised when eta (log pi/pi_t)(y) - eta (log pi/pi_t)(y')
    = r_t(y) - r_t(y') on every kept pair; responses in no kept pair keep a common log-ratio."""
    game = random_game(12, seed=5)
    pi_t = np.random.default_rng(0).dirichlet(np.ones(12))
    eta = 0.3
    r = game.P @ pi_t
    margin = 0.6 * (r.max() - r.min())
    kept = _margin_pairs_support(r, margin)
    assert 0 < kept.sum() < 12  # some responses are isolated
    pi_next = dno(game, pi_t, 1, eta, margin)[1]
    log_ratio = np.log(pi_next / pi_t)
    for y in range(12):
        for z in range(12):
            if y != z and abs(r[y] - r[z]) >= margin:
                assert eta * (log_ratio[y] - log_ratio[z]) == pytest.approx(r[y] - r[z], abs=1e-12)
    assert np.ptp(log_ratio[~kept]) < 1e-12
    # the component's total logit is unchanged: its mean log-ratio is the isolated ones'
    assert log_ratio[kept].mean() == pytest.approx(log_ratio[~kept][0], abs=1e-12)


def test_dno_improves_every_iteration_yet_its_last_iterate_does_not_converge():
    """DNO's monotonic improvement, P(pi_{t+1} > pi_t) >= 1/2 at every t, holds exactly; on rps
    the last iterate still ends at a vertex (TV 2/3 from Nash) while the average converges."""
    for name in ("rps", "random50"):
        game, mu = GAMES[name]
        traj = dno(game, mu, 1000, 0.1, 0.1)
        wins = np.einsum("ti,ij,tj->t", traj[1:], game.P, traj[:-1])
        assert np.all(wins >= 0.5 - 1e-12)
    game, mu = GAMES["rps"]
    nash = nash_equilibrium(game)
    traj = dno(game, mu, 1000, 0.1, 0.1)
    assert _tv(traj[-1], nash) > 0.6
    assert _tv(running_average(traj)[-1], nash) < 0.03


def test_dno_stops_where_every_win_rate_gap_is_below_the_margin():
    """With margin 0.1 and a policy whose win rates all lie within 0.1, no pair is kept: DNO
    never moves, and stops at a 0.1-approximate Nash equilibrium (exploitability < margin)."""
    game, _ = GAMES["rps"]
    pi0 = np.array([0.36, 0.33, 0.31])
    r = game.P @ pi0
    assert np.ptp(r) < 0.1
    traj = dno(game, pi0, 50, 0.1, 0.1)
    np.testing.assert_allclose(traj, np.broadcast_to(pi0, traj.shape), atol=1e-15)
    assert 0 < exploitability(game, pi0) < 0.1
    assert _tv(dno(game, pi0, 50, 0.1, 0.0)[-1], pi0) > 0.1  # no margin: it moves (and cycles)
