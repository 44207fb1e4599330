"""Trainers under 1 or N processes (``torchrun``), for the distributed invariance test.

Usage: ``[torchrun --nproc_per_node N] train_ddp_script.py ROOT OUT MICRO RUN [RUN ...]`` where
each RUN is ``TRAINER`` or ``TRAINER:NEGATIVE`` (``rank_means`` or ``batch_seed``; see
``trainer_runs.py``; the iterative trainers, ``iterative_runs.py``). ROOT holds the files of ``trainer_runs.prepare``. Every run trains
for 2 steps with plain SGD (no clipping) and grad_accum_steps 1, micro-batch MICRO per
process, in this one process launch, one after the other. The main process writes
``OUT/<RUN>/final.pt`` (trainable parameters) and ``OUT/<RUN>/result.json`` (train and
eval metrics, number of processes); ``OUT/seconds.json`` has each run's wall time.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from iterative_runs import ITERATIVE, run_iterative  # noqa: E402
from trainer_runs import run_trainer  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    root, out, micro, runs = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
    seconds = {}
    for run in runs:
        name, _, negative = run.partition(":")
        t0 = time.perf_counter()
        trainer = run_iterative if name in ITERATIVE else run_trainer
        res = trainer(name, root, out / run.replace(":", "-"), micro=micro, negative=negative or None)
        seconds[run] = round(time.perf_counter() - t0, 2)
        if _is_main():
            target = out / run.replace(":", "-")
            target.mkdir(parents=True, exist_ok=True)
            torch.save(res["params"], target / "final.pt")
            record = {
                k: res[k] for k in ("train", "eval", "processes", "updates", "steps", "update", "judge_rows")
            }
            (target / "result.json").write_text(json.dumps(record))
    if _is_main():
        (out / "seconds.json").write_text(json.dumps(seconds))


def _is_main() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


if __name__ == "__main__":
    main()
