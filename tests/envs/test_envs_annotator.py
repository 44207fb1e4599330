"""Annotators: Bernoulli(P*) labels, seeded, as PreferenceExample pairs."""

import numpy as np
import pytest
import torch

from nlhf.data.schema import PreferenceExample
from nlhf.envs import Annotator, default_rater_population
from nlhf.judges import CallableJudge

Q = "What is the capital of France?"
STRUCTURED, PERSONAL, DIRECT, UNFOCUSED = (
    "Here it is:\n- Paris",
    "I can tell you! Paris.",
    "The capital of France is Paris.",
    "Cities are big places.",
)


def test_label_frequency_matches_p_star():
    """8,000 labels per pair type; the frequency is within 4 standard errors of P* (0.021 at 0.65).

    P*(structured > direct) = 0.65, P*(personal > structured) = 0.65,
    P*(unfocused > direct) = 0.05 (default population, see test_envs_oracles).
    """
    ann = Annotator(default_rater_population(), seed=0)
    n = 8_000
    for first, second, p in [
        (STRUCTURED, DIRECT, 0.65),
        (PERSONAL, STRUCTURED, 0.65),
        (UNFOCUSED, DIRECT, 0.05),
    ]:
        labels, p_star = ann.labels([Q] * n, [first] * n, [second] * n)
        assert labels.shape == (n,) and set(labels.unique().tolist()) <= {0.0, 1.0}
        torch.testing.assert_close(p_star, torch.full((n,), p))
        se = np.sqrt(p * (1 - p) / n)
        assert abs(labels.mean().item() - p) < 4 * se


def test_labels_are_seeded_and_stream_on():
    judge = CallableJudge(lambda x, a, b: 0.5)
    a1, _ = Annotator(judge, seed=3).labels(["q"] * 64, ["a"] * 64, ["b"] * 64)
    ann = Annotator(judge, seed=3)
    a2, _ = ann.labels(["q"] * 64, ["a"] * 64, ["b"] * 64)
    a3, _ = ann.labels(["q"] * 64, ["a"] * 64, ["b"] * 64)
    b1, _ = Annotator(judge, seed=4).labels(["q"] * 64, ["a"] * 64, ["b"] * 64)
    assert torch.equal(a1, a2)
    assert not torch.equal(a2, a3)  # the second call continues the stream
    assert not torch.equal(a1, b1)
    state = torch.get_rng_state()
    Annotator(judge, seed=5).labels(["q"] * 8, ["a"] * 8, ["b"] * 8)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is untouched


def test_annotate_puts_the_winner_first_and_records_p_star():
    ann = Annotator(CallableJudge(lambda x, a, b: 1.0 if a == "good" else 0.0), seed=0)
    out = ann.annotate(["q", "q"], ["good", "bad"], ["bad", "good"], source="run1")
    assert all(isinstance(e, PreferenceExample) for e in out)
    assert [(e.first, e.second, e.label) for e in out] == [("good", "bad", 1.0), ("good", "bad", 1.0)]
    assert [e.metadata["swapped"] for e in out] == [False, True]
    assert [e.metadata["p_star"] for e in out] == [1.0, 1.0]
    assert [e.source for e in out] == ["run1:0", "run1:1"]
    kept = Annotator(ann.judge, seed=0, chosen_first=False).annotate(["q"], ["bad"], ["good"])
    assert (kept[0].first, kept[0].label, kept[0].metadata["p_star"]) == ("bad", 0.0, 0.0)


def test_pairs_from_samples_pairs_disjoint_samples():
    env = default_rater_population()
    ann = Annotator(env, seed=1)
    samples = [[STRUCTURED, DIRECT, PERSONAL], [UNFOCUSED, DIRECT, STRUCTURED, PERSONAL]]
    out = ann.pairs_from_samples([Q, Q], samples)
    assert len(out) == 3  # (0,1) of prompt 0 (the odd third dropped), (0,1) and (2,3) of prompt 1
    for e in out:
        m = e.metadata
        ys = samples[m["prompt_index"]]
        assert {e.first, e.second} == {ys[m["first_index"]], ys[m["second_index"]]}
        assert e.first == ys[m["first_index"]]  # indices follow a swap
        assert m["p_star"] == pytest.approx(env.prob([Q], [e.first], [e.second]).item())
    with pytest.raises(TypeError, match=r"responses\[0\] is a string"):
        ann.pairs_from_samples([Q], ["just one string"])
    with pytest.raises(ValueError, match="2 prompts but 1 lists"):
        ann.pairs_from_samples([Q, Q], [[STRUCTURED, DIRECT]])
