"""benchmarks/judge_levers.py: the relabelling is what it says, and the script runs end to end on a small
fake demo run with the tiny random BERT (so it cannot rot)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _module():
    sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("judge_levers", REPO / "benchmarks" / "judge_levers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_relabel_votes_and_the_exact_limit():
    relabel = _module().relabel
    rows = [{"p_star": p, "label": 0.5} for p in np.linspace(0.05, 0.95, 400)]
    exact = relabel(rows, 0, seed=0)
    assert [r["label"] for r in exact] == [r["p_star"] for r in rows]
    four = relabel(rows, 4, seed=0)
    assert {r["label"] for r in four} <= {0.0, 0.25, 0.5, 0.75, 1.0} and four == relabel(rows, 4, seed=0)
    many = np.array([r["label"] for r in relabel(rows, 4000, seed=0)])
    assert np.max(np.abs(many - [r["p_star"] for r in rows])) < 0.04  # 4000 votes: within ~5 SE of P*


def test_script_on_a_fake_run(tmp_path):
    from nlhf.config import save_config
    from nlhf.demo.config import DemoConfig

    run = tmp_path / "run"
    (run / "pairs").mkdir(parents=True)
    save_config(DemoConfig(judge_model="tiny", judge_batch_size=4, judge_max_length=32), run / "config.yaml")
    rng = np.random.default_rng(0)
    rows = [{"prompt": f"question {i % 5}", "response_a": f"answer {i} a", "response_b": f"reply {i} b",
             "label": 0.5, "prompt_id": f"p{i % 5}", "p_star": float(rng.choice([0.2, 0.5, 0.8]))}
            for i in range(24)]  # fmt: skip
    for name, part in (("train", rows[:16]), ("eval", rows[16:])):
        (run / "pairs" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "judge_levers.py"), "--run", str(run), "--smoke",
                           "--votes", "2", "0", "--out", str(tmp_path / "out")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["votes"] for r in lines] == [2, 0] and all(
        r["n_train"] == 16 and r["n_pairs"] == 8 for r in lines
    )
    for r in lines:
        assert 0.0 <= r["sign_agreement_vs_p_star"] <= 1.0 and 0.0 <= r["mean_abs_error_vs_p_star"] <= 1.0
    trained = [
        json.loads(x)
        for x in (tmp_path / "out" / "votes-0" / "pairs" / "train.jsonl").read_text().splitlines()
    ]
    assert [t["label"] for t in trained] == [r["p_star"] for r in rows[:16]]
