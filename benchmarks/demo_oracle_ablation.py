"""Ablation for ``nlhf demo``: Nash-MD-PG with the ORACLE as its judge, to separate optimisation from judge learning.

    OMP_NUM_THREADS=1 python benchmarks/demo_oracle_ablation.py [--steps 40] [--samples 8] [--set key=value ...]

The demo's Nash-MD-PG stage (SmolLM2-135M-Instruct, LoRA on the last 4 blocks, the demo's
defaults: 8 prompts a step, tau 0.05, mixture_coef 0.125, lr 1e-3, 16 new tokens) trained by
:func:`nlhf.train.nash_md.run_nash_md`, but judged by the environment's oracle P* itself instead
of the learned preference model. Afterwards the trained policy and the reference each sample
``--samples`` responses to every held-out prompt (the same per-row seeds for both), the
responses are classified, and the class-level win rate P(pi > mu) = pi^T P mu is computed
exactly from the two class distributions, next to the regularised Nash equilibrium's win rate
at the same tau (:func:`nlhf.lab.solvers.regularized_nash` on mu's class mix): how far a perfect
judge gets the policy within the step budget. One JSON line.

Measured (session 3, one thread, the full test suite and benchmarks beside it): 40 steps ->
class-level win about 0.52-0.54; 160 steps (1,609 s) -> about 0.53-0.55 (unfocused 0.18 -> 0.10);
the regularised Nash equilibrium at tau 0.05: 0.61. ``--smoke``: the tiny random model, 2 steps.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=40, help="Nash-MD-PG steps (the demo's default: 40)")
    ap.add_argument("--samples", type=int, default=8, help="responses per held-out prompt, per policy")
    ap.add_argument("--out", default="/tmp/nlhf-demo-oracle-ablation")
    ap.add_argument("--set", dest="overrides", nargs="*", default=[], help="DemoConfig overrides, key=value")
    ap.add_argument("--smoke", action="store_true", help="tiny random model, 4 prompts, 2 steps")
    args = ap.parse_args()

    import numpy as np
    import torch

    from nlhf.demo.config import load_demo_config
    from nlhf.demo.stages import (
        _loop,
        _optim,
        load_policy_model,
        lora_settings,
        pick_prompts,
        sample_responses,
    )
    from nlhf.envs import class_distribution, default_rater_population
    from nlhf.lab.solvers import kl, regularized_nash
    from nlhf.sampling import SamplingConfig
    from nlhf.train.nash_md import NashMDConfig, run_nash_md

    overrides = [f"nash_steps={args.steps}", *args.overrides]
    if args.smoke:
        overrides = ["model=tiny", "nash_steps=2", "nash_batch_size=4", *args.overrides]
    cfg = load_demo_config(None, overrides)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    env = default_rater_population()
    train = pick_prompts("train", 8 if args.smoke else cfg.n_train_prompts)
    heldout = pick_prompts("heldout", 4 if args.smoke else cfg.n_heldout_prompts)
    samples = 2 if args.smoke else args.samples
    out = Path(args.out)

    t0 = time.perf_counter()
    model, tok = load_policy_model(cfg.model, seed=cfg.seed, device="cpu")
    online = NashMDConfig(
        algorithm="nash_md", tau=cfg.tau, mixture_coef=cfg.mixture_coef, model=cfg.model, out=str(out / "policy"),
        judge_batch_size=cfg.eval_batch_size, sampling=SamplingConfig(max_new_tokens=cfg.max_new_tokens),
        lora=lora_settings(cfg, model), merge_adapter=False, optim=_optim(cfg),
        loop=replace(_loop(cfg, cfg.nash_steps, cfg.nash_batch_size), overwrite=True),
    )  # fmt: skip
    result = run_nash_md(online, model=model, tokenizer=tok, train_prompts=train, judge=env)
    train_s = time.perf_counter() - t0

    def class_mix(policy) -> np.ndarray:
        texts = sample_responses(policy, tok, heldout, samples, cfg.max_new_tokens, batch_rows=cfg.sample_batch_rows,
                                 seed=cfg.seed + 1, desc="held-out samples")  # fmt: skip
        xs = [p.prompt for p, ys in zip(heldout, texts) for _ in ys]
        return class_distribution(env.classify(xs, [y for ys in texts for y in ys]), len(env.classes))  # (K,)

    pi = class_mix(result.policy.eval())
    reference, _ = load_policy_model(cfg.model, seed=cfg.seed, device="cpu")
    mu = class_mix(reference.eval())
    P = env.game.P  # (K, K) P*(row class > column class)
    record = {
        "name": "demo_oracle_ablation",
        "model": cfg.model,
        "steps": cfg.nash_steps,
        "batch": cfg.nash_batch_size,
        "tau": cfg.tau,
        "mixture_coef": cfg.mixture_coef,
        "policy_lr": cfg.policy_lr,
        "train_s": round(train_s, 1),
        "heldout_responses_per_policy": len(heldout) * samples,
        "classes": list(env.classes),
        "pi_class_mix": pi.round(4).tolist(),
        "mu_class_mix": mu.round(4).tolist(),
        "win_pi_vs_mu_class_level": round(float(pi @ P @ mu), 4),
        "final_train_metrics": {k: result.summary["train"].get(k) for k in ("win_rate", "kl_k1", "kl_k3")},
    }
    if mu.min() > 0:
        nash = np.asarray(regularized_nash(env.game, mu, cfg.tau))  # (K,)
        record["regularized_nash_class_mix"] = nash.round(4).tolist()
        record["win_regularized_nash_vs_mu"] = round(float(nash @ P @ mu), 4)
        record["kl_regularized_nash_mu_class_level"] = round(float(kl(nash, mu)), 4)
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    sys.exit(main())
