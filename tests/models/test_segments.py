"""Segment ids, the preference model's "segments" pooling, the reward model's plain layout,
and the nlhf_head.json format versions (THEORY.md Sec. 1)."""

from __future__ import annotations

import json

import pytest
import torch

from nlhf.data.judge_inputs import collate_encoded, encode_single, encode_triple
from nlhf.models import PairwisePreferenceModel, RewardModel
from nlhf.models.loading import ModelLoadError
from nlhf.models.scorer import FORMAT_VERSION, HEAD_CONFIG, pool_hidden

PROMPTS = ["Name a fruit.", "What is 2 + 2?", "Say hi"]
FIRST = ["An apple, which is red.", "4", "hi"]
SECOND = ["Rock.", "Five, probably, or maybe twenty-two.", "Hello there, friend!"]


def _random_head(model, seed: int = 1) -> None:
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        model.head.weight.copy_(torch.randn(model.head.weight.shape, generator=g))
        model.head.bias.copy_(torch.randn(1, generator=g))


# ----------------------------------------------------------------------------- segment ids


def test_segment_ids_of_a_hand_built_triple_byte_tokenizer(tiny_tok):
    """Byte tokenizer, no BOS: "hi" (2) + marker A (14) + "A" (1) + marker B (14) + "BC" (2) + EOS:
    segment ids 0 x 16, 1, 0 x 14, 2, 2, 0; the swapped order puts 1 on "BC" and 2 on "A"."""
    enc = encode_triple(tiny_tok, "hi", "A", "BC", max_length=100)
    assert len(enc.input_ids) == 2 + 14 + 1 + 14 + 2 + 1
    assert enc.segment_ids == [0] * 16 + [1] + [0] * 14 + [2, 2] + [0]
    swapped = encode_triple(tiny_tok, "hi", "BC", "A", max_length=100)
    assert swapped.segment_ids == [0] * 16 + [1, 1] + [0] * 14 + [2] + [0]
    # the shared prefix of the two orders is exactly the leading run of zeros
    assert enc.input_ids[:16] == swapped.input_ids[:16] and enc.input_ids[16] != swapped.input_ids[16]


def test_segment_ids_of_a_hand_built_triple_minilm(tiny_bert):
    """[CLS] hello world [SEP] good answer [SEP] bad answer [SEP] -> 0 0 0 0 1 1 0 2 2 0."""
    minilm_tok = tiny_bert[1]  # the all-MiniLM-L6-v2 tokenizer
    enc = encode_triple(minilm_tok, "hello world", "good answer", "bad answer", max_length=64)
    assert len(enc.input_ids) == 10
    assert enc.segment_ids == [0, 0, 0, 0, 1, 1, 0, 2, 2, 0]
    single = encode_single(minilm_tok, "hello world", "good answer", max_length=64)
    assert single.segment_ids == [0, 0, 0, 0, 1, 1, 0]
    batch = collate_encoded([enc, single], minilm_tok.pad_token_id)
    assert batch.segment_ids.tolist() == [[0, 0, 0, 0, 1, 1, 0, 2, 2, 0], [0, 0, 0, 0, 1, 1, 0, 0, 0, 0]]


def test_segment_ids_follow_truncation(tiny_tok):
    """Budget 60 - 29 = 31 (see tests/data): prompt keeps 4, "a" keeps 17 of 30, "b" all 10."""
    tight = encode_triple(tiny_tok, "x" * 50, "a" * 30, "b" * 10, max_length=60, min_prompt_tokens=4)
    assert tight.segment_ids == [0] * (4 + 14) + [1] * 17 + [0] * 14 + [2] * 10 + [0]


# ----------------------------------------------------------------------------- "segments" pooling


