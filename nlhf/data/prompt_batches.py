"""Prompts as the online trainers and the tournament see them: tokenised once, collated, repeated.

* :class:`PromptItem`: one prompt (for the judge) and its token ids (for the policy);
* :func:`tokenize_prompts`: every prompt tokenised once (chat template when the tokenizer has
  one), cut from the left to ``max_prompt_tokens``;
* :func:`make_prompt_collate`: ``list[PromptItem] -> PromptItemBatch`` (left-padded ids + the prompts);
* :func:`repeat_prompts` (prompt-major) and :func:`stack_prompts` (block-major): a
  :class:`~nlhf.data.collate.PromptBatch` with its rows repeated, for k samples per prompt;
* :func:`load_prompt_items`: a trainer's training and evaluation prompts, loaded and tokenised.

Cheap to import: torch loads inside the functions that build tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from nlhf.data.collate import PromptBatch, collate_prompts, prompt_ids
from nlhf.data.load import load_prompts
from nlhf.data.truncation import keep_last


@dataclass(frozen=True)
class PromptItem:
    """One training prompt as the loop sees it: the prompt (for the judge) and its token ids (for the policy)."""

    prompt: Any  # nlhf.data.Prompt: str or messages
    ids: tuple[int, ...]
    source: str = ""
    cut: int = 0  # prompt tokens removed by max_prompt_tokens


@dataclass
class PromptItemBatch:
    """A micro-batch: left-padded prompt ids (:class:`~nlhf.data.collate.PromptBatch`) and the prompts themselves."""

    prompts: PromptBatch  # input_ids, attention_mask (B, P), prompt_lengths (B,)
    texts: tuple[Any, ...]  # (B,) the prompts as the judge reads them

    def to(self, device: Any, non_blocking: bool = False) -> PromptItemBatch:
        return PromptItemBatch(self.prompts.to(device), self.texts)


OnlineBatch = PromptItemBatch  # the name the online trainers used


def tokenize_prompts(
    tokenizer: Any, prompts: Sequence[Any], max_prompt_tokens: int | None
) -> list[PromptItem]:
    """Tokenise every prompt once (chat template when the tokenizer has one), cut from the left.

    ``prompts``: ``PromptExample``/``PreferenceExample`` objects or bare prompts (str or messages).
    """
    items = []
    for i, p in enumerate(prompts):
        prompt = getattr(p, "prompt", p)
        full = prompt_ids(tokenizer, prompt)
        if not full:
            raise ValueError(f"{getattr(p, 'source', '') or f'prompt {i}'}: the prompt has no tokens")
        kept = full if max_prompt_tokens is None else keep_last(full, max_prompt_tokens)
        items.append(PromptItem(prompt, tuple(kept), getattr(p, "source", "") or "", len(full) - len(kept)))
    return items


def make_prompt_collate(pad_token_id: int) -> Callable[[list[PromptItem]], PromptItemBatch]:
    """``list[PromptItem] -> PromptItemBatch`` (left-padded: new tokens are appended on the right)."""

    def collate(items: list[PromptItem]) -> PromptItemBatch:
        batch = collate_prompts([it.ids for it in items], pad_token_id, sources=[it.source for it in items])
        return PromptItemBatch(batch, tuple(it.prompt for it in items))

    return collate


def repeat_prompts(prompts: PromptBatch, times: int) -> PromptBatch:
    """The PromptBatch with every row repeated ``times`` times, prompt-major: rows [i k, (i+1) k) are prompt i."""
    return PromptBatch(
        prompts.input_ids.repeat_interleave(times, dim=0),  # (B k, P)
        prompts.attention_mask.repeat_interleave(times, dim=0),  # (B k, P)
        prompts.prompt_lengths.repeat_interleave(times, dim=0),  # (B k,)
        tuple(s for s in prompts.sources for _ in range(times)),
    )


def stack_prompts(prompts: PromptBatch, times: int) -> PromptBatch:
    """The PromptBatch stacked ``times`` times, block-major: rows [j B, (j+1) B) are a copy of all B prompts."""
    import torch

    return PromptBatch(
        torch.cat([prompts.input_ids] * times, dim=0),  # (times B, P)
        torch.cat([prompts.attention_mask] * times, dim=0),
        torch.cat([prompts.prompt_lengths] * times, dim=0),
        tuple(prompts.sources) * times,
    )


def load_prompt_items(
    cfg: Any, tokenizer: Any, train_prompts: Any, eval_prompts: Any
) -> tuple[list[PromptItem], list[PromptItem] | None]:
    """Training and evaluation prompts (loaded from ``cfg.prompts`` / ``cfg.eval_prompts`` unless given), tokenised.

    ``cfg``: a prompt-fed trainer's config (``prompts``, ``eval_prompts``, ``prompt_format``,
    ``split``, ``eval_split``, ``skip_invalid``, ``limit``, ``eval_limit``, ``max_prompt_tokens``).
    """
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


__all__ = [
    "OnlineBatch",
    "PromptItem",
    "PromptItemBatch",
    "load_prompt_items",
    "make_prompt_collate",
    "repeat_prompts",
    "stack_prompts",
    "tokenize_prompts",
]
