"""PairwisePreferenceModel: symmetry by construction, pooling by lengths, save/load, LoRA."""

from __future__ import annotations

import json
import math

import pytest
import torch

from nlhf.data.schema import Message
from nlhf.models import LoraSettings, PairwisePreferenceModel, RewardModel
from nlhf.models.loading import ModelLoadError
from nlhf.models.scorer import HEAD_CONFIG, pool_hidden
from nlhf.models.tiny import tiny_causal_lm

PROMPTS = [
    "Name a fruit.",
    "What is 2 + 2?",
    (Message("user", "Hi"), Message("assistant", "Hello"), Message("user", "Bye?")),
]
FIRST = ["An apple, which is red.", "4", "Goodbye!"]
SECOND = ["Rock.", "Five, probably, or maybe twenty-two.", "No"]


def _random_head(model: PairwisePreferenceModel, seed: int = 1) -> None:
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        model.head.weight.copy_(torch.randn(model.head.weight.shape, generator=g))
        model.head.bias.copy_(torch.randn(1, generator=g))


@pytest.mark.parametrize(
    ("backbone", "pooling", "resolved"),
    [("causal", "auto", "last"), ("encoder", "auto", "segments"), ("causal", "segments", "segments"),
     ("encoder", "mean", "mean")],
)  # fmt: skip
def test_symmetry_by_construction_on_random_weights(
    backbone, pooling, resolved, tiny_lm, tiny_tok, tiny_bert
):
    """P(a > b) + P(b > a) = 1 and P(a > a) = 1/2 to 1e-6, for any weights (THEORY.md Sec. 1),
    under the default poolings ("last" on causal LMs, "segments" on encoders) and others."""
    model_, tok = (tiny_lm, tiny_tok) if backbone == "causal" else tiny_bert
    pm = PairwisePreferenceModel(model_, tok, pooling=pooling)
    _random_head(pm)
    assert pm.pooling == resolved
    p_ab = pm.prob(PROMPTS, FIRST, SECOND)
    p_ba = pm.prob(PROMPTS, SECOND, FIRST)
    p_aa = pm.prob(PROMPTS, FIRST, FIRST)
    assert p_ab.shape == (3,)
    torch.testing.assert_close(p_ab + p_ba, torch.ones(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(p_aa, torch.full((3,), 0.5), atol=1e-6, rtol=0)
    # the random model is not trivially 1/2 everywhere, so the checks above have teeth
    assert (p_ab - 0.5).abs().max() > 1e-3


def test_single_batch_and_two_batches_agree(tiny_lm, tiny_tok):
    """forward((2B, T)) == forward(ab (B, Ta), ba (B, Ta + 3)): both orders, different widths."""
    pm = PairwisePreferenceModel(tiny_lm, tiny_tok)
    _random_head(pm)
    from nlhf.data.judge_inputs import collate_encoded, encode_triple

    both = pm.encode(PROMPTS, FIRST, SECOND)
    ab = collate_encoded(
        [encode_triple(tiny_tok, p, a, b, pm.max_length) for p, a, b in zip(PROMPTS, FIRST, SECOND)], 2
    )
    ba = collate_encoded(
        [encode_triple(tiny_tok, p, b, a, pm.max_length) for p, a, b in zip(PROMPTS, FIRST, SECOND)], 2
    )
    ab = {"input_ids": ab.input_ids, "attention_mask": ab.attention_mask}
    # the same rows padded 3 columns wider: pad_and_stack must align the two widths
    ba = {
        "input_ids": torch.nn.functional.pad(ba.input_ids, (0, 3), value=2),
        "attention_mask": torch.nn.functional.pad(ba.attention_mask, (0, 3), value=0),
    }
    with torch.no_grad():
        single = pm(both["input_ids"], both["attention_mask"])
        split = pm(ab["input_ids"], ab["attention_mask"], ba["input_ids"], ba["attention_mask"])
        logit = pm.logit(both["input_ids"], both["attention_mask"])
    torch.testing.assert_close(single, split, atol=1e-5, rtol=0)
    torch.testing.assert_close(single, logit, atol=0, rtol=0)
    with pytest.raises(ValueError, match="2B rows"):
        pm(both["input_ids"][:3], both["attention_mask"][:3])


def test_last_token_pooling_uses_lengths_not_pad_id(tiny_lm, tiny_tok):
    """pad == eos (<|im_end|>) and every row ENDS with eos: a short row padded with eos must
    score exactly as it does alone, and left padding gives the same score as right padding."""
    pm = PairwisePreferenceModel(tiny_lm, tiny_tok)
    _random_head(pm)
    enc = pm.encode(["p"], ["a short one"], ["b"])  # (2, T)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    eos = tiny_tok.eos_token_id
    assert tiny_tok.pad_token_id == eos
    lengths = mask.sum(-1)
    assert (ids[torch.arange(2), lengths - 1] == eos).all()  # real final eos in each row
    assert lengths[0] == lengths[1]  # same tokens in both orders
    with torch.no_grad():
        alone = pm.score(ids[:1], mask[:1])  # (1,)
        extra = 5
        right = torch.cat([ids[:1], torch.full((1, extra), eos)], 1)
        right_mask = torch.cat([mask[:1], torch.zeros(1, extra, dtype=mask.dtype)], 1)
        left = torch.cat([torch.full((1, extra), eos), ids[:1]], 1)
        left_mask = torch.cat([torch.zeros(1, extra, dtype=mask.dtype), mask[:1]], 1)
        s_right = pm.score(right, right_mask)
        s_left = pm.score(left, left_mask)
    torch.testing.assert_close(s_right, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(s_left, alone, atol=1e-5, rtol=0)


def test_pool_hidden_by_hand():
    """hidden rows [[1],[2],[3]] and [[10],[20],[30]]; masks [1,1,0] and [0,1,1] (left padded).
    last: 2 and 30; mean: (1+2)/2 = 1.5 and (20+30)/2 = 25; cls on the left-padded row is an error."""
    hidden = torch.tensor([[[1.0], [2.0], [3.0]], [[10.0], [20.0], [30.0]]])  # (2, 3, 1)
    mask = torch.tensor([[1, 1, 0], [0, 1, 1]])
    assert pool_hidden(hidden, mask, "last").flatten().tolist() == [2.0, 30.0]
    assert pool_hidden(hidden, mask, "mean").flatten().tolist() == [1.5, 25.0]
    with pytest.raises(ValueError, match="right-padded"):
        pool_hidden(hidden, mask, "cls")
    assert pool_hidden(hidden[:1], mask[:1], "cls").flatten().tolist() == [1.0]
    with pytest.raises(ValueError, match="no tokens"):
        pool_hidden(hidden, torch.tensor([[1, 0, 0], [0, 0, 0]]), "mean")


def test_encode_matches_the_data_layer_and_respects_max_length(tiny_tok):
    """The model's own encode (used by prob at judging time) gives exactly the rows of the
    data layer's JudgeCollator (used for training), and cuts to max_length."""
    from nlhf.data.judge_inputs import JudgeCollator
    from nlhf.data.schema import PreferenceExample

    pm = PairwisePreferenceModel(tiny_causal_lm(tokenizer=tiny_tok), tiny_tok, max_length=128)
    prompts = ["START " + "x" * 300 + " END", "short"]
    first, second = ["a" * 100, "yes"], ["b" * 30, "no"]
    enc = pm.encode(prompts, first, second)
    examples = [PreferenceExample(p, a, b) for p, a, b in zip(prompts, first, second)]
    ref = JudgeCollator(tiny_tok, max_length=128, mode="triple")(examples).inputs
    assert torch.equal(enc["input_ids"], ref.input_ids) and torch.equal(
        enc["attention_mask"], ref.attention_mask
    )
    assert enc["input_ids"].shape == (4, 128) and enc["truncated"] == 2  # both orders of the long pair
    text = tiny_tok.decode(enc["input_ids"][0])
    assert "END" in text and "START" not in text  # the prompt is cut from the left


def test_save_load_round_trip_identical(tmp_path, tiny_lm, tiny_tok):
    pm = PairwisePreferenceModel(tiny_lm, tiny_tok)
    _random_head(pm)
    pm.save_pretrained(tmp_path / "pm")
    meta = json.loads((tmp_path / "pm" / HEAD_CONFIG).read_text())
    assert (
        meta["kind"] == "pairwise_preference"
        and meta["pooling"] == "last"
        and meta["backbone_kind"] == "causal"
    )
    assert (tmp_path / "pm" / "model.safetensors").is_file() and (
        tmp_path / "pm" / "head.safetensors"
    ).is_file()
    loaded = PairwisePreferenceModel.from_pretrained(tmp_path / "pm")
    assert loaded.tokenizer.pad_token == "<|im_end|>"
    torch.testing.assert_close(
        loaded.prob(PROMPTS, FIRST, SECOND), pm.prob(PROMPTS, FIRST, SECOND), atol=0, rtol=0
    )
    with pytest.raises(ModelLoadError, match="not a RewardModel"):
        RewardModel.from_pretrained(tmp_path / "pm")
    with pytest.raises(ModelLoadError, match="from_pretrained"):
        PairwisePreferenceModel.from_backbone(str(tmp_path / "pm"))


def test_from_pretrained_errors(tmp_path, tiny_lm):
    with pytest.raises(ModelLoadError, match="not found"):
        PairwisePreferenceModel.from_pretrained(tmp_path / "missing")
    tiny_lm.save_pretrained(tmp_path / "plain")
    with pytest.raises(ModelLoadError, match="no nlhf_head.json"):
        PairwisePreferenceModel.from_pretrained(tmp_path / "plain")


def test_encoder_backbone_round_trip(tmp_path, tiny_bert):  # an old pooling still saves and loads
    bert, tok = tiny_bert
    pm = PairwisePreferenceModel(bert, tok, pooling="cls")
    _random_head(pm)
    pm.save_pretrained(tmp_path / "pm")
    loaded = PairwisePreferenceModel.from_pretrained(tmp_path / "pm")
    assert loaded.backbone_kind == "encoder" and loaded.pooling == "cls" and loaded.max_length == 512
    torch.testing.assert_close(
        loaded.prob(PROMPTS, FIRST, SECOND), pm.prob(PROMPTS, FIRST, SECOND), atol=0, rtol=0
    )


def _train_a_bit(pm: PairwisePreferenceModel, steps: int = 3) -> None:
    params = [p for p in pm.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-2)
    enc = pm.encode(PROMPTS, FIRST, SECOND)
    for _ in range(steps):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            pm(enc["input_ids"], enc["attention_mask"]), torch.ones(3)
        )
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_lora_round_trip_unmerged_and_merged(tmp_path, tiny_lm, tiny_tok):
    lora = LoraSettings(r=4, lora_alpha=8.0, target_modules=("q_proj", "v_proj"))
    pm = PairwisePreferenceModel(tiny_lm, tiny_tok, lora=lora)
    trainable = {n for n, p in pm.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    _train_a_bit(pm)
    pm.eval()
    expected = pm.prob(PROMPTS, FIRST, SECOND)

    pm.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter" / "adapter_config.json").is_file()
    loaded = PairwisePreferenceModel.from_pretrained(tmp_path / "adapter")
    assert loaded.lora == lora
    torch.testing.assert_close(loaded.prob(PROMPTS, FIRST, SECOND), expected, atol=0, rtol=0)
    assert any(p.requires_grad for n, p in loaded.named_parameters() if "lora_" in n)  # still trainable

    pm.save_pretrained(tmp_path / "merged", merge_lora=True)
    merged = PairwisePreferenceModel.from_pretrained(tmp_path / "merged")
    assert merged.lora is None and not (tmp_path / "merged" / "adapter").exists()
    torch.testing.assert_close(merged.prob(PROMPTS, FIRST, SECOND), expected, atol=1e-5, rtol=0)


def test_minilm_backbone_symmetry():
    """The real embedded MiniLM encoder with a fresh head: symmetric, segments pooling, 512 tokens."""
    pm = PairwisePreferenceModel.from_backbone("minilm")
    assert pm.backbone_kind == "encoder" and pm.pooling == "segments" and pm.max_length == 512
    assert pm.hidden_size == 384 and pm.head.weight.shape == (1, 768)
    p_ab = pm.prob(PROMPTS[:2], FIRST[:2], SECOND[:2])
    p_ba = pm.prob(PROMPTS[:2], SECOND[:2], FIRST[:2])
    torch.testing.assert_close(p_ab + p_ba, torch.ones(2), atol=1e-6, rtol=0)
    assert math.isclose(float(pm.prob(["x"], ["same"], ["same"])[0]), 0.5, abs_tol=1e-6)
