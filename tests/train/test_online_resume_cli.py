"""Exact resume of the online trainers, and ``nlhf train <online family>`` end to end on the tiny Llama.

Resume: a run crashes in the middle of step 5 (after its first micro-batch; newest
checkpoint ``ckpt-4``) and is resumed; its final weights, its Nash-EMA opponent and its
logged metrics must equal an uninterrupted run's exactly (``torch.equal``). Sampling is
stochastic (temperature 1): the per-micro-batch generators are derived from the stream
position, so the resumed run redraws the same samples. PPO is crashed in the middle of a
PPO iteration, so the continued steps train on rollouts restored from the checkpoint.
Negative control: the same crash and resume with the EMA state not restored must end
with another opponent.
"""

from __future__ import annotations

import argparse
import json
from functools import partial

import pytest
import torch
from test_online import LENGTH_JUDGE, PROMPTS, minus_length, online_cfg, params, rlhf_cfg, tiny
from trainer_runs import full_then_crashed, train_losses

from nlhf.config import ConfigError
from nlhf.train import checkpoint as ckpt_lib
from nlhf.train import nash_md, rlhf


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one torch thread (tests/conftest.py)."""


RESUME_LOOP = dict(
    max_steps=8, micro_batch_size=2, grad_accum_steps=2, save_every=2, keep_last=2, log_every=1
)
RESUME_OPTIM = dict(lr=3e-3, warmup_steps=2, schedule="cosine", weight_decay=0.01, max_grad_norm=1.0)


def run_ema(tmp_path, name, resume=False):
    cfg = online_cfg(tmp_path, name, algorithm="nash_ema", tau=0.1, ema_decay=0.5, optim=RESUME_OPTIM,
                     loop={**RESUME_LOOP, "resume": resume}, sampling=dict(max_new_tokens=5))  # fmt: skip
    model, tok = tiny()
    return nash_md.run_nash_md(cfg, model=model, tokenizer=tok, judge=LENGTH_JUDGE, train_prompts=PROMPTS[:6])


def test_nash_ema_crash_then_resume_is_bit_identical(tmp_path, monkeypatch):
    full = full_then_crashed(monkeypatch, nash_md, partial(run_ema, tmp_path))
    out = tmp_path / "crashed"
    assert ckpt_lib.find_latest(out).name == "ckpt-4"
    saved = ckpt_lib.load_checkpoint(out / "ckpt-4").extra["ema_opponent"]
    assert saved["updates"] == 4  # the EMA opponent is in the checkpoint

    resumed = run_ema(tmp_path, "crashed", resume=True)
    a, b = params(full.policy), params(resumed.policy)
    assert all(torch.equal(a[n], b[n]) for n in a)
    ema_a, ema_b = full.opponent.state_dict(), resumed.opponent.state_dict()
    assert ema_a["updates"] == ema_b["updates"] == 8
    assert all(torch.equal(ema_a["params"][n], ema_b["params"][n]) for n in ema_a["params"])
    assert train_losses(out) == train_losses(tmp_path / "full")


def test_negative_control_resume_without_the_ema_state_differs(tmp_path, monkeypatch):
    full = full_then_crashed(monkeypatch, nash_md, partial(run_ema, tmp_path))
    with monkeypatch.context() as m:
        m.setattr(
            nash_md.EmaOpponent, "load_state_dict", lambda self, state: None
        )  # the EMA restarts at theta_0
        resumed = run_ema(tmp_path, "crashed", resume=True)
    ema_a, ema_b = full.opponent.state_dict()["params"], resumed.opponent.state_dict()["params"]
    assert not all(torch.equal(ema_a[n], ema_b[n]) for n in ema_a)


def run_ppo(tmp_path, name, resume=False):
    cfg = rlhf_cfg(tmp_path, name, algorithm="ppo", tau=0.1, group_size=2, ppo_epochs=3, optim=RESUME_OPTIM,
                   loop={**RESUME_LOOP, "micro_batch_size": 1, "resume": resume},
                   sampling=dict(max_new_tokens=4))  # fmt: skip
    model, tok = tiny()
    return rlhf.run_rlhf(cfg, model=model, tokenizer=tok, reward_fn=minus_length, train_prompts=PROMPTS[:6])


def test_ppo_crash_inside_an_iteration_then_resume_is_bit_identical(tmp_path, monkeypatch):
    """Fresh rollouts at steps 0, 3, 6; the crash at step 5 resumes at 4, which trains on step 3's buffered rollouts."""
    full = full_then_crashed(monkeypatch, rlhf, partial(run_ppo, tmp_path))
    out = tmp_path / "crashed"
    buffer = ckpt_lib.load_checkpoint(out / "ckpt-4").process_extra["rollout_buffer"]  # extra-0.pt
    assert sorted(buffer["slots"]) == [0, 1]  # both micro-batch slots of step 3's rollouts
    resumed = run_ppo(tmp_path, "crashed", resume=True)
    a, b = params(full.policy), params(resumed.policy)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert train_losses(out) == train_losses(tmp_path / "full")


