"""Fit the judges: the pairwise preference model, the Bradley-Terry reward model, the general preference model.

``nlhf train-pm``, ``nlhf train-rm`` and ``nlhf train-gpm`` (THEORY.md Sec. 1). One short file on the shared
loop (:mod:`nlhf.train.loop`):

* preference model: P(first > second | x) = sigmoid(f(x, first, second) - f(x, second, first)),
  both orders in one forward; loss :func:`nlhf.losses.preference.bce_preference_loss`
  (binary cross-entropy on the label, soft labels honoured);
* reward model: P(first > second | x) = sigmoid(r(x, first) - r(x, second)), both
  responses in one forward; loss :func:`nlhf.losses.preference.bradley_terry_loss`;
* general preference model (:mod:`nlhf.models.general_preference`): P(first > second | x) =
  sigmoid(v(x, first)^T S v(x, second)), S skew-symmetric, both responses in one forward; loss
  :func:`~nlhf.losses.preference.bce_preference_loss`.

Both losses are per pair, so every pair weighs 1 and the loss of a step is the mean over
all pairs of the global batch. Evaluation: accuracy, log-loss (the mean BCE against the
label) and the expected calibration error with a reliability plot
(:mod:`nlhf.train.calibration`), both over the two orientations of every pair ((a, b,
label) and (b, a, 1 - label), :func:`~nlhf.train.calibration.both_orientations`): with
HH-RLHF every label is 1 (chosen first), and a one-sided ECE would only measure confidence. The run directory ``out`` receives ``config.yaml`` (the
resolved config), ``metrics.jsonl`` and ``tensorboard/`` (during training), checkpoints
``ckpt-<step>/``, then the model (``save_pretrained``: loadable with
``PairwisePreferenceModel.from_pretrained(out)`` / ``RewardModel.from_pretrained(out)``),
``metrics.json`` and ``reliability.png``.

Texts are tokenised with the model's own ``encode`` (the same code its ``prob`` uses at
judging time, so training and judging see identical inputs), one micro-batch at a time.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from nlhf.config import check, load_config, sections_from_dicts, to_dict
from nlhf.data import load_preferences
from nlhf.models.lora import LoraSettings
from nlhf.models.memory import enable_gradient_checkpointing, resolve_auto_dtype
from nlhf.train import loop as loop_lib  # loop_lib.TrainLoop: replaceable in tests
from nlhf.train.checkpoint import write_text_atomic
from nlhf.train.config import LoopConfig, OptimConfig, check_required
from nlhf.train.loop import StepOutput
from nlhf.train.run import METRICS_JSON, start_run

KINDS = ("pm", "rm", "gpm")  # pairwise preference, Bradley-Terry reward, general preference
KIND_NAMES = {"pm": "pairwise_preference", "rm": "reward", "gpm": "general_preference"}
RELIABILITY_PNG = "reliability.png"


@dataclass(frozen=True)
class FitConfig:
    """Everything ``nlhf train-pm`` / ``train-rm`` reads; YAML plus ``key=value`` overrides.

    ``model``: ``"minilm"``, ``"smollm2"``, a local directory (a backbone, or a saved
    preference/reward model to train further) or a hub name. ``eval_data`` is optional:
    without it ``eval_fraction`` of the training pairs (a seeded split) is held out, and
    with neither the final metrics are computed on the training data (and say so).
    """

    data: str = ""  # --data: file, directory or hub name (nlhf.data.load_preferences)
    eval_data: str | None = None  # --eval-data
    model: str = "minilm"  # --model
    out: str = ""  # --out: the run directory
    data_format: str | None = None  # trl | ultrafeedback | hh | pairwise; None: detected
    split: str | None = None  # hub datasets: the training split
    eval_split: str | None = None  # hub datasets: the eval split
    skip_invalid: bool = False  # skip (and count) invalid rows instead of failing
    limit: int | None = None  # use at most this many training pairs
    eval_limit: int | None = None
    eval_fraction: float = 0.0  # held out of `data` when eval_data is not given
    max_length: int | None = None  # tokens per sequence (truncation rule: nlhf.models._encode); None: model's
    pooling: Literal["auto", "last", "mean", "cls", "segments"] = (
        "auto"  # auto: PM segments/last, RM and GPM mean/last
    )
    rank: int = (
        2  # train-gpm: rotation blocks k of the general preference model (nlhf.models.general_preference)
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on CUDA, else fp32
    gradient_checkpointing: bool = False  # recompute the backbone's activations in backward (same gradients)
    lora: LoraSettings | None = None  # e.g. lora.r=8 enables LoRA
    merge_lora: bool = False  # save the LoRA adapter merged into the backbone
    calibration_bins: int = 10
    pretokenize: bool = (
        True  # tokenise the training pairs once before the loop (as TRL does), not in every step
    )
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=5e-5, warmup_steps=10))
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(micro_batch_size=16, log_every=10))

    def __post_init__(self) -> None:
        sections_from_dicts(self)  # nested sections given as plain dicts
        check(self.limit is None or self.limit > 0, "limit", f"must be > 0, got {self.limit}")
        check(
            self.eval_limit is None or self.eval_limit > 0,
            "eval_limit",
            f"must be > 0, got {self.eval_limit}",
        )
        check(
            0.0 <= self.eval_fraction < 1.0, "eval_fraction", f"must be in [0, 1), got {self.eval_fraction}"
        )
        check(
            self.max_length is None or self.max_length >= 8,
            "max_length",
            f"must be >= 8, got {self.max_length}",
        )
        check(self.rank >= 0, "rank", f"must be >= 0, got {self.rank}")
        check(self.calibration_bins >= 1, "calibration_bins", f"must be >= 1, got {self.calibration_bins}")
        check(
            not self.loop.out_dir or self.loop.out_dir == self.out,
            "loop.out_dir",
            "set `out` (--out) instead",
        )

    def check_complete(self) -> None:
        """The fields without a usable default (called before any data or model loads)."""
        check_required(self, data="--data TRAIN", out="--out DIR", model="--model minilm|smollm2|PATH")


def load_fit_config(
    config_path: str | Path | None = None,
    overrides: Sequence[str] = (),
    **flags: Any,
) -> FitConfig:
    """Defaults, then the YAML file, then ``key=value`` overrides, then non-None ``flags``.

    Unknown keys and wrong types are rejected naming the key (:mod:`nlhf.config`), range
    errors by the dataclasses, missing ``data``/``out`` here: all before anything loads.
    """
    cfg = load_config(FitConfig, config_path, overrides, defaults=to_dict(FitConfig()), flags=flags)
    cfg.check_complete()
    return cfg


# ----------------------------------------------------------------------------- batches and steps


@dataclass(frozen=True)
class EncodedPair:
    """A training pair tokenised before the loop (:func:`pretokenize`): the example and its two rows."""

    example: Any  # PreferenceExample
    rows: tuple[
        Any, Any
    ]  # EncodedInput: PM (x, first, second), (x, second, first); RM (x, first), (x, second)


def pretokenize(model: Any, examples: Sequence[Any], chunk: int = 256) -> list[EncodedPair]:
    """Every pair encoded once with the model's own ``encode_rows`` (the rows ``model.encode`` pads).

    ``FitConfig.pretokenize``: the loop then only pads (:func:`make_collate`), as TRL's
    trainers tokenise the data set before training. Identical batches either way (tested).
    """
    out: list[EncodedPair] = []
    for lo in range(0, len(examples), chunk):
        ex = [examples[i] for i in range(lo, min(lo + chunk, len(examples)))]
        rows = model.encode_rows(
            [e.prompt for e in ex], [e.first for e in ex], [e.second for e in ex]
        )  # (2b,)
        out += [EncodedPair(e, (rows[i], rows[len(ex) + i])) for i, e in enumerate(ex)]
    return out


def make_collate(kind: str, model: Any) -> Any:
    """``list[PreferenceExample | EncodedPair] -> batch`` with the model's own text encoding.

    Batch: ``input_ids``/``attention_mask`` (2B, T): for the preference model rows
    0..B-1 are (x, first, second) and B..2B-1 (x, second, first); for the reward model
    rows 0..B-1 are (x, first) and B..2B-1 (x, second). ``segment_ids`` (2B, T): 0 for
    prompt, special tokens and markers, k for the tokens of response slot k (the
    ``"segments"`` pooling reads them). ``labels`` (B,) float32 = P(first > second);
    ``truncated`` (): rows cut to ``max_length``. Items already tokenised
    (:class:`EncodedPair`, from :func:`pretokenize`) are only padded.
    """
    import torch

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")

    def collate(items: list[Any]) -> dict[str, Any]:
        if items and all(isinstance(it, EncodedPair) for it in items):
            examples = [it.example for it in items]
            enc = model.collate_rows([it.rows[0] for it in items] + [it.rows[1] for it in items])
        else:
            examples = items
            rows = model.encode_rows(
                [e.prompt for e in items], [e.first for e in items], [e.second for e in items]
            )
            enc = model.collate_rows(rows)  # (2B, T): as model.encode (PM) / model.encode(x + x, a + b) (RM)
        return {
            "input_ids": enc["input_ids"],  # (2B, T)
            "attention_mask": enc["attention_mask"],  # (2B, T)
            "segment_ids": enc["segment_ids"],  # (2B, T)
            "labels": torch.tensor([float(e.label) for e in examples], dtype=torch.float32),  # (B,)
            "truncated": torch.tensor(float(enc.get("truncated", 0))),  # ()
        }

    return collate


def preference_logits(kind: str, model: Any, batch: dict[str, Any]) -> Any:
    """The logit of P(first > second) (B,), through ``model(...)`` so DDP synchronises."""
    segments = batch.get("segment_ids")  # (2B, T)
    if kind == "pm":
        return model(
            batch["input_ids"], batch["attention_mask"], segment_ids=segments
        )  # (B,) f(x,a,b) - f(x,b,a)
    if kind == "gpm":
        return model(batch["input_ids"], batch["attention_mask"], segments)  # (B,) v(x,a)^T S v(x,b)
    rewards = model(
        batch["input_ids"], batch["attention_mask"], segments
    )  # (2B,) r(x, first) then r(x, second)
    half = rewards.shape[0] // 2
    return rewards[:half], rewards[half:]


def make_step(kind: str) -> Any:
    """The step function: per-pair loss (B,), weight 1 per pair, accuracy, truncation rate."""
    import torch

    from nlhf.losses.preference import bce_preference_loss, bradley_terry_loss

    def step(model: Any, batch: dict[str, Any], ctx: Any) -> Any:
        labels = batch["labels"]  # (B,)
        if kind in ("pm", "gpm"):
            out = bce_preference_loss(preference_logits(kind, model, batch), labels)
        else:
            r_first, r_second = preference_logits(kind, model, batch)
            out = bradley_terry_loss(r_first, r_second, labels)
        pairs = torch.ones_like(out.loss)  # (B,) every pair weighs 1
        rows = torch.tensor(float(batch["input_ids"].shape[0]))  # () sequences in the batch
        return StepOutput(
            losses=out.loss,  # (B,) BCE per pair
            weights=pairs,
            metrics={
                "accuracy": (out.metrics["accuracy"], pairs),
                "truncated_rate": (batch["truncated"], rows),
            },
            outputs={"prob": out.metrics["prob"].float(), "label": labels.float()},  # (B,) each, eval only
        )

    return step


# ----------------------------------------------------------------------------- the command


def _load_pairs(cfg: FitConfig) -> tuple[Any, Any, str]:
    """Training and evaluation pairs, and what the evaluation runs on."""
    train = load_preferences(
        cfg.data, format=cfg.data_format, split=cfg.split, skip_invalid=cfg.skip_invalid, limit=cfg.limit
    )
    if len(train) == 0:
        raise ValueError(f"{cfg.data}: no training pairs")
    if cfg.eval_data is not None:
        ev = load_preferences(
            cfg.eval_data, format=cfg.data_format, split=cfg.eval_split, skip_invalid=cfg.skip_invalid,
            limit=cfg.eval_limit,
        )  # fmt: skip
        if len(ev) == 0:
            raise ValueError(f"{cfg.eval_data}: no evaluation pairs")
        return train, ev, str(cfg.eval_data)
    if cfg.eval_fraction > 0:
        import numpy as np

        order = np.random.default_rng([cfg.loop.seed, 7]).permutation(len(train))
        n_eval = max(1, int(round(cfg.eval_fraction * len(train))))
        held = set(order[:n_eval].tolist())
        return (
            [e for i, e in enumerate(train) if i not in held],
            [e for i, e in enumerate(train) if i in held],
            f"{cfg.data} (held-out {cfg.eval_fraction:g})",
        )
    warnings.warn(
        "no --eval-data and eval_fraction = 0: the final metrics are on the TRAINING pairs", stacklevel=2
    )
    return train, train, f"{cfg.data} (training pairs: no eval set)"


def _build_model(kind: str, cfg: FitConfig) -> Any:
    from nlhf.models import GeneralPreferenceModel, PairwisePreferenceModel, RewardModel
    from nlhf.models.scorer import HEAD_CONFIG

    cls = {"pm": PairwisePreferenceModel, "rm": RewardModel, "gpm": GeneralPreferenceModel}[kind]
    extra = {"rank": cfg.rank} if kind == "gpm" else {}
    dtype = resolve_auto_dtype(cfg.dtype, cfg.loop.device)
    if (Path(cfg.model).expanduser() / HEAD_CONFIG).is_file():  # a saved judge: train it further
        model = cls.from_pretrained(cfg.model, dtype=dtype, is_trainable=True)
        if cfg.max_length is not None:
            model.max_length = cfg.max_length
    else:
        model = cls.from_backbone(
            cfg.model, pooling=cfg.pooling, lora=cfg.lora, dtype=dtype, max_length=cfg.max_length, **extra
        )
    if cfg.gradient_checkpointing:  # checkpointed layers drop a KV cache: no shared-prefix scoring (PM) then
        enable_gradient_checkpointing(model.backbone)
        if hasattr(model, "share_prompt"):
            model.share_prompt = False
    return model.train()


def run_fit(kind: str, cfg: FitConfig) -> dict[str, Any]:
    """Train a preference (``kind="pm"``) or reward (``"rm"``) model; returns ``metrics.json``'s content.

    Order matters: the config is already validated; the output directory is checked
    (writable, free disk) and the data loaded (errors name file and row) before the model
    is; the seed is set before the head is created, so ``--resume`` rebuilds the same model.
    """
    from accelerate.utils import set_seed

    from nlhf.train.calibration import both_orientations, plot_reliability, reliability_table

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    cfg.check_complete()
    check(cfg.lora is None or cfg.lora.quantize is None, "lora.quantize",
          "train-pm / train-rm do not quantise their backbone (QLoRA is for the policy trainers)")  # fmt: skip
    cfg = dataclasses.replace(cfg, dtype=resolve_auto_dtype(cfg.dtype, cfg.loop.device))  # saved resolved
    out, loop_cfg = start_run(cfg)
    train, evaluation, evaluated_on = _load_pairs(cfg)

    set_seed(cfg.loop.seed)
    model = _build_model(kind, cfg)

    bins = cfg.calibration_bins

    def eval_summary(metrics: dict[str, float], outputs: dict[str, Any]) -> dict[str, float]:
        table = reliability_table(*both_orientations(outputs["prob"].numpy(), outputs["label"].numpy()), bins)
        return {"ece": table.ece}  # over both orientations of every pair

    loop = loop_lib.TrainLoop(
        loop_cfg,
        cfg.optim,
        model,
        pretokenize(model, train) if cfg.pretokenize else train,
        make_collate(kind, model),
        make_step(kind),
        eval_data=evaluation,
        eval_summary=eval_summary,
        run_config=cfg,
    )
    result = loop.run()
    acc = loop.accelerator
    if not result.eval_metrics:  # eval_at_end switched off: evaluate once for metrics.json
        result.eval_metrics = loop.evaluate()
        result.eval_outputs = loop.eval_outputs

    # FSDP: every process takes part in gathering the full weights; only the main one writes them
    full_state = acc.get_state_dict(loop.model) if loop.is_fsdp else None
    summary: dict[str, Any] = {}
    if acc.is_main_process:
        probs, labels = result.eval_outputs["prob"].numpy(), result.eval_outputs["label"].numpy()
        table = reliability_table(
            *both_orientations(probs, labels), bins
        )  # (2N,): (a, b, y) and (b, a, 1 - y)
        plot_reliability(table, out / RELIABILITY_PNG, title=f"{KIND_NAMES[kind].replace('_', ' ')} model, "
                         f"{len(labels)} pairs x 2 orientations (ECE = {table.ece:.3f})")  # fmt: skip
        summary = _fit_summary(kind, cfg, result, table, len(labels), train, evaluation, evaluated_on)
        acc.unwrap_model(loop.model).save_pretrained(out, merge_lora=cfg.merge_lora, state_dict=full_state)
        text = json.dumps(_json_safe(summary), indent=2, allow_nan=False)
        write_text_atomic(out / METRICS_JSON, text + "\n")
    acc.wait_for_everyone()
    return summary


def _fit_summary(
    kind: str,
    cfg: FitConfig,
    result: Any,
    table: Any,
    n_eval: int,
    train: Sequence[Any],
    evaluation: Sequence[Any],
    evaluated_on: str,
) -> dict[str, Any]:
    """``metrics.json``'s content: accuracy, log loss, ECE and the reliability table (``table``), run counters."""
    ev = result.eval_metrics
    return {
        "kind": KIND_NAMES[kind],
        "accuracy": ev["accuracy"],
        "log_loss": ev["loss"],  # mean BCE against the (soft) labels
        "ece": table.ece,
        "n_eval": int(n_eval),
        "eval_data": evaluated_on,
        "truncated_rate": ev.get("truncated_rate", float("nan")),
        "n_train": len(train),
        "skipped_rows": {
            "train": getattr(train, "num_skipped", 0),
            "eval": getattr(evaluation, "num_skipped", 0),
        },
        "steps": result.step,
        "updates": result.updates,
        "nonfinite_steps": result.nonfinite_steps,
        "train": result.train_metrics,
        "calibration": {
            "orientations": 2,  # each pair counted as (a, b, label) and (b, a, 1 - label)
            "bins": cfg.calibration_bins,
            "count": list(table.count),
            "confidence": list(table.confidence),
            "frequency": list(table.frequency),
        },
        "model": cfg.model,
    }


