"""The reward model moves with the sampling distribution; the preference model and Nash do not.

THEORY.md Sec. 7.1; ``nlhf lab sampling-dependence`` (issue 15).
"""

import argparse
import json

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import expit, logit

from nlhf.lab import (
    PreferenceGame,
    bradley_terry,
    fit_bradley_terry,
    fit_preference_model,
    nash_equilibrium,
    rater_population,
    regularized_nash,
    rlhf_optimum,
    rock_paper_scissors,
    sampling_point,
    sampling_sweep,
)
from nlhf.lab.cli import register
from nlhf.lab.sampling_dependence import simplex_cells, simplex_path
from nlhf.lab.showcase import CONDORCET_RANKINGS, CONDORCET_WEIGHTS

RATERS = rater_population(CONDORCET_RANKINGS, CONDORCET_WEIGHTS, names=("a", "b", "c"))
# The demo's 4-class rater population (nlhf.envs.default_rater_population().game), copied
# here so that the lab's tests need nothing above the lab.
DEMO_P = np.array(
    [
        [0.5, 0.35, 0.65, 0.95],
        [0.65, 0.5, 0.35, 0.95],
        [0.35, 0.65, 0.5, 0.95],
        [0.05, 0.05, 0.05, 0.5],
    ]
)
DEMO_NAMES = ("structured", "personal", "direct", "unfocused")


# ----------------------------------------------------------------------------------------
# The Bradley-Terry fit against hand-worked and independent answers


@pytest.mark.parametrize("p12", [0.1, 0.5, 0.65, 0.97])
@pytest.mark.parametrize("nu1", [0.05, 0.5, 0.9])
def test_two_responses_give_the_logit_whatever_the_sampling(p12, nu1):
    # One pair: L = nu1 nu2 [p log s(d) + (1 - p) log s(-d)] is maximised at s(d) = p.
    r = fit_bradley_terry([[0.5, p12], [1.0 - p12, 0.5]], [nu1, 1.0 - nu1])
    assert r[0] - r[1] == pytest.approx(logit(p12), abs=1e-10)
    assert nu1 * r[0] + (1.0 - nu1) * r[1] == pytest.approx(0.0, abs=1e-12)  # centred under nu


def test_three_responses_match_direct_likelihood_maximisation():
    # An independent computation: BFGS on the expected log-likelihood with r_c = 0 fixed.
    nu = np.array([0.2, 0.3, 0.5])
    P = RATERS.P

    def negative_log_likelihood(free):
        r = np.array([free[0], free[1], 0.0])
        s = expit(r[:, None] - r[None, :])
        return -np.sum(np.outer(nu, nu) * P * np.log(s) * (1.0 - np.eye(3)))

    found = minimize(negative_log_likelihood, np.zeros(2), method="BFGS", options={"gtol": 1e-12}).x
    r = fit_bradley_terry(RATERS, nu)
    np.testing.assert_allclose(r[:2] - r[2], found, atol=1e-6)
    # First-order condition: the fit reproduces each response's win rate against nu.
    np.testing.assert_allclose(expit(r[:, None] - r[None, :]) @ nu, P @ nu, atol=1e-12)


def test_rock_paper_scissors_with_uniform_sampling_has_equal_rewards_by_hand():
    # Sure preferences, but in a cycle: the maximum is finite, and by symmetry r = 0.
    np.testing.assert_allclose(fit_bradley_terry(rock_paper_scissors(), np.full(3, 1 / 3)), 0.0, atol=1e-12)
    r = fit_bradley_terry(rock_paper_scissors(), [0.5, 0.3, 0.2])
    assert np.all(np.isfinite(r)) and np.ptp(r) > 0.1
    with pytest.raises(ValueError, match="no finite Bradley-Terry fit"):
        fit_bradley_terry(rater_population([(0, 1, 2)]), np.full(3, 1 / 3))  # a sure winner


@pytest.mark.parametrize("nu", [(0.2, 0.3, 0.5), (0.7, 0.2, 0.1), (0.01, 0.01, 0.98)])
def test_a_bradley_terry_game_is_recovered_whatever_the_sampling(nu):
    scores = np.array([0.4, -1.0, 1.5])
    r = fit_bradley_terry(bradley_terry(scores), nu)
    np.testing.assert_allclose(r - r[0], scores - scores[0], atol=1e-10)


# ----------------------------------------------------------------------------------------
# The two halves: RLHF's answer moves, Nash's does not


def test_the_demo_game_reproduces_the_issues_measured_rewards_and_top_classes():
    measured = {
        (0.08, 0.24, 0.49, 0.19): ("structured", (0.742, 0.269, 0.677, -2.399)),
        (0.4, 0.2, 0.2, 0.2): ("personal", None),
        (0.2, 0.5, 0.2, 0.1): ("direct", None),
    }
    for nu, (top, reward) in measured.items():
        row = sampling_point(DEMO_P, nu, tau=0.1, names=DEMO_NAMES)
        assert row["top_class"] == top
        if reward is not None:
            np.testing.assert_allclose(row["reward"], reward, atol=5e-4)
        np.testing.assert_allclose(row["nash"], [1 / 3, 1 / 3, 1 / 3, 0.0], atol=1e-9)


