"""Exact class-level analysis of an environment: equilibria, the RLHF optimum, exploitability.

numpy/scipy only, on top of :mod:`nlhf.lab`. Given a class-level game (an oracle's
``game``) and the reference's class distribution mu:

* :func:`fit_bradley_terry`   the Bradley-Terry reward a reward model converges to when it
  is fitted on pairs drawn from a behaviour policy and labelled by the game (NLHF Theorem 2:
  it depends on that policy); defined in :mod:`nlhf.lab.sampling_dependence`, re-exported
  here;
* :func:`environment_summary` Nash (tau = 0), pi*_tau, the RLHF optimum mu exp(r/tau)/Z of
  that fitted reward (THEORY Sec. 5, PsiPO with Psi = logit), each with its exploitability,
  KL to mu and win-rate against mu, for a list of tau, and the RLHF optimum at the same
  KL(pi, mu) as pi*_tau (:func:`rlhf_at_kl`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nlhf.lab.games import PreferenceGame
from nlhf.lab.psipo import rlhf_optimum
from nlhf.lab.sampling_dependence import fit_bradley_terry
from nlhf.lab.simplex import check_distribution, kl
from nlhf.lab.solvers import (
    exploitability,
    nash_equilibrium,
    regularized_exploitability,
    regularized_nash,
)


def rlhf_at_kl(reward, mu, target_kl: float, *, tol: float = 1e-10) -> np.ndarray | None:
    """The RLHF optimum mu exp(r/tau)/Z whose KL(pi, mu) equals ``target_kl`` (bisection on 1/tau).

    KL grows monotonically with 1/tau (its derivative is Var_pi(r)/tau), from 0 to
    -log mu(argmax r) (ties in the top reward share that mass). Returns None when
    ``target_kl`` is beyond that limit. For comparing policies at matched KL (issue 6).
    """
    r = np.asarray(reward, dtype=np.float64)
    mu = check_distribution(mu, "mu", r.shape[0], positive=True)
    top = np.isclose(r, r.max(), rtol=0.0, atol=1e-12)
    kl_max = -np.log(mu[top].sum())
    if target_kl < 0 or target_kl >= kl_max:
        return None
    lo, hi = 0.0, 1.0  # inverse temperatures 1/tau
    while kl(rlhf_optimum(r, mu, 1.0 / hi), mu) < target_kl:
        hi *= 2.0
    while hi - lo > tol * max(1.0, hi):
        mid = 0.5 * (lo + hi)
        if mid == 0.0 or kl(rlhf_optimum(r, mu, 1.0 / mid), mu) < target_kl:
            lo = mid
        else:
            hi = mid
    return rlhf_optimum(r, mu, 1.0 / hi)


def _policy_row(game: PreferenceGame, pi: np.ndarray, mu: np.ndarray, tau: float | None) -> dict:
    row = {
        "pi": pi.tolist(),
        "exploitability": exploitability(game, pi),
        "win_rate_vs_ref": game.preference(pi, mu),
        "kl_to_ref": kl(pi, mu),
    }
    if tau is not None:
        row["regularized_exploitability"] = regularized_exploitability(game, pi, mu, tau)
    return row


def environment_summary(
    game: PreferenceGame,
    mu,
    taus: Sequence[float] = (0.02, 0.05, 0.1, 0.2),
    reward: Sequence[float] | None = None,
) -> dict:
    """Everything the demo's claims rest on, exactly, at the class level (JSON-ready).

    ``mu``: the reference's class distribution (all classes > 0). ``reward``: the reward
    RLHF maximises; by default the Bradley-Terry fit of the game on mu's pairs
    (:func:`fit_bradley_terry`), which is what a reward model trained on reference samples
    estimates. For each tau: pi*_tau (:func:`nlhf.lab.regularized_nash`) and the RLHF
    optimum mu exp(r/tau)/Z, each with exploitability, regularised exploitability, KL to
    mu and win-rate against mu; and the RLHF optimum with the same KL to mu as pi*_tau
    (None when RLHF cannot move that far), to compare the two at matched KL.
    """
    mu = check_distribution(mu, "mu", game.n, positive=True)
    r = fit_bradley_terry(game, mu) if reward is None else np.asarray(reward, dtype=np.float64)
    nash = nash_equilibrium(game)
    out = {
        "classes": list(game.names),
        "P": game.P.round(6).tolist(),
        "ref": {"pi": mu.tolist(), "exploitability": exploitability(game, mu)},
        "nash": _policy_row(game, nash, mu, None),
        "reward": r.tolist(),
        "rlhf_top_class": game.names[int(np.argmax(r))],
        "by_tau": [],
    }
    for tau in taus:
        nash_tau = regularized_nash(game, mu, tau)
        matched = rlhf_at_kl(r, mu, kl(nash_tau, mu))
        out["by_tau"].append(
            {
                "tau": tau,
                "nash_tau": _policy_row(game, nash_tau, mu, tau),
                "rlhf": _policy_row(game, rlhf_optimum(r, mu, tau), mu, tau),
                "rlhf_same_kl_as_nash_tau": None if matched is None else _policy_row(game, matched, mu, None),
            }
        )
    return out
