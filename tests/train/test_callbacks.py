"""Step callbacks (nlhf.train.callbacks): on_step(step, metrics) -> bool; True ends the run cleanly after that step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from train_toy import ToyModel, collate, make_data, token_sq_error_step

import nlhf
from nlhf.train import checkpoint as ckpt_lib
from nlhf.train.callbacks import active_callbacks, as_callbacks, call_callbacks, should_stop, step_callbacks
from nlhf.train.config import LoopConfig, OptimConfig
from nlhf.train.loop import METRICS_FILE, TrainLoop

torch.set_num_threads(1)
PAIRS = Path(__file__).resolve().parents[2] / "examples" / "data" / "pairs.jsonl"


def toy_loop(out: Path, callbacks=None, optim: OptimConfig | None = None, **kw) -> TrainLoop:
    cfg = dict(max_steps=5, micro_batch_size=4, out_dir=str(out), progress=False, report_to="none",
               min_free_disk_mb=0, log_every=10, save_every=10)  # fmt: skip
    cfg.update(kw)
    return TrainLoop(LoopConfig(**cfg), optim or OptimConfig(lr=0.05), ToyModel(seed=1), make_data(24, seed=2), collate,
                     token_sq_error_step, eval_data=make_data(6, seed=3), callbacks=callbacks)  # fmt: skip


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines()]


def test_a_callback_stops_a_five_step_loop_at_step_two_as_a_normal_end(tmp_path):
    seen = []

    def on_step(step, metrics):
        seen.append((step, dict(metrics)))
        return step == 2

    loop = toy_loop(tmp_path, callbacks=on_step)
    result = loop.run()
    assert [s for s, _ in seen] == [1, 2]
    assert result.step == 2 and result.updates == 2 and loop.stopped_by_callback
    # the end-of-run work happened at step 2: train record, evaluation, final checkpoint (save_every=10 > 2)
    assert [(r["step"], r["split"]) for r in records(tmp_path)] == [(2, "train"), (2, "eval")]
    assert result.checkpoint is not None and result.checkpoint.name == "ckpt-2"
    assert ckpt_lib.find_latest(tmp_path) == result.checkpoint
    assert result.eval_metrics and result.train_metrics
    # the callback saw the step's own metrics: loss, grad_norm, lr
    step2 = seen[1][1]
    assert {"loss", "grad_norm", "lr"} <= set(step2)
    assert step2["lr"] == pytest.approx(loop.lr_used)


def test_the_stopped_run_matches_the_first_two_steps_of_an_unstopped_one(tmp_path):
    constant = OptimConfig(lr=0.05, schedule="constant")  # (a cosine schedule depends on max_steps)
    stopped = toy_loop(tmp_path / "a", callbacks=lambda step, m: step == 2, optim=constant)
    stopped.run()
    full = toy_loop(tmp_path / "b", max_steps=2, optim=constant)
    full.run()
    for (name, p), q in zip(stopped.model.named_parameters(), full.model.parameters()):
        assert torch.equal(p, q), name  # same steps, same data: a stop changes nothing before it
    assert records(tmp_path / "a")[0]["loss"] == records(tmp_path / "b")[0]["loss"]


def test_callbacks_get_the_evaluation_of_an_eval_every_step(tmp_path):
    seen = {}
    toy_loop(tmp_path, callbacks=lambda step, m: seen.update({step: m}), max_steps=4, eval_every=2).run()
    assert sorted(seen) == [1, 2, 3, 4]
    assert "eval/loss" in seen[2] and "eval/loss" in seen[4]
    assert "eval/loss" not in seen[1] and "eval/loss" not in seen[3]
    evals = [r for r in records(tmp_path) if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [2, 4]  # evaluated once per eval step, as before
    assert seen[2]["eval/loss"] == pytest.approx(evals[0]["loss"])


def test_false_and_none_continue_and_every_callback_is_called(tmp_path):
    calls = []
    callbacks = [lambda s, m: calls.append(("a", s)), lambda s, m: calls.append(("b", s)) or False]
    assert toy_loop(tmp_path, callbacks=callbacks, max_steps=2).run().step == 2
    assert calls == [("a", 1), ("b", 1), ("a", 2), ("b", 2)]


def test_a_callback_returning_a_number_is_an_error_naming_it(tmp_path):
    def returns_loss(step, metrics):
        return metrics["loss"]

    with pytest.raises(
        TypeError, match=r"callback .*returns_loss returned .* at step 1: on_step must return True"
    ):
        toy_loop(tmp_path, callbacks=[returns_loss]).run()


def test_as_callbacks_accepts_functions_and_objects_and_names_a_bad_item():
    class Stopper:
        def on_step(self, step, metrics):
            return True

    stopper = Stopper()
    fn = lambda s, m: None  # noqa: E731
    assert as_callbacks(None) == ()
    assert as_callbacks(fn) == (fn,)
    assert as_callbacks(stopper) == (stopper.on_step,)
    assert as_callbacks([fn, stopper]) == (fn, stopper.on_step)
    with pytest.raises(TypeError, match=r"callbacks\[1\]: expected on_step"):
        as_callbacks([fn, 3])
    assert call_callbacks(as_callbacks([fn, stopper]), 1, {"loss": 0.0}) is True
    assert call_callbacks(as_callbacks([fn]), 1, {"loss": 0.0}) is False


def test_step_callbacks_scope_is_picked_up_by_loops_built_inside_and_reset_after(tmp_path):
    fn = lambda s, m: s == 1  # noqa: E731
    with step_callbacks([fn]):
        assert active_callbacks() == (fn,)
        loop = toy_loop(tmp_path)  # callbacks=None: the enclosing block's
    assert active_callbacks() == ()
    assert loop.callbacks == (fn,)
    assert loop.run().step == 1


def test_python_api_callback_stops_dpo_at_step_two_with_the_policy_saved(tmp_path):
    steps = []
    result = nlhf.train_dpo(model="tiny", data=str(PAIRS), out=str(tmp_path), callbacks=[lambda s, m: steps.append(s) or s == 2],
                            loop={"max_steps": 5, "micro_batch_size": 2, "log_every": 1, "progress": False,
                                  "report_to": "none", "save_every": 10, "min_free_disk_mb": 1})  # fmt: skip
    assert steps == [1, 2]
    assert result.train.step == 2
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["steps"] == 2 and summary["train"]["loss"] == result.summary["train"]["loss"]
    assert (tmp_path / "policy" / "model.safetensors").is_file()
    assert (tmp_path / "policy" / "README.md").is_file()
    assert (tmp_path / "ckpt-2").is_dir()
    assert [r["step"] for r in records(tmp_path)] == [1, 2]


class TwoProcesses:
    """An accelerator of 2 processes whose all-reduce adds the other process's stop flag ``other``."""

    num_processes, device = 2, "cpu"

    def __init__(self, other: bool) -> None:
        self.other = other

    def reduce(self, tensor, reduction):
        assert reduction == "sum"
        return tensor + float(self.other)


@pytest.mark.parametrize(
    "mine, other, stop", [(False, False, False), (False, True, True), (True, False, True)]
)
def test_the_stop_decision_is_all_reduced_so_every_process_stops_together(mine, other, stop):
    assert should_stop([lambda s, m: mine], 3, {"loss": 1.0}, TwoProcesses(other)) is stop
