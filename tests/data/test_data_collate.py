"""Tokenisation and collation: chat templates, completion masks from lengths (pad == eos), judge inputs."""

from __future__ import annotations

import pytest

from nlhf.data import (
    Message,
    PairCollator,
    PreferenceExample,
    PromptCollator,
    PromptExample,
    collate_encoded,
    encode_single,
    encode_triple,
    tokenize_pair,
)

EX = PreferenceExample((Message("user", "hi"),), "yo", "go away", 0.75, "f.jsonl:3")


def _text(tok, ids):
    return tok.decode(ids, skip_special_tokens=False)


def test_tokenize_pair_with_chat_template(tiny_tok):
    """ChatML: prompt '<|im_start|>user\\nhi<|im_end|>\\n<|im_start|>assistant\\n', completion 'yo<|im_end|>'."""
    pair = tokenize_pair(tiny_tok, EX)
    assert _text(tiny_tok, pair.prompt_ids) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert _text(tiny_tok, pair.first_ids) == "yo<|im_end|>"
    assert _text(tiny_tok, pair.second_ids) == "go away<|im_end|>"
    assert pair.first_ids[-1] == tiny_tok.eos_token_id == tiny_tok.pad_token_id
    assert (pair.label, pair.source, pair.prompt_cut, pair.first_cut) == (0.75, "f.jsonl:3", 0, 0)
    assert pair.completion_mask(0) == [0] * len(pair.prompt_ids) + [1] * 3


def test_plain_text_prompt_gets_the_template_too(tiny_tok):
    pair = tokenize_pair(tiny_tok, PreferenceExample("hi", "yo", "no"))
    assert _text(tiny_tok, pair.prompt_ids) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_tokenize_pair_without_template_appends_eos(tiny_tok):
    import copy

    plain = copy.deepcopy(tiny_tok)  # a copy: the session fixture stays templated
    plain.chat_template = None
    pair = tokenize_pair(plain, PreferenceExample("Q: 2+2?\nA:", " 4", " 5"))
    assert _text(plain, pair.prompt_ids) == "Q: 2+2?\nA:"
    assert _text(plain, pair.first_ids) == " 4<|im_end|>"
    conv = tokenize_pair(plain, EX)
    assert _text(plain, conv.prompt_ids) == "User: hi\n\nAssistant:"


def test_truncation_prompt_from_left_responses_from_right(tiny_tok):
    ex = PreferenceExample("abcdefghij" * 3, "0123456789", "xy")
    full = tokenize_pair(tiny_tok, ex)
    cut = tokenize_pair(tiny_tok, ex, max_prompt_tokens=12, max_response_tokens=5)
    assert cut.prompt_ids == full.prompt_ids[-12:]  # the end of the prompt (the generation header) is kept
    assert _text(tiny_tok, cut.prompt_ids).endswith("<|im_start|>assistant\n")
    assert _text(tiny_tok, cut.first_ids) == "01234"  # cut from the right: no EOS any more
    assert _text(tiny_tok, cut.second_ids) == "xy<|im_end|>"  # short response untouched
    assert (cut.prompt_cut, cut.first_cut, cut.second_cut) == (len(full.prompt_ids) - 12, 6, 0)


def test_collator_masks_from_lengths_keep_real_eos(tiny_tok):
    """Pair 0: prompt P0 tokens, responses 'yo<|im_end|>' (3) and 'go away<|im_end|>' (8).
    Pair 1: responses 'a<|im_end|>' (2), 'bb<|im_end|>' (3). Rows: [first0, first1, second0, second1]."""
    ex1 = PreferenceExample("a much longer prompt here", "a", "bb", 1.0, "f.jsonl:9")
    collator = PairCollator(tiny_tok, max_prompt_tokens=None, max_response_tokens=None)
    batch = collator([EX, ex1])
    p0 = len(tokenize_pair(tiny_tok, EX).prompt_ids)
    p1 = len(tokenize_pair(tiny_tok, ex1).prompt_ids)
    lengths = [p0 + 3, p1 + 2, p0 + 8, p1 + 3]
    T = max(lengths)
    assert tuple(batch.input_ids.shape) == (4, T)
    assert batch.lengths.tolist() == lengths
    assert batch.prompt_lengths.tolist() == [p0, p1, p0, p1]
    assert batch.labels.tolist() == [0.75, 1.0] and batch.batch_size == 2
    assert batch.sources == ("f.jsonl:3", "f.jsonl:9")
    eos = tiny_tok.eos_token_id
    for row, (p, n) in enumerate(zip([p0, p1, p0, p1], lengths)):
        assert batch.attention_mask[row].tolist() == [1] * n + [0] * (T - n)
        assert batch.completion_mask[row].tolist() == [0] * p + [1] * (n - p) + [0] * (T - n)
        assert batch.input_ids[row, n - 1].item() == eos  # the real EOS is in both masks
        assert batch.completion_mask[row, n - 1].item() == 1
        assert batch.input_ids[row, n:].tolist() == [eos] * (T - n)  # padding is eos too
    # no prompt token is ever in the completion mask
    positions = batch.completion_mask.nonzero()
    assert all(col >= batch.prompt_lengths[row] for row, col in positions.tolist())
    assert collator.truncation["pairs"] == 2 and collator.truncation["prompt"] == 0


