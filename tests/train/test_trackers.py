"""Experiment trackers (loop.report_to): parsing, the error for a missing package, what accelerate receives,
and offline runs into mlflow (a local file store) and wandb (offline mode) read back against metrics.jsonl."""

from __future__ import annotations

import glob
import importlib.util
import json
from pathlib import Path

import pytest
import torch

import nlhf
from nlhf.cli import main
from nlhf.config import ConfigError, load_config
from nlhf.train import loop as loop_lib
from nlhf.train.config import LoopConfig, parse_report_to
from nlhf.train.dpo import OfflineConfig
from nlhf.train.metrics_log import flat_config

torch.set_num_threads(1)
PAIRS = Path(__file__).resolve().parents[2] / "examples" / "data" / "pairs.jsonl"
LOOP = {"max_steps": 2, "micro_batch_size": 4, "log_every": 1, "progress": False, "min_free_disk_mb": 1}


def pretend_missing(monkeypatch, *packages: str) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in packages else real(name, *a)
    )


def pretend_installed(monkeypatch, *packages: str) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: object() if name in packages else real(name, *a)
    )


def test_report_to_parses_and_the_old_tensorboard_key_keeps_working():
    assert LoopConfig().trackers == ("tensorboard",)
    assert LoopConfig(report_to="none").trackers == ()
    assert LoopConfig(tensorboard=False).trackers == ()  # the old key: off
    assert LoopConfig(tensorboard=True).trackers == ("tensorboard",)
    assert parse_report_to(" tensorboard , tensorboard ") == ("tensorboard",)


@pytest.mark.parametrize(
    "kw, match",
    [
        (
            {"report_to": "wandb", "tensorboard": True},
            r"^loop\.tensorboard: true contradicts loop\.report_to='wandb'",
        ),
        ({"report_to": "tensorboard,mlflow", "tensorboard": False}, r"^loop\.tensorboard: false contradicts"),
        (
            {"report_to": "comet"},
            r"^loop\.report_to: unknown tracker 'comet' \(one or more of tensorboard, wandb",
        ),
        ({"report_to": "none,tensorboard"}, r"^loop\.report_to: none cannot be combined"),
        ({"report_to": " , "}, r"^loop\.report_to: empty"),
    ],
)
def test_bad_report_to_is_a_config_error_naming_the_key(kw, match):
    with pytest.raises(ConfigError, match=match):
        LoopConfig(**kw)


@pytest.mark.parametrize("tracker", ["wandb", "trackio", "mlflow"])
def test_a_tracker_whose_package_is_missing_is_a_one_line_error_naming_the_key_and_package(
    monkeypatch, tracker
):
    pretend_missing(monkeypatch, tracker)
    with pytest.raises(ConfigError) as info:
        load_config(OfflineConfig, None, [f"loop.report_to=tensorboard,{tracker}"])
    message = str(info.value)
    assert message == (f"loop.report_to: {tracker} needs the {tracker} package, which is not installed "
                       f"(pip install {tracker})")  # fmt: skip
    assert "\n" not in message


def test_the_command_line_refuses_a_missing_tracker_before_any_model_loads(monkeypatch, tmp_path, capsys):
    pretend_missing(monkeypatch, "wandb")

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("nlhf.train.run.load_model", no_model)
    code = main(["train", "dpo", "--data", str(PAIRS), "--model", "tiny", "--out", str(tmp_path / "o"),
                 "loop.report_to=wandb"])  # fmt: skip
    assert code == 2
    assert "nlhf: config error: loop.report_to: wandb needs the wandb package" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_accelerate_gets_the_trackers_other_than_tensorboard(monkeypatch):
    pretend_installed(monkeypatch, "wandb", "trackio", "mlflow")
    seen = {}

    class FakeAccelerator:
        def __init__(self, **kwargs):
            seen.update(kwargs)

    monkeypatch.setattr("accelerate.Accelerator", FakeAccelerator)
    loop_lib.make_accelerator(LoopConfig(report_to="tensorboard,wandb,mlflow,trackio", device="cpu"))
    assert seen["log_with"] == ["wandb", "mlflow", "trackio"]  # tensorboard: MetricsLogger's own writer
    loop_lib.make_accelerator(LoopConfig(report_to="tensorboard", device="cpu"))
    assert seen["log_with"] is None


def test_flat_config_is_dotted_scalars():
    flat = flat_config(OfflineConfig(tau=0.3, loop=LoopConfig(max_steps=2)))
    assert flat["tau"] == 0.3 and flat["loop.max_steps"] == 2 and flat["loop.report_to"] == "tensorboard"
    assert flat["optim.betas"] == "[0.9, 0.999]" and flat["lora"] == "null"


def train_losses(out: Path) -> list[float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["split"] == "train"]


def test_report_to_none_writes_no_tensorboard_and_the_default_does(tmp_path):
    nlhf.train_dpo(
        model="tiny", data=str(PAIRS), out=str(tmp_path / "none"), loop={**LOOP, "report_to": "none"}
    )
    assert not (tmp_path / "none" / "tensorboard").exists()
    assert len(train_losses(tmp_path / "none")) == 2
    nlhf.train_dpo(model="tiny", data=str(PAIRS), out=str(tmp_path / "tb"), loop=LOOP)
    assert list((tmp_path / "tb" / "tensorboard").glob("events.out.tfevents.*"))


def test_mlflow_local_file_store_holds_the_runs_metrics_and_config(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow 3: the file store is opt-in
    out = tmp_path / "dpo-run"
    nlhf.train_dpo(model="tiny", data=str(PAIRS), out=str(out), loop={**LOOP, "report_to": "mlflow"})
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("nlhf").experiment_id])
    assert run.info.run_name == "dpo-run" and run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == [1, 2]
    assert [m.value for m in history] == pytest.approx(train_losses(out))
    assert run.data.params["loop.max_steps"] == "2" and run.data.params["loss"] == "dpo"
    assert not (out / "tensorboard").exists()


def test_wandb_offline_run_holds_the_runs_metrics(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "dpo-run"
    nlhf.train_dpo(
        model="tiny", data=str(PAIRS), out=str(out), loop={**LOOP, "report_to": "wandb,tensorboard"}
    )
    (log,) = glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "run-*.wandb"))
    data = Path(log).read_bytes()  # protobuf records: keys and JSON values appear verbatim
    assert data.count(b"train/loss") >= 2 and b"dpo-run" in data and b"loop.max_steps" in data
    for loss in train_losses(out):
        assert json.dumps(loss).encode() in data
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))  # beside it, TensorBoard
