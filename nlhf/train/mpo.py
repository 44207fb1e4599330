"""MPO, Magnetic Preference Optimization (Wang et al. 2024): ``nlhf train mpo`` (THEORY.md Sec. 8.4).

Magnetic mirror descent (MMD) whose magnet is refreshed, on the shared loop
(:mod:`nlhf.train.loop`), in outer iterations: pi_t is a frozen copy of the policy taken at
the start of iteration t (:class:`nlhf.train.rollouts.IterationSnapshot`), iteration t is
``steps_per_iteration`` optimiser steps, and the magnet rho is mu (the reference) for the
first ``magnet_every`` iterations, then a frozen copy of the policy taken at the start of
every ``magnet_every``-th iteration (a second snapshot, saved in checkpoints). Iteration t
targets the MMD step

    pi_{t+1}(y) proportional to ( pi_t(y) rho(y)^(eta tau) exp(eta P(y > pi_t)) )^(1/(1 + eta tau)),

i.e. INPO's mirror-descent step with step eta' = eta / (1 + eta tau) and the magnet in mu's
place (same exponents: eta' tau = eta tau / (1 + eta tau), 1 - eta' tau = 1 / (1 + eta tau)).
So each micro-batch of B prompts x, :func:`make_step`'s ``mpo_step``

1. refreshes pi_t (and the magnet, every ``magnet_every`` iterations);
2. samples a pair y, y' ~ pi_t per prompt (rows b and B + b, each on its own random stream);
3. judges P(y > y' | x) (one judge call of B pairs);
4. takes INPO's pairwise square loss (:func:`nlhf.losses.successors.inpo_loss`) with eta',
   tau and the magnet's sequence log-probs as the anchor:

       h = log pi_theta(y)/pi_theta(y') - eta' tau log rho(y)/rho(y') - (1 - eta' tau) log pi_t(y)/pi_t(y'),
       loss = ( h - eta' (P(y > y' | x) - 1/2) )^2,

   whose exact tabular minimiser is the MMD step above.

Its exact tabular form is :func:`nlhf.lab.successors.mpo` (one lab step = one outer
iteration, the magnet replaced every ``magnet_every`` steps): each stage approaches the
regularised equilibrium around its magnet, the stages are a proximal-point iteration on the
unregularised game, and the last iterate converges to a tau = 0 Nash equilibrium (also an
interior one, where SPPO/DNO cycle). Any eta > 0 is allowed. ``magnet_every = 1`` is
multiplicative weights with step eta' (it cycles).

Metrics (means over prompts): ``loss``; ``win_rate`` = P(y > y'); ``h``, ``target``;
``kl_k1``, ``kl_k3``: KL(pi_theta || mu) on pi_t's samples weighted by pi_theta/pi_t;
``iteration``; ``magnet`` (how many times the magnet was refreshed); ``length``,
``truncated``. Evaluation and run directory as INPO's (pi_t and the magnet in every
checkpoint, ``extra.pt`` keys ``snapshot`` and ``magnet``: ``--resume`` is exact).

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
class MPOConfig(PromptRunConfig):
    """Everything ``nlhf train mpo`` reads (and :class:`PromptRunConfig`'s fields).

    ``eta``: the MMD step (any eta > 0); ``tau``: the pull to the magnet; ``magnet_every``:
    outer iterations between magnet refreshes (the magnet starts at mu);
    ``steps_per_iteration``: optimiser steps per outer iteration. ``judge``: any ``--judge``
    spec; :func:`run_mpo` also takes any judge object.
    """

    algorithm: Literal["mpo"] = "mpo"
    eta: float = 1.0
    tau: float = 0.1
    magnet_every: int = 5
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
        check(self.magnet_every >= 1, "magnet_every", f"must be >= 1 (iterations), got {self.magnet_every}")
        check(
            self.steps_per_iteration >= 1,
            "steps_per_iteration",
            f"must be >= 1, got {self.steps_per_iteration}",
        )
        check_prompt_settings(self, "judge_batch_size")

    def check_complete(self, *, need_prompts: bool = True, need_judge: bool = True) -> None:
        """The fields without a usable default (called before any data or model loads)."""
        self.check_run_complete("judge", JUDGE_HINT if need_judge else None, need_prompts)

    @property
    def mirror_step(self) -> float:
        """eta' = eta / (1 + eta tau): the mirror-descent step INPO's loss takes for one MMD step."""
        return self.eta / (1.0 + self.eta * self.tau)


def make_step(cfg: MPOConfig, sampler: Any, judge: Any, tokenizer: Any, reference: Any,
              snapshot: IterationSnapshot, magnet: IterationSnapshot,
              data: IterationData | None = None) -> Callable[..., Any]:  # fmt: skip
    """MPO's training step: per-prompt losses (B,), weight 1 each. ``magnet``: refreshed every
    ``magnet_every`` iterations; while it has never been refreshed the magnet is the reference mu."""
    import torch

    from nlhf.logprobs import seq_logps
    from nlhf.losses.successors import inpo_loss
    from nlhf.sampling.decode import response_logps
    from nlhf.sampling.streams import row_generator

    eta, tau, seed = cfg.mirror_step, cfg.tau, cfg.loop.seed

    def mpo_step(model: Any, batch: PromptItemBatch, ctx: Any) -> Any:
        snapshot.refresh(ctx.step)  # pi_t
        magnet.refresh(ctx.step)  # rho: the policy at the start of every magnet_every-th iteration
        B, device = batch.prompts.batch_size, batch.prompts.input_ids.device

        def sample_and_judge() -> dict[str, Any]:
            gen = row_generator(seed, ctx, device).tile(2)  # (2B,)
            pair = sampler.sample(stack_prompts(batch.prompts, 2), gen)  # rows b, B + b: y, y' ~ pi_t
            first, second = split_rollout(pair, B)
            return {
                "pair": pair,
                "preference": judge_preference(judge, batch.texts, first, second, tokenizer),
            }

        got = iteration_values(data, snapshot.iteration, ctx, sample_and_judge, device)  # saved, or drawn now
        pair, preference = got["pair"], got["preference"]  # preference (B,)
        first, second = split_rollout(pair, B)
        mask = pair.response_mask
        logps = response_logps(model, pair)  # (2B, R) with gradient
        ref_tokens = reference_logps(reference, pair)  # (2B, R) log mu
        with torch.no_grad():
            snap = seq_logps(response_logps(snapshot.model, pair), mask, "sum")  # (2B,) log pi_t
            rho_tokens = ref_tokens if magnet.iteration == 0 else response_logps(magnet.model, pair)
            rho = seq_logps(rho_tokens, mask, "sum")  # (2B,) log rho
        seq = seq_logps(logps, mask, "sum")  # (2B,)
        out = inpo_loss(seq[:B], seq[B:], snap[:B], snap[B:], rho[:B], rho[B:], preference, eta, tau)
        weight = torch.exp(seq.detach() - snap)  # (2B,) pi_theta/pi_t: KL(pi_theta || mu) on pi_t's samples
        k1, k3 = weighted_kl(logps, ref_tokens, mask, weight)
        metrics = {"win_rate": out.metrics["preference"], "h": out.metrics["h"], "target": out.metrics["target"],
                   "kl_k1": 0.5 * (k1[:B] + k1[B:]), "kl_k3": 0.5 * (k3[:B] + k3[B:]),
                   "iteration": torch.full_like(preference, float(snapshot.iteration)),
                   "magnet": torch.full_like(preference, float(magnet.iteration)), **rollout_metrics(first)}  # fmt: skip
        return step_output(out.loss, metrics)

    return mpo_step


def run_mpo(
    cfg: MPOConfig,
    *,
    model: Any = None,
    tokenizer: Any = None,
    judge: Any = None,
    train_prompts: Sequence[Any] | None = None,
    eval_prompts: Sequence[Any] | None = None,
    optimizer_fn: Callable[[Any], Any] | None = None,
    reference_model: Any = None,
) -> RunResult:
    """Train a policy with MPO; the keyword arguments as :func:`nlhf.train.nash_md.run_nash_md`'s."""
    cfg = resolve_model_settings(cfg)  # dtype auto resolved, attention / QLoRA checked
    run = prepare_judged_run(cfg, "run_mpo", "nlhf train", model=model, tokenizer=tokenizer, judge=judge,
                             train_prompts=train_prompts, eval_prompts=eval_prompts,
                             reference_model=reference_model)  # fmt: skip
    judge, tokenizer = run.scorer, run.tokenizer
    magnet = IterationSnapshot(run.policy, cfg.steps_per_iteration * cfg.magnet_every)
    loop, snapshot = make_iteration_loop(cfg, run, partial(make_step, magnet=magnet), judge, optimizer_fn,
                                         stateful={"magnet": magnet})  # fmt: skip
    extra = {"algorithm": "mpo", "eta": cfg.eta, "tau": cfg.tau, "magnet_every": cfg.magnet_every,
             "steps_per_iteration": cfg.steps_per_iteration, **prompt_counts(run)}  # fmt: skip
    return train_and_save(cfg, loop, tokenizer, run.out, run.timings, extra, snapshot)


def summary_line(result: RunResult) -> str:
    """The one JSON line ``nlhf train mpo`` prints at the end."""
    return summary_json(result, ("algorithm", "eta", "tau", "magnet_every", "steps_per_iteration", "steps"),
                        ("loss", "win_rate", "win_rate_vs_ref", "kl_k3", "length", "truncated"))  # fmt: skip


__all__ = ["MPOConfig", "make_step", "run_mpo", "summary_line"]
