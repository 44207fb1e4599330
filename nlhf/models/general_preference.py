"""The general preference model: P(y > y' | x) from one preference embedding per response (THEORY.md Sec. 1).

A backbone reads (x, y) ONCE, like a reward model, and a linear head maps the pooled state to
a preference embedding v(x, y) = (r, u_1, w_1, ..., u_k, w_k) in R^(1 + 2k). A pair's logit is

    logit(a, b) = (r_a - r_b) + sum_{i=1..k} (u_{a,i} w_{b,i} - w_{a,i} u_{b,i})        (1)
    P(a > b | x) = sigmoid(logit(a, b))

that is v_a^T S v_b with S skew-symmetric: a Bradley-Terry part (r) plus k rotation blocks
(the skew-symmetric preference embeddings of Zhang et al., 2024, "Beyond Bradley-Terry Models:
A General Preference Model for Language Model Alignment", with a separate transitive part).
Properties, each tested:

* symmetric by construction: logit(b, a) = -logit(a, b) for any weights, so
  P(a > b) + P(b > a) = 1 and P(a > a) = 1/2 exactly (THEORY.md Sec. 1);
* non-transitive preferences are representable: a skew-symmetric logit matrix over n responses
  has rank at most n, so k = floor(n / 2) rotation blocks on free embeddings represent ANY
  preference matrix with entries in (0, 1) exactly (a Condorcet cycle included; a reward model,
  k = 0, cannot fit one);
* cheap to judge: each response is encoded once, so the K x K pairs Nash-MD-PG judges per
  prompt cost 2K forwards instead of the pairwise model's 2K^2 (:meth:`prob` encodes each
  distinct (prompt, response) once).

Trained with the binary cross-entropy of (1) against the label (soft labels honoured):
:func:`nlhf.losses.preference.bce_preference_loss`, as the pairwise model
(:mod:`nlhf.models.preference_model`), which reads the ordered triple (x, a, b) as one
sequence instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from nlhf.data.schema import Prompt, prompt_text
from nlhf.models.pooling import pool_hidden
from nlhf.models.scorer import SequenceScorer, check_batch_sizes


def general_preference_logit(v_first: Tensor, v_second: Tensor) -> Tensor:
    """Equation (1): (r_a - r_b) + sum_i (u_{a,i} w_{b,i} - w_{a,i} u_{b,i}) (B,) from embeddings (B, 1 + 2k)."""
    if v_first.shape != v_second.shape or v_first.ndim != 2 or v_first.shape[1] % 2 != 1:
        raise ValueError(
            f"preference embeddings must both be (B, 1 + 2k); got {tuple(v_first.shape)} and {tuple(v_second.shape)}"
        )
    u_a, w_a = v_first[:, 1::2], v_first[:, 2::2]  # (B, k) each
    u_b, w_b = v_second[:, 1::2], v_second[:, 2::2]  # (B, k) each
    return (v_first[:, 0] - v_second[:, 0]) + (u_a * w_b - w_a * u_b).sum(-1)  # (B,)


class GeneralPreferenceModel(SequenceScorer):
    """P(first > second | x) = sigmoid(v(x, first)^T S v(x, second)) (module docstring, equation (1)).

    ``rank``: k, the number of rotation blocks (0: a Bradley-Terry reward model in another form).
    Build with :meth:`from_backbone` (``"minilm"``, ``"smollm2"``, a path or hub name; ``rank=``)
    or directly from a Hugging Face model and its tokenizer.
    """

    kind = "general_preference"
    default_input_layout = "plain"  # causal LMs: x y [EOS], as the reward model

    def __init__(self, backbone: Any, tokenizer: Any | None = None, *, rank: int = 2, **kwargs: Any) -> None:
        super().__init__(backbone, tokenizer, **kwargs)
        if int(rank) != rank or rank < 0:
            raise ValueError(f"rank must be an integer >= 0, got {rank!r}")
        self.rank = int(rank)
        width = self.head.in_features
        self.head = nn.Linear(width, 1 + 2 * self.rank, device=self.head.weight.device, dtype=torch.float32)

    @classmethod
    def init_kwargs(cls, meta: dict[str, Any]) -> dict[str, Any]:
        """What :meth:`from_pretrained` passes to the constructor from ``nlhf_head.json``: the rank."""
        if not isinstance(meta.get("rank"), int) or meta["rank"] < 0:
            raise ValueError(f"rank must be an integer >= 0, got {meta.get('rank')!r}")
        return {"rank": meta["rank"]}

    def head_config(self, merged: bool) -> dict[str, Any]:
        return {**super().head_config(merged), "rank": self.rank}

    def embed(self, input_ids: Tensor, attention_mask: Tensor, segment_ids: Tensor | None = None) -> Tensor:
        """Preference embeddings (N, 1 + 2k) float32 of (x, y) sequences (N, T)."""
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.backbone_kind == "causal":
            kwargs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (N, T)
            kwargs["use_cache"] = False
        hidden = self.backbone(**kwargs).last_hidden_state  # (N, T, H)
        pooled = pool_hidden(hidden, attention_mask, self.pooling, segment_ids, self.num_segments)  # (N, H)
        return self.head(pooled.to(self.head.weight.dtype)).float()  # (N, 1 + 2k)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, segment_ids: Tensor | None = None) -> Tensor:
        """Logits (B,) of P(first > second) from ONE (2B, T) batch: rows 0..B-1 (x, first), B..2B-1 (x, second)."""
        if input_ids.shape[0] % 2:
            raise ValueError(f"expected 2B rows (first responses, then second), got {input_ids.shape[0]}")
        v = self.embed(input_ids, attention_mask, segment_ids)  # (2B, 1 + 2k)
        half = v.shape[0] // 2
        return general_preference_logit(v[:half], v[half:])  # (B,)

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
    def embeddings(
        self, prompts: Sequence[Prompt], responses: Sequence[str], *, batch_size: int = 32
    ) -> Tensor:
        """v(x, y) (N, 1 + 2k) float32 on CPU for text inputs, in eval mode, no grad."""
        check_batch_sizes(prompts=prompts, responses=responses)

        def rows(lo: int, hi: int) -> Tensor:
            enc = self.encode(prompts[lo:hi], responses[lo:hi])
            ids, mask, seg = (enc[k].to(self.device) for k in ("input_ids", "attention_mask", "segment_ids"))
            return self.embed(ids, mask, seg)

        was_training = self.training
        self.eval()
        try:
            out = [rows(lo, lo + batch_size).cpu() for lo in range(0, len(prompts), batch_size)]
        finally:
            self.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, 1 + 2 * self.rank)

    @torch.no_grad()
    def prob(
        self, prompts: Sequence[Prompt], first: Sequence[str], second: Sequence[str], *, batch_size: int = 32
    ) -> Tensor:
        """P(first > second | prompt) (B,) float32 on CPU; every distinct (prompt, response) is encoded once."""
        check_batch_sizes(prompts=prompts, first=first, second=second)
        keys: dict[tuple[str, str], int] = {}
        items: list[tuple[Prompt, str]] = []
        index_a, index_b = [], []
        for p, a, b in zip(prompts, first, second):
            for y, index in ((a, index_a), (b, index_b)):
                key = (prompt_text(p), y)
                if key not in keys:
                    keys[key] = len(items)
                    items.append((p, y))
                index.append(keys[key])
        v = self.embeddings(
            [p for p, _ in items], [y for _, y in items], batch_size=batch_size
        )  # (U, 1 + 2k)
        if not index_a:
            return torch.zeros(0)
        return torch.sigmoid(general_preference_logit(v[index_a], v[index_b]))  # (B,)
