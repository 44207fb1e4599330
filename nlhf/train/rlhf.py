"""RLHF with a reward: PPO-clip and plain regularised policy gradient (``nlhf train ppo|rlhf-pg``).

The baseline NLHF compares against (THEORY.md Sec. 5, 7): maximise
E_x E_{y~pi}[r(x, y)] - tau KL(pi || mu), whose optimum is pi(y) proportional to
mu(y) exp(r(x, y) / tau). The reward is a Bradley-Terry :class:`nlhf.models.RewardModel`
(``reward: DIR`` saved by ``nlhf train-rm``) or, from Python, any function
``reward_fn(prompts, responses) -> (N,)`` (an oracle, a game's payoff).

Both algorithms are CRITIC-FREE (no value network, no GAE): for each prompt,
``group_size`` = k responses are sampled, each gets its KL-penalised reward
r - tau k1 (k1 = log pi(y|x)/mu(y|x), the sum of its token log-ratios), and its advantage
is that minus the mean of the other k - 1 responses of the same prompt (leave-one-out
baseline, RLOO; :func:`nlhf.losses.rlhf.rlhf_advantages`). Every token of a response gets
its sequence's advantage.

* ``rlhf_pg``: one update per batch of rollouts, loss ``-A sum_n log pi(y_n|.)``
  (:func:`nlhf.losses.rlhf.rlhf_pg_loss`): an unbiased estimate of the regularised
  objective's gradient. With inexact sampling (temperature != 1, top-k/top-p) each
  response's loss is weighted by pi(y)/q(y) (detached; the leave-one-out baseline stays
  unbiased under the weight).
* ``ppo``: each batch of rollouts is used for ``ppo_epochs`` consecutive optimiser steps
  with PPO's clipped per-token ratio against the policy that sampled them
  (:func:`nlhf.losses.rlhf.ppo_clip_loss`; its old log-probs are the policy's own at the
  first of those steps, or the sampler's log q when sampling is inexact, so the ratio then
  also corrects for the sampling distribution). Advantages are computed once per batch.
  A response's loss is the SUM of its per-token clipped terms (at ratio 1 exactly the
  RLHF-PG gradient), and every response weighs 1.

How PPO's epochs sit on the shared loop (which makes one optimiser step per global batch
of prompts): at steps ``s`` with ``s % ppo_epochs == 0`` the micro-batch's prompts are
sampled and the rollouts (with old log-probs and advantages) kept in a buffer, one per
micro-batch slot; the next ``ppo_epochs - 1`` steps train on the buffered rollouts and
ignore the prompts the loop hands them (so only one step in ``ppo_epochs`` consumes
prompts: ``loop.max_steps`` counts optimiser steps). The buffer is saved in checkpoints,
so a run resumed in the middle of a PPO iteration continues it exactly.

Sampling: k responses per prompt from one decode loop over the prompts repeated k times
(prompt-major), response j of a prompt on sub-stream j of the prompt row's own random
stream, seeded from (``loop.seed``, global position), as for :mod:`nlhf.train.online` (so
the samples do not depend on the number of processes or the micro-batch size). Metrics (means over responses): ``loss``, ``reward``,
``advantage``, ``kl_k1`` / ``kl_k3`` (estimates of the sequence-level KL(pi || mu) on the
samples, importance-weighted by pi/q when sampling is inexact), ``length``, ``truncated``;
PPO adds ``clip_fraction`` (fraction of tokens whose clipped term is active) and
``ratio``. Evaluation (``eval_prompts``): ``reward`` of y ~ pi, ``reward_vs_ref`` (its mean
minus the reward of y_ref ~ mu for the same prompt), KL, length, truncation.

Importing this module is cheap (no torch): the CLI reads :data:`RLHF_FAMILIES`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from nlhf.config import check
from nlhf.models.lora import LoraSettings
from nlhf.sampling.config import SamplingConfig
from nlhf.train.config import LoopConfig, OptimConfig, check_prompt_settings, check_required

RLHF_ALGORITHMS = ("ppo", "rlhf_pg")


@dataclass(frozen=True)
class RLHFConfig:
    """Everything ``nlhf train ppo|rlhf-pg`` reads; YAML plus ``key=value`` overrides.

    ``reward``: a directory saved by ``nlhf train-rm`` (:func:`run_rlhf` also takes a
    ``reward_fn``). ``group_size``: responses per prompt (>= 2, for the leave-one-out
    baseline); a micro-batch of B prompts is B x group_size responses. ``ppo_epochs`` and
    ``clip_eps`` are PPO's (``ppo_epochs`` None means 4; ``rlhf_pg`` takes one step per
    batch and refuses ``ppo_epochs != 1``). ``sampling.seed`` is not used (generators derive from ``loop.seed``).
    """

    algorithm: Literal["ppo", "rlhf_pg"] = "ppo"
    tau: float = 0.05  # KL strength in the reward r - tau k1
    group_size: int = 4  # k responses per prompt
    ppo_epochs: int | None = None  # ppo: optimiser steps per batch of rollouts (None: 4); rlhf_pg: 1
    clip_eps: float = 0.2  # PPO's clip range
    max_importance_weight: float | None = None  # rlhf_pg with inexact sampling: clip pi/q
    prompts: str = ""
    eval_prompts: str | None = None
    model: str = "smollm2"
    reward: str = ""  # --reward: a saved reward model directory
    out: str = ""
    prompt_format: str | None = None
    split: str | None = None
    eval_split: str | None = None
    skip_invalid: bool = False
    limit: int | None = None
    eval_limit: int | None = None
    max_prompt_tokens: int | None = 512
    reward_batch_size: int = 32
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_new_tokens=64))
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    lora: LoraSettings | None = None
    merge_adapter: bool = True
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-6, warmup_steps=0))
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(micro_batch_size=4, log_every=10))

    def __post_init__(self) -> None:
        check(
            self.tau > 0 and self.tau != float("inf"), "tau", f"must be a finite number > 0, got {self.tau}"
        )
        check(self.group_size >= 2, "group_size",
              f"must be >= 2 (the leave-one-out baseline needs another response per prompt), got {self.group_size}")  # fmt: skip
        if self.ppo_epochs is not None:
            check(self.ppo_epochs >= 1, "ppo_epochs", f"must be >= 1, got {self.ppo_epochs}")
            check(self.algorithm == "ppo" or self.ppo_epochs == 1, "ppo_epochs",
                  f"rlhf_pg makes one on-policy update per batch (got {self.ppo_epochs}); use ppo for several")  # fmt: skip
        check(0.0 < self.clip_eps < 1.0, "clip_eps", f"must be in (0, 1), got {self.clip_eps}")
        check(self.max_importance_weight is None or self.max_importance_weight > 0, "max_importance_weight",
              f"must be > 0 (or null), got {self.max_importance_weight}")  # fmt: skip
        check_prompt_settings(self, "reward_batch_size")

    @property
    def epochs(self) -> int:
        """Optimiser steps per batch of rollouts (4 for ppo unless set; 1 for rlhf_pg)."""
        if self.algorithm == "rlhf_pg":
            return 1
        return 4 if self.ppo_epochs is None else self.ppo_epochs

    def check_complete(self, *, need_prompts: bool = True, need_reward: bool = True) -> None:
        """The fields without a usable default (called before any data or model loads)."""
        check_required(self, prompts="--prompts FILE" if need_prompts else None,
                       reward="--reward DIR: a model saved by nlhf train-rm" if need_reward else None,
                       out="--out DIR", model="--model smollm2|tiny|PATH")  # fmt: skip


def load_rlhf_config(
    config_path: str | Path | None = None, overrides: Sequence[str] = (), **flags: Any
) -> RLHFConfig:
    """Defaults < YAML < ``key=value`` overrides < non-None ``flags``."""
    from nlhf.train.offline_cli import resolve_config

    return resolve_config(RLHFConfig, config_path, overrides, flags)


# ----------------------------------------------------------------------------- rewards


def reward_model_fn(model: Any, batch_size: int = 32) -> Callable[[Sequence[Any], Sequence[str]], Any]:
    """``reward_fn`` of a :class:`nlhf.models.RewardModel`: r(x, y) (N,) in eval mode, no grad."""

    def reward_fn(prompts: Sequence[Any], responses: Sequence[str]) -> Any:
        return model.reward(list(prompts), list(responses), batch_size=batch_size)

    return reward_fn


def compute_rewards(
    reward_fn: Callable[..., Any], prompts: Sequence[Any], rollout: Any, tokenizer: Any
) -> Any:
    """r(x, y) (N,) float32 on the rollout's device, checked: shape (N,) and finite, naming the row."""
    import torch

    texts = rollout.response_texts(tokenizer)
    rewards = torch.as_tensor(reward_fn(list(prompts), texts)).detach().float().flatten()
    if rewards.shape[0] != len(texts):
        raise ValueError(f"reward function returned {rewards.shape[0]} values for {len(texts)} responses")
    bad = ~torch.isfinite(rewards)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise ValueError(f"reward function returned {float(rewards[i])} for response {i} ({texts[i][:80]!r})")
    return rewards.to(rollout.response_ids.device)


