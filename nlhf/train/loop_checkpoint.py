"""The loop's checkpoints: what :class:`nlhf.train.loop.TrainLoop` saves, and how a run resumes from it.

:func:`save_loop_checkpoint` writes ``ckpt-<step>`` through :mod:`nlhf.train.checkpoint`
(collective: every process calls it); :func:`restore_loop` loads the newest intact
checkpoint into the loop (weights, optimiser, schedule, trainer objects, RNG states,
counters and data position), passing over damaged newer ones with a one-line warning.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

from nlhf.train import checkpoint as ckpt_lib
from nlhf.train.out_dir import RunDirError

FSDP_DIR = "fsdp"  # accelerate's FSDP model / optimizer files inside a checkpoint


def loop_trainer_state(loop: Any) -> dict[str, Any]:
    """Loop counters and data position (JSON), as stored in ``trainer_state.json``."""
    position = loop.data_position
    return {
        "step": loop.step,
        "updates": loop.updates,
        "nonfinite_steps": loop.nonfinite_steps,
        "nonfinite_in_a_row": loop.nonfinite_in_a_row,
        "zero_weight_steps": loop.zero_weight_steps,
        "data_position": position,  # examples consumed from the stream
        "epoch": position // loop.n_train,
        "index_in_epoch": position % loop.n_train,
        "n_train": loop.n_train,
        "seed": loop.cfg.seed,
        "global_batch": loop.global_batch,
        "num_processes": loop.world,
        "max_steps": loop.max_steps,
    }


def save_loop_checkpoint(loop: Any) -> Path:
    """Write ``ckpt-<step>`` atomically (collective: every process calls it).

    DDP / one process: the main process writes the trainable weights and the optimiser
    state. FSDP: accelerate's FSDP writers (``save_fsdp_model`` / ``save_fsdp_optimizer``,
    sharded or full as the FSDP plugin's ``state_dict_type`` says) write ``fsdp/`` from
    every process. Trainer objects marked ``per_process`` (PPO's rollout buffer) are saved
    by every process; the others by the main one.
    """
    acc = loop.accelerator
    main = acc.is_main_process
    loop_state = {"scheduler": loop.scheduler.state_dict()}
    if acc.scaler is not None:
        loop_state["scaler"] = acc.scaler.state_dict()
    shared = {
        n: obj.state_dict() for n, obj in loop.stateful.items() if not getattr(obj, "per_process", False)
    }
    own = {n: obj.state_dict() for n, obj in loop.stateful.items() if getattr(obj, "per_process", False)}
    model_state = optimizer_state = collective_write = None
    if loop.is_fsdp:
        from accelerate.utils import save_fsdp_model, save_fsdp_optimizer

        plugin = acc.state.fsdp_plugin

        def collective_write(tmp: Path) -> None:
            save_fsdp_model(plugin, acc, loop.model, str(tmp / FSDP_DIR))
            save_fsdp_optimizer(plugin, acc, loop.optimizer, loop.model, str(tmp / FSDP_DIR))

    elif main:
        model_state = ckpt_lib.trainable_state_dict(acc.unwrap_model(loop.model))
        optimizer_state = loop.optimizer.state_dict()
    path = ckpt_lib.save_checkpoint(
        loop.out_dir,
        loop.step,
        trainer_state=loop_trainer_state(loop),
        model_state=model_state,
        optimizer_state=optimizer_state,
        loop_state=loop_state,
        extra=shared,
        process_extra=own,
        collective_write=collective_write,
        rng=ckpt_lib.capture_rng_state(),
        keep_last=loop.cfg.keep_last,
        process_index=acc.process_index,
        is_main_process=main,
        barrier=acc.wait_for_everyone,
    )
    loop.last_checkpoint = path
    return path


def restore_loop(loop: Any) -> Path | None:
    """Load the newest intact checkpoint in ``out_dir`` (None if there is none).

    A damaged newer checkpoint (:func:`nlhf.train.checkpoint.verify_checkpoint`) is passed
    over with a one-line warning naming it; none intact is a ``CheckpointError``.
    """
    acc = loop.accelerator
    path, damaged = ckpt_lib.find_intact(loop.out_dir)  # CheckpointError when none is intact
    if damaged and acc.is_main_process:
        names = ", ".join(f"{p.name} ({why})" for p, why in damaged)
        print(f"nlhf: warning: damaged checkpoint {names}; resuming from {path.name}", file=sys.stderr)
    if path is None:
        if acc.is_main_process:
            warnings.warn(f"loop.resume: no checkpoint in {loop.out_dir}; starting from step 0", stacklevel=2)
        return None
    ckpt = ckpt_lib.load_checkpoint(path, acc.process_index)
    state = ckpt.trainer_state
    # The data stream is fixed by (n_train, seed): a change would silently reorder the data.
    for key, now in (("n_train", loop.n_train), ("seed", loop.cfg.seed)):
        if state.get(key) != now:
            raise RunDirError(
                f"{path}: was written with {key}={state.get(key)}, this run has {key}={now}; "
                "resume with the same data and seed, or start a new output directory"
            )
    if state.get("global_batch") != loop.global_batch:
        warnings.warn(
            f"{path}: global batch changed from {state.get('global_batch')} to {loop.global_batch}; "
            "the run continues from the same data position but is not identical to an uninterrupted one",
            stacklevel=2,
        )
    if loop.is_fsdp:
        from accelerate.utils import load_fsdp_model, load_fsdp_optimizer

        if not (path / FSDP_DIR).is_dir():
            raise ckpt_lib.CheckpointError(
                f"{path}: has no {FSDP_DIR}/ (written without FSDP?); resume it without FSDP"
            )
        plugin = acc.state.fsdp_plugin
        load_fsdp_model(plugin, acc, loop.model, str(path / FSDP_DIR))
        load_fsdp_optimizer(plugin, acc, loop.optimizer, loop.model, str(path / FSDP_DIR))
    else:
        if (path / FSDP_DIR).is_dir():
            raise ckpt_lib.CheckpointError(f"{path}: was written under FSDP; resume it under FSDP")
        ckpt_lib.load_trainable_state_dict(acc.unwrap_model(loop.model), ckpt.model_state, source=str(path))
        loop.optimizer.load_state_dict(ckpt.optimizer_state)
    loop.scheduler.load_state_dict(ckpt.loop_state["scheduler"])
    if acc.scaler is not None and "scaler" in ckpt.loop_state:
        acc.scaler.load_state_dict(ckpt.loop_state["scaler"])
    for name, obj in loop.stateful.items():
        own = getattr(obj, "per_process", False) and name in ckpt.process_extra
        saved = ckpt.process_extra if own else ckpt.extra
        if name not in saved:
            where = f"extra-{acc.process_index}.pt" if getattr(obj, "per_process", False) else "extra.pt"
            raise ckpt_lib.CheckpointError(
                f"{path}: has no state for {name!r} in {where} (saved: {sorted(ckpt.extra)} and "
                f"{sorted(ckpt.process_extra)}; did the number of processes change?)"
            )
        obj.load_state_dict(saved[name])
    if ckpt.rng is not None:
        ckpt_lib.restore_rng_state(ckpt.rng)
    loop.step = int(state["step"])
    loop.data_position = int(state["data_position"])
    loop.updates = int(state["updates"])
    loop.nonfinite_steps = int(state["nonfinite_steps"])
    loop.nonfinite_in_a_row = int(state["nonfinite_in_a_row"])
    loop.zero_weight_steps = int(state.get("zero_weight_steps", 0))
    loop.last_checkpoint = path
    return path


__all__ = ["FSDP_DIR", "loop_trainer_state", "restore_loop", "save_loop_checkpoint"]
