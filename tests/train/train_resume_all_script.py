"""SIGKILL every trainer between two checkpoints, resume it, and compare with an uninterrupted run.

Usage: ``python train_resume_all_script.py ROOT OUT TRAINER [TRAINER ...]`` (ROOT: the files
of ``trainer_runs.prepare``). For each trainer, in this one process (imports paid once):

1. an uninterrupted run: 5 optimiser steps of 2 micro-batches of 2 (8 examples: the data
   stream straddles epochs), AdamW with warm-up, cosine decay, weight decay and clipping,
   checkpoints every 2 steps (2 kept);
2. the same run in a FORKED child process that kills itself with SIGKILL in the middle of
   step 3 (after micro-batch 0's forward; newest checkpoint ``ckpt-2``);
3. ``loop.resume=true`` on the killed run's directory, in this process.

Prints one JSON line per trainer: whether the child died of SIGKILL, the checkpoint resumed
from, and whether the final trainable parameters (and Nash-EMA's opponent) are
``torch.equal`` to the uninterrupted run's. ``TRAINER:no_optimizer_state`` is the negative
control: the resume skips loading the optimiser state (AdamW restarts), so the final
parameters must differ.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from trainer_runs import run_trainer  # noqa: E402

from nlhf.train import checkpoint as ckpt_lib  # noqa: E402

KW = dict(micro=2, accum=2, max_steps=5, save_every=2, sgd=False)
KILL_AT = 3


def main() -> None:
    torch.set_num_threads(1)
    root, out, runs = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    for run in runs:
        name, _, negative = run.partition(":")
        t0 = time.perf_counter()
        base = out / run.replace(":", "-")
        full = run_trainer(name, root, base / "full", **KW)

        pid = os.fork()
        if pid == 0:  # the child: train until SIGKILL in step KILL_AT
            code = 3
            try:
                run_trainer(name, root, base / "cut", kill_at=KILL_AT, **KW)
            except BaseException as exc:  # noqa: BLE001 - reported through the exit code
                print(f"child failed: {exc!r}", file=sys.stderr, flush=True)
                code = 4
            os._exit(code)  # only reached if the kill did not happen
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        latest = ckpt_lib.find_latest(base / "cut")

        from nlhf.train import loop as loop_mod

        original = loop_mod.TrainLoop._restore
        if negative == "no_optimizer_state":  # the negative control: AdamW's moments are lost at resume

            def restore_without_optimizer(self, original=original):
                keep = self.optimizer.load_state_dict
                self.optimizer.load_state_dict = lambda state: None
                try:
                    return original(self)
                finally:
                    self.optimizer.load_state_dict = keep

            loop_mod.TrainLoop._restore = restore_without_optimizer
        try:
            resumed = run_trainer(name, root, base / "cut", resume=True, **KW)
        finally:
            loop_mod.TrainLoop._restore = original
        a, b = full["params"], resumed["params"]
        equal = a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
        line = {
            "run": run,
            "killed_by_sigkill": killed,
            "resumed_from": latest.name if latest else None,
            "steps": resumed["steps"],
            "params_equal": equal,
            "max_abs_diff": max(float((a[n] - b[n]).abs().max()) for n in a),
            "moved": resumed["update"],  # max |final - initial| parameter
            "seconds": round(time.perf_counter() - t0, 2),
        }
        if "ema" in full:
            line["ema_equal"] = all(torch.equal(full["ema"][n], resumed["ema"][n]) for n in full["ema"])
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
