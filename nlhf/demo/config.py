"""The ``nlhf demo`` configuration: :class:`DemoConfig` (every budget knob) and the ``--quick`` preset.

Resolved by :func:`load_demo_config` (defaults < :data:`QUICK` < YAML < ``key=value`` <
flags, :mod:`nlhf.config`) and saved as ``config.yaml`` in the run directory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from nlhf.config import check, load_config, to_dict

TINY = "tiny"  # model / judge_model name of the random test models


ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")


MLP_MODULES = ("gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class DemoConfig:
    """Everything ``nlhf demo`` does, with the budget knobs in view (``--set key=value``, ``--config YAML``).

    Token budget: classes are decided by a response's OPENING (:mod:`nlhf.envs.features`),
    so ``max_new_tokens`` is small; the same limit is used to sample training pairs, to
    train the online policies and in the tournament (a response's class depends on where
    it is cut). ``lora_last_layers``: LoRA only on the last N transformer blocks (0: all),
    so backward stops there (a Llama-style ``model.layers.<i>`` layout is assumed when N > 0).
    """

    # models
    model: str = "smollm2"  # the policy's base model mu: smollm2, tiny, a path or a hub name
    judge_model: str = "minilm"  # PM / RM backbone: minilm, tiny (random 2-layer BERT), a path
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    threads: int = 0  # torch CPU threads (0: torch's default)
    seed: int = 0
    # prompts (nlhf.envs.load_env_prompts)
    n_train_prompts: int = 152  # of the 152 training prompts (round-robin over kinds); 0: all
    n_heldout_prompts: int = 48  # of the 48 held-out prompts (the claims are measured here); 0: all
    # stage 2: reference samples and oracle labels
    # mu's responses per training prompt: 16 (with judge_pairs_per_prompt 56, so the judges see 2x the pairs of
    # 8 responses' all 28) raised the PM's sign agreement with P* on the held-out pair slice from 0.654 to 0.747
    # and moved the Nash-MD target on its class game from exploitability 0.117 to 0.082 (docs/results/README.md)
    samples_per_prompt: int = 16
    max_new_tokens: int = 16
    raters_per_pair: int = 16  # Bernoulli(P*) draws per pair; the label is their mean
    # "all": every C(S, 2) pair of a prompt's samples (28 at S = 8: the judges see 7x the pairs for the same
    # sampling cost; PM sign agreement with P* on the held-out pair slice 0.638 in the default run, against 0.589
    # with "disjoint" pairs (0,1),(2,3),.. and 2 epochs)
    pairing: Literal["disjoint", "all"] = "all"
    pair_eval_fraction: float = 0.15  # training prompts whose pairs only evaluate the judges
    # judge training pairs kept per prompt (0: all), a seeded subset (nlhf.demo.stages.cap_pairs_per_prompt)
    judge_pairs_per_prompt: int = 56
    sample_batch_rows: int = 32  # rows per decoding batch
    # stage 3: preference model and reward model
    # the preference model: "pairwise" reads (x, y, y') as one sequence (nlhf.models.preference_model);
    # "general" embeds each (x, y) once, P = sigmoid(v^T S v'), S skew-symmetric (nlhf.models.general_preference)
    pm_kind: Literal["pairwise", "general"] = "pairwise"
    pm_rank: int = 2  # pm_kind "general": rotation blocks k of the preference embedding (1 + 2k numbers)
    judge_lr: float = 1e-4
    judge_epochs: float = 1.0
    judge_batch_size: int = 16
    judge_max_length: int = 128
    # stage 4: policies (shared)
    lora_r: int = 8
    lora_alpha: float = 16.0
    # LoRA on every block (0) rather than the last 4: on the judges' held-out pair slice, with run 6's judges, both
    # trainers got nearer their judges' class-level targets (mean TV 0.353 -> 0.232) for about 1.11x the training
    # time (benchmarks/policy_levers.py, docs/results/README.md, session 8)
    lora_last_layers: int = 0
    lora_modules: tuple[str, ...] = ATTENTION_MODULES + MLP_MODULES
    policy_lr: float = 1e-3
    # Nash-MD-PG (THEORY Sec. 4)
    nash_steps: int = 40
    nash_batch_size: int = 8  # prompts a step
    # K responses (and K opponents) per prompt, all K^2 pairs judged, leave-one-out baseline (issue 14)
    nash_responses: int = 4
    tau: float = 0.05  # KL strength of Nash-MD (preference units)
    mixture_coef: float = 0.125  # beta: weight of mu in the token-level geometric mixture
    # RLHF (THEORY Sec. 5): critic-free policy gradient (RLOO) or PPO, against the reward model
    rlhf_algorithm: Literal["rlhf_pg", "ppo"] = "rlhf_pg"
    rlhf_steps: int = 40
    rlhf_batch_size: int = 8  # prompts a step
    rlhf_group_size: int = 2  # responses per prompt (leave-one-out baseline)
    rlhf_tau: float = 0.05  # KL strength of RLHF (reward units)
    # offline IPO (THEORY Sec. 5), summed log-probs
    ipo_tau: float = 0.1
    ipo_pairs: int = 544  # a seeded random subset of the training pairs (0: all); mu's log-probs are computed for these only
    ipo_epochs: float = 1.0
    ipo_batch_size: int = 8
    # the sampling-distribution section (issue 15, nlhf.demo.sampling_dependence): a reward model and a
    # preference model trained on each of two resampled pair sets; 0 turns the section off
    nu_pairs: int = 640
    # stage 5: tournament under the oracle on the held-out prompts
    eval_samples_per_prompt: int = 6
    eval_batch_size: int = 32  # rows per decoding / judging batch in the tournament (and the online judges)
    bootstrap: int = 1000
    confidence: float = 0.95
    # win-rate intervals: "auto" = prompt-clustered t for the oracle's probabilities (nlhf.eval.intervals)
    interval: Literal["auto", "cluster_t", "wilson", "clopper_pearson"] = "auto"
    # what the run claims: False for --quick (a smoke run)
    claims: bool = True
    lab: bool = False  # also run the exact lab showcase (nlhf.demo.run_lab_showcase) as a section

    def __post_init__(self) -> None:
        for key in ("n_train_prompts", "n_heldout_prompts"):
            check(getattr(self, key) >= 0, key, f"must be >= 0 (0: all), got {getattr(self, key)}")
        check(self.samples_per_prompt >= 2 and self.samples_per_prompt % 2 == 0, "samples_per_prompt",
              f"must be an even number >= 2 (responses are paired), got {self.samples_per_prompt}")  # fmt: skip
        check(self.max_new_tokens >= 1, "max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        check(self.raters_per_pair >= 1, "raters_per_pair", f"must be >= 1, got {self.raters_per_pair}")
        check(0.0 < self.pair_eval_fraction < 1.0, "pair_eval_fraction",
              f"must be in (0, 1), got {self.pair_eval_fraction}")  # fmt: skip
        for key in ("sample_batch_rows", "judge_batch_size", "nash_batch_size", "nash_responses", "rlhf_batch_size",
                    "ipo_batch_size", "eval_batch_size", "nash_steps", "rlhf_steps", "lora_r",
                    "eval_samples_per_prompt"):  # fmt: skip
            check(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        check(self.judge_pairs_per_prompt >= 0, "judge_pairs_per_prompt",
              f"must be >= 0 (0: all), got {self.judge_pairs_per_prompt}")  # fmt: skip
        check(self.ipo_pairs >= 0, "ipo_pairs", f"must be >= 0 (0: all), got {self.ipo_pairs}")
        check(
            self.nu_pairs >= 0,
            "nu_pairs",
            f"must be >= 0 (0: no sampling-distribution section), got {self.nu_pairs}",
        )
        for key in ("judge_lr", "policy_lr", "tau", "rlhf_tau", "ipo_tau", "judge_epochs", "ipo_epochs"):
            value = getattr(self, key)
            check(value > 0 and math.isfinite(value), key, f"must be a finite number > 0, got {value}")
        check(0.0 <= self.mixture_coef <= 1.0, "mixture_coef", f"must be in [0, 1], got {self.mixture_coef}")
        check(self.rlhf_group_size >= 2, "rlhf_group_size", f"must be >= 2, got {self.rlhf_group_size}")
        check(
            self.lora_last_layers >= 0,
            "lora_last_layers",
            f"must be >= 0 (0: all), got {self.lora_last_layers}",
        )
        check(len(self.lora_modules) > 0, "lora_modules", "must name at least one module")
        check(self.pm_rank >= 0, "pm_rank", f"must be >= 0, got {self.pm_rank}")
        check(self.judge_max_length >= 16, "judge_max_length", f"must be >= 16, got {self.judge_max_length}")
        check(self.threads >= 0, "threads", f"must be >= 0, got {self.threads}")


# ``nlhf demo --quick``: every stage on a few prompts and steps; makes no significance claim.
QUICK: dict[str, Any] = {
    "n_train_prompts": 16,
    "n_heldout_prompts": 8,
    "samples_per_prompt": 2,
    "max_new_tokens": 16,
    "raters_per_pair": 1,
    "pair_eval_fraction": 0.25,
    "judge_epochs": 1.0,
    "nash_steps": 2,
    "nash_batch_size": 4,
    "rlhf_steps": 2,
    "rlhf_batch_size": 2,
    "ipo_epochs": 1.0,
    "ipo_pairs": 0,
    "ipo_batch_size": 4,
    "eval_samples_per_prompt": 1,
    "nu_pairs": 16,
    "bootstrap": 100,
    "claims": False,
}


# ``nlhf demo --budget long`` (issue 14): the default run with 4x the policy-gradient steps, 2 IPO epochs and
# 12 tournament samples per held-out prompt; everything else (prompts, judges, oracle, tau, lr) unchanged.
# Fixed before its first run (docs/results/README.md: the pre-registration); about 45 min on 2 idle cores with
# LoRA on the last 4 blocks (run 7: 58 min, partly beside other jobs); with LoRA on every block about 65 min by
# run 8's stage times (not run).
LONG: dict[str, Any] = {
    "nash_steps": 160,
    "rlhf_steps": 160,
    "ipo_epochs": 2.0,
    "eval_samples_per_prompt": 12,
}

BUDGETS: dict[str, dict[str, Any]] = {"default": {}, "long": LONG}


def load_demo_config(
    config_path: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    quick: bool = False,
    budget: str = "default",
    **flags: Any,
) -> DemoConfig:
    """Defaults < :data:`QUICK` (with ``quick``) or the ``budget`` preset (:data:`BUDGETS`) < the YAML file <
    ``key=value`` overrides < non-None flags."""
    if budget not in BUDGETS:
        raise ValueError(f"budget: must be one of {sorted(BUDGETS)}, got {budget!r}")
    if quick and budget != "default":
        raise ValueError(f"--quick and --budget {budget} exclude each other (--quick is a smoke run)")
    defaults = to_dict(DemoConfig())
    defaults.update(BUDGETS[budget])
    if quick:
        defaults.update(QUICK)
    return load_config(DemoConfig, config_path, overrides, defaults=defaults, flags=flags)
