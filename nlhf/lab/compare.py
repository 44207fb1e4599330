"""``nlhf lab compare``: every algorithm of the lab, exact dynamics on the same games.

THEORY.md Sec. 3-8. For each game (rock-paper-scissors, random_game(5), random_game(50))
and each algorithm: the last iterate's total-variation distance to the algorithm's own
target (pi*_tau, the tau = 0 Nash equilibrium, or the point a biased variant is known to
reach) and its unregularised exploitability max_y P(y > pi) - 1/2 after T = 10, 100, 1000
steps, and what the run is seen to converge to. Closed-form optima (IPO, DPO/RLHF) have no
T; their rows show the optimum's distance to pi*_tau. The RLHF/DPO row fits a
Bradley-Terry reward to pairs from mu (population maximum likelihood, THEORY Sec. 7.1) and
takes mu exp(r/tau)/Z: DPO's population optimum on those pairs is the same policy.

Settings (one rule for all, no per-algorithm tuning): tau = 0.1; every constant-step
method uses eta = 1 (``--eta``); Nash-MD uses its schedule eta_t = 2/(tau (t+2)); DNO uses
eta = 0.1 (a soft-policy-iteration step 1/eta = 10) with margin 0.1; MPO refreshes its
magnet every 10 steps; Nash-EMA averages logits with decay 0.9. rps starts from
mu = (0.6, 0.3, 0.1) (its equilibria are uniform, which every method would start at from
a uniform mu); the random games from the uniform mu.

The ``trainer`` column names the ``nlhf train`` sub-command that implements a row on
language models; :data:`TRAINER_CHECKS` (printed by :func:`format_trainer_table`) lists the
one-token-game tests in which those trainers reach the lab's answer (measured numbers; the
lab imports no trainer, so they are stated here, not recomputed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from nlhf.lab.dynamics import (
    ema_opponent_dynamics,
    fixed_mixture_dynamics,
    multiplicative_weights,
    nash_md,
    running_average,
)
from nlhf.lab.games import PreferenceGame, random_game, rock_paper_scissors
from nlhf.lab.psipo import psipo_optimum, rlhf_optimum
from nlhf.lab.sampling_dependence import fit_bradley_terry
from nlhf.lab.solvers import exploitability, nash_equilibrium, pg_stationary_point, regularized_nash
from nlhf.lab.successors import dno, inpo, mpo, nash_mirror_prox, sppo

COMPARE_GAMES = ("rps", "random5", "random50")
CHECKPOINTS = (10, 100, 1000)
RPS_MU = (0.6, 0.3, 0.1)
# Below this total variation at the last checkpoint a run counts as converged.
CONVERGED_TV = 1e-3


@dataclass(frozen=True)
class Algorithm:
    """One row: ``run(game, mu, tau, steps)`` returns (T+1, n), or (n,) for a closed form."""

    key: str
    label: str
    target: str  # a key of the targets dict of compare_game
    run: Callable[..., np.ndarray]
    closed_form: str = ""  # what a closed-form row is; empty for dynamics


# The `nlhf train` sub-command implementing each row on language models ("-": none).
TRAINER_OF = {"nash_md": "nash-md", "inpo": "inpo", "best_response": "best-response", "nash_ema": "nash-ema",
              "mirror_prox": "mirror-prox", "mpo": "mpo", "sppo": "sppo", "dno": "dno", "ipo": "ipo",
              "rlhf": "dpo, ppo, rlhf-pg"}  # fmt: skip


def compare_game(name: str) -> tuple[PreferenceGame, np.ndarray]:
    """The game and reference mu of a ``--games`` name: rps, random5, random50 (random<n>)."""
    if name == "rps":
        return rock_paper_scissors(), np.array(RPS_MU)
    if name.startswith("random") and name[6:].isdigit() and int(name[6:]) >= 2:
        n = int(name[6:])
        return random_game(n, seed=0), np.full(n, 1.0 / n)
    raise ValueError(f"unknown game {name!r}; known: rps, random<n> (e.g. random5, random50)")


def algorithms(eta: float = 1.0) -> list[Algorithm]:
    """Every algorithm of the lab with the settings of the module docstring."""

    return [
        Algorithm(
            "nash_md", "Nash-MD, eta_t = 2/(tau(t+2))", "pi_tau", lambda g, m, tau, T: nash_md(g, m, tau, T)
        ),
        Algorithm(
            "inpo",
            f"INPO = mirror descent vs pi_t (self-play, beta = 0), eta = {eta:g}",
            "pi_tau",
            lambda g, m, tau, T: inpo(g, m, tau, T, eta),
        ),
        Algorithm(
            "best_response",
            f"fixed mixture beta = 1 (best response to mu), eta = {eta:g}",
            "br_mu",
            lambda g, m, tau, T: fixed_mixture_dynamics(g, m, tau, 1.0, T, eta),
        ),
        Algorithm(
            "nash_ema",
            f"Nash-EMA (decay 0.9), eta = {eta:g}",
            "pi_tau",
            lambda g, m, tau, T: ema_opponent_dynamics(g, m, tau, T, eta),
        ),
        Algorithm(
            "mirror_prox",
            f"Nash mirror prox, eta = {eta:g}",
            "pi_tau",
            lambda g, m, tau, T: nash_mirror_prox(g, m, tau, T, eta),
        ),
        Algorithm(
            "mpo",
            f"MPO (MMD, magnet <- pi every 10), eta = {eta:g}",
            "nash",
            lambda g, m, tau, T: mpo(g, m, tau, T, eta, 10),
        ),
        Algorithm(
            "mwu",
            "multiplicative weights (tau = 0), eta = 0.1",
            "nash",
            lambda g, m, tau, T: multiplicative_weights(g, m, T, 0.1),
        ),
        Algorithm(
            "sppo", f"SPPO last iterate, eta = {eta:g}", "nash", lambda g, m, tau, T: sppo(g, m, T, eta)
        ),
        Algorithm(
            "sppo_avg", "SPPO average", "nash", lambda g, m, tau, T: running_average(sppo(g, m, T, eta))
        ),
        Algorithm(
            "dno",
            "DNO last iterate (eta = 0.1, margin 0.1)",
            "nash",
            lambda g, m, tau, T: dno(g, m, T, 0.1, 0.1),
        ),
        Algorithm(
            "dno_avg", "DNO average", "nash", lambda g, m, tau, T: running_average(dno(g, m, T, 0.1, 0.1))
        ),
        Algorithm(
            "ipo",
            "IPO optimum, data from mu",
            "pi_tau",
            lambda g, m, tau, T: psipo_optimum(g, m, m, tau, "identity"),
            closed_form="IPO optimum = BR_tau(mu)",
        ),
        Algorithm(
            "rlhf",
            "RLHF/DPO optimum (BT reward fitted on pairs from mu)",
            "pi_tau",
            lambda g, m, tau, T: rlhf_optimum(fit_bradley_terry(g, m), m, tau),
            closed_form="a BT optimum",
        ),
    ]


def _tv(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Total variation 1/2 sum |p - q| over the last axis."""
    return 0.5 * np.abs(p - q).sum(axis=-1)


