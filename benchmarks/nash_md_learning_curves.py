"""Learning curves of Nash-MD-PG on SmolLM2-135M-Instruct with the ORACLE as judge (issue 14, point 2).

What it measures, decided before any run: how fast a recipe moves the policy towards the
class-level regularised Nash equilibrium of the demo's cyclic rater-population environment,
per CPU second. Every ``--eval-every`` steps the policy samples ``--eval-samples`` responses
to each of ``--eval-prompts`` fixed TRAINING prompts (never the held-out ones; the same
random streams at every evaluation), and the line records:

* ``class_distribution``: the policy's empirical class mix pi_hat;
* ``win_vs_mu``: the plug-in class-level win rate pi_hat^T P* mu_hat against the
  reference's class mix mu_hat (measured once, at step 0, on 2x the samples);
* ``exploitability``: max_y P*(y > pi_hat) - 1/2 (``nlhf.lab.exploitability``);
* ``class_kl``: KL(pi_hat || mu_hat) and ``kl_mc``: the Monte Carlo sequence KL(pi || mu);
* ``cpu_s`` (this process's CPU time, all threads) and ``wall_s`` since training began.

The target: pi*_tau at the class level (``nlhf.lab.regularized_nash(P*, mu_hat, tau)``),
its win rate against mu_hat and its exploitability are on the first line. The judge is the
oracle itself, so the curves isolate the learning recipe from the learned judge's errors.

    OMP_NUM_THREADS=1 python benchmarks/nash_md_learning_curves.py --responses 4 --lr 3e-3 \
        --cpu-budget 600 --out curves_k4.jsonl
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from nlhf.data.collate import eos_id, pad_token_id
from nlhf.data.prompt_batches import make_prompt_collate, tokenize_prompts
from nlhf.demo.config import DemoConfig
from nlhf.demo.stages import load_policy_model, lora_settings, pick_prompts
from nlhf.envs import default_rater_population
from nlhf.lab import exploitability, regularized_nash
from nlhf.models.policy import build_policy
from nlhf.sampling import HFSampler, SamplingConfig
from nlhf.sampling.decode import RowGenerator
from nlhf.train.config import LoopConfig
from nlhf.train.loop import StepContext
from nlhf.train.nash_md import NashMDConfig, make_step
from nlhf.train.rollouts import reference_logps


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--responses", type=int, default=1, help="K responses (and K opponents) per prompt")
    p.add_argument("--batch", type=int, default=8, help="prompts per step")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--tau", type=float, default=0.05)
    p.add_argument("--mixture-coef", type=float, default=0.125)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lora-last-layers", type=int, default=4)
    p.add_argument("--steps", type=int, default=10_000, help="stop after this many steps ...")
    p.add_argument("--cpu-budget", type=float, default=600.0, help="... or this many CPU seconds of training")
    p.add_argument(
        "--eval-every", type=float, default=60.0, help="evaluate every this many training CPU seconds"
    )
    p.add_argument("--eval-prompts", type=int, default=32)
    p.add_argument("--eval-samples", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--train-prompts", type=int, default=0, help="use the first N training prompts (0: all 152)"
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True)
    return p.parse_args()


def class_mix(env, prompts, sampler, tok, collate, items, samples: int, seed: int, reference) -> tuple:
    """(class distribution (K,), Monte Carlo KL(pi || mu) mean) of ``samples`` responses per prompt."""
    rows = [it for it in items for _ in range(samples)]
    texts = [it.prompt for it in rows]
    batch = collate(rows)
    seeds = [seed * 1_000_003 + i for i in range(len(rows))]
    with torch.no_grad():
        y = sampler.sample(batch.prompts, RowGenerator(seeds))
        ref = reference_logps(reference, y)
        log_ratio = ((y.sampling_logps - ref) * y.response_mask).sum(-1)
    labels = env.classify(texts, y.response_texts(tok))
    dist = np.bincount(labels, minlength=len(env.classes)) / len(labels)
    return dist, float(log_ratio.mean())


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    env = default_rater_population()
    P = env.P
    model, tok = load_policy_model(args.model, seed=args.seed, device="cpu")
    demo = DemoConfig(
        lora_r=args.lora_r, lora_alpha=2.0 * args.lora_r, lora_last_layers=args.lora_last_layers
    )
    policy, reference = build_policy(model, lora_settings(demo, model))
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens)
    pad = pad_token_id(tok)
    sampler = HFSampler(policy, reference, sampling, eos_token_id=eos_id(tok), pad_token_id=pad)
    cfg = NashMDConfig(algorithm="nash_md", tau=args.tau, mixture_coef=args.mixture_coef,
                       responses_per_prompt=args.responses, sampling=sampling,
                       loop=LoopConfig(seed=args.seed, micro_batch_size=args.batch))  # fmt: skip
    step_fn = make_step(cfg, sampler, env, tok, reference)
    train = pick_prompts("train", args.train_prompts)
    items = tokenize_prompts(tok, train, None)
    collate = make_prompt_collate(pad)
    eval_items = items[: args.eval_prompts]
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)

    # mu_hat on the same random streams as every evaluation (common random numbers: pi_hat = mu_hat at step 0)
    mu_hat, _ = class_mix(env, None, sampler, tok, collate, eval_items, args.eval_samples, 1, reference)
    target = regularized_nash(P, np.clip(mu_hat, 1e-6, None) / np.clip(mu_hat, 1e-6, None).sum(), args.tau)
    out = open(args.out, "w")
    head = {"args": vars(args), "classes": list(env.classes), "mu_hat": mu_hat.tolist(),
            "target_pi_tau": target.tolist(), "target_win_vs_mu": float(target @ P @ mu_hat),
            "target_exploitability": float(exploitability(P, target)),
            "mu_exploitability": float(exploitability(P, mu_hat))}  # fmt: skip
    out.write(json.dumps(head) + "\n")
    out.flush()
    print(json.dumps(head), flush=True)

    order = np.random.default_rng(args.seed).permutation(len(items))
    cpu, wall0 = 0.0, time.perf_counter()  # cpu: training CPU seconds (evaluations excluded)
    step, position, window, next_eval = 0, 0, [], 0.0
    while True:
        if cpu >= next_eval or step >= args.steps or cpu >= args.cpu_budget:
            next_eval += args.eval_every
            policy.eval()
            pi_hat, kl_mc = class_mix(
                env, None, sampler, tok, collate, eval_items, args.eval_samples, 1, reference
            )
            policy.train()
            row = {"step": step, "cpu_s": round(cpu, 1), "wall_s": round(time.perf_counter() - wall0, 1),
                   "class_distribution": pi_hat.round(4).tolist(), "win_vs_mu": float(pi_hat @ P @ mu_hat),
                   "exploitability": float(exploitability(P, pi_hat)),
                   "class_kl": float(np.sum(pi_hat * np.log(np.clip(pi_hat, 1e-12, None) / np.clip(mu_hat, 1e-12, None)))),
                   "kl_mc": kl_mc, "train_win_rate": float(np.mean(window)) if window else None}  # fmt: skip
            window = []
            out.write(json.dumps(row) + "\n")
            out.flush()
            print(json.dumps(row), flush=True)
            if step >= args.steps or cpu >= args.cpu_budget:
                break
        t0 = time.process_time()
        idx = [int(order[(position + i) % len(order)]) for i in range(args.batch)]
        batch = collate([items[i] for i in idx])
        ctx = StepContext(step=step, micro_step=0, indices=tuple(idx),
                          positions=tuple(range(position, position + args.batch)))  # fmt: skip
        res = step_fn(policy, batch, ctx)
        loss = (res.losses * res.weights).sum() / res.weights.sum()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        window.append(float(res.metrics["win_rate"][0].mean()))
        position += args.batch
        step += 1
        cpu += time.process_time() - t0
    out.close()


if __name__ == "__main__":
    main()
