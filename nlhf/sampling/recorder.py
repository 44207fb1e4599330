"""Recording a batch of responses step by step, for the decode loop (:mod:`nlhf.sampling.decode`).

Per step the loop hands :class:`ResponseRecorder` the sampled tokens (B,), their log q and
any other log-probs (log pi, log mu at temperature 1); finished rows (a stop id emitted)
are fed the pad token from then on and masked out of the response by their length.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from nlhf.sampling.rollout import Rollout


class ResponseRecorder:
    """Collects one batch's tokens step by step and builds the :class:`Rollout`."""

    def __init__(self, B: int, stop_ids: Tensor | None, pad_id: int, device: Any, keep_logits: bool) -> None:
        self.stop_ids = stop_ids
        self.pad_id = pad_id
        self.keep_logits = keep_logits
        self.finished = torch.zeros(B, dtype=torch.bool, device=device)  # (B,)
        self.lengths = torch.zeros(B, dtype=torch.long, device=device)  # (B,)
        self.tokens: list[Tensor] = []
        self.logps: dict[str, list[Tensor]] = {}
        self.step_logits: list[Tensor] = []

    def add(self, tokens: Tensor, sampling_logps: Tensor, step_logits: Tensor, **logps: Tensor) -> Tensor:
        """Record one step; returns the tokens to feed back (pad on finished rows). (B,) each."""
        alive = ~self.finished  # (B,)
        tokens = torch.where(alive, tokens, torch.full_like(tokens, self.pad_id))  # (B,)
        zero = torch.zeros((), dtype=torch.float32, device=tokens.device)
        self.tokens.append(tokens)
        for name, values in {"sampling_logps": sampling_logps, **logps}.items():
            self.logps.setdefault(name, []).append(torch.where(alive, values.float(), zero))
        if self.keep_logits:
            self.step_logits.append(step_logits.float())
        self.lengths += alive.long()
        if self.stop_ids is not None:
            self.finished |= alive & torch.isin(tokens, self.stop_ids)
        return tokens

    @property
    def done(self) -> bool:
        """Whether every row has emitted a stop id."""
        return bool(self.finished.all())

    def build(self, prompt_ids: Tensor, prompt_mask: Tensor) -> Rollout:
        """The :class:`Rollout` of the recorded steps, cut to the longest response (R = max length)."""
        R = int(self.lengths.max())
        response_ids = torch.stack(self.tokens, dim=1)[:, :R]  # (B, R)
        positions = torch.arange(R, device=response_ids.device)  # (R,)
        response_mask = (positions.unsqueeze(0) < self.lengths.unsqueeze(1)).long()  # (B, R)
        logps = {name: torch.stack(v, dim=1)[:, :R] for name, v in self.logps.items()}  # (B, R) each
        step_logits = torch.stack(self.step_logits, dim=1)[:, :R] if self.keep_logits else None  # (B, R, V)
        return Rollout(
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            response_ids=response_ids,
            response_mask=response_mask,
            response_lengths=self.lengths.clone(),
            truncated=~self.finished,
            sampling_logps=logps.pop("sampling_logps"),
            policy_logps=logps.pop("policy_logps", None),
            ref_logps=logps.pop("ref_logps", None),
            step_logits=step_logits,
        )
