"""The sampling configuration (a frozen dataclass, resolved through :mod:`nlhf.config`).

Nested as ``sampling`` in the online trainers' configs, so range errors name
``sampling.<key>``.
"""

from __future__ import annotations

from dataclasses import dataclass

from nlhf.config import check


@dataclass(frozen=True)
class SamplingConfig:
    """How responses are sampled (THEORY.md Sec. 4: the estimators assume temperature 1, no truncation).

    At each step the next-token logits (for the mixture sampler: the mixed logits
    ``(1 - mixture_coef) logits_policy + mixture_coef logits_ref``) are divided by
    ``temperature``, then cut to the ``top_k`` largest (ties at the k-th value kept), then
    to the smallest set of most likely tokens whose total probability is at least ``top_p``;
    the token is drawn from the softmax of what is left. ``top_k=1`` is greedy decoding.

    ``temperature != 1``, ``top_k`` or ``top_p < 1`` make the sampling distribution q differ
    from pi: the rollout records log q (``sampling_logps``) next to log pi at temperature 1
    (``policy_logps``) so a trainer can correct for it (:func:`nlhf.losses.nash.nash_md_pg_loss`).
    """

    max_new_tokens: int = 64  # at most this many response tokens (EOS included)
    temperature: float = 1.0  # > 0
    top_k: int = 0  # 0: no top-k cut
    top_p: float = 1.0  # in (0, 1]; 1: no nucleus cut
    stop_on_eos: bool = True  # a row stops after its first EOS (kept as a real response token)
    seed: int = 0  # seeds the generator when a call is given none (one call is then reproducible)

    def __post_init__(self) -> None:
        check(self.max_new_tokens >= 1, "sampling.max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        check(0 <= self.seed < 2**32, "sampling.seed", f"must be in [0, 2**32), got {self.seed}")
        check(
            self.temperature > 0 and self.temperature != float("inf"),
            "sampling.temperature",
            f"must be a finite number > 0 (use top_k=1 for greedy decoding), got {self.temperature}",
        )
        check(self.top_k >= 0, "sampling.top_k", f"must be >= 0 (0 disables it), got {self.top_k}")
        check(0.0 < self.top_p <= 1.0, "sampling.top_p", f"must be in (0, 1], got {self.top_p}")

    @property
    def is_exact(self) -> bool:
        """True when tokens are drawn from the model's own distribution (temperature 1, no cut)."""
        return self.temperature == 1.0 and self.top_k == 0 and self.top_p == 1.0
