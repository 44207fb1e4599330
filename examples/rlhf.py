"""RLHF (PPO-clip) through the Python API: nlhf.train_rlhf with a reward written in Python.

    python examples/rlhf.py [OUT]      (default OUT: runs/examples/rlhf)

From Python the reward may be any function reward_fn(prompts, responses) -> (N,) tensor; from YAML it is a
reward model directory (examples/rlhf.yaml, trained by examples/reward_model.yaml).
"""

import sys
from pathlib import Path

import torch

import nlhf

DATA = Path(__file__).resolve().parent / "data"
# A smoke-sized run: raise max_steps (and use a real model) for an experiment.
LOOP = {"max_steps": 2, "micro_batch_size": 2, "log_every": 1, "progress": False}


def main(out: str = "runs/examples/rlhf") -> None:
    def shorter_is_better(prompts: list, responses: list[str]) -> torch.Tensor:  # (N,)
        return torch.tensor([-len(r) / 8.0 for r in responses])

    result = nlhf.train_rlhf(model="tiny", prompts=str(DATA / "prompts.jsonl"), reward_fn=shorter_is_better,
                             algorithm="ppo", tau=0.05, group_size=2, sampling={"max_new_tokens": 16}, loop=LOOP,
                             out=out)  # fmt: skip
    print(result.summary["train"]["loss"], result.policy_dir)


if __name__ == "__main__":
    main(*sys.argv[1:2])
