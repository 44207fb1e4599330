"""Run the toy training as a separate process, optionally killing itself with SIGKILL.

Usage: ``python train_resume_script.py OUT_DIR MAX_STEPS RESUME(0|1)``. Environment:
``KILL_AT_STEP=k`` and ``KILL_MODE``:

* ``step``: SIGKILL in the middle of step k (after its first micro-batch's backward), i.e.
  between two checkpoints;
* ``checkpoint``: SIGKILL while writing ``ckpt-k``: after its RNG and weight files are in
  ``ckpt-k.tmp/``, before the optimiser file, the state file and the rename.

At the end it writes the final parameters to ``OUT_DIR/final.pt``.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_toy import NoisyStep, ToyModel, collate, make_data  # noqa: E402

from nlhf.train import checkpoint as ckpt_lib  # noqa: E402
from nlhf.train.config import LoopConfig, OptimConfig  # noqa: E402
from nlhf.train.loop import TrainLoop  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    out_dir, max_steps, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
    kill_at = int(os.environ.get("KILL_AT_STEP", "-1"))
    mode = os.environ.get("KILL_MODE", "step")

    if mode == "checkpoint" and kill_at >= 0:
        real_write = ckpt_lib._write_file

        def write_then_die(path, write):
            if path.parent.name == f"ckpt-{kill_at}.tmp" and path.name == "optimizer.pt":
                os.kill(os.getpid(), signal.SIGKILL)
            real_write(path, write)

        ckpt_lib._write_file = write_then_die

    model = ToyModel(dropout=0.2, seed=1)
    step = NoisyStep(model)

    def step_fn(model, batch, ctx):
        if mode == "step" and ctx.step == kill_at and ctx.micro_step == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return step(model, batch, ctx)

    loop = LoopConfig(
        seed=3,
        max_steps=max_steps,
        micro_batch_size=3,
        grad_accum_steps=2,
        save_every=4,
        keep_last=2,
        log_every=1,
        out_dir=out_dir,
        resume=resume,
        progress=False,
        tensorboard=False,
        min_free_disk_mb=1,
    )
    optim = OptimConfig(lr=0.05, weight_decay=0.01, warmup_steps=2, schedule="cosine", max_grad_norm=0.5)
    data = make_data(20, seed=5)  # 20 examples, global batch 6: steps straddle epochs
    result = TrainLoop(
        loop, optim, model, data, collate, step_fn, eval_data=make_data(5, seed=9), stateful={"noisy": step}
    ).run()
    assert result.step == max_steps
    torch.save({n: p.detach().clone() for n, p in model.state_dict().items()}, Path(out_dir) / "final.pt")


if __name__ == "__main__":
    main()
