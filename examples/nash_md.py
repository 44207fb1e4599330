"""Nash-MD-PG through the Python API: nlhf.train_nash_md, with a step callback (examples/nash_md.yaml).

    python examples/nash_md.py [OUT]      (default OUT: runs/examples/nash_md)

The judge "llm:tiny" is the tiny random model as a pairwise LLM judge; "llm:smollm2", "hf-reward:DIR" or a
directory saved by nlhf train-pm also work, and so does any judge object (nlhf.judges.CallableJudge).
A callback returning True stops the run after that step (the policy is still saved).
"""

import sys
from pathlib import Path

import nlhf

DATA = Path(__file__).resolve().parent / "data"
# A smoke-sized run: raise max_steps (and use a real model) for an experiment.
LOOP = {"max_steps": 2, "micro_batch_size": 4, "log_every": 1, "progress": False}


def main(out: str = "runs/examples/nash_md") -> None:
    def on_step(step: int, metrics: dict) -> bool:
        print(f"step {step}: loss {metrics['loss']:.4f}, win rate {metrics['win_rate']:.3f}")
        return metrics["loss"] != metrics["loss"]  # stop on a NaN loss

    result = nlhf.train_nash_md(model="tiny", prompts=str(DATA / "prompts.jsonl"), judge="llm:tiny", tau=0.1,
                                mixture_coef=0.125, sampling={"max_new_tokens": 16}, loop=LOOP, out=out,
                                callbacks=[on_step])  # fmt: skip
    print(result.summary["train"]["loss"], result.policy_dir)


if __name__ == "__main__":
    main(*sys.argv[1:2])