def _json_safe(value: Any) -> Any:
    """NaN/inf -> null, recursively (metrics.json stays strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def command(kind: str) -> Any:
    """The ``nlhf train-pm`` (``kind="pm"``), ``train-rm`` (``"rm"``) or ``train-gpm`` (``"gpm"``) command:
    ``run(args) -> exit code``."""

    def run(args: Any) -> int:
        flags = {"data": args.data, "eval_data": args.eval_data, "model": args.model, "out": args.out}
        overrides = list(args.overrides or [])
        if args.resume:
            overrides.append("loop.resume=true")
        cfg = load_fit_config(args.config, overrides, **flags)
        summary = run_fit(kind, cfg)
        if summary:
            shown = {k: summary[k] for k in ("accuracy", "log_loss", "ece", "n_eval")}
            print(json.dumps({"out": str(cfg.out), **shown}))
        return 0

    return run


def add_arguments(parser: Any) -> None:
    parser.add_argument(
        "--config", help="YAML file with FitConfig keys (data, model, optim, loop, lora, ...)"
    )
    parser.add_argument(
        "--data", help="training pairs: a .jsonl/.json/.parquet/.csv file, directory or hub name"
    )
    parser.add_argument("--eval-data", dest="eval_data", help="evaluation pairs (same formats)")
    parser.add_argument("--model", help="backbone: minilm, smollm2, a local directory or a hub name")
    parser.add_argument("--out", help="run directory (config, logs, checkpoints, model, metrics.json)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, e.g. optim.lr=1e-4 loop.max_steps=200 lora.r=8")  # fmt: skip


__all__ = [
    "FitConfig",
    "load_fit_config",
    "make_collate",
    "pretokenize",
    "EncodedPair",
    "make_step",
    "preference_logits",
    "run_fit",
    "add_arguments",
    "KINDS",
    "METRICS_JSON",
]
