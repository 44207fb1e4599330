"""Exact solvers of preference games: Nash equilibria, regularised equilibria, best responses.

THEORY.md Sec. 2 (the regularised preference game, exploitability) and Sec. 4 (the
stationary point of Nash-MD-PG with a fixed mixture coefficient beta).

* :func:`nash_equilibrium`       tau = 0, by a linear program (scipy HiGHS).
* :func:`regularized_nash`       the unique pi*_tau = mu exp(P(y > pi*_tau)/tau) / Z.
* :func:`pg_stationary_point`    pi = mu exp(P(y > pi^beta)/tau) / Z, pi^beta the mixture.
* :func:`exploitability`, :func:`regularized_exploitability` and the best responses.

The two fixed points are found by Newton's method on the logits with a backtracking line
search (the Jacobian I - (1-beta)/tau A D is never singular because A = P - 1/2 is
skew-symmetric and D, the softmax Jacobian, is positive semi-definite), so they reach a
fixed-point residual of about 1e-15 in a handful of steps, not a long decaying-step run.
"""

from __future__ import annotations

import numpy as np

from nlhf.lab.games import PreferenceGame
from nlhf.lab.simplex import (
    check_beta,
    check_distribution,
    check_tau,
    geometric_mixture,
    kl,
    log_softmax,
    softmax,
)

# Fixed-point residual regularized_nash and pg_stationary_point guarantee (max-abs, pi-space).
RESIDUAL_TOL = 1e-12


def as_game(game) -> PreferenceGame:
    """Accept a :class:`PreferenceGame` or a raw matrix (validated into a game)."""
    return game if isinstance(game, PreferenceGame) else PreferenceGame(game)


# ----------------------------------------------------------------------------------------
# Best responses and exploitability (THEORY Sec. 2)


def best_response(game, pi) -> np.ndarray:
    """The unregularised best response to pi: the pure strategy argmax_y P(y > pi).

    Ties go to the lowest index. Returns a one-hot vector of shape (n,).
    """
    game = as_game(game)
    pi = check_distribution(pi, "pi", game.n)
    out = np.zeros(game.n)
    out[int(np.argmax(game.P @ pi))] = 1.0
    return out


def regularized_best_response(game, pi, mu, tau: float) -> np.ndarray:
    """BR_tau(pi)(y) proportional to mu(y) exp(P(y > pi)/tau) (THEORY Sec. 2).

    The maximiser over pi' of P(pi' > pi) - tau KL(pi', mu).
    """
    game = as_game(game)
    pi = check_distribution(pi, "pi", game.n)
    mu = check_distribution(mu, "mu", game.n, positive=True)
    tau = check_tau(tau)
    return softmax(np.log(mu) + (game.P @ pi) / tau)


def exploitability(game, pi) -> float:
    """max_pi' P(pi' > pi) - 1/2 = max_y P(y > pi) - 1/2 (THEORY Sec. 2).

    Zero exactly at a Nash equilibrium of the unregularised game, positive elsewhere.
    """
    game = as_game(game)
    pi = check_distribution(pi, "pi", game.n)
    return float(np.max(game.P @ pi) - 0.5)


def regularized_preference(game, pi, pi_opponent, mu, tau: float) -> float:
    """P_tau(pi > pi') = P(pi > pi') - tau KL(pi, mu) + tau KL(pi', mu) (THEORY Sec. 2)."""
    game = as_game(game)
    tau = check_tau(tau, allow_zero=True)
    return game.preference(pi, pi_opponent) - tau * kl(pi, mu) + tau * kl(pi_opponent, mu)


def regularized_exploitability(game, pi, mu, tau: float) -> float:
    """max_pi' P_tau(pi' > pi) - 1/2 = tau KL(pi, BR_tau(pi)) >= 0 (THEORY Sec. 2).

    Zero if and only if pi = pi*_tau, the regularised Nash equilibrium.
    """
    tau = check_tau(tau)
    return tau * kl(pi, regularized_best_response(game, pi, mu, tau))


# ----------------------------------------------------------------------------------------
# tau = 0: the Nash equilibrium by linear programming


