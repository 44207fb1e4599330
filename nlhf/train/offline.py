"""Offline DPO, IPO and conservative DPO on causal LMs: ``nlhf train dpo|ipo|cdpo`` (THEORY.md Sec. 5).

A short file on the shared loop (:mod:`nlhf.train.loop`), composition not inheritance:

1. pairs are loaded (:func:`nlhf.data.load_preferences`) and tokenised once
   (:func:`nlhf.data.tokenize_pair`: prompt + response + end-of-turn, masks from lengths);
2. the policy pi and the explicit reference mu come from :func:`nlhf.models.build_policy`
   (a frozen copy, or the base model with the LoRA adapter disabled: never the adapted
   model);
3. mu's sequence log-probs of both responses of every pair the run will read are computed
   ONCE, before the first step (batched, length-sorted, no grad) and cached (also on disk,
   ``ref_logps.pt``, so a resumed run does not recompute them). A run shorter than an epoch
   (``loop.max_steps``, ``loop.epochs < 1``) reads a known part of the data (the stream is
   seeded, :func:`visited_indices`) and computes mu's log-probs for that part only. The
   full fine-tuning reference copy is then released unless the evaluation needs it for the KL;
4. each step scores both responses of B pairs with the policy, takes
   :func:`nlhf.logprobs.seq_logps` with the configured reduction, and the loss of
   :mod:`nlhf.losses.pairwise` per pair. By default each prompt is run ONCE for its two
   responses (``share_prompt``: the prompt's KV cache is repeated for both, see
   :func:`shared_prompt_logps`; the same log-probs as the plain (2B, T) forward over
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

import dataclasses
import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from nlhf.config import check
from nlhf.data.collate import pad_token_id  # noqa: F401  (re-exported: online.py, rlhf.py, pipeline.py)
from nlhf.models.lora import LoraSettings
from nlhf.train.config import LoopConfig, OptimConfig, check_required

OFFLINE_LOSSES = ("dpo", "ipo", "cdpo")
METRICS_JSON = "metrics.json"
POLICY_DIR = "policy"
REF_CACHE = "ref_logps.pt"
TINY_MODEL = "tiny"  # --model tiny: nlhf.models.tiny's random Llama and byte tokenizer

# Logits of one reference forward are kept under this many elements (2B x T x V floats).
_REF_LOGITS_BUDGET = 1 << 25


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
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    lora: LoraSettings | None = None  # e.g. lora.r=8 enables LoRA (reference: adapter disabled)
    merge_adapter: bool = True  # save the LoRA policy merged (True) or as an adapter directory
    ref_batch_size: int | None = None  # pairs per reference forward; None: by a logits-memory budget
    eval_kl: bool = True  # compute kl_ref at evaluation (keeps the reference in memory)
    share_prompt: bool = True  # run each prompt once for both responses (KV cache); off: one (2B, T) forward
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-6, warmup_steps=0))
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(micro_batch_size=8, log_every=10))

    def __post_init__(self) -> None:
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


def load_offline_config(
    config_path: str | Path | None = None, overrides: Sequence[str] = (), **flags: Any
) -> OfflineConfig:
    """Defaults, then the YAML file, then ``key=value`` overrides, then non-None ``flags``.

    Unknown keys and wrong types are rejected naming the key (:mod:`nlhf.config`), before
    anything loads. ``check_complete`` is left to :func:`run_offline`.
    """
    from nlhf.train.offline_cli import resolve_config

    return resolve_config(OfflineConfig, config_path, overrides, flags)


# ----------------------------------------------------------------------------- data


def prepare_examples(examples: Sequence[Any], loss: str, where: str) -> list[Any]:
    """The pairs as the loss needs them.

    IPO takes every label p in [0, 1] as it is. DPO and cDPO need a winner: a pair with
    label 1 is kept, a pair with label 0 is turned round (``first`` becomes the winner,
    label 1); a soft label is refused with the row's source, since these losses would
    silently treat it as hard.
    """
    if loss == "ipo":
        return list(examples)
    out = []
    for i, ex in enumerate(examples):
        if ex.label == 1.0:
            out.append(ex)
        elif ex.label == 0.0:
            out.append(ex.swapped())
        else:
            raise ValueError(
                f"{ex.source or f'{where} row {i}'}: label {ex.label} is not 0 or 1; loss={loss} needs hard "
                "labels (use loss=ipo, which honours soft labels, or filter the data)"
            )
    return out


@dataclass(frozen=True)
class OfflineItem:
    """One tokenised pair as the loop sees it: where its cached reference log-probs are."""

    split: str  # "train" | "eval"
    index: int  # row of the reference cache
    pair: Any  # nlhf.data.TokenizedPair


def tokenize_examples(
    tokenizer: Any, examples: Sequence[Any], cfg: OfflineConfig
) -> tuple[list[Any], Counter]:
    """:func:`nlhf.data.tokenize_pair` for every pair, and truncation counts (pairs and tokens cut)."""
    from nlhf.data import tokenize_pair

    pairs, cut = [], Counter()
    for ex in examples:
        p = tokenize_pair(tokenizer, ex, cfg.max_prompt_tokens, cfg.max_response_tokens)
        for name, n in (("prompt", p.prompt_cut), ("first", p.first_cut), ("second", p.second_cut)):
            if n:
                cut[name] += 1
                cut[f"{name}_tokens"] += n
        pairs.append(p)
    return pairs, cut


class RefLogps:
    """The cache of mu's sequence log-probs: per split a (N, 2) float32 tensor (first, second).

    ``done[split]`` (N,) bool, when set, marks the rows computed: a run that reads only part
    of the data (``loop.max_steps`` or ``loop.epochs`` under one epoch) computes mu's
    log-probs for the pairs it will read and no others (:func:`visited_indices`).
    """

    def __init__(self) -> None:
        self.table: dict[str, Any] = {}
        self.done: dict[str, Any] = {}

    def lookup(self, items: Sequence[OfflineItem]) -> Any:
        """(B, 2) cached values of ``items`` (all from one split); an error for a row never computed."""
        import torch

        split = items[0].split
        if split not in self.table:
            raise RuntimeError(f"reference log-probs of the {split} pairs were not computed before the step")
        rows = torch.tensor([it.index for it in items])  # (B,)
        done = self.done.get(split)
        if done is not None and not bool(done[rows].all()):
            missing = [it.index for it in items if not bool(done[it.index])]
            raise RuntimeError(
                f"reference log-probs of {split} pairs {missing} were not computed: the run reads pairs the "
                "precompute did not plan for (visited_indices)"
            )
        return self.table[split][rows]  # (B, 2)


def visited_indices(n: int, seed: int, positions: int) -> list[int]:
    """The dataset indices, sorted, that a run reading the first ``positions`` places of the data stream sees.

    The stream is :func:`nlhf.train.loop.stream_indices`'s: epoch 0's seeded permutation of
    the ``n`` examples, then epoch 1's, ... So a run of at least one epoch sees every
    example, and a shorter one (``positions < n``) the first ``positions`` of epoch 0's
    permutation.
    """
    from nlhf.train.loop import epoch_permutation

    if positions >= n:
        return list(range(n))
    return sorted(epoch_permutation(n, seed, 0)[:positions])


def fill_reference_logps(
    ref: RefLogps,
    name: str,
    pairs: Sequence[Any],
    needed: Sequence[int],
    cached: dict[str, Any],
    compute: Callable,
) -> int:
    """Put mu's log-probs of ``pairs[needed]`` into ``ref`` (split ``name``); returns how many were computed.

    Rows already in ``cached`` (a ``ref_logps.pt`` of the same fingerprint: ``cached[name]``
    (N, 2) and ``cached[name + ":done"]`` (N,) bool; a cache without the mask is complete)
    are reused; the others are computed with ``compute(list_of_pairs) -> (k, 2)``.
    """
    import torch

    n = len(pairs)
    table, done = cached.get(name), cached.get(f"{name}:done")
    if table is None or tuple(table.shape) != (n, 2) or (done is not None and tuple(done.shape) != (n,)):
        table, done = torch.zeros(n, 2, dtype=torch.float32), torch.zeros(n, dtype=torch.bool)
    elif done is None:  # a cache written before the mask existed holds every row
        done = torch.ones(n, dtype=torch.bool)
    wanted = torch.as_tensor(list(needed), dtype=torch.long)  # (k,)
    rows = wanted[~done[wanted]]  # (k',) the ones not cached
    if len(rows):
        table[rows] = compute([pairs[i] for i in rows.tolist()])
        done[rows] = True
    ref.table[name], ref.done[name] = table, done
    return len(rows)


def collate_shared_prompt(pairs: Sequence[Any], pad_token_id: int) -> dict[str, Any]:
    """The prompt-sharing layout of B pairs: each prompt once, both responses after it.

    ``prompt_ids`` (B, P) LEFT-padded (every prompt ends at column P - 1), ``prompt_lengths``
    (B,); ``completion_ids`` (2B, C) right-padded with rows 2i / 2i + 1 the first / second
    response of pair i (interleaved, to match the prompt cache repeated with
    ``repeat_interleave(2)``), ``completion_lengths`` (2B,). Lengths, never ``ids != pad``.
    """
    import torch

    P = max(len(p.prompt_ids) for p in pairs)
    completions = [ids for p in pairs for ids in (p.first_ids, p.second_ids)]  # 2B, interleaved
    C = max(len(c) for c in completions)
    return {
        "prompt_ids": torch.tensor(
            [[pad_token_id] * (P - len(p.prompt_ids)) + p.prompt_ids for p in pairs]
        ),  # (B, P)
        "prompt_lengths": torch.tensor([len(p.prompt_ids) for p in pairs]),  # (B,)
        "completion_ids": torch.tensor([c + [pad_token_id] * (C - len(c)) for c in completions]),  # (2B, C)
        "completion_lengths": torch.tensor([len(c) for c in completions]),  # (2B,)
    }


def make_collate(
    pad_token_id: int, ref: RefLogps, share_prompt: bool = False
) -> Callable[[list[OfflineItem]], dict[str, Any]]:
    """``list[OfflineItem] -> batch``: the pairs' rows and mu's cached log-probs.

    Batch: ``input_ids``/``attention_mask``/``completion_mask`` (2B, T) long, right-padded,
    rows 0..B-1 ``prompt + first`` and B..2B-1 ``prompt + second``; ``labels`` (B,) float32
    = P(first > second); ``ref_logps`` (B, 2) float32 (cached, reduction applied); with
    ``share_prompt`` also the keys of :func:`collate_shared_prompt`.
    """
    from nlhf.data import collate_pairs

    def collate(items: list[OfflineItem]) -> dict[str, Any]:
        pairs = [it.pair for it in items]
        batch = collate_pairs(pairs, pad_token_id)
        out = {
            "input_ids": batch.input_ids,  # (2B, T)
            "attention_mask": batch.attention_mask,  # (2B, T)
            "completion_mask": batch.completion_mask,  # (2B, T)
            "labels": batch.labels,  # (B,)
            "ref_logps": ref.lookup(items),  # (B, 2)
        }
        if share_prompt:
            out.update(collate_shared_prompt(pairs, pad_token_id))
        return out

    return collate


# ----------------------------------------------------------------------------- log-probs


def sequence_logps(
    model: Any, input_ids: Any, attention_mask: Any, completion_mask: Any, reduction: str
) -> tuple[Any, Any]:
    """One forward of ``model`` on (R, T) rows: completion log-probs (R,) and the logits (R, T, V).

    Calls ``model(...)`` (so that DDP synchronises) with ``use_cache=False``; the attention
    mask is dropped when no row is padded (the model's causal fast path).
    """
    from nlhf.logprobs import seq_logps, token_logps

    mask = None if bool(attention_mask.all()) else attention_mask
    logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits  # (R, T, V)
    tok = token_logps(logits, input_ids, completion_mask)  # (R, T-1)
    return seq_logps(tok, completion_mask[:, 1:], reduction), logits  # (R,), (R, T, V)


@dataclass(frozen=True)
class PromptSharing:
    """How a model takes a prompt's KV cache back: the keyword, and whether it takes ``logits_to_keep``."""

    cache_arg: str  # "cache" (transformers >= 5.x) or "past_key_values"
    logits_to_keep: bool


def prompt_sharing(model: Any) -> PromptSharing | None:
    """Whether :func:`shared_prompt_logps` can run ``model``: a causal LM whose forward takes a cache.

    None for models without a cache argument (e.g. :class:`nlhf.models.tabular.TabularLM`)
    and for DDP-wrapped models (two forwards before one backward would confuse DDP's
    gradient reducer).
    """
    import inspect

    import torch

    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return None
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft
    try:
        params = inspect.signature(type(base).forward).parameters
    except (TypeError, ValueError):
        return None
    cache_arg = "cache" if "cache" in params else "past_key_values" if "past_key_values" in params else None
    if cache_arg is None:
        return None
    return PromptSharing(cache_arg, "logits_to_keep" in params)


def shared_prompt_logps(model: Any, batch: dict[str, Any], reduction: str, sharing: PromptSharing) -> Any:
    """Completion log-probs of both responses of B pairs, running each prompt ONCE: (2B,) firsts then seconds.

    Two forwards instead of one over 2B full rows:

    1. the B prompts WITHOUT their last token (left-padded, ``use_cache=True``): only the
       KV cache is used, so no logits, final norm or final-layer MLP of these positions
       enter the backward pass;
    2. the 2B rows ``[last prompt token, response without its final token]`` (layout of
       :func:`collate_shared_prompt`; no row needs its final token as an input) attending
       to that cache repeated for the two responses of each prompt, with position ids
       ``prompt_length - 1 + j`` and the attention mask ``[prompt mask | 1 | response
       mask]``. Position j predicts response token j: :func:`nlhf.logprobs.token_logps`
       scores tokens 0 .. C-2, and the last position (which its shift never reads) token
       C-1 of the rows that have one.

    Mathematically the same log-probs (and gradients: they flow through the cache into
    the prompt forward) as :func:`sequence_logps` on ``prompt + response`` rows, while each
    prompt token is computed once instead of twice: it saves about prompt / (2 prompt +
    2 response) of the token work, forward and backward.
    """
    import torch

    from nlhf.logprobs import token_logps
    from nlhf.models.scorer import output_cache

    prompt_ids, plen = batch["prompt_ids"], batch["prompt_lengths"]  # (B, P) left-padded, (B,)
    comp_ids, clen = batch["completion_ids"], batch["completion_lengths"]  # (R, C) right-padded, (R,)
    B, P = prompt_ids.shape
    R, C = comp_ids.shape
    dev = comp_ids.device
    start = P - plen  # (B,) first real column of each left-padded prompt
    head_mask = (torch.arange(P - 1, device=dev).unsqueeze(0) >= start.unsqueeze(1)).long()  # (B, P-1)
    padded = bool((plen < P).any())
    comp_mask = (torch.arange(C, device=dev).unsqueeze(0) < clen.unsqueeze(1)).long()  # (R, C)

    kw: dict[str, Any] = {}
    if P > 1:  # 1. the prompts minus their last token, for the cache
        head_kw: dict[str, Any] = {"logits_to_keep": 1} if sharing.logits_to_keep else {}
        if padded:
            head_kw["attention_mask"] = head_mask
            head_kw["position_ids"] = (
                torch.arange(P - 1, device=dev).unsqueeze(0) - start.unsqueeze(1)
            ).clamp(min=0)
        cache = output_cache(model(input_ids=prompt_ids[:, :-1], use_cache=True, **head_kw))
        if cache is None or not hasattr(cache, "batch_repeat_interleave"):
            raise RuntimeError(
                f"{type(model).__name__} returned no repeatable KV cache; set share_prompt=false for this model"
            )
        cache.batch_repeat_interleave(2)  # rows 2i, 2i + 1 <- prompt i
        kw[sharing.cache_arg] = cache

    # 2. [last prompt token, response minus its final token]: position j predicts response token j
    ids = torch.cat([prompt_ids[:, -1:].repeat_interleave(2, dim=0), comp_ids[:, :-1]], dim=1)  # (R, C)
    kw["position_ids"] = (plen - 1).repeat_interleave(2).unsqueeze(1) + torch.arange(C, device=dev)  # (R, C)
    if padded or not bool(comp_mask.all()):
        kw["attention_mask"] = torch.cat(
            [head_mask.repeat_interleave(2, dim=0), torch.ones_like(comp_mask[:, :1]), comp_mask[:, :-1]],
            dim=1,
        )  # (R, P - 1 + C)
    logits = model(input_ids=ids, use_cache=P > 1, **kw).logits  # (R, C, V)
    # tokens 0 .. C-2: token_logps's shift (position t scores ids[t + 1] = response token t) ...
    total = torch.zeros(R, dtype=torch.promote_types(logits.dtype, torch.float32), device=dev)  # (R,)
    if C > 1:
        scored = torch.cat([torch.zeros_like(comp_mask[:, :1]), comp_mask[:, :-1]], dim=1)  # (R, C)
        total = total + token_logps(logits, ids, scored).sum(dim=-1)
    # ... and token C-1 (rows of full width only) from the last position, which token_logps never reads
    last = (
        torch.log_softmax(logits[:, -1].to(total.dtype), dim=-1).gather(-1, comp_ids[:, -1:]).squeeze(-1)
    )  # (R,)
    total = total + torch.where(comp_mask[:, -1].bool(), last, torch.zeros_like(last))
    if reduction == "mean":
        total = total / clen.to(total.dtype)
    elif reduction != "sum":
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    return torch.cat([total[0::2], total[1::2]])  # (2B,) firsts, then seconds


def pair_logps(model: Any, batch: dict[str, Any], reduction: str, sharing: PromptSharing | None) -> Any:
    """(2B,) sequence log-probs, firsts then seconds: prompt-shared when ``sharing`` is set, else one forward."""
    if sharing is not None and "prompt_ids" in batch:
        return shared_prompt_logps(model, batch, reduction, sharing)
    seq, _ = sequence_logps(
        model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"], reduction
    )
    return seq


def reference_logps(
    reference: Any,
    pairs: Sequence[Any],
    pad_token_id: int,
    reduction: str,
    batch_pairs: int | None = None,
    device: Any = None,
    sharing: PromptSharing | None = None,
) -> Any:
    """mu's sequence log-probs of both responses of every pair, (N, 2) float32 on CPU.

    Pairs are sorted by length and batched under ``torch.no_grad`` (the reference is in eval
    mode): ``batch_pairs`` pairs per forward, or, when None, as many as keep one forward
    under the token budget (1,024 tokens on CPU, where larger matrices run slower per
    token, 16,384 on a GPU) and its logits under 32M elements. The same code as the
    training step (:func:`pair_logps`), so h = 0 at step 0 up to rounding. Column 0 is
    ``first``, column 1 ``second``.
    """
    import torch

    from nlhf.data import collate_pairs

    n = len(pairs)
    out = torch.zeros(n, 2, dtype=torch.float32)
    if n == 0:
        return out
    vocab = _vocab_size(reference)
    on_gpu = device is not None and torch.device(device).type != "cpu"
    token_budget = 16_384 if on_gpu else 1_024
    width = [max(len(p.input_ids(0)), len(p.input_ids(1))) for p in pairs]
    order = sorted(range(n), key=lambda i: width[i])
    start = 0
    with torch.no_grad():
        while start < n:
            if batch_pairs is None:  # grow the batch while it stays in budget (widths increase)
                stop = start + 1
                while (
                    stop < n
                    and 2 * (stop + 1 - start) * width[order[stop]] <= token_budget
                    and (2 * (stop + 1 - start) * width[order[stop]] * vocab <= _REF_LOGITS_BUDGET)
                ):
                    stop += 1
            else:
                stop = min(n, start + batch_pairs)
            idx = order[start:stop]
            chunk = [pairs[i] for i in idx]
            plain = collate_pairs(chunk, pad_token_id)
            batch = {"input_ids": plain.input_ids, "attention_mask": plain.attention_mask,
                     "completion_mask": plain.completion_mask}  # fmt: skip
            if sharing is not None:
                batch.update(collate_shared_prompt(chunk, pad_token_id))
            if device is not None:
                batch = {k: v.to(device) for k, v in batch.items()}
            seq = pair_logps(reference, batch, reduction, sharing).float().cpu()  # (2b,)
            b = len(idx)
            rows = torch.tensor(idx)
            out[rows, 0] = seq[:b]
            out[rows, 1] = seq[b:]
            start = stop
    return out


def _vocab_size(model: Any) -> int:
    config = getattr(model, "config", None)
    size = getattr(config, "vocab_size", None) if config is not None else None
    return int(size) if size else 50_000


def token_kl(policy_logits: Any, ref_logits: Any, completion_mask: Any) -> Any:
    """Exact teacher-forced KL per row: sum over completion positions of KL(pi(.|prefix) || mu(.|prefix)).

    ``policy_logits``/``ref_logits`` (R, T, V) of the same rows, ``completion_mask`` (R, T).
    Position t predicts token t + 1, so the positions summed are those with
    ``completion_mask[:, 1:]`` (as in :func:`nlhf.logprobs.token_logps`). Each term is the
    full sum over the vocabulary, sum_v pi_v (log pi_v - log mu_v) >= 0, in float32 at
    least, one row at a time (no (R, T, V) log-softmax is held). Returns (R,), detached.
    """
    import torch

    mask = completion_mask[:, 1:].to(torch.bool)  # (R, T-1)
    out = torch.zeros(mask.shape[0], dtype=torch.float64)
    for r in range(mask.shape[0]):
        pos = mask[r].nonzero().squeeze(-1)  # (n,)
        if pos.numel() == 0:
            continue
        dtype = torch.promote_types(policy_logits.dtype, torch.float32)
        lp = torch.log_softmax(policy_logits[r, pos].detach().to(dtype), dim=-1)  # (n, V)
        lq = torch.log_softmax(ref_logits[r, pos].detach().to(dtype), dim=-1)  # (n, V)
        out[r] = float((lp.exp() * (lp - lq)).sum())
    return out


# ----------------------------------------------------------------------------- steps


def pair_loss(
    cfg: OfflineConfig, chosen: Any, rejected: Any, ref_chosen: Any, ref_rejected: Any, labels: Any
) -> Any:
    """The configured loss of :mod:`nlhf.losses` on (B,) log-probs: a ``LossOutput`` with loss (B,)."""
    from nlhf.losses import get_loss

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

    from nlhf.train.loop import StepOutput

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


@dataclass
class OfflineResult:
    """What :func:`run_offline` returns (``summary`` is also written to ``metrics.json``)."""

    policy: Any  # the trained policy, in memory (unwrapped; a PeftModel with LoRA)
    tokenizer: Any
    summary: dict[str, Any]
    train: Any  # nlhf.train.loop.TrainResult
    out_dir: Path
    policy_dir: Path | None  # out/policy (None on processes other than the main one)
    timings: dict[str, float]  # seconds: load, tokenize, loop_setup, ref_precompute, train, save


def load_model(cfg: OfflineConfig) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for ``cfg.model`` (``"tiny"``: :mod:`nlhf.models.tiny`, seeded by ``loop.seed``)."""
    if cfg.model == TINY_MODEL:
        from nlhf.models.loading import resolve_dtype
        from nlhf.models.tiny import tiny_causal_lm, tiny_tokenizer

        tok = tiny_tokenizer()
        return tiny_causal_lm(tokenizer=tok, seed=cfg.loop.seed).to(resolve_dtype(cfg.dtype)), tok
    from nlhf.models.loading import load_causal_lm

    return load_causal_lm(cfg.model, dtype=cfg.dtype)


def _load_examples(cfg: OfflineConfig) -> tuple[list[Any], list[Any] | None]:
    from nlhf.data import load_preferences

    train = load_preferences(
        cfg.data, format=cfg.data_format, split=cfg.split, skip_invalid=cfg.skip_invalid, limit=cfg.limit
    )
    if len(train) == 0:
        raise ValueError(f"{cfg.data}: no training pairs")
    if cfg.eval_data is None:
        return list(train), None
    ev = load_preferences(
        cfg.eval_data,
        format=cfg.data_format,
        split=cfg.eval_split,
        skip_invalid=cfg.skip_invalid,
        limit=cfg.eval_limit,
    )
    if len(ev) == 0:
        raise ValueError(f"{cfg.eval_data}: no evaluation pairs")
    return list(train), list(ev)


def _fingerprint(
    cfg: OfflineConfig, model: Any, splits: dict[str, list[Any]], device: Any, shared: bool
) -> str:
    """What the cached reference log-probs depend on: model, weights, dtype, device, layout, reduction, token ids."""
    import torch

    h = hashlib.sha256()
    with torch.no_grad():
        weights = sum(float(p.detach().sum(dtype=torch.float64)) for p in model.parameters())
    h.update(json.dumps([cfg.model, cfg.dtype, cfg.reduction, str(getattr(device, "type", device)),
                         type(model).__name__, repr(weights), shared]).encode())  # fmt: skip
    for name in sorted(splits):
        h.update(name.encode())
        for p in splits[name]:
            h.update(json.dumps([p.prompt_ids, p.first_ids, p.second_ids]).encode())
    return h.hexdigest()


def _load_ref_cache(path: Path, fingerprint: str) -> dict[str, Any] | None:
    import torch

    if not path.is_file():
        return None
    try:
        cached = torch.load(path, weights_only=True)
    except Exception:  # a torn or foreign file: recompute
        return None
    if not isinstance(cached, dict) or cached.get("fingerprint") != fingerprint:
        return None
    return cached


def _save_ref_cache(path: Path, fingerprint: str, table: dict[str, Any]) -> None:
    import torch

    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    torch.save({"fingerprint": fingerprint, **table}, tmp)
    os.replace(tmp, path)


def save_gathered_policy(model: Any, state: dict[str, Any], path: Path, tokenizer: Any) -> Path:
    """Save ``model`` with the full ``state`` dict gathered from FSDP's shards (``save_pretrained(state_dict=...)``).

    A LoRA policy is saved as an adapter directory (merging needs the whole model in one
    place, which FSDP does not give): load it with :func:`nlhf.models.load_causal_lm`.
    """
    from nlhf.models.loading import atomic_directory

    with atomic_directory(path, overwrite=True) as tmp:
        model.save_pretrained(tmp, state_dict=state, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return path


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

    from nlhf.models.policy import build_policy, save_policy
    from nlhf.train.loop import TrainLoop, check_out_dir, make_accelerator

    if (model is None) != (tokenizer is None):
        raise ValueError("run_offline: pass both model and tokenizer, or neither")
    if train_examples is None:
        cfg.check_complete()
    else:
        check(bool(cfg.out), "out", "required (--out DIR)")
    timings: dict[str, float] = {}
    out = check_out_dir(cfg.out, cfg.loop.min_free_disk_mb * 2**20)
    loop_cfg = dataclasses.replace(cfg.loop, out_dir=str(out))

    # 1. Data (validated, oriented for DPO).
    if train_examples is None:
        loaded_train, loaded_eval = _load_examples(cfg)
        train_examples = loaded_train
        eval_examples = loaded_eval if eval_examples is None else eval_examples
    if len(train_examples) == 0:
        raise ValueError("run_offline: no training pairs")
    train_examples = prepare_examples(train_examples, cfg.loss, "train")
    if eval_examples is not None:
        eval_examples = prepare_examples(eval_examples, cfg.loss, "eval")

    # 2. Model, tokenisation, policy and explicit reference.
    t0 = time.perf_counter()
    set_seed(cfg.loop.seed)
    if model is None:
        model, tokenizer = load_model(cfg)
    timings["load"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pad_id = pad_token_id(tokenizer)
    train_pairs, cut = tokenize_examples(tokenizer, train_examples, cfg)
    eval_pairs = tokenize_examples(tokenizer, eval_examples, cfg)[0] if eval_examples else None
    timings["tokenize"] = time.perf_counter() - t0

    acc = make_accelerator(loop_cfg)
    splits = {"train": train_pairs, **({"eval": eval_pairs} if eval_pairs else {})}
    policy, reference = build_policy(model, cfg.lora)
    policy.to(acc.device)
    reference.to(acc.device)
    keep_reference = bool(eval_pairs) and cfg.eval_kl
    # prompt sharing runs two forwards before one backward: only for an unwrapped model (1 process, no FSDP/DeepSpeed)
    plain = acc.num_processes == 1 and getattr(acc.distributed_type, "name", "NO") in (
        "NO",
        "MULTI_CPU",
        "MULTI_GPU",
    )
    sharing = prompt_sharing(policy) if cfg.share_prompt and plain else None
    fingerprint = _fingerprint(cfg, reference, splits, acc.device, sharing is not None)

    # 3. The loop (checks the run directory, saves config.yaml), then mu's log-probs, once.
    ref = RefLogps()
    train_items = [OfflineItem("train", i, p) for i, p in enumerate(train_pairs)]
    eval_items = [OfflineItem("eval", i, p) for i, p in enumerate(eval_pairs)] if eval_pairs else None
    t0 = time.perf_counter()
    loop = TrainLoop(
        loop_cfg,
        cfg.optim,
        policy,
        train_items,
        make_collate(pad_id, ref, share_prompt=sharing is not None),
        make_step(cfg, sharing),
        eval_data=eval_items,
        eval_fn=make_eval_step(cfg, reference if keep_reference else None, sharing),
        run_config=cfg,
        accelerator=acc,
        optimizer_fn=optimizer_fn,
    )
    timings["loop_setup"] = time.perf_counter() - t0

    #    Only the pairs the run will read: all of them from one epoch on, fewer for a shorter run.
    t0 = time.perf_counter()
    cache_path = out / REF_CACHE
    cached = _load_ref_cache(cache_path, fingerprint) or {}
    needed = {"train": visited_indices(len(train_pairs), cfg.loop.seed, loop.max_steps * loop.global_batch)}
    computed = 0
    for name, pairs in splits.items():
        computed += fill_reference_logps(
            ref, name, pairs, needed.get(name, range(len(pairs))), cached,
            lambda chunk: reference_logps(reference, chunk, pad_id, cfg.reduction, cfg.ref_batch_size, acc.device,
                                          sharing),
        )  # fmt: skip
    if computed and acc.is_main_process:
        _save_ref_cache(
            cache_path, fingerprint, {**ref.table, **{f"{k}:done": v for k, v in ref.done.items()}}
        )
    timings["ref_precompute"] = time.perf_counter() - t0
    if not keep_reference:
        del reference  # the frozen copy (full fine-tuning) is not needed any more

    # 4. Train.
    t0 = time.perf_counter()
    result = loop.run()
    timings["train"] = time.perf_counter() - t0

    # 5. Save the policy and the summary.
    t0 = time.perf_counter()
    trained = acc.unwrap_model(loop.model)
    summary: dict[str, Any] = {}
    policy_dir = None
    full_state = (
        acc.get_state_dict(loop.model) if loop.is_fsdp else None
    )  # collective: FSDP's shards gathered
    if acc.is_main_process:
        if full_state is not None:
            policy_dir = save_gathered_policy(trained, full_state, out / POLICY_DIR, tokenizer)
        else:
            policy_dir = save_policy(trained, out / POLICY_DIR, merge=cfg.merge_adapter, tokenizer=tokenizer)
        summary = {
            "loss": cfg.loss,
            "tau": cfg.tau,
            "reduction": cfg.reduction,
            "label_smoothing": cfg.label_smoothing,
            "n_train": len(train_pairs),
            "n_eval": len(eval_pairs) if eval_pairs else 0,
            "steps": result.step,
            "updates": result.updates,
            "nonfinite_steps": result.nonfinite_steps,
            "ref_logps": "computed" if computed else "cached",
            "ref_pairs_computed": computed,  # pairs (train + eval) whose mu log-probs this run computed
            "share_prompt": sharing is not None,
            "truncated": {"pairs": len(train_pairs), **dict(cut)},
            "train": result.train_metrics,
            "eval": result.eval_metrics,
            "model": cfg.model,
            "policy_dir": str(policy_dir),
            "timings_s": timings,
        }
    timings["save"] = time.perf_counter() - t0
    if acc.is_main_process:
        from nlhf.train.checkpoint import write_text_atomic

        write_text_atomic(out / METRICS_JSON, json.dumps(summary, indent=2, allow_nan=True) + "\n")
    acc.wait_for_everyone()
    return OfflineResult(trained, tokenizer, summary, result, out, policy_dir, timings)


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
    "RefLogps",
    "load_offline_config",
    "load_model",
    "prepare_examples",
    "tokenize_examples",
    "pad_token_id",
    "make_collate",
    "sequence_logps",
    "PromptSharing",
    "prompt_sharing",
    "collate_shared_prompt",
    "shared_prompt_logps",
    "pair_logps",
    "loss_output",
    "reference_logps",
    "token_kl",
    "pair_loss",
    "make_step",
    "make_eval_step",
    "run_offline",
    "save_gathered_policy",
    "summary_line",
]
