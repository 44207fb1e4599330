"""The iterative trainers (SPPO, INPO, DNO, MPO, mirror prox) for a few steps on the tiny Llama: the runs
the distributed test shares with ``trainer_runs.run_trainer`` (imported by ``train_ddp_script.py``; not a
test module).

:func:`run_iterative` mirrors :func:`trainer_runs.run_trainer`'s online branch: the EOS-prone tiny
Llama, the ``shorter_is_better`` judge, plain SGD without clipping (``sgd=True``), one outer
iteration per step (``steps_per_iteration`` 1; 2 for mirror prox, whose iteration has two
halves) so pi_t (and MPO's magnet, mirror prox's pi_{t+1/2}) is refreshed inside the run, and
``negative="rank_means"`` (every micro-batch's token-weighted mean loss with weight 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from trainer_runs import (
    N_EVAL,
    PROMPTS,
    _Patches,
    counting,
    eos_prone_tiny,
    rank_mean_step,
    shorter_is_better,
)

ITERATIVE = ("sppo", "inpo", "dno", "mpo", "mirror_prox")


def _config(name: str, common: dict[str, Any]) -> tuple[Any, Any]:
    """``(config, run function)`` of an iterative trainer, with the settings of the distributed test."""
    from nlhf.train import dno, inpo, mirror_prox, mpo, sppo

    if name == "sppo":
        return sppo.SPPOConfig(
            eta=2.0, responses_per_prompt=3, steps_per_iteration=1, **common
        ), sppo.run_sppo
    if name == "inpo":
        return inpo.INPOConfig(eta=2.0, tau=0.2, steps_per_iteration=1, **common), inpo.run_inpo
    if name == "dno":
        return dno.DNOConfig(beta=0.5, responses_per_prompt=3, steps_per_iteration=1, **common), dno.run_dno
    if name == "mpo":
        return mpo.MPOConfig(eta=2.0, tau=0.2, magnet_every=1, steps_per_iteration=1, **common), mpo.run_mpo
    cfg = mirror_prox.MirrorProxConfig(eta=2.0, tau=0.2, steps_per_iteration=2, **common)
    return cfg, mirror_prox.run_mirror_prox


def run_iterative(name: str, root: str | Path, out: str | Path, *, micro: int, max_steps: int = 2,
                  negative: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Train ``name`` with plain SGD; returns what :func:`trainer_runs.run_trainer` returns."""
    from nlhf.judges import CallableJudge
    from nlhf.sampling import SamplingConfig
    from nlhf.train import loop as loop_mod
    from nlhf.train.config import LoopConfig, OptimConfig

    if name not in ITERATIVE:
        raise ValueError(f"unknown iterative trainer {name!r}; one of {ITERATIVE}")
    patches, record, lr = _Patches(), {}, 0.05
    base_loop = loop_mod.TrainLoop

    class RecordingLoop(base_loop):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if negative == "rank_means":
                self.step_fn = rank_mean_step(self.step_fn)
            record["loop"] = self
            model = self.accelerator.unwrap_model(self.model)
            record["initial"] = {n: p.detach().float().cpu().clone() for n, p in model.named_parameters()
                                 if p.requires_grad}  # fmt: skip

    def sgd_optimizer(model: Any, cfg: Any = None, fused: Any = None) -> Any:
        return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)

    patches.set(loop_mod, "make_optimizer", sgd_optimizer)
    patches.set(loop_mod, "TrainLoop", RecordingLoop)
    loop = LoopConfig(max_steps=max_steps, micro_batch_size=micro, log_every=1, progress=False, tensorboard=False,
                      min_free_disk_mb=1)  # fmt: skip
    common = dict(out=str(out), sampling=SamplingConfig(max_new_tokens=8), loop=loop,
                  optim=OptimConfig(lr=lr, max_grad_norm=0.0, schedule="constant"))  # fmt: skip
    try:
        cfg, run = _config(name, common)
        model, tok = eos_prone_tiny()
        judge = CallableJudge(counting(shorter_is_better, record), batched=True, name="shorter_is_better")
        run(
            cfg, model=model, tokenizer=tok, judge=judge, train_prompts=PROMPTS, eval_prompts=PROMPTS[:N_EVAL]
        )
    finally:
        patches.undo()
    trained = record["loop"]
    model = trained.accelerator.unwrap_model(trained.model)
    params = {n: p.detach().float().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
    return {
        "params": params,
        "train": dict(trained.train_metrics),
        "eval": dict(trained.eval_metrics),
        "processes": trained.world,
        "updates": trained.updates,
        "steps": trained.step,
        "update": max(float((params[n] - record["initial"][n]).abs().max()) for n in params),
        "judge_rows": record.get("judge_rows", []),
    }
