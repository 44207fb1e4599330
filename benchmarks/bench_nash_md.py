"""Nash-MD-PG step time and peak memory: nlhf against TRL 1.13's ``NashMDTrainer``, same model, data, judge.

    OMP_NUM_THREADS=1 python benchmarks/bench_nash_md.py [--tokens 32 40 64 128] [--steps 4] [--trl /tmp/trl113]

Setting (docs/PEERS.md): the benchmark tiny Llama (``common.make_tiny_llama``: hidden 256,
4 layers, vocab 259, fp32, CPU, one thread) as policy and reference; B = 8 prompts of 23
tokens a step; ``--tokens`` new tokens (temperature 1, no top-k/top-p, mixture_coef 0.5,
tau = TRL's beta = 0.1, AdamW lr 1e-6); the judge is the SAME scalar reward model on both
sides, P(y > y') = sigmoid(r(x, y) - r(x, y')), a Llama of the same size with a linear head
on the last token (TRL: ``AutoModelForSequenceClassification``; nlhf: the same weights in a
:class:`nlhf.models.RewardModel` behind :class:`nlhf.judges.RewardModelJudge`).

Cases, each in its own process (so ``peak_rss_mib`` is that run's own maximum resident set):

* ``nlhf``: :func:`nlhf.train.nash_md.run_nash_md`, algorithm ``nash_md``; one decode loop gives
  y (with log pi and log mu of its tokens) and y' ~ the token-level mixture, two KV caches;
* ``trl-uncached``: TRL 1.13 with ``generation_kwargs={"use_cache": False}``: the correct
  mixture, every decode step recomputing the whole prefix (quadratic);
* ``trl-cached``: TRL 1.13's default (KV cache on): faster, but policy and reference share one
  cache in the mixture wrapper, so y' is not the mixture (docs/PEERS.md) -- reported, not a target.

Each case runs ``--steps`` optimiser steps; ``median_s_per_step`` (wall) and
``median_cpu_s_per_step`` (CPU time of the process: less sensitive to other jobs on a shared
machine) drop the first (warm-up) step. One JSON line per case and length, then a summary line with the ratios
nlhf / trl-uncached (target <= 0.25 at 40 tokens), nlhf / trl-cached (target <= 1), in wall
and CPU time, and the memory ratios. Run TRL's cases with ``--trl DIR`` holding ``pip install --no-deps --target DIR
trl==1.13.0``; without it only nlhf runs.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import emit, make_pairs, make_tiny_llama, single_thread, summarise  # noqa: E402

BATCH = 8
PROMPT_TOKENS = 23
MIXTURE_COEF = 0.5
TAU = 0.1
LR = 1e-6


def prompts(n: int) -> list[str]:
    return [row["prompt"] for row in make_pairs(n, PROMPT_TOKENS, 40)]


def make_reward_model(model_dir: Path, out: Path) -> Path:
    """The judge: a sequence-classification Llama (random head, seed 0) saved once, read by both sides."""
    if (out / "config.json").exists():
        return out
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    rm = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)
    rm.config.pad_token_id = tok.pad_token_id
    rm.save_pretrained(out)
    tok.save_pretrained(out)
    return out


class SeqClsRewardModel:
    """nlhf's RewardModel over the SAME weights as TRL's AutoModelForSequenceClassification judge."""

    @staticmethod
    def load(path: Path):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from nlhf.models import RewardModel

        tok = AutoTokenizer.from_pretrained(path)
        cls = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
        rm = RewardModel(
            cls.model, tok, pooling="last", kind_of_backbone="causal", max_length=PROMPT_TOKENS + 256
        )
        with torch.no_grad():  # the same linear head (no bias) as the classifier's score layer
            head = rm.head if hasattr(rm, "head") else None
            if head is None or head.weight.shape != cls.score.weight.shape:
                raise RuntimeError("RewardModel head layout changed; update the benchmark")
            head.weight.copy_(cls.score.weight)
            if getattr(head, "bias", None) is not None:
                head.bias.zero_()
        return rm.eval()


def median_tail(values: list[float]) -> float:
    """Median without the first (warm-up) value, as :func:`common.summarise` does for wall times."""
    import statistics

    return statistics.median(values[1:] if len(values) > 2 else values)


# ----------------------------------------------------------------------------- the two sides


def run_nlhf(args) -> None:
    single_thread()
    import torch

    from nlhf.judges import RewardModelJudge
    from nlhf.models.loading import load_causal_lm
    from nlhf.sampling import SamplingConfig
    from nlhf.train import loop as loop_mod
    from nlhf.train.config import LoopConfig, OptimConfig
    from nlhf.train.nash_md import NashMDConfig, run_nash_md

    torch.manual_seed(0)
    model, tok = load_causal_lm(args.model)
    judge = RewardModelJudge(SeqClsRewardModel.load(Path(args.reward)), batch_size=2 * BATCH)
    times: list[float] = []
    cpu: list[float] = []
    real = loop_mod.TrainLoop._train_step

    def timed(self):
        t, c = time.perf_counter(), time.process_time()
        out = real(self)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        return out

    loop_mod.TrainLoop._train_step = timed
    cfg = NashMDConfig(
        algorithm="nash_md", tau=TAU, mixture_coef=MIXTURE_COEF, out=args.out,
        sampling=SamplingConfig(max_new_tokens=args.tokens, temperature=1.0),
        optim=OptimConfig(lr=LR, max_grad_norm=1.0, schedule="constant"),
        loop=LoopConfig(max_steps=args.steps, micro_batch_size=BATCH, log_every=10_000, progress=False,
                        tensorboard=False, min_free_disk_mb=1, overwrite=True, eval_at_end=False),
    )  # fmt: skip
    result = run_nash_md(
        cfg, model=model, tokenizer=tok, judge=judge, train_prompts=prompts(BATCH * args.steps)
    )
    emit(
        summarise(
            "nlhf",
            times,
            tokens=args.tokens,
            batch=BATCH,
            median_cpu_s_per_step=median_tail(cpu),
            length=result.summary["train"].get("length"),
        )
    )


def run_trl(args) -> None:
    single_thread()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import datasets
    import torch
    import trl
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        TrainerCallback,
    )
    from trl.experimental.nash_md import NashMDConfig, NashMDTrainer

    times: list[float] = []
    cpu: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            self._t, self._c = time.perf_counter(), time.process_time()

        def on_step_end(self, a, state, control, **kw):
            times.append(time.perf_counter() - self._t)
            cpu.append(time.process_time() - self._c)

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model)
    ref = AutoModelForCausalLM.from_pretrained(args.model)
    rm = AutoModelForSequenceClassification.from_pretrained(args.reward, num_labels=1)
    data = datasets.Dataset.from_list([{"prompt": p} for p in prompts(BATCH * args.steps)])
    cfg = NashMDConfig(
        output_dir="/tmp/nlhf-peer-nash-md", per_device_train_batch_size=BATCH, max_steps=args.steps,
        learning_rate=LR, bf16=False, fp16=False, gradient_checkpointing=False, report_to=[],
        save_strategy="no", eval_strategy="no", logging_steps=10_000, disable_tqdm=True, use_cpu=True,
        dataloader_num_workers=0, seed=0, max_new_tokens=args.tokens, temperature=1.0, beta=TAU,
        mixture_coef=MIXTURE_COEF, generation_kwargs={"use_cache": False} if args.case == "trl-uncached" else None,
    )  # fmt: skip
    trainer = NashMDTrainer(model=model, ref_model=ref, reward_funcs=rm, args=cfg, train_dataset=data,
                            processing_class=tok, callbacks=[StepTimer()])  # fmt: skip
    trainer.train()
    emit(
        summarise(
            f"{args.case}-{trl.__version__}",
            times,
            tokens=args.tokens,
            batch=BATCH,
            median_cpu_s_per_step=median_tail(cpu),
        )
    )


# ----------------------------------------------------------------------------- driver


def child(case: str, tokens: int, steps: int, model: Path, reward: Path, trl_dir: str | None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRL_EXPERIMENTAL_SILENCE="1")
    repo = str(HERE.parent)
    paths = ([trl_dir] if case.startswith("trl") and trl_dir else []) + [repo, env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    cmd = [sys.executable, str(Path(__file__).resolve()), "_child", case, "--tokens", str(tokens), "--steps",
           str(steps), "--model", str(model), "--reward", str(reward), "--out", f"/tmp/nlhf-bench-nash-md-{case}"]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"name": case, "tokens": tokens, "error": proc.stderr[-2000:]}
    record = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
    record["process_s"] = round(time.perf_counter() - t0, 1)
    return record


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", nargs="?", default="run", choices=["run", "_child"])
    ap.add_argument("case", nargs="?", default=None)
    ap.add_argument("--tokens", type=int, nargs="+", default=[32, 40, 64, 128])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--model", default="/tmp/nlhf-bench/tiny-llama")
    ap.add_argument("--reward", default="/tmp/nlhf-bench/tiny-llama-rm")
    ap.add_argument("--out", default="/tmp/nlhf-bench-nash-md")
    ap.add_argument(
        "--trl", default=None, help="directory with trl==1.13.0 (pip install --no-deps --target DIR)"
    )
    ap.add_argument("--cases", nargs="+", default=["nlhf", "trl-uncached", "trl-cached"])
    args = ap.parse_args()
    if args.mode == "_child":
        args.tokens = args.tokens[0]
        (run_nlhf if args.case == "nlhf" else run_trl)(args)
        return

    model = make_tiny_llama(args.model)
    reward = make_reward_model(model, Path(args.reward))
    cases = [c for c in args.cases if c == "nlhf" or args.trl]
    results: dict[tuple[str, int], dict] = {}
    for tokens in args.tokens:
        for case in cases:
            record = child(case, tokens, args.steps, model, reward, args.trl)
            results[(case, tokens)] = record
            emit(record)
    summary: dict = {"name": "summary"}
    for tokens in args.tokens:
        ours = results.get(("nlhf", tokens), {})
        for peer in ("trl-uncached", "trl-cached"):
            theirs = results.get((peer, tokens), {})
            if "median_s_per_step" in ours and "median_s_per_step" in theirs:
                summary[f"time_nlhf/{peer}@{tokens}"] = round(
                    ours["median_s_per_step"] / theirs["median_s_per_step"], 3
                )
                summary[f"cpu_nlhf/{peer}@{tokens}"] = round(
                    ours["median_cpu_s_per_step"] / theirs["median_cpu_s_per_step"], 3
                )
                summary[f"rss_nlhf/{peer}@{tokens}"] = round(ours["peak_rss_mib"] / theirs["peak_rss_mib"], 3)
    for case in cases:
        lo, hi = results.get((case, min(args.tokens)), {}), results.get((case, max(args.tokens)), {})
        if "median_s_per_step" in lo and "median_s_per_step" in hi:
            summary[f"growth_{case}_{min(args.tokens)}to{max(args.tokens)}"] = round(
                hi["median_s_per_step"] / lo["median_s_per_step"], 2
            )
    emit(summary)


if __name__ == "__main__":
    main()
