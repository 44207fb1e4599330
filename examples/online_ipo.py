"""Online IPO through the Python API: nlhf.train_online_ipo (examples/online_ipo.yaml).

    python examples/online_ipo.py [OUT]      (default OUT: runs/examples/online_ipo)

algorithm="ipo_md" gives IPO-MD (both responses from the geometric mixture with the reference).
"""

import sys
from pathlib import Path

import nlhf

DATA = Path(__file__).resolve().parent / "data"
# A smoke-sized run: raise max_steps (and use a real model) for an experiment.
LOOP = {"max_steps": 2, "micro_batch_size": 4, "log_every": 1, "progress": False}


def main(out: str = "runs/examples/online_ipo") -> None:
    result = nlhf.train_online_ipo(model="tiny", prompts=str(DATA / "prompts.jsonl"), judge="llm:tiny", tau=0.1,
                                   sampling={"max_new_tokens": 16}, loop=LOOP, out=out)  # fmt: skip
    print(result.summary["train"]["loss"], result.policy_dir)


if __name__ == "__main__":
    main(*sys.argv[1:2])