def test_collator_counts_truncations_and_pads_to_multiple(tiny_tok):
    collator = PairCollator(tiny_tok, max_prompt_tokens=8, max_response_tokens=4, pad_to_multiple_of=16)
    batch = collator([EX, EX])
    assert batch.input_ids.shape[1] == 16
    assert dict(collator.truncation) == {
        "pairs": 2,
        "prompt": 2,
        "prompt_tokens": 2 * (len(tokenize_pair(tiny_tok, EX).prompt_ids) - 8),
        "second": 2,
        "second_tokens": 2 * 4,
    }


def test_prompt_collator_left_pads(tiny_tok):
    collator = PromptCollator(tiny_tok, max_prompt_tokens=None)
    batch = collator([PromptExample("hi", "p.jsonl:1"), PromptExample("a longer prompt", "p.jsonl:2")])
    n0 = len(
        tiny_tok.apply_chat_template(
            [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=True
        )["input_ids"]
    )
    n1 = n0 + len("a longer prompt") - 2
    assert batch.prompt_lengths.tolist() == [n0, n1]
    assert batch.attention_mask[0].tolist() == [0] * (n1 - n0) + [1] * n0
    assert batch.attention_mask[1].tolist() == [1] * n1
    assert _text(tiny_tok, batch.input_ids[0, n1 - n0 :].tolist()).endswith("<|im_start|>assistant\n")
    assert batch.sources == ("p.jsonl:1", "p.jsonl:2")
    short = PromptCollator(tiny_tok, max_prompt_tokens=5)([EX])
    assert short.input_ids.shape == (1, 5) and short.attention_mask.tolist() == [[1] * 5]


# ---------------------------------------------------------------------------------------------
# judge side


def test_encode_triple_minilm_layout(minilm_tok):
    tok = minilm_tok
    enc = encode_triple(tok, "hello world", "good answer", "bad answer", max_length=64)
    x, a, b = (
        tok("hello world", add_special_tokens=False)["input_ids"],
        tok("good answer", add_special_tokens=False)["input_ids"],
        tok("bad answer", add_special_tokens=False)["input_ids"],
    )
    cls, sep = tok.cls_token_id, tok.sep_token_id
    assert enc.input_ids == [cls] + x + [sep] + a + [sep] + b + [sep]
    assert enc.token_type_ids == [0] * (len(x) + 2) + [1] * (len(a) + len(b) + 2)
    assert not enc.truncated
    single = encode_single(tok, "hello world", "good answer", max_length=64)
    assert single.input_ids == [cls] + x + [sep] + a + [sep]
    assert single.token_type_ids == [0] * (len(x) + 2) + [1] * (len(a) + 1)


def test_encode_triple_minilm_truncation(minilm_tok):
    """Prompt 300 words, responses 100 and 150 words (one token each for 'word'): budget
    512 - 4 = 508; responses fit whole (250), the prompt keeps its last 258 tokens."""
    tok = minilm_tok
    prompt = " ".join(f"w{i}" for i in range(300))
    x = tok(prompt, add_special_tokens=False)["input_ids"]
    a, b = "yes " * 100, "no " * 150
    enc = encode_triple(tok, prompt, a, b, max_length=512)
    assert len(enc.input_ids) == 512
    keep = 508 - 250
    assert enc.input_ids[1 : 1 + keep] == x[-keep:]  # cut from the left
    assert enc.prompt_cut == len(x) - keep and enc.response_cuts == (0, 0)
    swapped = encode_triple(tok, prompt, b, a, max_length=512)
    assert swapped.input_ids[1 : 1 + keep] == x[-keep:]
    # responses of 400 and 600 tokens: prompt floor 64, then water-filling 444 -> (222, 222)
    long = encode_triple(tok, prompt, "yes " * 400, "no " * 600, max_length=512)
    assert len(long.input_ids) == 512
    assert long.prompt_cut == len(x) - 64 and long.response_cuts == (400 - 222, 600 - 222)
    assert long.input_ids[-1] == tok.sep_token_id


def test_encode_causal_layout_and_collate(tiny_tok):
    tok = tiny_tok
    enc = encode_triple(tok, (Message("user", "hi"),), "A", "B", max_length=100)
    assert tok.decode(enc.input_ids) == "User: hi\n\nResponse A:\nA\n\nResponse B:\nB<|im_end|>"
    assert enc.token_type_ids is None
    single = encode_single(tok, "hi", "A", max_length=100)
    assert tok.decode(single.input_ids) == "hi\n\nResponse:\nA<|im_end|>"
    # byte-level tokenizer: one token a byte; 29 fixed tokens (two markers of 14, one EOS)
    fixed = len("\n\nResponse A:\n") + len("\n\nResponse B:\n") + 1
    fits = encode_triple(tok, "x" * 50, "a" * 30, "b" * 10, max_length=90, min_prompt_tokens=4)
    assert len(fits.input_ids) == 90 and fixed == 29
    assert fits.response_cuts == (0, 0) and fits.prompt_cut == 50 - (90 - 29 - 40)
    # budget 60 - 29 = 31: prompt floor 4, responses share 27: b whole (10), a keeps 17
    tight = encode_triple(tok, "x" * 50, "a" * 30, "b" * 10, max_length=60, min_prompt_tokens=4)
    assert len(tight.input_ids) == 60
    assert (tight.prompt_cut, tight.response_cuts) == (46, (13, 0))
    assert (
        tok.decode(tight.input_ids)
        == "xxxx\n\nResponse A:\n" + "a" * 17 + "\n\nResponse B:\n" + "b" * 10 + "<|im_end|>"
    )
    batch = collate_encoded([enc, single], pad_token_id=tok.pad_token_id)
    n0, n1 = len(enc.input_ids), len(single.input_ids)
    assert batch.lengths.tolist() == [n0, n1]
    assert batch.attention_mask[1].tolist() == [1] * n1 + [0] * (n0 - n1)
    assert batch.input_ids[1, n1 - 1].item() == tok.eos_token_id  # last real token, kept by the mask
    assert batch.token_type_ids is None and set(batch.model_inputs()) == {"input_ids", "attention_mask"}


def test_collate_encoded_token_types(minilm_tok):
    encs = [encode_single(minilm_tok, "q", "a b c", 32), encode_single(minilm_tok, "q", "a", 32)]
    batch = collate_encoded(encs, pad_token_id=minilm_tok.pad_token_id)
    assert batch.token_type_ids.tolist()[1] == encs[1].token_type_ids + [0, 0]
    assert set(batch.model_inputs()) == {"input_ids", "attention_mask", "token_type_ids"}


def test_encode_rejects_too_small_budget(minilm_tok):
    with pytest.raises(ValueError, match="cannot hold"):
        encode_triple(minilm_tok, "a b c d e f", "x", "y", max_length=5)


def test_judge_collator_both_orders(minilm_tok):
    from nlhf.data import JudgeCollator

    tok = minilm_tok
    exs = [
        PreferenceExample("q one", "alpha", "beta gamma", 0.8, "f:1"),
        PreferenceExample("q", "x", "y", 1.0, "f:2"),
    ]
    triple = JudgeCollator(tok, max_length=64)(exs)
    assert triple.batch_size == 2 and triple.labels.tolist() == pytest.approx([0.8, 1.0])
    assert triple.inputs.input_ids.shape[0] == 4 and triple.sources == ("f:1", "f:2")
    row0 = triple.inputs.input_ids[0, : triple.inputs.lengths[0]].tolist()
    row2 = triple.inputs.input_ids[2, : triple.inputs.lengths[2]].tolist()
    assert row0 == encode_triple(tok, "q one", "alpha", "beta gamma", 64).input_ids
    assert row2 == encode_triple(tok, "q one", "beta gamma", "alpha", 64).input_ids
    single = JudgeCollator(tok, max_length=64, mode="single")(exs)
    row3 = single.inputs.input_ids[3, : single.inputs.lengths[3]].tolist()
    assert row3 == encode_single(tok, "q", "y", 64).input_ids
    with pytest.raises(ValueError, match="mode must be 'triple' or 'single'"):
        JudgeCollator(tok, 64, mode="pair")
