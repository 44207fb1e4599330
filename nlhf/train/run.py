"""What every trainer does around the loop: set-up checks, the policy and its reference, tear-down.

A trainer's ``run_*`` function reads top to bottom (config checked, output directory
checked, data loaded, model loaded, loop built, trained, saved); the pieces it shares with
the other trainers live here, so no trainer imports another:

* :func:`start_run`: the output directory, proved writable with free disk
  (:func:`nlhf.train.out_dir.check_out_dir`), and the loop config pointing at it;
* :func:`refuse_sharded_weights`: the sampling trainers refuse FSDP / ZeRO-3 launches;
* :func:`resolve_model_settings`: ``dtype: auto`` resolved, ``attn_implementation`` and
  ``lora.quantize`` checked for this machine (every trainer's first call);
* :func:`load_policy_model`: ``cfg.model`` through :func:`nlhf.models.loading.load_model`
  (``tiny`` seeded by ``loop.seed``), unless the caller passed a model;
  :func:`checkpoint_policy`: gradient checkpointing on the policy;
* :func:`make_policy`: the policy and its explicit frozen reference;
* :func:`default_optimizer`: the loop's AdamW;
* :func:`prepare_sampling_run`: everything the sampling trainers (Nash-MD, online IPO,
  RLHF) set up before their loop, in one order; :meth:`SamplingRun.make_sampler` their
  sampler and :func:`make_prompt_loop` their loop over batches of prompts;
* :func:`train_and_save`: the loop run, the policy saved to ``out/policy`` (FSDP's shards
  gathered) and ``out/metrics.json``; :class:`RunResult` is what the policy trainers return;
* :func:`summary_json`: the one JSON line a ``nlhf train`` command prints.

Cheap to import: torch and accelerate load inside the functions.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nlhf.config import ConfigError, check
from nlhf.data.prompt_batches import make_prompt_collate
from nlhf.models.loading import atomic_directory, load_model
from nlhf.train import loop as loop_lib  # loop_lib.make_optimizer: replaceable in tests
from nlhf.train.checkpoint import list_checkpoints, write_text_atomic
from nlhf.train.out_dir import check_out_dir

METRICS_JSON = "metrics.json"  # the run's summary, written last
POLICY_DIR = "policy"  # the trained policy (save_pretrained + tokenizer) inside the run directory


@dataclass
class RunResult:
    """What the policy trainers return; ``summary`` is ``metrics.json``'s content (empty off the main process)."""

    policy: Any  # the trained policy, unwrapped (a PeftModel with LoRA)
    tokenizer: Any
    summary: dict[str, Any]
    train: Any  # nlhf.train.loop.TrainResult
    out_dir: Path
    policy_dir: Path | None  # out/policy (None on processes other than the main one)
    timings: dict[str, float]  # seconds: load, train, save, ...
    opponent: Any = None  # nash_ema: the EmaOpponent


def start_run(cfg: Any) -> tuple[Path, Any]:
    """``(out, loop_cfg)``: ``cfg.out`` checked (writable, ``loop.min_free_disk_mb`` free) and the loop config aimed at it."""
    out = check_out_dir(cfg.out, cfg.loop.min_free_disk_mb * 2**20)
    return out, dataclasses.replace(cfg.loop, out_dir=str(out))


def check_model_pair(model: Any, tokenizer: Any, trainer: str) -> None:
    """A trainer takes both ``model`` and ``tokenizer`` from Python, or neither."""
    if (model is None) != (tokenizer is None):
        raise ValueError(f"{trainer}: pass both model and tokenizer, or neither")


