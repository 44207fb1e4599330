"""The loop's metrics: weighted sums, their means, the window between log lines, and where they go.

A metric is a ``(sum, weight)`` pair summed over micro-batches and processes before
dividing (:func:`accumulate`, :func:`weighted_means`), never a mean of means.
:class:`MetricsLogger` writes console lines, ``metrics.jsonl``, TensorBoard (its own writer,
which purges the records of a killed run on resume) and the other trackers of
``loop.report_to`` (wandb, trackio, mlflow) through accelerate's ``Accelerator(log_with=...)``:
:func:`start_trackers` (``init_trackers`` with the run's config, flattened), ``accelerator.log``
at every record under ``<split>/<metric>``, :func:`finish_trackers` at the end (not
``end_training``, which would tear down the process group before the policy is saved).
A resumed run starts a new run in those trackers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from nlhf.config import to_dict
from nlhf.train import checkpoint as ckpt_lib

METRICS_FILE = "metrics.jsonl"


class MetricsLogger:
    """Console lines, ``metrics.jsonl`` and TensorBoard, written by the main process only.

    On resume from step ``s``, records after ``s`` (written by the killed run after its
    last checkpoint) are dropped from the JSONL file and purged from TensorBoard, so the
    logs of a resumed run read like those of an uninterrupted one.
    """

    def __init__(
        self,
        out_dir: Path,
        enabled: bool = True,
        tensorboard: bool = True,
        resume_step: int | None = None,
        accelerator: Any = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.enabled = enabled
        self.tensorboard = tensorboard
        self.accelerator = accelerator  # its trackers (wandb, trackio, mlflow) get every record
        self.resume_step = resume_step
        self._writer: Any = None  # SummaryWriter, created at the first record
        self.console: Callable[[str], None] = print
        if enabled and resume_step is not None and (self.out_dir / METRICS_FILE).is_file():
            kept = [
                line
                for line in (self.out_dir / METRICS_FILE).read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= resume_step
            ]
            ckpt_lib.write_text_atomic(self.out_dir / METRICS_FILE, "".join(x + "\n" for x in kept))

    def log(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": step, "split": split, **{k: float(v) for k, v in metrics.items()}}
        with open(self.out_dir / METRICS_FILE, "a") as f:
            f.write(json.dumps(record) + "\n")
        shown = " ".join(f"{k}={fmt_metric(v)}" for k, v in metrics.items())
        self.console(f"[{split}] step {step}: {shown}")
        if self.tensorboard:
            if self._writer is None:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=self.resume_step)
            for key, value in metrics.items():
                self._writer.add_scalar(f"{split}/{key}", float(value), step)
        if self.accelerator is not None and getattr(self.accelerator, "trackers", None):
            self.accelerator.log({f"{split}/{k}": float(v) for k, v in metrics.items()}, step=step)

    def close(self) -> None:
        if self.enabled and self.accelerator is not None:
            finish_trackers(self.accelerator)
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None


def start_trackers(
    accelerator: Any, out_dir: Path, run_config: Any = None, project: str = "nlhf"
) -> list[str]:
    """Start accelerate's trackers (``Accelerator(log_with=...)``) on the main process; returns their names.

    The run is named after ``out_dir``; its config (flattened ``section.key``) is stored as
    hyper-parameters. wandb writes under ``out_dir`` unless ``WANDB_DIR`` says otherwise
    (``WANDB_MODE=offline`` for no network); mlflow goes where ``MLFLOW_TRACKING_URI`` points.
    """
    if not getattr(accelerator, "log_with", None) or not accelerator.is_main_process:
        return []
    name = Path(out_dir).name or project
    init_kwargs = {
        "wandb": {"name": name, "dir": os.environ.get("WANDB_DIR") or str(out_dir)},
        "mlflow": {"run_name": name},
        "trackio": {"name": name},
    }
    config = flat_config(run_config) if run_config is not None else None
    accelerator.init_trackers(project, config=config, init_kwargs=init_kwargs)
    return [tracker.name for tracker in accelerator.trackers]


def finish_trackers(accelerator: Any) -> None:
    """Finish (flush and close) the trackers :func:`start_trackers` started, once."""
    trackers = list(getattr(accelerator, "trackers", None) or ())
    for tracker in trackers:
        tracker.finish()
    if trackers:
        accelerator.trackers = []


def flat_config(cfg: Any) -> dict[str, Any]:
    """A config dataclass as ``{"loop.max_steps": 2, ...}``: numbers, strings, booleans; anything else as text."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                walk(f"{prefix}{key}.", item)
        elif value is None or isinstance(value, bool | int | float | str):
            flat[prefix.rstrip(".")] = value if value is not None else "null"
        else:
            flat[prefix.rstrip(".")] = json.dumps(value, default=str)

    walk("", to_dict(cfg))
    return flat


def fmt_metric(v: float) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def accumulate(sums: dict[str, Any], name: str, value: Any) -> None:
    """``sums[name] += value.sum()`` in float64, detached (value: tensor of any shape or number)."""
    import torch

    total = torch.as_tensor(value).detach().to(dtype=torch.float64).sum().cpu()  # ()
    sums[name] = sums[name] + total if name in sums else total


def weighted_means(totals: Mapping[str, float]) -> dict[str, float]:
    """``{"loss": loss / weight, m: m / m:weight}`` from global sums (NaN where a weight is 0)."""
    out = {"loss": totals["loss"] / totals["weight"] if totals["weight"] > 0 else float("nan")}
    for name, value in totals.items():
        if name in ("loss", "weight") or name.endswith(":weight"):
            continue
        w = totals[f"{name}:weight"]
        out[name] = value / w if w > 0 else float("nan")
    return out


class MetricsWindow:
    """Sums of the step totals between two log lines (weighted means at log time)."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.grad_norms: list[float] = []
        self.skipped = 0

    def add(self, totals: Mapping[str, float], grad_norm: float, skipped: str | None) -> None:
        if skipped is not None:
            self.skipped += 1
            return  # a skipped step's (NaN) loss does not poison the logged means
        for k, v in totals.items():
            self.totals[k] = self.totals.get(k, 0.0) + v
        self.grad_norms.append(grad_norm)

    def means(self) -> dict[str, float]:
        out = weighted_means(self.totals) if self.totals else {"loss": float("nan")}
        out["grad_norm"] = sum(self.grad_norms) / len(self.grad_norms) if self.grad_norms else float("nan")
        if self.skipped:
            out["skipped_steps"] = float(self.skipped)
        return out


__all__ = [
    "METRICS_FILE",
    "MetricsLogger",
    "MetricsWindow",
    "accumulate",
    "finish_trackers",
    "flat_config",
    "fmt_metric",
    "start_trackers",
    "weighted_means",
]
