"""The run's output directory: proved usable before anything trains."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


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


__all__ = ["RunDirError", "check_out_dir"]
