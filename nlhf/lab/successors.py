"""Exact tabular dynamics of Nash-MD's successors: SPPO, INPO, DNO, MPO and Nash mirror prox.

THEORY.md Sec. 8. Every function returns the whole trajectory, an array of shape (T+1, n)
(row t is pi_t), like :mod:`nlhf.lab.dynamics`, and carries policies as log-probabilities
between steps. A = P - 1/2 throughout (the 1/2 cancels in every normaliser), so
P(y > pi) = 1/2 + (A pi)(y).

* :func:`sppo`                     pi_{t+1} ~ pi_t exp(eta (P(y > pi_t) - 1/2)): multiplicative
  weights (the average converges to a Nash equilibrium, the last iterate does not).
* :func:`inpo`                     the exact minimiser of INPO's pairwise square loss each
  iteration; it is pi_t^(1 - eta tau) mu^(eta tau) exp(eta P(y > pi_t)) (fixed point pi*_tau).
* :func:`dno`                      DNO's batched on-policy contrastive step solved exactly: soft
  policy iteration pi_t exp(P(y > pi_t)/eta) on the pairs the margin filter keeps.
* :func:`magnetic_mirror_descent`  pi_{t+1} ~ (pi_t mu^(eta tau) exp(eta P(y > pi_t)))^(1/(1 + eta tau)).
* :func:`mpo`                      MMD whose magnet is replaced by the current policy every
  ``magnet_every`` steps (Magnetic Preference Optimization): target the tau = 0 Nash.
* :func:`nash_mirror_prox`         extrapolate with one MMD step, then update from pi_t with the
  payoff at the extrapolated point.
"""

from __future__ import annotations

import numpy as np

from nlhf.lab.dynamics import StepSchedule, _game_matrix, _lse, _start
from nlhf.lab.simplex import check_distribution, check_tau


def sppo(game, pi0, steps: int, eta: StepSchedule) -> np.ndarray:
    """Exact SPPO (Wu et al. 2024, Sec. 3; THEORY Sec. 8.1). Returns (T+1, n).

    SPPO regresses log(pi / pi_t)(y) onto eta (P(y > pi_t) - 1/2) with a square loss,
    approximating the log-partition by eta/2. The policy that loss targets, normalised, is

        pi_{t+1}(y) proportional to pi_t(y) exp(eta (P(y > pi_t) - 1/2)),

    multiplicative weights (Hedge) on the win rate against the current policy: the same
    update as :func:`nlhf.lab.dynamics.multiplicative_weights`. No reference, no tau. Its
    running average converges to a Nash equilibrium (SPPO Theorem 4.1, with a step
    eta ~ 1/sqrt(T)); its last iterate cycles around it (on rock-paper-scissors it spirals
    outwards). Take ``running_average(sppo(...))`` for the average.
    """
    pi0 = check_distribution(pi0, "pi0", None, positive=True)
    A, etas, _, log_pi, out = _start(game, pi0, 0.0, steps, eta, pi0)
    for t in range(steps):
        win_rate = 0.5 + A @ out[t]  # P(y > pi_t), (n,)
        logits = log_pi + etas[t] * (win_rate - 0.5)
        log_pi = logits - _lse(logits)
        out[t + 1] = np.exp(log_pi)
    return out


def inpo_loss_minimizer(game, pi_t, mu, tau: float, eta: float) -> np.ndarray:
    """The exact minimiser over tabular policies of INPO's per-iteration loss (THEORY Sec. 8.2).

    INPO (Zhang et al., ICLR 2025) draws y, y' from pi_t, lets the judge pick (y_w, y_l) and
    minimises E[(h_t(y_w, y_l) - eta/2)^2] with
        h_t(y, y') = log(pi(y)/pi(y')) - eta tau log(mu(y)/mu(y')) - (1 - eta tau) log(pi_t(y)/pi_t(y')).
    Averaged over the label, a pair contributes (h_t(y, y') - eta (P(y > y') - 1/2))^2 up to
    a constant. With g = log pi - eta tau log mu - (1 - eta tau) log pi_t this is the
    weighted least-squares problem
        min_g  sum_{y, y'} pi_t(y) pi_t(y') (g(y) - g(y') - eta A(y, y'))^2,
    solved here through its normal equations (a weighted graph Laplacian L g = b, with
    mean(g) = 0), not through the closed form, so that a test can compare the two.
    """
    A = _game_matrix(game)
    n = A.shape[0]
    pi_t = check_distribution(pi_t, "pi_t", n, positive=True)
    mu = check_distribution(mu, "mu", n, positive=True)
    return _inpo_solve(A, pi_t, np.log(mu), check_tau(tau), float(eta))


