"""Exact (expected-update) dynamics on preference games: Nash-MD, mirror descent, MWU, EMA.

THEORY.md Sec. 3 and Sec. 4. Every function returns the whole trajectory, an array of
shape (T+1, n): row 0 is pi_0, row t is pi_t. Policies are carried as log-probabilities
between steps, so no probability underflows to an exact zero.

* :func:`nash_md`                 NLHF Eq. 3-5, eta_t = 2/(tau (t+2)) by default.
* :func:`fixed_mixture_dynamics`  pi_{t+1} ~ pi_t^(1-eta tau) mu^(eta tau) exp(eta P(y > pi_t^beta));
  beta = 0 is self-play (regularised mirror descent against pi_t), beta = 1 best response to mu.
* :func:`mirror_descent`          the beta = 0 member; with tau = 0 it is
* :func:`multiplicative_weights`  pi_{t+1} ~ pi_t exp(eta P(y > pi_t)), which cycles.
* :func:`ema_opponent_dynamics`   the opponent is the softmax of an EMA of past logits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from nlhf.lab.simplex import check_beta, check_distribution, check_tau

StepSchedule = float | Sequence[float] | np.ndarray | Callable[[int], float] | None


def nash_md_step_size(t: int, tau: float) -> float:
    """The step of NLHF Theorem 1: eta_t = 2 / (tau (t + 2)); eta_0 tau = 1."""
    return 2.0 / (tau * (t + 2))


def theorem1_bound(tau: float, T: int) -> float:
    """NLHF Theorem 1: KL(pi*_tau, pi_T) <= 8 / (tau^2 (T + 1)) for T >= 1 (a loose bound)."""
    if T < 1:
        raise ValueError(f"Theorem 1 holds for T >= 1, got T={T}")
    return 8.0 / (tau**2 * (T + 1))


def step_sizes(eta: StepSchedule, tau: float, steps: int, require_eta_tau_le_1: bool = True) -> np.ndarray:
    """Resolve a step schedule into an array (steps,) of eta_0 .. eta_{T-1}.

    ``eta`` is None (Nash-MD's 2/(tau (t+2))), a constant, a sequence of length ``steps``,
    or a function t -> eta_t. Every eta_t must be > 0 and, for tau > 0, eta_t tau <= 1
    (NLHF Sec. 4: the geometric mixture needs a weight 1 - eta tau >= 0 on pi_t).
    """
    if eta is None:
        if tau <= 0:
            raise ValueError("the default Nash-MD schedule 2/(tau (t+2)) needs tau > 0; pass eta")
        etas = 2.0 / (tau * (np.arange(steps) + 2.0))
    elif callable(eta):
        etas = np.array([float(eta(t)) for t in range(steps)])
    elif np.ndim(eta) == 0:
        etas = np.full(steps, float(eta))
    else:
        etas = np.asarray(eta, dtype=np.float64)
        if etas.shape != (steps,):
            raise ValueError(f"eta: a schedule needs {steps} step sizes, got shape {etas.shape}")
    bad = np.flatnonzero(~np.isfinite(etas) | (etas <= 0))
    if bad.size:
        raise ValueError(f"eta_{bad[0]} = {float(etas[bad[0]])!r} must be a finite number > 0")
    if require_eta_tau_le_1 and tau > 0:
        bad = np.flatnonzero(etas * tau > 1.0 + 1e-12)
        if bad.size:
            raise ValueError(
                f"eta_{bad[0]} * tau = {float(etas[bad[0]] * tau):.12g} > 1: the mixture weight 1 - eta tau "
                "on pi_t would be negative (NLHF needs eta <= 1/tau)"
            )
    return etas


def _lse(x: np.ndarray) -> float:
    """log sum exp of a vector (inline: scipy's version costs more than a step here)."""
    mx = x.max()
    return mx + np.log(np.exp(x - mx).sum())


def _initial_log_policy(pi0, mu: np.ndarray, n: int) -> np.ndarray:
    if pi0 is None:
        return np.log(mu)
    pi0 = check_distribution(pi0, "pi0", n, positive=True)
    return np.log(pi0)


def _game_matrix(game) -> np.ndarray:
    from nlhf.lab.solvers import as_game

    return as_game(game).A  # P - 1/2: the 1/2 cancels in every normaliser below


def _start(
    game, mu, tau: float, steps: int, eta: StepSchedule, pi0, require_eta_tau_le_1: bool = True
) -> tuple[np.ndarray, ...]:
    """What every trajectory starts from: ``(A, etas, log_mu, log_pi_0, out)``, checked in this order.

    A = P - 1/2 (n, n); etas (T,) from :func:`step_sizes` (``require_eta_tau_le_1`` passed
    on: proximal steps such as magnetic mirror descent allow eta tau > 1); log mu (n,);
    log pi_0 (n,) (mu unless ``pi0``); ``out`` (T+1, n) the trajectory to fill, row 0 already pi_0.
    """
    A = _game_matrix(game)  # (n, n)
    n = A.shape[0]
    mu = check_distribution(mu, "mu", n, positive=True)
    etas = step_sizes(eta, tau, steps, require_eta_tau_le_1)
    log_mu = np.log(mu)
    log_pi = _initial_log_policy(pi0, mu, n)
    out = np.empty((steps + 1, n))
    out[0] = np.exp(log_pi)
    return A, etas, log_mu, log_pi, out


def nash_md(game, mu, tau: float, steps: int, eta: StepSchedule = None, pi0=None) -> np.ndarray:
    """Exact tabular Nash-MD (NLHF Eq. 3-5; THEORY Sec. 3). Returns (T+1, n): pi_0 .. pi_T.

    Each step, with eta = eta_t:
        pi_t^mu(y)    proportional to pi_t(y)^(1 - eta tau) mu(y)^(eta tau)      (Eq. 3)
        pi_{t+1}(y)   proportional to pi_t^mu(y) exp(eta P(y > pi_t^mu))          (Eq. 4/5)
    pi_0 = mu unless ``pi0`` is given. Default schedule eta_t = 2/(tau (t+2)) (Theorem 1:
    KL(pi*_tau, pi_T) <= 8/(tau^2 (T+1))); eta_0 tau = 1 makes pi_1 = BR_tau(mu). With a
    constant eta it converges to ``pg_stationary_point(game, mu, tau, beta=eta*tau)``.
    """
    tau = check_tau(tau)
    A, etas, log_mu, log_pi, out = _start(
        game, mu, tau, steps, eta, pi0
    )  # (n, n), (T,), (n,), (n,), (T+1, n)
    for t in range(steps):
        e = etas[t]
        beta_t = e * tau
        log_mix = (1.0 - beta_t) * log_pi + beta_t * log_mu  # Eq. 3, unnormalised
        log_mix -= _lse(log_mix)
        mix = np.exp(log_mix)  # pi_t^mu, (n,)
        logits = log_mix + e * (A @ mix)  # Eq. 4/5
        log_pi = logits - _lse(logits)
        out[t + 1] = np.exp(log_pi)
    return out


def fixed_mixture_dynamics(
    game, mu, tau: float, beta: float, steps: int, eta: StepSchedule, pi0=None
) -> np.ndarray:
    """pi_{t+1} proportional to pi_t^(1 - eta tau) mu^(eta tau) exp(eta P(y > pi_t^beta)).

    THEORY Sec. 4, the expected tabular update of Nash-MD-PG with a fixed mixture
    coefficient beta (opponent pi_t^beta proportional to pi_t^(1-beta) mu^beta). beta = 0
    is self-play (mirror descent against pi_t), beta = 1 plays the best response to mu.
    Its fixed point is ``pg_stationary_point(game, mu, tau, beta)`` whatever eta is; with
    beta = eta tau it is exactly Nash-MD. Returns (T+1, n). tau = 0 is allowed (no
    regularisation: multiplicative weights against pi_t^beta).
    """
    tau = check_tau(tau, allow_zero=True)
    beta = check_beta(beta)
    A, etas, log_mu, log_pi, out = _start(game, mu, tau, steps, eta, pi0)
    for t in range(steps):
        e = etas[t]
        if beta == 0.0:
            opponent = out[t]
        else:
            log_opp = (1.0 - beta) * log_pi + beta * log_mu
            opponent = np.exp(log_opp - _lse(log_opp))  # pi_t^beta, (n,)
        logits = (1.0 - e * tau) * log_pi + e * tau * log_mu + e * (A @ opponent)
        log_pi = logits - _lse(logits)
        out[t + 1] = np.exp(log_pi)
    return out


def mirror_descent(game, mu, tau: float, steps: int, eta: StepSchedule, pi0=None) -> np.ndarray:
    """Regularised online mirror descent against the current policy (THEORY Sec. 3).

    pi_{t+1} proportional to pi_t^(1 - eta tau) mu^(eta tau) exp(eta P(y > pi_t)): the
    beta = 0 member of :func:`fixed_mixture_dynamics` (self-play with the KL term; a
    magnetic-mirror-descent-like step). With tau = 0 it is multiplicative weights.
    """
    return fixed_mixture_dynamics(game, mu, tau, 0.0, steps, eta, pi0=pi0)


def multiplicative_weights(game, pi0, steps: int, eta: float) -> np.ndarray:
    """Unregularised multiplicative weights pi_{t+1} proportional to pi_t exp(eta P(y > pi_t)).

    THEORY Sec. 3: it cycles around the tau = 0 equilibrium (on rock-paper-scissors it
    spirals slowly outwards); only its running average converges. Returns (T+1, n).
    """
    pi0 = check_distribution(pi0, "pi0", None, positive=True)
    return fixed_mixture_dynamics(game, pi0, 0.0, 0.0, steps, eta, pi0=pi0)


def ema_opponent_dynamics(
    game, mu, tau: float, steps: int, eta: StepSchedule, ema_decay: float = 0.9, pi0=None
) -> np.ndarray:
    """The tabular Nash-EMA update (THEORY Sec. 4): the opponent averages past parameters.

    With logits theta_t = log pi_t and their EMA bar_theta_{t+1} = d bar_theta_t + (1-d) theta_{t+1}
    (bar_theta_0 = theta_0, d = ``ema_decay``), the opponent is softmax(bar_theta_t) and
        pi_{t+1} proportional to pi_t^(1 - eta tau) mu^(eta tau) exp(eta P(y > softmax(bar_theta_t))).
    A fixed point has opponent = pi, so it is pi*_tau. Returns (T+1, n).
    """
    tau = check_tau(tau, allow_zero=True)
    if not (0.0 <= ema_decay < 1.0):
        raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay!r}")
    A, etas, log_mu, log_pi, out = _start(game, mu, tau, steps, eta, pi0)
    log_bar = log_pi.copy()
    for t in range(steps):
        e = etas[t]
        opponent = np.exp(log_bar - _lse(log_bar))
        logits = (1.0 - e * tau) * log_pi + e * tau * log_mu + e * (A @ opponent)
        log_pi = logits - _lse(logits)
        log_bar = ema_decay * log_bar + (1.0 - ema_decay) * log_pi
        out[t + 1] = np.exp(log_pi)
    return out


def running_average(trajectory: np.ndarray) -> np.ndarray:
    """Row t: the average (pi_0 + ... + pi_t)/(t+1) of a (T+1, n) trajectory."""
    trajectory = np.asarray(trajectory, dtype=np.float64)
    return np.cumsum(trajectory, axis=0) / np.arange(1, trajectory.shape[0] + 1)[:, None]


def kl_from(target, trajectory: np.ndarray) -> np.ndarray:
    """KL(target, pi_t) for each row pi_t of a (T+1, n) trajectory: shape (T+1,)."""
    from scipy.special import kl_div

    target = np.asarray(target, dtype=np.float64)
    return np.sum(kl_div(target[None, :], np.asarray(trajectory, dtype=np.float64)), axis=1)
