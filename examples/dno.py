"""DNO through the Python API: nlhf.train_dno (examples/dno.yaml).

    python examples/dno.py [OUT]      (default OUT: runs/examples/dno)

pi_t is refreshed every steps_per_iteration steps (hundreds in a real run).
"""

import sys
from pathlib import Path

import nlhf

DATA = Path(__file__).resolve().parent / "data"
# A smoke-sized run: raise max_steps (and use a real model) for an experiment.
LOOP = {"max_steps": 2, "micro_batch_size": 4, "log_every": 1, "progress": False}


def main(out: str = "runs/examples/dno") -> None:
    result = nlhf.train_dno(
        model="tiny",
        prompts=str(DATA / "prompts.jsonl"),
        judge="llm:tiny",
        beta=0.1,
        margin=0.0,
        responses_per_prompt=2,
        steps_per_iteration=1,
        sampling={"max_new_tokens": 16},
        loop=LOOP,
        out=out,
    )
    print(result.summary["train"]["loss"], result.policy_dir)


if __name__ == "__main__":
    main(*sys.argv[1:2])
