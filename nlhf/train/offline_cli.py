"""``nlhf train FAMILY ...``: one command, one sub-command per training family.

Cheap to import (argparse and dataclasses only): the trainers load inside the command.

Families are rows of :data:`TRAIN_FAMILIES`; a later trainer (the online Nash-MD family,
RLHF) plugs in by adding rows, not by adding a second ``train`` parser::

    TRAIN_FAMILIES["nash-md"] = TrainFamily(
        help="Nash-MD-PG against the geometric mixture (THEORY.md Sec. 4)",
        module="nlhf.train.online", config_class="OnlineConfig", run="run_online",
        fixed={"algorithm": "nash_md_pg"}, flags=("prompts", "eval_prompts", "model", "judge", "out"))

Each family names its config dataclass and its ``run(cfg) -> result`` function by module
path (imported only when the sub-command runs), the config keys that the sub-command fixes
(``nlhf train ipo`` sets ``loss: ipo``; a config file or override that says otherwise is
an error), and which config keys get ``--flag`` options. Every sub-command also takes
``--config YAML``, ``--resume`` and ``KEY=VALUE`` overrides, resolved in the order
defaults < fixed keys < YAML < overrides < flags (a YAML or override value that contradicts
a fixed key is an error).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# What the flags of a family mean (config key -> help); a family lists the ones it takes.
FLAG_HELP: dict[str, str] = {
    "data": "training pairs: a .jsonl/.json/.parquet/.csv file, a directory or a hub name",
    "eval_data": "evaluation pairs (same formats); optional",
    "model": "policy: smollm2, tiny (random test model), a local directory, a .gguf file or a hub name",
    "out": "run directory (config.yaml, metrics.jsonl, checkpoints, policy/, metrics.json)",
    "prompts": "training prompts: any file or dataset load_prompts reads (prompt-only or preference data)",
    "eval_prompts": "held-out prompts (same formats); optional",
    "judge": "the judge: a saved preference model or reward model directory (nlhf train-pm / train-rm)",
    "reward": "the reward model directory (nlhf train-rm)",
}


@dataclass(frozen=True)
class TrainFamily:
    """One ``nlhf train`` sub-command: where its config and run function live, what it fixes."""

    help: str
    module: str  # imported when the sub-command runs
    config_class: str  # a frozen dataclass in `module`
    run: str  # `module.run(cfg) -> result`
    fixed: Mapping[str, Any] = field(default_factory=dict)  # config keys the sub-command sets
    flags: tuple[str, ...] = ("data", "eval_data", "model", "out")  # config keys with a --flag
    summary: str | None = (
        None  # `module.summary(result) -> str` printed at the end (default: JSON of .summary)
    )
    description: str = ""


_OFFLINE = dict(
    module="nlhf.train.offline", config_class="OfflineConfig", run="run_offline", summary="summary_line"
)

TRAIN_FAMILIES: dict[str, TrainFamily] = {
    "dpo": TrainFamily(
        help="offline DPO: -log sigmoid(tau h) per pair (THEORY.md Sec. 5)",
        fixed={"loss": "dpo"},
        description="Offline DPO on preference pairs (hard labels; a pair labelled 0 is turned round).",
        **_OFFLINE,
    ),
    "ipo": TrainFamily(
        help="offline IPO: (h - (p - 1/2)/tau)^2 per pair, soft labels honoured (PsiPO Eq. 17)",
        fixed={"loss": "ipo"},
        description="Offline IPO on preference pairs. reduction=sum (default): tau is THEORY.md's KL "
        "strength; reduction=mean: TRL's length-normalised IPO.",
        **_OFFLINE,
    ),
    "cdpo": TrainFamily(
        help="conservative DPO: DPO with label smoothing (label_smoothing=EPS)",
        fixed={"loss": "cdpo"},
        description="Conservative DPO: labels flipped with probability label_smoothing (set it, e.g. "
        "label_smoothing=0.1).",
        **_OFFLINE,
    ),
}


def _plug_in_families() -> None:
    """The online Nash-MD family and RLHF declare their rows next to their trainers (cheap imports)."""
    from nlhf.train.online import ONLINE_FAMILIES
    from nlhf.train.rlhf import RLHF_FAMILIES

    for name, row in {**ONLINE_FAMILIES, **RLHF_FAMILIES}.items():
        TRAIN_FAMILIES.setdefault(name, TrainFamily(**row))


_plug_in_families()


EPILOG = (
    "Config: defaults < --config YAML < KEY=VALUE overrides < --flags (the sub-command fixes the loss).\n"
    "Examples of overrides: tau=0.1 reduction=mean optim.lr=5e-7 loop.max_steps=200\n"
    "loop.micro_batch_size=4 loop.grad_accum_steps=4 loop.save_every=100 lora.r=8."
)


def resolve_config(
    cls: type,
    config_path: str | Path | None = None,
    overrides: Sequence[str] = (),
    flags: Mapping[str, Any] | None = None,
    fixed: Mapping[str, Any] | None = None,
) -> Any:
    """Build ``cls`` from its defaults < ``fixed`` < YAML < ``key=value`` overrides < non-None ``flags``.

    Resolved by :func:`nlhf.config.load_config` (unknown keys and wrong types are rejected
    naming the key). A ``fixed`` key that the YAML file or the overrides set to another
    value is a :class:`~nlhf.config.ConfigError`: ``nlhf train dpo loss=ipo`` is a
    contradiction, not a choice.
    """
    from nlhf.config import ConfigError, load_config

    fixed = dict(fixed or {})
    cfg = load_config(cls, config_path, overrides, defaults=fixed, flags=flags)
    for key, value in fixed.items():
        if getattr(cfg, key) != value:
            raise ConfigError(
                f"{key}: this sub-command sets {key}={value}, but the config says {key}={getattr(cfg, key)!r}"
            )
    return cfg


def _runner(name: str) -> Any:
    def run(args: Any) -> int:
        family = TRAIN_FAMILIES[name]
        module = importlib.import_module(family.module)
        cls = getattr(module, family.config_class)
        overrides = list(args.overrides or [])
        if args.resume:
            overrides.append("loop.resume=true")
        flags = {key: getattr(args, key, None) for key in family.flags}
        cfg = resolve_config(cls, args.config, overrides, flags, family.fixed)
        result = getattr(module, family.run)(cfg)
        if family.summary is not None:
            line = getattr(module, family.summary)(result)
        else:
            line = json.dumps(getattr(result, "summary", {}), default=str)
        if line:
            print(line)
        return 0

    return run


def register(subparsers: Any) -> None:
    """Add ``train`` (with one sub-command per row of :data:`TRAIN_FAMILIES`) to an argparse collection."""
    import argparse

    train = subparsers.add_parser(
        "train",
        help="train a policy: " + " | ".join(TRAIN_FAMILIES),
        description="Train a policy from preferences. One sub-command per algorithm family.",
    )
    families = train.add_subparsers(dest="family", metavar="FAMILY")
    train.set_defaults(func=lambda args: (train.print_help(), 2)[1])
    for name, family in TRAIN_FAMILIES.items():
        parser = families.add_parser(
            name,
            help=family.help,
            description=(family.description or family.help),
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.add_argument("--config", help="YAML file with the config's keys")
        for key in family.flags:
            parser.add_argument("--" + key.replace("_", "-"), dest=key, help=FLAG_HELP.get(key, key))
        parser.add_argument(
            "--resume", action="store_true", help="continue from the newest checkpoint in --out"
        )
        parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
        parser.set_defaults(func=_runner(name))


__all__ = ["TRAIN_FAMILIES", "TrainFamily", "FLAG_HELP", "resolve_config", "register"]
