"""Kill a training process with SIGKILL, resume it, and get bit-identical final weights.

The run (``train_resume_script.py``: 12 steps of 2 x 3 examples over 20 examples, so
batches straddle epochs; dropout, numpy and python noise, a stateful EMA opponent,
AdamW, cosine warm-up, clipping; checkpoints every 4 steps, 2 kept) is killed

* between checkpoints, in the middle of step 6 (after ``ckpt-4``), and
* in the middle of writing ``ckpt-8`` (RNG and weight files written, optimiser not yet,
  no rename),

then restarted with ``resume=True``. The final parameters must be ``torch.equal`` to an
uninterrupted run's. A negative control resumes without restoring the RNG states and
must differ, so the comparison can fail.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nlhf.train import checkpoint as ckpt_lib

SCRIPT = Path(__file__).with_name("train_resume_script.py")
REPO = Path(__file__).resolve().parents[2]
STEPS = 12

pytestmark = pytest.mark.slow


def run(out: Path, resume: bool, kill_at: int | None = None, mode: str = "step", extra_env=None):
    env = dict(
        os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    )
    env.pop("KILL_AT_STEP", None)
    if kill_at is not None:
        env.update(KILL_AT_STEP=str(kill_at), KILL_MODE=mode)
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(out), str(STEPS), "1" if resume else "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def final(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "final.pt")


def train_losses(out: Path) -> list[float]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if r["split"] == "train"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    proc = run(out, resume=False)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def killed_at_step_6(tmp_path_factory):
    """A run killed by SIGKILL in the middle of step 6 (its newest checkpoint: ckpt-4)."""
    out = tmp_path_factory.mktemp("killed")
    killed = run(out, resume=False, kill_at=6, mode="step")
    assert killed.returncode == -signal.SIGKILL
    assert ckpt_lib.find_latest(out).name == "ckpt-4"
    assert not (out / "final.pt").exists()
    state = json.loads((out / "ckpt-4" / "trainer_state.json").read_text())
    # 4 steps x 6 examples = 24 = epoch 1 (of 20 examples), index 4 of its permutation
    assert (state["step"], state["data_position"], state["epoch"], state["index_in_epoch"]) == (4, 24, 1, 4)
    return out


def test_sigkill_between_checkpoints_then_resume_is_bit_identical(tmp_path, uninterrupted, killed_at_step_6):
    shutil.copytree(killed_at_step_6, tmp_path, dirs_exist_ok=True)

    resumed = run(tmp_path, resume=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout and "at step 4" in resumed.stdout
    a, b = final(uninterrupted), final(tmp_path)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the log of the resumed run reads like the uninterrupted one (killed-run tail dropped)
    assert train_losses(tmp_path) == train_losses(uninterrupted)


def test_sigkill_during_checkpoint_write_then_resume_is_bit_identical(tmp_path, uninterrupted):
    killed = run(tmp_path, resume=False, kill_at=8, mode="checkpoint")
    assert killed.returncode == -signal.SIGKILL
    leftover = tmp_path / "ckpt-8.tmp"
    assert sorted(p.name for p in leftover.iterdir()) == ["model.safetensors", "rng-0.pt"]  # half-written
    assert ckpt_lib.find_latest(tmp_path).name == "ckpt-4"  # the leftover is ignored
    assert (tmp_path / "latest").read_text().strip() == "ckpt-4"

    resumed = run(tmp_path, resume=True)
    assert resumed.returncode == 0, resumed.stderr
    a, b = final(uninterrupted), final(tmp_path)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not leftover.exists()
    assert [s for s, _ in ckpt_lib.list_checkpoints(tmp_path)] == [8, 12]  # keep_last = 2
    assert (tmp_path / "latest").read_text().strip() == "ckpt-12"
    assert train_losses(tmp_path) == train_losses(uninterrupted)


def test_negative_control_resume_without_rng_restore_differs(tmp_path, uninterrupted, killed_at_step_6):
    """Same kill and resume, but the RNG states are not restored: the weights must differ."""
    shutil.copytree(killed_at_step_6, tmp_path, dirs_exist_ok=True)
    patched = tmp_path / "no_rng_restore.py"
    patched.write_text(
        "import runpy, sys\n"
        "from nlhf.train import checkpoint\n"
        "checkpoint.restore_rng_state = lambda state: None\n"
        f"sys.argv = [{str(SCRIPT)!r}] + sys.argv[1:]\n"
        f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("KILL_AT_STEP", None)
    proc = subprocess.run(
        [sys.executable, str(patched), str(tmp_path), str(STEPS), "1"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    a, b = final(uninterrupted), final(tmp_path)
    assert not all(torch.equal(a[k], b[k]) for k in a)
