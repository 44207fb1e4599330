"""The Bradley-Terry reward model through the Python API: nlhf.train_reward_model.

    python examples/reward_model.py [OUT]      (default OUT: runs/examples/reward_model)

The embedded all-MiniLM-L6-v2 encoder (no download); the output directory is RLHF's reward (--reward OUT).
"""

import sys
from pathlib import Path

import nlhf

DATA = Path(__file__).resolve().parent / "data"
# A smoke-sized run: raise max_steps (and use a real model) for an experiment.
LOOP = {"max_steps": 2, "micro_batch_size": 4, "log_every": 1, "progress": False}


def main(out: str = "runs/examples/reward_model") -> None:
    summary = nlhf.train_reward_model(model="minilm", data=str(DATA / "pairs.jsonl"), max_length=64, loop=LOOP,
                                      out=out)  # fmt: skip
    print(summary["accuracy"], summary["log_loss"])


if __name__ == "__main__":
    main(*sys.argv[1:2])
