"""INPO, Iterative Nash Policy Optimization (Zhang et al., ICLR 2025): ``nlhf train inpo`` (THEORY.md Sec. 8.2).

Config, step and run wiring, on the shared loop (:mod:`nlhf.train.loop`), in outer
iterations: pi_t is a frozen copy of the policy taken at the start of iteration t
(:class:`nlhf.train.rollouts.IterationSnapshot`), and iteration t is ``steps_per_iteration``
optimiser steps. For each micro-batch of B prompts x, :func:`make_step`'s ``inpo_step``

1. refreshes pi_t when the step starts a new iteration (pi_0 = the initial policy);
2. samples a pair y, y' ~ pi_t per prompt in one decode loop over the prompts stacked twice
   (rows b and B + b are prompt b, on two sub-streams of the row's own random stream,
   :func:`nlhf.sampling.streams.row_generator`, as online IPO);
3. judges P(y > y' | x) (one judge call of B pairs; no win rates against pi_t needed);
4. recomputes the sequence log-probs (sums over the response tokens) of both responses
   under pi_theta WITH gradient, and under pi_t and mu without, and takes INPO's pairwise
   square loss (:func:`nlhf.losses.successors.inpo_loss`), one value per prompt:

       h = log pi_theta(y)/pi_theta(y') - eta tau log mu(y)/mu(y') - (1 - eta tau) log pi_t(y)/pi_t(y'),
       loss = ( h - eta (P(y > y' | x) - 1/2) )^2.

   (INPO's loss on the judge's ordered pair, (h(y_w, y_l) - eta/2)^2, has the same expected
   gradient; the soft label has less variance.)

Its exact tabular form is online mirror descent with KL to mu and to pi_t,
pi_{t+1} proportional to pi_t^(1 - eta tau) mu^(eta tau) exp(eta P(. > pi_t))
(:func:`nlhf.lab.successors.inpo`), whose last iterate converges to the regularised
equilibrium pi*_tau (:func:`nlhf.lab.regularized_nash`) for eta small enough; eta tau <= 1 is
required. The learning-rate schedule is the loop's, over the whole run.

Sampling. At temperature 1 with no top-k/top-p the pairs are pi_t's own samples; otherwise
pi_t's tempered/truncated distribution is the design distribution of the regression (no
importance weights), which moves its tabular minimiser away from the mirror-descent step.

Metrics (means over prompts): ``loss``; ``win_rate`` = P(y > y') (about 1/2: both from pi_t);
``h`` and ``target`` = eta (P - 1/2); ``kl_k1``, ``kl_k3``: KL(pi_theta || mu) estimated on pi_t's
samples with the weight pi_theta/pi_t; ``iteration`` (t); ``length``, ``truncated`` of y.
Evaluation as Nash-MD's (:func:`nlhf.train.rollouts.make_judge_eval_step`). Run directory as
Nash-MD's, pi_t in every checkpoint (``extra.pt``, key ``snapshot``), so ``--resume`` inside an
iteration is exact.

Importing this module is cheap (no torch): the CLI (:mod:`nlhf.train.cli`) imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
class INPOConfig(PromptRunConfig):
    """Everything ``nlhf train inpo`` reads (and :class:`PromptRunConfig`'s fields).

    ``eta``: the mirror-descent step; ``tau``: the KL strength to mu (eta tau <= 1; the
    fixed point is pi*_tau). ``steps_per_iteration``: optimiser steps per outer iteration
    (pi_t refreshed between them). ``judge``: a directory saved by ``nlhf train-pm`` or
    ``nlhf train-rm`` (or any ``--judge`` spec); :func:`run_inpo` also takes any judge object.
    """

    algorithm: Literal["inpo"] = "inpo"
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
        check(self.eta * self.tau <= 1.0, "eta",
              f"eta * tau must be <= 1 (the exponent 1 - eta tau of pi_t), got eta={self.eta}, tau={self.tau}")  # fmt: skip
        check(
            self.steps_per_iteration >= 1,
            "steps_per_iteration",
            f"must be >= 1, got {self.steps_per_iteration}",
        )
        check_prompt_settings(self, "judge_batch_size")

    def check_complete(self, *, need_prompts: bool = True, need_judge: bool = True) -> None:
        """The fields without a usable default (called before any data or model loads)."""
        self.check_run_complete("judge", JUDGE_HINT if need_judge else None, need_prompts)


def make_step(cfg: INPOConfig, sampler: Any, judge: Any, tokenizer: Any, reference: Any,
              snapshot: IterationSnapshot, data: IterationData | None = None) -> Callable[..., Any]:  # fmt: skip
    """INPO's training step: per-prompt losses (B,), weight 1 each."""
    import torch

    from nlhf.logprobs import seq_logps
    from nlhf.losses.successors import inpo_loss
    from nlhf.sampling.decode import response_logps
    from nlhf.sampling.streams import row_generator

    eta, tau, seed = cfg.eta, cfg.tau, cfg.loop.seed

    def inpo_step(model: Any, batch: PromptItemBatch, ctx: Any) -> Any:
        snapshot.refresh(ctx.step)  # pi_t: the policy at the start of this step's iteration
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
        with torch.no_grad():
            snap = seq_logps(response_logps(snapshot.model, pair), mask, "sum")  # (2B,) log pi_t
        ref_tokens = reference_logps(reference, pair)  # (2B, R)
        seq, ref = seq_logps(logps, mask, "sum"), seq_logps(ref_tokens, mask, "sum")  # (2B,) each
        out = inpo_loss(seq[:B], seq[B:], snap[:B], snap[B:], ref[:B], ref[B:], preference, eta, tau)
        weight = torch.exp(seq.detach() - snap)  # (2B,) pi_theta/pi_t: KL(pi_theta || mu) on pi_t's samples
        k1, k3 = weighted_kl(logps, ref_tokens, mask, weight)
        metrics = {"win_rate": out.metrics["preference"], "h": out.metrics["h"], "target": out.metrics["target"],
                   "kl_k1": 0.5 * (k1[:B] + k1[B:]), "kl_k3": 0.5 * (k3[:B] + k3[B:]),
                   "iteration": torch.full_like(preference, float(snapshot.iteration)),
                   **rollout_metrics(first)}  # fmt: skip
        return step_output(out.loss, metrics)

    return inpo_step


def run_inpo(
    cfg: INPOConfig,
    *,
    model: Any = None,
    tokenizer: Any = None,
    judge: Any = None,
    train_prompts: Sequence[Any] | None = None,
    eval_prompts: Sequence[Any] | None = None,
    optimizer_fn: Callable[[Any], Any] | None = None,
    reference_model: Any = None,
) -> RunResult:
    """Train a policy with INPO; the keyword arguments as :func:`nlhf.train.nash_md.run_nash_md`'s."""
    cfg = resolve_model_settings(cfg)  # dtype auto resolved, attention / QLoRA checked
    run = prepare_judged_run(cfg, "run_inpo", "nlhf train", model=model, tokenizer=tokenizer, judge=judge,
                             train_prompts=train_prompts, eval_prompts=eval_prompts,
                             reference_model=reference_model)  # fmt: skip
    judge, tokenizer = run.scorer, run.tokenizer
    loop, snapshot = make_iteration_loop(cfg, run, make_step, judge, optimizer_fn)
    extra = {"algorithm": "inpo", "eta": cfg.eta, "tau": cfg.tau, "steps_per_iteration": cfg.steps_per_iteration,
             **prompt_counts(run)}  # fmt: skip
    return train_and_save(cfg, loop, tokenizer, run.out, run.timings, extra, snapshot)


def summary_line(result: RunResult) -> str:
    """The one JSON line ``nlhf train inpo`` prints at the end."""
    return summary_json(result, ("algorithm", "eta", "tau", "steps_per_iteration", "steps"),
                        ("loss", "win_rate", "win_rate_vs_ref", "kl_k3", "length", "truncated"))  # fmt: skip


__all__ = ["INPOConfig", "make_step", "run_inpo", "summary_line"]
