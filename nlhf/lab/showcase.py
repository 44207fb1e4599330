"""The lab's showcase experiments, as plain functions returning numbers (and writing plots).

Used by ``nlhf lab ...`` and by ``nlhf demo`` (:func:`nlhf.demo.run_lab_showcase`):

* :func:`equilibria_showcase`  Nash and regularised Nash equilibria of the named games.
* :func:`compare_dynamics`     Nash-MD vs regularised mirror descent vs multiplicative
  weights on a 3-action game (THEORY Sec. 3).
* :func:`bandit_showcase`      the PsiPO Sec. 5.4 reproduction on D1, D2 and two actions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nlhf.lab.dynamics import (
    kl_from,
    mirror_descent,
    multiplicative_weights,
    nash_md,
    running_average,
    theorem1_bound,
)
from nlhf.lab.games import (
    PreferenceGame,
    bradley_terry,
    nontransitive_dice,
    random_game,
    rater_population,
    rock_paper_scissors,
)
from nlhf.lab.psipo import ipo_dataset_optimum, rlhf_optimum, summarize_bandit, train_bandit
from nlhf.lab.solvers import (
    exploitability,
    nash_equilibrium,
    regularized_exploitability,
    regularized_nash,
    stationary_residual,
)

# NLHF Sec. 3.2: three rater types, each transitive, whose population preference is a
# Condorcet cycle a > b > c > a. Equilibrium (tau = 0) by hand: (1/2, 1/5, 3/10).
CONDORCET_RANKINGS = ((0, 1, 2), (1, 2, 0), (2, 0, 1))
CONDORCET_WEIGHTS = (0.4, 0.35, 0.25)
# THEORY Sec. 7: Bradley-Terry scores where pi*_tau and RLHF's optimum differ (TV 0.31).
BT_SCORES = (0.0, 0.5, 1.0, 1.5, 2.0)


def named_game(name: str, n: int = 10, seed: int = 0, weights=CONDORCET_WEIGHTS) -> PreferenceGame:
    """The games of ``nlhf lab nash --game``: rps, random, tournament, raters, dice, bt."""
    if name == "rps":
        return rock_paper_scissors()
    if name == "random":
        return random_game(n, seed, "uniform")
    if name == "tournament":
        return random_game(n, seed, "tournament")
    if name == "raters":
        return rater_population(CONDORCET_RANKINGS, weights, names=("a", "b", "c"))
    if name == "dice":
        return nontransitive_dice()
    if name == "bt":
        return bradley_terry(BT_SCORES, names=tuple(f"r={r:g}" for r in BT_SCORES))
    raise ValueError(f"unknown game {name!r}; known: rps, random, tournament, raters, dice, bt")


def solve_game(game: PreferenceGame, tau: float, mu=None) -> dict:
    """Nash (tau = 0) and regularised Nash (mu uniform by default) of one game, with checks."""
    mu = np.full(game.n, 1.0 / game.n) if mu is None else np.asarray(mu, dtype=np.float64)
    nash = nash_equilibrium(game)
    pi_tau = regularized_nash(game, mu, tau)
    return {
        "names": list(game.names),
        "tau": tau,
        "mu": mu.tolist(),
        "nash": nash.tolist(),
        "nash_exploitability": exploitability(game, nash),
        "pi_tau": pi_tau.tolist(),
        "pi_tau_residual": stationary_residual(game, pi_tau, mu, tau),
        "pi_tau_regularized_exploitability": regularized_exploitability(game, pi_tau, mu, tau),
        "pi_tau_exploitability": exploitability(game, pi_tau),
    }


def equilibria_showcase(tau: float = 0.1) -> list[dict]:
    """Equilibria of rock-paper-scissors, the Condorcet raters, the dice, a BT game, a random game."""
    out = []
    for name, title in (
        ("rps", "rock-paper-scissors"),
        ("raters", "Condorcet raters (0.4, 0.35, 0.25)"),
        ("dice", "non-transitive dice (5/9)"),
        ("bt", "Bradley-Terry r = 0, .5, 1, 1.5, 2"),
        ("random", "random game n = 6, seed 0"),
    ):
        game = named_game(name, n=6, seed=0)
        entry = {"game": name, "title": title, **solve_game(game, tau)}
        if name == "bt":
            mu = np.full(game.n, 1.0 / game.n)
            rlhf = rlhf_optimum(np.array(BT_SCORES), mu, tau)
            entry["rlhf_optimum"] = rlhf.tolist()
            entry["tv_pi_tau_vs_rlhf"] = 0.5 * float(np.abs(rlhf - np.array(entry["pi_tau"])).sum())
        out.append(entry)
    return out


def compare_dynamics(
    game: PreferenceGame | None = None,
    mu=(0.6, 0.3, 0.1),
    tau: float = 0.1,
    steps: int = 3000,
    eta_small: float = 0.1,
    eta_large: float = 5.0,
) -> dict:
    """Nash-MD, regularised mirror descent and multiplicative weights side by side (THEORY Sec. 3).

    Runs (pi_0 = mu everywhere):
      * Nash-MD with eta_t = 2/(tau (t+2)), target pi*_tau;
      * Nash-MD with constant eta_large, target pi*_tau (it stops at the beta = eta tau point);
      * regularised mirror descent against pi_t with eta_small and with eta_large;
      * multiplicative weights (tau = 0) with eta_small, target the tau = 0 equilibrium,
        and its running average.
    Returns trajectories, KL(target, pi_t) curves and a summary of the final distances.
    """
    game = rock_paper_scissors() if game is None else game
    mu = np.asarray(mu, dtype=np.float64)
    pi_tau = regularized_nash(game, mu, tau)
    nash = nash_equilibrium(game)
    runs = []

    def add(label, trajectory, target, target_name, on_simplex=True):
        runs.append(
            {
                "label": label,
                "trajectory": trajectory,
                "kl": kl_from(target, trajectory),
                "target": target_name,
                "on_simplex": on_simplex,
            }
        )

    add("Nash-MD, eta_t = 2/(tau(t+2))", nash_md(game, mu, tau, steps), pi_tau, "pi*_tau")
    add(
        f"Nash-MD, eta = {eta_large:g}",
        nash_md(game, mu, tau, steps, eta=eta_large),
        pi_tau,
        "pi*_tau",
        False,
    )
    add(
        f"regularised MD, eta = {eta_small:g}",
        mirror_descent(game, mu, tau, steps, eta_small),
        pi_tau,
        "pi*_tau",
    )
    add(
        f"regularised MD, eta = {eta_large:g}",
        mirror_descent(game, mu, tau, steps, eta_large),
        pi_tau,
        "pi*_tau",
        False,
    )
    mwu = multiplicative_weights(game, mu, steps, eta_small)
    add(f"MWU (tau = 0), eta = {eta_small:g}", mwu, nash, "Nash")
    add("MWU average", running_average(mwu), nash, "Nash")
    summary = {
        run["label"]: {
            "target": run["target"],
            "kl_at_steps": {str(t): float(run["kl"][t]) for t in (10, 100, 1000, steps) if t <= steps},
            "final": run["trajectory"][-1].tolist(),
        }
        for run in runs
    }
    return {
        "names": list(game.names),
        "tau": tau,
        "mu": mu,
        "pi_tau": pi_tau,
        "nash": nash,
        "steps": steps,
        "runs": runs,
        "theorem1": np.r_[np.nan, [theorem1_bound(tau, t) for t in range(1, steps + 1)]],
        "summary": summary,
    }


def bandit_showcase(
    out_dir,
    datasets=("D1", "D2", "two"),
    taus=(0.1, 0.5, 1.0),
    seeds: int = 10,
    steps: int = 18_000,
    plot: bool = True,
) -> dict:
    """The PsiPO Sec. 5.4 reproduction: train, summarise, and plot learning curves per dataset.

    Returns {dataset: summary} (see :func:`nlhf.lab.psipo.summarize_bandit`) and writes
    ``bandit_<dataset>.png`` into ``out_dir`` when ``plot``.
    """
    from nlhf.lab.plots import plot_bandit_curves
    from nlhf.lab.psipo import bandit_dataset

    out_dir = Path(out_dir)
    results = {}
    for name in datasets:
        run = train_bandit(name, taus=taus, seeds=seeds, steps=steps)
        summary = summarize_bandit(run)
        if plot:
            actions, pairs = bandit_dataset(name)
            closed = {tau: ipo_dataset_optimum(pairs, len(actions), tau) for tau in run.taus}
            summary["plot"] = str(plot_bandit_curves(run, out_dir / f"bandit_{name}.png", closed))
        results[name] = summary
    return results
