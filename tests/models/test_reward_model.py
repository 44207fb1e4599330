"""RewardModel: P = sigmoid(r(x, y) - r(x, y')), one forward for both responses, save/load."""

from __future__ import annotations

import json

import torch

from nlhf.models import RewardModel
from nlhf.models.scorer import HEAD_CONFIG, SequenceScorer

PROMPTS = ["Name a fruit.", "What is 2 + 2?"]
FIRST = ["An apple.", "4"]
SECOND = ["Rock, definitely rock.", "Five"]


def _rm(lm, tok) -> RewardModel:
    rm = RewardModel(lm, tok)
    with torch.no_grad():
        g = torch.Generator().manual_seed(3)
        rm.head.weight.copy_(torch.randn(rm.head.weight.shape, generator=g))
    return rm


def test_prob_is_sigmoid_of_reward_difference(tiny_lm, tiny_tok):
    rm = _rm(tiny_lm, tiny_tok)
    r_first = rm.reward(PROMPTS, FIRST)  # (2,)
    r_second = rm.reward(PROMPTS, SECOND)
    assert r_first.shape == (2,) and (r_first - r_second).abs().min() > 1e-4
    torch.testing.assert_close(rm.prob(PROMPTS, FIRST, SECOND), torch.sigmoid(r_first - r_second), atol=1e-6, rtol=0)
    torch.testing.assert_close(
        rm.prob(PROMPTS, FIRST, SECOND) + rm.prob(PROMPTS, SECOND, FIRST), torch.ones(2), atol=1e-6, rtol=0
    )


def test_logit_two_batches_equals_stacked(tiny_lm, tiny_tok):
    rm = _rm(tiny_lm, tiny_tok)
    a = rm.encode(PROMPTS, FIRST)
    b = rm.encode(PROMPTS, SECOND)  # wider than a
    both = rm.encode(PROMPTS + PROMPTS, FIRST + SECOND)
    with torch.no_grad():
        split = rm.logit(a["input_ids"], a["attention_mask"], b["input_ids"], b["attention_mask"])
        stacked = rm.logit(both["input_ids"], both["attention_mask"])
        direct = rm(a["input_ids"], a["attention_mask"]) - rm(b["input_ids"], b["attention_mask"])
    torch.testing.assert_close(split, stacked, atol=1e-5, rtol=0)
    torch.testing.assert_close(split, direct, atol=1e-5, rtol=0)


def test_save_load_round_trip_and_generic_loader(tmp_path, tiny_bert):
    bert, tok = tiny_bert
    rm = _rm(bert, tok)
    rm.save_pretrained(tmp_path / "rm")
    meta = json.loads((tmp_path / "rm" / HEAD_CONFIG).read_text())
    assert meta["kind"] == "reward" and meta["pooling"] == "mean" and meta["backbone_kind"] == "encoder"
    loaded = SequenceScorer.from_pretrained(tmp_path / "rm")  # dispatches on the saved kind
    assert type(loaded) is RewardModel
    torch.testing.assert_close(loaded.reward(PROMPTS, FIRST), rm.reward(PROMPTS, FIRST), atol=0, rtol=0)
