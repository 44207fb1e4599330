"""The toy training under 1 or N processes (``torchrun``), for the DDP invariance test.

Usage: ``[torchrun --nproc_per_node N] train_ddp_script.py OUT_DIR MICRO_BATCH``. Plain SGD
without clipping, so the update shows the gradient's scale as well as its direction (AdamW
would hide a wrong normaliser). With ``MEAN_OF_MEANS=1`` the step returns each micro-batch's
token MEAN with weight 1 (the negative control: the loop then averages micro-batch and rank
means). Writes ``OUT_DIR/final.pt`` (parameters) and ``OUT_DIR/result.json`` from the main process.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_toy import ToyModel, collate, make_data, token_sq_error_step  # noqa: E402

from nlhf.train.config import LoopConfig, OptimConfig  # noqa: E402
from nlhf.train.loop import TrainLoop  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    out, micro = sys.argv[1], int(sys.argv[2])
    step = token_sq_error_step
    if os.environ.get("MEAN_OF_MEANS") == "1":

        def step(model, batch, ctx):
            out = token_sq_error_step(model, batch, ctx)
            n = out.weights.shape[0]
            out.losses = out.losses / out.weights.sum()  # (B,) sums to the micro-batch mean
            out.weights = torch.full_like(out.weights, 1.0 / n)  # (B,) sums to 1 per micro-batch
            return out

    cfg = LoopConfig(
        max_steps=3, micro_batch_size=micro, grad_accum_steps=2, out_dir=out, progress=False,
        tensorboard=False, min_free_disk_mb=0, log_every=1, save_every=2, eval_every=2,
    )  # fmt: skip
    loop = TrainLoop(cfg, OptimConfig(max_grad_norm=0.0, schedule="constant"), ToyModel(seed=4),
                     make_data(24, seed=2), collate, step, eval_data=make_data(7, seed=3),
                     optimizer_fn=lambda m: torch.optim.SGD(m.parameters(), lr=0.1))  # fmt: skip
    result = loop.run()
    if loop.accelerator.is_main_process:
        model = loop.accelerator.unwrap_model(loop.model)
        torch.save({n: p.detach().clone() for n, p in model.state_dict().items()}, Path(out) / "final.pt")
        record = {"processes": loop.world, "train": result.train_metrics, "eval": result.eval_metrics}
        (Path(out) / "result.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main()
