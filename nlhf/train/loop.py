"""The shared training loop: accelerate plumbing around a trainer's step function.

Every trainer in ``nlhf.train`` (preference/reward models, offline DPO/IPO, the online
Nash-MD family, RLHF) is a short file that builds a model, a collate function and a
*step function*, and hands them to :class:`TrainLoop`. Composition, not inheritance: the
loop knows nothing about preferences or policies.

A step function maps one micro-batch to per-example losses and weights::

    def step_fn(model, batch, ctx: StepContext) -> StepOutput:
        ...
        return StepOutput(losses=per_example_loss_sums,   # (B,)
                          weights=per_example_weights,    # (B,) tokens, or 1 per pair
                          metrics={"accuracy": (correct, ones)})

Loss normalisation (the reason for this shape). One optimiser step sees a *global batch*
spread over ``grad_accum_steps`` micro-batches on each of ``num_processes`` ranks. Its
loss is ``sum of all per-example losses / sum of all weights`` over the whole global
batch, never a mean of micro-batch (or rank) means, which would weight a short
micro-batch like a long one. The total weight is only known after the last micro-batch,
so the loop back-propagates each micro-batch's loss *sum* times one constant ``c`` (the
same for all micro-batches and ranks of the step: ``1 / (global weight of micro-batch 0 x
grad_accum_steps)``, so gradients have the size of a mean, as fp16 loss scaling expects),
adds up the weights, all-reduces the total weight across ranks, and then rescales the
accumulated gradients by ``num_processes / (c x total_weight)`` (DDP has already averaged
them over ranks): exactly the gradient of the global weighted mean. Metrics are reduced
the same way: each is a ``(sum, weight)`` pair summed over micro-batches and ranks before
dividing.

Processes: DDP (``accelerate launch`` / ``torchrun``) and FSDP are supported: FSDP
checkpoints go through accelerate's FSDP writers (sharded optimiser state), and evaluation
calls the FSDP-wrapped model in lockstep. Limits: the gradient rescaling needs the
gradients after backward, which DeepSpeed keeps inside its engine, so under DeepSpeed
(not yet run; ``configs/accelerate/deepspeed_zero*.yaml``) the provisional normaliser
stays (exact when every micro-batch of a step has the same total weight), clipping is
DeepSpeed's and ``grad_accum_steps`` must be 1. Checkpoints under DeepSpeed store the
unwrapped module's weights and optimiser state like DDP (ZeRO-3's sharded weights: not
supported).

Here: accelerate's ``Accelerator`` (mixed precision only when a GPU is present), gradient
accumulation, the global normalisation above, clipping, NaN/inf detection (the step is
skipped and counted; too many in a row stop the run, the last good checkpoint intact) and
evaluation every N steps. Beside it, each in its own module: AdamW and the warm-up /
cosine / linear schedule (:mod:`nlhf.train.optim`); the seeded data stream read by
position (:mod:`nlhf.train.data_stream`); the weighted metrics, console lines,
``metrics.jsonl``, TensorBoard and the trackers of ``loop.report_to``
(:mod:`nlhf.train.metrics_log`); atomic checkpoints every N steps with exact resume (:mod:`nlhf.train.loop_checkpoint` over
:mod:`nlhf.train.checkpoint`); the output directory, checked (writable, enough free disk)
before anything is trained (:mod:`nlhf.train.out_dir`); the evaluation pass
(:mod:`nlhf.train.loop_eval`); the step function's types, :class:`StepOutput` and
:class:`StepContext` (:mod:`nlhf.train.step_api`, re-exported here); the step callbacks
``on_step(step, metrics) -> bool``, True ending the run after that step (:mod:`nlhf.train.callbacks`).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from nlhf.config import ConfigError
from nlhf.train import checkpoint as ckpt_lib
from nlhf.train.callbacks import active_callbacks, as_callbacks, loop_should_stop
from nlhf.train.config import LoopConfig, OptimConfig
from nlhf.train.data_stream import epoch_permutation, micro_batch_positions, run_length, stream_indices
from nlhf.train.loop_checkpoint import loop_trainer_state, restore_loop, save_loop_checkpoint
from nlhf.train.loop_eval import evaluate_loop
from nlhf.train.metrics_log import METRICS_FILE, MetricsLogger, MetricsWindow, accumulate, start_trackers
from nlhf.train.optim import lr_factor, make_optimizer, make_scheduler
from nlhf.train.out_dir import RunDirError, check_out_dir, prepare_out_dir
from nlhf.train.step_api import Stateful, StepContext, StepFn, StepOutput, TrainResult


class NonFiniteLossError(RuntimeError):
    """Too many optimiser steps in a row had a NaN/inf loss or gradient."""


# ----------------------------------------------------------------------------- components


def make_accelerator(cfg: LoopConfig) -> Any:
    """An ``Accelerator``: GPU and mixed precision when available, otherwise fp32 on CPU.

    Mixed precision is never applied on CPU (it is slow there and bf16 may be emulated); a
    request for it is downgraded with a warning. The scheduler is *not* stepped by
    accelerate (``step_scheduler_with_optimizer=False``): the loop steps it once per
    successful update, whatever the number of processes. The trackers of ``loop.report_to``
    other than TensorBoard (which :class:`MetricsLogger` writes itself) go to ``log_with``.
    """
    import torch
    from accelerate import Accelerator

    has_gpu = torch.cuda.is_available()
    if cfg.device == "cuda" and not has_gpu:
        raise ConfigError("loop.device: 'cuda' requested but no CUDA GPU is available")
    use_gpu = has_gpu and cfg.device != "cpu"
    mixed_precision = cfg.mixed_precision
    if mixed_precision != "no" and not use_gpu:
        warnings.warn(
            f"loop.mixed_precision={mixed_precision!r} ignored: no GPU in use, training in fp32", stacklevel=2
        )
        mixed_precision = "no"
    log_with = [name for name in cfg.trackers if name != "tensorboard"] or None
    return Accelerator(cpu=not use_gpu, mixed_precision=mixed_precision, step_scheduler_with_optimizer=False,
                       log_with=log_with)  # fmt: skip


# ----------------------------------------------------------------------------- the loop


class TrainLoop:
    """Train ``model`` with ``step_fn`` on ``train_data``; see the module docstring.

    Arguments: ``train_data``/``eval_data`` are sequences of examples (any objects);
    ``collate_fn(list_of_examples) -> batch`` builds a micro-batch (tensors are moved to the
    device by the loop); ``step_fn(model, batch, ctx) -> StepOutput`` runs one micro-batch
    (call ``model(...)``, not other methods, so that DDP synchronises gradients);
    ``eval_fn`` (default: ``step_fn`` under ``no_grad``) may also return per-example
    ``outputs``, gathered in dataset order and handed with the reduced metrics to
    ``eval_summary(metrics, outputs) -> dict`` for whole-set metrics (calibration, plots).
    ``stateful`` objects (``state_dict``/``load_state_dict``) are saved in checkpoints and
    restored on resume. ``run_config`` (any config dataclass) is saved as ``config.yaml``.
    ``optimizer_fn(model)`` replaces the default AdamW of :func:`make_optimizer` (the
    schedule from ``optim`` still applies). ``callbacks``: ``on_step(step, metrics) -> bool``
    functions (True stops the run after that step, as its last; :mod:`nlhf.train.callbacks`);
    default: those of the enclosing :func:`nlhf.train.callbacks.step_callbacks` block.
    """

    def __init__(
        self,
        loop: LoopConfig,
        optim: OptimConfig,
        model: Any,
        train_data: Sequence[Any],
        collate_fn: Callable[[list[Any]], Any],
        step_fn: StepFn,
        *,
        eval_data: Sequence[Any] | None = None,
        eval_fn: StepFn | None = None,
        eval_summary: Callable[[dict[str, float], dict[str, Any]], Mapping[str, float]] | None = None,
        stateful: Mapping[str, Stateful] | None = None,
        run_config: Any = None,
        accelerator: Any = None,
        optimizer_fn: Callable[[Any], Any] | None = None,
        callbacks: Any = None,
    ) -> None:
        self.cfg, self.optim_cfg = loop, optim
        self.callbacks = as_callbacks(callbacks) if callbacks is not None else active_callbacks()
        self.run_config, self.stopped_by_callback = run_config, False
        self.train_data, self.eval_data = train_data, eval_data
        self.collate_fn, self.step_fn = collate_fn, step_fn
        self.eval_fn, self.eval_summary = eval_fn or step_fn, eval_summary
        self.stateful = dict(stateful or {})
        self.out_dir = Path(loop.out_dir)
        self.accelerator = acc = accelerator if accelerator is not None else make_accelerator(loop)
        self.world = acc.num_processes
        if getattr(acc.distributed_type, "name", "") == "DEEPSPEED":
            if loop.grad_accum_steps > 1:
                raise ConfigError(
                    "loop.grad_accum_steps: must be 1 under DeepSpeed (its engine steps at every backward); "
                    "raise loop.micro_batch_size or use DDP / FSDP"
                )
            warnings.warn(
                "DeepSpeed is not yet tested with nlhf: the loss of a step is normalised by the global weight of its "
                "first micro-batch (exact for pair- and prompt-weighted losses with full batches), and clipping and "
                "NaN/inf gradient checks are DeepSpeed's",
                stacklevel=2,
            )

        # Run length, in optimiser steps, from max_steps or epochs.
        self.n_train = len(train_data)
        if self.n_train == 0:
            raise ValueError("the training set is empty")
        self.global_batch = loop.micro_batch_size * loop.grad_accum_steps * self.world
        self.max_steps = run_length(loop.max_steps, loop.epochs, self.n_train, self.global_batch)

        if eval_data is not None and len(eval_data) < self.world:
            raise ValueError(
                f"the eval set has {len(eval_data)} examples, fewer than the {self.world} processes"
            )

        # The output directory, checked before the model is moved or anything trained.
        if acc.is_main_process:
            prepare_out_dir(self.out_dir, loop, model, run_config)
        acc.wait_for_everyone()

        # Seed every process identically, for the randomness of the steps (dropout, sampling).
        # Seed before building the model as well (fit.py does), so --resume rebuilds it exactly.
        from accelerate.utils import set_seed

        set_seed(loop.seed)

        # Model, optimiser, schedule. The scheduler stays outside accelerate (see make_accelerator).
        self.optimizer = optimizer_fn(model) if optimizer_fn is not None else make_optimizer(model, optim)
        self.model, self.optimizer = acc.prepare(model, self.optimizer)
        self.scheduler = make_scheduler(self.optimizer, optim, self.max_steps)

        # Counters (all saved in checkpoints).
        self.step = 0  # optimiser steps attempted
        self.data_position = 0  # examples consumed from the data stream (all processes)
        self.updates = 0  # steps that changed the weights
        self.nonfinite_steps = 0
        self.nonfinite_in_a_row = 0
        self.zero_weight_steps = 0
        self.last_checkpoint: Path | None = None
        self.train_metrics: dict[str, float] = {}  # the last logged window
        self.eval_metrics: dict[str, float] = {}
        self.eval_outputs: dict[str, Any] = {}

    # --------------------------------------------------------------- the run, top to bottom

    def run(self) -> TrainResult:
        """Train for ``max_steps`` optimiser steps (continuing a checkpoint if ``resume``)."""
        cfg = self.cfg

        # 1. Resume: weights, optimiser, schedule, RNG, counters and data position.
        resumed_from = self._restore() if cfg.resume else None
        logger, bar = self._open_logs(resumed_from)

        window = MetricsWindow()  # weighted sums since the last log line
        train_metrics: dict[str, float] = {}
        started, start_step = time.perf_counter(), self.step
        try:
            while self.step < self.max_steps:
                # 2. One optimiser step: micro-batches, backward, normalise, clip, update.
                totals, grad_norm, skipped = self._train_step()
                self.step += 1
                self.data_position += self.global_batch
                window.add(totals, grad_norm, skipped)
                bar.update(1)
                if totals["weight"] > 0:
                    bar.set_postfix(loss=f"{totals['loss'] / totals['weight']:.4f}", refresh=False)

                # 3. Stop when too many steps in a row were NaN/inf (weights untouched by them).
                self._check_nonfinite_run()

                # 4. Evaluate every eval_every steps; the callbacks (True: this step is the last one).
                due = self.eval_data is not None and cfg.eval_every and self.step % cfg.eval_every == 0
                evaluated = self.evaluate() if due else None
                stop = loop_should_stop(self, totals, grad_norm, skipped, evaluated)
                at_end = self.step == self.max_steps or stop

                # 5. Log the weighted means of the window.
                if self.step % cfg.log_every == 0 or at_end:
                    train_metrics = self._window_metrics(window, started, start_step)
                    logger.log(self.step, "train", train_metrics)
                    self.train_metrics = dict(train_metrics)
                    window = MetricsWindow()

                # 6. The evaluation of step 4, or the one at the end.
                if evaluated is None and self.eval_data is not None and at_end and cfg.eval_at_end:
                    evaluated = self.evaluate()
                if evaluated is not None:
                    logger.log(self.step, "eval", evaluated)

                # 7. Checkpoint every save_every steps (and at the end).
                if cfg.save_every and (self.step % cfg.save_every == 0 or at_end):
                    self.save_checkpoint()
                if stop:
                    self.stopped_by_callback = True
                    logger.console(f"stopped by a callback after step {self.step} of {self.max_steps}")
                    break
        finally:
            bar.close()
            logger.close()
        return TrainResult(
            step=self.step,
            updates=self.updates,
            nonfinite_steps=self.nonfinite_steps,
            train_metrics=train_metrics,
            eval_metrics=dict(self.eval_metrics),
            eval_outputs=dict(self.eval_outputs),
            checkpoint=self.last_checkpoint,
        )

    def _open_logs(self, resumed_from: Path | None) -> tuple[MetricsLogger, Any]:
        """The metrics logger (JSONL / TensorBoard / console) and the tqdm bar, both on the main process only."""
        from tqdm.auto import tqdm

        acc, cfg = self.accelerator, self.cfg
        logger = MetricsLogger(
            self.out_dir,
            enabled=acc.is_main_process,
            tensorboard="tensorboard" in cfg.trackers,
            resume_step=self.step if resumed_from is not None else None,
            accelerator=acc,
        )
        start_trackers(acc, self.out_dir, self.run_config)
        bar = tqdm(
            total=self.max_steps,
            initial=self.step,
            desc="train",
            disable=not (acc.is_main_process and cfg.progress),
            dynamic_ncols=True,
        )
        if not bar.disable:
            logger.console = bar.write
        if resumed_from is not None:
            logger.console(f"resumed from {resumed_from} at step {self.step}")
        return logger, bar

    def _check_nonfinite_run(self) -> None:
        """Raise :class:`NonFiniteLossError` when ``max_nonfinite_in_a_row`` steps in a row were NaN/inf."""
        if self.nonfinite_in_a_row >= self.cfg.max_nonfinite_in_a_row:
            last = ckpt_lib.find_latest(self.out_dir)
            raise NonFiniteLossError(
                f"stopping at step {self.step}: {self.nonfinite_in_a_row} steps in a row had a "
                f"NaN/inf loss or gradient ({self.nonfinite_steps} in total; all skipped, weights "
                f"not updated by them). Last good checkpoint: {last or 'none'}. Lower optim.lr, "
                "check the data, or raise loop.max_nonfinite_in_a_row."
            )

    def _window_metrics(self, window: MetricsWindow, started: float, start_step: int) -> dict[str, float]:
        """The window's weighted means, with the lr, the NaN/inf count and the examples per second of this run."""
        elapsed = time.perf_counter() - started
        metrics = window.means()
        metrics.update(
            lr=self.lr_used,
            nonfinite_steps=self.nonfinite_steps,
            examples_per_s=(self.step - start_step) * self.global_batch / max(elapsed, 1e-9),
        )
        return metrics

    # --------------------------------------------------------------- one optimiser step

    def _micro_batch(self, micro_step: int) -> tuple[Any, StepContext]:
        """This process's share of micro-batch ``micro_step`` of the current step.

        Stream positions: ``P + micro_step * (b * W) + rank * b + [0, b)`` with ``P`` the
        examples consumed by earlier steps, ``b`` the micro-batch size and ``W`` the number
        of processes; the step consumes ``G = b * grad_accum_steps * W`` positions.
        """
        from accelerate.utils import send_to_device

        b = self.cfg.micro_batch_size
        rank = self.accelerator.process_index
        positions = micro_batch_positions(self.data_position, micro_step, b, self.world, rank)
        indices = stream_indices(self.n_train, self.cfg.seed, positions.start, b)
        batch = self.collate_fn([self.train_data[i] for i in indices])
        ctx = StepContext(
            step=self.step,
            micro_step=micro_step,
            indices=tuple(indices),
            positions=tuple(positions),
            process_index=rank,
        )
        return send_to_device(batch, self.accelerator.device), ctx

    def _train_step(self) -> tuple[dict[str, float], float, str | None]:
        """Accumulate, normalise by the global weight, clip and update; returns the totals.

        Returns ``(totals, grad_norm, skip_reason)``: ``totals`` holds the global sums
        ``loss``, ``weight`` and ``<metric>`` / ``<metric>:weight`` over all micro-batches and
        processes; ``skip_reason`` is None when the weights were updated.
        """
        acc, model = self.accelerator, self.model
        model.train()
        self.lr_used = self.optimizer.param_groups[0]["lr"]  # the lr of this step's update

        # (a) Forward/backward every micro-batch on its loss SUM times one constant c per step.
        local, c = self._accumulate_micro_batches()

        # (b) Global sums across processes: one all-reduce of a (K,) vector.
        totals = self._reduce_sums(local)
        total_weight = totals["weight"]

        # (c) Gradients now hold c * sum_r grad(loss_sum_r) / W (DDP averages over W processes):
        #     rescale to grad(sum of all losses) / total_weight, the global weighted mean.
        #     (FSDP's reduce-scatter averages like DDP. DeepSpeed keeps its gradients inside the
        #     engine, and has stepped already: the provisional normaliser c stays; see the docstring.)
        params = list(model.parameters())
        skip = None
        if not math.isfinite(totals["loss"]):
            skip = "nonfinite loss"
        elif total_weight <= 0:
            skip = "zero weight"
        elif not self.is_deepspeed:
            scale = self.world / (c * total_weight)
            for p in params:
                if p.grad is not None:
                    p.grad.mul_(scale)

        # (d) Clip (the returned norm is the pre-clip global norm) and check it is finite.
        grad_norm = float("nan")
        if skip is None and not self.is_deepspeed:  # DeepSpeed clips by its own config
            max_norm = self.optim_cfg.max_grad_norm or float("inf")
            grad_norm = float(acc.clip_grad_norm_(params, max_norm))
            if not math.isfinite(grad_norm) and acc.scaler is None:
                skip = "nonfinite gradient"

        # (e) Update, or skip. A skipped step leaves weights, optimiser and schedule untouched.
        self._update_or_skip(skip)
        return totals, grad_norm, skip

    def _accumulate_micro_batches(self) -> tuple[dict[str, Any], float]:
        """Forward and backward every micro-batch of the step; returns (this process's running sums, c).

        The sums: ``loss``, ``weight`` and ``<metric>`` / ``<metric>:weight``, each a () float64
        tensor; c: the provisional normaliser every micro-batch's loss sum was multiplied by.
        """
        acc, model = self.accelerator, self.model
        # Each micro-batch backward-propagates the SUM of its per-example losses times one constant
        # c per step, the same on every process: 1 / (global weight of micro-batch 0 x
        # grad_accum_steps), a provisional normaliser that gives the gradients the size of a mean
        # (what fp16 loss scaling expects); _train_step's (c) replaces it by the exact one.
        # Gradients are synchronised across processes only on the last micro-batch.
        local: dict[str, Any] = {}  # name -> () float64 running sum on this process
        c = 1.0
        for micro_step in range(self.cfg.grad_accum_steps):
            batch, ctx = self._micro_batch(micro_step)
            last = micro_step == self.cfg.grad_accum_steps - 1
            with nullcontext() if last else acc.no_sync(model):
                with acc.autocast():
                    out = self.step_fn(model, batch, ctx)
                loss_sum = out.losses.sum()  # () sum over the micro-batch's examples
                if micro_step == 0:
                    first: dict[str, Any] = {}
                    accumulate(first, "weight", out.weights)
                    estimate = self._reduce_sums(first)["weight"] * self.cfg.grad_accum_steps
                    c = 1.0 / estimate if estimate > 0 else 1.0
                acc.backward(loss_sum * c)
            accumulate(local, "loss", loss_sum)
            accumulate(local, "weight", out.weights)
            for name, (values, weights) in out.metrics.items():
                accumulate(local, name, values)
                accumulate(local, f"{name}:weight", weights)
        return local, c

    def _update_or_skip(self, skip: str | None) -> None:
        """Step the optimiser and schedule (``skip`` None), else count the skipped step; then zero the gradients."""
        if skip is None:
            self.optimizer.step()
            if not self.optimizer.step_was_skipped:  # an fp16 loss-scale overflow is not counted
                self.scheduler.step()
                self.updates += 1
            self.nonfinite_in_a_row = 0
        elif skip == "zero weight":
            self.zero_weight_steps += 1
            warnings.warn(f"step {self.step}: the global batch has zero total weight; skipped", stacklevel=3)
        else:
            self.nonfinite_steps += 1
            self.nonfinite_in_a_row += 1
            warnings.warn(f"step {self.step}: {skip}; step skipped", stacklevel=3)
        self.optimizer.zero_grad(set_to_none=True)

    def _reduce_sums(self, local: Mapping[str, Any]) -> dict[str, float]:
        """Sum the named scalars over processes (every process holds the same names)."""
        import torch

        names = sorted(local)
        vec = torch.stack([local[n].to(torch.float64) for n in names]).to(self.accelerator.device)  # (K,)
        if self.world > 1:
            vec = self.accelerator.reduce(vec, reduction="sum")
        return dict(zip(names, vec.tolist()))

    # --------------------------------------------------------------- evaluation

    def evaluate(self) -> dict[str, float]:
        """Metrics on ``eval_data`` (no gradients, RNG untouched): :func:`nlhf.train.loop_eval.evaluate_loop`."""
        return evaluate_loop(self)

    # --------------------------------------------------------------- checkpoints

    def trainer_state(self) -> dict[str, Any]:
        """Loop counters and data position (JSON), as stored in ``trainer_state.json``."""
        return loop_trainer_state(self)

    @property
    def is_deepspeed(self) -> bool:
        return getattr(self.accelerator.distributed_type, "name", "") == "DEEPSPEED"

    @property
    def is_fsdp(self) -> bool:
        """Whether accelerate sharded the model with FSDP (weights and optimiser state split over processes)."""
        return getattr(self.accelerator.distributed_type, "name", "") == "FSDP"

    def save_checkpoint(self) -> Path:
        """Write ``ckpt-<step>`` atomically (collective): :func:`nlhf.train.loop_checkpoint.save_loop_checkpoint`."""
        return save_loop_checkpoint(self)

    def _restore(self) -> Path | None:
        """Load the newest intact checkpoint (None if none): :func:`nlhf.train.loop_checkpoint.restore_loop`."""
        return restore_loop(self)


__all__ = [
    "StepOutput",
    "StepContext",
    "StepFn",
    "Stateful",
    "TrainLoop",
    "TrainResult",
    "RunDirError",
    "NonFiniteLossError",
    "MetricsLogger",
    "make_accelerator",
    "make_optimizer",
    "make_scheduler",
    "lr_factor",
    "epoch_permutation",
    "stream_indices",
    "check_out_dir",
    "METRICS_FILE",
]
