"""Judge levers for ``nlhf demo`` (issue 14, point 3): does the preference model agree more with P* when its
training labels carry more votes?

    python benchmarks/judge_levers.py --run DEMO_RUN_DIR [--votes 16 64 0] [--epochs 1] [--out DIR]

Reads a finished demo run's labelled pairs (``pairs/train.jsonl``, ``pairs/eval.jsonl``: every pair keeps
its exact P* in the metadata), relabels the TRAINING pairs with ``v`` Bernoulli(P*) votes each (``0``: the
exact P* itself, the limit of infinitely many votes; seeded, one stream per setting), trains the
preference model exactly as the demo's stage 3 does (:func:`nlhf.demo.stages.fit_judge`: all-MiniLM-L6-v2,
lr, batch, max length and epochs from the run's ``config.yaml``), and scores it on the run's held-out PAIR
slice (pairs of training prompts kept out of judge training; never the demo's held-out tournament prompts)
with :func:`nlhf.demo.stages.judge_vs_oracle`: sign agreement with P* where P* != 1/2, mean |P - P*|.
One JSON line per setting (``"bench": "judge_levers"``), then nothing else; the same pairs and
responses for every setting, so only the labels differ.

``--smoke``: the tiny random BERT on the first 40 pairs, for the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit, peak_rss_mib  # noqa: E402


def relabel(rows: list[dict], votes: int, seed: int) -> list[dict]:
    """The rows with ``label`` = mean of ``votes`` Bernoulli(p_star) draws (0 votes: p_star exactly)."""
    import numpy as np

    rng = np.random.default_rng([seed, votes, 14])
    p = np.array([r["p_star"] for r in rows], dtype=np.float64)
    labels = p if votes == 0 else rng.binomial(votes, p) / votes
    return [{**r, "label": float(lab), "raters": votes} for r, lab in zip(rows, labels)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--run", required=True, help="a finished nlhf demo run directory (its pairs/ and config.yaml)"
    )
    ap.add_argument("--votes", type=int, nargs="+", default=[16, 64, 0], help="votes per pair (0: exact P*)")
    ap.add_argument(
        "--epochs", type=float, default=None, help="judge epochs (default: the run's judge_epochs)"
    )
    ap.add_argument("--out", default="/tmp/nlhf-judge-levers")
    ap.add_argument("--smoke", action="store_true", help="tiny random BERT, 40 pairs")
    args = ap.parse_args()

    from nlhf.config import load_config
    from nlhf.data import load_preferences
    from nlhf.demo.config import DemoConfig
    from nlhf.demo.stages import fit_judge, judge_vs_oracle, tiny_encoder_dir
    from nlhf.judges import load_judge

    run = Path(args.run)
    cfg = load_config(DemoConfig, run / "config.yaml")
    rows = [
        json.loads(line) for line in (run / "pairs" / "train.jsonl").read_text().splitlines() if line.strip()
    ]
    eval_path = run / "pairs" / "eval.jsonl"
    if args.smoke:
        rows = rows[:40]
    eval_pairs = load_preferences(str(eval_path))[: 40 if args.smoke else None]
    out = Path(args.out)
    judge_model = str(tiny_encoder_dir(out / "tiny_encoder", 0)) if args.smoke else cfg.judge_model
    for votes in args.votes:
        work = out / f"votes-{votes}"
        (work / "pairs").mkdir(parents=True, exist_ok=True)
        labelled = relabel(rows, votes, cfg.seed)
        (work / "pairs" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in labelled))
        (work / "pairs" / "eval.jsonl").write_text(eval_path.read_text())
        t0, c0 = time.perf_counter(), time.process_time()
        metrics = fit_judge("pm", cfg, work, judge_model, epochs=args.epochs)
        judge = load_judge(str(work / "pm"), cfg.eval_batch_size)
        emit({"bench": "judge_levers", "votes": votes, "epochs": args.epochs or cfg.judge_epochs,
              "n_train": len(labelled), "accuracy_on_labels": metrics["accuracy"], **judge_vs_oracle(judge, eval_pairs),
              "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(time.process_time() - c0, 1),
              "peak_rss_mib": round(peak_rss_mib(), 1), "run": str(run)})  # fmt: skip


if __name__ == "__main__":
    main()
