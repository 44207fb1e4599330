"""The model card: ``README.md`` in the saved model's directory, written from the run directory's own files.

:func:`write_model_card` reads ``config.yaml`` (the resolved config every run saves) and
``metrics.json`` (its summary, written last) from the run directory, and writes the card
into the policy directory (``out/policy``: ``summary["policy_dir"]``) or, for a preference
or reward model (``nlhf train-pm`` / ``train-rm``, saved into the run directory itself),
into the run directory. The card has a YAML front matter the Hugging Face Hub reads
(``library_name``, ``base_model`` when the base is a hub model, ``tags``) and a body with
the base model, the algorithm and its hyper-parameters (tau, beta = ``mixture_coef``, eta,
... whatever the config has), the data (prompts / pairs files, the judge or reward model),
the steps, the final metrics, the command line and the nlhf version. Uploading that
directory is ``huggingface_hub.HfApi().upload_folder(folder_path=..., repo_id=...)``.
"""

from __future__ import annotations

import json
import math
import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from nlhf._version import __version__
from nlhf.train.checkpoint import write_text_atomic

CARD_FILE = "README.md"

# Spec aliases of nlhf.models.loading -> the hub model they stand for (used as base_model).
HUB_ALIASES = {
    "smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "minilm": "sentence-transformers/all-MiniLM-L6-v2",
}

# Config keys shown as hyper-parameters, in this order, when the config has them (label: meaning).
HYPER = {
    "loss": "offline loss",
    "algorithm": "algorithm",
    "tau": "tau (KL strength; TRL's beta)",
    "mixture_coef": "beta (mixture with the reference)",
    "eta": "eta (step size)",
    "ema_decay": "EMA decay",
    "reduction": "sequence log-prob reduction",
    "label_smoothing": "label smoothing",
    "responses_per_prompt": "responses per prompt",
    "group_size": "group size",
    "ppo_epochs": "PPO epochs",
    "clip_eps": "PPO clip",
    "steps_per_iteration": "steps per iteration",
    "beta": "beta (DNO: DPO strength against pi_t)",
    "margin": "win-rate margin (DNO)",
    "label": "pair label (DNO: hard or soft)",
    "magnet_every": "magnet refreshed every (iterations, MPO)",
    "pooling": "pooling",
}
DATA_KEYS = ("data", "eval_data", "prompts", "eval_prompts", "judge", "reward")
METRICS_SHOWN = 12  # metrics per split in the card's table


def base_model_id(spec: str) -> str | None:
    """The hub id ``spec`` names (an alias of :data:`HUB_ALIASES` resolved), None for a local path, a GGUF file or ``tiny``."""
    spec = str(spec or "")
    if spec in HUB_ALIASES:
        return HUB_ALIASES[spec]
    if not spec or spec.split(":")[0] == "tiny" or spec.endswith(".gguf") or Path(spec).expanduser().exists():
        return None
    parts = spec.split("/")
    return spec if len(parts) == 2 and all(parts) and not spec.startswith((".", "~")) else None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if not math.isfinite(value) else f"{value:.4g}"
    if value is None or value == "":
        return "(not set)"
    return f"`{value}`" if isinstance(value, str) else str(value)


def _metrics_rows(summary: Mapping[str, Any]) -> list[str]:
    """``| split | metric | value |`` rows: the policy trainers' ``train`` / ``eval`` dicts, or a PM/RM's scores."""
    rows = []
    for split in ("train", "eval"):
        metrics = summary.get(split)
        if isinstance(metrics, Mapping):
            rows += [f"| {split} | {k} | {_fmt(v)} |" for k, v in list(metrics.items())[:METRICS_SHOWN]]
    for key in ("accuracy", "log_loss", "ece", "n_eval") if summary.get("kind") else ():  # a PM / RM
        if key in summary:
            rows.append(f"| eval | {key} | {_fmt(summary[key])} |")
    return rows


