"""Nash mirror prox / extragradient (Tiapkin et al. 2025): ``nlhf train mirror-prox`` (THEORY.md Sec. 8.5).

Two magnetic-mirror steps from the same pi_t per outer iteration, on the shared loop
(:mod:`nlhf.train.loop`). pi_t is a frozen copy of the policy taken at the start of
iteration t (:class:`nlhf.train.rollouts.IterationSnapshot`); iteration t is
``steps_per_iteration`` = 2 S optimiser steps, two halves of S steps:

* extrapolation (steps [2tS, 2tS + S)): the policy is regressed onto the MMD step from pi_t
  with the payoff P(. > pi_t) (INPO's/MPO's pair loss with magnet mu): pi_{t+1/2};
* update (steps [2tS + S, 2(t+1)S)): pi_{t+1/2} is frozen (a second snapshot, refreshed
  every S steps and checkpointed), and the policy is regressed onto the MMD step FROM pi_t
  with the payoff P(. > pi_{t+1/2}):

      pi_{t+1}(y) proportional to ( pi_t(y) mu(y)^(eta tau) exp(eta P(y > pi_{t+1/2})) )^(1/(1 + eta tau)).

Each micro-batch of B prompts (:func:`make_step`'s ``mirror_prox_step``) samples a pair
y, y' ~ pi_t per prompt and takes :func:`nlhf.losses.successors.mirror_pair_loss` with step
eta' = eta / (1 + eta tau) (the MMD step's exponents), anchor pi_t, magnet mu and the payoff
gap c: P(y > y') - 1/2 in the extrapolation; P(y > z) - P(y' > z) with one z ~ pi_{t+1/2}
per prompt in the update (unbiased for P(y > pi_{t+1/2}) - P(y' > pi_{t+1/2}); two judge
calls of B pairs). The exact tabular minimiser of each half is the MMD step above, so the
trainer's exact form is :func:`nlhf.lab.successors.nash_mirror_prox` (one lab step = one
outer iteration): fixed point pi*_tau, last-iterate linear convergence for eta small enough
for the game (and at steps where plain MMD cycles). Any eta > 0 and tau > 0.

Metrics (means over prompts): ``loss``; ``payoff_gap`` = c; ``h``, ``target``; ``kl_k1``,
``kl_k3``: KL(pi_theta || mu) on pi_t's samples weighted by pi_theta/pi_t; ``iteration``;
``phase`` (0 extrapolation, 1 update); ``length``, ``truncated``. Evaluation and run directory
as INPO's (pi_t and pi_{t+1/2} in every checkpoint: ``--resume`` is exact).

Importing this module is cheap (no torch): the CLI (:mod:`nlhf.train.cli`) imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from nlhf.config import check, sections_from_dicts
from nlhf.data.prompt_batches import PromptItemBatch, stack_prompts
from nlhf.judges import judge_preference
from nlhf.train.config import JUDGE_HINT, PromptRunConfig, check_prompt_settings
from nlhf.train.rollouts import (
    IterationData,
    IterationSnapshot,
    iteration_values,
    reference_logps,
    rollout_metrics,
    split_rollout,
    step_output,
    weighted_kl,
)
from nlhf.train.run import (
    RunResult,
    make_iteration_loop,
    prepare_judged_run,
    prompt_counts,
    resolve_model_settings,
    summary_json,
    train_and_save,
)


@dataclass(frozen=True)
class MirrorProxConfig(PromptRunConfig):
    """Everything ``nlhf train mirror-prox`` reads (and :class:`PromptRunConfig`'s fields).

    ``eta``: the MMD step (any eta > 0); ``tau``: the KL strength to mu (fixed point pi*_tau);
    ``steps_per_iteration``: optimiser steps per outer iteration, even (half extrapolation,
    half update). ``judge``: any ``--judge`` spec; :func:`run_mirror_prox` also takes any judge object.
    """

    algorithm: Literal["mirror_prox"] = "mirror_prox"
    eta: float = 1.0
    tau: float = 0.1
    steps_per_iteration: int = 100
    judge: str = ""  # --judge
    judge_batch_size: int = 16

    def __post_init__(self) -> None:
        sections_from_dicts(self)  # nested sections given as plain dicts
        check(
            self.tau > 0 and self.tau != float("inf"), "tau", f"must be a finite number > 0, got {self.tau}"
        )
        check(
            self.eta > 0 and self.eta != float("inf"), "eta", f"must be a finite number > 0, got {self.eta}"
        )
        check(self.steps_per_iteration >= 2 and self.steps_per_iteration % 2 == 0, "steps_per_iteration",
              f"must be even and >= 2 (an extrapolation half and an update half), got {self.steps_per_iteration}")  # fmt: skip
        check_prompt_settings(self, "judge_batch_size")

    def check_complete(self, *, need_prompts: bool = True, need_judge: bool = True) -> None:
        """The fields without a usable default (called before any data or model loads)."""
        self.check_run_complete("judge", JUDGE_HINT if need_judge else None, need_prompts)

    @property
    def mirror_step(self) -> float:
        """eta' = eta / (1 + eta tau): the mirror-descent step of one MMD step."""
        return self.eta / (1.0 + self.eta * self.tau)


def make_step(cfg: MirrorProxConfig, sampler: Any, judge: Any, tokenizer: Any, reference: Any,
              snapshot: IterationSnapshot, half: IterationSnapshot, half_sampler: Any,
              data: IterationData | None = None) -> Callable[..., Any]:  # fmt: skip
    """Mirror prox's training step: per-prompt losses (B,), weight 1 each. ``half``: pi_{t+1/2}
    (refreshed every S = steps_per_iteration / 2 steps); ``half_sampler`` samples from it."""
    import torch

    from nlhf.logprobs import seq_logps
    from nlhf.losses.successors import mirror_pair_loss
    from nlhf.sampling.decode import response_logps
    from nlhf.sampling.streams import RowGenerator, row_generator

    eta, tau, seed, S = cfg.mirror_step, cfg.tau, cfg.loop.seed, cfg.steps_per_iteration // 2

    def mirror_prox_step(model: Any, batch: PromptItemBatch, ctx: Any) -> Any:
        snapshot.refresh(ctx.step)  # pi_t
        half.refresh(ctx.step)  # in the update half: pi_{t+1/2}, the policy at the end of the extrapolation
        update = (ctx.step // S) % 2 == 1
        B, device = batch.prompts.batch_size, batch.prompts.input_ids.device

        def sample_and_judge() -> dict[str, Any]:
            seeds = row_generator(seed, ctx, device).tile(3).seeds  # (3B,)
            pair = sampler.sample(
                stack_prompts(batch.prompts, 2), RowGenerator(seeds[: 2 * B])
            )  # y, y' ~ pi_t
            first, second = split_rollout(pair, B)
            if not update:
                return {
                    "pair": pair,
                    "gap": judge_preference(judge, batch.texts, first, second, tokenizer) - 0.5,
                }
            z = half_sampler.sample(batch.prompts, RowGenerator(seeds[2 * B :]))  # (B, .) z ~ pi_{t+1/2}
            gap = judge_preference(judge, batch.texts, first, z, tokenizer) - judge_preference(
                judge, batch.texts, second, z, tokenizer
            )  # (B,) P(y > z) - P(y' > z)
            return {"pair": pair, "z": z, "gap": gap}

        got = iteration_values(data, snapshot.iteration, ctx, sample_and_judge, device)  # saved, or drawn now
        pair, gap = got["pair"], got["gap"]  # gap (B,)
        first = split_rollout(pair, B)[0]
        mask = pair.response_mask
        logps = response_logps(model, pair)  # (2B, R) with gradient
        ref_tokens = reference_logps(reference, pair)  # (2B, R) log mu
        with torch.no_grad():
            snap = seq_logps(response_logps(snapshot.model, pair), mask, "sum")  # (2B,) log pi_t
        seq, ref = seq_logps(logps, mask, "sum"), seq_logps(ref_tokens, mask, "sum")  # (2B,) each
        out = mirror_pair_loss(seq[:B], seq[B:], snap[:B], snap[B:], ref[:B], ref[B:], gap, eta, tau)
        weight = torch.exp(seq.detach() - snap)  # (2B,) pi_theta/pi_t
        k1, k3 = weighted_kl(logps, ref_tokens, mask, weight)
        metrics = {"payoff_gap": gap, "h": out.metrics["h"], "target": out.metrics["target"],
                   "kl_k1": 0.5 * (k1[:B] + k1[B:]), "kl_k3": 0.5 * (k3[:B] + k3[B:]),
                   "iteration": torch.full_like(gap, float(snapshot.iteration)),
                   "phase": torch.full_like(gap, float(update)), **rollout_metrics(first)}  # fmt: skip
        return step_output(out.loss, metrics)

    return mirror_prox_step


def run_mirror_prox(
    cfg: MirrorProxConfig,
    *,
    model: Any = None,
    tokenizer: Any = None,
    judge: Any = None,
    train_prompts: Sequence[Any] | None = None,
    eval_prompts: Sequence[Any] | None = None,
    optimizer_fn: Callable[[Any], Any] | None = None,
    reference_model: Any = None,
) -> RunResult:
    """Train a policy with Nash mirror prox; the keyword arguments as :func:`nlhf.train.nash_md.run_nash_md`'s."""
    cfg = resolve_model_settings(cfg)  # dtype auto resolved, attention / QLoRA checked
    run = prepare_judged_run(cfg, "run_mirror_prox", "nlhf train", model=model, tokenizer=tokenizer, judge=judge,
                             train_prompts=train_prompts, eval_prompts=eval_prompts,
                             reference_model=reference_model)  # fmt: skip
    judge, tokenizer = run.scorer, run.tokenizer
    half = IterationSnapshot(run.policy, cfg.steps_per_iteration // 2)
    half_sampler = half.sampler(run.reference, cfg.sampling, run.eos_token_id, run.pad_token_id)
    step = partial(make_step, half=half, half_sampler=half_sampler)
    loop, snapshot = make_iteration_loop(cfg, run, step, judge, optimizer_fn, stateful={"half": half})
    extra = {"algorithm": "mirror_prox", "eta": cfg.eta, "tau": cfg.tau, "steps_per_iteration": cfg.steps_per_iteration,
             **prompt_counts(run)}  # fmt: skip
    return train_and_save(cfg, loop, tokenizer, run.out, run.timings, extra, snapshot)


def summary_line(result: RunResult) -> str:
    """The one JSON line ``nlhf train mirror-prox`` prints at the end."""
    return summary_json(result, ("algorithm", "eta", "tau", "steps_per_iteration", "steps"),
                        ("loss", "payoff_gap", "win_rate_vs_ref", "kl_k3", "length", "truncated"))  # fmt: skip


__all__ = ["MirrorProxConfig", "make_step", "run_mirror_prox", "summary_line"]
