"""The Bradley-Terry reward model, the RLHF baseline (THEORY.md Sec. 1).

A scalar head on (x, y): r(x, y), and

    P(y > y' | x) = sigmoid(r(x, y) - r(x, y')).

Such a model can only represent transitive preferences (a single score orders all
responses), so it cannot fit a Condorcet cycle of a rater population (THEORY.md Sec. 7):
on a three-way cycle it gets at most 2 of the 3 pairs right. Trained with the
Bradley-Terry loss (binary cross-entropy of that sigmoid against the label), in
:mod:`nlhf.losses`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from nlhf.data.schema import Prompt
from nlhf.models.scorer import SequenceScorer, check_batch_sizes, pad_and_stack


def bradley_terry_logit(reward_first: Tensor, reward_second: Tensor) -> Tensor:
    """r(x, y) - r(x, y') (B,); P(y > y') = sigmoid of it (THEORY.md Sec. 1)."""
    return reward_first - reward_second


class RewardModel(SequenceScorer):
    """r(x, y): a scalar head on a backbone reading (prompt, response) as one sequence."""

    kind = "reward"
    default_input_layout = "plain"  # causal LMs: x y [EOS], like TRL's RewardTrainer (format 2)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, segment_ids: Tensor | None = None) -> Tensor:
        """Rewards (N,) float32 for a batch of (x, y) sequences (N, T) (``segment_ids``: "segments" pooling)."""
        return self.score(input_ids, attention_mask, segment_ids)

    def logit(
        self,
        input_ids_first: Tensor,
        attention_mask_first: Tensor,
        input_ids_second: Tensor | None = None,
        attention_mask_second: Tensor | None = None,
        *,
        segment_ids: Tensor | None = None,
    ) -> Tensor:
        """r(x, first) - r(x, second) (B,) in ONE forward.

        Either two (B, T) batches, or a single (2B, T) batch whose first half holds the
        first responses and second half the second responses. ``segment_ids`` ("segments"
        pooling only) matches the single (2B, T) batch.
        """
        if input_ids_second is None:
            if input_ids_first.shape[0] % 2:
                raise ValueError(
                    f"a single batch must hold 2B rows (firsts then seconds); got {input_ids_first.shape[0]}"
                )
            ids, mask = input_ids_first, attention_mask_first  # (2B, T)
        else:
            if attention_mask_second is None:
                raise ValueError("give attention_mask_second with input_ids_second")
            pad_id = getattr(self.tokenizer, "pad_token_id", None) or 0
            ids, mask = pad_and_stack(
                input_ids_first, attention_mask_first, input_ids_second, attention_mask_second, pad_id
            )  # (2B, T)
        if segment_ids is not None and segment_ids.shape != ids.shape:
            raise ValueError(
                f"segment_ids {tuple(segment_ids.shape)} must match the stacked batch {tuple(ids.shape)}"
            )
        rewards = self.score(ids, mask, segment_ids)  # (2B,)
        half = rewards.shape[0] // 2
        return bradley_terry_logit(rewards[:half], rewards[half:])  # (B,)

    def encode(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> dict[str, Any]:
        """Text -> ``{"input_ids", "attention_mask", "segment_ids": (N, T), "truncated": int}``, one (x, y) a row
        (:meth:`~nlhf.models.scorer.SequenceScorer.single_rows`: laid out and truncated to ``max_length``)."""
        return self.collate_rows(self.single_rows(prompts, responses))

    def encode_rows(
        self, prompts: Sequence[Prompt], first: Sequence[str], second: Sequence[str]
    ) -> list[Any]:
        """The 2B ``EncodedInput`` rows of a pair batch before padding: (x, first) rows, then (x, second)."""
        return self.pair_rows(prompts, first, second)

    @torch.no_grad()
    def reward(self, prompts: Sequence[Prompt], responses: Sequence[str], *, batch_size: int = 32) -> Tensor:
        """r(x, y) for text inputs (N,) float32 on CPU, in eval mode, no grad."""
        check_batch_sizes(prompts=prompts, responses=responses)

        def rewards(lo: int, hi: int) -> Tensor:
            enc = self.encode(prompts[lo:hi], responses[lo:hi])
            ids, mask, seg = (enc[k].to(self.device) for k in ("input_ids", "attention_mask", "segment_ids"))
            return self(ids, mask, seg)

        return self._scored_in_batches(len(prompts), batch_size, rewards)

    @torch.no_grad()
    def prob(
        self,
        prompts: Sequence[Prompt],
        first: Sequence[str],
        second: Sequence[str],
        *,
        batch_size: int = 16,
    ) -> Tensor:
        """P(first > second | prompt) = sigmoid(r(x, first) - r(x, second)) (B,) on CPU."""
        check_batch_sizes(prompts=prompts, first=first, second=second)
        out = []
        for lo in range(0, len(prompts), batch_size):
            hi = lo + batch_size
            p = list(prompts[lo:hi])
            rewards = self.reward(p + p, list(first[lo:hi]) + list(second[lo:hi]), batch_size=2 * batch_size)
            half = rewards.shape[0] // 2
            out.append(torch.sigmoid(bradley_terry_logit(rewards[:half], rewards[half:])))
        return torch.cat(out) if out else torch.zeros(0)
