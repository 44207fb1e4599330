"""DNO, Direct Nash Optimization (Rosset et al. 2024): ``nlhf train dno`` (THEORY.md Sec. 8.3).

Config, step and run wiring, on the shared loop (:mod:`nlhf.train.loop`), in outer
iterations: pi_t is a frozen copy of the policy taken at the start of iteration t
(:class:`nlhf.train.rollouts.IterationSnapshot`), and iteration t is ``steps_per_iteration``
optimiser steps. For each micro-batch of B prompts x, :func:`make_step`'s ``dno_step``

1. refreshes pi_t when the step starts a new iteration (pi_0 = the initial policy);
2. samples K = ``responses_per_prompt`` responses y_1..y_K ~ pi_t per prompt (each on its own
   random stream, :func:`nlhf.sampling.streams.row_generator`, so a resumed run draws the same);
3. judges every ordered pair of the prompt's responses (one judge call of B K (K - 1)
   pairs) and estimates each response's win rate against pi_t from the others,
   p_hat_i = (1/(K-1)) sum_{j != i} P(y_i > y_j | x), as SPPO does;
4. keeps the pair (y_w, y_l) = (argmax, argmin of p_hat) when its margin
   p_hat_w - p_hat_l is > 0 and >= ``margin`` (DNO's large-margin filter; as
   :func:`nlhf.lab.successors.dno`), and takes DNO's contrastive loss with pi_t as the
   reference (:func:`nlhf.losses.successors.dno_loss`)

       loss = -( l log sigma(beta h) + (1 - l) log sigma(-beta h) ),
       h = log pi_theta(y_w)/pi_t(y_w) - log pi_theta(y_l)/pi_t(y_l),

   with l = 1 (``label=hard``: DNO's practical algorithm, DPO against pi_t) or
   l = sigma(p_hat_w - p_hat_l) (``label=soft``: the tabular form). One value per prompt,
   0 where the pair is not kept (weight 1 per prompt: the mean runs over all prompts, so a
   step with few kept pairs moves less; the tabular minimiser is the same).

What it converges to (tabular, THEORY.md Sec. 8.3): the soft-label loss on all pairs with
exact win rates is minimised at soft policy iteration pi_t exp(r_t / beta), r_t = P(. > pi_t):
multiplicative weights with step 1/beta (:func:`nlhf.lab.successors.dno`). Its last iterate
reaches the Condorcet winner where the game has one and cycles around an interior
equilibrium (only the average converges, to a tau = 0 Nash equilibrium). A rest point of the
trainer is a policy whose samples show no margin (a vertex; or exploitability < margin).

Metrics (means over prompts): ``loss``; ``kept`` (the fraction of prompts with a pair);
``margin`` = p_hat_w - p_hat_l; ``win_rate`` = mean p_hat (1/2: a group against itself);
``h`` and ``label`` (0 where not kept); ``kl_k1``, ``kl_k3``: KL(pi_theta || mu) on pi_t's
samples weighted by pi_theta/pi_t; ``iteration``; ``length``, ``truncated``. Evaluation as
Nash-MD's; run directory as SPPO's (pi_t in every checkpoint: exact ``--resume``).

Importing this module is cheap (no torch): the CLI (:mod:`nlhf.train.cli`) imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from nlhf.config import check, sections_from_dicts
from nlhf.data.prompt_batches import PromptItemBatch, repeat_prompts
from nlhf.train.config import JUDGE_HINT, PromptRunConfig, check_prompt_settings
from nlhf.train.rollouts import (
    IterationData,
    IterationSnapshot,
    iteration_values,
    judge_group_pairs,
    reference_logps,
    rollout_metrics,
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
class DNOConfig(PromptRunConfig):
    """Everything ``nlhf train dno`` reads (and :class:`PromptRunConfig`'s fields).

    ``beta``: the inverse step (DPO's beta against pi_t; the tabular step is 1/beta).
    ``margin``: the smallest win-rate gap p_hat_w - p_hat_l a pair needs to be kept, in [0, 1).
    ``label``: ``hard`` (l = 1, DPO) or ``soft`` (l = sigma(p_hat_w - p_hat_l)).
    ``responses_per_prompt`` K >= 2; ``steps_per_iteration``: optimiser steps per outer
    iteration. ``judge``: any ``--judge`` spec; :func:`run_dno` also takes any judge object.
    """

    algorithm: Literal["dno"] = "dno"
    beta: float = 0.1
    margin: float = 0.0
    label: Literal["hard", "soft"] = "hard"
    responses_per_prompt: int = 4
    steps_per_iteration: int = 100
    judge: str = ""  # --judge
    judge_batch_size: int = 16

    def __post_init__(self) -> None:
        sections_from_dicts(self)  # nested sections given as plain dicts
        check(self.beta > 0 and self.beta != float("inf"), "beta",
              f"must be a finite number > 0, got {self.beta}")  # fmt: skip
        check(0.0 <= self.margin < 1.0, "margin", f"must lie in [0, 1) (a win-rate gap), got {self.margin}")
        check(self.label in ("hard", "soft"), "label", f"must be hard or soft, got {self.label!r}")
        check(self.responses_per_prompt >= 2, "responses_per_prompt",
              f"must be >= 2 (a pair per prompt), got {self.responses_per_prompt}")  # fmt: skip
        check(
            self.steps_per_iteration >= 1,
            "steps_per_iteration",
            f"must be >= 1, got {self.steps_per_iteration}",
        )
        check_prompt_settings(self, "judge_batch_size")

    def check_complete(self, *, need_prompts: bool = True, need_judge: bool = True) -> None:
        """The fields without a usable default (called before any data or model loads)."""
        self.check_run_complete("judge", JUDGE_HINT if need_judge else None, need_prompts)


def select_pairs(win_rate: Any, margin: float) -> tuple[Any, Any, Any, Any]:
    """``(best, worst, gap, kept)`` per prompt from the (B, K) estimated win rates.

    best/worst: (B,) indices of the first argmax/argmin; gap (B,) = max - min; kept (B,)
    bool: gap > 0 and gap >= ``margin`` (:func:`nlhf.lab.successors.dno`'s filter).
    """
    best, worst = win_rate.argmax(dim=1), win_rate.argmin(dim=1)  # (B,) each
    gap = win_rate.max(dim=1).values - win_rate.min(dim=1).values  # (B,)
    return best, worst, gap, (gap > 0) & (gap >= margin)


def make_step(cfg: DNOConfig, sampler: Any, judge: Any, tokenizer: Any, reference: Any,
              snapshot: IterationSnapshot, data: IterationData | None = None) -> Callable[..., Any]:  # fmt: skip
    """DNO's training step: per-prompt losses (B,) (0 where no pair is kept), weight 1 each."""
    import torch

    from nlhf.logprobs import seq_logps
    from nlhf.losses.successors import dno_loss
    from nlhf.sampling.decode import response_logps
    from nlhf.sampling.streams import row_generator

    beta, margin, seed, K, soft = (
        cfg.beta,
        cfg.margin,
        cfg.loop.seed,
        cfg.responses_per_prompt,
        cfg.label == "soft",
    )

    def dno_step(model: Any, batch: PromptItemBatch, ctx: Any) -> Any:
        snapshot.refresh(ctx.step)  # pi_t: the policy at the start of this step's iteration
        B, device = batch.prompts.batch_size, batch.prompts.input_ids.device

        def sample_and_judge() -> dict[str, Any]:
            gen = row_generator(seed, ctx, device).repeat_interleave(K)  # (B K,)
            y = sampler.sample(repeat_prompts(batch.prompts, K), gen)  # (B K, .) y ~ pi_t, prompt-major
            return {"y": y, "matrix": judge_group_pairs(judge, batch.texts, y, tokenizer, K)}  # (B, K, K)

        got = iteration_values(data, snapshot.iteration, ctx, sample_and_judge, device)  # saved, or drawn now
        y, matrix = got["y"], got["matrix"]  # matrix: diagonal 1/2
        win_rate = (matrix.sum(dim=2) - 0.5) / (K - 1)  # (B, K) p_hat
        best, worst, gap, kept = select_pairs(win_rate, margin)
        rows = torch.arange(B, device=best.device) * K
        chosen, rejected = rows + best, rows + worst  # (B,) rows of y
        mask = y.response_mask
        logps = response_logps(model, y)  # (B K, R) with gradient
        with torch.no_grad():
            snap = seq_logps(response_logps(snapshot.model, y), mask, "sum")  # (B K,) log pi_t
        seq = seq_logps(logps, mask, "sum")  # (B K,)
        label = torch.sigmoid(gap) if soft else torch.ones_like(gap)  # (B,)
        out = dno_loss(seq[chosen], seq[rejected], snap[chosen], snap[rejected], label.to(seq.dtype), beta)
        keep = kept.to(out.loss.dtype)  # (B,)
        weight = torch.exp(seq.detach() - snap)  # (B K,) pi_theta/pi_t: KL(pi_theta || mu) on pi_t's samples
        k1, k3 = weighted_kl(logps, reference_logps(reference, y), mask, weight)
        group = {"kl_k1": k1, "kl_k3": k3, **rollout_metrics(y)}
        metrics = {k: v.float().reshape(B, K).mean(dim=1) for k, v in group.items()}  # (B,) each
        metrics.update(kept=keep, margin=gap, win_rate=win_rate.mean(dim=1), h=out.metrics["h"] * keep,
                       label=out.metrics["label"] * keep,
                       iteration=torch.full_like(gap, float(snapshot.iteration)))  # fmt: skip
        return step_output(out.loss * keep, metrics)

    return dno_step


def run_dno(
    cfg: DNOConfig,
    *,
    model: Any = None,
    tokenizer: Any = None,
    judge: Any = None,
    train_prompts: Sequence[Any] | None = None,
    eval_prompts: Sequence[Any] | None = None,
    optimizer_fn: Callable[[Any], Any] | None = None,
    reference_model: Any = None,
) -> RunResult:
    """Train a policy with DNO; the keyword arguments as :func:`nlhf.train.nash_md.run_nash_md`'s."""
    cfg = resolve_model_settings(cfg)  # dtype auto resolved, attention / QLoRA checked
    run = prepare_judged_run(cfg, "run_dno", "nlhf train", model=model, tokenizer=tokenizer, judge=judge,
                             train_prompts=train_prompts, eval_prompts=eval_prompts,
                             reference_model=reference_model)  # fmt: skip
    judge, tokenizer = run.scorer, run.tokenizer
    loop, snapshot = make_iteration_loop(cfg, run, make_step, judge, optimizer_fn)
    extra = {"algorithm": "dno", "beta": cfg.beta, "margin": cfg.margin, "label": cfg.label,
             "responses_per_prompt": cfg.responses_per_prompt, "steps_per_iteration": cfg.steps_per_iteration,
             **prompt_counts(run)}  # fmt: skip
    return train_and_save(cfg, loop, tokenizer, run.out, run.timings, extra, snapshot)


def summary_line(result: RunResult) -> str:
    """The one JSON line ``nlhf train dno`` prints at the end."""
    return summary_json(result, ("algorithm", "beta", "margin", "label", "responses_per_prompt",
                                 "steps_per_iteration", "steps"),
                        ("loss", "kept", "margin", "win_rate_vs_ref", "kl_k3", "length", "truncated"))  # fmt: skip


__all__ = ["DNOConfig", "make_step", "run_dno", "select_pairs", "summary_line"]
