"""Offline DPO through the Python API: nlhf.train_dpo (the run of examples/dpo.yaml).

    python examples/dpo.py [OUT]      (default OUT: runs/examples/dpo)

The tiny random model keeps it a smoke run; use model="smollm2", a directory or a hub name for an experiment.
"""

import sys
from pathlib import Path

import nlhf

DATA = Path(__file__).resolve().parent / "data"
# A smoke-sized run: raise max_steps (and use a real model) for an experiment.
LOOP = {"max_steps": 2, "micro_batch_size": 4, "log_every": 1, "progress": False}


def main(out: str = "runs/examples/dpo") -> None:
    result = nlhf.train_dpo(
        model="tiny", data=str(DATA / "pairs.jsonl"), tau=0.1, optim={"lr": 1e-6}, loop=LOOP, out=out
    )
    print(result.summary["train"]["loss"], result.policy_dir)


if __name__ == "__main__":
    main(*sys.argv[1:2])
