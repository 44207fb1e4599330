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
  first of those steps, pi_old, whatever the sampling). Advantages are computed once per
  batch, with the KL penalty log pi_old / mu (:func:`ppo_behaviour_terms`). A response's
  loss is the SUM of its per-token clipped terms (at ratio 1 exactly the RLHF-PG gradient),
  and every response weighs 1; with inexact sampling it is weighted by pi_old(y)/q(y)
  (fixed for the PPO epochs of the batch), so the first update's expected gradient is the
  regularised objective's, exactly as for ``rlhf_pg`` (checked by enumeration on a
  one-token game: ``tests/train/test_ppo_inexact_sampling.py``). Before this weight, PPO's
  old log-probs were log q: the clipping then cut the sampling correction and the penalty
  used log q / mu, a bias of 4.5% of the gradient at temperature 0.9, 26% at 0.5.

How PPO's epochs sit on the shared loop (which makes one optimiser step per global batch
of prompts): at steps ``s`` with ``s % ppo_epochs == 0`` the micro-batch's prompts are
sampled and the rollouts (with old log-probs and advantages) kept in a buffer, one per
micro-batch slot; the next ``ppo_epochs - 1`` steps train on the buffered rollouts and
ignore the prompts the loop hands them (so only one step in ``ppo_epochs`` consumes
prompts: ``loop.max_steps`` counts optimiser steps). The buffer is saved in checkpoints,
so a run resumed in the middle of a PPO iteration continues it exactly.

Sampling: k responses per prompt from one decode loop over the prompts repeated k times
(prompt-major), response j of a prompt on sub-stream j of the prompt row's own random
stream, seeded from (``loop.seed``, global position), as for :mod:`nlhf.train.nash_md` (so
the samples do not depend on the number of processes or the micro-batch size). Metrics (means over responses): ``loss``, ``reward``,
``advantage``, ``kl_k1`` / ``kl_k3`` (estimates of the sequence-level KL(pi || mu) on the
samples, importance-weighted by pi/q when sampling is inexact), ``length``, ``truncated``;
PPO adds ``clip_fraction`` (fraction of tokens whose clipped term is active) and
``ratio``. Evaluation (``eval_prompts``): ``reward`` of y ~ pi, ``reward_vs_ref`` (its mean
minus the reward of y_ref ~ mu for the same prompt), KL, length, truncation.

Importing this module is cheap (no torch): the CLI (:mod:`nlhf.train.cli`) imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from nlhf.config import check, sections_from_dicts
from nlhf.data.prompt_batches import repeat_prompts
from nlhf.train.config import LoopConfig, PromptRunConfig, check_prompt_settings
from nlhf.train.rollouts import (
    log_importance_weight,
    reference_logps,
    rollout_metrics,
    sample_against_reference,
    step_output,
    weighted_kl,
)
from nlhf.train.run import (
    RunResult,
    check_model_pair,
    make_prompt_loop,
    prepare_sampling_run,
    resolve_model_settings,
    summary_json,
    train_and_save,
)

RLHF_ALGORITHMS = ("ppo", "rlhf_pg")