def resolve_model_settings(cfg: Any) -> Any:
    """``cfg`` with ``dtype: auto`` resolved for this run's device (:func:`nlhf.models.memory.resolve_auto_dtype`),
    after checking that ``attn_implementation`` and ``lora.quantize`` can run here (a ConfigError naming the key).

    Called first by every trainer's ``run_*``, so the resolved dtype is the one saved in ``config.yaml``.
    """
    from nlhf.models.memory import check_attn_implementation, check_quantize, resolve_auto_dtype

    device = cfg.loop.device
    check_attn_implementation(getattr(cfg, "attn_implementation", "sdpa"), device)
    check_quantize(getattr(cfg.lora, "quantize", None), device)
    if cfg.dtype != "auto":
        return cfg
    return dataclasses.replace(cfg, dtype=resolve_auto_dtype(cfg.dtype, device))


def load_policy_model(cfg: Any, model: Any = None, tokenizer: Any = None) -> tuple[Any, Any]:
    """``(model, tokenizer)``: the ones given, else ``cfg.model`` (``tiny``: seeded by ``cfg.loop.seed``), loaded
    with ``cfg``'s dtype (``auto`` resolved here too), ``attn_implementation`` and ``lora.quantize`` (QLoRA: then
    prepared for k-bit training, :func:`nlhf.models.lora.prepare_quantized`)."""
    from nlhf.models.lora import prepare_quantized
    from nlhf.models.memory import resolve_auto_dtype

    if model is not None:
        return model, tokenizer
    quantize = getattr(cfg.lora, "quantize", None)
    model, tokenizer = load_model(cfg.model, dtype=resolve_auto_dtype(cfg.dtype, cfg.loop.device),
                                  seed=cfg.loop.seed, attn_implementation=getattr(cfg, "attn_implementation", None),
                                  quantize=quantize)  # fmt: skip
    if quantize is not None:
        model = prepare_quantized(model, bool(getattr(cfg, "gradient_checkpointing", False)))
    return model, tokenizer


def checkpoint_policy(cfg: Any, policy: Any) -> Any:
    """``policy`` with gradient checkpointing on when ``cfg.gradient_checkpointing`` (the reference is left as is:
    it runs without gradients, where checkpointing does nothing)."""
    from nlhf.models.memory import enable_gradient_checkpointing

    if getattr(cfg, "gradient_checkpointing", False):
        enable_gradient_checkpointing(policy)
    return policy


def refuse_sharded_weights(trainer: str) -> None:
    """Refuse FSDP and DeepSpeed ZeRO-3 launches (read from accelerate's environment), before any model loads.

    The decode loop of :mod:`nlhf.sampling` calls the policy module itself, outside the
    FSDP / ZeRO-3 wrapper that holds its sharded weights (and each process stops decoding
    when its own rows end, which the collective forwards of a sharded model cannot follow).
    DDP and DeepSpeed ZeRO-1/2 keep whole weights on every process and are fine.
    """
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true", "yes")
    zero3 = (
        os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true", "yes")
        and os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "") == "3"
    )
    if fsdp or zero3:
        raise ConfigError(
            f"{trainer}: {'FSDP' if fsdp else 'DeepSpeed ZeRO-3'} shards the policy's weights, which the sampler "
            "needs whole on every process; launch with configs/accelerate/ddp.yaml (or deepspeed_zero2.yaml)"
        )


def make_policy(model: Any, lora: Any, reference_model: Any = None) -> tuple[Any, Any]:
    """``(policy, reference)``: :func:`nlhf.models.policy.build_policy`, or an explicit frozen reference model."""
    from nlhf.models.policy import Reference, build_policy  # torch

    if reference_model is None:
        return build_policy(model, lora)
    check(lora is None, "lora",
          "reference_model cannot be combined with LoRA (the reference is the base model, adapter off)")  # fmt: skip
    reference_model.requires_grad_(False)
    reference_model.eval()
    model.requires_grad_(True)
    return model, Reference(reference_model)


def default_optimizer(cfg: Any) -> Callable[[Any], Any]:
    """The loop's AdamW (:func:`nlhf.train.loop.make_optimizer`, fused where torch supports it)."""
    return lambda model: loop_lib.make_optimizer(model, cfg.optim)


