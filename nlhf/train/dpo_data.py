"""The pairs as offline DPO / IPO / cDPO read them (:mod:`nlhf.train.dpo`): loaded, oriented, tokenised, collated.

``cfg`` below is the trainer's :class:`nlhf.train.dpo.OfflineConfig` (typed ``Any`` here:
this module sits under the trainer and does not import it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from nlhf.data import collate_pairs, load_preferences, tokenize_pair
from nlhf.train.pair_logps import collate_shared_prompt
from nlhf.train.ref_cache import RefLogps


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


def tokenize_examples(tokenizer: Any, examples: Sequence[Any], cfg: Any) -> tuple[list[Any], Counter]:
    """:func:`nlhf.data.tokenize_pair` for every pair, and truncation counts (pairs and tokens cut)."""
    pairs, cut = [], Counter()
    for ex in examples:
        p = tokenize_pair(tokenizer, ex, cfg.max_prompt_tokens, cfg.max_response_tokens)
        for name, n in (("prompt", p.prompt_cut), ("first", p.first_cut), ("second", p.second_cut)):
            if n:
                cut[name] += 1
                cut[f"{name}_tokens"] += n
        pairs.append(p)
    return pairs, cut


def make_collate(
    pad_token_id: int, ref: RefLogps, share_prompt: bool = False
) -> Callable[[list[OfflineItem]], dict[str, Any]]:
    """``list[OfflineItem] -> batch``: the pairs' rows and mu's cached log-probs.

    Batch: ``input_ids``/``attention_mask``/``completion_mask`` (2B, T) long, right-padded,
    rows 0..B-1 ``prompt + first`` and B..2B-1 ``prompt + second``; ``labels`` (B,) float32
    = P(first > second); ``ref_logps`` (B, 2) float32 (cached, reduction applied); with
    ``share_prompt`` also the keys of :func:`collate_shared_prompt`.
    """

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


def training_examples(
    cfg: Any, train: Sequence[Any] | None, evaluation: Sequence[Any] | None
) -> tuple[list, list | None]:
    """The training and evaluation pairs (given, else loaded from ``cfg.data`` / ``cfg.eval_data``), oriented
    for the loss (:func:`prepare_examples`)."""
    if train is None:
        train, loaded_eval = load_examples(cfg)
        evaluation = loaded_eval if evaluation is None else evaluation
    if len(train) == 0:
        raise ValueError("run_offline: no training pairs")
    evaluation = prepare_examples(evaluation, cfg.loss, "eval") if evaluation is not None else None
    return prepare_examples(train, cfg.loss, "train"), evaluation


def load_examples(cfg: Any) -> tuple[list[Any], list[Any] | None]:
    """``cfg.data`` (and ``cfg.eval_data`` if set) by :func:`nlhf.data.load_preferences`; an empty file is an error."""
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