# ----------------------------------------------------------------------------- command line


def parse_and_run(monkeypatch, argv):
    """``nlhf train ...`` through nlhf.train.cli.register."""
    from nlhf.train import cli

    parser = argparse.ArgumentParser(prog="nlhf")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    """A prompts file and a tiny reward model directory (the judge, and the PPO reward)."""
    from nlhf.models import RewardModel

    root = tmp_path_factory.mktemp("cli")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    model, tok = tiny(seed=3)
    RewardModel(model, tok).save_pretrained(root / "rm")
    return prompts, root / "rm"


COMMON = ["loop.max_steps=2", "loop.micro_batch_size=2", "loop.progress=false", "loop.tensorboard=false",
          "loop.min_free_disk_mb=1", "sampling.max_new_tokens=4", "optim.lr=1e-3"]  # fmt: skip


@pytest.mark.parametrize(
    ("family", "extra"),
    [
        ("nash-md", ["mixture_coef=0.25"]),
        ("self-play", []),
        ("ipo-md", []),
        ("ppo", ["group_size=2", "ppo_epochs=2"]),
    ],
)
def test_cli_trains_and_saves(tmp_path, monkeypatch, capsys, cli_files, family, extra):
    from nlhf.models.loading import load_causal_lm

    prompts, rm = cli_files
    flag = "--reward" if family in ("ppo", "rlhf-pg") else "--judge"
    out = tmp_path / "out"
    rc = parse_and_run(monkeypatch, ["train", family, "--prompts", str(prompts), "--eval-prompts", str(prompts),
                                     "--model", "tiny", flag, str(rm), "--out", str(out), *COMMON, *extra])  # fmt: skip
    assert rc == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["steps"] == 2 and line["out"] == str(out)
    algorithm = {"nash-md": "nash_md", "self-play": "self_play", "ipo-md": "ipo_md", "ppo": "ppo"}[family]
    assert line["algorithm"] == algorithm
    if family == "nash-md":
        assert line["mixture_coef"] == 0.25
        assert 0.0 <= line["eval_win_rate_vs_ref"] <= 1.0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["n_train"] == len(PROMPTS) and summary["n_eval"] == len(PROMPTS)
    policy, _ = load_causal_lm(out / "policy")
    assert policy.config.vocab_size == 259
    assert f"algorithm: {algorithm}" in (out / "config.yaml").read_text()


@pytest.mark.parametrize(
    ("argv", "key"),
    [
        (["train", "self-play", "mixture_coef=0.5"], "mixture_coef"),
        (["train", "nash-md", "algorithm=online_ipo"], "algorithm"),
        (["train", "nash-md", "tau=0"], "tau"),
        (["train", "rlhf-pg", "ppo_epochs=2"], "ppo_epochs"),
        (["train", "online-ipo", "--out", "/tmp/x"], "prompts"),
    ],
)
def test_cli_config_errors_name_the_key_before_loading(monkeypatch, argv, key):
    with pytest.raises(ConfigError, match=rf"\b{key}\b"):
        parse_and_run(monkeypatch, argv)


def test_online_modules_import_without_torch():
    import subprocess
    import sys

    code = ("import sys, nlhf.train.nash_md, nlhf.train.online_ipo, nlhf.train.rlhf, nlhf.train.dpo, nlhf.cli; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, sorted(sys.modules)")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
