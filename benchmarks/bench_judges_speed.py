"""Judge training speed: nlhf's reward and preference models against TRL 1.16's RewardTrainer.

    OMP_NUM_THREADS=1 python benchmarks/bench_judges_speed.py [--pairs 160] [--repeat 3]
    python benchmarks/bench_judges_speed.py --smoke     # seconds; the peer is skipped without TRL

Issue 3, "Speed". All three sides train the same backbone (the tiny Llama of ``common.py``,
hidden 256, 4 layers: TRL loads it as ``AutoModelForSequenceClassification``, nlhf as
``RewardModel.from_backbone(dir)`` / ``PairwisePreferenceModel.from_backbone(dir)``, i.e.
the base ``LlamaModel`` with a linear head on the last real token) on the same pairs
(``common.make_pairs``: prompts of 23 tokens, responses of 40, one byte = one token), batch 8,
fp32, AdamW at lr 1e-5, no weight decay, clipping at 1.0, linear schedule, no warm-up, one
epoch, one thread. Each side runs in its own subprocess (its peak RSS is its own); runs are
interleaved (nlhf RM, nlhf PM, TRL, nlhf RM, ...) ``--repeat`` times and medians reported.

* nlhf: the real command path, :func:`nlhf.train.fit.run_fit` (``TrainLoop`` with
  ``make_collate``/``make_step``); the bench wraps ``TrainLoop._train_step`` to timestamp
  the end of every step and ``TrainLoop._micro_batch`` to count tokens.
* TRL: ``RewardTrainer.train()`` with a callback timestamping ``on_step_end``; tokens from
  the trainer's own ``_total_train_tokens`` (``attention_mask.sum()`` of every batch).

Time per step: the interval between two consecutive step ends, so everything a step costs
is in it (fetching and padding the batch: both sides tokenise the pairs once before
training, nlhf with ``FitConfig.pretokenize``, TRL in its constructor; forward, backward,
clipping, the optimiser, logging); the first step (warm-up)
is dropped. Throughput = pairs (or tokens) of the timed steps / their summed time, in wall
seconds and in process CPU seconds (the latter robust to other jobs on a shared machine).
Tokens are counted the same way for every side: the non-padding tokens of the input rows
(the attention-mask sum: prompt, responses, EOS; the PM's layout markers). The reward
model's input is ``x y [EOS]`` like TRL's (64 tokens a row, 128 a pair); the preference
model's rows are ``x "\\n\\nResponse A:\\n" a "\\n\\nResponse B:\\n" b [EOS]`` in both
orders (132 tokens a row, 264 a pair), and it runs the prefix both orders share (prompt
and first marker, 37 tokens) once per pair from a KV cache
(:meth:`nlhf.models.scorer.SequenceScorer.score_shared_prefix`), so it computes fewer
tokens than it reads: ``computed_tokens_per_s`` counts those (227 a pair).
``content_tokens_per_s`` counts only prompt and response tokens (nlhf PM: x, a, b in both
orders = 2 x 103 per pair; RM and TRL: 2 x 63 per pair).

Targets: nlhf RM pairs/s >= TRL's; nlhf PM tokens/s >= TRL's (it reads (x, a, b) in both
orders, so more tokens per pair).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from common import emit, make_pairs, make_tiny_llama, peak_rss_mib, single_thread  # noqa: E402

TRL_DIR = Path(os.environ.get("NLHF_TRL_DIR", "/tmp/trl116"))
TRL_VERSION = "1.16.0"
LR = 1e-5
WARMUP_STEPS_DROPPED = 1


def trl_available() -> bool:
    return (TRL_DIR / "trl" / "__init__.py").is_file()


def ensure_trl() -> None:
    if not trl_available():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--no-deps",
                "--target",
                str(TRL_DIR),
                f"trl=={TRL_VERSION}",
            ],
            check=True,
        )


def throughput(ends_wall: list[float], ends_cpu: list[float], pairs: list[int], tokens: list[int],
               content_per_pair: int, drop: int = WARMUP_STEPS_DROPPED) -> dict:  # fmt: skip
    """Per-step intervals after ``drop`` warm-up steps -> medians and steady-state throughputs."""
    wall = [b - a for a, b in zip(ends_wall[drop - 1 :], ends_wall[drop:])]  # steps drop .. N-1
    cpu = [b - a for a, b in zip(ends_cpu[drop - 1 :], ends_cpu[drop:])]
    p, t = sum(pairs[drop:]), sum(tokens[drop:])
    return {
        "steps_timed": len(wall),
        "median_s_per_step": statistics.median(wall),
        "pairs_per_s": p / sum(wall),
        "tokens_per_s": t / sum(wall),
        "content_tokens_per_s": p * content_per_pair / sum(wall),
        "pairs_per_cpu_s": p / sum(cpu),
        "tokens_per_cpu_s": t / sum(cpu),
        "tokens_per_pair": t / p,
    }


# ----------------------------------------------------------------------------- the sides (subprocesses)


def side_ours(args: argparse.Namespace) -> None:
    """``run_fit(kind, cfg)`` on the benchmark model and pairs; prints one JSON line."""
    single_thread()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from nlhf.train import loop as loop_mod
    from nlhf.train.fit import load_fit_config, run_fit

    ends_wall: list[float] = []
    ends_cpu: list[float] = []
    pairs: list[int] = []
    tokens: list[int] = []
    step_tokens = [0, 0]  # tokens of the input rows, tokens computed (shared prefixes once)
    computed: list[int] = []
    original_step, original_micro = loop_mod.TrainLoop._train_step, loop_mod.TrainLoop._micro_batch

    def micro_batch(self, micro_step):
        batch, ctx = original_micro(self, micro_step)
        from nlhf.models.scorer import shared_prefix_lengths

        n = int(batch["attention_mask"].sum())
        step_tokens[0] += n
        prefix = None
        model = self.accelerator.unwrap_model(self.model)
        if args.kind == "pm" and getattr(model, "share_prompt", False) and model.backbone_kind == "causal":
            prefix = shared_prefix_lengths(batch["input_ids"], batch["attention_mask"], batch["segment_ids"])
        step_tokens[1] += n - (0 if prefix is None else int(prefix.sum()))
        return batch, ctx

    def train_step(self):
        step_tokens[0] = step_tokens[1] = 0
        result = original_step(self)
        ends_wall.append(time.perf_counter())
        ends_cpu.append(time.process_time())
        pairs.append(self.global_batch)
        tokens.append(step_tokens[0])
        computed.append(step_tokens[1])
        return result

    loop_mod.TrainLoop._micro_batch = micro_batch
    loop_mod.TrainLoop._train_step = train_step
    out = tempfile.mkdtemp(prefix=f"nlhf-bench-judges-{args.kind}-")
    overrides = [
        f"optim.lr={LR}", "optim.warmup_steps=0", "optim.schedule=linear", "optim.weight_decay=0.0",
        "optim.max_grad_norm=1.0", f"loop.micro_batch_size={args.batch}", "loop.epochs=1",
        "loop.log_every=100000", "loop.progress=false", "loop.tensorboard=false", "loop.eval_at_end=false",
        "loop.min_free_disk_mb=1",
    ]  # fmt: skip
    cfg = load_fit_config(
        None, overrides, data=args.data, eval_data=args.eval_data, model=args.model, out=out
    )
    t0 = time.perf_counter()
    try:
        summary = run_fit(args.kind, cfg)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    total = time.perf_counter() - t0
    content = 2 * (args.prompt_tokens + 2 * args.completion_tokens) if args.kind == "pm" else 2 * (
        args.prompt_tokens + args.completion_tokens)  # fmt: skip
    measured = throughput(ends_wall, ends_cpu, pairs, tokens, content)
    timed_s = measured["pairs_per_s"] and sum(pairs[WARMUP_STEPS_DROPPED:]) / measured["pairs_per_s"]
    emit({
        "name": f"nlhf-{'pairwise_preference' if args.kind == 'pm' else 'reward'}",
        **measured,
        "computed_tokens_per_s": sum(computed[WARMUP_STEPS_DROPPED:]) / timed_s,
        "computed_tokens_per_pair": sum(computed[WARMUP_STEPS_DROPPED:]) / sum(pairs[WARMUP_STEPS_DROPPED:]),
        "steps": len(ends_wall),
        "truncated_rate": summary.get("truncated_rate"),
        "run_fit_s": total,
        "peak_rss_mib": round(peak_rss_mib(), 1),
    })  # fmt: skip


def side_trl(args: argparse.Namespace) -> None:
    """TRL 1.16's ``RewardTrainer`` on the same model and pairs (run with TRL on PYTHONPATH)."""
    single_thread()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import datasets
    import torch
    import trl
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback

    ends_wall: list[float] = []
    ends_cpu: list[float] = []
    tokens_after: list[int] = []
    holder: dict = {}

    class StepTimer(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            ends_wall.append(time.perf_counter())
            ends_cpu.append(time.process_time())
            tokens_after.append(int(holder["trainer"]._total_train_tokens))

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(args.model)
    rows = [json.loads(line) for line in Path(args.data).read_text().splitlines()]
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=1)
    model.config.pad_token_id = tok.pad_token_id
    cfg = trl.RewardConfig(
        output_dir=tempfile.mkdtemp(prefix="nlhf-bench-trl-"), per_device_train_batch_size=args.batch,
        num_train_epochs=1, learning_rate=LR, weight_decay=0.0, max_grad_norm=1.0, lr_scheduler_type="linear",
        warmup_steps=0, bf16=False, fp16=False, gradient_checkpointing=False, report_to=[], save_strategy="no",
        eval_strategy="no", logging_steps=100_000, disable_tqdm=True, use_cpu=True, dataloader_num_workers=0,
        seed=0, max_length=args.prompt_tokens + args.completion_tokens + 8,
    )  # fmt: skip
    trainer = trl.RewardTrainer(model=model, args=cfg, train_dataset=datasets.Dataset.from_list(rows),
                                processing_class=tok, callbacks=[StepTimer()])  # fmt: skip
    holder["trainer"] = trainer
    t0 = time.perf_counter()
    try:
        trainer.train()
    finally:
        shutil.rmtree(cfg.output_dir, ignore_errors=True)
    total = time.perf_counter() - t0
    tokens = [b - a for a, b in zip([0, *tokens_after[:-1]], tokens_after)]
    emit({
        "name": f"trl-{trl.__version__}-reward",
        **throughput(ends_wall, ends_cpu, [args.batch] * len(ends_wall), tokens,
                     2 * (args.prompt_tokens + args.completion_tokens)),
        "steps": len(ends_wall),
        "train_s": total,
        "peak_rss_mib": round(peak_rss_mib(), 1),
    })  # fmt: skip


