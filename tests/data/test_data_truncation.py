"""The truncation rule: both responses always fit, the prompt gives way first, from the left."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nlhf.data import keep_first, keep_last, segment_budgets, water_fill


def test_keep_last_and_first():
    assert keep_last([1, 2, 3, 4], 2) == [3, 4]
    assert keep_last([1, 2], 5) == [1, 2]
    assert keep_last([1, 2], 0) == []
    assert keep_first([1, 2, 3, 4], 2) == [1, 2]


def test_water_fill_worked_examples():
    """Budget 10 over lengths (3, 20): the short one is whole (3), the long one gets the
    other 7. Budget 9 over (20, 20): level 4, the leftover token cannot go to both equally
    long segments, so it is unused -> (4, 4). Budget 9 over (20, 30): level 4, leftover to
    the longer -> (4, 5).
    Budget 12 over (2, 8, 8): 2 whole, then 10 split 5/5."""
    assert water_fill([3, 20], 10) == [3, 7]
    assert water_fill([20, 20], 9) == [4, 4]
    assert water_fill([20, 30], 9) == [4, 5]
    assert water_fill([30, 20], 9) == [5, 4]
    assert water_fill([2, 8, 8], 12) == [2, 5, 5]
    assert water_fill([4, 5], 100) == [4, 5]
    assert water_fill([7, 7], 0) == [0, 0]


def test_segment_budgets_worked_examples():
    """max_tokens 100, min_prompt 20.
    (a) prompt 300, responses 30 and 40: responses whole (70), prompt keeps 30 (cut 270).
    (b) prompt 300, responses 60 and 90: the prompt floor 20 leaves 80 -> water-fill (40, 40).
    (c) prompt 10 (below the floor), responses 60 and 90: 90 left -> (45, 45), prompt whole.
    (d) max_response_tokens 25 caps each response first: prompt gets 100 - 50 = 50."""
    assert segment_budgets(300, [30, 40], 100, min_prompt_tokens=20) == (30, [30, 40])
    assert segment_budgets(300, [60, 90], 100, min_prompt_tokens=20) == (20, [40, 40])
    assert segment_budgets(10, [60, 90], 100, min_prompt_tokens=20) == (10, [45, 45])
    assert segment_budgets(300, [60, 90], 100, min_prompt_tokens=20, max_response_tokens=25) == (50, [25, 25])
    assert segment_budgets(5, [3, 4], 100) == (5, [3, 4])


def test_segment_budgets_too_small():
    with pytest.raises(ValueError, match="cannot hold 20 prompt tokens"):
        segment_budgets(50, [10, 10], 21, min_prompt_tokens=20)


@settings(max_examples=300, deadline=None)
@given(
    prompt_len=st.integers(0, 400),
    responses=st.lists(st.integers(0, 300), min_size=1, max_size=2),
    max_tokens=st.integers(0, 600),
    min_prompt=st.integers(0, 100),
    max_resp=st.one_of(st.none(), st.integers(1, 200)),
)
def test_segment_budgets_properties(prompt_len, responses, max_tokens, min_prompt, max_resp):
    floor = min(prompt_len, min_prompt)
    if max_tokens < floor + len(responses):
        with pytest.raises(ValueError):
            segment_budgets(
                prompt_len, responses, max_tokens, min_prompt_tokens=min_prompt, max_response_tokens=max_resp
            )
        return
    p, keeps = segment_budgets(
        prompt_len, responses, max_tokens, min_prompt_tokens=min_prompt, max_response_tokens=max_resp
    )
    caps = [r if max_resp is None else min(r, max_resp) for r in responses]
    assert p + sum(keeps) <= max_tokens  # everything fits
    assert floor <= p <= prompt_len  # the prompt keeps at least its floor
    assert all(0 <= k <= c for k, c in zip(keeps, caps))
    if sum(caps) + floor <= max_tokens:
        assert keeps == caps  # responses whole (up to their caps) whenever they can be
    if p < prompt_len:
        # the prompt was cut only because the budget is full (up to one unused leftover token)
        assert p + sum(keeps) >= max_tokens - (len(responses) - 1)
    for i, k in enumerate(keeps):
        if k < caps[i]:
            # a cut response got at least as much as any other response (minus one leftover token),
            # so a long response cannot starve the other, and the prompt sits at its floor (plus
            # the leftover token that equally long responses could not share)
            assert all(k >= other - 1 for other in keeps)
            assert floor <= p <= floor + len(responses) - 1
    # both orders of a pair get the same tokens of each response
    if len(responses) == 2:
        p2, keeps2 = segment_budgets(
            prompt_len,
            responses[::-1],
            max_tokens,
            min_prompt_tokens=min_prompt,
            max_response_tokens=max_resp,
        )
        assert (p2, keeps2) == (p, keeps[::-1])
