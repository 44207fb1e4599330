"""Annotators: simulated raters that answer a comparison with a coin flip of probability P*.

A real rater asked "which response is better?" gives one hard answer; over many raters the
answers for (x, y, y') average to the population preference P*(y > y' | x) (THEORY.md
Sec. 1, 7). :class:`Annotator` reproduces that: for each pair it draws

    label ~ Bernoulli( judge.prob(x, y, y') )

with its own seeded ``torch.Generator`` (the same seed and the same calls give the same
labels; successive calls continue the stream), and returns
:class:`~nlhf.data.schema.PreferenceExample` training pairs. It works with any
:class:`~nlhf.judges.Judge`: the environment oracles of :mod:`nlhf.envs` or a learned model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from nlhf.data.schema import PreferenceExample, Prompt
from nlhf.judges import Judge, check_batch, check_probabilities, judge_name

if TYPE_CHECKING:
    import torch


class Annotator:
    """Bernoulli labels from a judge's P*, as preference pairs.

    ``judge``: anything with ``prob(prompts, first, second) -> (B,)`` (the oracle).
    ``seed``: seeds the annotator's own generator (the global torch RNG is not touched).
    ``chosen_first``: put the sampled winner first, with label 1.0 (a chosen/rejected
    dataset, the default), instead of keeping the given order with a 0/1 label.
    """

    def __init__(
        self, judge: Judge, seed: int = 0, *, chosen_first: bool = True, name: str | None = None
    ) -> None:
        import torch

        if not hasattr(judge, "prob"):
            raise TypeError(f"Annotator needs a judge with .prob, got {type(judge).__name__}")
        self.judge = judge
        self.seed = int(seed)
        self.chosen_first = chosen_first
        self.name = name or f"Annotator({judge_name(judge)}, seed={self.seed})"
        self.generator = torch.Generator().manual_seed(self.seed)

    def labels(
        self, prompts: Sequence[Prompt], first: Sequence[str], second: Sequence[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(labels, p_star)``, both (B,) float32: labels in {0., 1.} drawn as Bernoulli(p_star)."""
        import torch

        b = check_batch(prompts, first, second, self.name)
        p_star = check_probabilities(
            self.judge.prob(list(prompts), list(first), list(second)), judge_name(self.judge), b
        )
        labels = torch.bernoulli(p_star, generator=self.generator)  # (B,) in {0, 1}
        return labels, p_star

    def annotate(
        self,
        prompts: Sequence[Prompt],
        first: Sequence[str],
        second: Sequence[str],
        *,
        source: str = "annotator",
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> list[PreferenceExample]:
        """One labelled :class:`PreferenceExample` per row.

        ``source`` becomes ``"{source}:{row}"``; each example's metadata holds ``p_star``
        (P*(first > second) for the pair as stored), ``swapped`` (whether the winner was
        moved first) and anything given in ``metadata[row]`` (its ``first_index`` and
        ``second_index``, when present, are swapped with the responses).
        """
        labels, p_star = self.labels(prompts, first, second)
        if metadata is not None and len(metadata) != len(labels):
            raise ValueError(f"{self.name}: {len(metadata)} metadata rows for {len(labels)} pairs")
        out = []
        for i, (x, a, b) in enumerate(zip(prompts, first, second)):
            label, p = float(labels[i]), float(p_star[i])
            swapped = self.chosen_first and label == 0.0
            meta = dict(metadata[i]) if metadata is not None else {}
            if swapped:
                a, b, label, p = b, a, 1.0, 1.0 - p
                if "first_index" in meta and "second_index" in meta:
                    meta["first_index"], meta["second_index"] = meta["second_index"], meta["first_index"]
            meta.update(p_star=p, swapped=swapped)
            out.append(PreferenceExample(x, a, b, label, source=f"{source}:{i}", metadata=meta))
        return out

    def pairs_from_samples(
        self, prompts: Sequence[Prompt], responses: Sequence[Sequence[str]], *, source: str = "samples"
    ) -> list[PreferenceExample]:
        """Label disjoint pairs of each prompt's samples: (0, 1), (2, 3), ... (an odd last one is dropped).

        ``responses[i]`` are the samples of one policy (or several) for ``prompts[i]``.
        Disjoint pairs keep the examples independent given the policy. Metadata records
        ``prompt_index`` and the two sample indices.
        """
        if len(prompts) != len(responses):
            raise ValueError(f"{self.name}: {len(prompts)} prompts but {len(responses)} lists of responses")
        xs, firsts, seconds, meta = [], [], [], []
        for i, (x, ys) in enumerate(zip(prompts, responses)):
            if isinstance(ys, str):
                raise TypeError(f"{self.name}: responses[{i}] is a string; expected a list of responses")
            for j in range(0, len(ys) - 1, 2):
                xs.append(x)
                firsts.append(ys[j])
                seconds.append(ys[j + 1])
                meta.append({"prompt_index": i, "first_index": j, "second_index": j + 1})
        return self.annotate(xs, firsts, seconds, source=source, metadata=meta)
