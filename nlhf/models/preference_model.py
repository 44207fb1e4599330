"""The pairwise preference model P(y > y' | x) of NLHF (THEORY.md Sec. 1; Munos et al. Sec. 3.1).

A backbone reads the ordered triple (x, first, second) as ONE sequence and a linear head
scores it, f(x, first, second). The preference is

    P(first > second | x) = sigmoid(f(x, first, second) - f(x, second, first))

so the symmetry P(y > y') = 1 - P(y' > y), and hence P(y > y) = 1/2, holds by
construction, for any weights (the logit is antisymmetric: swapping the responses swaps
the two terms). Both orders run in ONE batched forward: rows 0..B-1 of the batch are
(x, a, b), rows B..2B-1 are (x, b, a).

Unlike a Bradley-Terry reward model (:mod:`nlhf.models.reward_model`), f need not
decompose as r(x, a) - r(x, b), so the model can represent non-transitive preferences: a
Condorcet cycle of a rater population (THEORY.md Sec. 7). Trained with binary
cross-entropy on the label P(first > second) (hard 0/1 or soft); the loss lives in
:mod:`nlhf.losses`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from nlhf.data.schema import Prompt
from nlhf.models.backbone import cache_argument, shared_prefix_lengths
from nlhf.models.scorer import SequenceScorer, check_batch_sizes, pad_and_stack


def preference_logit(score_ab: Tensor, score_ba: Tensor) -> Tensor:
    """The preference logit f(x, a, b) - f(x, b, a) (B,); P(a > b) = sigmoid of it (THEORY.md Sec. 1)."""
    return score_ab - score_ba


class PairwisePreferenceModel(SequenceScorer):
    """P(first > second | x) = sigmoid(f(x, first, second) - f(x, second, first)).

    Build with :meth:`from_backbone` (``"minilm"``, ``"smollm2"``, a path or hub name) or
    directly from a Hugging Face model and its tokenizer; see
    :class:`~nlhf.models.scorer.SequenceScorer` for pooling, LoRA and save/load.
    """

    kind = "pairwise_preference"
    share_prompt = True  # causal backbones: run each pair's common prefix once (scorer.score_shared_prefix)
    num_segments = 2  # "segments" pooling: [mean(first's tokens); mean(second's tokens)], head (1, 2H)

    @classmethod
    def auto_pooling(cls, kind_of_backbone: str) -> str:
        """``"segments"`` on encoders (on HH: validation accuracy 0.6525 against 0.535 for
        ``"mean"``, benchmarks/bench_judges_hh.py), ``"last"`` (the final EOS, which has read
        the whole triple) on causal LMs."""
        return "last" if kind_of_backbone == "causal" else "segments"

    def forward(
        self,
        input_ids_ab: Tensor,
        attention_mask_ab: Tensor,
        input_ids_ba: Tensor | None = None,
        attention_mask_ba: Tensor | None = None,
        *,
        segment_ids: Tensor | None = None,
        segment_ids_ba: Tensor | None = None,
    ) -> Tensor:
        """Preference logits (B,) of P(first > second).

        Either both orders separately, ``input_ids_ab`` (B, Ta) = (x, first, second) and
        ``input_ids_ba`` (B, Tb) = (x, second, first) (stacked into one forward here), or a
        single (2B, T) batch whose first half is (x, first, second) and second half the
        same triples in the other order (what :func:`encode` returns). ``segment_ids``
        (same shape as ``input_ids_ab``; ``segment_ids_ba`` for the separate second order)
        are needed by ``"segments"`` pooling.
        """
        if (input_ids_ba is None) != (attention_mask_ba is None):
            raise ValueError("give both input_ids_ba and attention_mask_ba, or neither")
        if input_ids_ba is None:
            rows = input_ids_ab.shape[0]
            if rows % 2:
                raise ValueError(
                    f"a single batch must hold both orders (2B rows: (x,a,b) then (x,b,a)); got {rows} rows"
                )
            input_ids, attention_mask = input_ids_ab, attention_mask_ab  # (2B, T)
            segments = segment_ids  # (2B, T) or None
        else:
            if input_ids_ab.shape[0] != input_ids_ba.shape[0]:
                raise ValueError(
                    f"batch sizes differ: ab {input_ids_ab.shape[0]}, ba {input_ids_ba.shape[0]}"
                )
            pad_id = getattr(self.tokenizer, "pad_token_id", None) or 0
            input_ids, attention_mask = pad_and_stack(
                input_ids_ab, attention_mask_ab, input_ids_ba, attention_mask_ba, pad_id
            )  # (2B, T)
            segments = None
            if (segment_ids is None) != (segment_ids_ba is None):
                raise ValueError("give both segment_ids and segment_ids_ba, or neither")
            if segment_ids is not None:
                segments, _ = pad_and_stack(
                    segment_ids, attention_mask_ab, segment_ids_ba, attention_mask_ba, 0
                )
        scores = self._score_pairs(input_ids, attention_mask, segments)  # (2B,)
        half = scores.shape[0] // 2
        return preference_logit(scores[:half], scores[half:])  # (B,)

    def _score_pairs(self, input_ids: Tensor, attention_mask: Tensor, segment_ids: Tensor | None) -> Tensor:
        """f of the 2B rows: the shared-prefix path when it applies (module docstring of scorer), else one forward."""
        if (
            self.share_prompt
            and self.backbone_kind == "causal"
            and self.pooling in ("last", "segments")
            and segment_ids is not None
            and cache_argument(self.backbone) is not None
        ):
            prefix = shared_prefix_lengths(input_ids, attention_mask, segment_ids)  # (B,) or None
            if prefix is not None:
                return self.score_shared_prefix(input_ids, attention_mask, segment_ids, prefix)
        return self.score(input_ids, attention_mask, segment_ids)  # (2B,)

    def logit(self, *args: Tensor, **kwargs: Tensor | None) -> Tensor:
        """Same as :meth:`forward`: the logit of P(first > second) (B,)."""
        return self(*args, **kwargs)

    def encode(
        self, prompts: Sequence[Prompt], first: Sequence[str], second: Sequence[str]
    ) -> dict[str, Any]:
        """Text -> ``{"input_ids", "attention_mask", "segment_ids": (2B, T), "truncated": int}``.

        Rows 0..B-1 are (x, first, second), rows B..2B-1 (x, second, first), each laid out
        and truncated to ``max_length`` by :func:`nlhf.data.judge_inputs.encode_triple` (the
        same rule for training and judging; prompt cut from the left, responses by
        water-filling, so both orders keep the same tokens).
        """
        return self.collate_rows(self.encode_rows(prompts, first, second))

    def encode_rows(
        self, prompts: Sequence[Prompt], first: Sequence[str], second: Sequence[str]
    ) -> list[Any]:
        """The 2B ``EncodedInput`` rows of :meth:`encode` before padding: (x, a, b) rows, then (x, b, a)."""
        from nlhf.data.judge_inputs import encode_triples

        check_batch_sizes(prompts=prompts, first=first, second=second)
        p, a, b = list(prompts), list(first), list(second)
        return encode_triples(self._require_tokenizer(), p + p, a + b, b + a, self.max_length)

    @torch.no_grad()
    def prob(
        self,
        prompts: Sequence[Prompt],
        first: Sequence[str],
        second: Sequence[str],
        *,
        batch_size: int = 16,
    ) -> Tensor:
        """P(first > second | prompt) for text inputs (B,) float32 on CPU, in eval mode, no grad."""
        check_batch_sizes(prompts=prompts, first=first, second=second)

        def probs(lo: int, hi: int) -> Tensor:
            enc = self.encode(prompts[lo:hi], first[lo:hi], second[lo:hi])
            logits = self(
                enc["input_ids"].to(self.device),
                enc["attention_mask"].to(self.device),
                segment_ids=enc["segment_ids"].to(self.device),
            )  # (b,)
            return torch.sigmoid(logits)

        return self._scored_in_batches(len(prompts), batch_size, probs)
