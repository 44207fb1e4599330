"""The shared loop's evaluation (:meth:`nlhf.train.loop.TrainLoop.evaluate`), out of the class.

Functions of the loop object, like :mod:`nlhf.train.loop_checkpoint`: they read its
accelerator, model, data and step function, and store the last metrics on it.
"""

from __future__ import annotations

from typing import Any

from nlhf.train import checkpoint as ckpt_lib
from nlhf.train.metrics_log import accumulate, weighted_means
from nlhf.train.step_api import StepContext


def evaluate_loop(loop: Any) -> dict[str, float]:
    """``loop.evaluate()``: metrics on ``loop.eval_data``: weighted means over the whole set, plus ``eval_summary``.

    Runs without gradients in eval mode, with the RNG states saved and restored around
    it, so evaluating (or not) never changes the training run. Each process takes every
    W-th example; sums are all-reduced and per-example outputs gathered back into
    dataset order.
    """
    import torch
    from accelerate.utils import send_to_device

    acc = loop.accelerator
    assert loop.eval_data is not None
    # DDP: the unwrapped model (replicated weights; no collectives inside eval forwards). FSDP: the
    # wrapped one (its forwards gather the shards: collective), in lockstep: every process runs the
    # same number of batches, a process whose shard is shorter repeats an example and discards it.
    model = loop.model if loop.is_fsdp else acc.unwrap_model(loop.model)
    rng = ckpt_lib.capture_rng_state()
    was_training = model.training
    model.eval()
    local: dict[str, Any] = {
        "loss": torch.zeros((), dtype=torch.float64),
        "weight": torch.zeros((), dtype=torch.float64),
    }
    outputs: dict[str, list[Any]] = {}
    shard = list(range(acc.process_index, len(loop.eval_data), loop.world))
    b = loop.cfg.eval_micro_batch_size
    longest = -(-len(loop.eval_data) // loop.world)  # the first process's shard
    starts = range(0, longest if loop.is_fsdp else len(shard), b)
    with torch.no_grad():
        for start in starts:
            indices = shard[start : start + b]
            if not indices:  # FSDP lockstep: a forward the other processes need, then discarded
                with acc.autocast():
                    loop.eval_fn(model, send_to_device(loop.collate_fn([loop.eval_data[0]]), acc.device),
                                 StepContext(loop.step, 0, (0,), (0,), acc.process_index, training=False))  # fmt: skip
                continue
            batch = send_to_device(loop.collate_fn([loop.eval_data[i] for i in indices]), acc.device)
            ctx = StepContext(loop.step, 0, tuple(indices), tuple(indices), acc.process_index, training=False)
            with acc.autocast():
                out = loop.eval_fn(model, batch, ctx)
            accumulate(local, "loss", out.losses)
            accumulate(local, "weight", out.weights)
            for name, (values, weights) in out.metrics.items():
                accumulate(local, name, values)
                accumulate(local, f"{name}:weight", weights)
            for name, value in out.outputs.items():
                outputs.setdefault(name, []).append(value.detach())
    model.train(was_training)
    ckpt_lib.restore_rng_state(rng)

    totals = loop._reduce_sums(local)
    metrics = weighted_means(totals)
    gathered = {name: gather_in_order(loop, torch.cat(parts)) for name, parts in outputs.items()}
    if loop.eval_summary is not None:
        metrics.update(loop.eval_summary(dict(metrics), gathered))
    loop.eval_metrics, loop.eval_outputs = metrics, gathered
    return metrics


def gather_in_order(loop: Any, local: Any) -> Any:
    """Gather per-example outputs (process r holds examples r, r + W, ...) into dataset order."""
    import torch

    if loop.world == 1:
        return local.cpu()
    acc = loop.accelerator
    n = len(loop.eval_data)  # type: ignore[arg-type]
    per_rank = -(-n // loop.world)  # ceil
    padded = torch.zeros((per_rank, *local.shape[1:]), dtype=local.dtype, device=acc.device)
    padded[: local.shape[0]] = local
    allv = acc.gather(padded).reshape(loop.world, per_rank, *local.shape[1:])  # (W, per_rank, ...)
    order = allv.transpose(0, 1).reshape(
        loop.world * per_rank, *local.shape[1:]
    )  # example r + W k at k W + r
    return order[:n].cpu()
