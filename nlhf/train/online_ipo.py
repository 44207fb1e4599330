"""Online IPO and IPO-MD: ``nlhf train online-ipo | ipo-md`` (THEORY.md Sec. 6).

Config, step and run wiring, on the shared loop (:mod:`nlhf.train.loop`). For each
micro-batch of B prompts x, :func:`make_step`'s ``ipo_step``

1. samples two responses per prompt in one decode loop over the prompts stacked twice
   (rows b and B + b are prompt b, on two sub-streams of the row's own random stream,
   :func:`nlhf.sampling.streams.row_generator`):

   ==============  ===========================================================
   ``online_ipo``  y, y' ~ pi, independent
   ``ipo_md``      y, y' ~ the token-level mixture pi^(1-beta) mu^beta, independent
   ==============  ===========================================================

2. judges p = P(y > y' | x) with any :class:`nlhf.judges.Judge`;
3. recomputes log pi of both responses WITH gradient and takes the sequence log-probs with
   ``reduction`` (``sum``: THEORY.md's tau; ``mean``: length-normalised);
4. takes :func:`nlhf.losses.nash.online_ipo_loss`, one value per prompt, weight 1 each.

Sampling distribution. The loss assumes y, y' ~ pi (online IPO) at temperature 1 with no
top-k/top-p (``sampling.is_exact``). Otherwise online IPO weights each pair by w(y) w(y')
with w = pi/q (``max_importance_weight`` clips it), and IPO-MD refuses (the ratio of the
temperature-1 mixture to the sampled distribution needs the mixture's normaliser, which the
sampler does not record).

Metrics (means over prompts): ``loss``; ``win_rate`` = P(y > y') (two policy samples for
online IPO, so about 1/2); ``kl_k1``, ``kl_k3`` on both samples, importance-weighted by pi/q
when the samples are not from pi (IPO-MD's come from the mixture: weight pi/pi^beta, exact
at temperature 1); ``log_ratio_margin``; ``length``, ``truncated`` of y;
``importance_weight`` when weighted. Evaluation as Nash-MD's
(:func:`nlhf.train.rollouts.make_judge_eval_step`). Run directory: as Nash-MD's
(:mod:`nlhf.train.nash_md`).

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
    log_importance_weight,
    make_judge_eval_step,
    reference_logps,
    rollout_metrics,
    split_rollout,
    step_output,
    weighted_kl,
)
from nlhf.train.run import (
    RunResult,
    make_prompt_loop,
    prepare_judged_run,
    prompt_counts,
    resolve_model_settings,
    summary_json,
    train_and_save,
)

ONLINE_IPO_ALGORITHMS = ("online_ipo", "ipo_md")
DEFAULT_MIXTURE_COEF = 0.125  # IPO-MD's beta unless set (as Nash-MD's, THEORY.md Sec. 6)


@dataclass(frozen=True)
class OnlineIPOConfig(PromptRunConfig):
    """Everything ``nlhf train online-ipo|ipo-md`` reads (and :class:`PromptRunConfig`'s fields).

    ``mixture_coef``: IPO-MD's beta (None: 0.125); online IPO refuses a value. ``judge``: a
    directory saved by ``nlhf train-pm`` or ``nlhf train-rm``; :func:`run_online_ipo` also
    takes any judge object.
    """

    algorithm: Literal["online_ipo", "ipo_md"] = "online_ipo"
    tau: float = 0.1  # KL strength
    mixture_coef: float | None = None  # ipo_md's beta; None: 0.125
    reduction: Literal["sum", "mean"] = "sum"  # sequence log-probs (sum: THEORY.md's tau)
    max_importance_weight: float | None = (
        None  # clip w(y) w(y') (online_ipo, inexact sampling); None: no clip
    )
    judge: str = ""  # --judge: a saved preference or reward model directory
    judge_batch_size: int = 16

    def __post_init__(self) -> None:
        sections_from_dicts(self)  # nested sections given as plain dicts
        check(
            self.tau > 0 and self.tau != float("inf"), "tau", f"must be a finite number > 0, got {self.tau}"
        )
        beta = self.mixture_coef
        if beta is not None:
            check(0.0 <= beta <= 1.0, "mixture_coef", f"must be in [0, 1], got {beta}")
            check(self.algorithm == "ipo_md", "mixture_coef",
                  f"is not used by {self.algorithm} (only by ipo_md); remove it")  # fmt: skip
        check(self.max_importance_weight is None or self.max_importance_weight > 0, "max_importance_weight",
              f"must be > 0 (or null), got {self.max_importance_weight}")  # fmt: skip
        if self.algorithm == "ipo_md":
            check(self.sampling.is_exact, "sampling.temperature",
                  "ipo_md samples the geometric mixture itself: it needs temperature 1, top_k 0 and top_p 1 "
                  f"(got temperature={self.sampling.temperature}, top_k={self.sampling.top_k}, "
                  f"top_p={self.sampling.top_p})")  # fmt: skip
        check_prompt_settings(self, "judge_batch_size")

    @property
    def beta(self) -> float:
        """The mixture coefficient actually used (0 for online_ipo)."""
        if self.algorithm == "ipo_md":
            return DEFAULT_MIXTURE_COEF if self.mixture_coef is None else float(self.mixture_coef)
        return 0.0

    def check_complete(self, *, need_prompts: bool = True, need_judge: bool = True) -> None:
        """The fields without a usable default (called before any data or model loads)."""
        self.check_run_complete("judge", JUDGE_HINT if need_judge else None, need_prompts)


def make_step(
    cfg: OnlineIPOConfig, sampler: Any, judge: Any, tokenizer: Any, reference: Any
) -> Callable[..., Any]:
    """The training step of online IPO / IPO-MD: per-prompt losses (B,), weight 1 each."""
    import torch

    from nlhf.logprobs import seq_logps
    from nlhf.losses.nash import online_ipo_loss
    from nlhf.sampling.decode import response_logps
    from nlhf.sampling.streams import row_generator

    algorithm, beta, tau, seed = cfg.algorithm, cfg.beta, cfg.tau, cfg.loop.seed
    exact = cfg.sampling.is_exact

    def ipo_step(model: Any, batch: PromptItemBatch, ctx: Any) -> Any:
        prompts = batch.prompts
        B = prompts.batch_size
        gen = row_generator(seed, ctx, prompts.input_ids.device)
        both = stack_prompts(prompts, 2)  # (2B, P): rows b and B + b are prompt b
        gen = gen.tile(2)  # (2B,) streams: rows b and B + b on two sub-streams of prompt b's
        if algorithm == "online_ipo":
            pair = sampler.sample(both, gen)  # y (rows < B) and y' (rows >= B) ~ pi, independent
        else:
            pair = sampler.sample_mixture(both, beta, gen)  # both ~ token-level pi^(1-beta) mu^beta
        first, second = split_rollout(pair, B)
        preference = judge_preference(judge, batch.texts, first, second, tokenizer)  # (B,)
        logps = response_logps(model, pair)  # (2B, R) with gradient
        ref = reference_logps(reference, pair)  # (2B, R)
        mask = pair.response_mask
        seq = seq_logps(logps, mask, cfg.reduction)  # (2B,)
        ref_seq = seq_logps(ref, mask, cfg.reduction)  # (2B,)
        out = online_ipo_loss(seq[:B], seq[B:], ref_seq[:B], ref_seq[B:], preference, tau)
        log_w = log_importance_weight(logps, pair.sampling_logps, mask)  # (2B,) log pi/q
        loss = out.loss
        if algorithm == "online_ipo" and not exact:
            pair_weight = torch.exp(log_w[:B] + log_w[B:])  # (B,) w(y) w(y'): pairs as if drawn from pi x pi
            if cfg.max_importance_weight is not None:
                pair_weight = pair_weight.clamp(max=cfg.max_importance_weight)
            loss = pair_weight * loss
        # KL(pi || mu) on both samples: weight pi/q (1 when they come from pi itself)
        kl_weight = None if (algorithm == "online_ipo" and exact) else torch.exp(log_w)
        k1, k3 = weighted_kl(logps, ref, mask, kl_weight)  # (2B,) each
        metrics = {
            "win_rate": preference,
            "kl_k1": 0.5 * (k1[:B] + k1[B:]),
            "kl_k3": 0.5 * (k3[:B] + k3[B:]),
            "log_ratio_margin": out.metrics["log_ratio_margin"],
            **rollout_metrics(first),
        }
        if kl_weight is not None:
            metrics["importance_weight"] = 0.5 * (kl_weight[:B] + kl_weight[B:])
        return step_output(loss, metrics)

    return ipo_step


def run_online_ipo(
    cfg: OnlineIPOConfig,
    *,
    model: Any = None,
    tokenizer: Any = None,
    judge: Any = None,
    train_prompts: Sequence[Any] | None = None,
    eval_prompts: Sequence[Any] | None = None,
    optimizer_fn: Callable[[Any], Any] | None = None,
    reference_model: Any = None,
) -> RunResult:
    """Train a policy with online IPO or IPO-MD; the keyword arguments as :func:`nlhf.train.nash_md.run_nash_md`'s."""
    cfg = resolve_model_settings(cfg)  # dtype auto resolved, attention / QLoRA checked
    run = prepare_judged_run(cfg, "run_online_ipo", "algorithm", model=model, tokenizer=tokenizer, judge=judge,
                             train_prompts=train_prompts, eval_prompts=eval_prompts,
                             reference_model=reference_model)  # fmt: skip
    judge, tokenizer = run.scorer, run.tokenizer
    sampler = run.make_sampler(cfg.sampling)
    loop = make_prompt_loop(cfg, run, make_step(cfg, sampler, judge, tokenizer, run.reference),
                            make_judge_eval_step(cfg, sampler, judge, tokenizer), optimizer_fn=optimizer_fn)  # fmt: skip
    extra = {"algorithm": cfg.algorithm, "tau": cfg.tau, "mixture_coef": cfg.beta if cfg.algorithm == "ipo_md" else None,
             **prompt_counts(run)}  # fmt: skip
    return train_and_save(cfg, loop, tokenizer, run.out, run.timings, extra)


def summary_line(result: RunResult) -> str:
    """The one JSON line ``nlhf train online-ipo|ipo-md`` prints at the end."""
    return summary_json(result, ("algorithm", "tau", "mixture_coef", "steps"),
                        ("loss", "win_rate", "win_rate_vs_ref", "kl_k3", "length", "truncated"))  # fmt: skip


__all__ = [
    "ONLINE_IPO_ALGORITHMS",
    "OnlineIPOConfig",
    "make_step",
    "run_online_ipo",
    "summary_line",
]
