"""The environments' oracles: the rater population's cycle, symmetry of P*, the BT control."""

import itertools

import numpy as np
import pytest
import torch

from nlhf.envs import (
    CLASSES,
    BradleyTerryEnv,
    RaterPopulation,
    RaterType,
    default_bradley_terry,
    default_rater_population,
    environment_summary,
    fit_bradley_terry,
    majority_cycles,
    population_game,
)
from nlhf.envs.analysis import rlhf_at_kl
from nlhf.judges import Judge
from nlhf.lab import PreferenceGame, bradley_terry, exploitability, kl, nash_equilibrium, rater_population

Q = "What is the capital of France?"
# One response of each class for Q, in the order of CLASSES.
EXAMPLES = (
    "Here it is:\n- Paris",  # structured
    "I can tell you! Paris.",  # personal
    "The capital of France is Paris.",  # direct
    "Cities are big places.",  # unfocused
)


def test_examples_have_the_intended_classes():
    env = default_rater_population()
    assert env.classify([Q] * 4, list(EXAMPLES)).tolist() == [0, 1, 2, 3]
    assert env.classes == CLASSES == ("structured", "personal", "direct", "unfocused")


def test_default_population_matrix_by_hand():
    """Weights 0.3 skimmer, 0.3 expert, 0.3 casual, 0.1 noise (all tied).

    structured vs personal: skimmer only ranks structured higher -> 0.3 + 0.1/2 = 0.35.
    structured vs direct:   skimmer and casual -> 0.6 + 0.05 = 0.65.
    personal vs direct:     casual only -> 0.35.     anything vs unfocused: 0.9 + 0.05 = 0.95.
    """
    expected = np.array(
        [
            [0.50, 0.35, 0.65, 0.95],
            [0.65, 0.50, 0.35, 0.95],
            [0.35, 0.65, 0.50, 0.95],
            [0.05, 0.05, 0.05, 0.50],
        ]
    )
    np.testing.assert_allclose(default_rater_population().P, expected, atol=1e-12)


def test_default_population_has_a_condorcet_cycle_and_a_mixed_nash():
    env = default_rater_population()
    assert env.condorcet_cycles() == [("structured", "direct", "personal")]
    maj = env.majority()
    assert maj[0, 2] and maj[2, 1] and maj[1, 0]  # structured > direct > personal > structured
    assert maj[:3, 3].all() and not maj[3].any()  # everyone beats unfocused
    # no ranking agrees with the majority on every pair (so no scalar reward reproduces it)
    agree = [
        all(maj[i, j] == (p.index(i) < p.index(j)) for i in range(4) for j in range(4) if i != j)
        for p in itertools.permutations(range(4))
    ]
    assert not any(agree)
    np.testing.assert_allclose(nash_equilibrium(env.game), [1 / 3, 1 / 3, 1 / 3, 0.0], atol=1e-9)
    # each rater type alone is transitive (no cycle in its own preference)
    for k in range(len(env.raters)):
        assert majority_cycles(PreferenceGame(env.rater_preference(k))) == []
    assert [r.is_strict for r in env.raters] == [True, True, True, False]  # noise ties everything


def test_strict_rankings_match_lab_rater_population_and_ties_split():
    raters = [RaterType("a", ("x", "y", "z"), 2.0), RaterType("b", ("y", "z", "x"), 1.0)]
    got = population_game(raters, ("x", "y", "z")).P
    np.testing.assert_allclose(got, rater_population([(0, 1, 2), (1, 2, 0)], [2.0, 1.0]).P)
    # one rater ties y and z: P(y > z) = 1/2 from it; x above both
    tied = population_game([RaterType("t", ("x", ("y", "z")), 1.0)], ("x", "y", "z")).P
    np.testing.assert_allclose(tied, [[0.5, 1.0, 1.0], [0.0, 0.5, 0.5], [0.0, 0.5, 0.5]])
    # half strict (y > z), half tied: P(y > z) = 0.5 * 1 + 0.5 * 0.5 = 0.75
    mixed = population_game(
        [RaterType("s", ("x", "y", "z"), 1.0), RaterType("t", ("x", ("y", "z")), 1.0)], ("x", "y", "z")
    ).P
    assert mixed[1, 2] == pytest.approx(0.75) and mixed[2, 1] == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("raters", "match"),
    [
        ([RaterType("a", ("x", "y"), 1.0)], r"leaves out \['z'\]"),
        ([RaterType("a", ("x", "y", "w"), 1.0)], "unknown class 'w'"),
        ([RaterType("a", ("x", ("y", "x"), "z"), 1.0)], "appears twice"),
        ([RaterType("a", ("x", "y", "z"), -1.0)], "weight -1.0"),
        ([], "at least one rater"),
    ],
)
def test_bad_rater_types_are_named(raters, match):
    with pytest.raises(ValueError, match=match):
        population_game(raters, ("x", "y", "z"))


@pytest.mark.parametrize("env", [default_rater_population(), default_bradley_terry()], ids=lambda e: e.name)
def test_oracle_is_a_symmetric_judge(env):
    """P(a, b) + P(b, a) = 1 on every pair of responses, P(a, a) = 1/2, values = game.P[class, class]."""
    assert isinstance(env, Judge)
    firsts, seconds = zip(*itertools.product(EXAMPLES, repeat=2))
    prompts = [Q] * len(firsts)
    p_ab = env.prob(prompts, list(firsts), list(seconds))
    p_ba = env.prob(prompts, list(seconds), list(firsts))
    assert p_ab.dtype == torch.float32 and p_ab.shape == (16,)
    torch.testing.assert_close(p_ab + p_ba, torch.ones(16))
    torch.testing.assert_close(p_ab, torch.tensor(env.P, dtype=torch.float32).reshape(-1))
    same = env.prob([Q] * 4, list(EXAMPLES), list(EXAMPLES))
    torch.testing.assert_close(same, torch.full((4,), 0.5))
    # two different texts of the same class tie
    assert env.prob([Q], ["Paris is the capital of France."], ["France's capital: Paris."]).item() == 0.5


