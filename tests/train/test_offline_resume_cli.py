"""Exact resume of the offline trainer, and ``nlhf train dpo|ipo|cdpo`` end to end on the tiny Llama."""

from __future__ import annotations

import argparse
import json
from functools import partial

import pytest
import torch
from test_offline import PAIRS, config, params, run  # tests/train is on sys.path (pytest's prepend mode)
from trainer_runs import full_then_crashed, train_losses

from nlhf.config import ConfigError, resolve_config
from nlhf.train import checkpoint as ckpt_lib
from nlhf.train import dpo, ref_cache
from nlhf.train import run as run_lib
from nlhf.train.cli import TRAIN_FAMILIES, register


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one torch thread (tests/conftest.py)."""


def resume_config(tmp_path, name, resume=False):
    # 10 pairs, global batch 2 x 2: 8 steps straddle epochs; AdamW with warm-up and cosine decay.
    return config(
        tmp_path, name, loss="ipo", tau=0.5,
        optim=dict(lr=3e-3, warmup_steps=2, schedule="cosine", weight_decay=0.01, max_grad_norm=1.0),
        loop=dict(max_steps=8, micro_batch_size=2, grad_accum_steps=2, save_every=2, keep_last=2, resume=resume),
    )  # fmt: skip


def run_ipo(tmp_path, name, resume=False):
    """IPO on 10 pairs (the 8 of test_offline and 2 again) with :func:`resume_config`."""
    return run(resume_config(tmp_path, name, resume=resume), examples=PAIRS + PAIRS[:2])


def test_crash_then_resume_is_bit_identical_and_reuses_the_reference_cache(tmp_path, monkeypatch):
    full = full_then_crashed(monkeypatch, dpo, partial(run_ipo, tmp_path))
    out = tmp_path / "crashed"
    assert ckpt_lib.find_latest(out).name == "ckpt-4"
    at_4 = ckpt_lib.load_checkpoint(out / "ckpt-4").model_state

    resumed = run_ipo(tmp_path, "crashed", resume=True)
    assert resumed.summary["ref_logps"] == "cached"  # read from ref_logps.pt, not recomputed
    a, b = params(full.policy), params(resumed.policy)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not all(torch.equal(a[n], at_4[n]) for n in a)  # steps 5-8 really ran after the resume
    assert train_losses(out) == train_losses(tmp_path / "full")


def test_resume_with_a_changed_reference_cache_differs(tmp_path, monkeypatch):
    """Negative control: resuming with altered cached reference log-probs changes the result."""
    full = full_then_crashed(monkeypatch, dpo, partial(run_ipo, tmp_path))
    cache_path = tmp_path / "crashed" / ref_cache.REF_CACHE
    cache = torch.load(cache_path, weights_only=True)
    cache["train"] = cache["train"] + torch.tensor([0.5, 0.0])  # mu(first) x e^0.5 in the cache
    torch.save(cache, cache_path)
    resumed = run_ipo(tmp_path, "crashed", resume=True)
    a, b = params(full.policy), params(resumed.policy)
    assert not all(torch.equal(a[n], b[n]) for n in a)


# ----------------------------------------------------------------------------- command line


def nlhf_train(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="nlhf")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", *argv])
    return args.func(args)


@pytest.fixture
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": e.prompt, "chosen": e.first, "rejected": e.second} for e in PAIRS]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_cli_train_ipo_end_to_end_then_dpo_from_the_saved_policy(tmp_path, pairs_file, capsys):
    from nlhf.models.loading import load_causal_lm
    from nlhf.models.tiny import tiny_causal_lm, tiny_tokenizer

    out = tmp_path / "ipo"
    code = nlhf_train("ipo", "--data", str(pairs_file), "--eval-data", str(pairs_file), "--model", "tiny",
                      "--out", str(out), "tau=0.5", "optim.lr=1e-3", "loop.max_steps=3",
                      "loop.micro_batch_size=4", "loop.save_every=3", "loop.progress=false")  # fmt: skip
    assert code == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["loss"] == "ipo" and line["steps"] == 3 and line["tau"] == 0.5 and line["reduction"] == "sum"
    assert line["eval_kl_ref"] > 0
    import yaml

    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["loss"], saved["tau"], saved["model"], saved["loop"]["max_steps"]) == (
        "ipo",
        0.5,
        "tiny",
        3,
    )
    summary = json.loads((out / run_lib.METRICS_JSON).read_text())
    assert summary["steps"] == 3 and summary["n_train"] == len(PAIRS)
    assert ckpt_lib.find_latest(out).name == "ckpt-3"
    policy, tok = load_causal_lm(out / run_lib.POLICY_DIR)
    init = tiny_causal_lm(tokenizer=tiny_tokenizer(), seed=0)
    moved = max((p - q).abs().max() for p, q in zip(policy.parameters(), init.parameters()))
    assert moved > 1e-4

    # a saved policy directory is a --model too; DPO from it
    out2 = tmp_path / "dpo"
    code = nlhf_train("dpo", "--data", str(pairs_file), "--model", str(out / run_lib.POLICY_DIR),
                      "--out", str(out2), "loop.max_steps=1", "loop.progress=false")  # fmt: skip
    assert code == 0
    assert json.loads((out2 / run_lib.METRICS_JSON).read_text())["loss"] == "dpo"


def test_cli_resume_flag_continues_the_run(tmp_path, pairs_file):
    args = ["--data", str(pairs_file), "--model", "tiny", "--out", str(tmp_path / "r"), "loop.micro_batch_size=4",
            "loop.save_every=1", "loop.progress=false"]  # fmt: skip
    assert nlhf_train("cdpo", *args, "label_smoothing=0.1", "loop.max_steps=2") == 0
    with pytest.raises(Exception, match="already holds checkpoints"):
        nlhf_train("cdpo", *args, "label_smoothing=0.1", "loop.max_steps=4")
    assert nlhf_train("cdpo", *args, "label_smoothing=0.1", "loop.max_steps=4", "--resume") == 0
    summary = json.loads((tmp_path / "r" / run_lib.METRICS_JSON).read_text())
    assert summary["steps"] == 4 and summary["ref_logps"] == "cached"


def test_sub_command_fixes_the_loss_and_rejects_a_contradiction(tmp_path):
    cls = dpo.OfflineConfig
    cfg = resolve_config(cls, None, ["tau=0.3"], {"data": "d.jsonl", "out": "o"}, TRAIN_FAMILIES["ipo"].fixed)
    assert (cfg.loss, cfg.tau, cfg.data) == ("ipo", 0.3, "d.jsonl")
    with pytest.raises(ConfigError, match="loss: this sub-command sets loss=dpo"):
        resolve_config(cls, None, ["loss=ipo"], {}, TRAIN_FAMILIES["dpo"].fixed)
    with pytest.raises(ConfigError, match="unknown key 'optim.lrr'"):
        resolve_config(cls, None, ["optim.lrr=1"], {}, TRAIN_FAMILIES["dpo"].fixed)
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("tau: 0.2\nreduction: mean\nloop:\n  micro_batch_size: 2\n")
    cfg = resolve_config(cls, yaml_file, ["tau=0.4"], {}, TRAIN_FAMILIES["ipo"].fixed)
    assert (cfg.tau, cfg.reduction, cfg.loop.micro_batch_size) == (0.4, "mean", 2)


def test_cli_missing_data_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="data: required"):
        nlhf_train("dpo", "--model", "tiny", "--out", str(tmp_path / "x"))


def test_train_families_table_is_open_for_more_families():
    """A new row is a new sub-command of the same ``nlhf train`` parser."""
    from nlhf.train.cli import TrainFamily

    TRAIN_FAMILIES["toy"] = TrainFamily(help="toy", config_class=dpo.OfflineConfig, run=dpo.run_offline,
                                        fixed={"loss": "ipo"}, flags=("data", "out"))  # fmt: skip
    try:
        parser = argparse.ArgumentParser(prog="nlhf")
        register(parser.add_subparsers(dest="command"))
        args = parser.parse_args(["train", "toy", "--data", "f", "--out", "o", "tau=2"])
        assert (args.family, args.data, args.overrides) == ("toy", "f", ["tau=2"])
        with pytest.raises(SystemExit):
            parser.parse_args(["train", "toy", "--model", "tiny"])  # not a flag of this family
    finally:
        del TRAIN_FAMILIES["toy"]
