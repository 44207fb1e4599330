"""Judges: anything that answers P(first > second | prompt) for a batch (THEORY.md Sec. 1, 2).

The online trainers, the evaluator and programmatic oracles only ever see this one
interface, so a learned preference model, a Bradley-Terry reward model and a Python
function are interchangeable::

    judge.prob(prompts, first, second) -> torch.Tensor (B,) float32 on CPU, values in [0, 1]

Adapters:

* :class:`PreferenceModelJudge`  a :class:`~nlhf.models.PairwisePreferenceModel`
* :class:`RewardModelJudge`      a :class:`~nlhf.models.RewardModel` (sigmoid(r - r'))
* :class:`CallableJudge`         a Python function (per example or batched)
* :class:`SymmetrizedJudge`      (J(a, b) + 1 - J(b, a)) / 2 for any judge J, which makes
  P(a > b) + P(b > a) = 1 and P(a > a) = 1/2 hold exactly

Every adapter checks what it returns: a value outside [0, 1] or NaN, or a result of the
wrong shape, is a ``ValueError`` naming the judge, the row and the value; it is never
clipped. (A ``GameJudge`` that maps a lab ``PreferenceGame`` onto token ids, and the
environment oracles of :mod:`nlhf.envs`, plug in by subclassing :class:`BaseJudge` and
implementing ``_prob``.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

    from nlhf.data.schema import Prompt


@runtime_checkable
class Judge(Protocol):
    """P(first > second | prompt), batched: ``prob(prompts, first, second) -> (B,)`` in [0, 1]."""

    def prob(
        self, prompts: Sequence[Prompt], first: Sequence[str], second: Sequence[str]
    ) -> torch.Tensor: ...


def judge_name(judge: Any) -> str:
    """A readable name for error messages."""
    return getattr(judge, "name", None) or type(judge).__name__


def check_batch(prompts: Sequence[Any], first: Sequence[Any], second: Sequence[Any], name: str) -> int:
    """The batch size B; a ``ValueError`` naming the judge if the three sequences differ in length."""
    sizes = (len(prompts), len(first), len(second))
    if len(set(sizes)) != 1:
        raise ValueError(f"judge {name}: prompts, first and second have different lengths {sizes}")
    return sizes[0]


def check_probabilities(values: Any, name: str, batch_size: int | None = None) -> torch.Tensor:
    """``values`` as a (B,) float32 CPU tensor, or a ``ValueError`` naming the judge and the bad value.

    Rejects NaN, values outside [0, 1] (no clipping: a judge that returns 1.02 is broken,
    and clipping would hide it), and results whose shape is not (batch_size,).
    """
    import torch

    try:
        probs = torch.as_tensor(values).detach()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(
            f"judge {name} returned {type(values).__name__}, not a sequence of numbers: {exc}"
        ) from exc
    if probs.dtype == torch.bool or not (
        probs.is_floating_point() or probs.dtype in (torch.int32, torch.int64)
    ):
        raise ValueError(f"judge {name} returned dtype {probs.dtype}; expected probabilities (floats)")
    probs = probs.to(device="cpu", dtype=torch.float32)
    if probs.ndim != 1 or (batch_size is not None and probs.shape[0] != batch_size):
        want = f"({batch_size},)" if batch_size is not None else "(B,)"
        raise ValueError(f"judge {name} returned shape {tuple(probs.shape)}; expected {want}")
    bad = torch.isnan(probs) | (probs < 0.0) | (probs > 1.0)
    if bool(bad.any()):
        rows = torch.nonzero(bad).flatten().tolist()
        i = rows[0]
        raise ValueError(
            f"judge {name} returned {probs[i].item():.6g} at row {i} (P(first > second) must be in [0, 1]; "
            f"{len(rows)} bad value(s), rows {rows[:10]})"
        )
    return probs


class BaseJudge:
    """Implements :class:`Judge`: subclasses write ``_prob``; ``prob`` checks inputs and outputs."""

    name: str = ""

    def _prob(self, prompts: Sequence[Prompt], first: Sequence[str], second: Sequence[str]) -> Any:
        raise NotImplementedError

    def prob(self, prompts: Sequence[Prompt], first: Sequence[str], second: Sequence[str]) -> torch.Tensor:
        """P(first > second | prompt) (B,) float32 on CPU, each value checked to lie in [0, 1]."""
        name = judge_name(self)
        batch = check_batch(prompts, first, second, name)
        if batch == 0:
            import torch

            return torch.zeros(0)
        return check_probabilities(self._prob(prompts, first, second), name, batch)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({judge_name(self)!r})"


class PreferenceModelJudge(BaseJudge):
    """A pairwise preference model as a judge (eval mode, no grad, in batches of ``batch_size``)."""

    def __init__(self, model: Any, *, batch_size: int = 16, name: str | None = None) -> None:
        self.model = model
        self.batch_size = batch_size
        self.name = name or f"PreferenceModelJudge({type(model).__name__})"

    def _prob(self, prompts: Sequence[Prompt], first: Sequence[str], second: Sequence[str]) -> Any:
        return self.model.prob(list(prompts), list(first), list(second), batch_size=self.batch_size)


class RewardModelJudge(BaseJudge):
    """A Bradley-Terry reward model as a judge: sigmoid(r(x, first) - r(x, second))."""

    def __init__(self, model: Any, *, batch_size: int = 16, name: str | None = None) -> None:
        self.model = model
        self.batch_size = batch_size
        self.name = name or f"RewardModelJudge({type(model).__name__})"

    def _prob(self, prompts: Sequence[Prompt], first: Sequence[str], second: Sequence[str]) -> Any:
        return self.model.prob(list(prompts), list(first), list(second), batch_size=self.batch_size)


class CallableJudge(BaseJudge):
    """A Python function as a judge.

    ``batched=False`` (default): ``fn(prompt, first, second) -> float`` per example.
    ``batched=True``: ``fn(prompts, firsts, seconds) -> sequence or tensor of B floats``.
    """

    def __init__(self, fn: Callable[..., Any], *, batched: bool = False, name: str | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"CallableJudge needs a callable, got {type(fn).__name__}")
        self.fn = fn
        self.batched = batched
        self.name = name or getattr(fn, "__qualname__", None) or repr(fn)

    def _prob(self, prompts: Sequence[Prompt], first: Sequence[str], second: Sequence[str]) -> Any:
        if self.batched:
            return self.fn(list(prompts), list(first), list(second))
        out = []
        for i, (p, a, b) in enumerate(zip(prompts, first, second)):
            value = self.fn(p, a, b)
            try:
                out.append(float(value))
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"judge {self.name} returned {value!r} at row {i}; expected a number"
                ) from exc
        return out


class SymmetrizedJudge(BaseJudge):
    """(J(a, b) + 1 - J(b, a)) / 2: a judge for which P(a > b) + P(b > a) = 1 exactly.

    Both orders go to the inner judge in ONE call of 2B rows (rows 0..B-1: (a, b); rows
    B..2B-1: (b, a)); the inner judge's values are checked too.
    """

    def __init__(self, judge: Judge, *, name: str | None = None) -> None:
        if not hasattr(judge, "prob"):
            raise TypeError(f"SymmetrizedJudge needs a judge with .prob, got {type(judge).__name__}")
        self.judge = judge
        self.name = name or f"Symmetrized({judge_name(judge)})"

    def _prob(self, prompts: Sequence[Prompt], first: Sequence[str], second: Sequence[str]) -> Any:
        b = len(prompts)
        both = self.judge.prob(list(prompts) * 2, list(first) + list(second), list(second) + list(first))
        both = check_probabilities(both, judge_name(self.judge), 2 * b)  # (2B,)
        return symmetrize(both[:b], both[b:])


def symmetrize(p_ab: torch.Tensor, p_ba: torch.Tensor) -> torch.Tensor:
    """(P(a > b) + 1 - P(b > a)) / 2 (THEORY.md Sec. 1: P(y > y') = 1 - P(y' > y))."""
    return 0.5 * (p_ab + 1.0 - p_ba)


def load_judge(path: str, batch_size: int) -> BaseJudge:
    """A judge from a directory saved by ``nlhf train-pm`` (preference model) or ``train-rm`` (reward model)."""
    from nlhf.models.saved import load_scorer  # torch and transformers: only when a judge loads

    model = load_scorer(path).eval()
    if model.kind == "reward":
        return RewardModelJudge(model, batch_size=batch_size)
    return PreferenceModelJudge(model, batch_size=batch_size)


def judge_preference(judge: Judge, prompts: Sequence[Any], first: Any, second: Any, tokenizer: Any) -> Any:
    """P(first > second | prompt) (B,) float32 on the rollouts' device, from the decoded response texts.

    ``first``, ``second``: :class:`nlhf.sampling.Rollout` of B rows each.
    """
    first_texts = first.response_texts(tokenizer)
    second_texts = second.response_texts(tokenizer)
    pref = judge.prob(list(prompts), first_texts, second_texts)  # (B,) CPU, checked by BaseJudge
    return pref.to(first.response_ids.device)
