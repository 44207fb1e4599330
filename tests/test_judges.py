"""The Judge interface: adapters, symmetrisation by hand, and validation of what judges return."""

from __future__ import annotations

import math

import pytest
import torch

from nlhf.judges import (
    CallableJudge,
    Judge,
    PreferenceModelJudge,
    RewardModelJudge,
    SymmetrizedJudge,
    check_probabilities,
)

PROMPTS = ["p1", "p2", "p3"]
FIRST = ["long answer", "x", "same"]
SECOND = ["short", "longer one", "same"]


def longer_wins(prompt, first, second):
    """A deliberately asymmetric judge: 0.9 if first is longer, else 0.3 (so J(a, a) = 0.3)."""
    return 0.9 if len(first) > len(second) else 0.3


def test_callable_judge_per_example_and_batched():
    judge = CallableJudge(longer_wins)
    assert isinstance(judge, Judge)
    p = judge.prob(PROMPTS, FIRST, SECOND)
    assert p.dtype == torch.float32 and p.tolist() == pytest.approx([0.9, 0.3, 0.3])
    batched = CallableJudge(lambda ps, fs, ss: torch.tensor([0.25] * len(ps)), batched=True, name="quarter")
    assert batched.prob(PROMPTS, FIRST, SECOND).tolist() == [0.25, 0.25, 0.25]
    assert batched.prob([], [], []).shape == (0,)


def test_symmetrized_judge_by_hand():
    """J = longer_wins. Row 0: J(a,b) = 0.9, J(b,a) = 0.3 -> (0.9 + 1 - 0.3)/2 = 0.8.
    Row 1: J(a,b) = 0.3, J(b,a) = 0.9 -> (0.3 + 1 - 0.9)/2 = 0.2. Row 2 (a = b): (0.3 + 1 - 0.3)/2 = 0.5."""
    calls = []

    def batched(ps, fs, ss):
        calls.append(len(ps))
        return [longer_wins(p, f, s) for p, f, s in zip(ps, fs, ss)]

    sym = SymmetrizedJudge(CallableJudge(batched, batched=True))
    p_ab = sym.prob(PROMPTS, FIRST, SECOND)
    torch.testing.assert_close(p_ab, torch.tensor([0.8, 0.2, 0.5]), atol=1e-7, rtol=0)
    assert calls == [6]  # both orders in one call of 2B rows
    p_ba = sym.prob(PROMPTS, SECOND, FIRST)
    torch.testing.assert_close(p_ab + p_ba, torch.ones(3), atol=1e-7, rtol=0)
    assert "Symmetrized(" in sym.name


@pytest.mark.parametrize(("value", "shown"), [(1.5, "1.5"), (-0.01, "-0.01"), (float("nan"), "nan")])
def test_out_of_range_or_nan_is_an_error_naming_judge_and_value(value, shown):
    def bad(prompt, first, second):
        return value if prompt == "p2" else 0.5

    with pytest.raises(ValueError, match=rf"judge my_bad_judge returned {shown}.* at row 1"):
        CallableJudge(bad, name="my_bad_judge").prob(PROMPTS, FIRST, SECOND)
    # a symmetrised judge checks its inner judge too (the bad value would otherwise be averaged away)
    with pytest.raises(ValueError, match="my_bad_judge"):
        SymmetrizedJudge(CallableJudge(bad, name="my_bad_judge")).prob(PROMPTS, FIRST, SECOND)


def test_shape_type_and_batch_errors():
    with pytest.raises(ValueError, match=r"shape \(2,\); expected \(3,\)"):
        CallableJudge(lambda ps, fs, ss: [0.5, 0.5], batched=True, name="short").prob(PROMPTS, FIRST, SECOND)
    with pytest.raises(ValueError, match="returned 'yes' at row 0"):
        CallableJudge(lambda p, a, b: "yes", name="words").prob(PROMPTS, FIRST, SECOND)
    with pytest.raises(ValueError, match="different lengths"):
        CallableJudge(longer_wins).prob(PROMPTS, FIRST, SECOND[:2])
    with pytest.raises(ValueError, match="dtype torch.bool"):
        check_probabilities(torch.tensor([True, False]), "boolean")
    assert check_probabilities([0, 1], "ints").tolist() == [0.0, 1.0]


def test_model_judges_match_the_models():
    from nlhf.models import PairwisePreferenceModel, RewardModel
    from nlhf.models.tiny import tiny_causal_lm, tiny_tokenizer

    torch.manual_seed(0)
    tok = tiny_tokenizer()
    pm = PairwisePreferenceModel(tiny_causal_lm(tokenizer=tok, seed=1), tok)
    rm = RewardModel(tiny_causal_lm(tokenizer=tok, seed=2), tok)
    pm_judge, rm_judge = PreferenceModelJudge(pm, batch_size=2), RewardModelJudge(rm, batch_size=2)
    assert isinstance(pm_judge, Judge) and isinstance(rm_judge, Judge)
    # (batches of 2 vs the model's default 16: different padding, float noise only)
    torch.testing.assert_close(
        pm_judge.prob(PROMPTS, FIRST, SECOND), pm.prob(PROMPTS, FIRST, SECOND), atol=1e-6, rtol=0
    )
    r1, r2 = rm.reward(PROMPTS, FIRST), rm.reward(PROMPTS, SECOND)
    torch.testing.assert_close(
        rm_judge.prob(PROMPTS, FIRST, SECOND), torch.sigmoid(r1 - r2), atol=1e-6, rtol=0
    )
    # the preference model is already symmetric: symmetrising it changes nothing
    torch.testing.assert_close(
        SymmetrizedJudge(pm_judge).prob(PROMPTS, FIRST, SECOND),
        pm_judge.prob(PROMPTS, FIRST, SECOND),
        atol=1e-6,
        rtol=0,
    )
    assert math.isclose(float(pm_judge.prob(["p"], ["same"], ["same"])[0]), 0.5, abs_tol=1e-6)
