"""Policy-side tokenisation and collation: (prompt + response) sequences with completion masks.

For a causal LM policy, a preference pair becomes two sequences, ``prompt + first`` and
``prompt + second``, that share the same prompt tokens. Rendering:

* **with a chat template** (``tokenizer.chat_template`` set): the prompt's messages are
  rendered with ``add_generation_prompt=True``; the completion is the text the template
  adds when the response is appended as an assistant turn, i.e. the response followed by
  the template's end-of-turn marker (``<|im_end|>`` for ChatML / SmolLM2), with trailing
  whitespace after it dropped. If that completion does not end with a special token, the
  EOS token is appended. (Templates that rewrite earlier turns, so that the full
  conversation does not start with the rendered prompt, fall back to response + EOS.)
* **without a template**: a text prompt is used verbatim (a conversation is rendered by
  :func:`~nlhf.data.schema.prompt_text` plus ``"\\n\\nAssistant:"``), tokenised with the
  tokenizer's own special tokens (a BOS for Llama-style tokenizers); the completion is the
  response followed by EOS.

Truncation follows :mod:`nlhf.data.truncation` (prompt from the left to
``max_prompt_tokens``, responses from the right to ``max_response_tokens``).

Masks come from lengths, never from ``ids != pad_token_id``: SmolLM2 (and
:func:`nlhf.models.tiny.tiny_tokenizer`) have ``pad == eos``, and the real EOS that ends a
response must stay in the attention and completion masks.

torch is imported inside the functions that build tensors.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from nlhf.data.schema import PreferenceExample, Prompt, PromptExample, prompt_messages, prompt_text
from nlhf.data.truncation import keep_first, keep_last


@dataclass(frozen=True)
class TokenizedPair:
    """Token ids of one preference pair (python lists, before padding).

    The two sequences are ``prompt_ids + first_ids`` and ``prompt_ids + second_ids``; the
    completion mask is 0 on the prompt and 1 on the response ids (end-of-turn included).
    """

    prompt_ids: list[int]
    first_ids: list[int]
    second_ids: list[int]
    label: float  # P(first > second)
    prompt_cut: int = 0  # tokens removed from the left of the prompt
    first_cut: int = 0  # tokens removed from the right of the first response
    second_cut: int = 0
    source: str = ""

    def input_ids(self, which: int) -> list[int]:
        """The full sequence for response 0 (first) or 1 (second)."""
        return self.prompt_ids + (self.first_ids if which == 0 else self.second_ids)

    def completion_mask(self, which: int) -> list[int]:
        response = self.first_ids if which == 0 else self.second_ids
        return [0] * len(self.prompt_ids) + [1] * len(response)


def _has_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _encode(tokenizer: Any, text: str, add_special_tokens: bool = False) -> list[int]:
    return list(tokenizer(text, add_special_tokens=add_special_tokens, verbose=False)["input_ids"])


def render_prompt(tokenizer: Any, prompt: Prompt) -> str:
    """The prompt as the text the policy continues (chat template with the generation prompt if any)."""
    if _has_template(tokenizer):
        return tokenizer.apply_chat_template(
            prompt_messages(prompt), tokenize=False, add_generation_prompt=True
        )
    if isinstance(prompt, str):
        return prompt
    return prompt_text(prompt) + "\n\nAssistant:"


def prompt_ids(tokenizer: Any, prompt: Prompt) -> list[int]:
    """Token ids of the rendered prompt, untruncated."""
    text = render_prompt(tokenizer, prompt)
    ids = _encode(tokenizer, text, add_special_tokens=not _has_template(tokenizer))
    eos = getattr(tokenizer, "eos_token_id", None)
    if not _has_template(tokenizer) and len(ids) > 1 and eos is not None and ids[-1] == eos:
        ids = ids[:-1]  # a tokenizer that appends EOS to every text: not at the end of a prompt
    return ids


def completion_ids(
    tokenizer: Any, prompt: Prompt, response: str, rendered_prompt: str | None = None
) -> list[int]:
    """Token ids of a response as the policy would produce it after the prompt, end-of-turn included."""
    eos = tokenizer.eos_token_id
    if _has_template(tokenizer):
        rendered_prompt = rendered_prompt if rendered_prompt is not None else render_prompt(tokenizer, prompt)
        full = tokenizer.apply_chat_template(
            prompt_messages(prompt) + [{"role": "assistant", "content": response}], tokenize=False
        )
        if full.startswith(rendered_prompt):
            ids = _encode(tokenizer, full[len(rendered_prompt) :].rstrip())
            special = set(getattr(tokenizer, "all_special_ids", ()) or ())
            if (not ids or ids[-1] not in special) and eos is not None:
                ids.append(eos)
            return ids
    ids = _encode(tokenizer, response)
    if eos is not None:
        ids.append(eos)
    return ids


def tokenize_prompt(tokenizer: Any, prompt: Prompt, max_prompt_tokens: int | None = None) -> list[int]:
    """Prompt ids for generation, cut from the left to ``max_prompt_tokens``."""
    ids = prompt_ids(tokenizer, prompt)
    return ids if max_prompt_tokens is None else keep_last(ids, max_prompt_tokens)


def tokenize_pair(
    tokenizer: Any,
    example: PreferenceExample,
    max_prompt_tokens: int | None = None,
    max_response_tokens: int | None = None,
) -> TokenizedPair:
    """Tokenise a pair for a causal-LM policy (rendering and truncation in the module docstring)."""
    rendered = render_prompt(tokenizer, example.prompt)
    p_ids = prompt_ids(tokenizer, example.prompt)
    first = completion_ids(tokenizer, example.prompt, example.first, rendered)
    second = completion_ids(tokenizer, example.prompt, example.second, rendered)
    p_keep = p_ids if max_prompt_tokens is None else keep_last(p_ids, max_prompt_tokens)
    f_keep = first if max_response_tokens is None else keep_first(first, max_response_tokens)
    s_keep = second if max_response_tokens is None else keep_first(second, max_response_tokens)
    return TokenizedPair(
        p_keep,
        f_keep,
        s_keep,
        float(example.label),
        prompt_cut=len(p_ids) - len(p_keep),
        first_cut=len(first) - len(f_keep),
        second_cut=len(second) - len(s_keep),
        source=example.source,
    )


def pad_token_id(tokenizer: Any) -> int:
    """The id rows are padded with (pad, else EOS); padding is masked by lengths, so its value is irrelevant."""
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = getattr(tokenizer, "eos_token_id", None)
    if pad is None:
        raise ValueError("the tokenizer has neither a pad_token_id nor an eos_token_id to pad with")
    return int(pad)


def eos_id(tokenizer: Any) -> int:
    """The token that ends a response (the tokenizer's EOS; for chat models the end-of-turn token)."""
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ValueError("the tokenizer has no eos_token_id: a sampled response could never end")
    return int(eos)


def _round_up(n: int, multiple: int | None) -> int:
    return n if not multiple else -(-n // multiple) * multiple


@dataclass
class PreferenceBatch:
    """A padded batch of B pairs for a causal-LM policy: 2B right-padded rows.

    Rows ``[0, B)`` are ``prompt + first``, rows ``[B, 2B)`` are ``prompt + second`` (row
    ``i`` and row ``B + i`` are the two responses of pair ``i``). Masks come from lengths.
    """

    input_ids: Any  # (2B, T) long, right-padded with pad_token_id
    attention_mask: Any  # (2B, T) long, 1 on the lengths[i] real tokens
    completion_mask: Any  # (2B, T) long, 1 on response tokens (end-of-turn included), 0 on prompt and padding
    labels: Any  # (B,) float32, P(first > second)
    prompt_lengths: Any  # (2B,) long, prompt tokens per row
    lengths: Any  # (2B,) long, real tokens per row
    sources: tuple[str, ...] = ()  # (B,) where each pair came from

    @property
    def batch_size(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: Any) -> PreferenceBatch:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in moved.items():
            if hasattr(value, "to"):
                moved[name] = value.to(device)
        return PreferenceBatch(**moved)


def collate_pairs(
    pairs: Sequence[TokenizedPair], pad_token_id: int, pad_to_multiple_of: int | None = None
) -> PreferenceBatch:
    """Pad tokenised pairs into a :class:`PreferenceBatch` (dynamic padding to the longest row)."""
    import torch

    if not pairs:
        raise ValueError("cannot collate an empty batch")
    rows = [p.input_ids(0) for p in pairs] + [p.input_ids(1) for p in pairs]  # 2B lists
    prompt_lens = [len(p.prompt_ids) for p in pairs] * 2
    lengths = [len(r) for r in rows]
    T = _round_up(max(lengths), pad_to_multiple_of)
    ids = [r + [pad_token_id] * (T - len(r)) for r in rows]
    attn = [[1] * n + [0] * (T - n) for n in lengths]
    comp = [[0] * p + [1] * (n - p) + [0] * (T - n) for p, n in zip(prompt_lens, lengths)]
    return PreferenceBatch(
        input_ids=torch.tensor(ids, dtype=torch.long),  # (2B, T)
        attention_mask=torch.tensor(attn, dtype=torch.long),  # (2B, T)
        completion_mask=torch.tensor(comp, dtype=torch.long),  # (2B, T)
        labels=torch.tensor([p.label for p in pairs], dtype=torch.float32),  # (B,)
        prompt_lengths=torch.tensor(prompt_lens, dtype=torch.long),  # (2B,)
        lengths=torch.tensor(lengths, dtype=torch.long),  # (2B,)
        sources=tuple(p.source for p in pairs),
    )


@dataclass
class PairCollator:
    """``collate_fn`` for a DataLoader of PreferenceExample: tokenise, truncate, pad.

    ``truncation`` counts, over all calls: ``pairs`` seen, and pairs whose ``prompt``,
    ``first`` or ``second`` segment was cut (plus ``*_tokens`` removed).
    """

    tokenizer: Any
    max_prompt_tokens: int | None = None
    max_response_tokens: int | None = None
    pad_to_multiple_of: int | None = None
    truncation: Counter = field(default_factory=Counter)

    def __call__(self, examples: Sequence[PreferenceExample]) -> PreferenceBatch:
        pairs = [
            tokenize_pair(self.tokenizer, ex, self.max_prompt_tokens, self.max_response_tokens)
            for ex in examples
        ]
        for p in pairs:
            self.truncation["pairs"] += 1
            for name, cut in (("prompt", p.prompt_cut), ("first", p.first_cut), ("second", p.second_cut)):
                if cut:
                    self.truncation[name] += 1
                    self.truncation[f"{name}_tokens"] += cut
        return collate_pairs(pairs, pad_token_id(self.tokenizer), self.pad_to_multiple_of)


@dataclass
class PromptBatch:
    """A left-padded batch of B prompts for generation (new tokens are appended on the right)."""

    input_ids: Any  # (B, T) long, left-padded with pad_token_id
    attention_mask: Any  # (B, T) long, 1 on the last prompt_lengths[i] positions
    prompt_lengths: Any  # (B,) long
    sources: tuple[str, ...] = ()  # (B,)

    @property
    def batch_size(self) -> int:
        return int(self.prompt_lengths.shape[0])

    def to(self, device: Any) -> PromptBatch:
        return PromptBatch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.prompt_lengths.to(device),
            self.sources,
        )


def collate_prompts(
    prompts: Sequence[Sequence[int]],
    pad_token_id: int,
    pad_to_multiple_of: int | None = None,
    sources: Sequence[str] = (),
) -> PromptBatch:
    """Left-pad prompt ids into a :class:`PromptBatch`."""
    import torch

    if not prompts:
        raise ValueError("cannot collate an empty batch")
    lengths = [len(p) for p in prompts]
    if min(lengths) == 0:
        raise ValueError("a prompt has no tokens")
    T = _round_up(max(lengths), pad_to_multiple_of)
    ids = [[pad_token_id] * (T - len(p)) + list(p) for p in prompts]
    attn = [[0] * (T - n) + [1] * n for n in lengths]
    return PromptBatch(
        input_ids=torch.tensor(ids, dtype=torch.long),  # (B, T)
        attention_mask=torch.tensor(attn, dtype=torch.long),  # (B, T)
        prompt_lengths=torch.tensor(lengths, dtype=torch.long),  # (B,)
        sources=tuple(sources),
    )


@dataclass
class PromptCollator:
    """``collate_fn`` for prompts (PromptExample, PreferenceExample, or a bare Prompt): left-padded.

    ``truncation`` counts ``prompts`` seen and ``prompt`` (cut) / ``prompt_tokens`` (removed).
    """

    tokenizer: Any
    max_prompt_tokens: int | None = None
    pad_to_multiple_of: int | None = None
    truncation: Counter = field(default_factory=Counter)

    def __call__(self, items: Sequence[PromptExample | PreferenceExample | Prompt]) -> PromptBatch:
        ids, sources = [], []
        for item in items:
            prompt = item.prompt if isinstance(item, PromptExample | PreferenceExample) else item
            full = prompt_ids(self.tokenizer, prompt)
            kept = full if self.max_prompt_tokens is None else keep_last(full, self.max_prompt_tokens)
            self.truncation["prompts"] += 1
            if len(kept) < len(full):
                self.truncation["prompt"] += 1
                self.truncation["prompt_tokens"] += len(full) - len(kept)
            ids.append(kept)
            sources.append(getattr(item, "source", ""))
        return collate_prompts(ids, pad_token_id(self.tokenizer), self.pad_to_multiple_of, sources)