def nash_equilibrium(game, polish: bool = True) -> np.ndarray:
    """A Nash equilibrium of the unregularised game (tau = 0), by a linear program.

    THEORY Sec. 2: the game is symmetric zero-sum, so an equilibrium pi minimises its
    exploitability max_y P(y > pi) - 1/2, whose minimum is 0:

        minimise v  over (pi, v)   s.t.   (P - 1/2) pi <= v,   sum(pi) = 1,   pi >= 0.

    Solved with scipy's HiGHS interior point with crossover (a vertex solution), then
    (``polish``) the equalities on the support are re-solved by least squares; should the
    exploitability still exceed 1e-9, the LP is re-solved by the dual simplex with tight
    tolerances. Result: exploitability <= 1e-9 (usually ~1e-16). The equilibrium need not
    be unique at tau = 0; this returns one of them. Seconds up to n ~ 300 (n = 1000: ~10 s).
    """
    game = as_game(game)
    A = game.A  # (n, n), skew-symmetric
    pi = _solve_nash_lp(A, "highs-ipm", {})
    if polish:
        pi = _polish_on_support(A, pi)
    if np.max(A @ pi) > 1e-9:
        pi = _solve_nash_lp(
            A, "highs-ds", {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10}
        )
        if polish:
            pi = _polish_on_support(A, pi)
    return pi


def _solve_nash_lp(A: np.ndarray, method: str, options: dict) -> np.ndarray:
    """min v s.t. A pi <= v, sum(pi) = 1, pi >= 0 with scipy's HiGHS ``method``; returns pi."""
    from scipy.optimize import linprog

    n = A.shape[0]
    c = np.zeros(n + 1)
    c[-1] = 1.0
    A_ub = np.hstack([A, -np.ones((n, 1))])  # A pi - v <= 0
    A_eq = np.hstack([np.ones((1, n)), np.zeros((1, 1))])
    bounds = [(0.0, None)] * n + [(None, None)]
    result = linprog(
        c,
        A_ub=A_ub,
        b_ub=np.zeros(n),
        A_eq=A_eq,
        b_eq=np.ones(1),
        bounds=bounds,
        method=method,
        options=options,
    )
    if result.status != 0:
        raise RuntimeError(f"nash_equilibrium: the linear program failed ({method}): {result.message}")
    pi = np.clip(result.x[:n], 0.0, None)
    return pi / pi.sum()


def _polish_on_support(A: np.ndarray, pi: np.ndarray) -> np.ndarray:
    """Re-solve A[S, S] pi_S = 0, sum(pi_S) = 1 on the support S; keep it if it is better."""
    support = np.flatnonzero(pi > 1e-12)
    M = np.vstack([A[np.ix_(support, support)], np.ones((1, support.size))])  # (|S|+1, |S|)
    rhs = np.zeros(support.size + 1)
    rhs[-1] = 1.0
    pi_s, *_ = np.linalg.lstsq(M, rhs, rcond=None)
    if np.any(pi_s < 0):
        return pi
    candidate = np.zeros_like(pi)
    candidate[support] = pi_s / pi_s.sum()
    if np.max(A @ candidate) <= np.max(A @ pi):
        return candidate
    return pi


# ----------------------------------------------------------------------------------------
# tau > 0: the regularised equilibrium and the fixed-mixture stationary point (Newton)


def stationary_residual(game, pi, mu, tau: float, beta: float = 0.0) -> float:
    """max_y |pi(y) - BR_tau(pi^beta)(y)|, the fixed-point residual of THEORY Sec. 2 / Sec. 4.

    beta = 0: the residual of pi = BR_tau(pi), zero iff pi = pi*_tau.
    beta > 0: the residual of pi proportional to mu exp(P(y > pi^beta)/tau).
    """
    game = as_game(game)
    pi = check_distribution(pi, "pi", game.n)
    mixture = geometric_mixture(pi, mu, beta)
    return float(np.max(np.abs(pi - regularized_best_response(game, mixture, mu, tau))))


