"""examples/: every family's YAML config (through the command line) and Python script (through nlhf's API) runs
its 2 steps on the tiny model (MiniLM for the preference / reward models) and leaves a saved model with its card."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch

from nlhf.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
# example name -> the command line words that run its YAML config
COMMANDS = {
    "dpo": ["train", "dpo"],
    "ipo": ["train", "ipo"],
    "nash_md": ["train", "nash-md"],
    "online_ipo": ["train", "online-ipo"],
    "rlhf": ["train", "ppo"],
    "sppo": ["train", "sppo"],
    "inpo": ["train", "inpo"],
    "dno": ["train", "dno"],
    "mpo": ["train", "mpo"],
    "mirror_prox": ["train", "mirror-prox"],
    "preference_model": ["train-pm"],
    "reward_model": ["train-rm"],
}
FIT = ("preference_model", "reward_model")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def test_every_family_has_a_yaml_config_and_a_python_script():
    assert sorted(p.stem for p in EXAMPLES.glob("*.yaml")) == sorted(COMMANDS)
    assert sorted(p.stem for p in EXAMPLES.glob("*.py")) == sorted(COMMANDS)


def check_run(out: Path, name: str) -> dict:
    """The run finished its 2 steps and saved a model with a model card; returns metrics.json."""
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["steps"] == 2
    saved = out if name in FIT else Path(summary["policy_dir"])
    assert (saved / "model.safetensors").is_file()
    card = (saved / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\n") and "| steps | 2 " in card
    return summary


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory) -> Path:
    """examples/reward_model.yaml's run (the reward model examples/rlhf.yaml trains against)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("examples") / "reward_model"
    argv = [*COMMANDS["reward_model"], "--config", str(EXAMPLES / "reward_model.yaml"), "--out", str(out),
            "loop.report_to=none"]  # fmt: skip
    assert main(argv) == 0
    return out


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_yaml_example_runs_from_the_command_line(name, tmp_path, monkeypatch, reward_dir):
    if name == "reward_model":
        check_run(reward_dir, name)  # run once, by the fixture
        return
    monkeypatch.chdir(ROOT)  # the configs name their data files relative to the repository
    out = tmp_path / name
    extra = [f"reward={reward_dir}"] if name == "rlhf" else []
    argv = [
        *COMMANDS[name],
        "--config",
        f"examples/{name}.yaml",
        "--out",
        str(out),
        "loop.report_to=none",
        *extra,
    ]
    assert main(argv) == 0
    check_run(out, name)
    if name not in FIT:
        card = (out / "policy" / "README.md").read_text()
        assert f"nlhf {' '.join(COMMANDS[name])} --config examples/{name}.yaml --out {out}" in card
        if name == "dno":  # the card names DNO's own hyper-parameters
            assert (
                "| win-rate margin (DNO) | 0 |" in card
                and "| pair label (DNO: hard or soft) | `hard` |" in card
            )
        if name == "mpo":
            assert "| magnet refreshed every (iterations, MPO) | 2 |" in card


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_python_example_runs(name, tmp_path, monkeypatch, capsys):
    out = tmp_path / name
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / f"{name}.py"), str(out)])
    monkeypatch.chdir(tmp_path)  # the scripts find their data next to themselves
    runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name="__main__")
    check_run(out, name)
    printed = capsys.readouterr().out
    assert str(out) in printed or name in FIT
    if name == "nash_md":  # its callback printed every step
        assert "step 1: loss " in printed and "step 2: loss " in printed
