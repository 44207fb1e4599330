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
      x y [EOS]                                   (single, layout="plain": TRL's RewardTrainer input)
      x "\\n\\nResponse:\\n" y [EOS]              (single, layout="marked": nlhf_head.json format 1)

  (a BOS is prepended when the tokenizer adds one to plain text, as Llama's does.)

Segment ids (``EncodedInput.segment_ids``, one per token): 0 for the prompt, the special
tokens and the markers, ``i + 1`` for the tokens of response ``i`` (1 for ``first``, 2 for
``second``; 1 for the single response). The preference model's ``"segments"`` pooling
reads them (:mod:`nlhf.models.scorer`); they are not a backbone input. In a triple the
tokens before the first non-zero id (prompt and first marker) are the same in both
orders: the shared prefix.

The prompt is rendered as plain text with :func:`~nlhf.data.schema.prompt_text` (a
conversation becomes ``"User: ...\\n\\nAssistant: ..."``), not with a chat template, so the
judge does not depend on the policy's template. Truncation: :func:`nlhf.data.truncation.segment_budgets`
over ``max_length`` minus the fixed tokens (prompt cut from the left down to
``min_prompt_tokens``, then responses from the right by water-filling), so both responses
always fit and both orders of a pair keep the same tokens of each response.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nlhf.data.schema import Prompt, prompt_text
from nlhf.data.truncation import keep_first, keep_last, segment_budgets

_MARKERS_TRIPLE = ("\n\nResponse A:\n", "\n\nResponse B:\n")
_MARKER_SINGLE = "\n\nResponse:\n"
SINGLE_LAYOUTS = ("plain", "marked")


@dataclass(frozen=True)
class EncodedInput:
    """One judge input sequence (python lists, before padding)."""

    input_ids: list[int]
    token_type_ids: list[int] | None  # None for tokenizers without token types
    prompt_cut: int = 0  # tokens removed from the left of the prompt
    response_cuts: tuple[int, ...] = ()  # tokens removed from the right of each response
    segment_ids: list[int] | None = None  # 0 prompt/special/marker, i + 1 for response i (module docstring)

    @property
    def truncated(self) -> bool:
        return self.prompt_cut > 0 or any(self.response_cuts)


def is_encoder_tokenizer(tokenizer: Any) -> bool:
    """True for BERT-style tokenizers with [CLS] and [SEP] (the encoder layout)."""
    return (
        getattr(tokenizer, "cls_token_id", None) is not None
        and getattr(tokenizer, "sep_token_id", None) is not None
    )


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def _encode_all(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of every text (no special tokens), each distinct text tokenised once, in ONE batched call."""
    distinct = list(dict.fromkeys(texts))
    if not distinct:
        return []
    ids = tokenizer(distinct, add_special_tokens=False, verbose=False)["input_ids"]
    by_text = {t: list(i) for t, i in zip(distinct, ids)}
    return [by_text[t] for t in texts]


def _leading_specials(tokenizer: Any) -> list[int]:
    """The tokens the tokenizer puts before plain text on its own (a BOS for Llama-style ones)."""
    with_special = list(tokenizer("a", add_special_tokens=True, verbose=False)["input_ids"])
    without = _encode(tokenizer, "a")
    if without and with_special[-len(without) :] == without:
        return with_special[: len(with_special) - len(without)]
    return []


_FIXED_CACHE: weakref.WeakKeyDictionary[Any, dict[str, list[int]]] = weakref.WeakKeyDictionary()


def _fixed_tokens(tokenizer: Any) -> dict[str, list[int]]:
    """The leading specials and the three markers of ``tokenizer``, tokenised once per tokenizer object."""
    try:
        return _FIXED_CACHE[tokenizer]
    except (KeyError, TypeError):
        pass
    fixed = {"leading": _leading_specials(tokenizer)}
    for name, marker in zip(("A", "B", "single"), (*_MARKERS_TRIPLE, _MARKER_SINGLE)):
        fixed[name] = _encode(tokenizer, marker)
    try:
        _FIXED_CACHE[tokenizer] = fixed
    except TypeError:  # not weak-referenceable: recomputed on every call
        pass
    return fixed


def _assemble(
    tokenizer: Any,
    prompt: Prompt,
    responses: Sequence[str],
    max_length: int,
    min_prompt_tokens: int,
    max_response_tokens: int | None,
    layout: str = "marked",
) -> EncodedInput:
    x = _encode(tokenizer, prompt_text(prompt))
    ys = [_encode(tokenizer, r) for r in responses]
    return _assemble_ids(tokenizer, x, ys, max_length, min_prompt_tokens, max_response_tokens, layout)


def _assemble_ids(
    tokenizer: Any,
    x: list[int],
    ys: Sequence[list[int]],
    max_length: int,
    min_prompt_tokens: int,
    max_response_tokens: int | None,
    layout: str = "marked",
) -> EncodedInput:
    """The layout of the module docstring from token ids: prompt ``x`` and one or two responses ``ys``."""
    if layout not in SINGLE_LAYOUTS:
        raise ValueError(f"layout must be one of {list(SINGLE_LAYOUTS)}, got {layout!r}")
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    encoder = is_encoder_tokenizer(tokenizer)
    if encoder:
        cls, sep = [tokenizer.cls_token_id], [tokenizer.sep_token_id]
        head, seps, tail = cls, [sep] + [sep] * (len(ys) - 1), sep
    else:
        eos = getattr(tokenizer, "eos_token_id", None)
        if eos is None:
            raise ValueError("a causal-LM judge tokenizer needs an eos_token_id (the sequence ends with it)")
        fixed = _fixed_tokens(tokenizer)
        seps = [fixed["A"], fixed["B"]] if len(ys) == 2 else [fixed["single"]]
        if len(ys) == 1 and layout == "plain":
            seps = [[]]  # x y [EOS], as TRL's RewardTrainer
        head, tail = fixed["leading"], [eos]
    fixed = len(head) + sum(len(s) for s in seps) + len(tail)
    p_keep, r_keeps = segment_budgets(
        len(x),
        [len(y) for y in ys],
        max_length - fixed,
        min_prompt_tokens=min_prompt_tokens,
        max_response_tokens=max_response_tokens,
    )
    x_kept = keep_last(x, p_keep)
    ys_kept = [keep_first(y, k) for y, k in zip(ys, r_keeps)]
    ids = list(head) + x_kept
    types = [0] * len(ids)
    segments = [0] * len(ids)
    for i, (sep, y) in enumerate(zip(seps, ys_kept)):
        # A [SEP] closes the segment before it: type 0 after the prompt, 1 after a response.
        ids += sep + y
        types += [0 if i == 0 else 1] * len(sep) + [1] * len(y)
        segments += [0] * len(sep) + [i + 1] * len(y)
    ids += tail
    types += [1] * len(tail)
    segments += [0] * len(tail)
    return EncodedInput(
        input_ids=ids,
        token_type_ids=types
        if encoder and "token_type_ids" in getattr(tokenizer, "model_input_names", ())
        else None,
        prompt_cut=len(x) - len(x_kept),
        response_cuts=tuple(len(y) - len(k) for y, k in zip(ys, ys_kept)),
        segment_ids=segments,
    )


def encode_triple(
    tokenizer: Any,
    prompt: Prompt,
    first: str,
    second: str,
    max_length: int,
    *,
    min_prompt_tokens: int = 64,
    max_response_tokens: int | None = None,
) -> EncodedInput:
    """The ordered triple (prompt, first, second) as one sequence of at most ``max_length`` tokens."""
    return _assemble(tokenizer, prompt, (first, second), max_length, min_prompt_tokens, max_response_tokens)


def encode_single(
    tokenizer: Any,
    prompt: Prompt,
    response: str,
    max_length: int,
    *,
    min_prompt_tokens: int = 64,
    max_response_tokens: int | None = None,
    layout: str = "marked",
) -> EncodedInput:
    """(prompt, response) as one sequence of at most ``max_length`` tokens, for a reward model.

    ``layout`` (causal-LM tokenizers only; encoders always use ``[CLS] x [SEP] y [SEP]``):
    ``"plain"`` is ``x y [EOS]`` (TRL's RewardTrainer input; what a new RewardModel uses),
    ``"marked"`` is ``x "\\n\\nResponse:\\n" y [EOS]`` (RewardModels saved in format 1).
    """
    return _assemble(
        tokenizer, prompt, (response,), max_length, min_prompt_tokens, max_response_tokens, layout
    )


def encode_triples(
    tokenizer: Any,
    prompts: Sequence[Prompt],
    firsts: Sequence[str],
    seconds: Sequence[str],
    max_length: int,
    *,
    min_prompt_tokens: int = 64,
    max_response_tokens: int | None = None,
) -> list[EncodedInput]:
    """``[encode_triple(tokenizer, x, a, b, max_length) for x, a, b in ...]``, with every distinct
    text of the batch tokenised once in one batched tokenizer call (the same rows, faster)."""
    if not len(prompts) == len(firsts) == len(seconds):
        raise ValueError(
            f"batch sizes differ: prompts {len(prompts)}, first {len(firsts)}, second {len(seconds)}"
        )
    n = len(prompts)
    ids = _encode_all(tokenizer, [prompt_text(p) for p in prompts] + list(firsts) + list(seconds))
    return [
        _assemble_ids(tokenizer, ids[i], (ids[n + i], ids[2 * n + i]), max_length, min_prompt_tokens,
                      max_response_tokens)
        for i in range(n)
    ]  # fmt: skip


def encode_singles(
    tokenizer: Any,
    prompts: Sequence[Prompt],
    responses: Sequence[str],
    max_length: int,
    *,
    min_prompt_tokens: int = 64,
    max_response_tokens: int | None = None,
    layout: str = "marked",
) -> list[EncodedInput]:
    """``[encode_single(tokenizer, x, y, max_length, layout=layout) for x, y in ...]``, every distinct
    text tokenised once in one batched tokenizer call."""
    if len(prompts) != len(responses):
        raise ValueError(f"batch sizes differ: prompts {len(prompts)}, responses {len(responses)}")
    n = len(prompts)
    ids = _encode_all(tokenizer, [prompt_text(p) for p in prompts] + list(responses))
    return [
        _assemble_ids(
            tokenizer, ids[i], (ids[n + i],), max_length, min_prompt_tokens, max_response_tokens, layout
        )
        for i in range(n)
    ]


@dataclass
class JudgeBatch:
    """N judge input sequences, right-padded; the last real token of row i is at ``lengths[i] - 1``."""

    input_ids: Any  # (N, T) long
    attention_mask: Any  # (N, T) long, 1 on the lengths[i] real tokens
    lengths: Any  # (N,) long
    token_type_ids: Any | None = None  # (N, T) long, or None
    segment_ids: Any | None = None  # (N, T) long (0 on padding), or None

    def model_inputs(self) -> dict[str, Any]:
        """Keyword arguments for a Hugging Face backbone's forward."""
        out = {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        if self.token_type_ids is not None:
            out["token_type_ids"] = self.token_type_ids
        return out

    def to(self, device: Any) -> JudgeBatch:
        tt = None if self.token_type_ids is None else self.token_type_ids.to(device)
        seg = None if self.segment_ids is None else self.segment_ids.to(device)
        return JudgeBatch(
            self.input_ids.to(device), self.attention_mask.to(device), self.lengths.to(device), tt, seg
        )


def collate_encoded(
    encoded: Sequence[EncodedInput], pad_token_id: int, pad_to_multiple_of: int | None = None
) -> JudgeBatch:
    """Right-pad judge inputs (masks from lengths, so pad == eos is safe)."""
    import torch

    if not encoded:
        raise ValueError("cannot collate an empty batch")
    lengths = [len(e.input_ids) for e in encoded]
    T = (
        max(lengths)
        if not pad_to_multiple_of
        else -(-max(lengths) // pad_to_multiple_of) * pad_to_multiple_of
    )
    ids = [e.input_ids + [pad_token_id] * (T - len(e.input_ids)) for e in encoded]
    attn = [[1] * n + [0] * (T - n) for n in lengths]
    with_types = [e.token_type_ids is not None for e in encoded]
    if any(with_types) and not all(with_types):
        raise ValueError("some inputs have token_type_ids and some do not (mixed tokenizers?)")
    types = None
    if all(with_types):
        types = torch.tensor(
            [e.token_type_ids + [0] * (T - len(e.token_type_ids)) for e in encoded], dtype=torch.long
        )
    segments = None
    if all(e.segment_ids is not None for e in encoded):
        segments = torch.tensor(
            [e.segment_ids + [0] * (T - len(e.segment_ids)) for e in encoded], dtype=torch.long
        )
    return JudgeBatch(
        input_ids=torch.tensor(ids, dtype=torch.long),  # (N, T)
        attention_mask=torch.tensor(attn, dtype=torch.long),  # (N, T)
        lengths=torch.tensor(lengths, dtype=torch.long),  # (N,)
        token_type_ids=types,  # (N, T) or None
        segment_ids=segments,  # (N, T) or None
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
    ``single_layout`` is :func:`encode_single`'s ``layout`` (mode ``"single"``, causal tokenizers).
    """

    tokenizer: Any
    max_length: int
    mode: str = "triple"  # "triple" (preference model) or "single" (reward model)
    min_prompt_tokens: int = 64
    max_response_tokens: int | None = None
    pad_to_multiple_of: int | None = None
    single_layout: str = "marked"

    def __post_init__(self) -> None:
        if self.mode not in ("triple", "single"):
            raise ValueError(f"mode must be 'triple' or 'single', got {self.mode!r}")
        from collections import Counter

        self.truncation: Counter[str] = Counter()

    def __call__(self, examples: Sequence[Any]) -> JudgePairBatch:
        import torch

        kw = {"min_prompt_tokens": self.min_prompt_tokens, "max_response_tokens": self.max_response_tokens}
        tok, L = self.tokenizer, self.max_length
        prompts = [e.prompt for e in examples]
        a, b = [e.first for e in examples], [e.second for e in examples]
        if self.mode == "triple":
            rows = encode_triples(
                tok, prompts + prompts, a + b, b + a, L, **kw
            )  # (x, a, b) rows, then (x, b, a)
        else:
            rows = encode_singles(tok, prompts + prompts, a + b, L, layout=self.single_layout, **kw)
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
