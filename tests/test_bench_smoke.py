"""The judge benchmarks run end to end in their smoke modes (so the scripts cannot rot).

``benchmarks/bench_judges_hh.py --smoke``: both judges through ``python -m nlhf train-pm``
/ ``train-rm`` on a tiny Llama, 24 training and 8 eval pairs (HH-RLHF when ``../shared`` is
there, synthetic pairs otherwise), 3 steps. ``benchmarks/bench_judges_speed.py --smoke``:
4 steps of each side; the TRL side runs when TRL is installed in /tmp/trl116 and is
skipped with a printed reason otherwise (the smoke run never installs it).
``benchmarks/demo_oracle_ablation.py --smoke``: the demo's Nash-MD stage judged by the oracle,
on the tiny random model, 2 steps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
sys.path.insert(0, str(BENCH))
from bench_judges_speed import trl_available  # noqa: E402

pytestmark = pytest.mark.slow


def _run(script: str, *args: str) -> tuple[list[dict], str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), "--smoke", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=540,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return records, proc.stdout


def test_bench_judges_hh_smoke(tmp_path):
    records, _ = _run("bench_judges_hh.py", "--out", str(tmp_path))
    pm, rm, summary = records
    assert (pm["name"], rm["name"], summary["name"]) == (
        "nlhf-pairwise_preference-hh", "nlhf-reward-hh", "judges-hh-summary",
    )  # fmt: skip
    for rec in (pm, rm):
        # per-pair results recomputed from the saved model agree with the CLI's metrics.json
        assert rec["matches_metrics_json"] is True
        assert (rec["n_train"], rec["n_eval"], rec["steps"], rec["train_pairs"]) == (24, 8, 3, 24)
        # 8 pairs, each scored 0, 1/2 or 1: accuracy is a multiple of 1/16 inside its interval
        assert (rec["accuracy"] * 16) == pytest.approx(round(rec["accuracy"] * 16), abs=1e-9)
        lo, hi = rec["accuracy_ci95"]
        assert 0.0 <= lo <= rec["accuracy"] <= hi <= 1.0
        assert rec["above_chance"] == (lo > 0.5)
        assert rec["train_pairs_per_s"] > 0 and rec["peak_rss_mib"] > 0
        assert (tmp_path / rec["out"].rsplit("/", 1)[-1] / "metrics.json").is_file()
    assert summary["pm_minus_rm_accuracy"] == pytest.approx(pm["accuracy"] - rm["accuracy"], abs=1e-12)
    lo, hi = summary["pm_minus_rm_accuracy_ci95"]
    assert -1.0 <= lo <= summary["pm_minus_rm_accuracy"] <= hi <= 1.0
    assert summary["target_met"] == (pm["above_chance"] and rm["above_chance"])


def test_bench_judges_speed_smoke():
    records, stdout = _run("bench_judges_speed.py")
    by_name = {r["name"].split("-1.")[0] if r["name"].startswith("trl") else r["name"]: r for r in records}
    rm, pm = by_name["nlhf-reward"], by_name["nlhf-pairwise_preference"]
    # 4 steps of batch 8, the first (warm-up) untimed
    for rec in (rm, pm):
        assert (rec["steps"], rec["steps_timed"]) == (4, 3)
        assert rec["truncated_rate"] == 0.0
    # tokens the model reads per pair (byte-level tokenizer, prompt 23 and responses 40 bytes):
    # RM 2 x (23 + 40 + EOS) = 128 (x y [EOS], TRL's layout);
    # PM 2 orders x (23 + 14 + 40 + 14 + 40 + EOS) = 264, with "\n\nResponse A:\n" = 14 bytes
    assert rm["tokens_per_pair"] == 128.0
    assert pm["tokens_per_pair"] == 264.0
    assert rm["pairs_per_s"] * 128 == pytest.approx(rm["tokens_per_s"])
    assert pm["computed_tokens_per_pair"] == 227.0  # 264 minus the 37-token prefix both orders share
    summary = by_name["judges-speed-summary"]
    if trl_available():
        trl = by_name["trl"]
        assert trl["tokens_per_pair"] == 128.0  # 2 x (23 + 40 + EOS appended by RewardTrainer)
        assert summary["rm_pairs_per_s_vs_trl"] == pytest.approx(rm["pairs_per_s"] / trl["pairs_per_s"])
        assert summary["pm_tokens_per_s_vs_trl"] == pytest.approx(pm["tokens_per_s"] / trl["tokens_per_s"])
    else:
        assert "peer skipped: TRL" in stdout
        assert summary["peer"].startswith("skipped")


def test_demo_oracle_ablation_smoke(tmp_path):
    """The oracle-judge ablation of the demo, tiny model, 2 steps: one record whose win rate is pi^T P* mu."""
    import numpy as np

    from nlhf.envs import default_rater_population

    records, _ = _run("demo_oracle_ablation.py", "--out", str(tmp_path))
    (rec,) = [r for r in records if r.get("name") == "demo_oracle_ablation"]
    pi, mu = np.array(rec["pi_class_mix"]), np.array(rec["mu_class_mix"])
    assert rec["steps"] == 2 and rec["heldout_responses_per_policy"] == 8
    assert abs(pi.sum() - 1) < 1e-3 and abs(mu.sum() - 1) < 1e-3
    P = default_rater_population().game.P
    assert rec["win_pi_vs_mu_class_level"] == pytest.approx(float(pi @ P @ mu), abs=2e-3)


def test_offline_matmul_macs_by_hand(tmp_path):
    """``bench_offline.matmul_macs`` on the benchmark Llama (hidden 256, MLP 1024, 4 layers, 4 heads, vocab 259).

    Per position: one layer = q, o (256 x 256 each) + k, v (256 x 256 each) + the gated MLP
    (3 x 256 x 1024) = 1,048,576; the model = 4 layers + the head 256 x 259 = 4,260,608.
    TRL: 2 rows of 23 + 41 positions, policy forward + backward (x 3) and reference forward:
    128 x 4 x 4,260,608 = 2,181,431,296. nlhf: forward = 22 x 4 x 1,048,576 (prompt, no
    logits) + 82 x 4,260,608 = 441,644,544, twice (reference and policy); backward =
    2 x (82 x 4,260,608 + 22 x (3 x 1,048,576 + 131,072)) = 842,918,912; total
    1,726,208,000, ratio 0.791.
    """
    from bench_offline import matmul_macs

    (tmp_path / "config.json").write_text(json.dumps({
        "hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4, "vocab_size": 259,
        "num_attention_heads": 4, "num_key_value_heads": 4,
    }))  # fmt: skip
    assert matmul_macs(tmp_path, 23, 40) == {"nlhf_mmacs_per_pair": 1726.21, "trl_mmacs_per_pair": 2181.43,
                                             "ratio": 0.791}  # fmt: skip
