"""Every trainer fails at start, before any model loads, when its output directory is unusable;
a trainer whose loss turns NaN stops with a clear message and its last good checkpoint intact.

The loop-level versions (the toy task) are in ``test_train_loop.py``; here each public entry
point (``run_fit`` for the preference and reward models, ``run_offline``, ``run_nash_md``,
``run_rlhf``) is called with its model loader replaced by one that fails the test if called.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from trainer_runs import PAIRS, PROMPTS, minus_length, shorter_is_better  # noqa: E402

from nlhf import judges  # noqa: E402
from nlhf.config import ConfigError  # noqa: E402
from nlhf.judges import CallableJudge  # noqa: E402
from nlhf.train import checkpoint as ckpt_lib  # noqa: E402
from nlhf.train import dpo, fit, nash_md, rlhf, run  # noqa: E402
from nlhf.train.config import LoopConfig, OptimConfig  # noqa: E402
from nlhf.train.loop import NonFiniteLossError, RunDirError  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one torch thread (tests/conftest.py)."""


class Loaded(AssertionError):
    pass


def never(*args, **kwargs):
    raise Loaded("a model was loaded before the output directory was checked")


@pytest.fixture
def no_loading(monkeypatch):
    monkeypatch.setattr(run, "load_model", never)  # every policy trainer loads its model through it
    monkeypatch.setattr(fit, "_build_model", never)
    monkeypatch.setattr(judges, "load_judge", never)  # the judged trainers load their judge through it


def entry_points(out: str, loop: LoopConfig):
    """``name -> zero-argument call`` of every trainer, configured to load its model by name."""
    from nlhf.data import PreferenceExample

    pairs = [PreferenceExample(p, a, b) for p, a, b in PAIRS]
    return {
        "pm": lambda: fit.run_fit(
            "pm", fit.FitConfig(data="pairs.jsonl", model="minilm", out=out, loop=loop)
        ),
        "rm": lambda: fit.run_fit(
            "rm", fit.FitConfig(data="pairs.jsonl", model="minilm", out=out, loop=loop)
        ),
        "dpo": lambda: dpo.run_offline(
            dpo.OfflineConfig(model="tiny", out=out, loop=loop), train_examples=pairs
        ),
        "nash_md": lambda: nash_md.run_nash_md(
            nash_md.NashMDConfig(model="tiny", judge="judge-dir", out=out, loop=loop), train_prompts=PROMPTS
        ),  # fmt: skip
        "nash_ema": lambda: nash_md.run_nash_md(
            nash_md.NashMDConfig(algorithm="nash_ema", model="tiny", out=out, loop=loop),
            judge=CallableJudge(shorter_is_better),
            train_prompts=PROMPTS,
        ),  # fmt: skip
        "ppo": lambda: rlhf.run_rlhf(
            rlhf.RLHFConfig(model="tiny", out=out, loop=loop), reward_fn=minus_length, train_prompts=PROMPTS
        ),  # fmt: skip
    }


TRAINERS = ("pm", "rm", "dpo", "nash_md", "nash_ema", "ppo")


@pytest.mark.parametrize("trainer", TRAINERS)
def test_unwritable_output_dir_fails_before_any_model_loads(tmp_path, no_loading, trainer):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = blocker / "run"  # a directory under a regular file: cannot be created, even by root
    with pytest.raises(RunDirError, match=r"a-file/run cannot be created"):
        entry_points(str(out), LoopConfig(max_steps=1, progress=False))[trainer]()


@pytest.mark.parametrize("trainer", TRAINERS)
def test_too_little_free_disk_fails_before_any_model_loads(tmp_path, no_loading, trainer):
    loop = LoopConfig(max_steps=1, progress=False, min_free_disk_mb=10**12)
    with pytest.raises(RunDirError, match="MiB free, the run needs at least"):
        entry_points(str(tmp_path / "run"), loop)[trainer]()


@pytest.mark.parametrize("trainer", ["nash_md", "ppo"])
def test_sharded_launch_is_refused_before_any_model_loads(tmp_path, no_loading, monkeypatch, trainer):
    """The online and RLHF samplers need whole weights: an FSDP or ZeRO-3 launch is refused by name."""
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ConfigError, match="FSDP shards the policy's weights"):
        entry_points(str(tmp_path / "run"), LoopConfig(max_steps=1, progress=False))[trainer]()
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "false")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    with pytest.raises(ConfigError, match="DeepSpeed ZeRO-3 shards"):
        entry_points(str(tmp_path / "run"), LoopConfig(max_steps=1, progress=False))[trainer]()


def test_nan_loss_in_a_trainer_stops_with_the_last_good_checkpoint_intact(tmp_path, monkeypatch):
    """DPO whose loss turns NaN from step 3 on: steps 3 and 4 skipped and counted, then a clear stop.

    ``max_nonfinite_in_a_row=2``, checkpoints every 2 steps: the newest checkpoint is step 2's, and
    its weights are the weights at the stop (the skipped steps changed nothing).
    """
    from nlhf.data import PreferenceExample
    from nlhf.models.tiny import tiny_causal_lm, tiny_tokenizer

    real = dpo.make_step

    def poisoned(cfg, sharing=None):
        step_fn = real(cfg, sharing)

        def step(model, batch, ctx):
            out = step_fn(model, batch, ctx)
            if ctx.step >= 2:
                out.losses = out.losses * float("nan")
            return out

        return step

    monkeypatch.setattr(dpo, "make_step", poisoned)
    cfg = dpo.OfflineConfig(
        out=str(tmp_path / "run"), optim=OptimConfig(lr=1e-2),
        loop=LoopConfig(max_steps=10, micro_batch_size=4, save_every=2, max_nonfinite_in_a_row=2, progress=False,
                        tensorboard=False, min_free_disk_mb=1),
    )  # fmt: skip
    tok = tiny_tokenizer()
    model = tiny_causal_lm(tokenizer=tok, seed=0)
    with pytest.warns(UserWarning, match="nonfinite loss; step skipped"):
        with pytest.raises(NonFiniteLossError, match=r"stopping at step 4: 2 steps in a row .*ckpt-2"):
            dpo.run_offline(
                cfg, model=model, tokenizer=tok, train_examples=[PreferenceExample(*p) for p in PAIRS]
            )
    good = ckpt_lib.load_checkpoint(ckpt_lib.find_latest(tmp_path / "run"))
    assert good.step == 2 and good.trainer_state["updates"] == 2
    now = {n: p.detach() for n, p in model.named_parameters()}
    assert all(torch.equal(good.model_state[n], now[n]) for n in now)  # the skipped steps changed nothing
    assert all(torch.isfinite(t).all() for t in good.model_state.values())
