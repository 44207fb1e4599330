"""Where the demo's learned judges lead their trainers (nlhf.demo.judge_targets), on judges with known answers."""

import numpy as np
import pytest
from test_demo_sampling_dependence import _records

from nlhf.config import to_dict
from nlhf.demo.config import DemoConfig
from nlhf.demo.judge_targets import judge_targets, judge_targets_markdown
from nlhf.lab import exploitability, pg_stationary_point
from nlhf.lab.psipo import rlhf_optimum

CFG = DemoConfig(bootstrap=50)


class ClassScoreJudge:
    """A Bradley-Terry judge on the oracle's classes: reward = ``scores[class]``, P = sigmoid(r(a) - r(b))."""

    def __init__(self, env, scores):
        self.env, self.scores = env, np.asarray(scores, dtype=np.float64)

    def reward(self, prompts, responses):
        return self.scores[self.env.classify(list(prompts), list(responses))]

    def prob(self, prompts, first, second):
        return 1.0 / (1.0 + np.exp(-(self.reward(prompts, first) - self.reward(prompts, second))))


def test_the_oracle_as_preference_model_gives_the_oracle_targets_and_a_reward_model_its_rlhf_optimum():
    """With P* itself as the preference model, P_hat = P* on every class pair, the majority cycle is P*'s, and the
    Nash-MD target is the report's oracle target pg_stationary_point(P*, mu, tau, beta) to 1e-4 (the oracle answers in float32); a reward model
    with class rewards r gives mu exp(r / tau) / Z. Every prompt holds the same responses' classes, so each
    bootstrap interval collapses onto its point."""
    env, records = _records()
    mu = np.array([0.1, 0.2, 0.5, 0.2])
    scores = np.array([0.3, -0.2, 0.1, -2.0])
    out = judge_targets(CFG, env, records, mu, env, ClassScoreJudge(env, scores))
    np.testing.assert_allclose(out["P_hat"], env.P, atol=1e-4)
    assert out["cycles"] and set(out["cycles"][0]) == {"structured", "personal", "direct"}
    nash = pg_stationary_point(env.game, mu, CFG.tau, CFG.mixture_coef)
    np.testing.assert_allclose(out["nash_md_target"], nash, atol=1e-4)
    assert out["nash_md_exploitability"] == pytest.approx(exploitability(env.game, nash), abs=1e-6)
    rlhf = rlhf_optimum(scores, mu, CFG.rlhf_tau)
    np.testing.assert_allclose(out["class_rewards"], scores, atol=1e-4)
    np.testing.assert_allclose(out["rlhf_target"], rlhf, atol=1e-4)
    assert out["rlhf_exploitability"] == pytest.approx(exploitability(env.game, rlhf), abs=1e-6)
    for key in ("nash_md_exploitability", "rlhf_exploitability", "difference"):
        assert out[f"{key}_interval"] == pytest.approx([out[key]] * 2, abs=1e-6)
    assert out["difference"] == pytest.approx(out["nash_md_exploitability"] - out["rlhf_exploitability"])
    assert out["difference"] < 0  # on P*, the Nash-MD target is the less exploitable one


def test_a_transitive_preference_model_has_no_cycle_and_a_more_exploitable_target():
    """A Bradley-Terry preference model that ranks direct first (what the demo's MiniLM judge learned): no majority
    cycle, its Nash-MD target puts most mass on direct and is more exploitable under P* than the oracle's."""
    env, records = _records()
    mu = np.array([0.1, 0.2, 0.5, 0.2])
    bt = ClassScoreJudge(env, [0.0, -0.3, 0.5, -1.0])
    out = judge_targets(CFG, env, records, mu, bt, bt)
    assert out["cycles"] == []
    assert int(np.argmax(out["nash_md_target"])) == env.classes.index("direct")
    oracle = exploitability(env.game, pg_stationary_point(env.game, mu, CFG.tau, CFG.mixture_coef))
    assert out["nash_md_exploitability"] > oracle + 0.03
    text = judge_targets_markdown(out, env.classes, CFG.confidence)
    assert "none (transitive majority)" in text and f"{out['nash_md_exploitability']:.3f}" in text


def test_a_judge_without_reward_is_refused_as_the_reward_model():
    env, records = _records()
    with pytest.raises(ValueError, match="no reward"):
        judge_targets(CFG, env, records, np.full(4, 0.25), env, env)
    assert to_dict(CFG)["bootstrap"] == 50


def test_response_level_targets_equal_the_class_level_ones_when_a_judge_sees_only_classes():
    """Responses of one class are copies under a class-only judge, and merging copies (their mu masses summed) leaves
    both optima unchanged: the Nash-MD-PG stationary point on each prompt's 8 x 8 matrix of P* sums, per class, to
    the class-level point on (P*, the prompt's class mix), and softmax(r / tau) over the 8 responses to the class-
    level RLHF optimum. Every prompt holds two responses of each class, so the class mix is uniform."""
    env, records = _records()
    scores = np.array([0.3, -0.2, 0.1, -2.0])
    out = judge_targets(CFG, env, records, np.array([0.1, 0.2, 0.5, 0.2]), env, ClassScoreJudge(env, scores))
    r = out["response_level"]
    uniform = np.full(4, 0.25)
    nash = pg_stationary_point(env.game, uniform, CFG.tau, CFG.mixture_coef)
    np.testing.assert_allclose(r["nash_md_target"], nash, atol=1e-4)
    np.testing.assert_allclose(r["rlhf_target"], rlhf_optimum(scores, uniform, CFG.rlhf_tau), atol=1e-4)
    assert r["nash_md_exploitability"] == pytest.approx(exploitability(env.game, nash), abs=1e-3)
    assert r["difference_interval"] == pytest.approx([r["difference"]] * 2, abs=1e-6)


class SplitClassJudge(ClassScoreJudge):
    """Class scores, except that the two `personal` responses of a prompt score -1.5 and +1.5 (mean 0 < direct's
    0.5): the class means say `direct`, the best single response is `personal`."""

    def reward(self, prompts, responses):
        base = super().reward(prompts, responses)
        personal = self.env.classes.index("personal")
        cls = self.env.classify(list(prompts), list(responses))
        split = np.array([1.5 if y.endswith("-1!") else -1.5 for y in responses])
        return np.where(cls == personal, split, base)


def test_a_reward_that_varies_within_a_class_moves_the_response_level_rlhf_target_and_not_the_class_level_one():
    env, records = _records()
    scores = np.array([0.2, 0.0, 0.5, -2.0])
    rm = SplitClassJudge(env, scores)
    out = judge_targets(CFG, env, records, np.full(4, 0.25), env, rm)
    personal, direct = env.classes.index("personal"), env.classes.index("direct")
    assert int(np.argmax(out["rlhf_target"])) == direct  # class means: personal 0.0 < direct 0.5
    r = out["response_level"]["rlhf_target"]
    one = records[:8]  # every prompt holds the same 8 rewards: the hand-computed softmax over them
    z = np.asarray(rm.reward([x["prompt"] for x in one], [x["response"] for x in one])) / CFG.rlhf_tau
    w = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    cls = env.classify([x["prompt"] for x in one], [x["response"] for x in one])
    np.testing.assert_allclose(r, np.bincount(cls, weights=w, minlength=4), atol=1e-4)
    assert r[personal] > 0.99 and out["rlhf_target"][personal] < 0.01
    text = judge_targets_markdown(out, env.classes, CFG.confidence)
    assert "response level" in text and f"{out['response_level']['rlhf_exploitability']:.3f}" in text
