"""A reward model depends on the sampling distribution; a preference model does not.

THEORY.md Sec. 7 and 7.1 (NLHF Sec. 3.2 and Theorem 2). Pairs y, y' are drawn i.i.d. from a
sampling distribution nu (code name ``behavior``) and labelled with P(y > y'). Fitted on
those pairs by maximum likelihood (the population limit: infinitely many pairs):

* :func:`fit_bradley_terry`     the Bradley-Terry reward r_nu. Its first-order condition
  matches each response's win rate against nu, so when P is not Bradley-Terry r_nu moves
  with nu, and so do argmax r_nu and the RLHF optimum mu exp(r_nu/tau)/Z;
* :func:`fit_preference_model`  the tabular pairwise model: it recovers P(y > y') on every
  pair nu covers, so its Nash equilibrium and pi*_tau do not move.

:func:`sampling_point` runs both halves for one class-level matrix P and one nu (what a
demo with learned judges needs at the class level); :func:`sampling_sweep` runs it
over a family of sampling distributions: :func:`simplex_cells` (the small triangles of a
subdivided 3-simplex, for a ternary map) or :func:`simplex_path` (a segment nu_a -> nu_b).
"""

from __future__ import annotations

import numpy as np

from nlhf.lab.games import PreferenceGame
from nlhf.lab.psipo import rlhf_optimum
from nlhf.lab.simplex import check_distribution, check_tau
from nlhf.lab.solvers import (
    as_game,
    exploitability,
    nash_equilibrium,
    regularized_exploitability,
    regularized_nash,
)

# Rewards within this of the largest count as tied for RLHF's top class.
TIE_ATOL = 1e-9

# ----------------------------------------------------------------------------------------
# The two population fits (THEORY Sec. 7.1)


def _bt_log_likelihood(P: np.ndarray, m: np.ndarray, r: np.ndarray) -> float:
    """sum_{i != j} m_ij P_ij log sigmoid(r_i - r_j), m the pair weights (zero diagonal)."""
    from scipy.special import log_expit

    return float(np.sum(m * P * log_expit(r[:, None] - r[None, :])))


def _check_bt_fit_exists(P: np.ndarray, m: np.ndarray) -> None:
    """Raise ``ValueError`` unless the 'beats' graph (i -> j when m_ij P_ij > 0) is strongly connected.

    Zermelo (1929), Ford (1957): the Bradley-Terry maximum likelihood is finite if and
    only if, for every split of the responses into two groups, each group sometimes beats
    the other; otherwise the reward gap between the groups runs off to infinity.
    """
    from scipy.sparse.csgraph import connected_components

    n_components, _ = connected_components(m * P > 0.0, directed=True, connection="strong")
    if n_components > 1:
        raise ValueError(
            "fit_bradley_terry: no finite Bradley-Terry fit: some group of responses is never "
            "beaten by the rest (a preference of exactly 0 or 1 between the groups)"
        )


