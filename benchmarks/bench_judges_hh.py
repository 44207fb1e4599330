"""The two judges on real data: HH-RLHF (harmless), preference model vs reward model.

    OMP_NUM_THREADS=1 python benchmarks/bench_judges_hh.py [--model minilm] [--max-length 256]
    python benchmarks/bench_judges_hh.py --smoke          # seconds: tiny model, a few pairs

Issue 3, "Real data". The valid pairs of ``../shared/data/hh-rlhf-harmless-1700.jsonl.gz``
(1,700 rows, 4 with an empty chosen response skipped: 1,696 pairs) are split in file order:
the first ``--n-train`` (1,400) train, the rest (296) evaluate. Both splits are written as
JSONL into the run directory and each judge is trained by the real command line,
``python -m nlhf train-pm`` / ``train-rm`` (``nlhf.train.fit.run_fit``), in its own
subprocess (its peak RSS is its own).

Settings (MiniLM, one epoch, cosine schedule, 10 warm-up steps, batch 8, clipping 1.0):

* ``max_length`` 256: all-MiniLM-L6-v2 was trained at 256 word pieces
  (``sentence_bert_config.json``); at 512 an epoch of the preference model took ~75 min
  on this shared 2-core machine. The truncation rule keeps both responses.
* reward model: mean pooling (MiniLM's own), lr 1e-4; preference model: ``"segments"``
  pooling (head on [mean of the first response's tokens; mean of the second's], the
  preference model's default on encoders), lr 1e-4. Chosen on a validation split of the
  TRAINING pairs only (train on pairs 0-599, validate on 600-999, ``max_length`` 128,
  batch 8, one epoch), never on the eval pairs: preference model lr 1e-4 mean 0.535
  [0.485, 0.585], lr 3e-4 mean 0.55 [0.503, 0.598], lr 3e-4 last 0.57 [0.523, 0.618],
  lr 1e-4 mean with token types 0/1 for the two responses 0.59, lr 1e-4 segments 0.6525
  (log-loss 0.643); reward model lr 1e-4 mean 0.6225 [0.575, 0.67] (log-loss 0.663).
  A full run with last pooling at lr 3e-4 scored 0.537 [0.480, 0.595] on the eval pairs:
  one vector pooled over the whole triple mixes the two responses, which the head must
  then tell apart. The project defaults (lr 5e-5, batch 16, mean pooling, 512) left the
  preference model's training loss flat at 0.694 for 50 of 87 steps (800 pairs).

The loop reports one number per set, so per-pair results come from loading each saved
model (``from_pretrained(out)``) and running the trainer's own collate and step functions
(:func:`nlhf.train.fit.make_collate`, :func:`nlhf.train.fit.make_step`) over the eval pairs
without gradients; their means must equal ``metrics.json`` (checked and printed as
``matches_metrics_json``). From those:

* accuracy and log-loss of each model, each with a 95 % percentile-bootstrap interval, and
  the expected calibration error over both orientations of every pair (every HH label is
  1; :func:`nlhf.train.calibration.both_orientations`);
* a paired bootstrap (the same resampled pairs for both models) of
  accuracy(preference model) - accuracy(reward model);
* training pairs per second: the loop's own ``examples_per_s`` (first step to last step,
  model loading and the final evaluation excluded), plus pairs per CPU-second of the
  training subprocess as a load-independent figure (the machine is shared);
* for context, the accuracy of "the shorter response (in characters) is preferred".

Output: one JSON line per model, then a summary line. Issue 3's target: each model's
accuracy interval lies above 0.5 (``above_chance``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from common import HH_PATH, emit, make_pairs, make_tiny_llama  # noqa: E402

KIND_NAMES = {"pm": "pairwise_preference", "rm": "reward"}


# ----------------------------------------------------------------------------- data


def load_split(data: Path | None, n_train: int, n_eval: int | None, smoke: bool) -> tuple[list, list, str]:
    """Valid pairs of ``data`` in file order: the first ``n_train`` train, the next ``n_eval`` (all) evaluate.

    In smoke mode without the data file, synthetic pairs (``common.make_pairs``) stand in.
    """
    from nlhf.data import PreferenceExample, load_preferences

    if data is not None and data.exists():
        pairs = list(load_preferences(data, skip_invalid=True))
        source = str(data)
    elif smoke:
        rows = make_pairs(n_train + (n_eval or 8), prompt_tokens=40, completion_tokens=30)
        pairs = [
            PreferenceExample(prompt=r["prompt"], first=r["chosen"], second=r["rejected"], label=1.0,
                              source=f"synthetic:{i}")
            for i, r in enumerate(rows)
        ]  # fmt: skip
        source = "synthetic (common.make_pairs)"
    else:
        raise FileNotFoundError(
            f"{data}: the HH-RLHF file is missing (expected ../shared/data next to the repo)"
        )
    if len(pairs) <= n_train:
        raise ValueError(f"{source}: {len(pairs)} valid pairs, need more than --n-train {n_train}")
    train = pairs[:n_train]
    evaluation = pairs[n_train:] if n_eval is None else pairs[n_train : n_train + n_eval]
    return train, evaluation, source


# ----------------------------------------------------------------------------- one judge, through the CLI


def kind_setting(args: argparse.Namespace, kind: str, name: str):
    """``--pm-lr`` / ``--rm-pooling`` ... when given, else the shared ``--lr`` / ``--pooling``."""
    value = getattr(args, f"{kind}_{name}")
    return getattr(args, name) if value is None else value


def train_judge(kind: str, args: argparse.Namespace, train_path: Path, eval_path: Path, out: Path) -> dict:
    """``python -m nlhf train-<kind>`` in a subprocess; returns wall/CPU seconds, peak RSS and metrics."""
    overrides = [
        f"max_length={args.max_length}",
        f"pooling={kind_setting(args, kind, 'pooling')}",
        f"optim.lr={kind_setting(args, kind, 'lr')}",
        f"optim.warmup_steps={args.warmup}",
        f"loop.micro_batch_size={args.micro_batch}",
        f"loop.grad_accum_steps={args.grad_accum}",
        f"loop.eval_batch_size={args.micro_batch * 2}",
        f"loop.seed={args.seed}",
        "loop.progress=false",
        "loop.tensorboard=false",
        "loop.log_every=10",
        "loop.overwrite=true",
    ]
    overrides.append(f"loop.max_steps={args.max_steps}" if args.max_steps else f"loop.epochs={args.epochs}")
    cmd = [
        sys.executable, "-m", "nlhf", f"train-{kind}",
        "--data", str(train_path), "--eval-data", str(eval_path), "--model", args.model, "--out", str(out),
        *overrides,
    ]  # fmt: skip
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    log = out.parent / f"{kind}.log"
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}); last lines of {log}:\n"
                           + "".join(log.read_text().splitlines(keepends=True)[-30:]))  # fmt: skip
    (out.parent / f"{kind}.run.json").write_text(json.dumps(
        {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mib": round(usage.ru_maxrss / 1024.0, 1)}
    ))  # fmt: skip
    return load_run(kind, out)


def load_run(kind: str, out: Path) -> dict:
    """A finished training run of ``kind`` in ``out``: its ``<kind>.run.json`` (times, RSS), metrics and log."""
    run = json.loads((out.parent / f"{kind}.run.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    train_logs = [
        r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r.get("split") == "train"
    ] if (out / "metrics.jsonl").is_file() else []  # fmt: skip
    return {**run, "metrics": metrics, "train_log": train_logs, "log": str(out.parent / f"{kind}.log")}


def per_pair_results(kind: str, out: Path, evaluation: list, batch: int) -> dict:
    """Load the saved judge and run the trainer's collate + step on every eval pair (no grad, eval mode).

    Returns numpy arrays ``correct`` (1, 0, or 1/2 on a tie: the loss module's definition),
    ``log_loss`` (the per-pair BCE against the label) and ``prob`` = P(first > second).
    """
    import torch

    from nlhf.models import PairwisePreferenceModel, RewardModel
    from nlhf.train.fit import make_collate, make_step
    from nlhf.train.loop import StepContext

    cls = PairwisePreferenceModel if kind == "pm" else RewardModel
    model = cls.from_pretrained(out, is_trainable=False)
    collate, step = make_collate(kind, model), make_step(kind)
    correct, loss, prob = [], [], []
    with torch.no_grad():
        for lo in range(0, len(evaluation), batch):
            idx = tuple(range(lo, min(lo + batch, len(evaluation))))
            res = step(
                model, collate([evaluation[i] for i in idx]), StepContext(0, 0, idx, idx, training=False)
            )
            correct.append(res.metrics["accuracy"][0].double())  # (b,)
            loss.append(res.losses.double())  # (b,)
            prob.append(res.outputs["prob"].double())  # (b,)
    return {
        "correct": torch.cat(correct).numpy(),
        "log_loss": torch.cat(loss).numpy(),
        "prob": torch.cat(prob).numpy(),
    }


# ----------------------------------------------------------------------------- statistics


def bootstrap_indices(n: int, resamples: int, seed: int):
    """(resamples, n) indices drawn with replacement; shared by every statistic (a paired bootstrap)."""
    import numpy as np

    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def percentile_interval(values, idx, level: float = 0.95) -> list[float]:
    """The percentile-bootstrap interval of the mean of ``values`` over the resamples ``idx``."""
    import numpy as np

    means = np.asarray(values, dtype=np.float64)[idx].mean(axis=1)  # (resamples,)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


# ----------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=HH_PATH)
    ap.add_argument("--model", default="minilm", help="backbone: minilm, smollm2, or a local directory")
    ap.add_argument("--n-train", type=int, default=1400)
    ap.add_argument(
        "--n-eval", type=int, default=None, help="eval pairs after the training ones (default: all)"
    )
    ap.add_argument(
        "--kinds", default="pm,rm", help="comma-separated: pm (preference model), rm (reward model)"
    )
    ap.add_argument("--max-length", type=int, default=256)
    poolings = ["auto", "mean", "last", "cls", "segments"]
    ap.add_argument("--pooling", default="auto", choices=poolings)
    ap.add_argument("--lr", type=float, default=1e-4)
    per_kind = {
        "pm": (1e-4, "segments"),
        "rm": (None, None),
    }  # validated on training pairs (module docstring)
    for kind, (lr, pooling) in per_kind.items():
        ap.add_argument(f"--{kind}-lr", type=float, default=lr, help=f"{kind} only (default: {lr or '--lr'})")
        ap.add_argument(f"--{kind}-pooling", default=pooling, choices=poolings,
                        help=f"{kind} only (default: {pooling or '--pooling'})")  # fmt: skip
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--max-steps", type=int, default=None, help="instead of --epochs (for timing trials)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bootstrap", type=int, default=10_000, help="bootstrap resamples")
    ap.add_argument("--out", type=Path, default=None, help="run directory (default: a new one under /tmp)")
    ap.add_argument("--reuse", action="store_true",
                    help="do not train a kind whose finished run is already in --out (OUT/<kind>/metrics.json "
                         "and OUT/<kind>.run.json, e.g. from separate --kinds pm / --kinds rm runs linked "
                         "together); evaluate and compare only")  # fmt: skip
    ap.add_argument("--smoke", action="store_true",
                    help="seconds: the tiny Llama of common.py, 24 training and 8 eval pairs, 3 steps")  # fmt: skip
    args = ap.parse_args(argv)
    if args.smoke:
        args.n_train, args.n_eval = 24, 8
        args.max_length, args.micro_batch, args.grad_accum, args.max_steps, args.warmup = 160, 4, 2, 3, 1
        args.bootstrap = 200
        args.lr = args.pm_lr = args.rm_lr = 1e-3
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    from nlhf.data import save_preferences

    root = args.out or Path(tempfile.mkdtemp(prefix="nlhf-bench-judges-hh-"))
    root.mkdir(parents=True, exist_ok=True)
    if args.smoke and args.model == "minilm":
        args.model = str(make_tiny_llama(root / "tiny-llama"))
    train, evaluation, source = load_split(args.data, args.n_train, args.n_eval, args.smoke)
    train_path = save_preferences(train, root / "train.jsonl")
    eval_path = save_preferences(evaluation, root / "eval.jsonl")
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    for k in kinds:
        if k not in KIND_NAMES:
            raise SystemExit(f"--kinds: unknown kind {k!r} (use pm, rm)")

    from nlhf.train.calibration import both_orientations, reliability_table

    n = len(evaluation)
    idx = bootstrap_indices(n, args.bootstrap, args.seed)
    labels = np.array([e.label for e in evaluation], dtype=np.float64)  # (n,)
    per: dict[str, dict] = {}
    settings = {
        "model": args.model if not args.smoke else "tiny-llama (smoke)",
        "max_length": args.max_length,
        "pooling": {k: kind_setting(args, k, "pooling") for k in kinds},
        "lr": {k: kind_setting(args, k, "lr") for k in kinds},
        "warmup_steps": args.warmup,
        "global_batch": args.micro_batch * args.grad_accum,
        "micro_batch": args.micro_batch,
        "epochs": None if args.max_steps else args.epochs,
        "max_steps": args.max_steps,
        "seed": args.seed,
        "threads": int(os.environ["OMP_NUM_THREADS"]),
    }
    for kind in kinds:
        done = (root / kind / "metrics.json").is_file() and (root / f"{kind}.run.json").is_file()
        run = (
            load_run(kind, root / kind)
            if args.reuse and done
            else train_judge(kind, args, train_path, eval_path, root / kind)
        )
        res = per_pair_results(kind, root / kind, evaluation, 2 * args.micro_batch)
        per[kind] = res
        m = run["metrics"]
        acc, ll = float(res["correct"].mean()), float(res["log_loss"].mean())
        last = run["train_log"][-1] if run["train_log"] else {}
        n_trained = m["steps"] * args.micro_batch * args.grad_accum
        emit({
            "name": f"nlhf-{KIND_NAMES[kind]}-hh",
            "accuracy": acc,
            "accuracy_ci95": percentile_interval(res["correct"], idx),
            "log_loss": ll,
            "log_loss_ci95": percentile_interval(res["log_loss"], idx),
            "above_chance": percentile_interval(res["correct"], idx)[0] > 0.5,
            "ece": reliability_table(*both_orientations(res["prob"], labels)).ece,  # 10 bins, both orientations
            "matches_metrics_json": abs(acc - m["accuracy"]) < 1e-6 and abs(ll - m["log_loss"]) < 1e-5,
            "train_pairs_per_s": last.get("examples_per_s"),
            "train_pairs_per_cpu_s": n_trained / run["cpu_s"],
            "train_pairs": n_trained,
            "steps": m["steps"],
            "final_train_loss": last.get("loss"),
            "truncated_rate_eval": m.get("truncated_rate"),
            "n_train": m["n_train"],
            "n_eval": n,
            "wall_s": round(run["wall_s"], 1),
            "cpu_s": round(run["cpu_s"], 1),
            "peak_rss_mib": run["peak_rss_mib"],
            "out": str(root / kind),
            **settings,
            "lr": kind_setting(args, kind, "lr"),
            "pooling": kind_setting(args, kind, "pooling"),
        })  # fmt: skip

    lengths = np.array([len(e.first) < len(e.second) for e in evaluation], dtype=np.float64)
    ties = np.array([len(e.first) == len(e.second) for e in evaluation])
    shorter_correct = np.where(ties, 0.5, np.where((lengths == 1) == (labels > 0.5), 1.0, 0.0))
    summary: dict = {
        "name": "judges-hh-summary",
        "data": source,
        "n_train": len(train),
        "n_eval": n,
        "bootstrap_resamples": args.bootstrap,
        "shorter_response_baseline_accuracy": float(shorter_correct.mean()),
        "shorter_response_baseline_ci95": percentile_interval(shorter_correct, idx),
        **settings,
    }
    for kind in kinds:
        summary[f"{kind}_accuracy"] = float(per[kind]["correct"].mean())
        summary[f"{kind}_above_chance"] = percentile_interval(per[kind]["correct"], idx)[0] > 0.5
    if "pm" in per and "rm" in per:
        diff = per["pm"]["correct"] - per["rm"]["correct"]  # (n,) paired
        summary["pm_minus_rm_accuracy"] = float(diff.mean())
        summary["pm_minus_rm_accuracy_ci95"] = percentile_interval(diff, idx)
        summary["pm_minus_rm_log_loss"] = float((per["pm"]["log_loss"] - per["rm"]["log_loss"]).mean())
        summary["pm_minus_rm_log_loss_ci95"] = percentile_interval(
            per["pm"]["log_loss"] - per["rm"]["log_loss"], idx
        )
    summary["target_met"] = all(summary[f"{k}_above_chance"] for k in kinds)
    emit(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
