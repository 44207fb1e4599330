"""The loop's metrics: weighted sums, their means, the window between log lines, and where they go.

A metric is a ``(sum, weight)`` pair summed over micro-batches and processes before
dividing (:func:`accumulate`, :func:`weighted_means`), never a mean of means.
:class:`MetricsLogger` writes console lines, ``metrics.jsonl`` and TensorBoard.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from nlhf.train import checkpoint as ckpt_lib

METRICS_FILE = "metrics.jsonl"


class MetricsLogger:
    """Console lines, ``metrics.jsonl`` and TensorBoard, written by the main process only.

    On resume from step ``s``, records after ``s`` (written by the killed run after its
    last checkpoint) are dropped from the JSONL file and purged from TensorBoard, so the
    logs of a resumed run read like those of an uninterrupted one.
    """

    def __init__(
        self, out_dir: Path, enabled: bool = True, tensorboard: bool = True, resume_step: int | None = None
    ) -> None:
        self.out_dir = Path(out_dir)
        self.enabled = enabled
        self.tensorboard = tensorboard
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

    def close(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None


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


__all__ = ["METRICS_FILE", "MetricsLogger", "MetricsWindow", "accumulate", "fmt_metric", "weighted_means"]