def fit_bradley_terry(game, behavior, *, tol: float = 1e-12, max_iter: int = 100) -> np.ndarray:
    """The population Bradley-Terry fit r (n,) of ``game`` on pairs y, y' ~ behavior x behavior.

    THEORY Sec. 7.1. Maximises the expected log-likelihood of labels drawn from P,

        L(r) = sum_{i != j} nu_i nu_j P_ij log sigmoid(r_i - r_j),

    by Newton's method with a backtracking line search (L is concave; its Hessian is minus
    a weighted graph Laplacian, whose null space is the constants). The first-order
    condition, for every i: sum_j nu_j P_ij = sum_j nu_j sigmoid(r_i - r_j). The result is
    centred so that sum_i nu_i r_i = 0. Needs nu > 0 everywhere and a finite maximum (the
    'beats' graph strongly connected: a cycle of sure preferences, as in rock-paper-
    scissors, is fine; a sure winner is not): ``ValueError`` otherwise.
    """
    from scipy.special import expit

    game = as_game(game)
    nu = check_distribution(behavior, "behavior", game.n, positive=True)
    P = game.P
    m = np.outer(nu, nu) * (1.0 - np.eye(game.n))  # (n, n) pair weights
    _check_bt_fit_exists(P, m)
    r = np.zeros(game.n)
    value = _bt_log_likelihood(P, m, r)
    for _ in range(max_iter):
        s = expit(r[:, None] - r[None, :])  # (n, n) sigmoid(r_i - r_j)
        grad = np.sum(m * (P - s), axis=1)  # (n,) gradient of L
        w = m * s * (1.0 - s)
        laplacian = np.diag(w.sum(axis=1)) - w  # = -Hessian of L
        step = np.linalg.lstsq(laplacian, grad, rcond=None)[0]
        t = 1.0
        while True:
            new_value = _bt_log_likelihood(P, m, r + t * step)
            # Armijo; a full step shorter than 1e-6 is taken as it is (Newton converges
            # quadratically there, and L's changes drown in rounding).
            if new_value >= value + 1e-4 * t * (grad @ step) or np.max(np.abs(t * step)) < 1e-6 or t < 1e-8:
                break
            t *= 0.5
        r, value = r + t * step, new_value
        if np.max(np.abs(t * step)) < tol:
            break
    residual = np.max(np.abs(np.sum(m * (P - expit(r[:, None] - r[None, :])), axis=1)))
    if residual > 1e-9:
        raise RuntimeError(
            f"fit_bradley_terry: no convergence in {max_iter} Newton steps (score {residual:.1e})"
        )
    return r - nu @ r


def fit_preference_model(game, behavior) -> PreferenceGame:
    """The population fit of a tabular pairwise preference model on pairs from nu x nu.

    THEORY Sec. 7.1. Q(y > y') = sigmoid(f(y, y') - f(y', y)) maximising
    sum_{i != j} nu_i nu_j P_ij log Q_ij: each pair {i, j} has its own parameter, and its
    first-order condition P_ij / Q_ij = P_ji / Q_ji (with Q_ij + Q_ji = 1) gives Q_ij = P_ij
    whenever nu_i nu_j > 0, whatever the weight. Needs nu > 0 everywhere (a pair never
    sampled is not identified). Returns the fitted game.
    """
    game = as_game(game)
    nu = check_distribution(behavior, "behavior", game.n, positive=True)
    Q = np.full((game.n, game.n), 0.5)
    for i in range(game.n):
        for j in range(game.n):
            if i != j and nu[i] * nu[j] > 0.0:
                Q[i, j] = game.P[i, j]  # the per-pair maximiser of the weighted cross-entropy
    return PreferenceGame(Q, names=game.names)


# ----------------------------------------------------------------------------------------
# The answers RLHF and NLHF give from data sampled from nu


def rlhf_answer(game, behavior, mu, tau: float) -> dict:
    """RLHF from pairs sampled from nu: r_nu, argmax r_nu, mu exp(r_nu/tau)/Z and its exploitability.

    THEORY Sec. 5 (RLHF optimum) and Sec. 7.1 (r_nu). JSON-ready dict: ``reward``,
    ``top_class`` (argmax r_nu, the response RLHF picks as tau -> 0; tied classes joined
    by "="), ``rlhf`` (the
    optimum at tau), ``rlhf_exploitability`` (max_y P(y > pi) - 1/2 in the true game) and
    ``rlhf_regularized_exploitability`` (tau KL(pi, BR_tau(pi))).
    """
    game = as_game(game)
    r = fit_bradley_terry(game, behavior)
    pi = rlhf_optimum(r, mu, tau)
    return {
        "reward": r.tolist(),
        "top_class": "=".join(game.names[i] for i in np.flatnonzero(r >= r.max() - TIE_ATOL)),
        "rlhf": pi.tolist(),
        "rlhf_exploitability": exploitability(game, pi),
        "rlhf_regularized_exploitability": regularized_exploitability(game, pi, mu, tau),
    }


