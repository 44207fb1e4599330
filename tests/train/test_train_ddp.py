"""2 processes (gloo, CPU, ``torchrun``) with micro-batch b train to the parameters of 1 process with 2b.

For the bare loop on a token-level toy task, the preference model (``fit``), offline DPO,
online Nash-MD-PG (a tiny Llama, a programmatic judge) and RLHF (PPO), each 2 SGD steps
with the same seed and data order. The shards are uneven: toy examples of 1..7 tokens,
DPO pairs of 2..43 completion tokens, sampled responses of 1..8 tokens (an EOS-prone tiny
Llama), eval sets of 5 examples (3 on one process, 2 on the other). Plain SGD without
clipping, so the parameters show the gradient's scale as well as its direction.

Two process launches in all (1 process, then 2 processes): each runs every case one after
the other, including the negative controls, which must break the agreement:

* ``rank_means``: each micro-batch returns its token-weighted MEAN loss and metrics with
  weight 1, so the global loss is a mean of rank means (the bug the loop's global
  normalisation exists to prevent);
* ``batch_seed``: Nash-MD samples from one ``torch.Generator`` per micro-batch instead of
  one stream per prompt row, so 2 processes draw other samples than 1.
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

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "train_ddp_script.py"
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

from trainer_runs import prepare  # noqa: E402

pytestmark = pytest.mark.slow

CASES = ("toy", "pm", "dpo", "nash_md", "ppo")
NEGATIVE = ("toy:rank_means", "dpo:rank_means", "nash_md:rank_means", "ppo:rank_means", "nash_md:batch_seed")
MICRO = 2  # per process; the single process runs 2 x MICRO


def launch(root: Path, out: Path, processes: int, micro: int) -> None:
    env = dict(
        os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    )
    args = [str(SCRIPT), str(root), str(out), str(micro), *CASES, *NEGATIVE]
    if processes == 1:
        cmd = [sys.executable, *args]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(processes),
            *args,
        ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        _, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its workers
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr[-4000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``{run: (one-process result, two-process result)}``, each ``(params, result.json)``."""
    base = tmp_path_factory.mktemp("ddp")
    root = prepare(base / "files")
    launch(root, base / "one", 1, 2 * MICRO)
    launch(root, base / "two", 2, MICRO)
    out = {}
    for run in CASES + NEGATIVE:
        name = run.replace(":", "-")
        out[run] = tuple(
            (
                torch.load(base / side / name / "final.pt"),
                json.loads((base / side / name / "result.json").read_text()),
            )
            for side in ("one", "two")
        )
    print("seconds", json.loads((base / "two" / "seconds.json").read_text()))
    return out


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.parametrize("case", CASES)
def test_two_processes_equal_one_process_with_twice_the_batch(runs, case):
    (p1, r1), (p2, r2) = runs[case]
    assert (r1["processes"], r2["processes"]) == (1, 2)
    assert r1["updates"] == r2["updates"] == 2
    assert r1["update"] > 1e-2  # the parameters really moved
    diff = max_diff(p1, p2)
    print(f"{case}: max |param diff| = {diff:.3g}, largest update {r1['update']:.3g}")
    assert diff <= 1e-5 * r1["update"]  # float32 rounding of other batch shapes only
    assert r2["train"]["loss"] == pytest.approx(r1["train"]["loss"], rel=1e-5)
    for split in ("train", "eval"):
        for key, value in r1[split].items():
            if key in ("examples_per_s", "grad_norm", "lr", "nonfinite_steps"):
                continue
            assert r2[split][key] == pytest.approx(value, rel=1e-4, abs=1e-6), (split, key)


def test_each_process_judges_its_own_shard_in_batches(runs):
    """Nash-MD: the main process judges micro-batches of its prompts only (2 steps x b, then 3 of the 5 eval prompts)."""
    (_, r1), (_, r2) = runs["nash_md"]
    assert r1["judge_rows"] == [4, 4, 4, 1]  # 1 process: 2 steps x 4 prompts; eval 5 = 4 + 1
    assert r2["judge_rows"] == [2, 2, 2, 1]  # rank 0 of 2: 2 steps x 2 prompts; eval prompts 0, 2, 4 = 2 + 1


@pytest.mark.parametrize("case", NEGATIVE)
def test_negative_controls_break_the_agreement(runs, case):
    (p1, r1), (p2, r2) = runs[case]
    diff = max_diff(p1, p2)
    print(f"{case}: max |param diff| = {diff:.3g}, largest update {r1['update']:.3g}")
    assert diff > 1e-2 * r1["update"]  # >= 1000 x the tolerance of the invariance test
    if case.endswith("rank_means"):  # the logged loss is a mean of rank means: it differs too
        assert r2["train"]["loss"] != pytest.approx(r1["train"]["loss"], rel=1e-3)
