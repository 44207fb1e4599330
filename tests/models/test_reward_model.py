"""RewardModel: P = sigmoid(r(x, y) - r(x, y')), one forward for both responses, save/load."""

from __future__ import annotations

import json

import pytest
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
    torch.testing.assert_close(
        rm.prob(PROMPTS, FIRST, SECOND), torch.sigmoid(r_first - r_second), atol=1e-6, rtol=0
    )
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


def test_generic_loader_in_a_fresh_process(tmp_path, tiny_bert):
    """``nlhf.models.load_scorer`` finds the saved kind in a fresh process (the base class ``SequenceScorer``
    does not import its subclasses, so no import circle: ``nlhf.models.saved`` imports both)."""
    import subprocess
    import sys

    bert, tok = tiny_bert
    _rm(bert, tok).save_pretrained(tmp_path / "rm")
    code = (
        "import sys; from nlhf.models import load_scorer; "
        f"m = load_scorer({str(tmp_path / 'rm')!r}); print(type(m).__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "RewardModel"


def test_save_with_a_gathered_state_dict(tmp_path, tiny_bert):
    """``save_pretrained(state_dict=...)`` (FSDP: weights gathered by accelerate) writes exactly those weights."""
    bert, tok = tiny_bert
    rm = _rm(bert, tok)
    state = {k: v.clone() + (1.0 if k.startswith("head.") else 0.0) for k, v in rm.state_dict().items()}
    rm.save_pretrained(tmp_path / "gathered", state_dict=state)
    loaded = SequenceScorer.from_pretrained(tmp_path / "gathered")
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, state[key], atol=0, rtol=0)
    with pytest.raises(ValueError, match="unexpected key 'extra.w'"):
        rm.save_pretrained(tmp_path / "bad", state_dict={**state, "extra.w": torch.zeros(1)})