def regularized_nash(game, mu, tau: float, tol: float = RESIDUAL_TOL, max_iter: int = 200) -> np.ndarray:
    """The unique regularised Nash equilibrium pi*_tau (THEORY Sec. 2; NLHF Sec. 4).

    pi*_tau = argmax_pi min_pi' P_tau(pi > pi') is the fixed point
    pi*_tau(y) proportional to mu(y) exp(P(y > pi*_tau)/tau). Found by Newton's method (see
    :func:`pg_stationary_point`, of which this is the beta = 0 case) to a fixed-point
    residual ``max|pi - BR_tau(pi)| <= tol`` (1e-12 by default).
    """
    return pg_stationary_point(game, mu, tau, beta=0.0, tol=tol, max_iter=max_iter)


def pg_stationary_point(
    game, mu, tau: float, beta: float, tol: float = RESIDUAL_TOL, max_iter: int = 200
) -> np.ndarray:
    """Stationary point of the expected Nash-MD-PG update with mixture coefficient beta.

    THEORY Sec. 4: the unique pi with pi(y) proportional to mu(y) exp(P(y > pi^beta)/tau),
    pi^beta proportional to pi^(1-beta) mu^beta. beta = 0 gives pi*_tau; constant-step
    Nash-MD with step eta converges to the point with beta = eta tau (THEORY Sec. 3).

    Method: write pi = softmax(z) and solve, in the logits z (defined up to a constant),

        F(z) = z - log mu - (P - 1/2) softmax((1-beta) z + beta log mu) / tau = 0

    by Newton's method, J = I - (1-beta)/tau A D with D = diag(m) - m m^T at the mixture m,
    starting from z = log mu, with a backtracking (Armijo) line search on |F - mean(F)|^2.
    J is never singular (A skew, D positive semi-definite: the eigenvalues of A D are
    imaginary), so each Newton direction decreases the merit. Should the line search stall,
    a few damped fixed-point steps (Nash-MD-like) are taken before Newton resumes.
    Returns pi with ``stationary_residual <= tol``; raises ``RuntimeError`` otherwise.
    """
    game = as_game(game)
    mu = check_distribution(mu, "mu", game.n, positive=True)
    tau = check_tau(tau)
    beta = check_beta(beta)
    A = game.A  # (n, n)
    log_mu = np.log(mu)  # (n,)
    n = game.n

    def evaluate(z):
        """Centred F(z), the mixture m, and the pi-space residual."""
        m = softmax((1.0 - beta) * z + beta * log_mu)  # pi^beta, (n,)
        target = log_mu + (A @ m) / tau  # logits of BR_tau(pi^beta), (n,)
        F = z - target
        F -= F.mean()
        residual = float(np.max(np.abs(softmax(z) - softmax(target))))
        return F, m, target, residual

    z = log_mu.copy()
    F, m, target, residual = evaluate(z)
    best_z, best_residual = z, residual
    stalled = 0
    for _ in range(max_iter):
        if residual <= 0.1 * tol:
            break
        # Newton direction: (I - c A D) d = -F, with A D = A diag(m) - (A m) m^T (O(n^2)).
        c = (1.0 - beta) / tau
        J = -c * (A * m[None, :] - np.outer(A @ m, m))
        J[np.diag_indices(n)] += 1.0
        d = np.linalg.solve(J, -F)
        merit = F @ F
        t = 1.0
        accepted = False
        while t >= 1e-10:
            F_new, m_new, target_new, residual_new = evaluate(z + t * d)
            if F_new @ F_new <= (1.0 - 1e-4 * t) * merit:
                accepted = True
                break
            t *= 0.5
        if accepted:
            z, F, m, target, residual = z + t * d, F_new, m_new, target_new, residual_new
        else:
            # Rounding floor or a stalled line search: damped fixed-point steps
            # z <- (1 - a) z + a target (a Nash-MD step with eta = a / tau).
            for _ in range(20):
                z = 0.9 * z + 0.1 * target
                F, m, target, residual = evaluate(z)
        if residual < 0.5 * best_residual:
            stalled = 0
        else:
            stalled += 1
        if residual < best_residual:
            best_z, best_residual = z, residual
        if stalled >= 3 and best_residual <= tol:
            break  # at the rounding floor
    if best_residual > tol:
        raise RuntimeError(
            f"pg_stationary_point: no convergence in {max_iter} Newton steps "
            f"(residual {best_residual:.3e} > tol {tol:.1e}; n={n}, tau={tau}, beta={beta})"
        )
    return np.exp(log_softmax(best_z))
