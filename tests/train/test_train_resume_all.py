"""Every trainer survives a SIGKILL between checkpoints: the resumed run ends bit-identical to an uninterrupted one.

Preference and reward models (``fit``), offline DPO and IPO, the six online families
(Nash-MD, SelfPlay, BestResponse, Nash-EMA with its EMA opponent, online IPO, IPO-MD) and
RLHF (PPO, killed inside a PPO iteration so the resumed steps train on the rollout buffer
restored from the checkpoint; RLHF-PG), each on a tiny random model with AdamW, warm-up,
cosine decay and clipping, over a data stream that straddles epochs. One process launch
(``train_resume_all_script.py``: the killed runs are forked children). The toy loop's
SIGKILL tests (also during a checkpoint write, and without the RNG restore) are in
``test_train_resume.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "train_resume_all_script.py"
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

from trainer_runs import TRAINERS, prepare  # noqa: E402

pytestmark = pytest.mark.slow

RUNS = [t for t in TRAINERS if t != "toy"]
NEGATIVE = "nash_md:no_optimizer_state"


@pytest.fixture(scope="module")
def lines(tmp_path_factory):
    base = tmp_path_factory.mktemp("resume_all")
    root = prepare(base / "files")
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")  # fmt: skip
    proc = subprocess.run([sys.executable, str(SCRIPT), str(root), str(base / "runs"), *RUNS, NEGATIVE],
                          env=env, capture_output=True, text=True, timeout=500)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = {}
    for line in proc.stdout.splitlines():
        if line.startswith('{"run"'):
            record = json.loads(line)
            out[record["run"]] = record
            print(line)
    return out


@pytest.mark.parametrize("run", RUNS)
def test_sigkill_between_checkpoints_then_resume_is_bit_identical(lines, run):
    r = lines[run]
    assert r["killed_by_sigkill"] and r["resumed_from"] == "ckpt-2"
    assert r["steps"] == 5 and r["moved"] > 1e-3  # it trained, and on after the resume
    assert r["params_equal"], r
    if run == "nash_ema":
        assert r["ema_equal"]


def test_negative_control_resume_without_the_optimizer_state_differs(lines):
    r = lines[NEGATIVE]
    assert r["killed_by_sigkill"] and r["resumed_from"] == "ckpt-2"
    assert not r["params_equal"] and r["max_abs_diff"] > 1e-4
