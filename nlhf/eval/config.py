"""The tournament configuration (a frozen dataclass, resolved through :mod:`nlhf.config`).

``nlhf eval --config YAML --set key=value`` resolves it with :func:`nlhf.config.load_config`;
a value out of range is a :class:`nlhf.config.ConfigError` naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from nlhf.config import check

INTERVAL_METHODS = ("auto", "cluster_t", "wilson", "clopper_pearson")


@dataclass(frozen=True)
class TournamentConfig:
    """How :func:`nlhf.eval.run_tournament` samples, judges and summarises (module docstring of
    :mod:`nlhf.eval.tournament` for the semantics).

    ``temperature`` / ``top_k`` / ``top_p`` other than (1, 0, 1) make the samples come from
    a distribution q other than pi: the win rates are then those of the sampled policy q,
    and the KL column is a Monte Carlo mean of log pi - log mu over q's samples (not
    KL(pi || mu)); the report says so.
    """

    samples_per_prompt: int = 2  # responses per (policy, prompt)
    max_new_tokens: int = 48
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    batch_size: int = 16  # rows per generation / scoring / judging batch
    max_prompt_tokens: int | None = None  # prompts cut from the left to this many tokens; None: no cut
    # win-rate intervals: "cluster_t" (prompt-clustered standard error of the mean, t on G - 1 df), "wilson" /
    # "clopper_pearson" (binomial, on the effective number of comparisons); "auto": cluster_t when the judge
    # returns probabilities, wilson when every comparison is a 0/1 outcome (sampled rater labels)
    interval: Literal["auto", "cluster_t", "wilson", "clopper_pearson"] = "auto"
    confidence: float = 0.95
    cluster_prompts: bool = (
        True  # binomial intervals on the effective number of comparisons (samples of a prompt correlate)
    )
    # judge sample k of one policy against sample k + 1 (mod S) of the other: their random streams differ, so the
    # two responses are independent draws (with the same stream, common random numbers couple them, and in a
    # cyclic game the mean over coupled pairs is not the win rate of independent draws); S = 1 cannot do this
    independent_pairs: bool = True
    bootstrap: int = 1000  # resamples (over prompts) for the exploitability intervals
    best_of_n: int = 4  # reference best-of-n exploiter (judges that are not class-level); 0: off
    seed: int = 0

    def __post_init__(self) -> None:
        check(
            self.samples_per_prompt >= 1, "samples_per_prompt", f"must be >= 1, got {self.samples_per_prompt}"
        )
        check(self.max_new_tokens >= 1, "max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        check(
            self.temperature > 0 and self.temperature != float("inf"),
            "temperature",
            f"must be a finite number > 0, got {self.temperature}",
        )
        check(self.top_k >= 0, "top_k", f"must be >= 0 (0 disables it), got {self.top_k}")
        check(0.0 < self.top_p <= 1.0, "top_p", f"must be in (0, 1], got {self.top_p}")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.max_prompt_tokens is None or self.max_prompt_tokens >= 1, "max_prompt_tokens",
              f"must be >= 1 (or null), got {self.max_prompt_tokens}")  # fmt: skip
        check(self.interval in INTERVAL_METHODS, "interval", f"must be one of {list(INTERVAL_METHODS)}, got "
              f"{self.interval!r}")  # fmt: skip
        check(0.0 < self.confidence < 1.0, "confidence", f"must be in (0, 1), got {self.confidence}")
        check(
            self.bootstrap >= 0,
            "bootstrap",
            f"must be >= 0 (0: no exploitability interval), got {self.bootstrap}",
        )
        check(
            self.best_of_n >= 0,
            "best_of_n",
            f"must be >= 0 (0: no best-of-n exploiter), got {self.best_of_n}",
        )
        check(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")

    @property
    def is_exact(self) -> bool:
        """True when responses are drawn from the policies themselves (temperature 1, no cut)."""
        return self.temperature == 1.0 and self.top_k == 0 and self.top_p == 1.0

    def sampling(self):  # -> nlhf.sampling.SamplingConfig
        """The :class:`nlhf.sampling.SamplingConfig` the tournament samples with."""
        from nlhf.sampling.config import SamplingConfig

        return SamplingConfig(
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            seed=self.seed,
        )
