"""Every outer iteration's data on disk (issue 17): ``<run>/iterations/<t>/step-<s>-micro-<m>-rank-<r>.pt``.

The iterative trainers (SPPO, INPO, DNO, MPO, mirror prox) write each micro-batch's
generated responses and judge values atomically (:class:`nlhf.train.rollouts.IterationData`)
and a resumed run reads them back instead of sampling and judging again. The runs of
tests/train/test_successors_train.py (8 steps of 2 micro-batches, checkpoints every 2 steps,
a crash in the middle of step 5, after micro-batch 0): the crashed run left the data of steps
0-4 and of step 5's first micro-batch, equal to the uninterrupted run's; the resumed run
computes only the 5 micro-batches it lacks and ends at the uninterrupted run's weights, bit
for bit. Proof that the files are what it trains on: the same resume after the judge values
of one saved micro-batch (step 5, micro-batch 0) were inverted ends elsewhere.
"""

from __future__ import annotations

import shutil
from functools import partial
from types import SimpleNamespace

import pytest
import test_successors_train as runs  # tests/train (conftest.py puts it on the path)
import torch
from test_online import params
from trainer_runs import full_then_crashed

from nlhf.train import dno, inpo, mirror_prox, mpo, sppo
from nlhf.train.rollouts import ITERATIONS_DIR, IterationData

MODULES = [sppo, inpo, dno, mpo, mirror_prox]
SPI = {mirror_prox: 6}  # steps per iteration (3 for the others)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one torch thread (tests/conftest.py)."""


def saved_files(out):
    return sorted(
        p.relative_to(out / ITERATIONS_DIR).as_posix() for p in (out / ITERATIONS_DIR).rglob("*.pt")
    )


def expected_files(module, steps):
    """``<t>/step-<s>-micro-<m>-rank-0.pt`` for the (step, micro-batch) pairs given."""
    spi = SPI.get(module, 3)
    return sorted(f"{s // spi}/step-{s}-micro-{m}-rank-0.pt" for s, m in steps)


def load_values(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def invert_judge_values(path):
    """The judge's verdicts of one saved micro-batch turned round (P -> 1 - P, payoff gaps negated)."""
    record = load_values(path)
    values = record["values"]
    for key in ("matrix", "preference"):
        if key in values:
            values[key] = 1.0 - values[key]
    if "gap" in values:
        values["gap"] = -values["gap"]
    torch.save(record, path)


def counting_make(monkeypatch):
    """Count the micro-batches whose data is computed (not read back)."""
    count = {"made": 0}
    real = IterationData.cached

    def cached(self, iteration, ctx, make, device):
        def counted():
            count["made"] += 1
            return make()

        return real(self, iteration, ctx, counted, device)

    monkeypatch.setattr(IterationData, "cached", cached)
    return count


@pytest.mark.parametrize("module", MODULES, ids=[m.__name__.rpartition(".")[2] for m in MODULES])
def test_a_resumed_run_trains_on_the_saved_iteration_data(module, tmp_path, monkeypatch):
    run = partial(runs.run_resumable, module, tmp_path)
    full = full_then_crashed(monkeypatch, module, run)
    every = [(s, m) for s in range(8) for m in range(2)]
    assert saved_files(tmp_path / "full") == expected_files(module, every)
    left = [(s, m) for s, m in every if s < 5 or (s, m) == (5, 0)]  # the crash is at step 5, micro-batch 1
    crashed = tmp_path / "crashed"
    assert saved_files(crashed) == expected_files(module, left)
    for name in saved_files(crashed):  # the same responses and judge values as the uninterrupted run
        a, b = (
            load_values(crashed / ITERATIONS_DIR / name),
            load_values(tmp_path / "full" / ITERATIONS_DIR / name),
        )
        assert a["positions"] == b["positions"] and a["values"].keys() == b["values"].keys()
        for key, value in a["values"].items():
            other = b["values"][key]
            pairs = value["rollout"].items() if isinstance(value, dict) else [(key, value)]
            for field, tensor in pairs:
                want = other["rollout"][field] if isinstance(value, dict) else other
                assert torch.equal(tensor, want), (name, key, field)

    tampered = tmp_path / "tampered"
    shutil.copytree(crashed, tampered)
    invert_judge_values(tampered / ITERATIONS_DIR / expected_files(module, [(5, 0)])[0])

    count = counting_make(monkeypatch)
    resumed = run("crashed", resume=True)
    assert count["made"] == 5  # step 5's second micro-batch, steps 6 and 7: the rest read back
    a, b = params(full.policy), params(resumed.policy)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert saved_files(crashed) == expected_files(module, every)

    c = params(run("tampered", resume=True).policy)
    assert any(not torch.equal(a[n], c[n]) for n in a)  # it trained on the (tampered) saved verdicts


def test_a_fresh_run_clears_another_runs_iteration_data(tmp_path):
    stale = tmp_path / "run" / ITERATIONS_DIR / "0" / "step-0-micro-0-rank-0.pt"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"not a torch file")  # read back, it would fail
    runs.run_resumable(inpo, tmp_path, "run")
    assert load_values(stale)["positions"] == [0, 1]


def test_a_forgotten_resume_is_refused_and_keeps_the_data_then_the_resume_uses_it(tmp_path, monkeypatch):
    from nlhf.train.loop import RunDirError

    full_then_crashed(monkeypatch, dno, partial(runs.run_resumable, dno, tmp_path))
    crashed = tmp_path / "crashed"
    before = saved_files(crashed)
    with pytest.raises(RunDirError, match="pass loop.resume=true"):
        runs.run_resumable(dno, tmp_path, "crashed")  # resume forgotten
    assert saved_files(crashed) == before and len(before) == 11
    count = counting_make(monkeypatch)
    runs.run_resumable(dno, tmp_path, "crashed", resume=True)
    assert count["made"] == 5


def test_resuming_without_a_checkpoint_starts_afresh(tmp_path):
    stale = tmp_path / "run" / ITERATIONS_DIR / "0" / "step-0-micro-0-rank-0.pt"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="no checkpoint"):
        runs.run_resumable(inpo, tmp_path, "run", resume=True)
    assert load_values(stale)["positions"] == [0, 1]


def test_iteration_data_refuses_a_micro_batch_of_other_prompts(tmp_path):
    data = IterationData(tmp_path / ITERATIONS_DIR)
    ctx = SimpleNamespace(step=3, micro_step=1, process_index=0, positions=(6, 7))
    made = data.cached(1, ctx, lambda: {"preference": torch.tensor([0.25, 0.75])}, "cpu")
    again = data.cached(1, ctx, lambda: {"preference": torch.tensor([0.0, 0.0])}, "cpu")  # read, not made
    torch.testing.assert_close(again["preference"], made["preference"])
    assert not list((tmp_path / ITERATIONS_DIR / "1").glob(".*.tmp"))  # the temporary file was renamed
    other = SimpleNamespace(step=3, micro_step=1, process_index=0, positions=(8, 9))
    with pytest.raises(ValueError, match="step-3-micro-1-rank-0.pt: saved for the prompts at data positions"):
        data.cached(1, other, lambda: {}, "cpu")