@dataclass(frozen=True)
class RLHFConfig(PromptRunConfig):
    """Everything ``nlhf train ppo|rlhf-pg`` reads (and :class:`PromptRunConfig`'s fields).

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
    max_importance_weight: float | None = None  # inexact sampling: clip pi/q
    reward: str = ""  # --reward: a saved reward model directory
    reward_batch_size: int = 32
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(micro_batch_size=4, log_every=10))

    def __post_init__(self) -> None:
        sections_from_dicts(self)  # nested sections given as plain dicts
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
        self.check_run_complete("reward", "--reward DIR: a model saved by nlhf train-rm" if need_reward else None,
                                need_prompts)  # fmt: skip


# ----------------------------------------------------------------------------- rewards


def load_reward_model(path: str) -> Any:
    """The reward model saved by ``nlhf train-rm`` in ``path``, in eval mode."""
    from nlhf.models.reward_model import RewardModel  # torch

    return RewardModel.from_pretrained(path).eval()


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


def ppo_behaviour_terms(
    logps: Any, sampling_logps: Any, ref: Any, mask: Any, rewards: Any, tau: float, group_size: int,
    max_importance_weight: float | None = None,
) -> tuple[Any, Any, Any]:  # fmt: skip
    """What PPO keeps of a fresh batch of rollouts: ``(old log-probs, advantages, weights)``.

    ``logps`` (B k, R): log pi_old of the sampled tokens, the policy that sampled them;
    ``sampling_logps`` (B k, R): log q, the distribution actually sampled (temperature,
    top-k/top-p), or None when it is pi_old itself (exact sampling).

    * old = log pi_old (detached): PPO's ratio pi / pi_old measures how far the update
      moved, never the sampling distribution;
    * advantages (B k,): :func:`nlhf.losses.rlhf.rlhf_advantages` with the penalty
      tau log pi_old(y) / mu(y), the KL of the policy (not of q);
    * weights (B k,): pi_old(y) / q(y) per sequence (clipped at ``max_importance_weight``),
      None for exact sampling. E_q[w A grad log pi] = E_pi[A grad log pi]: the first PPO
      update's expected gradient is the regularised objective's (the leave-one-out
      baseline is independent of the sequence it is subtracted from, so stays unbiased).
    """
    import torch

    from nlhf.losses.rlhf import rlhf_advantages

    old = logps.detach()  # (B k, R)
    advantages = rlhf_advantages(rewards, old, ref, mask, tau, group_size)  # (B k,) constants
    if sampling_logps is None:
        return old, advantages, None
    weight = torch.exp(log_importance_weight(old, sampling_logps, mask))  # (B k,) pi_old / q
    if max_importance_weight is not None:
        weight = weight.clamp(max=max_importance_weight)
    return old, advantages, weight


def rollout_sampler(cfg: RLHFConfig, sampler: Any, reward_fn: Callable[..., Any], tokenizer: Any,
                    reference: Any) -> Callable[[Any, Any], tuple[Any, Any, Any]]:  # fmt: skip
    """``sample(batch, ctx) -> (rollout, rewards, ref_logps)``: k = ``group_size`` responses per prompt.

    Prompt-major (rows [i k, (i + 1) k) are prompt i), response j of a prompt on sub-stream
    j of the prompt row's own random stream; rewards (B k,) checked; mu's log-probs (B k, R).
    """
    from nlhf.sampling.streams import row_generator

    k, seed = cfg.group_size, cfg.loop.seed

    def sample(batch: Any, ctx: Any) -> tuple[Any, Any, Any]:
        prompts = repeat_prompts(batch.prompts, k)  # (B k, P)
        gen = row_generator(seed, ctx, prompts.input_ids.device).repeat_interleave(k)  # (B k,) streams
        rollout = sampler.sample(prompts, gen)
        texts = [p for p in batch.texts for _ in range(k)]
        rewards = compute_rewards(reward_fn, texts, rollout, tokenizer)  # (B k,)
        return rollout, rewards, reference_logps(reference, rollout)

    return sample


def make_pg_step(cfg: RLHFConfig, sample: Callable[[Any, Any], tuple[Any, Any, Any]]) -> Callable[..., Any]:
    """RLHF-PG (RLOO): one on-policy update per batch, each response's loss weighted by pi/q when inexact."""
    import torch

    from nlhf.losses.rlhf import rlhf_pg_loss
    from nlhf.sampling.decode import response_logps

    k, tau, exact = cfg.group_size, cfg.tau, cfg.sampling.is_exact

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

    return pg_step


def make_ppo_step(cfg: RLHFConfig, sample: Callable[[Any, Any], tuple[Any, Any, Any]],
                  buffer: RolloutBuffer) -> Callable[..., Any]:  # fmt: skip
    """PPO: fresh rollouts every ``epochs`` steps (kept in ``buffer``), the clipped surrogate on them in between."""
    from nlhf.losses.base import zero_outside
    from nlhf.losses.rlhf import ppo_clip_loss
    from nlhf.sampling.decode import response_logps

    k, tau, exact = cfg.group_size, cfg.tau, cfg.sampling.is_exact

    def fresh_slot(model: Any, batch: Any, ctx: Any) -> tuple[dict[str, Any], Any]:
        rollout, rewards, ref = sample(batch, ctx)
        logps = response_logps(model, rollout)  # (B k, R) with gradient: log pi_old, the policy that sampled
        mask = rollout.response_mask
        old, advantages, weight = ppo_behaviour_terms(
            logps, None if exact else rollout.sampling_logps, ref, mask, rewards, tau, k, cfg.max_importance_weight
        )  # (B k, R), (B k,), (B k,) or None  # fmt: skip
        k1, k3 = weighted_kl(logps, ref, mask, weight)
        slot = {"rollout": rollout, "old_logps": old, "advantages": advantages, "weight": weight,
                "reward": rewards, "kl_k1": k1, "kl_k3": k3}  # fmt: skip
        buffer.slots[ctx.micro_step] = slot
        return slot, logps

    def buffered_slot(model: Any, batch: Any, ctx: Any) -> tuple[dict[str, Any], Any]:
        slot = buffer.slots.get(ctx.micro_step)
        if slot is None:
            raise RuntimeError(
                f"ppo step {ctx.step}: no buffered rollouts for micro-batch {ctx.micro_step} (the checkpoint "
                "lacks the rollout buffer, or grad_accum_steps changed within a PPO iteration)"
            )
        device = batch.prompts.input_ids.device
        slot = {n: (v.to(device) if hasattr(v, "to") else v) for n, v in slot.items()}
        return slot, response_logps(model, slot["rollout"])  # (B k, R) with gradient

    def ppo_step(model: Any, batch: Any, ctx: Any) -> Any:
        fresh = ctx.step % cfg.epochs == 0
        slot, logps = (fresh_slot if fresh else buffered_slot)(model, batch, ctx)
        rollout = slot["rollout"]
        mask = rollout.response_mask
        out = ppo_clip_loss(logps, slot["old_logps"], slot["advantages"], mask, cfg.clip_eps)  # (B k, R)
        loss = out.loss.sum(dim=-1)  # (B k,) a response's loss: the SUM of its token terms
        if slot.get("weight") is not None:
            loss = slot["weight"] * loss  # (B k,) pi_old(y)/q(y): inexact sampling corrected exactly
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

    return ppo_step


