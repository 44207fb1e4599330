"""Offline DPO, IPO and conservative DPO on causal LMs: ``nlhf train dpo|ipo|cdpo`` (THEORY.md Sec. 5).

A short file on the shared loop (:mod:`nlhf.train.loop`), composition not inheritance:

1. pairs are loaded (:func:`nlhf.data.load_preferences`) and tokenised once
   (:func:`nlhf.data.tokenize_pair`: prompt + response + end-of-turn, masks from lengths);
2. the policy pi and the explicit reference mu come from :func:`nlhf.models.build_policy`
   (a frozen copy, or the base model with the LoRA adapter disabled: never the adapted
   model), or mu is the separate model ``reference=SPEC`` (TRL's ``ref_model``, OpenRLHF's
   ``--ref_pretrain``; its tokenizer must be the policy's);
3. mu's sequence log-probs of both responses of every pair the run will read are computed
   ONCE, before the first step (batched, length-sorted, no grad) and cached (also on disk,
   ``ref_logps.pt``, so a resumed run does not recompute them). A run shorter than an epoch
   (``loop.max_steps``, ``loop.epochs < 1``) reads a known part of the data (the stream is
   seeded, :func:`nlhf.train.ref_cache.visited_indices`) and computes mu's log-probs for that part only. The
   full fine-tuning reference copy is then released unless the evaluation needs it for the KL;
4. each step scores both responses of B pairs with the policy, takes
   :func:`nlhf.logprobs.seq_logps` with the configured reduction, and the loss of
   :mod:`nlhf.losses.pairwise` per pair. By default each prompt is run ONCE for its two
   responses (``share_prompt``: the prompt's KV cache is repeated for both, see
   :func:`nlhf.train.pair_logps.shared_prompt_logps`; the same log-probs as the plain (2B, T) forward over
   ``prompt + first`` / ``prompt + second``, which is used for models without a cache
   argument and under DDP). The step returns per-pair losses with weight 1 each, so the
   loop's normalisation (global sum / global weight) makes the update of 8 micro-batches
   of 1 pair identical to one batch of 8, whatever the completion lengths.

Losses (tau is TRL's ``beta``; h = log[pi(y_w) mu(y_l) / (pi(y_l) mu(y_w))]):

* ``dpo``: -log sigmoid(tau h); ``cdpo``: label smoothing eps (the labels are flipped with
  probability eps); both need hard labels: a pair labelled 0 is turned round so that
  ``first`` is the winner; any other label is refused, naming the row.
* ``ipo``: (h - (p - 1/2)/tau)^2 with the soft label p = P(first > second) (PsiPO Eq. 17).

Sum or mean (``reduction``, default ``"sum"`` for every loss). With SUM log-probs h is the
sequence-level log-ratio margin and tau the KL strength of THEORY.md: IPO's optimum is
pi*(y) proportional to mu(y) exp(p*(y > nu)/tau) exactly, which the lab checks (the
PsiPO paper's definition; OpenRLHF's convention). TRL length-normalises IPO (MEAN
log-probs, "confirmed with the IPO authors"): then tau acts like tau / L for completions
of about L tokens and the optimum above no longer holds when lengths differ. ``reduction:
mean`` reproduces TRL's IPO; the choice is saved with the run's ``config.yaml``.

Metrics (JSONL / TensorBoard, means over pairs): ``loss``; ``reward_margin`` = tau h (the
implicit reward margin); ``log_ratio_margin`` = h; ``accuracy`` (implicit preference
agrees with the label); ``chosen_reward`` / ``rejected_reward`` = tau (log pi - log mu);
``chosen_logps`` / ``rejected_logps`` (policy, with the configured reduction). At
evaluation also ``kl_ref``: the EXACT KL(pi(.|x, y_<t) || mu(.|x, y_<t)), summed over the
vocabulary, added over the completion positions t of each dataset response and averaged
over responses. It is a teacher-forced KL along the data's prefixes, not a sample
estimate: no estimator is involved, but it is the sequence-level KL(pi || mu) only when
responses are a single token (exactly so for :mod:`nlhf.models.tabular`); the
sequence-level KL needs samples of pi (the online trainers' k1/k3).

The run directory ``out`` receives ``config.yaml`` (the resolved config), ``ref_logps.pt``
(the cache), ``metrics.jsonl``, ``tensorboard/``, checkpoints ``ckpt-<step>/`` (atomic,
exact resume: :mod:`nlhf.train.checkpoint`), the final policy in ``out/policy/``
(``save_pretrained`` with the tokenizer; LoRA merged into the weights, or the adapter when
``merge_adapter: false``) and ``metrics.json``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from nlhf.config import ConfigError, check, sections_from_dicts
from nlhf.data.collate import pad_token_id
from nlhf.losses import get_loss
from nlhf.models.loading import ModelLoadError, load_model
from nlhf.models.lora import LoraSettings
from nlhf.train import loop as loop_lib  # loop_lib.TrainLoop: replaceable in tests
from nlhf.train.config import LoopConfig, OptimConfig, check_required
from nlhf.train.dpo_data import (  # the data names are re-exported from here (tests, callers)
    OfflineItem,
    make_collate,
    prepare_examples,
    tokenize_examples,
    training_examples,
)
from nlhf.train.loop import StepOutput, make_accelerator
from nlhf.train.pair_logps import (
    PromptSharing,
    pair_logps,
    prompt_sharing,
    sequence_logps,
    token_kl,
)
from nlhf.train.ref_cache import (
    REF_CACHE,
    RefLogps,
    check_reference_tokenizer,
    fill_reference_cache,
    fingerprint,
    reference_logps,
    visited_indices,
)
from nlhf.train.run import (
    RunResult,
    check_model_pair,
    checkpoint_policy,
    load_policy_model,
    resolve_model_settings,
    start_run,
    train_and_save,
)

OFFLINE_LOSSES = ("dpo", "ipo", "cdpo")


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True)
class OfflineConfig:
    """Everything ``nlhf train dpo|ipo|cdpo`` reads; YAML plus ``key=value`` overrides.

    ``model``: ``"smollm2"``, ``"tiny"`` (a random ~0.1M-parameter Llama with the byte
    tokenizer, for tests and demos), a local ``save_pretrained`` directory, a GGUF file or
    a hub name. ``eval_data`` is optional (without it nothing is evaluated).
    """

    loss: Literal["dpo", "ipo", "cdpo"] = "dpo"
    tau: float = 0.1  # KL strength (TRL's beta)
    label_smoothing: float = 0.0  # cdpo only: probability eps that a label is flipped
    reduction: Literal["sum", "mean"] = (
        "sum"  # sequence log-prob: SUM (THEORY.md's tau) or per-token MEAN (TRL IPO)
    )
    data: str = ""  # --data: file, directory or hub name (nlhf.data.load_preferences)
    eval_data: str | None = None  # --eval-data
    model: str = "smollm2"  # --model
    out: str = ""  # --out: the run directory
    data_format: str | None = None  # trl | ultrafeedback | hh | pairwise; None: detected
    split: str | None = None
    eval_split: str | None = None
    skip_invalid: bool = False  # skip (and count) invalid rows instead of failing
    limit: int | None = None  # use at most this many training pairs
    eval_limit: int | None = None
    max_prompt_tokens: int | None = 512  # prompts cut from the left (nlhf.data.truncation)
    max_response_tokens: int | None = 512  # responses cut from the right
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on CUDA, else fp32
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"  # from_pretrained's kernel
    gradient_checkpointing: bool = False  # recompute the policy's activations in backward (same gradients)
    reference: str | None = None  # mu: any --model spec; None: the initial policy (a copy, or LoRA's base)
    lora: LoraSettings | None = None  # e.g. lora.r=8 enables LoRA (reference: adapter disabled)
    merge_adapter: bool = True  # save the LoRA policy merged (True) or as an adapter directory
    ref_batch_size: int | None = None  # pairs per reference forward; None: by a logits-memory budget
    eval_kl: bool = True  # compute kl_ref at evaluation (keeps the reference in memory)
    share_prompt: bool = True  # run each prompt once for both responses (KV cache); off: one (2B, T) forward
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-6, warmup_steps=0))
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(micro_batch_size=8, log_every=10))

    def __post_init__(self) -> None:
        sections_from_dicts(self)  # nested sections given as plain dicts
        check(
            self.tau > 0 and self.tau != float("inf"), "tau", f"must be a finite number > 0, got {self.tau}"
        )
        if self.loss == "cdpo":
            check(
                0.0 <= self.label_smoothing < 0.5,
                "label_smoothing",
                f"must be in [0, 0.5), got {self.label_smoothing}",
            )
        else:
            check(self.label_smoothing == 0.0, "label_smoothing",
                  f"is only used by loss=cdpo (conservative DPO), got {self.label_smoothing} with loss={self.loss}")  # fmt: skip
        check(self.limit is None or self.limit > 0, "limit", f"must be > 0, got {self.limit}")
        check(
            self.eval_limit is None or self.eval_limit > 0,
            "eval_limit",
            f"must be > 0, got {self.eval_limit}",
        )
        check(self.max_prompt_tokens is None or self.max_prompt_tokens >= 1, "max_prompt_tokens",
              f"must be >= 1, got {self.max_prompt_tokens}")  # fmt: skip
        check(self.max_response_tokens is None or self.max_response_tokens >= 1, "max_response_tokens",
              f"must be >= 1, got {self.max_response_tokens}")  # fmt: skip
        check(self.ref_batch_size is None or self.ref_batch_size >= 1, "ref_batch_size",
              f"must be >= 1, got {self.ref_batch_size}")  # fmt: skip
        check(
            not self.loop.out_dir or self.loop.out_dir == self.out,
            "loop.out_dir",
            "set `out` (--out) instead",
        )

    def check_complete(self) -> None:
        """The fields without a usable default (called before any data or model loads)."""
        check_required(self, data="--data TRAIN", out="--out DIR", model="--model smollm2|tiny|PATH")


# ----------------------------------------------------------------------------- steps


def pair_loss(
    cfg: OfflineConfig, chosen: Any, rejected: Any, ref_chosen: Any, ref_rejected: Any, labels: Any
) -> Any:
    """The configured loss of :mod:`nlhf.losses` on (B,) log-probs: a ``LossOutput`` with loss (B,)."""
    fn = get_loss(cfg.loss)
    if cfg.loss == "ipo":
        return fn(chosen, rejected, ref_chosen, ref_rejected, tau=cfg.tau, labels=labels)
    if cfg.loss == "cdpo":
        return fn(
            chosen, rejected, ref_chosen, ref_rejected, tau=cfg.tau, label_smoothing=cfg.label_smoothing
        )
    return fn(chosen, rejected, ref_chosen, ref_rejected, tau=cfg.tau)


PAIR_METRICS = ("reward_margin", "log_ratio_margin", "accuracy", "chosen_reward", "rejected_reward")


def loss_output(cfg: OfflineConfig, seq: Any, batch: dict[str, Any]) -> Any:
    """:class:`~nlhf.train.loop.StepOutput` from the (2B,) policy log-probs: per-pair losses, weight 1 each."""
    import torch

    B = batch["labels"].shape[0]
    chosen, rejected = seq[:B], seq[B:]  # (B,) each: first, second
    ref = batch["ref_logps"].to(seq.dtype)  # (B, 2)
    out = pair_loss(cfg, chosen, rejected, ref[:, 0], ref[:, 1], batch["labels"])
    pairs = torch.ones(B, dtype=torch.float32, device=seq.device)  # (B,) every pair weighs 1
    metrics = {name: (out.metrics[name], pairs) for name in PAIR_METRICS}
    metrics["chosen_logps"] = (chosen.detach(), pairs)
    metrics["rejected_logps"] = (rejected.detach(), pairs)
    return StepOutput(losses=out.loss, weights=pairs, metrics=metrics)


def make_step(cfg: OfflineConfig, sharing: PromptSharing | None = None) -> Callable[[Any, Any, Any], Any]:
    """The training step: per-pair losses (B,), weight 1 per pair (the loop divides by the global count).

    With ``sharing`` (and a batch from ``make_collate(..., share_prompt=True)``) each prompt
    is run once (:func:`shared_prompt_logps`), else one (2B, T) forward.
    """

    def step(model: Any, batch: dict[str, Any], ctx: Any) -> Any:
        return loss_output(cfg, pair_logps(model, batch, cfg.reduction, sharing), batch)

    return step


def make_eval_step(
    cfg: OfflineConfig, reference: Any | None, sharing: PromptSharing | None = None
) -> Callable[[Any, Any, Any], Any]:
    """The evaluation step: the training metrics plus, given the reference, ``kl_ref`` (exact, teacher-forced).

    ``kl_ref`` needs both models' logits on the same (2B, T) rows, so with a reference the
    evaluation runs the one-forward layout; without one it runs like the training step.
    """
    import torch

    def eval_step(model: Any, batch: dict[str, Any], ctx: Any) -> Any:
        if reference is None:
            return loss_output(cfg, pair_logps(model, batch, cfg.reduction, sharing), batch)
        ids, attn, comp = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
        seq, logits = sequence_logps(model, ids, attn, comp, cfg.reduction)  # (2B,), (2B, T, V)
        out = loss_output(cfg, seq, batch)
        mask = None if bool(attn.all()) else attn
        ref_logits = reference(input_ids=ids, attention_mask=mask, use_cache=False).logits  # (2B, T, V)
        kl = token_kl(logits, ref_logits, comp)  # (2B,)
        out.metrics["kl_ref"] = (kl, torch.ones_like(kl))
        return out

    return eval_step


# ----------------------------------------------------------------------------- the run


OfflineResult = RunResult  # timings: load, tokenize, loop_setup, ref_precompute, train, save


def _make_loop(
    cfg: OfflineConfig,
    loop_cfg: LoopConfig,
    policy: Any,
    eval_reference: Any | None,
    train_pairs: list[Any],
    eval_pairs: list[Any] | None,
    ref: RefLogps,
    pad_id: int,
    sharing: PromptSharing | None,
    acc: Any,
    optimizer_fn: Callable[[Any], Any] | None,
) -> Any:
    """The shared loop over :class:`OfflineItem` s (checks the run directory, saves ``config.yaml``)."""
    train_items = [OfflineItem("train", i, p) for i, p in enumerate(train_pairs)]
    eval_items = [OfflineItem("eval", i, p) for i, p in enumerate(eval_pairs)] if eval_pairs else None
    return loop_lib.TrainLoop(
        loop_cfg,
        cfg.optim,
        policy,
        train_items,
        make_collate(pad_id, ref, share_prompt=sharing is not None),
        make_step(cfg, sharing),
        eval_data=eval_items,
        eval_fn=make_eval_step(cfg, eval_reference, sharing),
        run_config=cfg,
        accelerator=acc,
        optimizer_fn=optimizer_fn,
    )


def policy_and_reference(cfg: OfflineConfig, model: Any, tokenizer: Any) -> tuple[Any, Any]:
    """``(policy, reference)``: :func:`nlhf.models.build_policy`, or with ``cfg.reference`` that model as mu.

    The separate reference is loaded like the policy (dtype, attention kernel; ``tiny`` seeded
    by ``loop.seed``), frozen, and must share the policy's tokenizer (a ConfigError naming
    ``reference`` otherwise). The policy is ``model`` (all parameters trainable) or, with LoRA,
    the model with fresh adapters. Gradient checkpointing goes on the policy only.
    """
    from nlhf.models.lora import apply_lora
    from nlhf.models.policy import Reference, build_policy

    if not cfg.reference:
        policy, reference = build_policy(model, cfg.lora)
        return checkpoint_policy(cfg, policy), reference
    try:
        ref_model, ref_tokenizer = load_model(cfg.reference, dtype=cfg.dtype, seed=cfg.loop.seed,
                                              attn_implementation=cfg.attn_implementation)  # fmt: skip
    except ModelLoadError as exc:
        raise ConfigError(f"reference: {exc}") from exc
    check_reference_tokenizer(tokenizer, ref_tokenizer, cfg.reference)
    ref_model.requires_grad_(False)
    ref_model.eval()
    if cfg.lora is not None:
        policy = apply_lora(model, cfg.lora, task_type="CAUSAL_LM")
    else:
        policy = model.requires_grad_(True)
    return checkpoint_policy(cfg, policy), Reference(ref_model)


def _summary_extra(
    cfg: OfflineConfig, n_train: int, n_eval: int, cut: Counter, computed: int, shared: bool
) -> dict[str, Any]:
    """The run's own fields of ``metrics.json`` (beside the loop's summary)."""
    return {
        "loss": cfg.loss,
        "tau": cfg.tau,
        "reduction": cfg.reduction,
        "label_smoothing": cfg.label_smoothing,
        "n_train": n_train,
        "n_eval": n_eval,
        "ref_logps": "computed" if computed else "cached",
        "ref_pairs_computed": computed,  # pairs (train + eval) whose mu log-probs this run computed
        "share_prompt": shared,
        "truncated": {"pairs": n_train, **dict(cut)},
    }


def run_offline(
    cfg: OfflineConfig,
    *,
    model: Any = None,
    tokenizer: Any = None,
    train_examples: Sequence[Any] | None = None,
    eval_examples: Sequence[Any] | None = None,
    optimizer_fn: Callable[[Any], Any] | None = None,
) -> OfflineResult:
    """Train a policy with offline DPO / IPO / cDPO; returns the policy, the summary and timings.

    ``model``/``tokenizer`` (both, e.g. a :class:`nlhf.models.tabular.TabularLM`) replace
    loading ``cfg.model``; ``train_examples``/``eval_examples`` (``PreferenceExample``)
    replace loading ``cfg.data``/``cfg.eval_data``. ``optimizer_fn(model)`` replaces the
    loop's (fused) AdamW, :func:`nlhf.train.loop.make_optimizer`. Order: config checked, output directory
    checked, data loaded (errors name file and row), model loaded, loop built (refuses old
    checkpoints unless ``loop.resume``/``loop.overwrite``), reference log-probs computed
    once (or read from ``ref_logps.pt``), trained, saved.
    """
    from accelerate.utils import set_seed

    check_model_pair(model, tokenizer, "run_offline")
    cfg = resolve_model_settings(cfg)  # dtype auto resolved, attention / QLoRA checked
    if train_examples is None:
        cfg.check_complete()
    else:
        check(bool(cfg.out), "out", "required (--out DIR)")
    timings: dict[str, float] = {}
    out, loop_cfg = start_run(cfg)

    # 1. Data (validated, oriented for DPO).
    train_examples, eval_examples = training_examples(cfg, train_examples, eval_examples)

    # 2. Model, tokenisation, policy and explicit reference.
    t0 = time.perf_counter()
    set_seed(cfg.loop.seed)
    model, tokenizer = load_policy_model(cfg, model, tokenizer)
    timings["load"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pad_id = pad_token_id(tokenizer)
    train_pairs, cut = tokenize_examples(tokenizer, train_examples, cfg)
    eval_pairs = tokenize_examples(tokenizer, eval_examples, cfg)[0] if eval_examples else None
    timings["tokenize"] = time.perf_counter() - t0

    acc = make_accelerator(loop_cfg)
    splits = {"train": train_pairs, **({"eval": eval_pairs} if eval_pairs else {})}
    policy, reference = policy_and_reference(cfg, model, tokenizer)
    policy.to(acc.device)
    reference.to(acc.device)
    keep_reference = bool(eval_pairs) and cfg.eval_kl
    # checkpointed layers drop the prompt's KV cache under gradients: one (2B, T) forward then
    sharing = prompt_sharing(policy, acc) if cfg.share_prompt and not cfg.gradient_checkpointing else None
    cache_key = fingerprint(cfg, reference, splits, acc.device, sharing is not None)

    # 3. The loop (checks the run directory, saves config.yaml), then mu's log-probs, once.
    ref = RefLogps()
    t0 = time.perf_counter()
    loop = _make_loop(cfg, loop_cfg, policy, reference if keep_reference else None, train_pairs, eval_pairs, ref,
                      pad_id, sharing, acc, optimizer_fn)  # fmt: skip
    timings["loop_setup"] = time.perf_counter() - t0

    #    Only the pairs the run will read: all of them from one epoch on, fewer for a shorter run.
    t0 = time.perf_counter()
    needed = {"train": visited_indices(len(train_pairs), cfg.loop.seed, loop.max_steps * loop.global_batch)}
    computed = fill_reference_cache(
        ref, splits, needed, out / REF_CACHE, cache_key, write=acc.is_main_process,
        compute=lambda chunk: reference_logps(reference, chunk, pad_id, cfg.reduction, cfg.ref_batch_size, acc.device,
                                              sharing),
    )  # fmt: skip
    timings["ref_precompute"] = time.perf_counter() - t0
    if not keep_reference:
        del reference  # the frozen copy (full fine-tuning) is not needed any more

    # 4. Train; save the policy and the summary.
    n_eval = len(eval_pairs) if eval_pairs else 0
    extra = _summary_extra(cfg, len(train_pairs), n_eval, cut, computed, sharing is not None)
    return train_and_save(cfg, loop, tokenizer, out, timings, extra)


def summary_line(result: OfflineResult) -> str:
    """The one JSON line ``nlhf train dpo|ipo|cdpo`` prints at the end (eval metrics if any, else train)."""
    s = result.summary
    if not s:
        return ""
    split = "eval" if s.get("eval") else "train"
    shown = {k: s.get(k) for k in ("loss", "tau", "reduction", "steps")}
    metrics = s.get(split) or {}
    for key in ("loss", "accuracy", "reward_margin", "kl_ref"):
        if key in metrics:
            shown[f"{split}_{key}"] = metrics[key]
    return json.dumps({"out": str(result.out_dir), **shown, "policy": s.get("policy_dir")})


__all__ = [
    "OFFLINE_LOSSES",
    "OfflineConfig",
    "OfflineItem",
    "OfflineResult",
    "prepare_examples",
    "tokenize_examples",
    "make_collate",
    "loss_output",
    "pair_loss",
    "make_step",
    "make_eval_step",
    "policy_and_reference",
    "run_offline",
    "summary_line",
]
