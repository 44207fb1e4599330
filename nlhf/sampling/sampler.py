"""The sampler interface the online trainers use, and its Hugging Face (PyTorch) backend.

Trainers only see :class:`Sampler`: a backend is whatever object has these methods. The
one here, :class:`HFSampler`, calls the explicit KV-cached loops of
:mod:`nlhf.sampling.decode`. A faster backend (vLLM on GPUs, with the mixture as a
two-model logits step) can be added later as another class with the same methods, without
touching the trainers (such a backend will need a hook to reload the policy's and an EMA
opponent's weights after each optimiser step; none exists until a backend needs it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from nlhf.sampling.config import SamplingConfig

if TYPE_CHECKING:
    import torch

    from nlhf.data.collate import PromptBatch
    from nlhf.sampling.rollout import Rollout


@runtime_checkable
class Sampler(Protocol):
    """What an online trainer needs from a sampling backend (THEORY.md Sec. 4, 6).

    ``prompts`` is a left-padded :class:`nlhf.data.collate.PromptBatch`; every method
    returns :class:`Rollout` objects on the prompts' device, draws its randomness from
    ``generator`` only (deterministic given its state), and never builds an autograd graph.
    ``generator`` is a ``torch.Generator`` or a :class:`nlhf.sampling.decode.RowGenerator`
    with one stream per prompt row (what the trainers pass: then a row's sample must not
    depend on the other rows of its batch; successive calls use fresh sub-streams).
    """

    config: SamplingConfig

    def sample(self, prompts: PromptBatch, generator: torch.Generator) -> Rollout:
        """y ~ pi (the policy), with ``policy_logps``. (Online IPO: call twice; PPO: repeat prompts.)"""
        ...

    def sample_mixture(
        self, prompts: PromptBatch, mixture_coef: float, generator: torch.Generator
    ) -> Rollout:
        """y' ~ token-level pi^(1-beta) mu^beta (IPO-MD: call twice)."""
        ...

    def sample_policy_and_mixture(
        self, prompts: PromptBatch, mixture_coef: float, generator: torch.Generator
    ) -> tuple[Rollout, Rollout]:
        """(y ~ pi with ``policy_logps`` and ``ref_logps``, y' ~ the mixture): Nash-MD-PG's pair."""
        ...

    def sample_opponent(self, prompts: PromptBatch, generator: torch.Generator) -> Rollout:
        """y' from the opponent model (Nash-EMA-PG: the EMA of the policy's parameters)."""
        ...


class HFSampler:
    """:class:`Sampler` on PyTorch / transformers models, by :mod:`nlhf.sampling.decode`.

    ``policy`` is sampled as it is at call time (the trainer updates it in place);
    ``reference`` is mu (for LoRA, :class:`nlhf.models.Reference` with the adapter disabled);
    ``opponent`` is an optional third model for :meth:`sample_opponent` (an EMA copy).
    ``eos_token_id`` / ``pad_token_id`` default to the models' configs; pass the tokenizer's.
    """

    def __init__(
        self,
        policy: Any,
        reference: Any,
        config: SamplingConfig,
        *,
        opponent: Any | None = None,
        eos_token_id: int | Sequence[int] | None = None,
        pad_token_id: int | None = None,
    ) -> None:
        self.policy = policy
        self.reference = reference
        self.opponent = opponent
        self.config = config
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id

    def _special(self) -> dict[str, Any]:
        return {"eos_token_id": self.eos_token_id, "pad_token_id": self.pad_token_id}

    def sample(self, prompts: PromptBatch, generator: torch.Generator) -> Rollout:
        from nlhf.sampling.decode import generate

        return generate(
            self.policy, prompts.input_ids, prompts.attention_mask, self.config, generator, **self._special()
        )

    def sample_mixture(
        self, prompts: PromptBatch, mixture_coef: float, generator: torch.Generator
    ) -> Rollout:
        from nlhf.sampling.decode import sample_mixture

        return sample_mixture(
            self.policy,
            self.reference,
            prompts.input_ids,
            prompts.attention_mask,
            mixture_coef,
            self.config,
            generator,
            **self._special(),
        )

    def sample_policy_and_mixture(
        self, prompts: PromptBatch, mixture_coef: float, generator: torch.Generator
    ) -> tuple[Rollout, Rollout]:
        from nlhf.sampling.decode import sample_policy_and_mixture

        return sample_policy_and_mixture(
            self.policy,
            self.reference,
            prompts.input_ids,
            prompts.attention_mask,
            mixture_coef,
            self.config,
            generator,
            **self._special(),
        )

    def sample_opponent(self, prompts: PromptBatch, generator: torch.Generator) -> Rollout:
        from dataclasses import replace

        from nlhf.sampling.decode import sample_mixture

        if self.opponent is None:
            raise ValueError(
                "HFSampler.sample_opponent: no opponent model was given (HFSampler(..., opponent=ema))"
            )
        # mixture_coef = 1: sample from the second model only (its log-probs land in ref_logps)
        rollout = sample_mixture(
            self.policy,
            self.opponent,
            prompts.input_ids,
            prompts.attention_mask,
            1.0,
            self.config,
            generator,
            **self._special(),
        )
        return replace(rollout, ref_logps=None)  # those were the opponent's, not mu's
