"""The reference log-prob cache of offline DPO / IPO / cDPO: mu's sequence log-probs, computed once.

mu's log-probs of both responses of every pair the run will read are computed ONCE, before
the first step (batched, length-sorted, no grad: :func:`reference_logps`, the same code as
the training step's :func:`nlhf.train.pair_logps.pair_logps`) and kept in a :class:`RefLogps`
table that the collate function reads. They are also saved to ``out/ref_logps.pt``
(:data:`REF_CACHE`) under a :func:`fingerprint` of what they depend on, so a resumed run
does not recompute them. A run shorter than an epoch (``loop.max_steps``, ``loop.epochs <
1``) reads a known part of the data (the stream is seeded: :func:`visited_indices`) and
computes mu's log-probs for that part only; the cache marks the rows done, and a longer
resumed run computes the rest (:func:`fill_reference_logps`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nlhf.config import ConfigError
from nlhf.data.collate import collate_pairs
from nlhf.train.data_stream import epoch_permutation
from nlhf.train.pair_logps import PromptSharing, collate_shared_prompt, pair_logps

REF_CACHE = "ref_logps.pt"

# Logits of one reference forward are kept under this many elements (2B x T x V floats).
_REF_LOGITS_BUDGET = 1 << 25


class RefLogps:
    """The cache of mu's sequence log-probs: per split a (N, 2) float32 tensor (first, second).

    ``done[split]`` (N,) bool, when set, marks the rows computed: a run that reads only part
    of the data (``loop.max_steps`` or ``loop.epochs`` under one epoch) computes mu's
    log-probs for the pairs it will read and no others (:func:`visited_indices`).
    """

    def __init__(self) -> None:
        self.table: dict[str, Any] = {}
        self.done: dict[str, Any] = {}

    def lookup(self, items: Sequence[Any]) -> Any:
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


def fill_reference_cache(ref: RefLogps, splits: dict[str, Sequence[Any]], needed: dict[str, Sequence[int]],
                         path: Path, key: str, compute: Callable, write: bool = True) -> int:  # fmt: skip
    """mu's log-probs of every split into ``ref``; returns how many pairs were computed.

    Rows come from ``path`` when its fingerprint is ``key``; the others of ``needed[split]``
    (every row of a split not named) are computed with ``compute(pairs) -> (k, 2)``
    (:func:`fill_reference_logps`), and the file is rewritten (by the process that ``write``s)
    when any was.
    """
    cached = load_ref_cache(path, key) or {}
    computed = 0
    for name, pairs in splits.items():
        computed += fill_reference_logps(
            ref, name, pairs, needed.get(name, range(len(pairs))), cached, compute
        )
    if computed and write:
        save_ref_cache(path, key, {**ref.table, **{f"{k}:done": v for k, v in ref.done.items()}})
    return computed


def fingerprint(cfg: Any, model: Any, splits: dict[str, list[Any]], device: Any, shared: bool) -> str:
    """What the cached reference log-probs depend on: model, weights, dtype, device, layout, reduction, token ids."""
    import torch

    h = hashlib.sha256()
    with torch.no_grad():
        weights = sum(float(p.detach().sum(dtype=torch.float64)) for p in model.parameters())
    fields = [cfg.model, cfg.dtype, cfg.reduction, str(getattr(device, "type", device)), type(model).__name__,
              repr(weights), shared]  # fmt: skip
    if getattr(
        cfg, "reference", None
    ):  # a separate reference model (absent: the same key as before it existed)
        fields.append(["reference", cfg.reference])
    h.update(json.dumps(fields).encode())
    for name in sorted(splits):
        h.update(name.encode())
        for p in splits[name]:
            h.update(json.dumps([p.prompt_ids, p.first_ids, p.second_ids]).encode())
    return h.hexdigest()


def check_reference_tokenizer(policy_tokenizer: Any, reference_tokenizer: Any, spec: str) -> None:
    """A ConfigError naming ``reference`` unless the reference model reads the policy's token ids as the same tokens.

    mu's cached log-probs score the policy's token ids, so the two vocabularies (token -> id)
    and the special tokens (bos, eos, pad) must be equal.
    """
    vocab, ref_vocab = policy_tokenizer.get_vocab(), reference_tokenizer.get_vocab()
    if vocab != ref_vocab:
        differ = sorted(set(vocab.items()) ^ set(ref_vocab.items()), key=str)[:3]
        raise ConfigError(
            f"reference: the tokenizer of {spec!r} is not the policy's ({len(ref_vocab)} vs {len(vocab)} tokens; "
            f"differing entries e.g. {differ}): its log-probs would score other tokens"
        )
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        mine, theirs = getattr(policy_tokenizer, name, None), getattr(reference_tokenizer, name, None)
        if mine != theirs:
            raise ConfigError(
                f"reference: the tokenizer of {spec!r} has {name}={theirs}, the policy's {mine}"
            )


def load_ref_cache(path: Path, fingerprint: str) -> dict[str, Any] | None:
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


def save_ref_cache(path: Path, fingerprint: str, table: dict[str, Any]) -> None:
    import torch

    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    torch.save({"fingerprint": fingerprint, **table}, tmp)
    os.replace(tmp, path)


__all__ = [
    "REF_CACHE",
    "RefLogps",
    "check_reference_tokenizer",
    "fill_reference_cache",
    "fill_reference_logps",
    "fingerprint",
    "load_ref_cache",
    "reference_logps",
    "save_ref_cache",
    "visited_indices",
]