def render_model_card(family: str, config: Mapping[str, Any], summary: Mapping[str, Any], command: str | None,
                      passed: tuple[str, ...] = ()) -> str:  # fmt: skip
    """The card's text (front matter + markdown) for a run of ``nlhf train FAMILY`` (or ``train-pm`` / ``train-rm``).

    ``passed``: config keys (``model``, ``data``, ``prompts``, ``judge``, ``reward``...) whose value was a
    Python object handed to the run function instead: shown as "(passed in Python)", never as the config's
    default (no ``base_model`` for a model passed in Python)."""
    config = {**config, **{key: "" for key in passed}}
    base = base_model_id(config.get("model", ""))
    algorithm = str(config.get("algorithm") or config.get("loss") or summary.get("kind") or family)
    tags = list(dict.fromkeys(["nlhf", family, algorithm.replace("_", "-"), "preference-learning"]))
    adapter = bool(config.get("lora")) and config.get("merge_adapter") is False  # saved as a LoRA adapter
    front: dict[str, Any] = {"library_name": "peft" if adapter else "transformers"}
    if base:
        front["base_model"] = base
    front["tags"] = tags
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
             f"# {family}: a model trained with nlhf", "",
             f"Trained with nlhf {__version__} (`nlhf {_command_name(family)}`).", "",
             "| | |", "|---|---|", f"| base model | {_fmt(config['model']) if config.get('model') else '(passed in Python)'}"
             + (f" ({base})" if base and base != config.get("model") else "") + " |"]  # fmt: skip
    lines += [f"| {label} | {_fmt(config[key])} |" for key, label in HYPER.items() if key in config]
    optim, loop = config.get("optim") or {}, config.get("loop") or {}
    lines += [
        f"| learning rate | {_fmt(optim.get('lr'))} |",
        f"| LoRA | {_fmt(config['lora']) if config.get('lora') else 'no (full fine-tuning)'} |",
    ]
    lines += [f"| {key.replace('_', ' ')} | {_fmt(config[key]) if config[key] else '(passed in Python)'} |"
              for key in DATA_KEYS if key in config and (config[key] or not key.startswith("eval"))]  # fmt: skip
    lines += [f"| steps | {summary.get('steps', '?')} (micro-batch {loop.get('micro_batch_size')} x "
              f"{loop.get('grad_accum_steps')} accumulation, seed {loop.get('seed')}) |", ""]  # fmt: skip
    rows = _metrics_rows(summary)
    if rows:
        lines += ["## Final metrics", "", "| split | metric | value |", "|---|---|---|", *rows, ""]
    lines += [
        "## Command",
        "",
        "```bash",
        command or f"nlhf {_command_name(family)} --config config.yaml",
        "```",
        "",
    ]
    lines += ["The run directory's `config.yaml` holds the resolved config; "
              f"`nlhf {_command_name(family)} --config config.yaml` repeats the run.", ""]  # fmt: skip
    return "\n".join(lines)


def _command_name(family: str) -> str:
    return family if family in ("train-pm", "train-rm") else f"train {family}"


def write_model_card(
    run_dir: str | Path, family: str, command: str | None = None, passed: tuple[str, ...] = ()
) -> Path:
    """Write ``README.md`` into the saved model's directory from ``run_dir``'s ``config.yaml`` and ``metrics.json``.

    ``family``: the ``nlhf train`` sub-command (``nash-md``, ``dpo``, ...) or ``train-pm`` /
    ``train-rm``; ``command``: the command line (default: the ``--config`` command that repeats
    the run); ``passed``: see :func:`render_model_card`. Returns the card's path; a ``FileNotFoundError``
    naming a missing file.
    """
    run_dir = Path(run_dir)
    for name in ("config.yaml", "metrics.json"):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(
                f"model card: {run_dir / name} does not exist (not a finished run directory)"
            )
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    summary = json.loads((run_dir / "metrics.json").read_text())
    target = Path(summary["policy_dir"]) if summary.get("policy_dir") else run_dir
    path = target / CARD_FILE
    write_text_atomic(path, render_model_card(family, config, summary, command, passed))
    return path


def command_line(words: list[str], args: Any, flags: tuple[str, ...]) -> str:
    """The ``nlhf`` command line of parsed ``args``: ``words`` (``["train", "dpo"]``), ``--config``, the given
    ``flags``, ``--resume`` and the ``KEY=VALUE`` overrides, shell-quoted."""
    parts = ["nlhf", *words]
    if getattr(args, "config", None):
        parts += ["--config", args.config]
    for key in flags:
        if getattr(args, key, None) is not None:
            parts += ["--" + key.replace("_", "-"), str(getattr(args, key))]
    parts += ["--resume"] * bool(getattr(args, "resume", False)) + list(
        getattr(args, "overrides", None) or []
    )
    return " ".join(shlex.quote(p) for p in parts)


def card_after_command(
    run_dir: str | Path | None, family: str, command: str, passed: tuple[str, ...] = ()
) -> Path | None:
    """:func:`write_model_card` after a finished ``nlhf`` command, on the main process only (``RANK`` 0 or unset)."""
    if run_dir is None or int(os.environ.get("RANK", "0")) != 0:
        return None
    return write_model_card(run_dir, family, command, passed)


__all__ = [
    "CARD_FILE",
    "card_after_command",
    "command_line",
    "HUB_ALIASES",
    "base_model_id",
    "render_model_card",
    "write_model_card",
]