def nlhf_answer(game, behavior, mu, tau: float) -> dict:
    """NLHF from pairs sampled from nu: the Nash equilibrium and pi*_tau of the fitted preference model.

    THEORY Sec. 2 and Sec. 7.1. The equilibria are those of :func:`fit_preference_model`'s
    game; their exploitabilities are measured in the true game. JSON-ready dict: ``nash``,
    ``nash_exploitability``, ``pi_tau``, ``pi_tau_regularized_exploitability``.
    """
    game = as_game(game)
    fitted = fit_preference_model(game, behavior)
    nash = nash_equilibrium(fitted)
    pi_tau = regularized_nash(fitted, mu, tau)
    return {
        "nash": nash.tolist(),
        "nash_exploitability": exploitability(game, nash),
        "pi_tau": pi_tau.tolist(),
        "pi_tau_regularized_exploitability": regularized_exploitability(game, pi_tau, mu, tau),
    }


def sampling_point(P, behavior, tau: float = 0.1, mu=None, names=None) -> dict:
    """Both answers for one class-level preference matrix P and one sampling distribution nu.

    ``P``: a :class:`PreferenceGame` or a matrix (``names`` labels its classes); ``mu``: the
    reference of the RLHF optimum and of pi*_tau (default uniform), distinct from nu.
    Returns ``{"behavior", **rlhf_answer, **nlhf_answer}`` (JSON-ready).
    """
    game = P if isinstance(P, PreferenceGame) else PreferenceGame(P, names=names)
    tau = check_tau(tau)
    mu = np.full(game.n, 1.0 / game.n) if mu is None else check_distribution(mu, "mu", game.n, positive=True)
    nu = check_distribution(behavior, "behavior", game.n, positive=True)
    return {
        "behavior": nu.tolist(),
        **rlhf_answer(game, nu, mu, tau),
        **nlhf_answer(game, nu, mu, tau),
    }


# ----------------------------------------------------------------------------------------
# Families of sampling distributions


def simplex_cells(K: int) -> tuple[np.ndarray, np.ndarray]:
    """The K^2 small triangles of the 3-simplex cut K times along each side.

    Returns ``(corners, centroids)``: corners (K^2, 3, 3) barycentric (cell, corner,
    coordinate) and centroids (K^2, 3), every centroid strictly inside the simplex. A
    ternary map colours each cell by the answer at its centroid.
    """
    if K < 1:
        raise ValueError(f"--grid K must be >= 1, got {K}")
    corners = []
    for i in range(K):
        for j in range(K - i):
            k = K - 1 - i - j  # upward cell at lattice point (i, j, k), i + j + k = K - 1
            corners.append([(i + 1, j, k), (i, j + 1, k), (i, j, k + 1)])
            if k >= 1:  # downward cell at (i, j, k - 1), i + j + k - 1 = K - 2
                corners.append([(i + 1, j + 1, k - 1), (i + 1, j, k), (i, j + 1, k)])
    corners = np.array(corners, dtype=np.float64) / K  # (K^2, 3, 3)
    return corners, corners.mean(axis=1)


def simplex_path(start, end, points: int = 11) -> np.ndarray:
    """``points`` distributions evenly spaced on the segment (1 - t) nu_a + t nu_b, t in [0, 1]."""
    start = check_distribution(start, "path start", positive=True)
    end = check_distribution(end, "path end", start.shape[0], positive=True)
    if points < 2:
        raise ValueError(f"a path needs at least 2 points, got {points}")
    t = np.linspace(0.0, 1.0, points)[:, None]
    return (1.0 - t) * start[None, :] + t * end[None, :]


