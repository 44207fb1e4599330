"""Environments with a known truth: oracles P*(y > y' | x) that depend on response classes.

THEORY.md Sec. 1 (a preference is P(y > y') with P(y > y') + P(y' > y) = 1) and Sec. 7
(rater populations; NLHF Sec. 3.2). An oracle here classifies each response into one of
the classes of :mod:`nlhf.envs.features` and looks the pair up in a class-level
:class:`~nlhf.lab.PreferenceGame`:

    P*(y > y' | x) = game.P[class(x, y), class(x, y')]

so it is a :class:`~nlhf.judges.Judge` for trainers and evaluators, and every class-level
quantity (Nash equilibrium, pi*_tau, exploitability of a policy's class distribution, the
RLHF optimum) is computed exactly by :mod:`nlhf.lab`.

Two environments over the same classes:

* :class:`RaterPopulation` (the cyclic environment): rater types, each with a transitive
  ranking of the classes (ties allowed), mixed with weights;
  P*(y > y') = sum_k w_k ([k ranks y above y'] + 1/2 [k ties them]).
  The default population (:data:`DEFAULT_RATERS`) has a Condorcet cycle.
* :class:`BradleyTerryEnv` (the transitive control): P*(y > y') = sigmoid(r(y) - r(y')) for
  a score per class (:data:`DEFAULT_BT_SCORES`).

The default population, and why
-------------------------------
Classes (see :mod:`nlhf.envs.features`): ``structured`` (lines or a list), ``personal`` (a
short opening that talks to the user), ``direct`` (a short impersonal opening that names
the topic), ``unfocused`` (a long or off-topic opening). Rater types, best first:

==============  ======  =================================================================
rater           weight  ranking
==============  ======  =================================================================
``skimmer``     0.3     structured > direct > personal > unfocused
``expert``      0.3     direct > personal > structured > unfocused
``casual``      0.3     personal > structured > direct > unfocused
``noise``       0.1     all four tied (answers at random)
==============  ======  =================================================================

* The skimmer reads on a phone and wants something to scan; then a plain statement of the
  topic; small talk wastes their time. The expert wants the question answered in the first
  sentence; a short personal opening is tolerable, but a list or line-broken answer, cut
  at a few dozen tokens, fragments the point before it is made. The casual reader wants to
  be talked to; then something easy to read; a dry textbook opening is the worst of the
  focused answers. Everyone ranks an unfocused (rambling or off-topic) opening last.
* One rater in ten answers at random (``noise``, all classes tied): real raters disagree
  with themselves, and it keeps every P* in [0.05, 0.95], so that a Bradley-Terry model
  fitted on these labels has finite rewards.
* Resulting class game (rows beat columns)::

                  structured  personal  direct  unfocused
      structured     0.50       0.35     0.65     0.95
      personal       0.65       0.50     0.35     0.95
      direct         0.35       0.65     0.50     0.95
      unfocused      0.05       0.05     0.05     0.50

  Majority: structured > direct > personal > structured, a Condorcet cycle with margin
  0.65 (the largest a population of transitive raters allows is 2/3); unfocused loses to
  all. No scalar reward reproduces it.
* The Nash equilibrium (tau = 0) is (1/3, 1/3, 1/3, 0): unique, mixed, and the equal
  weights make it uniform on the cycle. Against it every cycle class wins exactly 1/2.
* What RLHF does: a Bradley-Terry reward fitted on the REFERENCE's samples ranks the cycle
  classes by how they fare against the reference's mix (NLHF Theorem 2: the fit depends
  on the data's policy). SmolLM2-135M-Instruct's mix at 48 new tokens
  (``benchmarks/env_coverage.py``, 400 samples) is mu = (structured 0.21, personal 0.14,
  direct 0.30, unfocused 0.36): more ``direct`` than ``personal``, so ``structured``
  (which beats ``direct``) gets the top fitted reward, r = (1.18, 0.97, 0.99, -1.90) up to
  a constant, and mu exp(r/tau) concentrates on it as tau shrinks: a pure strategy with
  exploitability P(personal > structured) - 1/2 = 0.15 (0.094 already at tau = 0.1),
  while pi*_tau stays mixed (exploitability 0.007 at tau = 0.02, 0.023 at tau = 0.1).
  Against mu the Nash equilibrium wins 0.66 (1/2 on the cycle, 0.95 on mu's unfocused
  mass).
* Where the difference lives: the reward gap between the cycle classes is small (about
  0.2 nats, against about 3 nats to ``unfocused``). Both methods first spend their KL
  budget on leaving ``unfocused`` (-log 0.64 = 0.45 nats at the class level); at the same
  KL as pi*_tau (about 0.49 nats) the RLHF optimum is still fairly mixed (exploitability
  0.03 against 0.007). RLHF collapses onto ``structured`` only when it moves further from
  mu, which it does at the same tau (KL 0.89 at tau = 0.1, against 0.43 for pi*_tau).

The control: one grader with scores ``direct`` 1.0, ``structured`` 0.5, ``personal`` 0.0,
``unfocused`` -1.5 (P*(direct > structured) = 0.62, P*(structured > unfocused) = 0.88).
Transitive, so its Nash equilibrium is pure ``direct``: both RLHF and Nash-MD head there,
and neither is exploitable in the limit. (THEORY Sec. 7: at the same tau, pi*_tau and
mu exp(r/tau) still differ.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from nlhf.envs.features import CLASSES, class_distribution, classify
from nlhf.judges import BaseJudge
from nlhf.lab.games import PreferenceGame, bradley_terry, rater_population
from nlhf.lab.solvers import exploitability

if TYPE_CHECKING:
    from nlhf.data.schema import Prompt

Classifier = Callable[[Sequence[Any], Sequence[str]], np.ndarray]


# ----------------------------------------------------------------------------------------
# The class-level oracle


class ClassPreferenceJudge(BaseJudge):
    """P*(y > y' | x) = ``game.P[class(x, y), class(x, y')]`` for a class-level game.

    ``classifier(prompts, responses) -> (B,) int`` maps responses to class indices (default
    :func:`nlhf.envs.features.classify`); ``game.names`` are the class names.
    """

    def __init__(self, game: PreferenceGame, *, classifier: Classifier = classify, name: str = "") -> None:
        self.game = game
        self.classifier = classifier
        self.name = name or f"{type(self).__name__}({game.n} classes)"

    @property
    def classes(self) -> tuple[str, ...]:
        return self.game.names

    @property
    def P(self) -> np.ndarray:
        """The class-level preference matrix, shape (n, n): P[i, j] = P*(class i > class j)."""
        return self.game.P

    def classify(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> np.ndarray:
        """Class index of each response, shape (B,) int64, checked to lie in 0..n-1."""
        labels = np.asarray(self.classifier(list(prompts), list(responses)), dtype=np.int64)
        if labels.shape != (len(responses),):
            raise ValueError(
                f"{self.name}: classifier returned shape {labels.shape} for {len(responses)} responses"
            )
        bad = np.flatnonzero((labels < 0) | (labels >= self.game.n))
        if bad.size:
            raise ValueError(f"{self.name}: classifier returned class {labels[bad[0]]} at row {bad[0]}")
        return labels

    def class_distribution(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> np.ndarray:
        """The empirical class distribution of a policy's responses, shape (n,)."""
        return class_distribution(self.classify(prompts, responses), self.game.n)

    def exploitability(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> float:
        """Exact class-level exploitability max_y P*(y > pi) - 1/2 of the responses' class mix (THEORY Sec. 2)."""
        return exploitability(self.game, self.class_distribution(prompts, responses))

    def _prob(self, prompts: Sequence[Prompt], first: Sequence[str], second: Sequence[str]) -> Any:
        import torch

        a = self.classify(prompts, first)  # (B,)
        b = self.classify(prompts, second)  # (B,)
        return torch.from_numpy(self.game.P[a, b]).float()  # (B,)


# ----------------------------------------------------------------------------------------
# Rater populations (THEORY Sec. 7)


@dataclass(frozen=True)
class RaterType:
    """One kind of rater: a transitive ranking of the classes, best first, and a population share.

    ``ranking`` is a sequence of tiers; a tier is a class name or a tuple of class names
    that this rater ties (P = 1/2 between them). Every class must appear exactly once.
    """

    name: str
    ranking: tuple[str | tuple[str, ...], ...]
    weight: float
    why: str = ""

    def tiers(self) -> tuple[tuple[str, ...], ...]:
        return tuple((t,) if isinstance(t, str) else tuple(t) for t in self.ranking)

    def preference_matrix(self, classes: Sequence[str]) -> np.ndarray:
        """This rater's P_k, shape (n, n): 1 where it ranks class i above j, 1/2 on ties, 0 below."""
        tier_of: dict[str, int] = {}
        for t, tier in enumerate(self.tiers()):
            for c in tier:
                if c not in classes:
                    raise ValueError(f"rater {self.name!r}: unknown class {c!r} (classes: {list(classes)})")
                if c in tier_of:
                    raise ValueError(f"rater {self.name!r}: class {c!r} appears twice in its ranking")
                tier_of[c] = t
        missing = [c for c in classes if c not in tier_of]
        if missing:
            raise ValueError(f"rater {self.name!r}: ranking leaves out {missing}")
        tier = np.array([tier_of[c] for c in classes])  # (n,) 0 = best
        return (tier[:, None] < tier[None, :]) + 0.5 * (tier[:, None] == tier[None, :])

    @property
    def is_strict(self) -> bool:
        return all(len(t) == 1 for t in self.tiers())


def population_game(raters: Sequence[RaterType], classes: Sequence[str] = CLASSES) -> PreferenceGame:
    """The population preference P = sum_k w_k P_k (weights normalised), as a lab game (THEORY Sec. 7).

    Without ties this is exactly :func:`nlhf.lab.rater_population`; with ties each rater
    contributes 1/2 of its weight to both orders of a tied pair.
    """
    if not raters:
        raise ValueError("a rater population needs at least one rater type")
    classes = tuple(classes)
    weights = np.array([r.weight for r in raters], dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(weights) | (weights < 0))
    if bad.size:
        raise ValueError(
            f"rater {raters[bad[0]].name!r}: weight {weights[bad[0]]} must be a finite number >= 0"
        )
    if weights.sum() <= 0:
        raise ValueError("rater weights must not all be zero")
    mats = [r.preference_matrix(classes) for r in raters]  # validates every ranking
    if all(r.is_strict for r in raters):
        index = {c: i for i, c in enumerate(classes)}
        rankings = [[index[t[0]] for t in r.tiers()] for r in raters]
        return rater_population(rankings, weights, names=classes)
    P = sum(w * m for w, m in zip(weights / weights.sum(), mats))
    return PreferenceGame(P, names=classes)


def majority_cycles(game: PreferenceGame) -> list[tuple[int, int, int]]:
    """Every Condorcet 3-cycle (i, j, k) of the majority relation: P[i,j], P[j,k], P[k,i] > 1/2.

    Each cycle is listed once, rotated so that its smallest index comes first.
    """
    beats = game.P > 0.5  # (n, n)
    n = game.n
    out = []
    for i in range(n):
        for j in range(n):
            for k in range(n):
                if i < j and i < k and beats[i, j] and beats[j, k] and beats[k, i]:
                    out.append((i, j, k))
    return out


class RaterPopulation(ClassPreferenceJudge):
    """The cyclic environment: a weighted population of rater types over response classes.

    P*(y > y' | x) = sum_k w_k ([rater k ranks class(y) above class(y')] + 1/2 [tied]).
    """

    def __init__(
        self,
        raters: Sequence[RaterType],
        classes: Sequence[str] = CLASSES,
        *,
        classifier: Classifier = classify,
        name: str = "rater-population",
    ) -> None:
        self.raters = tuple(raters)
        super().__init__(population_game(self.raters, classes), classifier=classifier, name=name)

    @property
    def weights(self) -> np.ndarray:
        """The rater types' shares, normalised, shape (K,)."""
        w = np.array([r.weight for r in self.raters], dtype=np.float64)
        return w / w.sum()

    def rater_preference(self, k: int) -> np.ndarray:
        """Rater type k's own preference matrix P_k, shape (n, n)."""
        return self.raters[k].preference_matrix(self.classes)

    def majority(self) -> np.ndarray:
        """The majority relation, shape (n, n) bool: [i, j] when P*(class i > class j) > 1/2."""
        return self.game.P > 0.5

    def condorcet_cycles(self) -> list[tuple[str, str, str]]:
        """The majority relation's 3-cycles as class names (see :func:`majority_cycles`)."""
        return [tuple(self.classes[i] for i in c) for c in majority_cycles(self.game)]


DEFAULT_RATERS: tuple[RaterType, ...] = (
    RaterType(
        "skimmer",
        ("structured", "direct", "personal", "unfocused"),
        0.3,
        "reads on a phone: wants something to scan, then a plain statement of the topic; small talk wastes time",
    ),
    RaterType(
        "expert",
        ("direct", "personal", "structured", "unfocused"),
        0.3,
        "wants the answer in the first sentence; a short personal opening is tolerable; a cut-off list "
        "fragments the point",
    ),
    RaterType(
        "casual",
        ("personal", "structured", "direct", "unfocused"),
        0.3,
        "wants to be talked to, then something easy to read; a dry textbook opening is the worst focused answer",
    ),
    RaterType(
        "noise",
        (("structured", "personal", "direct", "unfocused"),),
        0.1,
        "one rater in ten answers at random: keeps P* in [0.05, 0.95] (a Bradley-Terry fit stays finite)",
    ),
)


def default_rater_population(*, classifier: Classifier = classify) -> RaterPopulation:
    """The cyclic environment of the demo (module docstring: rankings, weights and why)."""
    return RaterPopulation(DEFAULT_RATERS, CLASSES, classifier=classifier, name="rater-population")


# ----------------------------------------------------------------------------------------
# The Bradley-Terry control


class BradleyTerryEnv(ClassPreferenceJudge):
    """The transitive control: P*(y > y' | x) = sigmoid(r(class(y)) - r(class(y'))) (THEORY Sec. 1)."""

    def __init__(
        self,
        scores: Mapping[str, float],
        classes: Sequence[str] = CLASSES,
        *,
        classifier: Classifier = classify,
        name: str = "bradley-terry",
    ) -> None:
        classes = tuple(classes)
        unknown = [c for c in scores if c not in classes]
        missing = [c for c in classes if c not in scores]
        if unknown or missing:
            raise ValueError(
                f"{name}: scores must name every class once; unknown {unknown}, missing {missing}"
            )
        self.scores = np.array([float(scores[c]) for c in classes])  # (n,)
        super().__init__(bradley_terry(self.scores, names=classes), classifier=classifier, name=name)


DEFAULT_BT_SCORES: dict[str, float] = {"structured": 0.5, "personal": 0.0, "direct": 1.0, "unfocused": -1.5}


def default_bradley_terry(*, classifier: Classifier = classify) -> BradleyTerryEnv:
    """The transitive control environment of the demo (module docstring)."""
    return BradleyTerryEnv(DEFAULT_BT_SCORES, CLASSES, classifier=classifier, name="bradley-terry")
