"""benchmarks/policy_levers.py: it evaluates on the judges' held-out pair slice only, its numbers are what they
say (TV to the judge's target, exploitability under P*), the overrides reach the trainers, and it runs end to
end on a fake demo run with the tiny random models (so it cannot rot)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("policy_levers", REPO / "benchmarks" / "policy_levers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _pairs(prompts, n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"prompt": prompts[i % len(prompts)].prompt, "response_a": f"Sure. answer {i}",
             "response_b": f"I think {i}", "label": float(rng.choice([0.0, 1.0])),
             "prompt_id": prompts[i % len(prompts)].metadata["id"], "p_star": 0.65} for i in range(n)]  # fmt: skip


def _fake_run(root: Path) -> tuple[Path, list]:
    from nlhf.config import save_config
    from nlhf.demo.config import DemoConfig
    from nlhf.demo.stages import fit_judge, pick_prompts, tiny_encoder_dir

    run = root / "run"
    (run / "pairs").mkdir(parents=True)
    cfg = DemoConfig(model="tiny", judge_model="tiny", n_train_prompts=8, max_new_tokens=4, nash_steps=1,
                     nash_batch_size=2, nash_responses=2, rlhf_steps=1, rlhf_batch_size=2, judge_batch_size=4,
                     judge_max_length=32, eval_batch_size=8, threads=1)  # fmt: skip
    save_config(cfg, run / "config.yaml")
    train = pick_prompts("train", 8)
    (run / "pairs" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _pairs(train[:6], 8, 0)))
    (run / "pairs" / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _pairs(train[6:], 4, 1)))
    encoder = str(tiny_encoder_dir(root / "encoder"))
    for kind in ("pm", "rm"):
        fit_judge(kind, cfg, run, encoder)
    targets = {"nash_md_target": [0.1, 0.2, 0.6, 0.1], "rlhf_target": [0.0, 0.0, 1.0, 0.0]}
    (run / "summary.json").write_text(json.dumps({"judge_targets": targets}))
    return run, train


def test_slice_prompts_are_the_eval_pairs_training_prompts_and_a_stranger_is_named(tmp_path):
    from nlhf.demo.stages import pick_prompts

    mod = _module()
    run = tmp_path / "run"
    (run / "pairs").mkdir(parents=True)
    train = pick_prompts("train", 8)
    rows = _pairs([train[5], train[2]], 4, 0)
    (run / "pairs" / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = mod.slice_prompts(run, 8)
    assert [p.prompt for p in got] == [train[2].prompt, train[5].prompt]  # the demo's order, each once
    rows.append({**rows[0], "prompt": "a prompt the built-in set does not have"})
    (run / "pairs" / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match="eval.jsonl: 3 slice prompts, 2 found"):
        mod.slice_prompts(run, 8)


def test_script_on_a_fake_run_with_tiny_models(tmp_path):
    from nlhf.envs import default_rater_population
    from nlhf.lab import exploitability

    run, train = _fake_run(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "policy_levers.py"), "--run", str(run),
                           "--label", "lr", "--set", "policy_lr=0.003", "--set", "rlhf_steps=2",
                           "--eval-samples", "3", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [r["algorithm"] for r in lines] == ["nash_md", "rlhf"]
    assert [r["steps"] for r in lines] == [1, 2]  # the override reached the RLHF trainer
    P = default_rater_population().P
    for r, target in zip(lines, ([0.1, 0.2, 0.6, 0.1], [0.0, 0.0, 1.0, 0.0])):
        assert r["eval_prompts"] == 2 and r["overrides"] == ["policy_lr=0.003", "rlhf_steps=2"]
        pi, mu = np.array(r["class_distribution"]), np.array(r["mu_hat"])
        assert r["judge_target"] == target
        np.testing.assert_allclose([pi.sum(), mu.sum()], 1.0, atol=1e-3)
        assert np.all(np.isclose(pi * 6, np.round(pi * 6), atol=1e-3))  # 2 prompts x 3 samples
        np.testing.assert_allclose(r["tv_to_judge_target"], 0.5 * np.abs(pi - target).sum(), atol=1e-3)
        np.testing.assert_allclose(r["tv_mu_to_judge_target"], 0.5 * np.abs(mu - target).sum(), atol=1e-3)
        np.testing.assert_allclose(r["exploitability"], exploitability(P, pi), atol=1e-3)
        np.testing.assert_allclose(r["win_vs_mu"], pi @ P @ mu, atol=1e-3)
    assert (out / "lr" / "nash_md" / "config.yaml").is_file() and (
        out / "lr" / "rlhf" / "config.yaml"
    ).is_file()