def sampling_sweep(game, behaviors, tau: float = 0.1, mu=None) -> dict:
    """:func:`sampling_point` for each row of ``behaviors`` (B, n), with a summary (JSON-ready).

    Summary: ``top_class_share`` (fraction of the rows where RLHF picks each class), the
    range of the RLHF optimum's exploitability, and ``nash_max_change`` /
    ``pi_tau_max_change``, the largest max-abs difference of the NLHF answers between any
    row and the first (0 up to rounding: the preference model does not depend on nu).
    """
    game = as_game(game)
    rows = [sampling_point(game, nu, tau, mu) for nu in np.atleast_2d(behaviors)]
    expl = [row["rlhf_exploitability"] for row in rows]
    share = {name: 0.0 for name in game.names}
    for row in rows:
        share[row["top_class"]] = share.get(row["top_class"], 0.0) + 1.0 / len(rows)
    first = rows[0]
    nash_change, pi_tau_change = 0.0, 0.0
    for row in rows:
        nash_change = max(nash_change, float(np.max(np.abs(np.subtract(row["nash"], first["nash"])))))
        pi_tau_change = max(pi_tau_change, float(np.max(np.abs(np.subtract(row["pi_tau"], first["pi_tau"])))))
    mu_vec = np.full(game.n, 1.0 / game.n) if mu is None else np.asarray(mu, dtype=np.float64)
    return {
        "names": list(game.names),
        "P": game.P.tolist(),
        "tau": float(tau),
        "mu": mu_vec.tolist(),
        "rows": rows,
        "top_class_share": share,
        "rlhf_exploitability_range": [min(expl), max(expl)],
        "nash_max_change": nash_change,
        "pi_tau_max_change": pi_tau_change,
    }


# ----------------------------------------------------------------------------------------
# The printed table


def _fmt(values, digits: int, sign: str = "") -> str:
    return "(" + " ".join(f"{v:{sign}.{digits}f}" for v in values) + ")"


def format_table(result: dict, max_rows: int = 12) -> list[str]:
    """The lines ``nlhf lab sampling-dependence`` prints for a :func:`sampling_sweep` result.

    One row per sampling distribution nu: nu, the Bradley-Terry reward r_nu, the class
    RLHF picks (argmax r_nu), the RLHF optimum at tau and its exploitability, the Nash
    equilibrium of the preference model fitted on the same pairs and its exploitability.
    At most ``max_rows`` rows (evenly spaced, plus the first row where each class is
    picked), then the summary over all rows.
    """
    rows, names = result["rows"], result["names"]
    show = set(np.linspace(0, len(rows) - 1, min(max_rows, len(rows))).round().astype(int).tolist())
    for name in names:
        picked = [i for i, row in enumerate(rows) if row["top_class"] == name]
        show |= set(picked[:1])
    width = 2 + 5 * len(names)
    rwidth = 2 + 7 * len(names)
    lines = [
        f"{'sampling nu':<{width}}  {'BT reward r_nu':<{rwidth}}  {'RLHF picks':<10}  "
        f"{'RLHF optimum':<{width + len(names)}}  {'expl.':>6}  {'Nash eq. (NLHF)':<{width + len(names)}}  "
        f"{'expl.':>7}"
    ]
    for i in sorted(show):
        row = rows[i]
        lines.append(
            f"{_fmt(row['behavior'], 2):<{width}}  {_fmt(row['reward'], 3, '+'):<{rwidth}}  "
            f"{row['top_class']:<10}  {_fmt(row['rlhf'], 3):<{width + len(names)}}  "
            f"{row['rlhf_exploitability']:>6.3f}  {_fmt(row['nash'], 3):<{width + len(names)}}  "
            f"{row['nash_exploitability']:>7.1e}"
        )
    if len(show) < len(rows):
        lines.append(f"({len(show)} of {len(rows)} rows shown; all of them in the JSON)")
    share = ", ".join(f"{name} {100 * s:.1f}%" for name, s in result["top_class_share"].items())
    low, high = result["rlhf_exploitability_range"]
    first = rows[0]
    lines += [
        f"RLHF picks {share} of the {len(rows)} sampling distributions; "
        f"its optimum's exploitability ranges {low:.4f} .. {high:.4f}",
        f"Nash equilibrium {_fmt(first['nash'], 4)} from every nu (largest change {result['nash_max_change']:.1e}), "
        f"exploitability {first['nash_exploitability']:.1e}",
        f"pi*_tau {_fmt(first['pi_tau'], 4)} from every nu (largest change {result['pi_tau_max_change']:.1e})",
    ]
    return lines
