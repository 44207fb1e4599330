"""``nlhf train sppo|inpo|dno|mpo|mirror-prox`` (issue 17): CLI config errors, two steps end to end on the tiny Llama, exact resume.

Resume: a run crashes in the middle of step 5 (newest checkpoint ``ckpt-4``, inside outer
iteration 1, which began at step 3) and is resumed; its final weights, its pi_t snapshot
and its logged losses must equal an uninterrupted run's exactly. Negative control: the same
crash with the snapshot NOT restored (pi_t rebuilt from the resumed weights) must differ.
"""

from __future__ import annotations

import json
from functools import partial

import pytest
import torch
from test_config_errors import nothing_loads, refused  # noqa: F401  (a fixture)
from test_online import PROMPTS, TEXT_SCORE_JUDGE, loop_cfg, params, tiny
from trainer_runs import Crash, crashing_step, full_then_crashed, train_losses

from nlhf.sampling import SamplingConfig
from nlhf.train import checkpoint as ckpt_lib
from nlhf.train import dno, inpo, mirror_prox, mpo, sppo
from nlhf.train.config import OptimConfig
from nlhf.train.rollouts import IterationSnapshot


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one torch thread (tests/conftest.py)."""


def family_command(tmp_path, family="sppo") -> list[str]:
    data = str(tmp_path / "data.jsonl")
    return ["train", family, "--prompts", data, "--model", "tiny", "--judge", str(tmp_path),
            "--out", str(tmp_path / "out")]  # fmt: skip


@pytest.mark.parametrize(
    "override, message",
    [
        ("eta=0", "eta: must be a finite number > 0"),
        ("responses_per_prompt=1", "responses_per_prompt: must be >= 2"),
        ("steps_per_iteration=0", "steps_per_iteration: must be >= 1"),
        ("algorithm=inpo", "algorithm"),
        ("optim.lrr=1", "unknown key 'optim.lrr'"),
    ],
)
def test_sppo_bad_override_is_refused_naming_the_key(override, message, tmp_path, capsys, nothing_loads):  # noqa: F811
    line = refused([*family_command(tmp_path), override], capsys, tmp_path)
    assert message in line, line


@pytest.mark.parametrize(
    "override, message",
    [
        ("eta=20", "eta: eta * tau must be <= 1"),
        ("tau=0", "tau: must be a finite number > 0"),
        ("steps_per_iteration=0", "steps_per_iteration: must be >= 1"),
        ("responses_per_prompt=2", "unknown key 'responses_per_prompt'"),
    ],
)
def test_inpo_bad_override_is_refused_naming_the_key(override, message, tmp_path, capsys, nothing_loads):  # noqa: F811
    line = refused([*family_command(tmp_path, "inpo"), override], capsys, tmp_path)
    assert message in line, line


@pytest.mark.parametrize(
    "override, message",
    [
        ("beta=0", "beta: must be a finite number > 0"),
        ("margin=1", "margin: must lie in [0, 1)"),
        ("label=maybe", "label"),
        ("responses_per_prompt=1", "responses_per_prompt: must be >= 2"),
        ("tau=0.1", "unknown key 'tau'"),
    ],
)
def test_dno_bad_override_is_refused_naming_the_key(override, message, tmp_path, capsys, nothing_loads):  # noqa: F811
    line = refused([*family_command(tmp_path, "dno"), override], capsys, tmp_path)
    assert message in line, line


@pytest.mark.parametrize(
    "override, message",
    [
        ("magnet_every=0", "magnet_every: must be >= 1"),
        ("tau=0", "tau: must be a finite number > 0"),
        ("eta=-1", "eta: must be a finite number > 0"),
        ("margin=0.1", "unknown key 'margin'"),
    ],
)
def test_mpo_bad_override_is_refused_naming_the_key(override, message, tmp_path, capsys, nothing_loads):  # noqa: F811
    line = refused([*family_command(tmp_path, "mpo"), override], capsys, tmp_path)
    assert message in line, line


@pytest.mark.parametrize(
    "override, message",
    [
        ("steps_per_iteration=3", "steps_per_iteration: must be even and >= 2"),
        ("tau=0", "tau: must be a finite number > 0"),
        ("magnet_every=2", "unknown key 'magnet_every'"),
    ],
)
def test_mirror_prox_bad_override_is_refused_naming_the_key(override, message, tmp_path, capsys,
                                                            nothing_loads):  # noqa: F811  # fmt: skip
    line = refused([*family_command(tmp_path, "mirror-prox"), override], capsys, tmp_path)
    assert message in line, line


def sppo_cfg(tmp_path, name, loop, optim=None, **kw):
    return sppo.SPPOConfig(
        out=str(tmp_path / name), sampling=SamplingConfig(max_new_tokens=5),
        optim=OptimConfig(**{"lr": 1e-3, "max_grad_norm": 0.0, "schedule": "constant", **(optim or {})}),
        loop=loop_cfg(**loop), **kw,
    )  # fmt: skip


def test_sppo_end_to_end_on_tiny_llama(tmp_path):
    """Two steps of one iteration: at step 0 pi = pi_t, so log_ratio is 0 and the loss is the mean squared target."""
    model, tok = tiny()
    before = params(model)
    cfg = sppo_cfg(tmp_path, "run", dict(max_steps=2, micro_batch_size=2, log_every=1), responses_per_prompt=3,
                   steps_per_iteration=2, eta=2.0)  # fmt: skip
    result = sppo.run_sppo(cfg, model=model, tokenizer=tok, judge=TEXT_SCORE_JUDGE, train_prompts=PROMPTS[:4])
    assert result.summary["steps"] == 2 and result.summary["algorithm"] == "sppo"
    assert any(not torch.equal(before[n], p) for n, p in params(result.policy).items())
    first = [r for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
             if r["split"] == "train"][0]  # fmt: skip
    assert first["log_ratio"] == pytest.approx(0.0, abs=1e-5)
    assert first["win_rate"] == pytest.approx(0.5)  # the mean win rate of a group against itself
    assert first["target"] == pytest.approx(0.0, abs=1e-6) and first["iteration"] == 0
    assert result.opponent.iteration == 0  # steps 0, 1: iteration 0 only
    assert (tmp_path / "run" / "policy").is_dir()


def test_inpo_end_to_end_on_tiny_llama(tmp_path):
    """Two steps: at step 0 pi = pi_t, so h = eta tau (log pi_t/mu margin) = 0 (pi_t = mu at the start)."""
    model, tok = tiny()
    before = params(model)
    cfg = inpo.INPOConfig(out=str(tmp_path / "run"), sampling=SamplingConfig(max_new_tokens=5),
                          optim=OptimConfig(lr=1e-3, max_grad_norm=0.0, schedule="constant"),
                          loop=loop_cfg(max_steps=2, micro_batch_size=2, log_every=1), eta=2.0, tau=0.2)  # fmt: skip
    result = inpo.run_inpo(cfg, model=model, tokenizer=tok, judge=TEXT_SCORE_JUDGE, train_prompts=PROMPTS[:4])
    assert result.summary["steps"] == 2 and result.summary["algorithm"] == "inpo"
    assert any(not torch.equal(before[n], p) for n, p in params(result.policy).items())
    first = [r for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
             if r["split"] == "train"][0]  # fmt: skip
    assert first["h"] == pytest.approx(0.0, abs=1e-5) and first["iteration"] == 0
    assert first["kl_k1"] == pytest.approx(0.0, abs=1e-5)


def test_dno_end_to_end_on_tiny_llama(tmp_path):
    """Two steps: at step 0 pi = pi_t, so h = 0; the judge (shorter text wins) separates most groups."""
    model, tok = tiny()
    before = params(model)
    cfg = dno.DNOConfig(out=str(tmp_path / "run"), sampling=SamplingConfig(max_new_tokens=5),
                        optim=OptimConfig(lr=1e-3, max_grad_norm=0.0, schedule="constant"),
                        loop=loop_cfg(max_steps=2, micro_batch_size=2, log_every=1), beta=0.5,
                        responses_per_prompt=3, steps_per_iteration=2)  # fmt: skip
    result = dno.run_dno(cfg, model=model, tokenizer=tok, judge=TEXT_SCORE_JUDGE, train_prompts=PROMPTS[:4])
    assert result.summary["steps"] == 2 and result.summary["algorithm"] == "dno"
    first = [r for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
             if r["split"] == "train"][0]  # fmt: skip
    assert first["h"] == pytest.approx(0.0, abs=1e-5) and first["iteration"] == 0
    assert first["win_rate"] == pytest.approx(0.5)
    assert 0.0 < first["kept"] <= 1.0 and first["margin"] > 0
    # a kept pair at h = 0 has loss log 2 (hard label); an unkept one 0
    assert first["loss"] == pytest.approx(first["kept"] * 0.6931472, rel=1e-4)
    assert any(not torch.equal(before[n], p) for n, p in params(result.policy).items())


def test_dno_select_pairs_by_hand():
    win = torch.tensor([[0.2, 0.9, 0.4], [0.5, 0.5, 0.5], [0.6, 0.3, 0.55]])
    best, worst, gap, kept = dno.select_pairs(win, margin=0.25)
    assert best.tolist() == [1, 0, 0] and worst.tolist() == [0, 0, 1]
    torch.testing.assert_close(gap, torch.tensor([0.7, 0.0, 0.3]))
    assert kept.tolist() == [True, False, True]  # no gap: nothing to learn, even at margin 0
    assert dno.select_pairs(win, margin=0.5)[3].tolist() == [True, False, False]


RESUME_LOOP = dict(
    max_steps=8, micro_batch_size=2, grad_accum_steps=2, save_every=2, keep_last=2, log_every=1
)
RESUME_OPTIM = dict(lr=3e-3, warmup_steps=2, schedule="cosine", weight_decay=0.01)


def run_resumable(module, tmp_path, name, resume=False):
    loop = {**RESUME_LOOP, "resume": resume}
    model, tok = tiny()
    if module is sppo:
        cfg = sppo_cfg(
            tmp_path, name, loop, RESUME_OPTIM, responses_per_prompt=2, steps_per_iteration=3, eta=2.0
        )
        run = sppo.run_sppo
    elif module is dno:
        cfg = dno.DNOConfig(out=str(tmp_path / name), sampling=SamplingConfig(max_new_tokens=5),
                            optim=OptimConfig(**{"max_grad_norm": 0.0, **RESUME_OPTIM}), loop=loop_cfg(**loop),
                            steps_per_iteration=3, beta=0.5, responses_per_prompt=2)  # fmt: skip
        run = dno.run_dno
    elif module is mpo:
        cfg = mpo.MPOConfig(out=str(tmp_path / name), sampling=SamplingConfig(max_new_tokens=5),
                            optim=OptimConfig(**{"max_grad_norm": 0.0, **RESUME_OPTIM}), loop=loop_cfg(**loop),
                            steps_per_iteration=3, magnet_every=1, eta=2.0, tau=0.2)  # fmt: skip
        run = mpo.run_mpo
    elif module is mirror_prox:  # iterations of 2 x 3 steps: ckpt-4 is inside iteration 0's update half
        cfg = mirror_prox.MirrorProxConfig(out=str(tmp_path / name), sampling=SamplingConfig(max_new_tokens=5),
                                           optim=OptimConfig(**{"max_grad_norm": 0.0, **RESUME_OPTIM}),
                                           loop=loop_cfg(**loop), steps_per_iteration=6, eta=2.0, tau=0.2)  # fmt: skip
        run = mirror_prox.run_mirror_prox
    else:
        cfg = inpo.INPOConfig(out=str(tmp_path / name), sampling=SamplingConfig(max_new_tokens=5),
                              optim=OptimConfig(**{"max_grad_norm": 0.0, **RESUME_OPTIM}), loop=loop_cfg(**loop),
                              steps_per_iteration=3, eta=2.0, tau=0.2)  # fmt: skip
        run = inpo.run_inpo
    return run(cfg, model=model, tokenizer=tok, judge=TEXT_SCORE_JUDGE, train_prompts=PROMPTS[:6])


MODULES = [sppo, inpo, dno, mpo, mirror_prox]


@pytest.mark.parametrize("module", MODULES, ids=[m.__name__.rpartition(".")[2] for m in MODULES])
def test_crash_inside_an_iteration_then_resume_is_bit_identical(module, tmp_path, monkeypatch):
    full = full_then_crashed(monkeypatch, module, partial(run_resumable, module, tmp_path))
    out = tmp_path / "crashed"
    assert ckpt_lib.find_latest(out).name == "ckpt-4"
    saved = ckpt_lib.load_checkpoint(out / "ckpt-4").extra["snapshot"]
    spi = 6 if module is mirror_prox else 3  # steps per iteration
    assert saved["iteration"] == 3 // spi  # steps 3, 4, 5: the checkpoint is inside an iteration
    if module is mpo:  # the magnet (refreshed every iteration here) is checkpointed too
        assert ckpt_lib.load_checkpoint(out / "ckpt-4").extra["magnet"]["iteration"] == 1
    if module is mirror_prox:  # and pi_{t+1/2}, taken at step 3 (the start of the update half)
        assert ckpt_lib.load_checkpoint(out / "ckpt-4").extra["half"]["iteration"] == 1

    resumed = run_resumable(module, tmp_path, "crashed", resume=True)
    a, b = params(full.policy), params(resumed.policy)
    assert all(torch.equal(a[n], b[n]) for n in a)
    snap_a, snap_b = full.opponent.state_dict(), resumed.opponent.state_dict()
    assert snap_a["iteration"] == snap_b["iteration"] == 7 // spi
    assert all(torch.equal(snap_a["params"][n], snap_b["params"][n]) for n in snap_a["params"])
    assert train_losses(out) == train_losses(tmp_path / "full")

    # negative control: pi_t not restored on resume (rebuilt from the resumed weights at step 4)
    monkeypatch.setattr(IterationSnapshot, "load_state_dict", lambda self, state: None)
    with monkeypatch.context() as m:
        m.setattr(module, "make_step", crashing_step(module, 5))
        with pytest.raises(Crash):
            run_resumable(module, tmp_path, "control")
    c = params(run_resumable(module, tmp_path, "control", resume=True).policy)
    assert any(not torch.equal(a[n], c[n]) for n in a)