# ----------------------------------------------------------------------------- the steps


class RolloutBuffer:
    """PPO's rollouts of the current iteration, one per micro-batch slot; checkpointable (Stateful).

    Each process holds the rollouts of its own shard of prompts (``per_process``: the loop
    saves one ``extra-<rank>.pt`` per process).
    """

    per_process = True

    def __init__(self) -> None:
        self.slots: dict[int, dict[str, Any]] = {}

    def state_dict(self) -> dict[str, Any]:
        def cpu(v: Any) -> Any:
            if hasattr(v, "to") and not isinstance(v, str):
                return v.to("cpu")
            return v

        return {"slots": {k: {n: cpu(v) for n, v in slot.items()} for k, slot in self.slots.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.slots = {int(k): dict(v) for k, v in state["slots"].items()}


def make_step(cfg: RLHFConfig, sampler: Any, reward_fn: Callable[..., Any], tokenizer: Any, reference: Any,
              buffer: RolloutBuffer | None = None) -> Callable[..., Any]:  # fmt: skip
    """The training step of ``cfg.algorithm``: per-response losses (B k,), weight 1 each."""
    import torch

    from nlhf.losses.base import zero_outside
    from nlhf.losses.rlhf import ppo_clip_loss, rlhf_advantages, rlhf_pg_loss
    from nlhf.sampling import response_logps
    from nlhf.train.online import (
        log_importance_weight,
        reference_logps,
        repeat_prompts,
        rollout_metrics,
        row_generator,
        step_output,
        weighted_kl,
    )

    k, tau, seed, exact = cfg.group_size, cfg.tau, cfg.loop.seed, cfg.sampling.is_exact

    def sample(batch: Any, ctx: Any) -> tuple[Any, Any, Any]:
        """k responses per prompt (prompt-major), their rewards and mu's log-probs."""
        prompts = repeat_prompts(batch.prompts, k)  # (B k, P)
        gen = row_generator(seed, ctx, prompts.input_ids.device).repeat_interleave(
            k
        )  # (B k,) streams, prompt-major
        rollout = sampler.sample(prompts, gen)
        texts = [p for p in batch.texts for _ in range(k)]
        rewards = compute_rewards(reward_fn, texts, rollout, tokenizer)  # (B k,)
        return rollout, rewards, reference_logps(reference, rollout)

    def pg_step(model: Any, batch: Any, ctx: Any) -> Any:
        rollout, rewards, ref = sample(batch, ctx)
        logps = response_logps(model, rollout)  # (B k, R) with gradient
        mask = rollout.response_mask
        out = rlhf_pg_loss(logps, ref, mask, rewards, tau, k)
        loss, weight = out.loss, None
        if not exact:
            weight = torch.exp(log_importance_weight(logps, rollout.sampling_logps, mask))  # (B k,) pi/q
            if cfg.max_importance_weight is not None:
                weight = weight.clamp(max=cfg.max_importance_weight)
            loss = weight * loss
        k1, k3 = weighted_kl(logps, ref, mask, weight)
        metrics = {"reward": rewards, "advantage": out.metrics["advantage"], "kl_k1": k1, "kl_k3": k3,
                   **rollout_metrics(rollout)}  # fmt: skip
        if weight is not None:
            metrics["importance_weight"] = weight
        return step_output(loss, metrics)

    def ppo_step(model: Any, batch: Any, ctx: Any) -> Any:
        assert buffer is not None
        fresh = ctx.step % cfg.epochs == 0
        if fresh:
            rollout, rewards, ref = sample(batch, ctx)
            logps = response_logps(model, rollout)  # (B k, R) with gradient; == the sampling policy's
            old = logps.detach() if exact else rollout.sampling_logps  # the behaviour policy's log-probs
            mask = rollout.response_mask
            advantages = rlhf_advantages(rewards, old, ref, mask, tau, k)  # (B k,) constants
            weight = None if exact else torch.exp(log_importance_weight(logps, rollout.sampling_logps, mask))
            k1, k3 = weighted_kl(logps, ref, mask, weight)
            slot = {"rollout": rollout, "old_logps": old, "advantages": advantages,
                    "reward": rewards, "kl_k1": k1, "kl_k3": k3}  # fmt: skip
            buffer.slots[ctx.micro_step] = slot
        else:
            slot = buffer.slots.get(ctx.micro_step)
            if slot is None:
                raise RuntimeError(
                    f"ppo step {ctx.step}: no buffered rollouts for micro-batch {ctx.micro_step} (the checkpoint "
                    "lacks the rollout buffer, or grad_accum_steps changed within a PPO iteration)"
                )
            device = batch.prompts.input_ids.device
            slot = {n: (v.to(device) if hasattr(v, "to") else v) for n, v in slot.items()}
            rollout = slot["rollout"]
            logps = response_logps(model, rollout)  # (B k, R) with gradient
        mask = rollout.response_mask
        out = ppo_clip_loss(logps, slot["old_logps"], slot["advantages"], mask, cfg.clip_eps)  # (B k, R)
        loss = out.loss.sum(dim=-1)  # (B k,) a response's loss: the SUM of its token terms
        tokens = mask.sum(dim=-1).clamp(min=1).float()  # (B k,)
        metrics = {
            "reward": slot["reward"],
            "advantage": slot["advantages"],
            "kl_k1": slot["kl_k1"],
            "kl_k3": slot["kl_k3"],
            "clip_fraction": zero_outside(out.metrics["clipped"], mask).sum(dim=-1) / tokens,
            "ratio": zero_outside(out.metrics["ratio"], mask).sum(dim=-1) / tokens,
            **rollout_metrics(rollout),
        }
        return step_output(loss, metrics)

    return ppo_step if cfg.algorithm == "ppo" else pg_step


def make_eval_step(
    cfg: RLHFConfig, sampler: Any, reward_fn: Callable[..., Any], tokenizer: Any
) -> Callable[..., Any]:
    """Evaluation: y ~ pi and y_ref ~ mu per prompt (one decode loop); reward, reward gain, KL, length."""
    import torch

    from nlhf.train.online import sample_against_reference, step_output

    seed, exact = cfg.loop.seed, cfg.sampling.is_exact

    def eval_step(model: Any, batch: Any, ctx: Any) -> Any:
        y, y_ref, y_metrics = sample_against_reference(sampler, batch, ctx, seed, exact)
        r = compute_rewards(reward_fn, batch.texts, y, tokenizer)  # (B,)
        r_ref = compute_rewards(reward_fn, batch.texts, y_ref, tokenizer)  # (B,)
        return step_output(torch.zeros_like(r), {"reward": r, "reward_vs_ref": r - r_ref, **y_metrics})

    return eval_step


# ----------------------------------------------------------------------------- the run


def run_rlhf(
    cfg: RLHFConfig,
    *,
    model: Any = None,
    tokenizer: Any = None,
    reward_fn: Callable[..., Any] | None = None,
    train_prompts: Sequence[Any] | None = None,
    eval_prompts: Sequence[Any] | None = None,
    optimizer_fn: Callable[[Any], Any] | None = None,
    reference_model: Any = None,
) -> Any:
    """Train a policy with PPO or RLHF-PG against a reward; returns :class:`nlhf.train.online.OnlineResult`.

    ``reward_fn(prompts, responses) -> (N,)`` replaces loading ``cfg.reward``; the other
    keyword arguments as in :func:`nlhf.train.online.run_online`.
    """
    from accelerate.utils import set_seed

    from nlhf.sampling import HFSampler
    from nlhf.train.loop import TrainLoop, check_out_dir, make_accelerator
    from nlhf.train.offline import load_model, pad_token_id
    from nlhf.train.online import (
        OnlineResult,
        default_optimizer,
        eos_id,
        finish_run,
        load_prompt_items,
        make_collate,
        make_policy,
        refuse_sharded_weights,
    )

    if (model is None) != (tokenizer is None):
        raise ValueError("run_rlhf: pass both model and tokenizer, or neither")
    cfg.check_complete(need_prompts=train_prompts is None, need_reward=reward_fn is None)
    refuse_sharded_weights(f"algorithm {cfg.algorithm}")
    timings: dict[str, float] = {}
    out = check_out_dir(cfg.out, cfg.loop.min_free_disk_mb * 2**20)
    loop_cfg = dataclasses.replace(cfg.loop, out_dir=str(out))

    t0 = time.perf_counter()
    set_seed(cfg.loop.seed)
    if model is None:
        model, tokenizer = load_model(cfg)
    reward_model = None
    if reward_fn is None:
        from nlhf.models import RewardModel

        reward_model = RewardModel.from_pretrained(cfg.reward).eval()
        reward_fn = reward_model_fn(reward_model, cfg.reward_batch_size)
    timings["load"] = time.perf_counter() - t0
    train_items, eval_items = load_prompt_items(cfg, tokenizer, train_prompts, eval_prompts)

    acc = make_accelerator(loop_cfg)
    if reward_model is not None:
        reward_model.to(acc.device)
    policy, reference = make_policy(model, cfg.lora, reference_model)
    policy.to(acc.device)
    reference.to(acc.device)
    pad = pad_token_id(tokenizer)
    sampler = HFSampler(policy, reference, cfg.sampling, eos_token_id=eos_id(tokenizer), pad_token_id=pad)
    buffer = RolloutBuffer() if cfg.algorithm == "ppo" else None

    loop = TrainLoop(
        loop_cfg,
        cfg.optim,
        policy,
        train_items,
        make_collate(pad),
        make_step(cfg, sampler, reward_fn, tokenizer, reference, buffer),
        eval_data=eval_items,
        eval_fn=make_eval_step(cfg, sampler, reward_fn, tokenizer),
        stateful={"rollout_buffer": buffer} if buffer is not None else None,
        run_config=cfg,
        accelerator=acc,
        optimizer_fn=optimizer_fn or default_optimizer(cfg),
    )
    t0 = time.perf_counter()
    result = loop.run()
    timings["train"] = time.perf_counter() - t0
    extra = {"algorithm": cfg.algorithm, "group_size": cfg.group_size,
             "ppo_epochs": cfg.epochs if cfg.algorithm == "ppo" else None,
             "n_train": len(train_items), "n_eval": len(eval_items) if eval_items else 0}  # fmt: skip
    trained, summary, policy_dir = finish_run(cfg, loop, result, tokenizer, out, timings, extra)
    return OnlineResult(trained, tokenizer, summary, result, out, policy_dir, timings)


def summary_line(result: Any) -> str:
    """The one JSON line ``nlhf train ppo|rlhf-pg`` prints at the end."""
    from nlhf.train.online import summary_json

    return summary_json(result, ("algorithm", "tau", "group_size", "steps"),
                        ("loss", "reward", "reward_vs_ref", "kl_k3", "length", "truncated"))  # fmt: skip


_ROW = dict(module="nlhf.train.rlhf", config_class="RLHFConfig", run="run_rlhf", summary="summary_line",
            flags=("prompts", "eval_prompts", "model", "reward", "out"))  # fmt: skip

# ``nlhf train FAMILY`` rows (keyword arguments of nlhf.train.offline_cli.TrainFamily).
RLHF_FAMILIES: dict[str, dict[str, Any]] = {
    "ppo": dict(
        help="PPO-clip against a reward model (critic-free: leave-one-out baseline over group_size samples)",
        fixed={"algorithm": "ppo"},
        description="PPO-clip with the KL to the reference in the reward, ppo_epochs steps per batch of "
        "rollouts, advantages from a leave-one-out baseline (no value network). --reward: nlhf train-rm's output.",
        **_ROW,
    ),
    "rlhf-pg": dict(
        help="regularised policy gradient (RLOO) against a reward model: E r - tau KL(pi || mu)",
        fixed={"algorithm": "rlhf_pg"},
        **_ROW,
    ),
}

__all__ = [
    "RLHF_ALGORITHMS",
    "RLHF_FAMILIES",
    "RLHFConfig",
    "RolloutBuffer",
    "load_rlhf_config",
    "reward_model_fn",
    "compute_rewards",
    "make_step",
    "make_eval_step",
    "run_rlhf",
    "summary_line",
]
