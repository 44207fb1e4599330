"""Policy levers for ``nlhf demo`` (issue 14, point 2): how close does each trainer get to its OWN judge's target?

    python benchmarks/policy_levers.py --run DEMO_RUN_DIR --label lr3e-3 --set policy_lr=0.003 [--set ...]

Takes the learned judges of a finished demo run (``pm/``, ``rm/``) and its resolved ``config.yaml``, applies the
``--set`` overrides, and trains Nash-MD-PG against the preference model and RLHF against the reward model with
the demo's own stage functions (:func:`nlhf.demo.stages.train_nash_md`, :func:`~nlhf.demo.stages.train_rlhf`).
Each trained policy then samples ``--eval-samples`` responses to every prompt of the judges' held-out PAIR slice
(TRAINING prompts whose pairs the judges never saw; the held-out tournament prompts are never touched), on the
same random streams as the reference, and one JSON line per trainer records:

* ``class_distribution`` of its samples and the reference's on the same streams;
* ``tv_to_judge_target``: total variation to its judge's class-level target read from the run's
  ``summary.json`` (``judge_targets``: the Nash-MD-PG stationary point on P_hat, the RLHF optimum on the
  reward model's class rewards), i.e. how far the trainer got with the objective it was given;
* ``exploitability`` under P* (:func:`nlhf.lab.exploitability`) and ``win_vs_mu`` (pi_hat^T P* mu_hat);
* ``wall_s`` / ``cpu_s`` of the training, its last logged train metrics (KL estimates, win rate or reward).

The judge-side target, not P*, is the yardstick for choosing a recipe: a recipe that gets each trainer nearer
the target of the objective it optimises is a better optimiser whatever that does to the demo's claims.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from nlhf.demo.config import load_demo_config
from nlhf.demo.stages import load_policy_model, pick_prompts, sample_responses, train_nash_md, train_rlhf
from nlhf.envs import class_distribution, default_rater_population
from nlhf.lab import exploitability

TARGET_KEYS = {"nash_md": "nash_md_target", "rlhf": "rlhf_target"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--run", required=True, help="a finished demo run directory (pm/, rm/, config.yaml, summary.json)"
    )
    ap.add_argument("--label", required=True, help="name of this setting (a subdirectory of --out)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="DemoConfig key=value")
    ap.add_argument("--algorithms", nargs="+", default=["nash_md", "rlhf"], choices=sorted(TARGET_KEYS))
    ap.add_argument("--eval-samples", type=int, default=12, help="responses per slice prompt")
    ap.add_argument("--out", default="/tmp/nlhf-policy-levers")
    return ap.parse_args(argv)


def slice_prompts(run: Path, n_train: int) -> list:
    """The training prompts of the judges' held-out pair slice (``pairs/eval.jsonl``), in the demo's order."""
    seen = {
        json.loads(line)["prompt"] for line in (run / "pairs" / "eval.jsonl").read_text().splitlines() if line
    }
    prompts = [p for p in pick_prompts("train", n_train) if p.prompt in seen]
    if len(prompts) != len(seen):
        raise ValueError(f"{run / 'pairs' / 'eval.jsonl'}: {len(seen)} slice prompts, {len(prompts)} found in the "
                         "built-in training prompts")  # fmt: skip
    return prompts


def class_mix(env, model, tok, prompts, samples: int, cfg) -> np.ndarray:
    """(K,) class distribution of ``samples`` responses of ``model`` per prompt (the eval streams, seed 7)."""
    ys = sample_responses(model, tok, prompts, samples, cfg.max_new_tokens, batch_rows=cfg.eval_batch_size,
                          seed=7, desc="eval samples")  # fmt: skip
    xs = [p.prompt for p, r in zip(prompts, ys) for _ in r]
    labels = env.classify(xs, [y for r in ys for y in r])
    return class_distribution(labels, len(env.classes))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    run = Path(args.run)
    cfg = load_demo_config(run / "config.yaml", args.overrides)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    targets = json.loads((run / "summary.json").read_text())["judge_targets"]
    work = Path(args.out) / args.label
    work.mkdir(parents=True, exist_ok=True)
    for judge in ("pm", "rm"):
        link = work / judge
        if not link.exists():
            link.symlink_to((run / judge).resolve())
    env = default_rater_population()
    train = pick_prompts("train", cfg.n_train_prompts)
    evalp = slice_prompts(run, cfg.n_train_prompts)
    base, tok = load_policy_model(cfg.model, seed=cfg.seed, device="cpu")
    mu_hat = class_mix(env, base, tok, evalp, args.eval_samples, cfg)
    del base
    for algo in args.algorithms:
        t0, c0 = time.perf_counter(), time.process_time()
        res = (train_nash_md if algo == "nash_md" else train_rlhf)(cfg, work, train)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        pi_hat = class_mix(env, res.policy.eval(), res.tokenizer, evalp, args.eval_samples, cfg)
        target = np.asarray(targets[TARGET_KEYS[algo]])
        line = {"bench": "policy_levers", "label": args.label, "overrides": args.overrides, "algorithm": algo,
                "steps": res.summary.get("steps"), "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                "eval_prompts": len(evalp), "eval_samples": args.eval_samples, "classes": list(env.classes),
                "mu_hat": mu_hat.round(4).tolist(), "class_distribution": pi_hat.round(4).tolist(),
                "judge_target": target.round(4).tolist(),
                "tv_to_judge_target": float(0.5 * np.abs(pi_hat - target).sum()),
                "tv_mu_to_judge_target": float(0.5 * np.abs(mu_hat - target).sum()),
                "exploitability": float(exploitability(env.P, pi_hat)),
                "win_vs_mu": float(pi_hat @ env.P @ mu_hat), "train": res.summary.get("train"),
                "threads": torch.get_num_threads(), "pid": os.getpid()}  # fmt: skip
        print(json.dumps(line), flush=True)
        with open(Path(args.out) / "results.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
        del res


if __name__ == "__main__":
    main(sys.argv[1:])