def make_step(cfg: RLHFConfig, sampler: Any, reward_fn: Callable[..., Any], tokenizer: Any, reference: Any,
              buffer: RolloutBuffer | None = None) -> Callable[..., Any]:  # fmt: skip
    """The training step of ``cfg.algorithm``: per-response losses (B k,), weight 1 each."""
    sample = rollout_sampler(cfg, sampler, reward_fn, tokenizer, reference)
    if cfg.algorithm == "ppo":
        if buffer is None:
            raise ValueError("ppo needs a RolloutBuffer (its rollouts are reused for ppo_epochs steps)")
        return make_ppo_step(cfg, sample, buffer)
    return make_pg_step(cfg, sample)


def make_eval_step(
    cfg: RLHFConfig, sampler: Any, reward_fn: Callable[..., Any], tokenizer: Any
) -> Callable[..., Any]:
    """Evaluation: y ~ pi and y_ref ~ mu per prompt (one decode loop); reward, reward gain, KL, length."""
    import torch

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
) -> RunResult:
    """Train a policy with PPO or RLHF-PG against a reward; returns :class:`nlhf.train.run.RunResult`.

    ``reward_fn(prompts, responses) -> (N,)`` replaces loading ``cfg.reward``; the other
    keyword arguments as in :func:`nlhf.train.nash_md.run_nash_md`.
    """
    # 1. Checks, then model, reward model and prompts loaded, policy pi and reference mu on the device.
    check_model_pair(model, tokenizer, "run_rlhf")
    cfg.check_complete(need_prompts=train_prompts is None, need_reward=reward_fn is None)
    cfg = resolve_model_settings(cfg)  # dtype auto resolved, attention / QLoRA checked
    run = prepare_sampling_run(cfg, "algorithm", model=model, tokenizer=tokenizer, train_prompts=train_prompts,
                               eval_prompts=eval_prompts, reference_model=reference_model,
                               load_scorer=None if reward_fn is not None else lambda: load_reward_model(cfg.reward))  # fmt: skip
    if reward_fn is None:
        reward_fn = reward_model_fn(run.scorer, cfg.reward_batch_size)
    tokenizer = run.tokenizer

    # 2. The sampler, PPO's rollout buffer, the loop with the step; train; save.
    sampler = run.make_sampler(cfg.sampling)
    buffer = RolloutBuffer() if cfg.algorithm == "ppo" else None
    loop = make_prompt_loop(cfg, run, make_step(cfg, sampler, reward_fn, tokenizer, run.reference, buffer),
                            make_eval_step(cfg, sampler, reward_fn, tokenizer),
                            stateful={"rollout_buffer": buffer} if buffer is not None else None,
                            optimizer_fn=optimizer_fn)  # fmt: skip
    extra = {"algorithm": cfg.algorithm, "tau": cfg.tau, "group_size": cfg.group_size,
             "ppo_epochs": cfg.epochs if cfg.algorithm == "ppo" else None,
             "n_train": len(run.train_items), "n_eval": len(run.eval_items or ())}  # fmt: skip
    return train_and_save(cfg, loop, tokenizer, run.out, run.timings, extra)


def summary_line(result: RunResult) -> str:
    """The one JSON line ``nlhf train ppo|rlhf-pg`` prints at the end."""
    return summary_json(result, ("algorithm", "tau", "group_size", "steps"),
                        ("loss", "reward", "reward_vs_ref", "kl_k3", "length", "truncated"))  # fmt: skip


__all__ = [
    "RLHF_ALGORITHMS",
    "RLHFConfig",
    "RolloutBuffer",
    "reward_model_fn",
    "compute_rewards",
    "make_pg_step",
    "make_ppo_step",
    "make_step",
    "ppo_behaviour_terms",
    "rollout_sampler",
    "make_eval_step",
    "run_rlhf",
    "summary_line",
]