def test_bradley_terry_control_is_transitive():
    env = default_bradley_terry()
    np.testing.assert_allclose(env.P, bradley_terry([0.5, 0.0, 1.0, -1.5]).P)
    P = env.P
    for i, j, k in itertools.permutations(range(4), 3):
        if P[i, j] > 0.5 and P[j, k] > 0.5:
            assert P[i, k] > max(P[i, j], P[j, k])  # strictly stronger along a chain
    assert majority_cycles(env.game) == []
    np.testing.assert_allclose(nash_equilibrium(env.game), [0, 0, 1, 0], atol=1e-9)  # pure direct
    assert P[2, 0] == pytest.approx(1 / (1 + np.exp(-0.5)))
    with pytest.raises(ValueError, match=r"missing \['unfocused'\]"):
        BradleyTerryEnv({"structured": 0.0, "personal": 0.0, "direct": 0.0})


def test_exploitability_of_responses_is_lab_exploitability_of_their_classes():
    env = default_rater_population()
    responses = [EXAMPLES[0]] * 3 + [EXAMPLES[3]]  # 3/4 structured, 1/4 unfocused
    np.testing.assert_allclose(env.class_distribution([Q] * 4, responses), [0.75, 0, 0, 0.25])
    # best reply: personal, P(personal > pi) = 0.75 * 0.65 + 0.25 * 0.95 = 0.725
    assert env.exploitability([Q] * 4, responses) == pytest.approx(0.725 - 0.5)
    assert env.exploitability([Q] * 4, responses) == pytest.approx(
        exploitability(env.game, [0.75, 0, 0, 0.25])
    )


def test_custom_classifier_is_checked():
    env = RaterPopulation([RaterType("a", ("x", "y"), 1.0)], ("x", "y"), classifier=lambda p, r: [5] * len(r))
    with pytest.raises(ValueError, match="classifier returned class 5 at row 0"):
        env.prob(["q"], ["a"], ["b"])


# ----------------------------------------------------------------------------------------
# Exact analysis


def test_bradley_terry_fit_recovers_a_bt_game_and_solves_the_symmetric_cycle():
    scores = np.array([0.3, -1.0, 2.0, 0.0])
    nu = np.array([0.1, 0.2, 0.3, 0.4])
    r = fit_bradley_terry(bradley_terry(scores), nu)
    np.testing.assert_allclose(r, scores - nu @ scores, atol=1e-10)
    # Default population, uniform data: the three cycle classes tie by symmetry, and
    # unfocused sits logit(0.05) = -log 19 below them (its only non-zero score equation).
    r = fit_bradley_terry(default_rater_population().game, np.full(4, 0.25))
    np.testing.assert_allclose(r[:3], r[0], atol=1e-10)
    assert r[0] - r[3] == pytest.approx(np.log(19.0), abs=1e-10)
    with pytest.raises(ValueError, match="no finite Bradley-Terry fit"):
        fit_bradley_terry(rater_population([(0, 1, 2)]), np.full(3, 1 / 3))


def test_rlhf_at_kl_hits_the_target():
    r, mu = np.array([1.0, 0.0, -1.0]), np.array([0.2, 0.3, 0.5])
    pi = rlhf_at_kl(r, mu, 0.5)
    assert kl(pi, mu) == pytest.approx(0.5, abs=1e-8)
    assert rlhf_at_kl(r, mu, -np.log(0.2)) is None  # the pure argmax is the limit


def test_environment_summary_on_a_reference_like_smollm2():
    """mu = the measured mix (structured .23, personal .12, direct .27, unfocused .38):
    the fitted reward puts structured on top, so RLHF collapses there as tau -> 0, with
    exploitability -> P(personal > structured) - 1/2 = 0.15; pi*_tau stays mixed."""
    mu = np.array([0.23, 0.12, 0.27, 0.38])
    s = environment_summary(default_rater_population().game, mu, taus=(0.01, 0.1))
    assert s["rlhf_top_class"] == "structured"
    np.testing.assert_allclose(s["nash"]["pi"], [1 / 3, 1 / 3, 1 / 3, 0], atol=1e-9)
    assert s["nash"]["exploitability"] == pytest.approx(0.0, abs=1e-9)
    # against mu the Nash wins 1/2 on the cycle part and 0.95 on unfocused: 0.62 * 0.5 + 0.38 * 0.95
    assert s["nash"]["win_rate_vs_ref"] == pytest.approx(0.62 * 0.5 + 0.38 * 0.95)
    low = s["by_tau"][0]
    assert low["rlhf"]["exploitability"] == pytest.approx(0.15, abs=1e-3)
    assert low["nash_tau"]["exploitability"] < 0.01
    assert low["nash_tau"]["regularized_exploitability"] == pytest.approx(0.0, abs=1e-12)
    matched = low["rlhf_same_kl_as_nash_tau"]
    assert matched["kl_to_ref"] == pytest.approx(low["nash_tau"]["kl_to_ref"], abs=1e-6)
