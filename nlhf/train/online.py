"""Online preference optimisation: the Nash-MD-PG family, online IPO and IPO-MD (THEORY.md Sec. 4, 6).

``nlhf train nash-md | self-play | best-response | nash-ema | online-ipo | ipo-md``. A short
file on the shared loop (:mod:`nlhf.train.loop`): the loop feeds batches of PROMPTS, and
one explicit step function per algorithm does, for each micro-batch of B prompts x,

1. sample (no gradient, :mod:`nlhf.sampling`, one random stream per prompt row, a
   :class:`nlhf.sampling.decode.RowGenerator` seeded from ``(loop.seed, global position of
   the row)``, so a resumed run draws the same samples, no sampler state needs saving, and
   the samples do not depend on the number of processes or the micro-batch size):

   ==================  =======================================================  ==========
   algorithm           y and y'                                                 loss
   ==================  =======================================================  ==========
   ``nash_md``         y ~ pi, y' ~ token-level pi^(1-beta) mu^beta (one loop)  Nash-MD-PG
   ``self_play``       the same with beta = 0 (y' ~ pi)                         Nash-MD-PG
   ``best_response``   the same with beta = 1 (y' ~ mu)                         Nash-MD-PG
   ``nash_ema``        y ~ pi, y' ~ the EMA of the policy's parameters          Nash-MD-PG
   ``online_ipo``      y, y' ~ pi, independent                                  online IPO
   ``ipo_md``          y, y' ~ pi^(1-beta) mu^beta (token level), independent   online IPO
   ==================  =======================================================  ==========

2. judge P(y > y' | x) with any :class:`nlhf.judges.Judge` (a preference model, a reward
   model through ``sigmoid(r - r')``, an oracle), on the decoded response texts;
3. recompute log pi of the sampled tokens WITH gradient (one forward of the policy at
   temperature 1: :func:`nlhf.sampling.response_logps`); mu's log-probs come from the
   sampler (Nash-MD-PG's sampler adds them with one teacher-forced forward of mu) or from one
   no-grad forward;
4. the loss of :mod:`nlhf.losses.nash`, one value per prompt, weight 1 each (the loop
   divides the global sum by the global number of prompts, so accumulation and processes
   do not change the update).

Sampling distribution. The estimators assume y ~ pi at temperature 1 with no top-k/top-p
(``sampling.is_exact``). Otherwise Nash-MD-PG weights each sequence by the importance
ratio pi(y)/q(y) from the sampler's ``sampling_logps`` (:func:`nlhf.losses.nash.nash_md_pg_loss`;
``max_importance_weight`` clips it), online IPO weights each pair by w(y) w(y'), and IPO-MD
refuses (the ratio of the temperature-1 mixture to the sampled distribution needs the
mixture's normaliser, which the sampler does not record). The OPPONENT of Nash-MD-PG is
sampled with the same settings: a temperature is then part of the opponent's definition.
A top-k/top-p cut gives q = 0 to responses pi can produce; no weight recovers those (see
the loss's docstring).

Nash-EMA-PG: the opponent is a copy of the policy whose trainable parameters are the
exponential moving average ``ema <- ema_decay * ema + (1 - ema_decay) * theta``, updated
after every optimiser step that changed the weights (a step post-hook on the optimiser)
and saved in every checkpoint (``extra.pt``), so a resumed run is exact. With LoRA the
copy holds the base model too (memory: a second copy of the model).

Metrics (JSONL / TensorBoard; means over prompts): ``loss`` (a surrogate for Nash-MD-PG:
only its gradient means something); ``win_rate`` = the judge's P(y > y') of the policy
sample against its opponent (online IPO: two policy samples, so about 1/2); ``kl_k1`` and
``kl_k3``: Schulman's k1 and k3 estimates of the sequence-level KL(pi || mu) on the
policy's samples (:mod:`nlhf.losses.kl`; importance-weighted by pi/q when the samples are
not from pi: IPO-MD's come from the mixture, so its weight is pi/pi^beta, exact because
IPO-MD samples at temperature 1); ``length`` (response tokens, EOS included) and
``truncated`` (fraction stopped at ``sampling.max_new_tokens`` without EOS) of y;
``importance_weight`` when the sampling is not exact. Evaluation (``eval_prompts``) samples
y ~ pi and y_ref ~ mu for each prompt and reports ``win_rate_vs_ref`` = P(y > y_ref),
``kl_k1``, ``kl_k3``, ``length`` and ``truncated``; it has no loss (reported as 0).

Sharding (``accelerate launch`` / ``torchrun``). The loop hands each process its own
prompts (global stream positions ``rank * b + [0, b)`` of each micro-batch), so every
process samples and judges its shard (judge calls batched per process), and the loss is
the global sum over prompts divided by the global number of prompts. Every prompt row has
its own random stream seeded by its global position (:func:`row_seeds`), so 2 processes x
micro-batch b draw exactly the samples of 1 process x 2b, and train to the same parameters
(``tests/train/test_train_ddp.py``). Under FSDP or DeepSpeed ZeRO-3 the trainers refuse to
start (:func:`refuse_sharded_weights`): the sampler needs the policy's whole weights.

The run directory ``out`` receives ``config.yaml``, ``metrics.jsonl``, ``tensorboard/``,
checkpoints ``ckpt-<step>/`` (EMA opponent included), the final policy in ``out/policy/``
(``save_pretrained`` with the tokenizer; LoRA merged unless ``merge_adapter: false``) and
``metrics.json``.

Importing this module is cheap (no torch): the CLI reads :data:`ONLINE_FAMILIES`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from nlhf.config import check
from nlhf.models.lora import LoraSettings
from nlhf.sampling.config import SamplingConfig
from nlhf.train.config import LoopConfig, OptimConfig, check_prompt_settings, check_required

ONLINE_ALGORITHMS = ("nash_md", "self_play", "best_response", "nash_ema", "online_ipo", "ipo_md")
NASH_PG_ALGORITHMS = ("nash_md", "self_play", "best_response", "nash_ema")  # the Nash-MD-PG loss
MIXTURE_ALGORITHMS = ("nash_md", "self_play", "best_response", "ipo_md")  # use mixture_coef
FIXED_MIXTURE = {"self_play": 0.0, "best_response": 1.0}
DEFAULT_MIXTURE_COEF = 0.125  # NLHF's best Nash-MD policy on TL;DR (THEORY.md Sec. 4)
METRICS_JSON = "metrics.json"
POLICY_DIR = "policy"


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True)
class OnlineConfig:
    """Everything ``nlhf train nash-md|self-play|best-response|nash-ema|online-ipo|ipo-md`` reads.

    ``mixture_coef`` is beta, the weight of mu in the token-level geometric mixture
    (THEORY.md Sec. 4). ``None`` means: 0.125 for ``nash_md`` and ``ipo_md``, 0 for
    ``self_play``, 1 for ``best_response`` (those two refuse any other value); the other
    algorithms do not use it and refuse a value. ``judge``: a directory saved by
    ``nlhf train-pm`` (pairwise preference model) or ``nlhf train-rm`` (reward model,
    judged as sigmoid(r - r')); :func:`run_online` also takes any judge object.
    ``model``: as for the offline trainer (``smollm2``, ``tiny``, a directory, a GGUF file,
    a hub name). ``sampling.seed`` is not used: generators derive from ``loop.seed``.
    """

    algorithm: Literal["nash_md", "self_play", "best_response", "nash_ema", "online_ipo", "ipo_md"] = (
        "nash_md"
    )
    tau: float = 0.1  # KL strength (TRL's beta)
    mixture_coef: float | None = None  # beta; see the docstring
    ema_decay: float = 0.99  # nash_ema: ema <- decay * ema + (1 - decay) * theta after each update
    reduction: Literal["sum", "mean"] = "sum"  # online IPO / IPO-MD sequence log-probs (sum: THEORY.md's tau)
    max_importance_weight: float | None = None  # clip pi/q (Nash-MD-PG with inexact sampling); None: no clip
    prompts: str = ""  # --prompts: file, directory or hub name (nlhf.data.load_prompts)
    eval_prompts: str | None = None  # --eval-prompts
    model: str = "smollm2"  # --model
    judge: str = ""  # --judge: a saved preference or reward model directory
    out: str = ""  # --out: the run directory
    prompt_format: str | None = None  # nlhf.data.load_prompts format; None: detected
    split: str | None = None
    eval_split: str | None = None
    skip_invalid: bool = False
    limit: int | None = None  # use at most this many training prompts
    eval_limit: int | None = None
    max_prompt_tokens: int | None = 512  # prompts cut from the left
    judge_batch_size: int = 16
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_new_tokens=64))
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    lora: LoraSettings | None = None  # e.g. lora.r=8 (reference: the base with the adapter disabled)
    merge_adapter: bool = True
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-6, warmup_steps=0))
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(micro_batch_size=8, log_every=10))

    def __post_init__(self) -> None:
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
        """The mixture coefficient actually used (0 for algorithms without a mixture)."""
        if self.algorithm in FIXED_MIXTURE:
            return FIXED_MIXTURE[self.algorithm]
        if self.algorithm in MIXTURE_ALGORITHMS:
            return DEFAULT_MIXTURE_COEF if self.mixture_coef is None else float(self.mixture_coef)
        return 0.0

    def check_complete(self, *, need_prompts: bool = True, need_judge: bool = True) -> None:
        """The fields without a usable default (called before any data or model loads)."""
        check_required(self, prompts="--prompts FILE" if need_prompts else None,
                       judge="--judge DIR: a model saved by nlhf train-pm or train-rm" if need_judge else None,
                       out="--out DIR", model="--model smollm2|tiny|PATH")  # fmt: skip


def load_online_config(
    config_path: str | Path | None = None, overrides: Sequence[str] = (), **flags: Any
) -> OnlineConfig:
    """Defaults < YAML < ``key=value`` overrides < non-None ``flags`` (unknown keys and bad values name the key)."""
    from nlhf.train.offline_cli import resolve_config

    return resolve_config(OnlineConfig, config_path, overrides, flags)


# ----------------------------------------------------------------------------- prompts and batches


@dataclass(frozen=True)
class PromptItem:
    """One training prompt as the loop sees it: the prompt (for the judge) and its token ids (for the policy)."""

    prompt: Any  # nlhf.data.Prompt: str or messages
    ids: tuple[int, ...]
    source: str = ""
    cut: int = 0  # prompt tokens removed by max_prompt_tokens


@dataclass
class OnlineBatch:
    """A micro-batch: left-padded prompt ids (``nlhf.data.PromptBatch``) and the prompts themselves."""

    prompts: Any  # PromptBatch: input_ids, attention_mask (B, P), prompt_lengths (B,)
    texts: tuple[Any, ...]  # (B,) the prompts as the judge reads them

    def to(self, device: Any, non_blocking: bool = False) -> OnlineBatch:
        return OnlineBatch(self.prompts.to(device), self.texts)


def tokenize_prompts(
    tokenizer: Any, prompts: Sequence[Any], max_prompt_tokens: int | None
) -> list[PromptItem]:
    """Tokenise every prompt once (chat template when the tokenizer has one), cut from the left.

    ``prompts``: ``PromptExample``/``PreferenceExample`` objects or bare prompts (str or messages).
    """
    from nlhf.data import prompt_ids
    from nlhf.data.truncation import keep_last

    items = []
    for i, p in enumerate(prompts):
        prompt = getattr(p, "prompt", p)
        full = prompt_ids(tokenizer, prompt)
        if not full:
            raise ValueError(f"{getattr(p, 'source', '') or f'prompt {i}'}: the prompt has no tokens")
        kept = full if max_prompt_tokens is None else keep_last(full, max_prompt_tokens)
        items.append(PromptItem(prompt, tuple(kept), getattr(p, "source", "") or "", len(full) - len(kept)))
    return items


def make_collate(pad_token_id: int) -> Callable[[list[PromptItem]], OnlineBatch]:
    """``list[PromptItem] -> OnlineBatch`` (left-padded: new tokens are appended on the right)."""
    from nlhf.data import collate_prompts

    def collate(items: list[PromptItem]) -> OnlineBatch:
        batch = collate_prompts([it.ids for it in items], pad_token_id, sources=[it.source for it in items])
        return OnlineBatch(batch, tuple(it.prompt for it in items))

    return collate


def repeat_prompts(prompts: Any, times: int) -> Any:
    """The PromptBatch with every row repeated ``times`` times, prompt-major: rows [i k, (i+1) k) are prompt i."""
    from nlhf.data import PromptBatch

    return PromptBatch(
        prompts.input_ids.repeat_interleave(times, dim=0),  # (B k, P)
        prompts.attention_mask.repeat_interleave(times, dim=0),  # (B k, P)
        prompts.prompt_lengths.repeat_interleave(times, dim=0),  # (B k,)
        tuple(s for s in prompts.sources for _ in range(times)),
    )


def stack_prompts(prompts: Any, times: int) -> Any:
    """The PromptBatch stacked ``times`` times, block-major: rows [j B, (j+1) B) are a copy of all B prompts."""
    import torch

    from nlhf.data import PromptBatch

    return PromptBatch(
        torch.cat([prompts.input_ids] * times, dim=0),  # (times B, P)
        torch.cat([prompts.attention_mask] * times, dim=0),
        torch.cat([prompts.prompt_lengths] * times, dim=0),
        tuple(prompts.sources) * times,
    )


# ----------------------------------------------------------------------------- randomness


def row_seeds(seed: int, ctx: Any) -> list[int]:
    """One sampling seed per row of a micro-batch, from ``(seed, the row's global stream position)``.

    Training: positions are unique over the run and independent of how the global batch is
    split (:class:`~nlhf.train.loop.StepContext`), so a prompt draws the same samples with 1
    process x micro-batch 2b as with 2 processes x b, and a resumed run the same ones.
    Evaluation: ``(seed, step, dataset index)`` in a separate stream. Seeds are 63-bit
    integers from numpy's ``SeedSequence`` (well mixed even for consecutive positions).
    """
    import numpy as np

    base = [seed % 2**63]
    if ctx.training:
        words = [[*base, 0, q] for q in ctx.positions]
    else:
        words = [[*base, 1, ctx.step, i] for i in ctx.indices]
    return [int(np.random.SeedSequence(w).generate_state(1, dtype=np.uint64)[0] >> 1) for w in words]


def row_generator(seed: int, ctx: Any, device: Any) -> Any:
    """A :class:`nlhf.sampling.decode.RowGenerator` on ``device`` with the rows' :func:`row_seeds`."""
    from nlhf.sampling.decode import RowGenerator

    return RowGenerator(row_seeds(seed, ctx), device=device)


# ----------------------------------------------------------------------------- pieces of a step


def refuse_sharded_weights(trainer: str) -> None:
    """Refuse FSDP and DeepSpeed ZeRO-3 launches (read from accelerate's environment), before any model loads.

    The decode loop of :mod:`nlhf.sampling` calls the policy module itself, outside the
    FSDP / ZeRO-3 wrapper that holds its sharded weights (and each process stops decoding
    when its own rows end, which the collective forwards of a sharded model cannot follow).
    DDP and DeepSpeed ZeRO-1/2 keep whole weights on every process and are fine.
    """
    import os

    from nlhf.config import ConfigError

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


def judge_preference(judge: Any, prompts: Sequence[Any], first: Any, second: Any, tokenizer: Any) -> Any:
    """P(first > second | prompt) (B,) float32 on the rollouts' device, from the decoded response texts."""
    first_texts = first.response_texts(tokenizer)
    second_texts = second.response_texts(tokenizer)
    pref = judge.prob(list(prompts), first_texts, second_texts)  # (B,) CPU, checked by BaseJudge
    return pref.to(first.response_ids.device)


def reference_logps(reference: Any, rollout: Any) -> Any:
    """(B, R) log mu of the rollout's tokens: the sampler's record, or one no-grad forward of mu."""
    import torch

    from nlhf.sampling import response_logps

    if rollout.ref_logps is not None:
        return rollout.ref_logps
    with torch.no_grad():
        return response_logps(reference, rollout)


def log_importance_weight(policy_logps: Any, sampling_logps: Any, mask: Any) -> Any:
    """log pi(y)/q(y) = sum_n mask (log pi(y_n|.) - log q(y_n|.)), detached. (B, R) -> (B,)."""
    from nlhf.losses.base import zero_outside

    return zero_outside(policy_logps.detach() - sampling_logps.detach(), mask).sum(dim=-1)


def weighted_kl(policy_logps: Any, ref_logps: Any, mask: Any, weight: Any | None = None) -> tuple[Any, Any]:
    """k1 and k3 estimates of KL(pi || mu) per sample (B,), times the importance weight pi/q when given."""
    from nlhf.losses.kl import kl_k1, kl_k3

    k1, k3 = kl_k1(policy_logps, ref_logps, mask), kl_k3(policy_logps, ref_logps, mask)  # (B,) each
    if weight is None:
        return k1, k3
    return weight * k1, weight * k3


def rollout_metrics(rollout: Any) -> dict[str, Any]:
    """``length`` (tokens, EOS included) and ``truncated`` (0/1) per row, (B,) float32."""
    return {
        "length": rollout.response_lengths.float(),
        "truncated": rollout.truncated.float(),
    }


def step_output(losses: Any, metrics: dict[str, Any]) -> Any:
    """StepOutput with weight 1 per prompt for the loss and every metric."""
    import torch

    from nlhf.train.loop import StepOutput

    ones = torch.ones_like(losses.detach(), dtype=torch.float32)  # (B,)
    return StepOutput(
        losses=losses, weights=ones, metrics={k: (v.detach().float(), ones) for k, v in metrics.items()}
    )


# ----------------------------------------------------------------------------- the steps


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


def make_step(
    cfg: OnlineConfig, sampler: Any, judge: Any, tokenizer: Any, reference: Any
) -> Callable[..., Any]:
    """The training step of ``cfg.algorithm`` (table in the module docstring): per-prompt losses, weight 1 each."""
    import torch

    from nlhf.logprobs import seq_logps
    from nlhf.losses.nash import nash_md_pg_loss, online_ipo_loss
    from nlhf.sampling import response_logps

    algorithm, beta, tau, seed = cfg.algorithm, cfg.beta, cfg.tau, cfg.loop.seed
    exact = cfg.sampling.is_exact

    def nash_pg_step(model: Any, batch: OnlineBatch, ctx: Any) -> Any:
        prompts = batch.prompts
        gen = row_generator(seed, ctx, prompts.input_ids.device)
        if algorithm == "nash_ema":
            y = sampler.sample(prompts, gen)  # y ~ pi
            y_opp = sampler.sample_opponent(prompts, gen)  # y' ~ the EMA policy
        else:
            y, y_opp = sampler.sample_policy_and_mixture(
                prompts, beta, gen
            )  # y ~ pi (with log mu), y' ~ mixture
        preference = judge_preference(judge, batch.texts, y, y_opp, tokenizer)  # (B,)
        logps = response_logps(model, y)  # (B, R) log pi with gradient, temperature 1
        out = nash_md_pg_loss(
            logps, reference_logps(reference, y), y.response_mask, preference, tau,
            sampling_logps=None if exact else y.sampling_logps,
            max_importance_weight=cfg.max_importance_weight,
        )  # fmt: skip
        metrics = {"win_rate": preference, "kl_k1": out.metrics["kl_k1"], "kl_k3": out.metrics["kl_k3"],
                   "advantage": out.metrics["advantage"], **rollout_metrics(y)}  # fmt: skip
        if not exact:
            metrics["importance_weight"] = out.metrics["importance_weight"]
        return step_output(out.loss, metrics)

    def ipo_step(model: Any, batch: OnlineBatch, ctx: Any) -> Any:
        prompts = batch.prompts
        B = prompts.batch_size
        gen = row_generator(seed, ctx, prompts.input_ids.device)
        both = stack_prompts(prompts, 2)  # (2B, P): rows b and B + b are prompt b
        gen = gen.tile(2)  # (2B,) streams: rows b and B + b on two sub-streams of prompt b's
        if algorithm == "online_ipo":
            pair = sampler.sample(both, gen)  # y (rows < B) and y' (rows >= B) ~ pi, independent
        else:
            pair = sampler.sample_mixture(both, beta, gen)  # both ~ token-level pi^(1-beta) mu^beta
        first, second = _split_rollout(pair, B)
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

    return nash_pg_step if algorithm in NASH_PG_ALGORITHMS else ipo_step


def _split_rollout(rollout: Any, B: int) -> tuple[Any, Any]:
    """Rows [0, B) and [B, 2B) of a rollout as two rollouts (response width kept)."""
    fields = [f.name for f in dataclasses.fields(rollout)]

    def part(sl: slice) -> Any:
        return type(rollout)(
            **{n: (getattr(rollout, n)[sl] if getattr(rollout, n) is not None else None) for n in fields}
        )

    return part(slice(0, B)), part(slice(B, 2 * B))


def sample_against_reference(
    sampler: Any, batch: Any, ctx: Any, seed: int, exact: bool
) -> tuple[Any, Any, dict]:
    """Evaluation's samples of each prompt: ``(y, y_ref, metrics of y)``, y ~ pi and y_ref ~ mu.

    One decode loop (mixture_coef 1) on the rows' own streams (:func:`row_generator`). The
    metrics (B,): ``kl_k1``, ``kl_k3`` (weighted by pi/q when the sampling is not ``exact``),
    ``length`` and ``truncated``. Used by the online and the RLHF trainers' evaluation.
    """
    import torch

    prompts = batch.prompts
    gen = row_generator(seed, ctx, prompts.input_ids.device)
    y, y_ref = sampler.sample_policy_and_mixture(prompts, 1.0, gen)  # y ~ pi, y_ref ~ mu
    weight = (
        None if exact else torch.exp(log_importance_weight(y.policy_logps, y.sampling_logps, y.response_mask))
    )
    k1, k3 = weighted_kl(y.policy_logps, y.ref_logps, y.response_mask, weight)
    return y, y_ref, {"kl_k1": k1, "kl_k3": k3, **rollout_metrics(y)}


def make_eval_step(cfg: OnlineConfig, sampler: Any, judge: Any, tokenizer: Any) -> Callable[..., Any]:
    """Evaluation: y ~ pi against y_ref ~ mu (one decode loop, mixture_coef 1); win rate, KL, length."""
    import torch

    seed = cfg.loop.seed
    exact = cfg.sampling.is_exact

    def eval_step(model: Any, batch: OnlineBatch, ctx: Any) -> Any:
        y, y_ref, y_metrics = sample_against_reference(sampler, batch, ctx, seed, exact)
        preference = judge_preference(judge, batch.texts, y, y_ref, tokenizer)  # (B,)
        return step_output(torch.zeros_like(preference), {"win_rate_vs_ref": preference, **y_metrics})

    return eval_step


# ----------------------------------------------------------------------------- the run


@dataclass
class OnlineResult:
    """What :func:`run_online` (and :func:`nlhf.train.rlhf.run_rlhf`) return; ``summary`` is ``metrics.json``."""

    policy: Any  # the trained policy, unwrapped (a PeftModel with LoRA)
    tokenizer: Any
    summary: dict[str, Any]
    train: Any  # nlhf.train.loop.TrainResult
    out_dir: Path
    policy_dir: Path | None
    timings: dict[str, float]
    opponent: Any = None  # nash_ema: the EmaOpponent


def load_prompt_items(
    cfg: Any, tokenizer: Any, train_prompts: Any, eval_prompts: Any
) -> tuple[list, list | None]:
    """Training and evaluation prompts (loaded from ``cfg.prompts`` / ``cfg.eval_prompts`` unless given), tokenised."""
    from nlhf.data import load_prompts

    if train_prompts is None:
        train_prompts = load_prompts(cfg.prompts, format=cfg.prompt_format, split=cfg.split,
                                     skip_invalid=cfg.skip_invalid, limit=cfg.limit)  # fmt: skip
    if eval_prompts is None and cfg.eval_prompts:
        eval_prompts = load_prompts(cfg.eval_prompts, format=cfg.prompt_format, split=cfg.eval_split,
                                    skip_invalid=cfg.skip_invalid, limit=cfg.eval_limit)  # fmt: skip
    if len(train_prompts) == 0:
        raise ValueError(f"{cfg.prompts or 'train_prompts'}: no training prompts")
    train = tokenize_prompts(tokenizer, train_prompts, cfg.max_prompt_tokens)
    evaluation = tokenize_prompts(tokenizer, eval_prompts, cfg.max_prompt_tokens) if eval_prompts else None
    return train, evaluation


def load_judge(path: str, batch_size: int) -> Any:
    """A judge from a directory saved by ``nlhf train-pm`` (preference model) or ``train-rm`` (reward model)."""
    from nlhf.judges import PreferenceModelJudge, RewardModelJudge
    from nlhf.models.scorer import SequenceScorer

    model = SequenceScorer.from_pretrained(path).eval()
    if model.kind == "reward":
        return RewardModelJudge(model, batch_size=batch_size)
    return PreferenceModelJudge(model, batch_size=batch_size)


def eos_id(tokenizer: Any) -> int:
    """The token that ends a response (the tokenizer's EOS; for chat models the end-of-turn token)."""
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ValueError("the tokenizer has no eos_token_id: a sampled response could never end")
    return int(eos)


def finish_run(cfg: Any, loop: Any, result: Any, tokenizer: Any, out: Path, timings: dict[str, float],
               extra: dict[str, Any]) -> tuple[Any, dict[str, Any], Path | None]:  # fmt: skip
    """Save the policy (``out/policy``) and ``metrics.json``; returns (policy, summary, policy_dir)."""
    from nlhf.models.policy import save_policy
    from nlhf.train.checkpoint import write_text_atomic

    acc = loop.accelerator
    trained = acc.unwrap_model(loop.model)
    summary: dict[str, Any] = {}
    policy_dir = None
    t0 = time.perf_counter()
    if acc.is_main_process:
        policy_dir = save_policy(trained, out / POLICY_DIR, merge=cfg.merge_adapter, tokenizer=tokenizer)
        summary = {
            **extra,
            "tau": cfg.tau,
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
    return trained, summary, policy_dir


def make_policy(model: Any, lora: Any, reference_model: Any = None) -> tuple[Any, Any]:
    """``(policy, reference)``: :func:`nlhf.models.policy.build_policy`, or an explicit frozen reference model."""
    from nlhf.models.policy import Reference, build_policy

    if reference_model is None:
        return build_policy(model, lora)
    if lora is not None:
        raise ValueError(
            "reference_model cannot be combined with LoRA (the reference is the base model, adapter off)"
        )
    reference_model.requires_grad_(False)
    reference_model.eval()
    model.requires_grad_(True)
    return model, Reference(reference_model)


def default_optimizer(cfg: Any) -> Callable[[Any], Any]:
    """The loop's AdamW (:func:`nlhf.train.loop.make_optimizer`, fused where torch supports it)."""
    from nlhf.train.loop import make_optimizer

    return lambda model: make_optimizer(model, cfg.optim)


def run_online(
    cfg: OnlineConfig,
    *,
    model: Any = None,
    tokenizer: Any = None,
    judge: Any = None,
    train_prompts: Sequence[Any] | None = None,
    eval_prompts: Sequence[Any] | None = None,
    optimizer_fn: Callable[[Any], Any] | None = None,
    reference_model: Any = None,
) -> OnlineResult:
    """Train a policy online with ``cfg.algorithm``; returns the policy, the summary and timings.

    ``model``/``tokenizer`` (both; e.g. :class:`nlhf.models.tabular.TabularLM`) replace
    loading ``cfg.model``; ``judge`` (any :class:`nlhf.judges.Judge`) replaces loading
    ``cfg.judge``; ``train_prompts``/``eval_prompts`` (prompts, ``PromptExample`` or
    ``PreferenceExample`` objects) replace loading ``cfg.prompts``/``cfg.eval_prompts``;
    ``optimizer_fn(model)`` replaces the loop's AdamW; ``reference_model`` (full fine-tuning
    only) is used as mu instead of a frozen copy of ``model`` (it is frozen here; same
    vocabulary required). Order: config checked, output
    directory checked, prompts loaded (errors name file and row), model and judge loaded,
    loop built (refuses old checkpoints unless ``loop.resume``/``loop.overwrite``), trained,
    saved.
    """
    from accelerate.utils import set_seed

    from nlhf.sampling import HFSampler
    from nlhf.train.loop import TrainLoop, check_out_dir, make_accelerator
    from nlhf.train.offline import load_model, pad_token_id

    if (model is None) != (tokenizer is None):
        raise ValueError("run_online: pass both model and tokenizer, or neither")
    cfg.check_complete(need_prompts=train_prompts is None, need_judge=judge is None)
    refuse_sharded_weights(f"algorithm {cfg.algorithm}")
    timings: dict[str, float] = {}
    out = check_out_dir(cfg.out, cfg.loop.min_free_disk_mb * 2**20)
    loop_cfg = dataclasses.replace(cfg.loop, out_dir=str(out))

    t0 = time.perf_counter()
    set_seed(cfg.loop.seed)
    if model is None:
        model, tokenizer = load_model(cfg)
    if judge is None:
        judge = load_judge(cfg.judge, cfg.judge_batch_size)
    timings["load"] = time.perf_counter() - t0
    train_items, eval_items = load_prompt_items(cfg, tokenizer, train_prompts, eval_prompts)

    acc = make_accelerator(loop_cfg)
    policy, reference = make_policy(model, cfg.lora, reference_model)
    policy.to(acc.device)
    reference.to(acc.device)
    if getattr(judge, "model", None) is not None and hasattr(judge.model, "to"):
        judge.model.to(acc.device)  # a learned judge runs where the policy runs
    opponent = EmaOpponent(policy, cfg.ema_decay) if cfg.algorithm == "nash_ema" else None
    pad = pad_token_id(tokenizer)
    sampler = HFSampler(policy, reference, cfg.sampling, opponent=opponent.model if opponent else None,
                        eos_token_id=eos_id(tokenizer), pad_token_id=pad)  # fmt: skip

    make_optimizer = optimizer_fn or default_optimizer(cfg)
    if opponent is not None:

        def make_optimizer(m: Any, _base: Callable[[Any], Any] = make_optimizer) -> Any:
            optimizer = _base(m)
            optimizer.register_step_post_hook(lambda *_: opponent.update(policy))  # after every real update
            return optimizer

    loop = TrainLoop(
        loop_cfg,
        cfg.optim,
        policy,
        train_items,
        make_collate(pad),
        make_step(cfg, sampler, judge, tokenizer, reference),
        eval_data=eval_items,
        eval_fn=make_eval_step(cfg, sampler, judge, tokenizer),
        stateful={"ema_opponent": opponent} if opponent is not None else None,
        run_config=cfg,
        accelerator=acc,
        optimizer_fn=make_optimizer,
    )
    t0 = time.perf_counter()
    result = loop.run()
    timings["train"] = time.perf_counter() - t0
    extra = {"algorithm": cfg.algorithm, "mixture_coef": cfg.beta if cfg.algorithm in MIXTURE_ALGORITHMS else None,
             "n_train": len(train_items), "n_eval": len(eval_items) if eval_items else 0,
             "prompts_truncated": sum(1 for it in train_items if it.cut)}  # fmt: skip
    if opponent is not None:
        extra["ema_decay"] = cfg.ema_decay
    trained, summary, policy_dir = finish_run(cfg, loop, result, tokenizer, out, timings, extra)
    return OnlineResult(trained, tokenizer, summary, result, out, policy_dir, timings, opponent)


def summary_json(result: OnlineResult, keys: Sequence[str], metrics: Sequence[str]) -> str:
    """A trainer's final JSON line: ``out``, the summary's ``keys``, ``<split>_<metric>`` of the train
    and eval ``metrics`` that are there, and ``policy``; empty on processes other than the main one."""
    s = result.summary
    if not s:
        return ""
    shown = {k: s.get(k) for k in keys}
    for split in ("train", "eval"):
        for key in metrics:
            if key in (s.get(split) or {}):
                shown[f"{split}_{key}"] = s[split][key]
    return json.dumps({"out": str(result.out_dir), **shown, "policy": s.get("policy_dir")})


def summary_line(result: OnlineResult) -> str:
    """The one JSON line ``nlhf train <online family>`` prints at the end."""
    return summary_json(result, ("algorithm", "tau", "mixture_coef", "steps"),
                        ("loss", "win_rate", "win_rate_vs_ref", "kl_k3", "length", "truncated"))  # fmt: skip


# ----------------------------------------------------------------------------- command line

_FLAGS = ("prompts", "eval_prompts", "model", "judge", "out")
_ROW = dict(module="nlhf.train.online", config_class="OnlineConfig", run="run_online", summary="summary_line",
            flags=_FLAGS)  # fmt: skip

# ``nlhf train FAMILY`` rows (keyword arguments of nlhf.train.offline_cli.TrainFamily).
ONLINE_FAMILIES: dict[str, dict[str, Any]] = {
    "nash-md": dict(
        help="Nash-MD-PG: y ~ pi against y' ~ the token-level mixture pi^(1-beta) mu^beta (THEORY.md Sec. 4)",
        fixed={"algorithm": "nash_md"},
        description="Nash-MD-PG against the geometric mixture with the reference (mixture_coef=BETA, default "
        "0.125), judged by a preference or reward model (--judge).",
        **_ROW,
    ),
    "self-play": dict(
        help="SelfPlay: Nash-MD-PG with mixture_coef 0 (the opponent is the policy itself)",
        fixed={"algorithm": "self_play"},
        **_ROW,
    ),
    "best-response": dict(
        help="BestResponse: Nash-MD-PG with mixture_coef 1 (the opponent is the reference)",
        fixed={"algorithm": "best_response"},
        **_ROW,
    ),
    "nash-ema": dict(
        help="Nash-EMA-PG: the opponent is the EMA of the policy's parameters (ema_decay)",
        fixed={"algorithm": "nash_ema"},
        **_ROW,
    ),
    "online-ipo": dict(
        help="online IPO: both responses from the policy, soft labels from the judge (THEORY.md Sec. 6)",
        fixed={"algorithm": "online_ipo"},
        **_ROW,
    ),
    "ipo-md": dict(
        help="IPO-MD: online IPO on two samples of the geometric mixture (THEORY.md Sec. 6)",
        fixed={"algorithm": "ipo_md"},
        **_ROW,
    ),
}

__all__ = [
    "ONLINE_ALGORITHMS",
    "ONLINE_FAMILIES",
    "OnlineConfig",
    "OnlineBatch",
    "OnlineResult",
    "PromptItem",
    "EmaOpponent",
    "load_online_config",
    "tokenize_prompts",
    "make_collate",
    "repeat_prompts",
    "stack_prompts",
    "row_seeds",
    "row_generator",
    "judge_preference",
    "refuse_sharded_weights",
    "step_output",
    "reference_logps",
    "log_importance_weight",
    "weighted_kl",
    "make_step",
    "sample_against_reference",
    "make_eval_step",
    "make_policy",
    "run_online",
    "summary_line",
]