def classify_limit(trajectory: np.ndarray, tv: np.ndarray, target_name: str) -> str:
    """What a run is seen to converge to, from its TV curve to the target (T+1,) and its iterates.

    With T the last step and T' = T // 10:
    ``target_name`` if TV(pi_T) <= CONVERGED_TV; ``"<target>, slowly"`` if TV halved from
    T' to T; ``"nothing (cycles)"`` if it did not fall by 10% from T' to T while the last
    iterate still moves (TV(pi_T, pi_t) > CONVERGED_TV for some t in [T/2, T]);
    ``"another point"`` if it did not fall and the iterate stopped; otherwise
    ``"undecided at T"``.
    """
    T = tv.shape[0] - 1
    early = max(T // 10, 1)
    if tv[T] <= CONVERGED_TV:
        return target_name
    if tv[T] <= 0.5 * tv[early]:
        return f"{target_name}, slowly"
    if tv[T] < 0.9 * tv[early]:
        return f"undecided at T={T}"
    tail = trajectory[T // 2 :]
    if np.max(_tv(tail, trajectory[T])) > CONVERGED_TV:
        return "nothing (cycles)"
    return "another point"


def compare(
    games: Sequence[str] = COMPARE_GAMES,
    tau: float = 0.1,
    eta: float = 1.0,
    checkpoints: Sequence[int] = CHECKPOINTS,
) -> dict:
    """Run every algorithm on every game; a JSON-ready dict (see :func:`format_table`).

    Per game: ``targets`` (pi*_tau, the Nash equilibrium, BR_tau(mu)) with their
    exploitabilities, and ``rows``: key, label, target, ``tv`` and ``exploitability`` at each
    checkpoint, ``limit`` (:func:`classify_limit`, or the closed form's name) and ``curve``
    (TV to the target at every step 0..T, for the plot).
    """
    steps = max(checkpoints)
    out = {"tau": tau, "eta": eta, "checkpoints": list(checkpoints), "games": {}}
    for name in games:
        game, mu = compare_game(name)
        targets = {
            "pi_tau": regularized_nash(game, mu, tau),
            "nash": nash_equilibrium(game),
            "br_mu": pg_stationary_point(game, mu, tau, 1.0),
        }
        rows = []
        for algo in algorithms(eta):
            result = np.asarray(algo.run(game, mu, tau, steps))
            trajectory = np.broadcast_to(result, (steps + 1, game.n)) if result.ndim == 1 else result
            tv = _tv(trajectory, targets[algo.target])
            rows.append(
                {
                    "key": algo.key,
                    "label": algo.label,
                    "trainer": TRAINER_OF.get(algo.key, "-"),
                    "target": algo.target,
                    "tv": {str(t): float(tv[t]) for t in checkpoints},
                    "exploitability": {str(t): exploitability(game, trajectory[t]) for t in checkpoints},
                    "limit": algo.closed_form or classify_limit(trajectory, tv, TARGET_NAMES[algo.target]),
                    "curve": None if algo.closed_form else tv.tolist(),
                }
            )
        out["games"][name] = {
            "n": game.n,
            "mu": mu.tolist(),
            "targets": {k: v.tolist() for k, v in targets.items()},
            "target_exploitability": {k: exploitability(game, v) for k, v in targets.items()},
            "rows": rows,
        }
    return out


TARGET_NAMES = {"pi_tau": "pi*_tau", "nash": "Nash", "br_mu": "BR_tau(mu)"}


def format_table(result: dict) -> str:
    """The markdown table of :func:`compare`: one block of rows per game."""
    ts = result["checkpoints"]
    head = (
        "| game | algorithm | trainer | target | "
        + " | ".join(f"TV T={t}" for t in ts)
        + " | "
        + " | ".join(f"expl T={t}" for t in ts)
        + " | converges to |"
    )
    lines = [head, "|" + "---|" * (5 + 2 * len(ts))]
    for name, entry in result["games"].items():
        for row in entry["rows"]:
            tvs = " | ".join(f"{row['tv'][str(t)]:.1e}" for t in ts)
            expl = " | ".join(f"{row['exploitability'][str(t)]:.3f}" for t in ts)
            lines.append(
                f"| {name} | {row['label']} | {row['trainer']} | {TARGET_NAMES[row['target']]} | {tvs} | {expl} "
                f"| {row['limit']} |"
            )
    floors = "; ".join(
        f"{name}: pi*_tau {entry['target_exploitability']['pi_tau']:.3f}, "
        f"BR_tau(mu) {entry['target_exploitability']['br_mu']:.3f}"
        for name, entry in result["games"].items()
    )
    lines.append("")
    lines.append(
        f"tau = {result['tau']:g}. TV = total variation of the last iterate to the row's target; "
        "expl = max_y P(y > pi_T) - 1/2 (0 at a Nash equilibrium). Exploitability of the "
        f"targets themselves: {floors}."
    )
    return "\n".join(lines)


# The iterative trainers on one-token games (tests/test_successors_vs_lab*.py): a logits table over n
# single-token responses trained by the real trainer (sampler, judge, loss, shared loop), 64 responses a
# step, against the lab's exact answer. TV: seed 0 (the CI test, tolerance 0.02) and over seeds 0-4.
TRAINER_CHECKS: tuple[dict[str, str], ...] = (
    dict(trainer="sppo", lab="sppo", game="random_game(5, seed=1)", target="Condorcet winner e_4 (= Nash)",
         tv="0.002", seeds="<= 0.0024"),
    dict(trainer="inpo", lab="inpo", game="random_game(5, seed=80), tau 0.15", target="pi*_tau",
         tv="0.0094", seeds="0.0085-0.0143"),
    dict(trainer="dno", lab="dno", game="random_game(5, seed=1), hard labels", target="Condorcet winner e_4 (= Nash)",
         tv="0.00045", seeds="0.0004-0.0007"),
    dict(trainer="mpo", lab="mpo", game="random_game(5, seed=1), tau 0.2, magnet every 2",
         target="the lab's 20th iterate (0.02 from Nash)", tv="0.0039", seeds="0.0029-0.0070"),
    dict(trainer="mpo (magnet never refreshed)", lab="magnetic_mirror_descent", game="random_game(5, seed=1), tau 0.2",
         target="pi*_tau", tv="0.0033", seeds="0.0017-0.0048"),
    dict(trainer="mirror-prox", lab="nash_mirror_prox", game="random_game(5, seed=80), tau 0.15", target="pi*_tau",
         tv="0.0077", seeds="0.0041-0.0153"),
)  # fmt: skip


def format_trainer_table() -> str:
    """The markdown table of :data:`TRAINER_CHECKS`."""
    lines = [
        "| trainer | lab form | one-token game | target | TV (seed 0) | TV (seeds 0-4) |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {c['trainer']} | {c['lab']} | {c['game']} | {c['target']} | {c['tv']} | {c['seeds']} |"
              for c in TRAINER_CHECKS]  # fmt: skip
    return "\n".join(lines)
