"""A SIGKILL inside an outer iteration (issue 17): the resumed run trains on the saved iteration data and
ends bit-identical to an uninterrupted run.

Mirror prox (the trainer with the most frozen state: pi_t and pi_{t+1/2}; SPPO passed the same
test, 14 s, not kept in CI). The runs of tests/train/test_successors_train.py (8 steps of 2 micro-batches, checkpoints every 2
steps) in a child process that kills itself with SIGKILL in the middle of step 5 (after micro-batch
0's data was written, before micro-batch 1's), then ``loop.resume`` in this process. The in-process
crash of tests/train/test_iteration_data.py raises an exception; here nothing of the child's Python
runs after the kill (no ``finally``, no flush), so the files on disk are all the resume has.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import test_successors_train as runs  # tests/train (conftest.py puts it on the path)
import torch
from test_iteration_data import counting_make, expected_files, saved_files
from test_online import params

from nlhf.train import mirror_prox

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

CHILD = """
import os, signal, sys
sys.path[:0] = [{tests!r}, {train!r}]
import torch
torch.set_num_threads(1)
import test_successors_train as runs
from nlhf.train import {module} as module
real = module.make_step
def make_step(*args, **kwargs):
    step_fn = real(*args, **kwargs)
    def step(model, batch, ctx):
        if ctx.step == 5 and ctx.micro_step == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return step_fn(model, batch, ctx)
    return step
module.make_step = make_step
from pathlib import Path
runs.run_resumable(module, Path({base!r}), "killed")
sys.exit(3)  # only reached if the kill did not happen
"""


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one torch thread (tests/conftest.py)."""


@pytest.mark.slow
@pytest.mark.parametrize(
    "module", [mirror_prox], ids=["mirror_prox"]
)  # its pi_t and pi_{t+1/2} (~8 s; sppo ~14 s)
def test_sigkill_inside_an_iteration_then_resume_is_bit_identical(module, tmp_path, monkeypatch):
    full = runs.run_resumable(module, tmp_path, "full")
    name = module.__name__.rpartition(".")[2]
    code = CHILD.format(tests=str(HERE.parent), train=str(HERE), module=name, base=str(tmp_path))
    env = dict(
        os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-3000:]  # killed by SIGKILL
    killed = tmp_path / "killed"
    left = [(s, m) for s in range(8) for m in range(2) if s < 5 or (s, m) == (5, 0)]
    assert saved_files(killed) == expected_files(module, left)

    count = counting_make(monkeypatch)
    resumed = runs.run_resumable(module, tmp_path, "killed", resume=True)
    assert count["made"] == 5  # steps 4 and 5's first micro-batch read back
    a, b = params(full.policy), params(resumed.policy)
    assert all(torch.equal(a[n], b[n]) for n in a)
