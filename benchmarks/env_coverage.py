"""Does SmolLM2-135M-Instruct cover every response class of nlhf.envs? One JSON line.

    python benchmarks/env_coverage.py [--prompts 100] [--samples 4] [--max-new-tokens 48]
                                      [--threads 2] [--save FILE.jsonl] [--load FILE.jsonl]

Samples ``--samples`` responses to each of the first ``--prompts`` training prompts of
:func:`nlhf.envs.load_env_prompts` (taken round-robin over the four kinds), with HF
``model.generate`` (chat template, temperature 1, no top-k / top-p cut, at most
``--max-new-tokens``), classifies them (:mod:`nlhf.envs.features`) and prints:

* ``coverage``: the reference's class distribution mu (target: every class >= 5%), its
  counts and a breakdown by prompt kind; how many responses ended with EOS;
* ``tokens_per_s``: generated tokens (EOS included, padding not) per second of
  ``generate``, batch ``--batch-prompts`` x ``--samples``, on ``--threads`` CPU threads;
* ``population``: the cyclic environment solved exactly at mu
  (:func:`nlhf.envs.environment_summary`): the majority cycle, Nash, pi*_tau and the RLHF
  optimum of the Bradley-Terry reward fitted on mu's pairs for a few tau, with
  exploitability, KL to mu, win-rate against mu, and RLHF at pi*_tau's KL;
* ``bradley_terry``: the same for the transitive control (RLHF with its true scores).

``--save`` writes the responses (one JSON object a line) and ``--load`` classifies a saved
file instead of generating, so the feature design can be iterated without the model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def pick_prompts(n: int) -> list:
    """The first n training prompts, round-robin over the kinds (list, fact, explain, open)."""
    from nlhf.envs.prompts import KINDS, load_env_prompts

    by_kind = {k: [p for p in load_env_prompts("train") if p.metadata["kind"] == k] for k in KINDS}
    order = [
        by_kind[k][i] for i in range(max(map(len, by_kind.values()))) for k in KINDS if i < len(by_kind[k])
    ]
    if n > len(order):
        raise SystemExit(f"--prompts {n}: only {len(order)} training prompts")
    return order[:n]


def generate(
    prompts: list, samples: int, max_new_tokens: int, batch_prompts: int, seed: int, model_name: str
) -> dict:
    """Sample responses with HF generate; rows in prompt order, ``samples`` per prompt."""
    import torch
    from transformers import GenerationConfig

    from nlhf.data.schema import prompt_messages
    from nlhf.models.loading import load_causal_lm

    model, tok = load_causal_lm(model_name)
    tok.padding_side = "left"
    config = GenerationConfig(
        do_sample=True,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        max_new_tokens=max_new_tokens,
        num_return_sequences=samples,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(seed)
    rows, tokens, seconds = [], 0, 0.0
    for start in range(0, len(prompts), batch_prompts):
        chunk = prompts[start : start + batch_prompts]
        texts = [
            tok.apply_chat_template(prompt_messages(p.prompt), tokenize=False, add_generation_prompt=True)
            for p in chunk
        ]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model.generate(**enc, generation_config=config)  # (b * samples, P + R)
        seconds += time.perf_counter() - t0
        for j, ids in enumerate(out[:, enc["input_ids"].shape[1] :].tolist()):
            n = ids.index(tok.eos_token_id) + 1 if tok.eos_token_id in ids else len(ids)
            tokens += n
            p = chunk[j // samples]
            rows.append(
                {
                    "id": p.metadata["id"],
                    "kind": p.metadata["kind"],
                    "prompt": p.prompt,
                    "n_tokens": n,
                    "finished": tok.eos_token_id in ids,
                    "response": tok.decode(ids[:n], skip_special_tokens=True),
                }
            )
        print(
            f"  {start + len(chunk)}/{len(prompts)} prompts, {tokens / seconds:.1f} tokens/s", file=sys.stderr
        )
    return {"rows": rows, "tokens": tokens, "seconds": seconds}


def _rounded(x):
    if isinstance(x, float):
        return round(x, 4)
    if isinstance(x, list):
        return [_rounded(v) for v in x]
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch-prompts", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--taus", default="0.02,0.05,0.1,0.2")
    ap.add_argument("--save", type=Path, default=None)
    ap.add_argument("--load", type=Path, default=None)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from nlhf.envs import CLASSES, default_bradley_terry, default_rater_population, environment_summary

    record: dict = {"name": "env_coverage", "model": args.model}
    if args.load is not None:
        rows = [json.loads(line) for line in args.load.read_text().splitlines() if line.strip()]
        record.update(loaded=str(args.load), tokens_per_s=None)
    else:
        prompts = pick_prompts(args.prompts)
        gen = generate(prompts, args.samples, args.max_new_tokens, args.batch_prompts, args.seed, args.model)
        rows = gen["rows"]
        record.update(
            n_prompts=args.prompts,
            samples_per_prompt=args.samples,
            max_new_tokens=args.max_new_tokens,
            batch_rows=args.batch_prompts * args.samples,
            threads=args.threads,
            generated_tokens=gen["tokens"],
            generate_seconds=round(gen["seconds"], 1),
            tokens_per_s=round(gen["tokens"] / gen["seconds"], 1),
        )
        if args.save is not None:
            args.save.write_text("".join(json.dumps(r) + "\n" for r in rows))

    env, control = default_rater_population(), default_bradley_terry()
    prompts, responses = [r["prompt"] for r in rows], [r["response"] for r in rows]
    labels = env.classify(prompts, responses)
    mu = np.bincount(labels, minlength=len(CLASSES)) / len(labels)
    by_kind = {}
    for kind in sorted({r["kind"] for r in rows}):
        sel = np.array([r["kind"] == kind for r in rows])
        by_kind[kind] = dict(
            zip(CLASSES, (np.bincount(labels[sel], minlength=len(CLASSES)) / sel.sum()).round(3).tolist())
        )
    record.update(
        n_responses=len(rows),
        finished_rate=round(float(np.mean([r["finished"] for r in rows])), 3)
        if "finished" in rows[0]
        else None,
        mean_tokens=round(float(np.mean([r["n_tokens"] for r in rows])), 1)
        if "n_tokens" in rows[0]
        else None,
        coverage=dict(zip(CLASSES, mu.round(4).tolist())),
        counts=dict(zip(CLASSES, np.bincount(labels, minlength=len(CLASSES)).tolist())),
        by_kind=by_kind,
        min_share=round(float(mu.min()), 4),
        ok=bool(mu.min() >= 0.05),
    )
    if mu.min() > 0:
        taus = [float(t) for t in args.taus.split(",")]
        record["population"] = _rounded(
            {"majority_cycles": env.condorcet_cycles(), **environment_summary(env.game, mu, taus)}
        )
        record["bradley_terry"] = _rounded(environment_summary(control.game, mu, taus, reward=control.scores))
    print(json.dumps(record))


if __name__ == "__main__":
    main()