def test_pool_hidden_segments_by_hand():
    """hidden (1, 6, 1) = 1..6, segment ids 0 1 1 0 2 0, mask all 1 -> [mean(2, 3); mean(5)] = [2.5, 5].
    Row 2: padding (mask 0) carrying segment id 2 is ignored, empty slot 1 gives 0."""
    hidden = torch.arange(1.0, 13.0).reshape(2, 6, 1)  # (2, 6, 1): 1..6 and 7..12
    seg = torch.tensor([[0, 1, 1, 0, 2, 0], [0, 0, 2, 0, 2, 2]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    out = pool_hidden(hidden, mask, "segments", seg, num_segments=2)
    assert out.tolist() == [[2.5, 5.0], [0.0, 9.0]]
    with pytest.raises(ValueError, match="needs segment_ids"):
        pool_hidden(hidden, mask, "segments")


@pytest.mark.parametrize("backbone", ["causal", "encoder"])
def test_segments_score_is_the_head_on_two_slot_means(backbone, tiny_lm, tiny_tok, tiny_bert):
    """f(x, a, b) = w . [mean h over a's tokens; mean h over b's tokens] + bias, computed here
    from the backbone's hidden states; the logit is f(x,a,b) - f(x,b,a) = -(logit with a, b swapped)."""
    model_, tok = (tiny_lm, tiny_tok) if backbone == "causal" else tiny_bert
    pm = PairwisePreferenceModel(model_, tok, pooling="segments")
    assert pm.head.weight.shape == (1, 2 * pm.hidden_size)
    _random_head(pm)
    pm.eval()
    enc = pm.encode(PROMPTS, FIRST, SECOND)
    ids, mask, seg = enc["input_ids"], enc["attention_mask"], enc["segment_ids"]
    with torch.no_grad():
        kwargs = {"input_ids": ids, "attention_mask": mask}
        if backbone == "causal":
            kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        hidden = pm.backbone(**kwargs).last_hidden_state  # (6, T, H)
        expected = []
        for i in range(ids.shape[0]):
            a = hidden[i][seg[i] == 1].mean(0)  # (H,)
            b = hidden[i][seg[i] == 2].mean(0)
            expected.append(float(pm.head.weight[0] @ torch.cat([a, b]) + pm.head.bias[0]))
        scores = pm.score(ids, mask, seg)
        logits = pm(ids, mask, segment_ids=seg)
        swapped = pm.encode(PROMPTS, SECOND, FIRST)
        logits_swapped = pm(
            swapped["input_ids"], swapped["attention_mask"], segment_ids=swapped["segment_ids"]
        )
    torch.testing.assert_close(scores, torch.tensor(expected), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(
        logits, scores[:3] - scores[3:], atol=2e-5, rtol=0
    )  # causal: shared-prefix path
    torch.testing.assert_close(logits_swapped, -logits, atol=1e-5, rtol=0)
    assert logits.abs().min() > 1e-4  # not trivially zero
    with pytest.raises(ValueError, match="needs segment_ids"):
        pm(ids, mask)


def test_segments_two_batches_agree_with_single_batch(tiny_bert):
    bert, tok = tiny_bert
    pm = PairwisePreferenceModel(bert, tok)
    _random_head(pm)
    pm.eval()
    both = pm.encode(PROMPTS, FIRST, SECOND)
    ab = collate_encoded([encode_triple(tok, p, a, b, 512) for p, a, b in zip(PROMPTS, FIRST, SECOND)], 0)
    ba = collate_encoded([encode_triple(tok, p, b, a, 512) for p, a, b in zip(PROMPTS, FIRST, SECOND)], 0)
    with torch.no_grad():
        single = pm(both["input_ids"], both["attention_mask"], segment_ids=both["segment_ids"])
        split = pm(ab.input_ids, ab.attention_mask, ba.input_ids, ba.attention_mask,
                   segment_ids=ab.segment_ids, segment_ids_ba=ba.segment_ids)  # fmt: skip
    torch.testing.assert_close(single, split, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="segment_ids_ba"):
        pm(ab.input_ids, ab.attention_mask, ba.input_ids, ba.attention_mask, segment_ids=ab.segment_ids)


def test_segments_preference_model_fits_a_cycle(tiny_bert):
    """The default encoder pooling gets all three pairs of a Condorcet cycle a > b > c > a right,
    which no reward model can (at most 2 of 3, tests/models/test_cycle.py).

    With a bag-of-tokens backbone the segments head would be Bradley-Terry (logit = (w1 - w2) .
    (e(a) - e(b))); the cycle is fitted through the encoder's context (each response's
    hidden states depend on the other response). Adam lr 1e-3, 150 steps, on the random
    2-layer BERT: P > 0.98 on every pair for seeds 0, 2, 3, and 0.78-0.88 for seed 1.
    """
    bert, tok = tiny_bert
    torch.manual_seed(0)
    pm = PairwisePreferenceModel(bert, tok)
    assert pm.pooling == "segments"
    prompts, firsts, seconds = ["Pick one."] * 3, ["rock", "paper", "scissors"], ["paper", "scissors", "rock"]
    enc = pm.encode(prompts, firsts, seconds)
    opt = torch.optim.Adam(pm.parameters(), lr=1e-3)
    pm.train()
    for _ in range(150):
        logits = pm(enc["input_ids"], enc["attention_mask"], segment_ids=enc["segment_ids"])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.ones(3))
        opt.zero_grad()
        loss.backward()
        opt.step()
    p = pm.prob(prompts, firsts, seconds)
    assert (p > 0.75).all(), p  # seed 0: > 0.99


# ----------------------------------------------------------------------------- reward model layout


def test_reward_model_causal_layout_is_prompt_response_eos(tiny_lm, tiny_tok):
    """A new RewardModel on a causal LM reads x y [EOS] (TRL's RewardTrainer input): the
    encoded ids are exactly tok(x) + tok(y) + [eos], with segment ids 0 0 1 1 1 0."""
    rm = RewardModel(tiny_lm, tiny_tok)
    assert rm.input_layout == "plain"
    enc = rm.encode(["hi", "hey"], ["abc", "d"])
    x, y = (
        tiny_tok("hi", add_special_tokens=False)["input_ids"],
        tiny_tok("abc", add_special_tokens=False)["input_ids"],
    )
    assert enc["input_ids"][0].tolist() == x + y + [tiny_tok.eos_token_id]
    assert enc["segment_ids"][0].tolist() == [0, 0, 1, 1, 1, 0]
    assert enc["attention_mask"][1].tolist() == [1, 1, 1, 1, 1, 0]  # "hey" + "d" + eos, then padding
    assert tiny_tok.decode(enc["input_ids"][1, :5]) == "heyd<|im_end|>"
    # the preference model keeps its markers (they separate the two responses)
    pm = PairwisePreferenceModel(tiny_lm, tiny_tok)
    assert pm.input_layout == "marked"


def test_reward_model_encoder_layout_unchanged(tiny_bert):
    bert, tok = tiny_bert
    rm = RewardModel(bert, tok)
    enc = rm.encode(["hello world"], ["good answer"])
    x, y = (
        tok("hello world", add_special_tokens=False)["input_ids"],
        tok("good answer", add_special_tokens=False)["input_ids"],
    )
    assert enc["input_ids"][0].tolist() == [tok.cls_token_id] + x + [tok.sep_token_id] + y + [
        tok.sep_token_id
    ]


# ----------------------------------------------------------------------------- nlhf_head.json versions


def test_head_json_records_pooling_and_layout(tmp_path, tiny_bert, tiny_lm, tiny_tok):
    bert, tok = tiny_bert
    pm = PairwisePreferenceModel(bert, tok)
    _random_head(pm)
    pm.save_pretrained(tmp_path / "pm")
    meta = json.loads((tmp_path / "pm" / HEAD_CONFIG).read_text())
    assert FORMAT_VERSION == 2
    assert (meta["format_version"], meta["pooling"], meta["input_layout"]) == (2, "segments", "marked")
    loaded = PairwisePreferenceModel.from_pretrained(tmp_path / "pm")
    assert loaded.pooling == "segments" and loaded.head.weight.shape == (1, 2 * bert.config.hidden_size)
    torch.testing.assert_close(
        loaded.prob(PROMPTS, FIRST, SECOND), pm.prob(PROMPTS, FIRST, SECOND), atol=0, rtol=0
    )

    rm = RewardModel(tiny_lm, tiny_tok)
    rm.save_pretrained(tmp_path / "rm")
    meta = json.loads((tmp_path / "rm" / HEAD_CONFIG).read_text())
    assert (meta["format_version"], meta["pooling"], meta["input_layout"]) == (2, "last", "plain")
    assert RewardModel.from_pretrained(tmp_path / "rm").input_layout == "plain"


def test_format_1_reward_model_loads_with_its_marked_layout(tmp_path, tiny_lm, tiny_tok):
    """A format-1 directory (no input_layout) scores exactly as format 1 did: x "\\n\\nResponse:\\n" y [EOS]."""
    rm = RewardModel(tiny_lm, tiny_tok)
    _random_head(rm)
    rm.save_pretrained(tmp_path / "rm")
    path = tmp_path / "rm" / HEAD_CONFIG
    meta = json.loads(path.read_text())
    del meta["input_layout"]
    path.write_text(json.dumps({**meta, "format_version": 1}))
    old = RewardModel.from_pretrained(tmp_path / "rm")
    assert old.input_layout == "marked"
    enc = old.encode(["hi"], ["A"])
    assert tiny_tok.decode(enc["input_ids"][0]) == "hi\n\nResponse:\nA<|im_end|>"
    marked = collate_encoded(
        [encode_single(tiny_tok, "hi", "A", 100, layout="marked")], tiny_tok.pad_token_id
    )
    with torch.no_grad():
        expected = rm.score(marked.input_ids, marked.attention_mask)
    torch.testing.assert_close(old.reward(["hi"], ["A"]), expected, atol=1e-6, rtol=0)
    assert (old.reward(["hi"], ["A"]) - rm.reward(["hi"], ["A"])).abs().item() > 1e-4  # the layouts differ

    path.write_text(json.dumps({**meta, "format_version": 3}))
    with pytest.raises(ModelLoadError, match="format_version 3 is newer"):
        RewardModel.from_pretrained(tmp_path / "rm")
    path.write_text(json.dumps({**meta, "pooling": "max"}))
    with pytest.raises(ModelLoadError, match="unknown pooling 'max'"):
        RewardModel.from_pretrained(tmp_path / "rm")
    with pytest.raises(ValueError, match="layout must be one of"):
        encode_single(tiny_tok, "hi", "A", 100, layout="fancy")


# ----------------------------------------------------------------------------- shared prompt (causal)


def test_shared_prefix_lengths_by_hand(tiny_tok):
    """(hi, A, BC) and (hi, BC, A): both start with "hi" + marker A = 16 tokens -> prefix 16.
    Rows whose prefixes differ (another prompt in the second half) -> None (no sharing)."""
    from nlhf.models.scorer import shared_prefix_lengths

    rows = [encode_triple(tiny_tok, "hi", "A", "BC", 100), encode_triple(tiny_tok, "hey", "x", "y", 100)]
    rows += [encode_triple(tiny_tok, "hi", "BC", "A", 100), encode_triple(tiny_tok, "hey", "y", "x", 100)]
    b = collate_encoded(rows, tiny_tok.pad_token_id)
    assert shared_prefix_lengths(b.input_ids, b.attention_mask, b.segment_ids).tolist() == [16, 17]
    other = collate_encoded([rows[0], rows[1], rows[3], rows[2]], tiny_tok.pad_token_id)  # pairs mixed up
    assert shared_prefix_lengths(other.input_ids, other.attention_mask, other.segment_ids) is None


@pytest.mark.parametrize("pooling", ["last", "segments"])
def test_shared_prompt_gives_the_scores_and_gradients_of_whole_rows(pooling, tiny_tok):
    """Causal backbone: each pair's prefix run once (KV cache repeated for both orders) gives
    the logits and every parameter gradient of the plain (2B, T) forward, with prompts of
    different lengths (left-padded prefixes) and responses of different lengths."""
    from nlhf.models.tiny import tiny_causal_lm

    pm = PairwisePreferenceModel(tiny_causal_lm(tokenizer=tiny_tok, seed=0), tiny_tok, pooling=pooling)
    _random_head(pm)
    enc = pm.encode(PROMPTS, FIRST, SECOND)
    ids, mask, seg = enc["input_ids"], enc["attention_mask"], enc["segment_ids"]
    results = []
    for share in (True, False):
        pm.share_prompt = share
        pm.zero_grad()
        logits = pm(ids, mask, segment_ids=seg)  # (3,)
        (logits * torch.tensor([1.0, -2.0, 0.5])).sum().backward()
        results.append((logits.detach(), {n: p.grad.clone() for n, p in pm.named_parameters()}))
    (shared, g_shared), (plain, g_plain) = results
    torch.testing.assert_close(shared, plain, atol=2e-5, rtol=0)
    assert plain.abs().min() > 1e-3
    for name, grad in g_plain.items():
        torch.testing.assert_close(g_shared[name], grad, atol=2e-4, rtol=1e-3, msg=name)
    # the shared path really ran: two backbone calls, the first on the B prefixes only
    calls = []
    hook = pm.backbone.register_forward_pre_hook(
        lambda m, a, kw: calls.append(kw["input_ids"].shape), with_kwargs=True
    )
    pm.share_prompt = True
    with torch.no_grad():
        pm(ids, mask, segment_ids=seg)
    hook.remove()
    from nlhf.data.schema import prompt_text

    longest_prefix = max(len(prompt_text(p).encode()) for p in PROMPTS) + 14  # bytes of prompt + marker A
    longest_row = int(mask.sum(-1).max())
    assert calls[0] == (3, longest_prefix)  # B prefixes, left-padded to the longest
    assert calls[1][0] == 6 and calls[1][1] < longest_row  # 2B continuations, shorter than whole rows


# ----------------------------------------------------------------------------- batched encoding


@pytest.mark.parametrize("backbone", ["causal", "encoder"])
def test_batched_encoding_equals_row_by_row(backbone, tiny_tok, tiny_bert):
    """encode_triples / encode_singles (one tokenizer call per batch, repeated texts once) give
    exactly the rows of encode_triple / encode_single, truncation included."""
    from nlhf.data.judge_inputs import encode_singles, encode_triples

    tok = tiny_tok if backbone == "causal" else tiny_bert[1]
    prompts = PROMPTS + ["START " + "word " * 300 + "END", ""]
    firsts = FIRST + ["yes " * 200, "same"]
    seconds = SECOND + ["no", "same"]
    L = 96 if backbone == "causal" else 64
    rows = encode_triples(tok, prompts, firsts, seconds, L, min_prompt_tokens=8)
    assert rows == [
        encode_triple(tok, p, a, b, L, min_prompt_tokens=8) for p, a, b in zip(prompts, firsts, seconds)
    ]
    assert rows[3].truncated and rows[3].prompt_cut > 0 and len(rows[3].input_ids) == L
    for layout in ("plain", "marked"):
        singles = encode_singles(tok, prompts, firsts, L, layout=layout, min_prompt_tokens=8)
        assert singles == [
            encode_single(tok, p, y, L, layout=layout, min_prompt_tokens=8) for p, y in zip(prompts, firsts)
        ]
    with pytest.raises(ValueError, match="batch sizes differ"):
        encode_triples(tok, prompts, firsts, seconds[:2], L)
