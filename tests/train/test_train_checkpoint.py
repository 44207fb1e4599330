"""Checkpoint files: atomic layout, pruning, RNG round trip, trainable-only weights."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from train_toy import ToyModel

from nlhf.train import checkpoint as ckpt_lib


def draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_rng_state_round_trip_through_a_file(tmp_path):
    state = ckpt_lib.capture_rng_state()
    before = draws()
    ckpt_lib._save_torch(state, tmp_path / "rng.pt")
    draws()  # move every generator on
    ckpt_lib.restore_rng_state(ckpt_lib._load_torch(tmp_path / "rng.pt"))  # weights_only=True
    assert draws() == before


def save(out, step, model, keep_last=2):
    return ckpt_lib.save_checkpoint(
        out,
        step,
        trainer_state={"step": step},
        model_state=ckpt_lib.trainable_state_dict(model),
        optimizer_state={"state": {}, "param_groups": []},
        extra={"ema": {"decay": 0.9}},
        rng=ckpt_lib.capture_rng_state(),
        keep_last=keep_last,
    )


def test_save_prune_latest_and_leftovers(tmp_path):
    model = ToyModel()
    for step in (2, 4, 6):
        save(tmp_path, step, model)
    assert [s for s, _ in ckpt_lib.list_checkpoints(tmp_path)] == [4, 6]
    assert (tmp_path / "latest").read_text() == "ckpt-6\n"
    # a killed write (.tmp) and a directory without the state file are not checkpoints
    (tmp_path / "ckpt-9.tmp").mkdir()
    (tmp_path / "ckpt-8").mkdir()
    (tmp_path / "ckpt-8" / "model.safetensors").write_bytes(b"partial")
    assert ckpt_lib.find_latest(tmp_path) == tmp_path / "ckpt-6"
    save(tmp_path, 10, model)
    assert not (tmp_path / "ckpt-9.tmp").exists()  # leftovers are cleaned by the next save
    ckpt = ckpt_lib.load_checkpoint(tmp_path / "ckpt-10")
    assert ckpt.step == 10 and ckpt.extra == {"ema": {"decay": 0.9}}
    assert ckpt.model_state.keys() == model.state_dict().keys()
    with pytest.raises(ckpt_lib.CheckpointError, match="ckpt-8: not a complete checkpoint"):
        ckpt_lib.load_checkpoint(tmp_path / "ckpt-8")


def test_only_trainable_weights_are_stored_and_checked_on_load(tmp_path):
    model = ToyModel(seed=1)
    model.hidden.requires_grad_(False)  # like a LoRA base: rebuilt at resume, not saved
    state = ckpt_lib.trainable_state_dict(model)
    assert sorted(state) == ["out.bias", "out.weight"]
    other = ToyModel(seed=2)
    other.hidden.requires_grad_(False)
    ckpt_lib.load_trainable_state_dict(other, state)
    assert torch.equal(other.out.weight, model.out.weight)
    assert not torch.equal(other.hidden.weight, model.hidden.weight)  # frozen ones untouched
    with pytest.raises(ckpt_lib.CheckpointError, match="weights the model does not have"):
        ckpt_lib.load_trainable_state_dict(other, {**state, "head.weight": torch.zeros(1)})
    full = ToyModel(seed=3)  # everything trainable: a checkpoint without `hidden` is refused
    with pytest.raises(ckpt_lib.CheckpointError, match="lacks trainable weights"):
        ckpt_lib.load_trainable_state_dict(full, state)


def test_checkpoint_step_names():
    assert ckpt_lib.checkpoint_step("ckpt-120") == 120
    assert ckpt_lib.checkpoint_step("ckpt-120.tmp") is None
    assert ckpt_lib.checkpoint_step("latest") is None