# ----------------------------------------------------------------------------- driver


def run_side(side: str, args: argparse.Namespace, model: Path, data: Path, eval_data: Path) -> dict:
    cmd = [
        sys.executable, __file__, "--side", side, "--model", str(model), "--data", str(data),
        "--eval-data", str(eval_data), "--batch", str(args.batch),
        "--prompt-tokens", str(args.prompt_tokens), "--completion-tokens", str(args.completion_tokens),
    ]  # fmt: skip
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    paths = [str(REPO)] + ([str(TRL_DIR)] if side == "trl" else []) + [env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"side {side} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])


def median_record(records: list[dict]) -> dict:
    out = dict(records[0])
    for key, value in records[0].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = statistics.median(r[key] for r in records)
    out["runs"] = len(records)
    for key in ("pairs_per_s", "tokens_per_s", "median_s_per_step"):
        out[f"{key}_each_run"] = [round(r[key], 4) for r in records]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--side", choices=["rm", "pm", "trl"], help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--eval-data", dest="eval_data", help=argparse.SUPPRESS)
    ap.add_argument("--pairs", type=int, default=160, help="training pairs per run (steps = pairs / batch)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prompt-tokens", type=int, default=23)
    ap.add_argument("--completion-tokens", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=3, help="interleaved runs of every side (medians reported)")
    ap.add_argument(
        "--smoke", action="store_true", help="4 steps, one run; the peer skipped when TRL is absent"
    )
    args = ap.parse_args(argv)
    if args.side is not None:
        args.kind = args.side
        (side_trl if args.side == "trl" else side_ours)(args)
        return 0

    if args.smoke:
        args.pairs, args.repeat = 4 * args.batch, 1
    peer = True
    if args.smoke and not trl_available():
        print(f"peer skipped: TRL {TRL_VERSION} is not installed in {TRL_DIR} (the smoke run does not install it)",
              flush=True)  # fmt: skip
        peer = False
    elif not args.smoke:
        ensure_trl()
    work = Path(tempfile.mkdtemp(prefix="nlhf-bench-judges-speed-"))
    model = make_tiny_llama(work / "tiny-llama")
    rows = make_pairs(args.pairs, args.prompt_tokens, args.completion_tokens)
    data, eval_data = work / "train.jsonl", work / "eval.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    eval_data.write_text("".join(json.dumps(r) + "\n" for r in rows[: args.batch]))

    sides = ["rm", "pm"] + (["trl"] if peer else [])
    load = [os.getloadavg()[0]]
    results: dict[str, list[dict]] = {s: [] for s in sides}
    try:
        for _ in range(args.repeat):
            for side in sides:
                results[side].append(run_side(side, args, model, data, eval_data))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load.append(os.getloadavg()[0])
    med = {s: median_record(r) for s, r in results.items()}
    for s in sides:
        emit(med[s])
    summary = {
        "name": "judges-speed-summary",
        "pairs": args.pairs,
        "batch": args.batch,
        "prompt_tokens": args.prompt_tokens,
        "completion_tokens": args.completion_tokens,
        "repeat": args.repeat,
        "loadavg_1min_before_after": load,
    }
    if peer:
        trl_rec, rm, pm = med["trl"], med["rm"], med["pm"]
        summary.update({
            "rm_pairs_per_s_vs_trl": rm["pairs_per_s"] / trl_rec["pairs_per_s"],
            "rm_pairs_per_cpu_s_vs_trl": rm["pairs_per_cpu_s"] / trl_rec["pairs_per_cpu_s"],
            "pm_tokens_per_s_vs_trl": pm["tokens_per_s"] / trl_rec["tokens_per_s"],
            "pm_tokens_per_cpu_s_vs_trl": pm["tokens_per_cpu_s"] / trl_rec["tokens_per_cpu_s"],
            "pm_computed_tokens_per_s_vs_trl": pm["computed_tokens_per_s"] / trl_rec["tokens_per_s"],
            "pm_content_tokens_per_s_vs_trl": pm["content_tokens_per_s"] / trl_rec["content_tokens_per_s"],
            "pm_pairs_per_s_vs_trl": pm["pairs_per_s"] / trl_rec["pairs_per_s"],
            "rm_rss_vs_trl": rm["peak_rss_mib"] / trl_rec["peak_rss_mib"],
            "pm_rss_vs_trl": pm["peak_rss_mib"] / trl_rec["peak_rss_mib"],
        })  # fmt: skip
        summary["target_rm_pairs_per_s"] = summary["rm_pairs_per_s_vs_trl"] >= 1.0
        summary["target_pm_tokens_per_s"] = summary["pm_tokens_per_s_vs_trl"] >= 1.0
    else:
        summary["peer"] = f"skipped: TRL {TRL_VERSION} not installed in {TRL_DIR}"
    emit(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
