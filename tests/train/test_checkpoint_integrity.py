"""Checkpoint checksums: a damaged checkpoint is found, passed over on ``--resume``, or refused in one line.

Every checkpoint records the SHA-256 and size of its files (``checksums.json``). On resume
the newest intact checkpoint is used, with a one-line warning naming each damaged newer
one; with none intact ``nlhf train`` ends with a one-line ``nlhf:`` error and exit code 2.
Damage: a truncated file, a flipped byte, a missing file.
"""

from __future__ import annotations

import json

import pytest
from test_offline import PAIRS  # tests/train is on sys.path (pytest's prepend mode)
from train_toy import ToyModel

from nlhf.cli import main
from nlhf.train import checkpoint as ckpt_lib


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one torch thread (tests/conftest.py)."""


def save(out, step):
    model = ToyModel()
    return ckpt_lib.save_checkpoint(
        out, step, trainer_state={"step": step}, model_state=ckpt_lib.trainable_state_dict(model),
        optimizer_state={"state": {}, "param_groups": []}, rng=ckpt_lib.capture_rng_state(), keep_last=3,
    )  # fmt: skip


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: min(100, len(data) // 2)])


def flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def remove(path):
    path.unlink()


DAMAGE = {"truncated": truncate, "flipped byte": flip_byte, "missing": remove}
EXPECTED = {
    "truncated": " were written",
    "flipped byte": "does not match its checksum",
    "missing": "is missing",
}


def test_checksums_are_written_for_every_file(tmp_path):
    path = save(tmp_path, 2)
    sums = json.loads((path / ckpt_lib.CHECKSUMS).read_text())
    assert {
        "model.safetensors",
        "optimizer.pt",
        "loop.pt",
        "extra.pt",
        "rng-0.pt",
        ckpt_lib.STATE_FILE,
    } <= set(sums)
    assert ckpt_lib.verify_checkpoint(path) is None


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("victim", ["model.safetensors", "optimizer.pt", ckpt_lib.STATE_FILE])
def test_damage_is_found_and_the_newest_intact_checkpoint_wins(tmp_path, damage, victim):
    for step in (4, 8, 12):
        save(tmp_path, step)
    DAMAGE[damage](tmp_path / "ckpt-12" / victim)
    if damage == "missing" and victim == ckpt_lib.STATE_FILE:  # not a complete checkpoint at all
        assert ckpt_lib.find_intact(tmp_path) == (tmp_path / "ckpt-8", [])
        return
    problem = ckpt_lib.verify_checkpoint(tmp_path / "ckpt-12")
    assert problem is not None and victim in problem and EXPECTED[damage] in problem
    intact, damaged = ckpt_lib.find_intact(tmp_path)
    assert intact == tmp_path / "ckpt-8"
    assert [(p.name, why) for p, why in damaged] == [("ckpt-12", problem)]


def test_no_intact_checkpoint_is_an_error_naming_each(tmp_path):
    for step in (4, 8):
        save(tmp_path, step)
    truncate(tmp_path / "ckpt-8" / "model.safetensors")
    flip_byte(tmp_path / "ckpt-4" / "optimizer.pt")
    with pytest.raises(ckpt_lib.CheckpointError, match=r"no intact checkpoint .*ckpt-8: .*ckpt-4: "):
        ckpt_lib.find_intact(tmp_path)
    assert ckpt_lib.find_intact(tmp_path / "empty") == (None, [])


def test_a_checkpoint_without_checksums_is_taken_as_it_is(tmp_path):
    path = save(tmp_path, 2)
    (path / ckpt_lib.CHECKSUMS).unlink()  # written before the checksums existed
    assert ckpt_lib.verify_checkpoint(path) is None


def test_resume_falls_back_with_one_line_then_refuses_in_one_line(tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": e.prompt, "chosen": e.first, "rejected": e.second}) + "\n"
                             for e in PAIRS))  # fmt: skip
    out = tmp_path / "run"
    args = ["train", "dpo", "--data", str(pairs), "--model", "tiny", "--out", str(out), "loop.micro_batch_size=4",
            "loop.save_every=2", "loop.keep_last=2", "loop.progress=false", "loop.tensorboard=false"]  # fmt: skip
    assert main([*args, "loop.max_steps=4"]) == 0
    assert [p.name for _, p in ckpt_lib.list_checkpoints(out)] == ["ckpt-2", "ckpt-4"]
    truncate(out / "ckpt-4" / "model.safetensors")
    size = (
        (out / "ckpt-2" / "model.safetensors").stat().st_size
    )  # as written (ckpt-2 is pruned by the resumed run)
    capsys.readouterr()

    assert main([*args, "loop.max_steps=6", "--resume"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("nlhf:")]
    assert err == [
        "nlhf: warning: damaged checkpoint ckpt-4 (model.safetensors has 100 bytes, "
        f"{size} were written); resuming from ckpt-2"
    ]
    assert json.loads((out / "metrics.json").read_text())["steps"] == 6

    for _, path in ckpt_lib.list_checkpoints(out):  # ckpt-4 (rewritten) and ckpt-6
        flip_byte(path / "model.safetensors")
    capsys.readouterr()
    assert main([*args, "loop.max_steps=8", "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nlhf: checkpoint error: no intact checkpoint in ")
    assert "ckpt-6: model.safetensors does not match its checksum" in err[0] and "ckpt-4" in err[0]
