"""2 processes (gloo, CPU) with micro-batch b give the parameters and metrics of 1 process with 2b.

The toy examples have 1..7 tokens, so the two ranks hold different numbers of tokens: the
loss (and every metric) must be the global token mean, not the mean of the two rank means.
The negative control makes the step return micro-batch means (so the loop averages micro-batch
and rank means) and must break the agreement.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).with_name("train_ddp_script.py")
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def launch(out: Path, processes: int, micro: int, mean_of_means: bool = False) -> tuple[dict, dict]:
    env = dict(
        os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    )
    env["MEAN_OF_MEANS"] = "1" if mean_of_means else "0"
    if processes == 1:
        cmd = [sys.executable, str(SCRIPT), str(out), str(micro)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               str(SCRIPT), str(out), str(micro)]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        _, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its workers
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr[-3000:]
    return torch.load(out / "final.pt"), json.loads((out / "result.json").read_text())


def max_diff(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_two_processes_equal_one_process_with_twice_the_batch(tmp_path):
    one, r1 = launch(tmp_path / "one", 1, micro=4)
    two, r2 = launch(tmp_path / "two", 2, micro=2)
    assert r1["processes"] == 1 and r2["processes"] == 2
    assert max_diff(one, two) < 1e-6
    for split in ("train", "eval"):
        for key in ("loss", "abs_err"):
            assert r2[split][key] == pytest.approx(r1[split][key], rel=1e-6), (split, key)
    wrong, _ = launch(tmp_path / "wrong", 2, micro=2, mean_of_means=True)
    assert max_diff(one, wrong) > 1e-3
