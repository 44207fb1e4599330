"""MPO through the Python API: nlhf.train_mpo (examples/mpo.yaml).

    python examples/mpo.py [OUT]      (default OUT: runs/examples/mpo)

pi_t is refreshed every steps_per_iteration steps, the magnet every magnet_every iterations.
"""

import sys
from pathlib import Path

import nlhf

DATA = Path(__file__).resolve().parent / "data"
# A smoke-sized run: raise max_steps (and use a real model) for an experiment.
LOOP = {"max_steps": 2, "micro_batch_size": 4, "log_every": 1, "progress": False}


def main(out: str = "runs/examples/mpo") -> None:
    result = nlhf.train_mpo(
        model="tiny",
        prompts=str(DATA / "prompts.jsonl"),
        judge="llm:tiny",
        eta=1.0,
        tau=0.1,
        magnet_every=2,
        steps_per_iteration=1,
        sampling={"max_new_tokens": 16},
        loop=LOOP,
        out=out,
    )
    print(result.summary["train"]["loss"], result.policy_dir)


if __name__ == "__main__":
    main(*sys.argv[1:2])
