"""The lab's showcase experiments, as plain functions returning numbers (and writing plots).

Used by ``nlhf lab ...`` and by ``nlhf demo`` (:func:`nlhf.demo.run_lab_showcase`):

* :func:`equilibria_showcase`  Nash and regularised Nash equilibria of the named games.
* :func:`compare_dynamics`     Nash-MD vs regularised mirror descent vs multiplicative
  weights on a 3-action game (THEORY Sec. 3).
* :func:`bandit_showcase`      the PsiPO Sec. 5.4 reproduction on D1, D2 and two actions.
"""

from __future__ import annotations

import json
import time
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


# ----------------------------------------------------------------------------- the showcase run (nlhf demo --lab)


def _stage_line(index: int, total: int, name: str):
    """Context-free stage timer: returns a function printing '[i/n] name: message (s)'."""
    start = time.perf_counter()

    def done(message: str) -> None:
        print(f"[{index}/{total}] {name}: {message} ({time.perf_counter() - start:.1f} s)", flush=True)

    return done


def _fmt_probs(probs, digits: int = 4) -> str:
    return "(" + ", ".join(f"{p:.{digits}f}" for p in probs) + ")"


def run_lab_showcase(out_dir, quick: bool = False, metadata: dict | None = None) -> dict:
    """Run the lab showcase into ``out_dir``; return the results (also in results.json).

    Stages: (1) equilibria of rock-paper-scissors, the Condorcet raters, the dice, a
    Bradley-Terry game and a random game (equilibria.png); (2) Nash-MD vs regularised
    mirror descent vs multiplicative weights on rock-paper-scissors (dynamics_rps.png);
    (3) the PsiPO Sec. 5.4 bandits D1, D2 and two actions, DPO and IPO (bandit_*.png).
    ``quick`` shortens stages 2-3 (3000 bandit steps and 4 seeds instead of 18000 and 10).
    Writes results.json (with ``metadata`` merged in) and report.md into ``out_dir``.
    """
    from nlhf.lab.plots import plot_dynamics, plot_equilibria

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tau = 0.1
    dyn_steps = 1000 if quick else 3000
    bandit_steps, bandit_seeds = (3000, 4) if quick else (18_000, 10)
    total = 3
    results: dict = {**(metadata or {}), "quick": quick, "tau": tau, "files": {}}

    done = _stage_line(1, total, "equilibria")
    equilibria = equilibria_showcase(tau)
    entries = [
        {
            "title": e["title"],
            "names": e["names"],
            "policies": {
                "Nash (tau=0)": e["nash"],
                f"pi*_tau (tau={tau:g})": e["pi_tau"],
                **({"RLHF optimum": e["rlhf_optimum"]} if "rlhf_optimum" in e else {}),
            },
        }
        for e in equilibria
    ]
    results["files"]["equilibria"] = str(plot_equilibria(entries, out / "equilibria.png").name)
    results["equilibria"] = equilibria
    worst = max(e["pi_tau_residual"] for e in equilibria)
    done(f"{len(equilibria)} games solved, worst fixed-point residual {worst:.1e}")

    done = _stage_line(2, total, "dynamics")
    comparison = compare_dynamics(tau=tau, steps=dyn_steps)
    results["files"]["dynamics"] = str(plot_dynamics(comparison, out / "dynamics_rps.png").name)
    results["dynamics"] = {
        "game": "rps",
        "mu": comparison["mu"].tolist(),
        "tau": tau,
        "steps": dyn_steps,
        "pi_tau": comparison["pi_tau"].tolist(),
        "nash": comparison["nash"].tolist(),
        "runs": comparison["summary"],
    }
    final_md = comparison["runs"][0]["kl"][-1]
    done(f"Nash-MD KL(pi*_tau, pi_T) = {final_md:.1e} after {dyn_steps} steps")

    done = _stage_line(3, total, "ipo-bandit")
    bandit = bandit_showcase(out, taus=(0.1, 0.5, 1.0), seeds=bandit_seeds, steps=bandit_steps)
    for name, summary in bandit.items():
        results["files"][f"bandit_{name}"] = Path(summary.pop("plot")).name
    results["bandit"] = bandit
    d1 = bandit["D1"]["methods"]
    done(
        f"D1 after {bandit_steps} steps: DPO pi(a) = {d1['dpo']['0.1']['mean'][0]:.4f} (tau 0.1), "
        f"IPO pi(a) = {d1['ipo']['0.1']['mean'][0]:.4f} vs closed form {d1['ipo']['0.1']['closed_form'][0]:.4f}"
    )

    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "report.md").write_text(showcase_report(results))
    return results


