"""What a tournament returns: :class:`TournamentResult` (numpy arrays, JSON and markdown forms).

numpy only (importing this module does not import torch). Conventions: index ``i`` is
``names[i]``; ``win_rate[i, j]`` is the mean judge probability P(policy i's response beats
policy j's) over the shared prompts, with ``win_rate[i, i] = 1/2`` and no interval on the
diagonal (``n_games[i, i] = 0``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

INTERVAL_LABELS = {
    "cluster_t": "prompt-clustered t",
    "wilson": "Wilson score",
    "clopper_pearson": "Clopper-Pearson (exact)",
}

PAIRING = {
    True: "sample k of one policy paired with sample k + 1 (mod S) of the other on the same prompt (different "
    "random streams: independent draws)",
    False: "sample k of one policy paired with sample k of the other on the same prompt (the same random stream: "
    "coupled draws, see the notes)",
}

SEMANTICS = (
    "Win rate (row beats column): the mean judge probability P(row's response > column's response) over "
    "every prompt and sample, {pairing}; the diagonal is 1/2. {interval_text}",
    "KL(pi || mu): Monte Carlo mean over the policy's own samples of sum_t [log pi(y_t | x, y_<t) - "
    "log mu(y_t | x, y_<t)] at temperature 1, with its standard error std/sqrt(n); mu is the reference "
    "policy (for a LoRA policy, its base with the adapter disabled). The reference itself has KL 0 exactly.",
    "Length: response tokens including the end-of-turn token; truncated: the fraction of responses that hit "
    "max_new_tokens without ending.",
)

INTERVAL_TEXT = {
    "cluster_t": "Interval: {confidence:.0%} prompt-clustered t interval: mean +- t(G - 1) x SE, with SE the standard "
    "deviation of the G per-prompt mean probabilities over sqrt(G) (the prompts are the independent units; no "
    "binomial variance is assumed, so probabilities near 1/2 give the narrower interval they support; coverage "
    "checked by simulation in the test suite).",
    "binomial": "Interval: {interval} at {confidence:.0%} on the fractional win count (each comparison counts "
    "P(row > column) of a win) out of the number of comparisons; a probability in [0, 1] has at most the "
    "binomial variance, so the interval is conservative. {clustering}",
}

CLUSTERING = {
    True: "The samples of one prompt are correlated: the interval counts the effective number of comparisons "
    "(n_effective: p(1 - p) over the variance of the mean of the per-prompt means, at most the number of "
    "comparisons), never narrower than counting them as independent.",
    False: "Comparisons on one prompt are treated as independent (cluster_prompts=false).",
}

CLASS_WIN_SEMANTICS = (
    "Class-level win rate (plug-in, class oracles only): pi_row^T P* pi_column with each policy's empirical class "
    "distribution on these prompts: the win rate of independent draws, with the oracle's exact class matrix in "
    "place of sampled pairs (same estimand, less noise). Interval: {confidence:.0%} percentile bootstrap over "
    "prompts (the same resampled prompts for every policy)."
)

EXPLOIT_SEMANTICS = {
    "class_exact": "Exploitability (exact, class level): max over response classes y of P*(y > pi) - 1/2 on the "
    "policy's empirical class distribution, computed with nlhf.lab.exploitability on the oracle's class "
    "game (THEORY.md Sec. 2); 0 exactly at a Nash equilibrium. Interval: percentile bootstrap over prompts.",
    "pool_best_of_n": "Exploitability (lower bound, no class-level oracle): the best win rate against the "
    "policy achieved by another policy of the pool or by a best-of-n response of the reference (n reference "
    "samples, the one the judge prefers most against the policy's response), minus 1/2. Interval: percentile "
    "bootstrap over prompts.",
    "pool": "Exploitability (lower bound, no class-level oracle and no reference best-of-n): the best win rate "
    "against the policy achieved by another policy of the pool, minus 1/2. Interval: percentile bootstrap over "
    "prompts.",
}


def _fmt(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _plain(value: Any) -> Any:
    """numpy arrays / scalars and NaN -> JSON-ready Python (NaN becomes None)."""
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class TournamentResult:
    """A round-robin tournament's numbers (see :mod:`nlhf.eval.tournament` for how each is computed).

    Shapes: n policies, N = len(prompts) * samples_per_prompt comparisons per ordered pair,
    K response classes.
    """

    names: list[str]
    win_rate: np.ndarray  # (n, n) mean judge probability P(row beats column); diagonal 1/2
    wins: np.ndarray  # (n, n) float, expected wins of the row: the sum of the judge's P(row > column)
    n_games: np.ndarray  # (n, n) int, comparisons per ordered pair (0 on the diagonal)
    win_low: np.ndarray  # (n, n) interval on wins / n_games (nan on the diagonal)
    win_high: np.ndarray  # (n, n)
    kl: np.ndarray  # (n,) Monte Carlo KL(pi || mu) (nan where no reference)
    kl_se: np.ndarray  # (n,) its standard error
    mean_length: np.ndarray  # (n,) response tokens (end-of-turn included)
    truncated: np.ndarray  # (n,) fraction of responses cut at max_new_tokens
    exploitability: np.ndarray  # (n,)
    exploit_low: np.ndarray  # (n,) bootstrap interval (nan when cfg.bootstrap == 0)
    exploit_high: np.ndarray  # (n,)
    exploitability_method: str  # "class_exact" | "pool_best_of_n" | "pool"
    class_distribution: np.ndarray | None  # (n, K) or None (judge without classes)
    class_names: tuple[str, ...] | None
    judge: str
    interval: str  # "wilson" | "clopper_pearson"
    config: Any  # TournamentConfig
    prompts: list[Any] = field(default_factory=list)  # the n_prompts prompts (str or messages)
    responses: list[list[str]] = field(default_factory=list)  # [policy][prompt * S + k] response texts
    response_lengths: list[list[int]] = field(default_factory=list)  # [policy][prompt * S + k] tokens
    pair_probs: np.ndarray | None = None  # (n, n, N) judge probabilities per comparison (diagonal 1/2)
    reference: str | None = None  # name of mu (None when given outside the pool or absent)
    exploit_details: dict[str, Any] = field(default_factory=dict)  # pool_best, pool_best_name, best_of_n_win
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    n_effective: np.ndarray | None = None  # (n, n) float, comparisons the interval counts (None: n_games)
    win_se: np.ndarray | None = None  # (n, n) standard error of each win rate (cluster or binomial)
    class_labels: np.ndarray | None = None  # (n, n_prompts, S) int class of every sample (class oracles)
    class_P: np.ndarray | None = None  # (K, K) the class oracle's preference matrix
    class_win_rate: np.ndarray | None = None  # (n, n) plug-in pi_i^T P* pi_j (class oracles)
    class_win_low: np.ndarray | None = None  # (n, n) its bootstrap interval
    class_win_high: np.ndarray | None = None
    independent_pairs: bool = False  # sample k vs sample k + 1 (independent streams)

    # ------------------------------------------------------------------ access

    @property
    def n(self) -> int:
        return len(self.names)

    @property
    def samples_per_prompt(self) -> int:
        return int(self.config.samples_per_prompt)

    @property
    def confidence(self) -> float:
        return float(self.config.confidence)

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"no policy named {name!r} in the tournament (policies: {self.names})") from None

    def responses_of(self, name: str) -> list[list[str]]:
        """The responses of policy ``name`` as [prompt][sample] texts."""
        flat = self.responses[self.index(name)]
        S = self.samples_per_prompt
        return [flat[p * S : (p + 1) * S] for p in range(len(self.prompts))]

    def sample_records(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per sampled response: policy, prompt index, sample, prompt, response, length."""
        from nlhf.data.schema import prompt_text

        S = self.samples_per_prompt
        out = []
        for i, name in enumerate(self.names):
            for r, text in enumerate(self.responses[i]):
                p, k = divmod(r, S)
                out.append(
                    {
                        "policy": name,
                        "prompt_index": p,
                        "sample": k,
                        "prompt": prompt_text(self.prompts[p]),
                        "response": text,
                        "length": self.response_lengths[i][r] if self.response_lengths else None,
                    }
                )
        return out

    def semantics(self) -> list[str]:
        """How each number was computed, in words (for the report)."""
        if self.interval == "cluster_t":
            interval_text = INTERVAL_TEXT["cluster_t"].format(confidence=self.confidence)
        else:
            interval_text = INTERVAL_TEXT["binomial"].format(
                interval=INTERVAL_LABELS.get(self.interval, self.interval),
                confidence=self.confidence,
                clustering=CLUSTERING[bool(getattr(self.config, "cluster_prompts", False))],
            )
        lines = [
            SEMANTICS[0].format(pairing=PAIRING[bool(self.independent_pairs)], interval_text=interval_text),
            SEMANTICS[1],
            SEMANTICS[2],
            EXPLOIT_SEMANTICS.get(self.exploitability_method, self.exploitability_method),
        ]
        if self.class_win_rate is not None:
            lines.append(CLASS_WIN_SEMANTICS.format(confidence=self.confidence))
        if self.exploitability_method == "pool_best_of_n":
            m = self.config.best_of_n
            lines[-1] = (
                lines[-1].replace("best-of-n", f"best-of-{m}").replace("(n reference", f"({m} reference")
            )
        return lines

    # ------------------------------------------------------------------ forms

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no response texts, no per-comparison probabilities); NaN -> null."""
        from nlhf.config import to_dict

        n = self.n
        policies = []
        for i, name in enumerate(self.names):
            row = {
                "name": name,
                "kl": self.kl[i],
                "kl_se": self.kl_se[i],
                "mean_length": self.mean_length[i],
                "truncated": self.truncated[i],
                "exploitability": self.exploitability[i],
                "exploit_low": self.exploit_low[i],
                "exploit_high": self.exploit_high[i],
            }
            if self.class_distribution is not None:
                row["class_distribution"] = dict(zip(self.class_names or (), self.class_distribution[i]))
            policies.append(row)
        return _plain(
            {
                "names": self.names,
                "judge": self.judge,
                "reference": self.reference,
                "interval": self.interval,
                "confidence": self.confidence,
                "n_prompts": len(self.prompts),
                "samples_per_prompt": self.samples_per_prompt,
                "win_rate": self.win_rate,
                "wins": np.round(self.wins.astype(float), 4),
                "n_games": self.n_games.astype(int),
                "n_effective": np.round(self.n_effective, 2) if self.n_effective is not None else None,
                "win_low": self.win_low,
                "win_high": self.win_high,
                "win_se": self.win_se,
                "independent_pairs": self.independent_pairs,
                "class_win_rate": self.class_win_rate,
                "class_win_low": self.class_win_low,
                "class_win_high": self.class_win_high,
                "policies": policies,
                "exploitability_method": self.exploitability_method,
                "exploit_details": self.exploit_details,
                "class_names": list(self.class_names) if self.class_names else None,
                "config": to_dict(self.config),
                "semantics": self.semantics(),
                "notes": self.notes,
                "timings_s": self.timings,
                "n": n,
            }
        )

    def win_rate_markdown(self) -> str:
        """The win-rate matrix as a markdown table: 'p [low, high]' per cell, row beats column."""
        head = "| row beats column | " + " | ".join(self.names) + " |"
        sep = "|---|" + "---|" * self.n
        lines = [head, sep]
        for i, name in enumerate(self.names):
            cells = []
            for j in range(self.n):
                if i == j:
                    cells.append("0.500")
                else:
                    cells.append(f"{_fmt(self.win_rate[i, j])} [{_fmt(self.win_low[i, j])}, "
                                 f"{_fmt(self.win_high[i, j])}]")  # fmt: skip
            lines.append(f"| **{name}** | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def class_win_rate_markdown(self) -> str:
        """The plug-in class-level win-rate matrix (class oracles), 'p [low, high]' per cell; '' without it."""
        if self.class_win_rate is None:
            return ""
        head = "| row beats column (class level) | " + " | ".join(self.names) + " |"
        lines = [head, "|---|" + "---|" * self.n]
        for i, name in enumerate(self.names):
            cells = ["0.500" if i == j else f"{_fmt(self.class_win_rate[i, j])} [{_fmt(self.class_win_low[i, j])}, "
                     f"{_fmt(self.class_win_high[i, j])}]" for j in range(self.n)]  # fmt: skip
            lines.append(f"| **{name}** | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def policy_markdown(self) -> str:
        """Per-policy numbers as a markdown table (KL, length, truncation, exploitability, classes)."""
        classes = list(self.class_names) if self.class_distribution is not None and self.class_names else []
        head = "| policy | KL(pi \\|\\| mu) ± SE | length | truncated | exploitability [interval] |"
        head += "".join(f" {c} |" for c in classes)
        lines = [head, "|---|---|---|---|---|" + "---|" * len(classes)]
        for i, name in enumerate(self.names):
            kl = "n/a" if math.isnan(self.kl[i]) else f"{self.kl[i]:.3f} ± {self.kl_se[i]:.3f}"
            row = (f"| **{name}** | {kl} | {self.mean_length[i]:.1f} | {self.truncated[i]:.2f} | "
                   f"{_fmt(self.exploitability[i])} [{_fmt(self.exploit_low[i])}, {_fmt(self.exploit_high[i])}] |")  # fmt: skip
            if classes:
                row += "".join(f" {v:.2f} |" for v in self.class_distribution[i])
            lines.append(row)
        return "\n".join(lines)

    def to_markdown(self, title: str = "nlhf tournament") -> str:
        """A markdown report: setup, the two tables, and what each number means."""
        cfg = self.config
        setup = (
            f"Judge: **{self.judge}**; {len(self.prompts)} prompts x {cfg.samples_per_prompt} samples per policy "
            f"(max {cfg.max_new_tokens} new tokens, temperature {cfg.temperature:g}, top_k {cfg.top_k}, "
            f"top_p {cfg.top_p:g}, seed {cfg.seed}); intervals: {INTERVAL_LABELS.get(self.interval, self.interval)} "
            f"at {self.confidence:.0%}; exploitability: {self.exploitability_method}."
        )
        parts = [
            f"# {title}",
            "",
            setup,
            "",
            "## Win rates (row beats column)",
            "",
            self.win_rate_markdown(),
            "",
        ]
        if self.class_win_rate is not None:
            parts += [
                "## Class-level win rates (plug-in, row beats column)",
                "",
                self.class_win_rate_markdown(),
                "",
            ]
        parts += ["## Policies", "", self.policy_markdown(), "", "## How these numbers are computed", ""]
        parts += [f"- {line}" for line in self.semantics()]
        if self.notes:
            parts += ["", "## Notes", ""] + [f"- {note}" for note in self.notes]
        return "\n".join(parts) + "\n"