def test_on_the_cycle_rlhf_picks_different_classes_and_nash_stays_put():
    result = sampling_sweep(RATERS, [(0.8, 0.1, 0.1), (0.1, 0.1, 0.8), (0.2, 0.6, 0.2)], tau=0.1)
    rows = result["rows"]
    assert [row["top_class"] for row in rows] == ["c", "b", "a"]
    tv = 0.5 * np.abs(np.subtract(rows[0]["rlhf"], rows[1]["rlhf"])).sum()
    assert tv > 0.5  # the RLHF optimum jumps between (nearly) deterministic policies
    for row in rows:
        np.testing.assert_allclose(row["nash"], [0.5, 0.2, 0.3], atol=1e-9)  # THEORY Sec. 7, by hand
        assert row["nash_exploitability"] <= 1e-9
        assert row["rlhf_exploitability"] > 0.05
    assert result["nash_max_change"] <= 1e-12 and result["pi_tau_max_change"] <= 1e-12


def test_the_fitted_preference_model_and_its_equilibria_do_not_depend_on_sampling():
    rng = np.random.default_rng(0)
    game = PreferenceGame(DEMO_P, names=DEMO_NAMES)
    mu = np.array([0.1, 0.2, 0.3, 0.4])  # a reference distinct from the sampling distributions
    pi_tau = regularized_nash(game, mu, 0.05)
    for nu in rng.dirichlet(np.full(4, 0.5), size=5):
        nu = np.maximum(nu, 1e-6) / np.maximum(nu, 1e-6).sum()
        np.testing.assert_array_equal(fit_preference_model(game, nu).P, game.P)
        row = sampling_point(game, nu, tau=0.05, mu=mu)
        np.testing.assert_allclose(row["nash"], nash_equilibrium(game), atol=1e-12)
        np.testing.assert_allclose(row["pi_tau"], pi_tau, atol=1e-12)
        np.testing.assert_allclose(row["rlhf"], rlhf_optimum(row["reward"], mu, 0.05), atol=1e-12)


def test_on_a_bradley_terry_game_rlhf_does_not_move_either():
    result = sampling_sweep(bradley_terry([0.0, 1.0, 0.5]), simplex_cells(4)[1], tau=0.2)
    assert {row["top_class"] for row in result["rows"]} == {"y1"}
    first = result["rows"][0]["rlhf"]
    for row in result["rows"]:
        np.testing.assert_allclose(row["rlhf"], first, atol=1e-9)


def test_simplex_cells_tile_the_simplex_and_the_path_is_linear():
    corners, centroids = simplex_cells(5)
    assert corners.shape == (25, 3, 3) and np.all(centroids > 0)
    np.testing.assert_allclose(corners.sum(axis=2), 1.0)
    u, v = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    areas = 0.5 * np.abs(u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0])  # in the (y0, y1) plane
    assert areas.sum() == pytest.approx(0.5) and np.allclose(areas, 0.5 / 25)
    path = simplex_path([0.6, 0.2, 0.2], [0.2, 0.2, 0.6], points=5)
    np.testing.assert_allclose(path[2], [0.4, 0.2, 0.4])


# ----------------------------------------------------------------------------------------
# The command


def main(argv: list[str]) -> int:
    """``nlhf <argv>`` through the lab's own parser (the lab's tests need nothing above the lab)."""
    parser = argparse.ArgumentParser(prog="nlhf")
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_grid_writes_table_json_and_ternary_plot(tmp_path, capsys):
    args = ["lab", "sampling-dependence", "--game", "raters", "--grid", "6", "--out", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "sampling_dependence.json").read_text())
    assert len(result["rows"]) == 36 and result["family"] == {"grid": 6}
    assert {row["top_class"] for row in result["rows"]} == {"a", "b", "c"}
    assert "RLHF picks a " in out and "Nash equilibrium (0.5000 0.2000 0.3000) from every nu" in out
    table = [line for line in out.splitlines() if line.startswith("(0.")]
    assert len(table) >= 12 and all(line.split()[-1] == "0.0e+00" for line in table)
    assert (tmp_path / "sampling_dependence.png").stat().st_size > 10_000


def test_cli_path_on_four_responses_and_errors(tmp_path, capsys):
    args = ["lab", "sampling-dependence", "--game", "random", "--n", "4", "--seed", "1", "--tau", "0.2"]
    path = ["--path", "0.7,0.1,0.1,0.1:0.1,0.1,0.1,0.7", "--points", "5", "--out", str(tmp_path)]
    assert main(args + path) == 0
    result = json.loads((tmp_path / "sampling_dependence.json").read_text())
    assert [row["behavior"][0] for row in result["rows"]] == pytest.approx([0.7, 0.55, 0.4, 0.25, 0.1])
    assert result["tau"] == 0.2 and (tmp_path / "sampling_dependence.png").stat().st_size > 10_000
    capsys.readouterr()
    assert main(args + ["--out", str(tmp_path)]) == 2
    assert "--grid needs a 3-response game" in capsys.readouterr().err