def showcase_report(results: dict) -> str:
    """A short markdown report of :func:`run_lab_showcase`'s results."""
    tau = results["tau"]
    lines = [
        "# nlhf demo: the exact theory lab",
        "",
        "Everything below is computed exactly (float64), no neural network involved. "
        "THEORY.md has the mathematics.",
        "",
        f"## 1. Equilibria (tau = {tau:g}, mu uniform)",
        "",
        "| game | Nash (tau = 0) | exploitability | pi*_tau | residual |",
        "|---|---|---|---|---|",
    ]
    for e in results["equilibria"]:
        lines.append(
            f"| {e['title']} | {_fmt_probs(e['nash'], 3)} | {e['nash_exploitability']:.1e} | "
            f"{_fmt_probs(e['pi_tau'], 3)} | {e['pi_tau_residual']:.1e} |"
        )
    bt = next(e for e in results["equilibria"] if "rlhf_optimum" in e)
    lines += [
        "",
        f"On the Bradley-Terry game the regularised Nash equilibrium {_fmt_probs(bt['pi_tau'], 3)} is not the "
        f"RLHF optimum mu exp(r/tau) {_fmt_probs(bt['rlhf_optimum'], 3)} (total variation "
        f"{bt['tv_pi_tau_vs_rlhf']:.2f}).",
        "",
        f"![equilibria]({results['files']['equilibria']})",
        "",
        "## 2. Nash-MD, mirror descent and multiplicative weights on rock-paper-scissors",
        "",
        f"mu = {_fmt_probs(results['dynamics']['mu'], 2)}, tau = {tau:g}, pi*_tau = "
        f"{_fmt_probs(results['dynamics']['pi_tau'])}, {results['dynamics']['steps']} steps.",
        "",
        "| run | target | KL at t=10 | t=100 | t=1000 | final |",
        "|---|---|---|---|---|---|",
    ]
    steps = results["dynamics"]["steps"]
    for label, r in results["dynamics"]["runs"].items():
        k = r["kl_at_steps"]
        cells = " | ".join(f"{k[str(t)]:.1e}" if str(t) in k else "-" for t in (10, 100, 1000))
        lines.append(f"| {label} | {r['target']} | {cells} | {k[str(steps)]:.1e} |")
    lines += [
        "",
        "Nash-MD's last iterate converges to pi*_tau; with a constant step it stops at the biased "
        "point with mixture coefficient eta*tau. Regularised mirror descent against pi_t converges "
        "(fast) for a small step but not for a large one, where Nash-MD stays stable. "
        "Multiplicative weights (tau = 0) spirals away from the uniform equilibrium; only its "
        "average converges.",
        "",
        f"![dynamics]({results['files']['dynamics']})",
        "",
        "## 3. IPO vs DPO on the PsiPO bandits (Sec. 5.4)",
        "",
    ]
    for name, summary in results["bandit"].items():
        actions = summary["actions"]
        lines += [
            f"Dataset {name}: {len(summary['seeds'])} seeds x {summary['steps']} steps, final probabilities "
            f"of ({', '.join(actions)}), mean [{summary['interval']}]:",
            "",
            "| method | tau | mean | 95% interval | IPO closed form |",
            "|---|---|---|---|---|",
        ]
        for method, per_tau in summary["methods"].items():
            for t, e in per_tau.items():
                interval = ", ".join(f"[{lo:.3f}, {hi:.3f}]" for lo, hi in zip(e["ci95_low"], e["ci95_high"]))
                closed = _fmt_probs(e["closed_form"]) if "closed_form" in e else "-"
                lines.append(f"| {method.upper()} | {t} | {_fmt_probs(e['mean'])} | {interval} | {closed} |")
        lines += ["", f"![bandit {name}]({results['files'][f'bandit_{name}']})", ""]
    lines += [
        "DPO drives the dispreferred actions to probability 0 on D1 and on two actions whatever "
        "tau is (the KL term stops regularising with deterministic preferences); IPO stays at its "
        "regularised closed form.",
        "",
    ]
    return "\n".join(lines)