def _inpo_solve(A: np.ndarray, pi_t: np.ndarray, log_mu: np.ndarray, tau: float, eta: float) -> np.ndarray:
    """:func:`inpo_loss_minimizer` on checked inputs (A = P - 1/2, (n, n))."""
    n = A.shape[0]
    W = np.outer(pi_t, pi_t)  # pair weights, (n, n)
    laplacian = np.diag(W.sum(axis=1)) - W
    b = (W * (eta * A)).sum(axis=1)  # sum_y' w(y, y') c(y, y'), (n,)
    system = np.vstack([laplacian, np.ones((1, n))])  # append mean(g) = 0
    g, *_ = np.linalg.lstsq(system, np.r_[b, 0.0], rcond=None)
    logits = g + eta * tau * log_mu + (1.0 - eta * tau) * np.log(pi_t)
    return np.exp(logits - _lse(logits))


def inpo(game, mu, tau: float, steps: int, eta: StepSchedule, pi0=None) -> np.ndarray:
    """Exact INPO: each iteration the exact minimiser of its pairwise loss (THEORY Sec. 8.2).

    pi_{t+1} = :func:`inpo_loss_minimizer` (pi_t), which equals the online-mirror-descent step
        pi_{t+1}(y) proportional to pi_t(y)^(1 - eta tau) mu(y)^(eta tau) exp(eta P(y > pi_t))
    on the regularised game (needs eta tau <= 1): the update of
    :func:`nlhf.lab.dynamics.mirror_descent`. Fixed point pi*_tau; the last iterate
    converges to it geometrically when eta is small enough (rate measured in the lab).
    """
    tau = check_tau(tau)
    A, etas, log_mu, _, out = _start(game, mu, tau, steps, eta, pi0)
    for t in range(steps):
        out[t + 1] = _inpo_solve(A, out[t], log_mu, tau, float(etas[t]))
    return out


def _margin_pairs_support(win_rate: np.ndarray, margin: float) -> np.ndarray:
    """Responses that appear in at least one pair whose win-rate gap is >= ``margin``.

    The kept pairs are {y, y'} with |r(y) - r(y')| >= margin. When max r - min r >= margin
    the argmax and argmin form a kept pair, every other response kept in some pair is
    joined to one of them, so the kept responses form ONE connected component; the others
    are isolated. Returns a boolean mask (n,).
    """
    spread = win_rate.max() - win_rate.min()
    if spread < margin or spread == 0.0:
        return np.zeros(win_rate.shape, dtype=bool)
    return (win_rate.max() - win_rate >= margin) | (win_rate - win_rate.min() >= margin)


def dno(game, pi0, steps: int, eta: float, margin: float = 0.0) -> np.ndarray:
    """Exact DNO (Rosset et al. 2024, Algorithm 1 with a margin filter; THEORY Sec. 8.3).

    Iteration t: r_t(y) = P(y > pi_t); pairs y, y' ~ pi_t kept when |r_t(y) - r_t(y')| >=
    ``margin``; the contrastive (binary cross-entropy) objective
        max_pi  E[ sigma(r_t(y) - r_t(y')) log sigma(eta log(pi(y)/pi_t(y)) - eta log(pi(y')/pi_t(y'))) ]
    over the kept pairs. Over tabular policies its maximisers satisfy every kept pair
    exactly, eta (log pi/pi_t)(y) - eta (log pi/pi_t)(y') = r_t(y) - r_t(y'). The kept pairs
    join their responses into one component (:func:`_margin_pairs_support`); on it the
    update is the soft policy iteration pi_{t+1} proportional to pi_t exp(r_t / eta), and
    responses in no kept pair keep their logit (the maximiser gradient ascent from pi_t
    reaches: its steps never change a component's total logit). ``margin = 0`` keeps every
    pair: multiplicative weights with step 1/eta, i.e. ``sppo(game, pi0, steps, 1/eta)``.
    Each iterate beats the previous one, P(pi_{t+1} > pi_t) >= 1/2 (DNO's monotonic
    improvement), yet the last iterate does not converge; the average tends to Nash.
    """
    pi0 = check_distribution(pi0, "pi0", None, positive=True)
    if not eta > 0 or not margin >= 0:
        raise ValueError(f"need eta > 0 and margin >= 0, got eta={eta!r}, margin={margin!r}")
    A, _, _, log_pi, out = _start(game, pi0, 0.0, steps, 1.0, pi0)
    for t in range(steps):
        win_rate = 0.5 + A @ out[t]  # r_t, (n,)
        kept = _margin_pairs_support(win_rate, margin)
        if kept.any():
            step = win_rate[kept] / eta
            log_pi = log_pi.copy()
            log_pi[kept] += step - step.mean()
            log_pi -= _lse(log_pi)
        out[t + 1] = np.exp(log_pi)
    return out


