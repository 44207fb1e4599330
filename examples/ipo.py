"""Offline IPO through the Python API: nlhf.train_ipo (offline DPO with loss ipo; examples/ipo.yaml).

    python examples/ipo.py [OUT]      (default OUT: runs/examples/ipo)

A config may be a plain dict (nested sections as dicts too) with keyword overrides on top.
"""

import sys
from pathlib import Path

import nlhf

DATA = Path(__file__).resolve().parent / "data"
# A smoke-sized run: raise max_steps (and use a real model) for an experiment.
LOOP = {"max_steps": 2, "micro_batch_size": 4, "log_every": 1, "progress": False}


def main(out: str = "runs/examples/ipo") -> None:
    config = {
        "model": "tiny",
        "data": str(DATA / "pairs.jsonl"),
        "tau": 0.1,
        "reduction": "sum",
        "loop": LOOP,
    }
    result = nlhf.train_ipo(config, out=out)
    print(result.summary["train"]["loss"], result.policy_dir)


if __name__ == "__main__":
    main(*sys.argv[1:2])
