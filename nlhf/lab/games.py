"""Preference games: the matrix P[i, j] = P(y_i > y_j) over a finite set of responses.

THEORY.md Sec. 1 (pairwise preference model) and Sec. 2 (the preference game). A game is
a square matrix with entries in [0, 1], P + P^T = 1 and diagonal 1/2; the skew-symmetric
part A = P - 1/2 is what every solver works with (P(pi > pi) = 1/2 for every pi).

Constructors for the games the papers use:

* :func:`rock_paper_scissors` -- the smallest cycle; its Nash equilibrium is uniform.
* :func:`random_game`         -- seeded random games (uniform entries or {0, 1} tournaments).
* :func:`rater_population`    -- NLHF Sec. 3.2 / THEORY Sec. 7: raters with transitive
  rankings whose population preference is a Condorcet cycle.
* :func:`nontransitive_dice`  -- NLHF App. C: each die beats the next with probability 5/9,
  derived from the dice faces.
* :func:`bradley_terry`       -- P = sigmoid(r_i - r_j), the only games a reward model fits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Tolerance of the validation: P + P^T = 1 and the diagonal must hold to this (absolute).
VALIDATION_ATOL = 1e-9


class PreferenceGame:
    """A symmetric two-player zero-sum game given by a preference matrix (THEORY Sec. 2).

    ``P[i, j] = P(y_i > y_j)``. The matrix is validated (square, finite, entries in [0, 1],
    ``P[i, j] + P[j, i] = 1`` and ``P[i, i] = 1/2`` up to ``VALIDATION_ATOL``) and a
    ``ValueError`` names the first wrong entry. After validation the lower triangle is
    rebuilt as ``1 - P^T`` so that ``A = P - 1/2`` is exactly skew-symmetric.

    ``names`` (optional) labels the responses in printed tables and plots.
    """

    def __init__(self, P, names: Sequence[str] | None = None):
        P = np.array(P, dtype=np.float64)  # copy: the game owns its matrix
        _validate_preference_matrix(P)
        n = P.shape[0]
        upper = np.triu(P, 1)
        self.P = upper + np.tril(1.0 - upper.T, -1) + 0.5 * np.eye(n)  # (n, n)
        self.P.setflags(write=False)
        if names is None:
            names = tuple(f"y{i}" for i in range(n))
        names = tuple(str(s) for s in names)
        if len(names) != n:
            raise ValueError(f"names: got {len(names)} names for a game with {n} responses")
        self.names = names

    @property
    def n(self) -> int:
        """Number of responses (actions)."""
        return self.P.shape[0]

    @property
    def A(self) -> np.ndarray:
        """The skew-symmetric payoff A = P - 1/2, shape (n, n)."""
        return self.P - 0.5

    def preference(self, pi, pi_opponent) -> float:
        """P(pi > pi') = sum_ij pi_i P_ij pi'_j (THEORY Sec. 2)."""
        return float(np.asarray(pi) @ self.P @ np.asarray(pi_opponent))

    def preference_against(self, pi) -> np.ndarray:
        """The vector P(y > pi) = P @ pi over responses y, shape (n,)."""
        return self.P @ np.asarray(pi, dtype=np.float64)

    def __repr__(self) -> str:
        return f"PreferenceGame(n={self.n}, names={self.names[:5]}{'...' if self.n > 5 else ''})"


def _validate_preference_matrix(P: np.ndarray) -> None:
    """Raise ``ValueError`` naming the first entry of P that breaks a game's rules."""
    if P.ndim != 2 or P.shape[0] != P.shape[1]:
        raise ValueError(f"preference matrix must be square (n, n), got shape {P.shape}")
    if P.shape[0] < 1:
        raise ValueError("preference matrix is empty")
    bad = np.argwhere(~np.isfinite(P))
    if len(bad):
        i, j = bad[0]
        raise ValueError(f"P[{i}, {j}] = {float(P[i, j])} is not a finite number")
    bad = np.argwhere((P < 0.0) | (P > 1.0))
    if len(bad):
        i, j = bad[0]
        raise ValueError(f"P[{i}, {j}] = {float(P[i, j])!r} is not a probability (must be in [0, 1])")
    diag_err = np.abs(np.diag(P) - 0.5)
    if diag_err.max() > VALIDATION_ATOL:
        i = int(np.argmax(diag_err))
        raise ValueError(
            f"P[{i}, {i}] = {float(P[i, i])!r} but a response ties with itself: P[i, i] must be 1/2"
        )
    sym_err = np.abs(P + P.T - 1.0)
    if sym_err.max() > VALIDATION_ATOL:
        i, j = np.unravel_index(int(np.argmax(np.triu(sym_err, 1))), P.shape)
        raise ValueError(
            f"P[{i}, {j}] = {float(P[i, j])!r} and P[{j}, {i}] = {float(P[j, i])!r} sum to "
            f"{float(P[i, j] + P[j, i]):.12g}; "
            "P(y > y') + P(y' > y) must be 1"
        )


def rock_paper_scissors() -> PreferenceGame:
    """Rock-paper-scissors: paper beats rock, scissors beat paper, rock beats scissors.

    Order (rock, paper, scissors). Its unique Nash equilibrium is uniform.
    """
    P = np.array(
        [
            [0.5, 0.0, 1.0],  # rock     vs (rock, paper, scissors)
            [1.0, 0.5, 0.0],  # paper
            [0.0, 1.0, 0.5],  # scissors
        ]
    )
    return PreferenceGame(P, names=("rock", "paper", "scissors"))


def random_game(n: int, seed: int = 0, kind: str = "uniform") -> PreferenceGame:
    """A seeded random game over ``n`` responses.

    ``kind="uniform"``: the upper-triangle entries P[i, j] (i < j) are i.i.d. U(0, 1).
    ``kind="tournament"``: they are i.i.d. fair coin flips in {0, 1} (a random tournament:
    every pair has a sure winner). The lower triangle is 1 - P^T, the diagonal 1/2.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        U = rng.random((n, n))
    elif kind == "tournament":
        U = (rng.random((n, n)) < 0.5).astype(np.float64)
    else:
        raise ValueError(f"kind must be 'uniform' or 'tournament', got {kind!r}")
    upper = np.triu(U, 1)
    P = upper + np.tril(1.0 - upper.T, -1) + 0.5 * np.eye(n)
    return PreferenceGame(P, names=tuple(f"y{i}" for i in range(n)))


def rater_population(
    rankings: Sequence[Sequence[int]],
    weights: Sequence[float] | None = None,
    names: Sequence[str] | None = None,
) -> PreferenceGame:
    """The population preference of raters with transitive rankings (NLHF Sec. 3.2, THEORY Sec. 7).

    ``rankings[k]`` lists the responses from best to worst for rater type ``k`` (a
    permutation of ``0..n-1``); ``weights[k] >= 0`` is that type's share of the population
    (normalised here; uniform by default). Then

        P(y > y') = sum_k w_k [rater k ranks y above y'],     P(y > y) = 1/2.

    Three equal raters with rankings (0,1,2), (1,2,0), (2,0,1) give the Condorcet cycle
    P(0 > 1) = P(1 > 2) = P(2 > 0) = 2/3.
    """
    rankings = [list(r) for r in rankings]
    if not rankings:
        raise ValueError("rankings: need at least one rater")
    n = len(rankings[0])
    for k, r in enumerate(rankings):
        if sorted(r) != list(range(n)):
            raise ValueError(f"rankings[{k}] = {r} is not a permutation of 0..{n - 1}")
    if weights is None:
        w = np.full(len(rankings), 1.0 / len(rankings))
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (len(rankings),):
            raise ValueError(f"weights: expected {len(rankings)} weights, got shape {w.shape}")
        bad = np.argwhere(~(w >= 0) | ~np.isfinite(w))
        if len(bad):
            raise ValueError(f"weights[{bad[0][0]}] = {float(w[bad[0][0]])} must be a finite number >= 0")
        if w.sum() <= 0:
            raise ValueError("weights: must not all be zero")
        w = w / w.sum()
    P = np.zeros((n, n))
    for r, wk in zip(rankings, w):
        position = np.empty(n, dtype=np.int64)
        position[r] = np.arange(n)  # position[y] = rank of y for this rater (0 = best)
        P += wk * (position[:, None] < position[None, :])
    np.clip(P, 0.0, 1.0, out=P)  # normalised weights can sum to 1 + 1e-16
    P[np.diag_indices(n)] = 0.5
    return PreferenceGame(P, names=names)


# NLHF App. C: three dice, each beating the next with probability 5/9.
DICE_FACES: tuple[tuple[int, ...], ...] = (
    (2, 2, 4, 4, 9, 9),
    (1, 1, 6, 6, 8, 8),
    (3, 3, 5, 5, 7, 7),
)


def nontransitive_dice(faces: Sequence[Sequence[float]] = DICE_FACES) -> PreferenceGame:
    """The game "my die rolls higher than yours" between fair dice (NLHF App. C).

    P[i, j] = P(roll_i > roll_j) + 1/2 P(roll_i = roll_j), computed from the faces by
    counting all face pairs (ties are split, so the diagonal is exactly 1/2). With the
    default dice (2,2,4,4,9,9), (1,1,6,6,8,8), (3,3,5,5,7,7) each die beats the next with
    probability 5/9 and the last beats the first: a cycle, whose equilibrium is uniform.
    """
    dice = [np.asarray(f, dtype=np.float64) for f in faces]
    n = len(dice)
    P = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            a, b = dice[i][:, None], dice[j][None, :]
            wins = np.sum(a > b) + 0.5 * np.sum(a == b)  # counted over all face pairs
            P[i, j] = wins / (dice[i].size * dice[j].size)
    return PreferenceGame(P, names=tuple(f"die{i}" for i in range(n)))


def bradley_terry(scores: Sequence[float], names: Sequence[str] | None = None) -> PreferenceGame:
    """The Bradley-Terry game P(y_i > y_j) = sigmoid(r_i - r_j) (THEORY Sec. 1).

    A transitive game: its Nash equilibrium (tau = 0) is the best response (a pure argmax
    of the scores when that is unique).
    """
    from scipy.special import expit

    r = np.asarray(scores, dtype=np.float64)
    if r.ndim != 1 or not np.all(np.isfinite(r)):
        raise ValueError(f"scores must be a finite 1-D sequence, got {scores!r}")
    return PreferenceGame(expit(r[:, None] - r[None, :]), names=names)