def _mmd_logits(log_pi: np.ndarray, log_magnet: np.ndarray, payoff: np.ndarray, eta: float, tau: float):
    """One magnetic-mirror-descent proximal step, normalised log-probabilities (n,).

    argmax_pi eta <pi, payoff> - eta tau KL(pi, magnet) - KL(pi, pi_t) has the closed form
    pi proportional to (pi_t magnet^(eta tau) exp(eta payoff))^(1/(1 + eta tau)).
    """
    logits = (log_pi + eta * tau * log_magnet + eta * payoff) / (1.0 + eta * tau)
    return logits - _lse(logits)


def magnetic_mirror_descent(game, mu, tau: float, steps: int, eta: StepSchedule, pi0=None) -> np.ndarray:
    """Magnetic mirror descent with the fixed magnet mu (Sokota et al. 2023; THEORY Sec. 8.4).

        pi_{t+1}(y) proportional to (pi_t(y) mu(y)^(eta tau) exp(eta P(y > pi_t)))^(1/(1 + eta tau))
    = argmax_pi eta P(pi > pi_t) - eta tau KL(pi, mu) - KL(pi, pi_t). Any eta > 0 is a valid
    step (eta tau > 1 allowed). With step eta it is INPO's / mirror descent's update with
    step eta / (1 + eta tau) (same exponents), so its fixed point is pi*_tau.
    """
    tau = check_tau(tau)
    A, etas, log_mu, log_pi, out = _start(game, mu, tau, steps, eta, pi0, require_eta_tau_le_1=False)
    for t in range(steps):
        log_pi = _mmd_logits(log_pi, log_mu, A @ out[t], etas[t], tau)
        out[t + 1] = np.exp(log_pi)
    return out


def mpo(game, mu, tau: float, steps: int, eta: StepSchedule, magnet_every: int, pi0=None) -> np.ndarray:
    """Magnetic Preference Optimization, tabular (Wang et al. 2024; THEORY Sec. 8.4).

    Magnetic mirror descent (:func:`magnetic_mirror_descent`) whose magnet starts at mu and
    is replaced by the current policy every ``magnet_every`` steps: stage k approaches the
    regularised equilibrium with reference magnet_k, and the sequence of those is a
    proximal-point iteration on the unregularised game, so the last iterate tends to a
    tau = 0 Nash equilibrium (not pi*_tau). ``magnet_every = 1`` collapses to
    multiplicative weights with step eta / (1 + eta tau) (and cycles).
    """
    tau = check_tau(tau)
    if magnet_every < 1:
        raise ValueError(f"magnet_every must be >= 1, got {magnet_every!r}")
    A, etas, log_magnet, log_pi, out = _start(game, mu, tau, steps, eta, pi0, require_eta_tau_le_1=False)
    for t in range(steps):
        log_pi = _mmd_logits(log_pi, log_magnet, A @ out[t], etas[t], tau)
        out[t + 1] = np.exp(log_pi)
        if (t + 1) % magnet_every == 0:
            log_magnet = log_pi.copy()
    return out


def nash_mirror_prox(game, mu, tau: float, steps: int, eta: StepSchedule, pi0=None) -> np.ndarray:
    """Nash mirror prox / extragradient on the regularised game (THEORY Sec. 8.5). (T+1, n).

    Each iteration (two preference evaluations):
        pi_{t+1/2} = MMD step from pi_t with the payoff P(. > pi_t)        (extrapolation)
        pi_{t+1}   = MMD step from pi_t with the payoff P(. > pi_{t+1/2})  (update)
    where an MMD step from pi_t with payoff g is proportional to
    (pi_t mu^(eta tau) exp(eta g))^(1/(1 + eta tau)). Fixed point pi*_tau; the last
    iterate converges geometrically (Nash-MP: KL to pi*_tau falls like (1 + eta tau)^(-t)
    for eta small enough for the game's Lipschitz constant). tau = 0 is allowed: the
    unregularised extragradient (optimistic) Hedge.
    """
    tau = check_tau(tau, allow_zero=True)
    A, etas, log_mu, log_pi, out = _start(game, mu, tau, steps, eta, pi0, require_eta_tau_le_1=False)
    for t in range(steps):
        log_half = _mmd_logits(log_pi, log_mu, A @ out[t], etas[t], tau)
        log_pi = _mmd_logits(log_pi, log_mu, A @ np.exp(log_half), etas[t], tau)
        out[t + 1] = np.exp(log_pi)
    return out
