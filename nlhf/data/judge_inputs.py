"""Judge-side inputs: one sequence per ordered triple (x, a, b) or per (x, y), any tokenizer.

A pairwise preference model scores the ordered triple ``(prompt, first, second)`` with one
forward pass over a single sequence (THEORY.md Sec. 1: P(y > y' | x) =
sigmoid(f(x, y, y') - f(x, y', y))); a Bradley-Terry reward model scores ``(prompt,
response)``. These functions build those sequences for any tokenizer; the caller batches
both orders, ``encode_triple(tok, x, a, b, L)`` and ``encode_triple(tok, x, b, a, L)``.

Layouts (segments tokenised separately, without the tokenizer's own special tokens):

* encoder tokenizers (with ``cls_token_id`` and ``sep_token_id``, e.g. MiniLM / BERT)::

      [CLS] x [SEP] a [SEP] b [SEP]        token_type_ids 0 ... 0  1 ... 1  1 ... 1
      [CLS] x [SEP] y [SEP]                token_type_ids 0 ... 0  1 ... 1

* other (causal-LM) tokenizers, plain text markers and a final EOS so that the last
  position, where a causal model pools, is always the same token::

      x "\\n\\nResponse A:\\n" a "\\n\\nResponse B:\\n" b [EOS]
      x "\\n\\nResponse:\\n" y [EOS]

  (a BOS is prepended when the tokenizer adds one to plain text, as Llama's does.)

The prompt is rendered as plain text with :func:`~nlhf.data.schema.prompt_text` (a
conversation becomes ``"User: ...\\n\\nAssistant: ..."``), not with a chat template, so the
judge does not depend on the policy's template. Truncation: :func:`nlhf.data.truncation.segment_budgets`
over ``max_length`` minus the fixed tokens (prompt cut from the left down to
``min_prompt_tokens``, then responses from the right by water-filling), so both responses
always fit and both orders of a pair keep the same tokens of each response.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nlhf.data.schema import Prompt, prompt_text
from nlhf.data.truncation import keep_first, keep_last, segment_budgets

_MARKERS_TRIPLE = ("\n\nResponse A:\n", "\n\nResponse B:\n")
_MARKER_SINGLE = "\n\nResponse:\n"


@dataclass(frozen=True)
class EncodedInput:
    """One judge input sequence (python lists, before padding)."""

    input_ids: list[int]
    token_type_ids: list[int] | None  # None for tokenizers without token types
    prompt_cut: int = 0  # tokens removed from the left of the prompt
    response_cuts: tuple[int, ...] = ()  # tokens removed from the right of each response

    @property
    def truncated(self) -> bool:
        return self.prompt_cut > 0 or any(self.response_cuts)


def is_encoder_tokenizer(tokenizer: Any) -> bool:
    """True for BERT-style tokenizers with [CLS] and [SEP] (the encoder layout)."""
    return getattr(tokenizer, "cls_token_id", None) is not None and getattr(tokenizer, "sep_token_id", None) is not None


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def _leading_specials(tokenizer: Any) -> list[int]:
    """The tokens the tokenizer puts before plain text on its own (a BOS for Llama-style ones)."""
    with_special = list(tokenizer("a", add_special_tokens=True, verbose=False)["input_ids"])
    without = _encode(tokenizer, "a")
    if without and with_special[-len(without):] == without:
        return with_special[: len(with_special) - len(without)]
    return []


def _assemble(
    tokenizer: Any, prompt: Prompt, responses: Sequence[str], max_length: int,
    min_prompt_tokens: int, max_response_tokens: int | None,
) -> EncodedInput:
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    x = _encode(tokenizer, prompt_text(prompt))
    ys = [_encode(tokenizer, r) for r in responses]
    encoder = is_encoder_tokenizer(tokenizer)
    if encoder:
        cls, sep = [tokenizer.cls_token_id], [tokenizer.sep_token_id]
        head, seps, tail = cls, [sep] + [sep] * (len(ys) - 1), sep
    else:
        eos = getattr(tokenizer, "eos_token_id", None)
        if eos is None:
            raise ValueError("a causal-LM judge tokenizer needs an eos_token_id (the sequence ends with it)")
        markers = _MARKERS_TRIPLE if len(ys) == 2 else (_MARKER_SINGLE,)
        head, seps, tail = _leading_specials(tokenizer), [_encode(tokenizer, m) for m in markers], [eos]
    fixed = len(head) + sum(len(s) for s in seps) + len(tail)
    p_keep, r_keeps = segment_budgets(
        len(x), [len(y) for y in ys], max_length - fixed,
        min_prompt_tokens=min_prompt_tokens, max_response_tokens=max_response_tokens,
    )
    x_kept = keep_last(x, p_keep)
    ys_kept = [keep_first(y, k) for y, k in zip(ys, r_keeps)]
    ids = list(head) + x_kept
    types = [0] * len(ids)
    for i, (sep, y) in enumerate(zip(seps, ys_kept)):
        # A [SEP] closes the segment before it: type 0 after the prompt, 1 after a response.
        ids += sep + y
        types += [0 if i == 0 else 1] * len(sep) + [1] * len(y)
    ids += tail
    types += [1] * len(tail)
    return EncodedInput(
        input_ids=ids,
        token_type_ids=types if encoder and "token_type_ids" in getattr(tokenizer, "model_input_names", ()) else None,
        prompt_cut=len(x) - len(x_kept),
        response_cuts=tuple(len(y) - len(k) for y, k in zip(ys, ys_kept)),
    )


def encode_triple(
    tokenizer: Any, prompt: Prompt, first: str, second: str, max_length: int,
    *, min_prompt_tokens: int = 64, max_response_tokens: int | None = None,
) -> EncodedInput:
    """The ordered triple (prompt, first, second) as one sequence of at most ``max_length`` tokens."""
    return _assemble(tokenizer, prompt, (first, second), max_length, min_prompt_tokens, max_response_tokens)


def encode_single(
    tokenizer: Any, prompt: Prompt, response: str, max_length: int,
    *, min_prompt_tokens: int = 64, max_response_tokens: int | None = None,
) -> EncodedInput:
    """(prompt, response) as one sequence of at most ``max_length`` tokens, for a reward model."""
    return _assemble(tokenizer, prompt, (response,), max_length, min_prompt_tokens, max_response_tokens)


@dataclass
class JudgeBatch:
    """N judge input sequences, right-padded; the last real token of row i is at ``lengths[i] - 1``."""

    input_ids: Any  # (N, T) long
    attention_mask: Any  # (N, T) long, 1 on the lengths[i] real tokens
    lengths: Any  # (N,) long
    token_type_ids: Any | None = None  # (N, T) long, or None

    def model_inputs(self) -> dict[str, Any]:
        """Keyword arguments for a Hugging Face backbone's forward."""
        out = {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        if self.token_type_ids is not None:
            out["token_type_ids"] = self.token_type_ids
        return out

    def to(self, device: Any) -> JudgeBatch:
        tt = None if self.token_type_ids is None else self.token_type_ids.to(device)
        return JudgeBatch(self.input_ids.to(device), self.attention_mask.to(device), self.lengths.to(device), tt)


def collate_encoded(
    encoded: Sequence[EncodedInput], pad_token_id: int, pad_to_multiple_of: int | None = None
) -> JudgeBatch:
    """Right-pad judge inputs (masks from lengths, so pad == eos is safe)."""
    import torch

    if not encoded:
        raise ValueError("cannot collate an empty batch")
    lengths = [len(e.input_ids) for e in encoded]
    T = max(lengths) if not pad_to_multiple_of else -(-max(lengths) // pad_to_multiple_of) * pad_to_multiple_of
    ids = [e.input_ids + [pad_token_id] * (T - len(e.input_ids)) for e in encoded]
    attn = [[1] * n + [0] * (T - n) for n in lengths]
    with_types = [e.token_type_ids is not None for e in encoded]
    if any(with_types) and not all(with_types):
        raise ValueError("some inputs have token_type_ids and some do not (mixed tokenizers?)")
    types = None
    if all(with_types):
        types = torch.tensor([e.token_type_ids + [0] * (T - len(e.token_type_ids)) for e in encoded], dtype=torch.long)
    return JudgeBatch(
        input_ids=torch.tensor(ids, dtype=torch.long),  # (N, T)
        attention_mask=torch.tensor(attn, dtype=torch.long),  # (N, T)
        lengths=torch.tensor(lengths, dtype=torch.long),  # (N,)
        token_type_ids=types,  # (N, T) or None
    )


@dataclass
class JudgePairBatch:
    """B preference pairs as 2B judge rows, for training or scoring a judge.

    ``mode="triple"`` (pairwise preference model): row ``i`` is (x_i, first_i, second_i) and
    row ``B + i`` is (x_i, second_i, first_i), so P(first > second) = sigmoid(f[i] - f[B + i]).
    ``mode="single"`` (reward model): row ``i`` is (x_i, first_i), row ``B + i`` is
    (x_i, second_i), so P(first > second) = sigmoid(r[i] - r[B + i]).
    """

    inputs: JudgeBatch  # (2B, T) rows as above
    labels: Any  # (B,) float32, P(first > second)
    sources: tuple[str, ...] = ()  # (B,)

    @property
    def batch_size(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: Any) -> JudgePairBatch:
        return JudgePairBatch(self.inputs.to(device), self.labels.to(device), self.sources)


@dataclass
class JudgeCollator:
    """``collate_fn`` turning PreferenceExample lists into a :class:`JudgePairBatch`.

    ``truncation`` counts ``rows`` encoded and rows whose ``prompt`` / ``response`` was cut.
    """

    tokenizer: Any
    max_length: int
    mode: str = "triple"  # "triple" (preference model) or "single" (reward model)
    min_prompt_tokens: int = 64
    max_response_tokens: int | None = None
    pad_to_multiple_of: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("triple", "single"):
            raise ValueError(f"mode must be 'triple' or 'single', got {self.mode!r}")
        from collections import Counter

        self.truncation: Counter[str] = Counter()

    def __call__(self, examples: Sequence[Any]) -> JudgePairBatch:
        import torch

        kw = {"min_prompt_tokens": self.min_prompt_tokens, "max_response_tokens": self.max_response_tokens}
        tok, L = self.tokenizer, self.max_length
        if self.mode == "triple":
            rows = [encode_triple(tok, e.prompt, e.first, e.second, L, **kw) for e in examples]
            rows += [encode_triple(tok, e.prompt, e.second, e.first, L, **kw) for e in examples]
        else:
            rows = [encode_single(tok, e.prompt, e.first, L, **kw) for e in examples]
            rows += [encode_single(tok, e.prompt, e.second, L, **kw) for e in examples]
        for r in rows:
            self.truncation["rows"] += 1
            self.truncation["prompt"] += r.prompt_cut > 0
            self.truncation["response"] += any(r.response_cuts)
        pad = getattr(tok, "pad_token_id", None)
        pad = tok.eos_token_id if pad is None else pad
        return JudgePairBatch(
            inputs=collate_encoded(rows, pad, self.pad_to_multiple_of),  # (2B, T)
            labels=torch.tensor([float(e.label) for e in examples], dtype=torch.float32),  # (B,)
            sources=tuple(e.source for e in examples),
        )