def save_gathered_policy(model: Any, state: dict[str, Any], path: Path, tokenizer: Any) -> Path:
    """Save ``model`` with the full ``state`` dict gathered from FSDP's shards (``save_pretrained(state_dict=...)``).

    A LoRA policy is saved as an adapter directory (merging needs the whole model in one
    place, which FSDP does not give): load it with :func:`nlhf.models.load_causal_lm`.
    """
    with atomic_directory(path, overwrite=True) as tmp:
        model.save_pretrained(tmp, state_dict=state, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return path


def train_and_save(cfg: Any, loop: Any, tokenizer: Any, out: Path, timings: dict[str, float],
                   extra: dict[str, Any], opponent: Any = None) -> RunResult:  # fmt: skip
    """Run the loop, then save the policy (``out/policy``) and ``metrics.json``: the trainers' last step.

    The summary is ``extra`` followed by the loop's counts and last metrics, the model spec,
    the policy directory and the timings (``train``, ``save`` added here). Under FSDP every
    process takes part in gathering the full weights; only the main one writes.
    """
    from nlhf.models.policy import save_policy  # torch

    t0 = time.perf_counter()
    result = loop.run()
    timings["train"] = time.perf_counter() - t0

    acc = loop.accelerator
    trained = acc.unwrap_model(loop.model)
    summary: dict[str, Any] = {}
    policy_dir = None
    t0 = time.perf_counter()
    full_state = acc.get_state_dict(loop.model) if loop.is_fsdp else None  # collective
    if acc.is_main_process:
        if full_state is not None:
            policy_dir = save_gathered_policy(trained, full_state, out / POLICY_DIR, tokenizer)
        else:
            policy_dir = save_policy(trained, out / POLICY_DIR, merge=cfg.merge_adapter, tokenizer=tokenizer)
        summary = {
            **extra,
            "steps": result.step,
            "updates": result.updates,
            "nonfinite_steps": result.nonfinite_steps,
            "train": result.train_metrics,
            "eval": result.eval_metrics,
            "model": cfg.model,
            "policy_dir": str(policy_dir),
            "timings_s": timings,
        }
    timings["save"] = time.perf_counter() - t0
    if acc.is_main_process:
        write_text_atomic(
            out / METRICS_JSON, json.dumps(summary, indent=2, allow_nan=True, default=str) + "\n"
        )
    acc.wait_for_everyone()
    return RunResult(trained, tokenizer, summary, result, out, policy_dir, timings, opponent)


@dataclass
class SamplingRun:
    """What :func:`prepare_sampling_run` sets up for a trainer that samples its own responses."""

    out: Path  # the run directory, checked
    loop_cfg: Any  # LoopConfig aimed at `out`
    timings: dict[str, float]  # load (so far)
    accelerator: Any
    policy: Any  # pi, on the accelerator's device
    reference: Any  # mu, frozen, on the same device
    tokenizer: Any
    scorer: Any  # the judge or reward model (given or loaded), its model on the device
    train_items: list[Any]  # nlhf.data.PromptItem
    eval_items: list[Any] | None
    pad_token_id: int
    eos_token_id: int

    def make_sampler(self, sampling: Any, opponent: Any = None) -> Any:
        """pi's :class:`nlhf.sampling.sampler.HFSampler` with mu the reference (``opponent``: Nash-EMA's model)."""
        from nlhf.sampling.sampler import HFSampler

        return HFSampler(self.policy, self.reference, sampling, opponent=opponent, eos_token_id=self.eos_token_id,
                         pad_token_id=self.pad_token_id)  # fmt: skip


def make_prompt_loop(
    cfg: Any,
    run: SamplingRun,
    step_fn: Callable[..., Any],
    eval_fn: Callable[..., Any],
    *,
    stateful: dict[str, Any] | None = None,
    optimizer_fn: Callable[[Any], Any] | None = None,
) -> Any:
    """The loop of a sampling trainer: pi on batches of the run's prompts (left-padded), ``step_fn`` per micro-batch.

    ``stateful``: objects saved in checkpoints (PPO's buffer, Nash-EMA's opponent);
    ``optimizer_fn``: the caller's, else :func:`default_optimizer`.
    """
    return loop_lib.TrainLoop(
        run.loop_cfg,
        cfg.optim,
        run.policy,
        run.train_items,
        make_prompt_collate(run.pad_token_id),
        step_fn,
        eval_data=run.eval_items,
        eval_fn=eval_fn,
        stateful=stateful,
        run_config=cfg,
        accelerator=run.accelerator,
        optimizer_fn=optimizer_fn or default_optimizer(cfg),
    )


def prepare_sampling_run(cfg: Any, trainer: str, *, model: Any, tokenizer: Any, train_prompts: Any,
                         eval_prompts: Any, reference_model: Any, scorer: Any = None,
                         load_scorer: Callable[[], Any] | None = None) -> SamplingRun:  # fmt: skip
    """The set-up of every sampling trainer (Nash-MD, online IPO, RLHF), in this order.

    The sampling trainers refuse FSDP / ZeRO-3; the output directory is checked; the seed
    is set; the policy model (``cfg.model`` unless given) and the scorer (``scorer``, else
    ``load_scorer()``: a judge or a reward model) are loaded; the prompts are loaded and
    tokenised (errors name file and row); the accelerator is made; the policy and its frozen
    reference (``reference_model``, else a copy or the LoRA base) and the scorer's model go
    to its device. ``cfg.check_complete`` comes first, in the trainer.
    """
    from accelerate.utils import set_seed

    from nlhf.data.collate import eos_id, pad_token_id
    from nlhf.data.prompt_batches import load_prompt_items

    refuse_sharded_weights(f"{trainer} {cfg.algorithm}")
    resolve_model_settings(cfg)  # attn_implementation / lora.quantize checked (dno, mpo too)
    timings: dict[str, float] = {}
    out, loop_cfg = start_run(cfg)

    t0 = time.perf_counter()
    set_seed(cfg.loop.seed)
    model, tokenizer = load_policy_model(cfg, model, tokenizer)
    if scorer is None and load_scorer is not None:
        scorer = load_scorer()
    timings["load"] = time.perf_counter() - t0
    train_items, eval_items = load_prompt_items(cfg, tokenizer, train_prompts, eval_prompts)

    acc = loop_lib.make_accelerator(loop_cfg)
    policy, reference = make_policy(model, cfg.lora, reference_model)
    checkpoint_policy(cfg, policy)
    policy.to(acc.device)
    reference.to(acc.device)
    scorer_model = getattr(scorer, "model", scorer)  # a judge wraps its model; a reward model is one
    if scorer_model is not None and hasattr(scorer_model, "to") and hasattr(scorer_model, "parameters"):
        scorer_model.to(acc.device)  # a learned judge runs where the policy runs
    return SamplingRun(out, loop_cfg, timings, acc, policy, reference, tokenizer, scorer, train_items, eval_items,
                       pad_token_id(tokenizer), eos_id(tokenizer))  # fmt: skip


def prepare_judged_run(cfg: Any, run_name: str, trainer: str, *, model: Any, tokenizer: Any, judge: Any,
                       train_prompts: Any, eval_prompts: Any, reference_model: Any) -> SamplingRun:  # fmt: skip
    """The set-up of a trainer judged pairwise (Nash-MD family, online IPO, SPPO, INPO): the model/tokenizer pair
    and the config's required fields checked, then :func:`prepare_sampling_run` with ``judge``, else
    ``load_judge(cfg.judge, cfg.judge_batch_size)``."""
    from nlhf.judges import load_judge

    check_model_pair(model, tokenizer, run_name)
    cfg.check_complete(need_prompts=train_prompts is None, need_judge=judge is None)
    return prepare_sampling_run(cfg, trainer, model=model, tokenizer=tokenizer, train_prompts=train_prompts,
                                eval_prompts=eval_prompts, reference_model=reference_model, scorer=judge,
                                load_scorer=lambda: load_judge(cfg.judge, cfg.judge_batch_size))  # fmt: skip


def prompt_counts(run: SamplingRun) -> dict[str, int]:
    """The run summary's prompt counts: ``n_train``, ``n_eval`` and ``prompts_truncated`` (cut by max_prompt_tokens)."""
    return {"n_train": len(run.train_items), "n_eval": len(run.eval_items or ()),
            "prompts_truncated": sum(1 for it in run.train_items if it.cut)}  # fmt: skip


def make_iteration_loop(cfg: Any, run: SamplingRun, make_step: Callable[..., Any], judge: Any,
                        optimizer_fn: Callable[[Any], Any] | None,
                        stateful: dict[str, Any] | None = None) -> tuple[Any, Any]:  # fmt: skip
    """``(loop, snapshot)`` of an iteration-based trainer (SPPO, INPO, DNO, MPO): pi_t (:class:`nlhf.train.rollouts.IterationSnapshot`,
    refreshed every ``cfg.steps_per_iteration`` steps and saved in checkpoints) and its sampler, the step
    ``make_step(cfg, snapshot_sampler, judge, tokenizer, reference, snapshot, data=...)`` (``data``: the
    :class:`nlhf.train.rollouts.IterationData` under ``<run>/iterations``, kept only when the run resumes a checkpoint),
    the judge's evaluation. ``stateful``: more objects saved in checkpoints (MPO's magnet)."""
    from nlhf.train.rollouts import ITERATIONS_DIR, IterationData, IterationSnapshot, make_judge_eval_step

    snapshot = IterationSnapshot(run.policy, cfg.steps_per_iteration)  # pi_0 = the initial policy
    snapshot_sampler = snapshot.sampler(run.reference, cfg.sampling, run.eos_token_id, run.pad_token_id)
    data = IterationData(run.out / ITERATIONS_DIR)
    step = make_step(cfg, snapshot_sampler, judge, run.tokenizer, run.reference, snapshot, data=data)
    evaluate = make_judge_eval_step(cfg, run.make_sampler(cfg.sampling), judge, run.tokenizer)
    state = {"snapshot": snapshot, **(stateful or {})}
    loop = make_prompt_loop(cfg, run, step, evaluate, stateful=state, optimizer_fn=optimizer_fn)
    # After the loop's directory check (which refuses a run that neither resumes nor overwrites a directory
    # holding checkpoints, so a forgotten loop.resume loses nothing): only a run resuming a checkpoint keeps
    # the saved iterations; a fresh, overwriting or checkpoint-less run never reads another run's responses.
    if run.accelerator.is_main_process and not (cfg.loop.resume and list_checkpoints(run.out)):
        data.clear()
    run.accelerator.wait_for_everyone()
    return loop, snapshot


def summary_json(
    result: RunResult, keys: Sequence[str], metrics: Sequence[str], splits: Sequence[str] = ("train", "eval")
) -> str:
    """A trainer's final JSON line: ``out``, the summary's ``keys``, ``<split>_<metric>`` of the ``splits``'
    ``metrics`` that are there, and ``policy``; empty on processes other than the main one."""
    s = result.summary
    if not s:
        return ""
    shown = {k: s.get(k) for k in keys}
    for split in splits:
        for key in metrics:
            if key in (s.get(split) or {}):
                shown[f"{split}_{key}"] = s[split][key]
    return json.dumps({"out": str(result.out_dir), **shown, "policy": s.get("policy_dir")})


__all__ = [
    "METRICS_JSON",
    "POLICY_DIR",
    "RunResult",
    "check_model_pair",
    "checkpoint_policy",
    "default_optimizer",
    "make_iteration_loop",
    "make_prompt_loop",
    "prepare_judged_run",
    "prepare_sampling_run",
    "prompt_counts",
    "SamplingRun",
    "train_and_save",
    "load_policy_model",
    "make_policy",
    "refuse_sharded_weights",
    "resolve_model_settings",
    "save_gathered_policy",
    "start_run",
    "summary_json",
]
