"""Atomic checkpoints that resume a run bit for bit.

A checkpoint is a directory ``OUT/ckpt-<step>/`` holding everything the continued run
needs to be identical to an uninterrupted one:

==========================  ============================================================
``model.safetensors``       trainable parameters and buffers (the whole model for full
                            fine-tuning, only the adapter for LoRA: frozen weights are
                            rebuilt from the base model at resume)
``optimizer.pt``            the optimiser's ``state_dict`` (AdamW moments, step counts)
``loop.pt``                 the scheduler's (and fp16 grad scaler's) ``state_dict``
``extra.pt``                trainer state: ``{name: obj.state_dict()}`` (EMA opponent, ...),
                            the same on every process, written by the main one
``extra-<rank>.pt``         each process's own trainer state (objects marked
                            ``per_process``: PPO's buffer of the rollouts of its shard)
``rng-<rank>.pt``           each process's RNG states: python, numpy, torch CPU (+ CUDA)
``fsdp/``                   under FSDP, instead of ``model.safetensors`` / ``optimizer.pt``:
                            accelerate's FSDP model and (sharded) optimizer files
``checksums.json``          the SHA-256 and size of every other file, written just before
                            the state file
``trainer_state.json``      loop counters and the data position (epoch, index into the
                            seeded permutation); written last
==========================  ============================================================

Writing is atomic. Every file goes into ``ckpt-<step>.tmp/`` and is fsynced; then the
directory is renamed to ``ckpt-<step>/`` with :func:`os.replace` (atomic on POSIX), the
parent directory is fsynced, and the text file ``latest`` (``ckpt-<step>``) is replaced
atomically. A process killed at any moment leaves either the previous checkpoints intact
plus a ``.tmp`` leftover (ignored by :func:`find_latest`, deleted by the next save), or
the new complete checkpoint. :func:`find_latest` trusts only complete ``ckpt-<step>``
directories (the newest wins; ``latest`` is a pointer for people and tools).

Integrity. A complete checkpoint can still be damaged later (a disk error, a copy cut
short, a file deleted by hand). :func:`verify_checkpoint` compares every file with
``checksums.json``; :func:`find_intact` walks the checkpoints newest first and returns the
newest intact one with the damaged ones it passed (the loop resumes from it and warns in
one line), or raises :class:`CheckpointError` naming them all when none is intact.
Checkpoints written before the checksums existed are taken as they are.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CKPT_PREFIX = "ckpt-"
TMP_SUFFIX = ".tmp"
LATEST = "latest"
STATE_FILE = "trainer_state.json"  # written last: its presence marks a complete checkpoint
CHECKSUMS = "checksums.json"  # {relative path: {"sha256": ..., "bytes": ...}} of every other file
_CHUNK = 1 << 20
_CKPT_RE = re.compile(r"^ckpt-(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or read back; the message names the path."""


# ----------------------------------------------------------------------------- files


def _fsync_dir(path: Path) -> None:
    """Make a rename or a new file inside ``path`` durable (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_file(path: Path, write: Callable[[Any], None]) -> None:
    """Create ``path``, let ``write(fileobj)`` fill it, then flush and fsync it.

    Every checkpoint file goes through here (the resume test wraps this function to kill
    the process half-way through a checkpoint).
    """
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def _save_torch(obj: Any, path: Path) -> None:
    import torch

    _write_file(path, lambda f: torch.save(obj, f))


def _load_torch(path: Path, weights_only: bool = True) -> Any:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as exc:  # corrupt or unreadable file: name it
        raise CheckpointError(f"{path}: cannot be read: {exc}") from exc


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` atomically (temporary file, fsync, rename, fsync dir)."""
    path = Path(path)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    _write_file(tmp, lambda f: f.write(text.encode()))
    os.replace(tmp, path)
    _fsync_dir(path.parent)


# ----------------------------------------------------------------------------- RNG


