"""benchmarks/nash_md_learning_curves.py runs end to end on the tiny random model (so the script cannot rot),
and what it writes is what it says: a header with the class-level target, then one line per evaluation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def test_learning_curves_script_on_the_tiny_model(tmp_path):
    out = tmp_path / "curves.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    args = ["--model", "tiny", "--responses", "2", "--batch", "2", "--steps", "3", "--eval-every", "0.001",
            "--eval-prompts", "2", "--eval-samples", "2", "--train-prompts", "8", "--max-new-tokens", "4",
            "--out", str(out)]  # fmt: skip
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "nash_md_learning_curves.py"), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    head, *rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert head["args"]["responses"] == 2 and len(head["classes"]) == 4
    np.testing.assert_allclose(sum(head["target_pi_tau"]), 1.0, atol=1e-9)
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert (
        rows[0]["win_vs_mu"] == 0.5 and rows[0]["class_kl"] == 0.0
    )  # pi_hat = mu_hat at step 0 (same streams)
    for r in rows:
        pi = np.array(r["class_distribution"])
        np.testing.assert_allclose(pi.sum(), 1.0, atol=1e-3)
        assert 0.0 <= r["exploitability"] <= 0.5
