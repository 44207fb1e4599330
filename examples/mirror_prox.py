"""Nash mirror prox through the Python API: nlhf.train_mirror_prox (examples/mirror_prox.yaml).

    python examples/mirror_prox.py [OUT]      (default OUT: runs/examples/mirror_prox)

steps_per_iteration is even: its first half extrapolates, its second half updates.
"""

import sys
from pathlib import Path

import nlhf

DATA = Path(__file__).resolve().parent / "data"
# A smoke-sized run: raise max_steps (and use a real model) for an experiment.
LOOP = {"max_steps": 2, "micro_batch_size": 4, "log_every": 1, "progress": False}


def main(out: str = "runs/examples/mirror_prox") -> None:
    result = nlhf.train_mirror_prox(
        model="tiny",
        prompts=str(DATA / "prompts.jsonl"),
        judge="llm:tiny",
        eta=1.0,
        tau=0.1,
        steps_per_iteration=2,
        sampling={"max_new_tokens": 16},
        loop=LOOP,
        out=out,
    )
    print(result.summary["train"]["loss"], result.policy_dir)


if __name__ == "__main__":
    main(*sys.argv[1:2])