def capture_rng_state() -> dict[str, Any]:
    """The process's RNG states: python ``random``, numpy's global RNG, torch CPU and CUDA.

    Stored with tensors and plain Python values only, so it loads with
    ``torch.load(weights_only=True)``.
    """
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    import numpy as np
    import torch

    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    np.random.set_state(
        (
            npst["kind"],
            npst["keys"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- model state


def trainable_state_dict(model: Any) -> dict[str, Any]:
    """The parameters that training changes (``requires_grad``) and all persistent buffers.

    Frozen parameters (a LoRA base model, a frozen reference) are left out: they are
    rebuilt identically when the run is restarted. Tensors are cloned to contiguous CPU
    memory (tied weights are stored once per name; loading puts the same values back).
    """
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    params = {name for name, _ in model.named_parameters()}
    out = {}
    for name, tensor in model.state_dict().items():
        if name in trainable or name not in params:
            out[name] = tensor.detach().to("cpu").contiguous().clone()
    return out


def load_trainable_state_dict(model: Any, state: Mapping[str, Any], source: str = "checkpoint") -> None:
    """Load :func:`trainable_state_dict` output back, refusing unknown or missing trainable keys."""
    result = model.load_state_dict(dict(state), strict=False)
    if result.unexpected_keys:
        raise CheckpointError(
            f"{source}: has weights the model does not have: {result.unexpected_keys[:5]} "
            f"(is it from a different model or LoRA config?)"
        )
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    missing = sorted(trainable & set(result.missing_keys))
    if missing:
        raise CheckpointError(f"{source}: lacks trainable weights {missing[:5]}")


# ----------------------------------------------------------------------------- finding


def checkpoint_step(path: str | Path) -> int | None:
    """``ckpt-120`` -> 120; anything else (``ckpt-120.tmp``, ``latest``) -> None."""
    match = _CKPT_RE.match(Path(path).name)
    return int(match.group(1)) if match else None


def list_checkpoints(out_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``out_dir`` as ``(step, path)``, oldest first."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = []
    for child in out_dir.iterdir():
        step = checkpoint_step(child)
        if step is not None and child.is_dir() and (child / STATE_FILE).is_file():
            found.append((step, child))
    return sorted(found)


def find_latest(out_dir: str | Path) -> Path | None:
    """The newest complete checkpoint in ``out_dir`` (``.tmp`` leftovers ignored), or None."""
    found = list_checkpoints(out_dir)
    return found[-1][1] if found else None


# ----------------------------------------------------------------------------- saving


@dataclass
class Checkpoint:
    """Everything in one checkpoint (as read back by :func:`load_checkpoint`)."""

    path: Path
    trainer_state: dict[str, Any]  # loop counters and data position (JSON)
    model_state: dict[str, Any] = field(default_factory=dict)  # name -> tensor
    optimizer_state: dict[str, Any] = field(default_factory=dict)
    loop_state: dict[str, Any] = field(default_factory=dict)  # {"scheduler": ..., "scaler": ...}
    extra: dict[str, Any] = field(default_factory=dict)  # name -> state_dict of trainer objects
    process_extra: dict[str, Any] = field(default_factory=dict)  # name -> this process's own state_dict
    rng: dict[str, Any] | None = None  # this process's RNG states

    @property
    def step(self) -> int:
        return int(self.trainer_state["step"])


def save_checkpoint(
    out_dir: str | Path,
    step: int,
    *,
    trainer_state: Mapping[str, Any],
    model_state: Mapping[str, Any] | None,
    optimizer_state: Mapping[str, Any] | None,
    loop_state: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    rng: Mapping[str, Any] | None = None,
    process_extra: Mapping[str, Any] | None = None,
    collective_write: Callable[[Path], None] | None = None,
    keep_last: int = 2,
    process_index: int = 0,
    is_main_process: bool = True,
    barrier: Callable[[], None] = lambda: None,
) -> Path:
    """Write ``OUT/ckpt-<step>/`` atomically and keep the newest ``keep_last`` checkpoints.

    Collective under multi-process training: every process calls it with its own ``rng``
    (written as ``rng-<process_index>.pt``) and ``process_extra`` (``extra-<process_index>.pt``),
    and runs ``collective_write(tmp_dir)`` (e.g. accelerate's FSDP model and optimizer
    writers, which gather across processes); the main process writes everything else.
    ``model_state`` and ``optimizer_state`` need only be given on the main process.
    """
    import safetensors.torch

    out_dir = Path(out_dir)
    final = out_dir / f"{CKPT_PREFIX}{step}"
    tmp = out_dir / f"{CKPT_PREFIX}{step}{TMP_SUFFIX}"
    if is_main_process:
        if tmp.exists():  # a leftover from a run killed while writing this very step
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    barrier()
    # 1. every process: its RNG states, its own trainer state, its part of collective files
    if rng is not None:
        _save_torch(dict(rng), tmp / f"rng-{process_index}.pt")
    if process_extra:
        _save_torch(dict(process_extra), tmp / f"extra-{process_index}.pt")
    if collective_write is not None:
        collective_write(tmp)
    barrier()
    if is_main_process:
        # 2. the main process: weights, optimiser, scheduler, trainer objects, then the state file
        if model_state is not None:
            blob = safetensors.torch.save(dict(model_state))
            _write_file(tmp / "model.safetensors", lambda f: f.write(blob))
        if optimizer_state is not None:
            _save_torch(dict(optimizer_state), tmp / "optimizer.pt")
        _save_torch(dict(loop_state or {}), tmp / "loop.pt")
        _save_torch(dict(extra or {}), tmp / "extra.pt")
        text = json.dumps(dict(trainer_state), indent=2, sort_keys=True).encode()
        sums = {
            **file_checksums(tmp),
            STATE_FILE: {"sha256": hashlib.sha256(text).hexdigest(), "bytes": len(text)},
        }
        manifest = json.dumps(sums, indent=1, sort_keys=True).encode()
        _write_file(tmp / CHECKSUMS, lambda f: f.write(manifest))
        _write_file(tmp / STATE_FILE, lambda f: f.write(text))
        _fsync_dir(tmp)
        # 3. publish: rename the complete directory, then point `latest` at it
        if final.exists():  # only after a crash between two saves of the same step
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(out_dir)
        write_text_atomic(out_dir / LATEST, final.name + "\n")
        # 4. forget old checkpoints and leftovers of killed writes
        prune_checkpoints(out_dir, keep_last)
    barrier()
    return final


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_checksums(directory: Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {"sha256", "bytes"}}`` of every file under ``directory`` (the manifest and
    the state file excluded)."""
    sums = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        name = path.relative_to(directory).as_posix()
        if name not in (CHECKSUMS, STATE_FILE):
            sums[name] = {"sha256": _sha256(path), "bytes": path.stat().st_size}
    return sums


def verify_checkpoint(path: str | Path) -> str | None:
    """None when every file of the checkpoint matches ``checksums.json``, else what is wrong, in a few words.

    A checkpoint without ``checksums.json`` (written before they existed) is not checked.
    """
    path = Path(path)
    manifest = path / CHECKSUMS
    if not (path / STATE_FILE).is_file():
        return f"no {STATE_FILE}"
    if not manifest.is_file():
        return None
    try:
        sums = json.loads(manifest.read_text())
    except (OSError, ValueError) as exc:
        return f"{CHECKSUMS} unreadable ({exc.__class__.__name__})"
    for name, want in sorted(sums.items()):
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        size = file.stat().st_size
        if size != want.get("bytes"):
            return f"{name} has {size} bytes, {want.get('bytes')} were written"
        if _sha256(file) != want.get("sha256"):
            return f"{name} does not match its checksum"
    return None


def find_intact(out_dir: str | Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """``(newest intact checkpoint or None, [(damaged checkpoint, why)] newer than it, newest first)``.

    Raises :class:`CheckpointError` naming every damaged checkpoint when there are
    checkpoints and none is intact.
    """
    damaged: list[tuple[Path, str]] = []
    for _, path in reversed(list_checkpoints(out_dir)):
        problem = verify_checkpoint(path)
        if problem is None:
            return path, damaged
        damaged.append((path, problem))
    if damaged:
        raise CheckpointError(
            f"no intact checkpoint in {out_dir}: "
            + "; ".join(f"{p.name}: {why}" for p, why in damaged)
            + " (start a new output directory, or loop.overwrite=true to start this one over)"
        )
    return None, damaged


def prune_checkpoints(out_dir: str | Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` complete checkpoints, and ``.tmp`` leftovers."""
    out_dir = Path(out_dir)
    complete = list_checkpoints(out_dir)
    for _, path in complete[:-keep_last] if keep_last > 0 else complete:
        shutil.rmtree(path, ignore_errors=True)
    for child in out_dir.iterdir():
        if child.name.startswith(CKPT_PREFIX) and child.name.endswith(TMP_SUFFIX) and child.is_dir():
            shutil.rmtree(child, ignore_errors=True)


def load_checkpoint(path: str | Path, process_index: int = 0) -> Checkpoint:
    """Read a checkpoint directory written by :func:`save_checkpoint`."""
    import safetensors.torch

    path = Path(path)
    state_file = path / STATE_FILE
    if not state_file.is_file():
        raise CheckpointError(f"{path}: not a complete checkpoint (no {STATE_FILE})")
    try:
        trainer_state = json.loads(state_file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{state_file}: not valid JSON: {exc}") from None
    ckpt = Checkpoint(path=path, trainer_state=trainer_state)
    if (path / "model.safetensors").is_file():
        try:
            ckpt.model_state = safetensors.torch.load_file(path / "model.safetensors")
        except Exception as exc:
            raise CheckpointError(f"{path / 'model.safetensors'}: cannot be read: {exc}") from exc
    if (path / "optimizer.pt").is_file():
        ckpt.optimizer_state = _load_torch(path / "optimizer.pt")
    ckpt.loop_state = _load_torch(path / "loop.pt")
    ckpt.extra = _load_torch(path / "extra.pt", weights_only=False)  # trainer objects may hold any picklable
    rng_file = path / f"rng-{process_index}.pt"
    if not rng_file.is_file() and (path / "rng-0.pt").is_file():
        warnings.warn(
            f"{path}: no RNG state for process {process_index} (the number of processes changed?); "
            "using process 0's: the continued run will not be bit-identical",
            stacklevel=2,
        )
        rng_file = path / "rng-0.pt"
    if rng_file.is_file():
        ckpt.rng = _load_torch(rng_file)
    extra_file = path / f"extra-{process_index}.pt"
    if extra_file.is_file():
        ckpt.process_extra = _load_torch(extra_file, weights_only=False)
    return ckpt


__all__ = [
    "Checkpoint",
    "CheckpointError",
    "capture_rng_state",
    "restore_rng_state",
    "trainable_state_dict",
    "load_trainable_state_dict",
    "checkpoint_step",
    "list_checkpoints",
    "find_latest",
    "find_intact",
    "file_checksums",
    "verify_checkpoint",
    "save_checkpoint",
    "prune_checkpoints",
    "load_checkpoint",
    "write_text_atomic",
]
