"""A batch of sampled responses with the per-token log-probs recorded while sampling.

Layout (``P`` = padded prompt width, ``R`` = longest response in the batch)::

    prompt_ids    (B, P)  left-padded    prompt_mask   (B, P)  1 on prompt tokens
    response_ids  (B, R)  right-padded   response_mask (B, R)  1 on the first response_lengths[b]

Masks come from lengths, never from ids: SmolLM2's tokenizer has ``pad == eos``, and the
EOS that ends a response is a real token the policy must learn to emit (it is inside
``response_mask``). All per-token tensors of shape (B, R) are aligned with
``response_ids`` (position ``t`` scores ``response_ids[:, t]``) and are exactly 0 outside
``response_mask``.

torch is only needed by the methods (imported there), so importing this module is cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class Rollout:
    """Sampled responses to a batch of B prompts (THEORY.md Sec. 4, 6).

    ``sampling_logps`` is log q(y_t | x, y_<t) under the distribution the token was actually
    drawn from (after the mixture, temperature, top-k and top-p); ``policy_logps`` and
    ``ref_logps`` are log pi(y_t | .) and log mu(y_t | .) at temperature 1 without any cut,
    recorded when the sampler ran that model anyway (None otherwise). They are detached
    numbers from sampling time: a trainer recomputes log pi with gradient by a forward pass
    (:func:`nlhf.sampling.response_logps`), and may use the recorded ones as the "old"
    policy (PPO) or to check the two agree.
    """

    prompt_ids: Tensor  # (B, P) long, left-padded
    prompt_mask: Tensor  # (B, P) long, 1 on prompt tokens
    response_ids: Tensor  # (B, R) long, right-padded with the pad id
    response_mask: Tensor  # (B, R) long, 1 on the first response_lengths[b] positions (EOS included)
    response_lengths: Tensor  # (B,) long, >= 1
    truncated: Tensor  # (B,) bool, stopped at max_new_tokens without an EOS (all rows when stop_on_eos=False)
    sampling_logps: Tensor  # (B, R) float32, log q(y_t | x, y_<t) of the distribution sampled
    policy_logps: Tensor | None = None  # (B, R) float32, log pi(y_t | .) at temperature 1
    ref_logps: Tensor | None = None  # (B, R) float32, log mu(y_t | .) at temperature 1
    step_logits: Tensor | None = (
        None  # (B, R, V) float32 logits each step sampled from (before temperature/cuts)
    )

    @property
    def batch_size(self) -> int:
        return int(self.response_ids.shape[0])

    @property
    def prompt_width(self) -> int:
        """P, the padded prompt width (the same for every row: prompts are left-padded)."""
        return int(self.prompt_ids.shape[1])

    def to(self, device: Any) -> Rollout:
        """The same rollout with every tensor on ``device``."""
        moved = {
            f.name: (getattr(self, f.name).to(device) if getattr(self, f.name) is not None else None)
            for f in fields(self)
        }
        return Rollout(**moved)

    def sequences(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(input_ids, attention_mask, completion_mask)``, each (B, P + R), for scoring.

        ``input_ids = [prompt_ids, response_ids]``; ``attention_mask = [prompt_mask,
        response_mask]``; ``completion_mask`` is ``response_mask`` placed after P zeros
        (bool). With :func:`nlhf.logprobs.token_logps` (which scores token ``t + 1`` at output
        position ``t``), columns ``P - 1 : P - 1 + R`` of its output are aligned with
        ``response_ids``; :func:`nlhf.sampling.response_logps` does this slicing.
        """
        import torch

        input_ids = torch.cat([self.prompt_ids, self.response_ids], dim=1)  # (B, P+R)
        attention_mask = torch.cat([self.prompt_mask, self.response_mask], dim=1)  # (B, P+R)
        completion_mask = torch.cat(
            [torch.zeros_like(self.prompt_mask, dtype=torch.bool), self.response_mask.to(torch.bool)], dim=1
        )  # (B, P+R)
        return input_ids, attention_mask, completion_mask

    def response_texts(self, tokenizer: Any, skip_special_tokens: bool = True) -> list[str]:
        """Decode each response's first ``response_lengths[b]`` tokens (the EOS is dropped as special)."""
        lengths = self.response_lengths.tolist()
        ids = self.response_ids.tolist()
        return [
            tokenizer.decode(row[:n], skip_special_tokens=skip_special_tokens) for row, n in zip(ids, lengths)
        ]
