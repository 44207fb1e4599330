"""The demo's sampling-distribution section (issue 15, nlhf.demo.sampling_dependence): resampling, class readings."""

import numpy as np
import pytest

from nlhf.demo.sampling_dependence import SAMPLING_MIXES, answers, class_readings, resampled_pairs
from nlhf.envs import default_rater_population
from nlhf.lab.sampling_dependence import sampling_point

TEXTS = {
    "structured": "1. Light\n2. Water {k}",
    "personal": "I love this question {k}!",
    "direct": "Photosynthesis makes sugar {k}.",
    "unfocused": "The morning can be a transformative time {k}.",
}


def _records():
    """40 prompts, each with two responses of every class (texts distinct; classes checked by the classifier)."""
    env = default_rater_population()
    records = [{"id": f"p{g}", "prompt": "What is photosynthesis?", "response": TEXTS[c].format(k=f"{g}-{k}"),
                "class": c} for g in range(40) for c in env.classes for k in range(2)]  # fmt: skip
    found = env.classify([r["prompt"] for r in records], [r["response"] for r in records])
    assert [env.classes[i] for i in found] == [r["class"] for r in records]
    return env, records


def test_resampled_pairs_follow_the_sampling_distribution_and_carry_oracle_labels():
    """Every prompt holds the four classes equally, so the first response of a pair is drawn with probabilities
    exactly nu: over 3,000 pairs the shares are within 0.03 of nu (4 standard errors: 0.036 at nu = 0.4).
    Labels are means of Bernoulli(P*) votes: the oracle's P* of the two classes, within 4 sd over the pairs of
    one class pair."""
    env, records = _records()
    nu = SAMPLING_MIXES["A"]
    pairs = resampled_pairs(env, records, nu, 3000, raters=4, seed=0)
    assert len(pairs) == 3000
    first = np.array([env.classes.index(p.metadata["first_class"]) for p in pairs])
    np.testing.assert_allclose(np.bincount(first, minlength=4) / 3000, nu, atol=0.03)
    assert all(p.first != p.second and p.metadata["prompt_id"].startswith("p") for p in pairs)
    found = env.classify([p.prompt for p in pairs[:50]], [p.first for p in pairs[:50]])
    assert [env.classes[i] for i in found] == [p.metadata["first_class"] for p in pairs[:50]]
    sd = [
        p
        for p in pairs
        if (p.metadata["first_class"], p.metadata["second_class"]) == ("structured", "direct")
    ]
    labels = np.array([p.label for p in sd])
    assert abs(labels.mean() - env.P[0, 2]) < 4 * np.sqrt(0.65 * 0.35 / (4 * len(sd)))
    # the same seed gives the same pairs; another seed others
    again = resampled_pairs(env, records, nu, 20, raters=4, seed=0)
    assert [p.first for p in again] == [p.first for p in pairs[:20]]
    assert [p.first for p in resampled_pairs(env, records, nu, 20, raters=4, seed=1)] != [
        p.first for p in again
    ]


def test_the_two_mixes_give_different_rlhf_answers_and_the_same_nash_in_the_population():
    """The module's mixes are chosen so that, on the demo's P*, the Bradley-Terry fits pick different classes while
    the preference model's Nash equilibrium does not move (nlhf.lab.sampling_dependence, exactly)."""
    env = default_rater_population()
    a, b = (sampling_point(env.P, SAMPLING_MIXES[k], tau=0.05, names=env.classes) for k in ("A", "B"))
    assert a["top_class"] != b["top_class"]
    np.testing.assert_allclose(a["nash"], b["nash"], atol=1e-9)


def test_answers_symmetrise_and_fill_uncompared_classes():
    """Two prompts, K = 2: P_hat(0 > 1) read as 0.8 on 3 pairs and P_hat(1 > 0) as 0.3 on 1 pair: the symmetrised
    entry is (0.8 + 1 - 0.3) / 2 = 0.75. Rewards (1.0, 0.0) give the RLHF optimum mu exp(r / tau) / Z."""
    p_sum = np.zeros((2, 2, 2))
    count = np.zeros((2, 2, 2))
    p_sum[0, 0, 1], count[0, 0, 1] = 2.4, 3
    p_sum[1, 1, 0], count[1, 1, 0] = 0.3, 1
    r_sum = np.array([[1.0, 0.0], [0.0, 0.0]])
    r_count = np.array([[1.0, 1.0], [0.0, 1.0]])
    mu = np.array([0.5, 0.5])
    out = answers(
        {"p_sum": p_sum, "count": count, "r_sum": r_sum, "r_count": r_count}, np.arange(2), mu, 0.1, 0.5
    )
    assert out["P"][0, 1] == pytest.approx(0.75) and out["P"][1, 0] == pytest.approx(0.25)
    np.testing.assert_allclose(out["reward"], [1.0, 0.0])
    w = np.exp(np.array([1.0, 0.0]) / 0.5)
    np.testing.assert_allclose(out["rlhf"], w / w.sum())
    assert out["nash_tau"][0] > 0.5  # class 0 beats class 1


class TextRewardJudge:
    """A reward per response TEXT (seeded by the text's characters), P = sigmoid(r - r'); counts its prob() calls."""

    def __init__(self):
        self.prob_calls = 0

    def reward(self, prompts, responses):
        return np.array([np.random.default_rng(list(map(ord, y))).normal() for y in responses])

    def prob(self, prompts, first, second):
        self.prob_calls += 1
        return 1.0 / (1.0 + np.exp(-(self.reward(prompts, first) - self.reward(prompts, second))))


class ProbOnly:
    """The same judge seen through prob() alone (no reward attribute)."""

    def __init__(self, judge):
        self._judge = judge

    def prob(self, prompts, first, second):
        return self._judge.prob(prompts, first, second)


def test_class_readings_of_a_reward_judge_come_from_its_rewards_and_match_the_pairwise_reading():
    """The reward path (N rewards, no prob() call) gives the pairwise path's p_sum and count on prompts with
    different numbers of responses, and r_sum / r_count are the brute-force per-prompt class sums."""
    env, records = _records()
    records = [r for k, r in enumerate(records) if k % 7 != 3]  # uneven prompts
    judge = TextRewardJudge()
    by_reward = class_readings(judge, env, records)
    by_prob = class_readings(ProbOnly(judge), env, records)
    assert judge.prob_calls == 1  # only the ProbOnly reading called prob()
    np.testing.assert_allclose(by_reward["p_sum"], by_prob["p_sum"], atol=1e-12)
    np.testing.assert_array_equal(by_reward["count"], by_prob["count"])
    assert "r_sum" not in by_prob
    prompts = sorted({r["id"] for r in records})
    index = {c: k for k, c in enumerate(env.classes)}
    for g, pid in enumerate(prompts):
        rows = [r for r in records if r["id"] == pid]
        n = len(rows)
        assert by_reward["count"][g].sum() == n * (n - 1)
        for c in env.classes:
            mine = [r for r in rows if r["class"] == c]
            assert by_reward["r_count"][g, index[c]] == len(mine)
            want = sum(judge.reward(None, [r["response"]])[0] for r in mine)
            np.testing.assert_allclose(by_reward["r_sum"][g, index[c]], want, atol=1e-12)
