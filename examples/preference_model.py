"""The preference model P(y > y' | x) through the Python API: nlhf.train_preference_model.

    python examples/preference_model.py [OUT]      (default OUT: runs/examples/preference_model)

The embedded all-MiniLM-L6-v2 encoder (no download); the output directory is a judge (--judge OUT).
"""

import sys
from pathlib import Path

import nlhf

DATA = Path(__file__).resolve().parent / "data"
# A smoke-sized run: raise max_steps (and use a real model) for an experiment.
LOOP = {"max_steps": 2, "micro_batch_size": 4, "log_every": 1, "progress": False}


def main(out: str = "runs/examples/preference_model") -> None:
    summary = nlhf.train_preference_model(model="minilm", data=str(DATA / "pairs.jsonl"), max_length=64, loop=LOOP,
                                          out=out)  # fmt: skip
    print(summary["accuracy"], summary["log_loss"])


if __name__ == "__main__":
    main(*sys.argv[1:2])
