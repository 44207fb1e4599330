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
