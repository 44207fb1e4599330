"""Nash-MD-PG and its family: ``nlhf train nash-md | self-play | best-response | nash-ema`` (THEORY.md Sec. 4).

Config, step and run wiring of one algorithm family, on the shared loop
(:mod:`nlhf.train.loop`). The loop feeds batches of PROMPTS, and :func:`make_step`'s
``nash_pg_step`` does, for each micro-batch of B prompts x,

1. sample (no gradient, :mod:`nlhf.sampling`; one random stream per prompt row, seeded from
   ``(loop.seed, global position of the row)`` by :func:`nlhf.sampling.streams.row_generator`,
   so a resumed run draws the same samples, no sampler state needs saving, and the samples
   do not depend on the number of processes or the micro-batch size):

   ==================  =======================================================
   algorithm           y and y'
   ==================  =======================================================
   ``nash_md``         y ~ pi, y' ~ token-level pi^(1-beta) mu^beta (one loop)
   ``self_play``       the same with beta = 0 (y' ~ pi)
   ``best_response``   the same with beta = 1 (y' ~ mu)
   ``nash_ema``        y ~ pi, y' ~ the EMA of the policy's parameters
   ==================  =======================================================

2. judge P(y > y' | x) with any :class:`nlhf.judges.Judge` (a preference model, a reward
   model through ``sigmoid(r - r')``, an oracle), on the decoded response texts;
3. recompute log pi of y's tokens WITH gradient (one forward of the policy at temperature
   1: :func:`nlhf.sampling.response_logps`); mu's log-probs come from the sampler (one
   teacher-forced forward of mu) or from one no-grad forward;
4. the loss :func:`nlhf.losses.nash.nash_md_pg_loss`, one value per prompt, weight 1 each
   (the loop divides the global sum by the global number of prompts, so accumulation and
   processes do not change the update).

Several responses per prompt (``responses_per_prompt`` K > 1): each prompt row is repeated
K times (each copy on its own random stream), so K responses y_1..y_K ~ pi and K opponents
y'_1..y'_K are drawn in the same decode loop; the judge scores all K^2 pairs (y_i, y'_j) in
one call, and response i gets p_bar_i = mean_j P(y_i > y'_j) with the leave-one-out
baseline mean_{k != i} p_bar_k (:func:`nlhf.losses.nash.group_preferences`: unbiased, the
expected gradient is checked by enumeration in tests/losses/test_nash_losses.py). The
prompt's loss is the mean over its K responses, so the learning rate means the same for
every K; the variance of the estimate falls with K, and decoding more rows per batch is
cheap on a CPU (issue 14).

Sampling distribution. The estimator assumes y ~ pi at temperature 1 with no top-k/top-p
(``sampling.is_exact``). Otherwise each sequence is weighted by the importance ratio
pi(y)/q(y) from the sampler's ``sampling_logps`` (``max_importance_weight`` clips it). The
OPPONENT is sampled with the same settings: a temperature is then part of the opponent's
definition. A top-k/top-p cut gives q = 0 to responses pi can produce; no weight recovers
those (see the loss's docstring).

Nash-EMA-PG: the opponent is a copy of the policy whose trainable parameters are the
exponential moving average ``ema <- ema_decay * ema + (1 - ema_decay) * theta``, updated
after every optimiser step that changed the weights (a step post-hook on the optimiser)
and saved in every checkpoint (``extra.pt``), so a resumed run is exact. With LoRA the
copy holds the base model too (memory: a second copy of the model).

Metrics (JSONL / TensorBoard; means over prompts): ``loss`` (a surrogate: only its
gradient means something); ``win_rate`` = the judge's P(y > y'); ``kl_k1`` and ``kl_k3``:
Schulman's estimates of the sequence-level KL(pi || mu) on y (:mod:`nlhf.losses.kl`;
importance-weighted by pi/q when the sampling is not exact); ``advantage``; ``length``
(response tokens, EOS included) and ``truncated`` (fraction stopped at
``sampling.max_new_tokens`` without EOS) of y; ``importance_weight`` when the sampling is
not exact. Evaluation (``eval_prompts``) samples y ~ pi and y_ref ~ mu for each prompt and
reports ``win_rate_vs_ref`` = P(y > y_ref), ``kl_k1``, ``kl_k3``, ``length`` and
``truncated`` (:func:`nlhf.train.rollouts.make_judge_eval_step`); it has no loss (0).

Sharding (``accelerate launch`` / ``torchrun``). The loop hands each process its own
prompts, so every process samples and judges its shard (judge calls batched per process),
and the loss is the global sum over prompts divided by the global number of prompts; with
per-row streams 2 processes x micro-batch b train to the parameters of 1 process x 2b
(``tests/train/test_train_ddp.py``). Under FSDP or DeepSpeed ZeRO-3 the trainer refuses to
start (:func:`nlhf.train.run.refuse_sharded_weights`): the sampler needs whole weights.

The run directory ``out`` receives ``config.yaml``, ``metrics.jsonl``, ``tensorboard/``,
checkpoints ``ckpt-<step>/`` (EMA opponent included), the final policy in ``out/policy/``
(``save_pretrained`` with the tokenizer; LoRA merged unless ``merge_adapter: false``) and
``metrics.json``.

Importing this module is cheap (no torch): the CLI (:mod:`nlhf.train.cli`) imports it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from nlhf.config import check, sections_from_dicts
from nlhf.data.prompt_batches import PromptItemBatch, repeat_prompts
from nlhf.judges import judge_preference
from nlhf.train.config import JUDGE_HINT, PromptRunConfig, check_prompt_settings
from nlhf.train.rollouts import (
    judge_group_pairs,
    make_judge_eval_step,
    reference_logps,
    rollout_metrics,
    step_output,
)
from nlhf.train.run import (
    RunResult,
    default_optimizer,
    make_prompt_loop,
    prepare_judged_run,
    prompt_counts,
    resolve_model_settings,
    summary_json,
    train_and_save,
)

NASH_MD_ALGORITHMS = ("nash_md", "self_play", "best_response", "nash_ema")
NASH_PG_ALGORITHMS = NASH_MD_ALGORITHMS  # every algorithm here takes the Nash-MD-PG loss
MIXTURE_ALGORITHMS = ("nash_md", "self_play", "best_response")  # their opponent is the mixture
FIXED_MIXTURE = {"self_play": 0.0, "best_response": 1.0}
DEFAULT_MIXTURE_COEF = 0.125  # NLHF's best Nash-MD policy on TL;DR (THEORY.md Sec. 4)


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True)
class NashMDConfig(PromptRunConfig):
    """Everything ``nlhf train nash-md|self-play|best-response|nash-ema`` reads (and :class:`PromptRunConfig`'s fields).

    ``mixture_coef`` is beta, the weight of mu in the token-level geometric mixture
    (THEORY.md Sec. 4). ``None`` means: 0.125 for ``nash_md``, 0 for ``self_play``, 1 for
    ``best_response`` (those two refuse any other value); ``nash_ema`` does not use it and
    refuses a value. ``judge``: a directory saved by ``nlhf train-pm`` (pairwise preference
    model) or ``nlhf train-rm`` (reward model, judged as sigmoid(r - r')); :func:`run_nash_md`
    also takes any judge object.
    """

    algorithm: Literal["nash_md", "self_play", "best_response", "nash_ema"] = "nash_md"
    tau: float = 0.1  # KL strength (TRL's beta)
    mixture_coef: float | None = None  # beta; see the docstring
    ema_decay: float = 0.99  # nash_ema: ema <- decay * ema + (1 - decay) * theta after each update
    max_importance_weight: float | None = None  # clip pi/q (inexact sampling); None: no clip
    # K: K responses y ~ pi and K opponents y' per prompt, all K^2 pairs judged, a leave-one-out baseline
    # (nlhf.losses.nash.group_preferences); 1: one pair per prompt, baseline 1/2 (NLHF's estimator)
    responses_per_prompt: int = 1
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
            if self.algorithm in FIXED_MIXTURE:
                check(beta == FIXED_MIXTURE[self.algorithm], "mixture_coef",
                      f"{self.algorithm} fixes mixture_coef = {FIXED_MIXTURE[self.algorithm]:g}, got {beta} "
                      "(use algorithm nash_md for another value)")  # fmt: skip
            check(self.algorithm in MIXTURE_ALGORITHMS, "mixture_coef",
                  f"is not used by {self.algorithm} (only by {', '.join(MIXTURE_ALGORITHMS)}); remove it")  # fmt: skip
        check(0.0 <= self.ema_decay < 1.0, "ema_decay", f"must be in [0, 1), got {self.ema_decay}")
        check(
            self.responses_per_prompt >= 1,
            "responses_per_prompt",
            f"must be >= 1, got {self.responses_per_prompt}",
        )
        check(self.max_importance_weight is None or self.max_importance_weight > 0, "max_importance_weight",
              f"must be > 0 (or null), got {self.max_importance_weight}")  # fmt: skip
        check_prompt_settings(self, "judge_batch_size")

    @property
    def beta(self) -> float:
        """The mixture coefficient actually used (0 for nash_ema, which has no mixture)."""
        if self.algorithm in FIXED_MIXTURE:
            return FIXED_MIXTURE[self.algorithm]
        if self.algorithm in MIXTURE_ALGORITHMS:
            return DEFAULT_MIXTURE_COEF if self.mixture_coef is None else float(self.mixture_coef)
        return 0.0

    def check_complete(self, *, need_prompts: bool = True, need_judge: bool = True) -> None:
        """The fields without a usable default (called before any data or model loads)."""
        self.check_run_complete("judge", JUDGE_HINT if need_judge else None, need_prompts)


# ----------------------------------------------------------------------------- the opponent of Nash-EMA


class EmaOpponent:
    """Nash-EMA-PG's opponent: a frozen copy of the policy holding the EMA of its trainable parameters.

    ``update(policy)``: ``ema <- decay * ema + (1 - decay) * theta`` for every trainable
    parameter (called after each optimiser update). ``state_dict``/``load_state_dict`` make
    it checkpointable (:class:`nlhf.train.loop.Stateful`).
    """

    def __init__(self, policy: Any, decay: float) -> None:
        self.decay = float(decay)
        self.model = copy.deepcopy(policy)
        self.model.requires_grad_(False)
        self.model.eval()
        self.names = [n for n, p in policy.named_parameters() if p.requires_grad]
        self.updates = 0

    def _params(self) -> dict[str, Any]:
        params = dict(self.model.named_parameters())
        return {n: params[n] for n in self.names}

    def update(self, policy: Any) -> None:
        import torch

        live = dict(policy.named_parameters())
        with torch.no_grad():
            for name, p in self._params().items():
                p.mul_(self.decay).add_(live[name].detach().to(p.dtype), alpha=1.0 - self.decay)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "decay": self.decay,
            "updates": self.updates,
            "params": {n: p.detach().cpu().clone() for n, p in self._params().items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        import torch

        params = self._params()
        missing = sorted(set(params) - set(state["params"]))
        if missing:
            raise KeyError(f"EMA opponent state lacks parameters {missing[:5]}")
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(state["params"][name].to(p.device, p.dtype))
        self.updates = int(state["updates"])


# ----------------------------------------------------------------------------- the step


def make_step(
    cfg: NashMDConfig, sampler: Any, judge: Any, tokenizer: Any, reference: Any
) -> Callable[..., Any]:
    """The training step of the Nash-MD-PG family: per-prompt losses (B,), weight 1 each."""
    from nlhf.losses.nash import group_preferences, nash_md_pg_loss
    from nlhf.sampling.decode import response_logps
    from nlhf.sampling.streams import row_generator

    algorithm, beta, tau, seed = cfg.algorithm, cfg.beta, cfg.tau, cfg.loop.seed
    exact = cfg.sampling.is_exact
    K = cfg.responses_per_prompt

    def nash_pg_step(model: Any, batch: PromptItemBatch, ctx: Any) -> Any:
        prompts = batch.prompts  # input_ids, attention_mask (B, P)
        B = prompts.batch_size
        gen = row_generator(seed, ctx, prompts.input_ids.device)  # (B,) row streams
        if K > 1:  # K rows per prompt, prompt-major: rows [b K, (b + 1) K) are prompt b, each its own stream
            prompts, gen = repeat_prompts(prompts, K), gen.repeat_interleave(K)  # (B K, P), (B K,)
        if algorithm == "nash_ema":
            y = sampler.sample(prompts, gen)  # y ~ pi
            y_opp = sampler.sample_opponent(prompts, gen)  # y' ~ the EMA policy
        else:
            y, y_opp = sampler.sample_policy_and_mixture(
                prompts, beta, gen
            )  # y ~ pi (+ log mu), y' ~ mixture
        if K == 1:
            preference, baseline = judge_preference(judge, batch.texts, y, y_opp, tokenizer), None  # (B,)
        else:
            matrix = judge_group_pairs(
                judge, batch.texts, y, tokenizer, K, y_opp
            )  # (B, K, K) P(y_i > y'_j | x)
            p_bar, loo = group_preferences(matrix)  # (B, K) each: mean over opponents, leave-one-out baseline
            preference, baseline = p_bar.reshape(-1), loo.reshape(-1)  # (B K,)
        logps = response_logps(model, y)  # (B K, R) log pi with gradient, temperature 1
        out = nash_md_pg_loss(
            logps, reference_logps(reference, y), y.response_mask, preference, tau,
            sampling_logps=None if exact else y.sampling_logps,
            max_importance_weight=cfg.max_importance_weight, baseline=baseline,
        )  # fmt: skip
        metrics = {"win_rate": preference, "kl_k1": out.metrics["kl_k1"], "kl_k3": out.metrics["kl_k3"],
                   "advantage": out.metrics["advantage"], **rollout_metrics(y)}  # fmt: skip
        if not exact:
            metrics["importance_weight"] = out.metrics["importance_weight"]
        if K == 1:
            return step_output(out.loss, metrics)  # (B,) losses, weight 1 per prompt
        # one loss per prompt, the mean over its K responses (weight 1 per prompt, as with K = 1)
        per_prompt = {k: v.float().reshape(B, K).mean(dim=1) for k, v in metrics.items()}  # (B,) each
        return step_output(out.loss.reshape(B, K).mean(dim=1), per_prompt)

    return nash_pg_step


# ----------------------------------------------------------------------------- the run


def run_nash_md(
    cfg: NashMDConfig,
    *,
    model: Any = None,
    tokenizer: Any = None,
    judge: Any = None,
    train_prompts: Sequence[Any] | None = None,
    eval_prompts: Sequence[Any] | None = None,
    optimizer_fn: Callable[[Any], Any] | None = None,
    reference_model: Any = None,
) -> RunResult:
    """Train a policy with ``cfg.algorithm``; returns the policy, the summary and timings.

    ``model``/``tokenizer`` (both; e.g. :class:`nlhf.models.tabular.TabularLM`) replace
    loading ``cfg.model``; ``judge`` (any :class:`nlhf.judges.Judge`) replaces loading
    ``cfg.judge``; ``train_prompts``/``eval_prompts`` (prompts, ``PromptExample`` or
    ``PreferenceExample`` objects) replace loading ``cfg.prompts``/``cfg.eval_prompts``;
    ``optimizer_fn(model)`` replaces the loop's AdamW; ``reference_model`` (full fine-tuning
    only) is used as mu instead of a frozen copy of ``model`` (it is frozen here; same
    vocabulary required). Order: config checked, output directory checked, model and judge
    loaded, prompts loaded (errors name file and row), loop built (refuses old checkpoints
    unless ``loop.resume``/``loop.overwrite``), trained, saved.
    """
    # 1. Checks, then model, judge and prompts loaded, policy pi and reference mu on the device.
    cfg = resolve_model_settings(cfg)  # dtype auto resolved, attention / QLoRA checked
    run = prepare_judged_run(cfg, "run_nash_md", "algorithm", model=model, tokenizer=tokenizer, judge=judge,
                             train_prompts=train_prompts, eval_prompts=eval_prompts,
                             reference_model=reference_model)  # fmt: skip
    policy, judge, tokenizer = run.policy, run.scorer, run.tokenizer

    # 2. The opponent of Nash-EMA (updated after every optimiser step), the sampler.
    opponent = EmaOpponent(policy, cfg.ema_decay) if cfg.algorithm == "nash_ema" else None
    sampler = run.make_sampler(cfg.sampling, opponent=opponent.model if opponent else None)
    make_optimizer = optimizer_fn or default_optimizer(cfg)
    if opponent is not None:

        def make_optimizer(m: Any, _base: Callable[[Any], Any] = make_optimizer) -> Any:
            optimizer = _base(m)
            optimizer.register_step_post_hook(lambda *_: opponent.update(policy))  # after every real update
            return optimizer

    # 3. The loop with the Nash-MD-PG step; train; save.
    loop = make_prompt_loop(cfg, run, make_step(cfg, sampler, judge, tokenizer, run.reference),
                            make_judge_eval_step(cfg, sampler, judge, tokenizer),
                            stateful={"ema_opponent": opponent} if opponent is not None else None,
                            optimizer_fn=make_optimizer)  # fmt: skip
    extra = {"algorithm": cfg.algorithm, "tau": cfg.tau,
             "mixture_coef": cfg.beta if cfg.algorithm in MIXTURE_ALGORITHMS else None,
             **prompt_counts(run),
             **({"ema_decay": cfg.ema_decay} if opponent is not None else {})}  # fmt: skip
    return train_and_save(cfg, loop, tokenizer, run.out, run.timings, extra, opponent)


def summary_line(result: RunResult) -> str:
    """The one JSON line ``nlhf train nash-md|...`` prints at the end."""
    return summary_json(result, ("algorithm", "tau", "mixture_coef", "steps"),
                        ("loss", "win_rate", "win_rate_vs_ref", "kl_k3", "length", "truncated"))  # fmt: skip


__all__ = [
    "DEFAULT_MIXTURE_COEF",
    "EmaOpponent",
    "NASH_MD_ALGORITHMS",
    "NashMDConfig",
    "make_step",
    "run_nash_md",
    "summary_line",
]
