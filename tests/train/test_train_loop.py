"""The shared training loop: normalisation across micro-batches, schedule, data order,
evaluation, NaN/inf handling, and the output-directory checks."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from train_toy import NoisyStep, ToyModel, collate, make_data, token_sq_error_step

from nlhf.config import ConfigError, from_dict
from nlhf.train import checkpoint as ckpt_lib
from nlhf.train.config import LoopConfig, OptimConfig
from nlhf.train.loop import (
    METRICS_FILE,
    NonFiniteLossError,
    RunDirError,
    TrainLoop,
    epoch_permutation,
    lr_factor,
    make_accelerator,
    stream_indices,
)

torch.set_num_threads(1)


def loop_cfg(out: Path, **kw) -> LoopConfig:
    base = dict(
        seed=0, max_steps=1, micro_batch_size=8, grad_accum_steps=1, out_dir=str(out),
        progress=False, tensorboard=False, min_free_disk_mb=0, log_every=1,
    )  # fmt: skip
    base.update(kw)
    return LoopConfig(**base)


def params_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# ----------------------------------------------------------------------------- config


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"optim\.lr"):
        OptimConfig(lr=0.0)
    with pytest.raises(ConfigError, match=r"optim\.min_lr_ratio"):
        OptimConfig(min_lr_ratio=1.5)
    with pytest.raises(ConfigError, match=r"loop\.epochs"):
        LoopConfig(max_steps=3, epochs=1.0)
    with pytest.raises(ConfigError, match=r"loop\.grad_accum_steps"):
        LoopConfig(grad_accum_steps=0)
    with pytest.raises(ConfigError, match=r"unknown key 'schedul'"):
        from_dict(OptimConfig, {"schedul": "cosine"})
    with pytest.raises(ConfigError, match=r"schedule: must be one of"):
        from_dict(OptimConfig, {"schedule": "step"})
    with pytest.raises(ConfigError, match=r"mixed_precision"):
        from_dict(LoopConfig, {"mixed_precision": "fp8"})


def test_mixed_precision_only_with_a_gpu():
    with pytest.warns(UserWarning, match="mixed_precision='bf16' ignored"):
        acc = make_accelerator(LoopConfig(mixed_precision="bf16", device="cpu"))
    assert acc.mixed_precision == "no" and acc.device.type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"loop\.device"):
            make_accelerator(LoopConfig(device="cuda"))


# ----------------------------------------------------------------------------- schedule, data order


def test_lr_factor_hand_values():
    """warmup 2, 12 steps: updates 0, 1 -> 1/3, 2/3; then p = (u - 2) / 10.

    cosine at u = 7: p = 1/2 -> (1 + cos(pi/2)) / 2 = 0.5; at u = 2: 1.0; at u = 12: 0.
    linear, min_lr_ratio 0.1, u = 7: 0.1 + 0.9 * 0.5 = 0.55. constant: 1 after warm-up.
    """
    cos = OptimConfig(warmup_steps=2, schedule="cosine")
    assert lr_factor(0, cos, 12) == pytest.approx(1 / 3)
    assert lr_factor(1, cos, 12) == pytest.approx(2 / 3)
    assert lr_factor(2, cos, 12) == pytest.approx(1.0)
    assert lr_factor(7, cos, 12) == pytest.approx(0.5)
    assert lr_factor(12, cos, 12) == pytest.approx(0.0, abs=1e-12)
    lin = OptimConfig(warmup_steps=2, schedule="linear", min_lr_ratio=0.1)
    assert lr_factor(7, lin, 12) == pytest.approx(0.55)
    assert lr_factor(12, lin, 12) == pytest.approx(0.1)
    assert lr_factor(9, OptimConfig(warmup_steps=2, schedule="constant"), 12) == 1.0


def test_loop_applies_the_schedule(tmp_path):
    """The lr logged for each step is lr * lr_factor(step) (one scheduler step per update)."""
    optim = OptimConfig(lr=0.2, warmup_steps=1, schedule="linear")
    TrainLoop(loop_cfg(tmp_path, max_steps=4, micro_batch_size=2), optim, ToyModel(), make_data(8), collate,
              token_sq_error_step).run()  # fmt: skip
    lrs = [json.loads(x)["lr"] for x in (tmp_path / METRICS_FILE).read_text().splitlines()]
    # factors: u=0 warm-up 1/2; u=1 p=0 -> 1; u=2 p=1/3 -> 2/3; u=3 p=2/3 -> 1/3
    assert lrs == pytest.approx([0.1, 0.2, 0.2 * 2 / 3, 0.2 / 3])


def test_stream_is_a_seeded_permutation_per_epoch():
    n = 7
    e0, e1 = epoch_permutation(n, 3, 0), epoch_permutation(n, 3, 1)
    assert sorted(e0) == list(range(n)) and sorted(e1) == list(range(n))
    assert e0 != e1  # a new order every epoch
    assert e0 == epoch_permutation(n, 3, 0)  # and the same order for the same (seed, epoch)
    assert e0 != epoch_permutation(n, 4, 0)
    # positions 5..9 straddle the epoch boundary
    assert stream_indices(n, 3, 5, 5) == [e0[5], e0[6], e1[0], e1[1], e1[2]]


def test_epochs_give_max_steps(tmp_path):
    loop = TrainLoop(loop_cfg(tmp_path, max_steps=None, epochs=2.0, micro_batch_size=2, grad_accum_steps=2),
                     OptimConfig(), ToyModel(), make_data(10), collate, token_sq_error_step)  # fmt: skip
    assert loop.max_steps == 5  # floor(2 * 10 / 4)
    with pytest.raises(ConfigError, match=r"loop\.epochs"):
        TrainLoop(loop_cfg(tmp_path / "b", max_steps=None, epochs=1.0, micro_batch_size=16), OptimConfig(),
                  ToyModel(), make_data(10), collate, token_sq_error_step)  # fmt: skip


# ----------------------------------------------------------------------------- accumulation


def sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.1)


def run_split(tmp_path, micro, accum, optimizer_fn=sgd, steps=1, optim=None):
    model = ToyModel(seed=4)
    cfg = loop_cfg(
        tmp_path / f"{micro}x{accum}", max_steps=steps, micro_batch_size=micro, grad_accum_steps=accum
    )
    TrainLoop(cfg, optim or OptimConfig(max_grad_norm=0.0, schedule="constant"), model, make_data(8, seed=2),
              collate, token_sq_error_step, optimizer_fn=optimizer_fn).run()  # fmt: skip
    return params_of(model)


def test_grad_accumulation_matches_the_large_batch_and_mean_of_means_does_not(tmp_path):
    """One SGD step (lr 0.1) on 8 examples of 1..7 tokens (unequal weights).

    Expected: theta - 0.1 * grad(sum_i sum_t err_it^2 / sum_i T_i), by autograd on the whole
    batch. Micro-batches 1 x 8, 8 x 1 and 2 x 4 all give it to 1e-6. The mean of the 8
    micro-batch means, (1/8) sum_i (sum_t err_it^2 / T_i), gives a visibly different update:
    a loop that averaged micro-batch means would fail this test.
    """
    data = make_data(8, seed=2)
    model = ToyModel(seed=4)
    theta0 = params_of(model)
    batch = collate(data)
    out = token_sq_error_step(model, batch, None)
    grads = torch.autograd.grad(
        out.losses.sum() / out.weights.sum(), list(model.parameters()), retain_graph=True
    )
    expected = {n: theta0[n] - 0.1 * g for n, g in zip(theta0, grads)}
    mean_of_means = out.losses / out.weights  # (8,) per-example token means = 8 micro-batches of 1
    grads_mm = torch.autograd.grad(mean_of_means.mean(), list(model.parameters()))
    wrong = {n: theta0[n] - 0.1 * g for n, g in zip(theta0, grads_mm)}

    def close(a, b):
        return all(torch.allclose(a[n], b[n], atol=1e-6, rtol=0) for n in a)

    for micro, accum in ((8, 1), (1, 8), (2, 4)):
        got = run_split(tmp_path, micro, accum)
        assert close(got, expected), (micro, accum)
    assert not close(wrong, expected)
    assert max((wrong[n] - expected[n]).abs().max().item() for n in expected) > 1e-3


def test_grad_accumulation_invariance_with_adamw_over_several_steps(tmp_path):
    optim = OptimConfig(lr=0.05, weight_decay=0.1, max_grad_norm=0.5, warmup_steps=1)
    a = run_split(tmp_path, 8, 1, optimizer_fn=None, steps=3, optim=optim)
    b = run_split(tmp_path, 1, 8, optimizer_fn=None, steps=3, optim=optim)
    assert all(torch.allclose(a[n], b[n], atol=1e-6, rtol=0) for n in a)
    assert any(not torch.equal(a[n], ToyModel(seed=4).state_dict()[n]) for n in a)  # it did train


def test_logged_metrics_are_token_weighted_over_the_global_batch(tmp_path):
    """The step's loss and abs_err are global token means: sum over tokens / 32 tokens."""
    data = make_data(8, seed=2)
    model = ToyModel(seed=4)
    with torch.no_grad():
        out = token_sq_error_step(model, collate(data), None)
    tokens = out.weights.sum().item()
    assert tokens == 32  # lengths 1 + (5 i + 3) mod 7 = 4 2 7 5 3 1 6 4
    loop = TrainLoop(loop_cfg(tmp_path, micro_batch_size=2, grad_accum_steps=4), OptimConfig(), model, data,
                     collate, token_sq_error_step)  # fmt: skip
    result = loop.run()
    assert result.train_metrics["loss"] == pytest.approx(out.losses.sum().item() / tokens, rel=1e-6)
    assert result.train_metrics["abs_err"] == pytest.approx(
        out.metrics["abs_err"][0].sum().item() / tokens, rel=1e-6
    )


