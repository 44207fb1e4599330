"""The former home of the ``nlhf demo`` pipeline, now the :mod:`nlhf.demo` package; its names are
re-exported here so that ``from nlhf.pipeline import ...`` keeps working."""

from __future__ import annotations

from nlhf.demo.config import ATTENTION_MODULES, MLP_MODULES, QUICK, TINY, DemoConfig, load_demo_config
from nlhf.demo.report import (
    claims_markdown,
    class_targets,
    evaluate_claims,
    plot_learning_curves,
    report_sections,
    targets_markdown,
)
from nlhf.demo.run import run_demo
from nlhf.demo.stages import (
    StageClock,
    fit_judge,
    ipo_subset,
    judge_vs_oracle,
    label_pairs,
    load_policy_model,
    lora_settings,
    pick_prompts,
    response_pairs,
    sample_responses,
    split_pairs_by_prompt,
    tiny_encoder_dir,
    tournament_config,
    train_ipo,
    train_nash_md,
    train_rlhf,
)

__all__ = [
    "ATTENTION_MODULES", "MLP_MODULES", "QUICK", "TINY", "DemoConfig", "StageClock", "class_targets",
    "claims_markdown", "evaluate_claims", "fit_judge", "ipo_subset", "judge_vs_oracle", "label_pairs",
    "load_demo_config", "load_policy_model", "lora_settings", "pick_prompts", "plot_learning_curves",
    "report_sections", "response_pairs", "run_demo", "sample_responses", "split_pairs_by_prompt",
    "targets_markdown", "tiny_encoder_dir", "tournament_config", "train_ipo", "train_nash_md", "train_rlhf",
]  # fmt: skip
