"""Distributions on a finite set: checks, softmax, KL and the geometric mixture.

The primitives every lab module shares (THEORY Sec. 2-3). Policies are float64 vectors of
shape (n,) that are >= 0 and sum to 1; in the dynamics they are carried as
log-probabilities so that nothing underflows to an exact zero.
"""

from __future__ import annotations

import numpy as np

# How far from 1 a distribution's sum may be before it is rejected.
SUM_ATOL = 1e-9


def check_distribution(x, name: str, n: int | None = None, positive: bool = False) -> np.ndarray:
    """Return ``x`` as a float64 vector after checking it is a probability distribution.

    Raises ``ValueError`` naming ``name`` and the offending entry: wrong shape, a non-finite
    or negative entry (or a zero one when ``positive``), or a sum that is not 1.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or (n is not None and x.shape[0] != n):
        want = f"({n},)" if n is not None else "(n,)"
        raise ValueError(f"{name}: expected a probability vector of shape {want}, got shape {x.shape}")
    bad = np.argwhere(~np.isfinite(x) | (x < 0) | ((x <= 0) if positive else False))
    if len(bad):
        i = int(bad[0][0])
        need = "> 0 (the reference must give every response positive probability)" if positive else ">= 0"
        raise ValueError(f"{name}[{i}] = {float(x[i])!r} must be {need}")
    total = x.sum()
    if abs(total - 1.0) > SUM_ATOL:
        raise ValueError(f"{name}: entries sum to {float(total):.12g}, not 1")
    return x


def check_tau(tau: float, allow_zero: bool = False) -> float:
    """Return ``tau`` as a float after checking it is finite and > 0 (or >= 0)."""
    tau = float(tau)
    if not np.isfinite(tau) or tau < 0 or (tau == 0 and not allow_zero):
        raise ValueError(f"tau must be {'>= 0' if allow_zero else '> 0'}, got {tau!r}")
    return tau


def check_beta(beta: float) -> float:
    """Return the mixture coefficient ``beta`` after checking it lies in [0, 1]."""
    beta = float(beta)
    if not (0.0 <= beta <= 1.0):
        raise ValueError(f"beta (mixture_coef) must be in [0, 1], got {beta!r}")
    return beta


def log_softmax(z: np.ndarray) -> np.ndarray:
    """log softmax over the last axis, stable for any finite logits."""
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def softmax(z: np.ndarray) -> np.ndarray:
    """softmax over the last axis, stable for any finite logits."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def kl(p, q) -> float:
    """KL(p, q) = sum_y p(y) log(p(y)/q(y)), with 0 log 0 = 0 (THEORY Sec. 2).

    Summed as sum p log(p/q) - p + q, whose terms are each >= 0, so the result is never
    negative from rounding. It is ``inf`` when q(y) = 0 < p(y).
    """
    from scipy.special import kl_div

    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    return float(np.sum(kl_div(p, q)))


def geometric_mixture(pi, mu, beta: float) -> np.ndarray:
    """The normalised geometric mixture pi^(1-beta) mu^beta (NLHF Eq. 3; THEORY Sec. 3-4).

    beta = 0 gives pi, beta = 1 gives mu. Computed in log space.
    """
    beta = check_beta(beta)
    with np.errstate(divide="ignore"):
        log_pi = np.log(np.asarray(pi, dtype=np.float64))
        log_mu = np.log(np.asarray(mu, dtype=np.float64))
    if beta == 0.0:
        return softmax(log_pi)
    if beta == 1.0:
        return softmax(log_mu)
    return softmax((1.0 - beta) * log_pi + beta * log_mu)