# ----------------------------------------------------------------------------- evaluation


def test_evaluation_never_changes_the_training_run(tmp_path):
    """Dropout, numpy and python RNG are used by training; evaluating every step must not shift them."""

    def train(eval_every, sub):
        model = ToyModel(dropout=0.3, seed=1)
        step = NoisyStep(model)
        cfg = loop_cfg(
            tmp_path / sub, max_steps=4, micro_batch_size=3, eval_every=eval_every, eval_at_end=False
        )
        TrainLoop(cfg, OptimConfig(lr=0.05), model, make_data(12), collate, step, eval_data=make_data(5, seed=7),
                  eval_fn=NoisyStep(model)).run()  # fmt: skip
        return params_of(model)

    a, b = train(0, "a"), train(1, "b")
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_eval_metrics_and_outputs_in_dataset_order(tmp_path):
    eval_data = make_data(7, seed=11)
    model = ToyModel(seed=2)

    def eval_fn(model, batch, ctx):
        out = token_sq_error_step(model, batch, ctx)
        out.outputs = {"first_pred": model(batch["x"])[:, 0], "index": torch.tensor(ctx.indices)}
        return out

    seen = {}

    def summary(metrics, outputs):
        seen.update(outputs)
        return {"n": float(len(outputs["index"]))}

    cfg = loop_cfg(tmp_path, max_steps=1, eval_batch_size=3)
    opt = OptimConfig(lr=1e-9)  # the eval sees (almost exactly) the initial weights
    result = TrainLoop(cfg, opt, model, make_data(8), collate, token_sq_error_step, eval_data=eval_data,
                       eval_fn=eval_fn, eval_summary=summary).run()  # fmt: skip
    with torch.no_grad():
        full = token_sq_error_step(model, collate(eval_data), None)
        first = torch.stack([model(e["x"][None])[0, 0] for e in eval_data])
    assert result.eval_metrics["loss"] == pytest.approx(
        full.losses.sum().item() / full.weights.sum().item(), rel=1e-6
    )
    assert result.eval_metrics["n"] == 7.0
    assert torch.equal(seen["index"], torch.arange(7))
    assert torch.allclose(seen["first_pred"], first, atol=1e-6)
    records = [json.loads(x) for x in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert [r["split"] for r in records] == ["train", "eval"]


# ----------------------------------------------------------------------------- NaN / inf


class Poisoned:
    """The toy step, with a NaN loss (or a NaN gradient under a finite loss) at chosen steps."""

    def __init__(self, is_bad, kind="loss"):
        self.is_bad, self.kind = is_bad, kind

    def __call__(self, model, batch, ctx):
        out = token_sq_error_step(model, batch, ctx)
        if self.is_bad(ctx.step):
            p = next(model.parameters())
            if self.kind == "loss":
                out.losses = out.losses * float("nan")
            else:  # sqrt at 0: value 0, gradient 0 * inf = NaN
                out.losses = out.losses + torch.sqrt(p.sum() * 0.0)
        return out


def test_nonfinite_steps_are_skipped_and_counted(tmp_path):
    """Steps 1 and 2 are poisoned: the run equals a run whose step 1 and 2 did not exist.

    Skipped steps consume their data but change neither weights, optimiser nor schedule;
    so the final weights after steps {0, 3} equal those of a clean run over the same
    batches 0 and 3 -- which we check by poisoning the loss and the gradient alike.
    """
    results = {}
    for kind in ("loss", "grad"):
        model = ToyModel(seed=3)
        with pytest.warns(UserWarning, match="step skipped"):
            res = TrainLoop(loop_cfg(tmp_path / kind, max_steps=4, micro_batch_size=2), OptimConfig(lr=0.05),
                            model, make_data(8), collate, Poisoned(lambda s: s in (1, 2), kind)).run()  # fmt: skip
        assert (res.step, res.updates, res.nonfinite_steps) == (4, 2, 2)
        assert all(torch.isfinite(p).all() for p in model.parameters())
        results[kind] = params_of(model)
        logged = [json.loads(x) for x in (tmp_path / kind / METRICS_FILE).read_text().splitlines()]
        assert [r["nonfinite_steps"] for r in logged] == [0, 1, 2, 2]
        assert [math.isnan(r["loss"]) for r in logged] == [False, True, True, False]
    assert all(torch.equal(results["loss"][n], results["grad"][n]) for n in results["loss"])
    assert any(not torch.equal(results["loss"][n], ToyModel(seed=3).state_dict()[n]) for n in results["loss"])


def test_too_many_nonfinite_in_a_row_stops_with_last_good_checkpoint(tmp_path):
    model = ToyModel(seed=3)
    cfg = loop_cfg(tmp_path, max_steps=20, micro_batch_size=2, save_every=2, max_nonfinite_in_a_row=3)
    step = Poisoned(lambda s: s >= 4)
    loop = TrainLoop(cfg, OptimConfig(lr=0.05), model, make_data(8), collate, step)
    with pytest.warns(UserWarning), pytest.raises(NonFiniteLossError, match=r"3 steps in a row.*ckpt-6"):
        loop.run()
    assert loop.step == 7  # steps 4, 5, 6 were skipped; stopped after the third
    weights_after_step_4 = params_of(model)  # nothing changed since step 4
    good = ckpt_lib.load_checkpoint(ckpt_lib.find_latest(tmp_path))
    assert good.step == 6 and good.trainer_state["updates"] == 4
    assert all(torch.equal(good.model_state[n], weights_after_step_4[n]) for n in weights_after_step_4)
    assert all(torch.isfinite(t).all() for t in good.model_state.values())


# ----------------------------------------------------------------------------- output directory


def never_called(model, batch, ctx):
    raise AssertionError("training started")


def test_unwritable_output_dir_fails_at_start(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    cases = [blocker / "run", Path("/proc/self/nlhf-run")]
    if os.geteuid() != 0:  # permission bits do not stop root
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        cases.append(ro)
    for out in cases:
        with pytest.raises(RunDirError, match=str(out).replace(".", r"\.")):
            TrainLoop(loop_cfg(out), OptimConfig(), ToyModel(), make_data(8), collate, never_called)


def test_too_little_free_disk_fails_at_start(tmp_path):
    with pytest.raises(RunDirError, match="MiB free"):
        TrainLoop(loop_cfg(tmp_path, min_free_disk_mb=10**12), OptimConfig(), ToyModel(), make_data(8),
                  collate, never_called)  # fmt: skip


def test_old_checkpoints_are_not_silently_mixed_in(tmp_path):
    cfg = loop_cfg(tmp_path, max_steps=2, micro_batch_size=2, save_every=1)
    TrainLoop(cfg, OptimConfig(), ToyModel(), make_data(8), collate, token_sq_error_step).run()
    with pytest.raises(RunDirError, match="already holds checkpoints"):
        TrainLoop(cfg, OptimConfig(), ToyModel(), make_data(8), collate, never_called)
    over = loop_cfg(tmp_path, max_steps=1, micro_batch_size=2, save_every=1, overwrite=True)
    TrainLoop(over, OptimConfig(), ToyModel(), make_data(8), collate, token_sq_error_step).run()
    assert [s for s, _ in ckpt_lib.list_checkpoints(tmp_path)] == [1]


def test_resume_refuses_a_different_data_stream(tmp_path):
    cfg = loop_cfg(tmp_path, max_steps=2, micro_batch_size=2, save_every=1)
    TrainLoop(cfg, OptimConfig(), ToyModel(), make_data(8), collate, token_sq_error_step).run()
    again = loop_cfg(tmp_path, max_steps=3, micro_batch_size=2, save_every=1, resume=True)
    loop = TrainLoop(again, OptimConfig(), ToyModel(), make_data(9), collate, token_sq_error_step)
    with pytest.raises(RunDirError, match="n_train=8"):
        loop.run()
