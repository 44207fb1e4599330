"""The run's output directory: proved usable before anything trains."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from nlhf.config import save_config
from nlhf.train import checkpoint as ckpt_lib
from nlhf.train.metrics_log import METRICS_FILE


class RunDirError(RuntimeError):
    """The output directory cannot hold the run (unwritable, no disk space, old checkpoints)."""


def check_out_dir(out_dir: str | Path, min_free_bytes: int = 0) -> Path:
    """Create ``out_dir`` and prove it usable *now*, not after an hour of training.

    Writes, fsyncs and deletes a probe file, and checks that at least ``min_free_bytes``
    are free on its file system. Raises :class:`RunDirError` naming the directory.
    """
    out = Path(out_dir)
    if not str(out_dir):
        raise RunDirError("no output directory given (set --out / loop.out_dir)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"output directory {out} cannot be created: {exc.strerror or exc}") from None
    if not out.is_dir():
        raise RunDirError(f"output directory {out} exists and is not a directory")
    probe = out / f".write-probe-{os.getpid()}"
    try:
        with open(probe, "wb") as f:
            f.write(b"nlhf")
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as exc:
        raise RunDirError(f"output directory {out} is not writable: {exc.strerror or exc}") from None
    free = shutil.disk_usage(out).free
    if free < min_free_bytes:
        raise RunDirError(
            f"output directory {out}: only {free / 2**20:.0f} MiB free, the run needs at least "
            f"{min_free_bytes / 2**20:.0f} MiB (checkpoints; see loop.min_free_disk_mb, loop.keep_last)"
        )
    return out


def prepare_out_dir(out_dir: Path, loop: Any, model: Any, run_config: Any = None) -> None:
    """The main process's checks and set-up of the run directory, before anything trains.

    Free disk for ``loop.min_free_disk_mb``, or for ``keep_last + 1`` checkpoints of the
    trainable weights and two AdamW moments when checkpoints are saved; old checkpoints are
    an error unless the run resumes (``loop.resume``) or starts over (``loop.overwrite``,
    which deletes them); a fresh run starts a fresh ``metrics.jsonl``; ``run_config`` is
    saved as ``config.yaml``.
    """
    trainable_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    need = loop.min_free_disk_mb * 2**20
    if loop.save_every:  # weights + two AdamW moments per checkpoint, keep_last + 1 on disk at once
        need = max(need, 3 * trainable_bytes * (loop.keep_last + 1))
    check_out_dir(out_dir, need)
    existing = ckpt_lib.list_checkpoints(out_dir)
    if existing and not loop.resume:
        if not loop.overwrite:
            raise RunDirError(
                f"output directory {out_dir} already holds checkpoints (newest: "
                f"{existing[-1][1].name}); pass loop.resume=true to continue the run or "
                "loop.overwrite=true to start again"
            )
        for _, path in existing:
            shutil.rmtree(path)
    if not loop.resume:  # a fresh run starts a fresh log
        (out_dir / METRICS_FILE).unlink(missing_ok=True)
    if run_config is not None:
        save_config(run_config, out_dir / "config.yaml")


__all__ = ["RunDirError", "check_out_dir", "prepare_out_dir"]
