"""The tournament on tabular and tiny models: win-rate matrix, KL, exploitability, seeding."""

import math

import numpy as np
import pytest
import torch

from nlhf.eval import PolicyEntry, TournamentConfig, run_tournament
from nlhf.eval.tournament import class_exploitability, is_class_judge
from nlhf.judges import CallableJudge
from nlhf.lab import exploitability as lab_exploitability
from nlhf.lab.games import rock_paper_scissors
from nlhf.models.tabular import NEG, tabular_lm, tabular_tokenizer

ACTIONS = ("a", "bb", "ccc")  # response texts of different lengths: "longer wins" is a known order


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def longer_wins(prompt, first, second):
    return 1.0 if len(first) > len(second) else (0.5 if len(first) == len(second) else 0.0)


def tabular_entry(name, logits, tok=None):
    tok = tok or tabular_tokenizer(ACTIONS)
    return PolicyEntry(name, tabular_lm(3, logits=torch.tensor(logits, dtype=torch.float32)), tok)


def pure(k):
    return [0.0 if i == k else NEG for i in range(3)]


# these tests pin the binomial intervals (the default "auto" picks cluster_t for probabilities:
# tests/eval/test_eval_tournament_pairs.py, tests/eval/test_eval_cluster_interval.py)
CFG = TournamentConfig(
    samples_per_prompt=4, max_new_tokens=2, batch_size=16, bootstrap=200, interval="wilson"
)


def test_longer_wins_deterministic_policies_give_the_exact_matrix():
    """Policies that always answer "ccc", "bb", "a"; judge: the longer response wins (1/2 on a tie).

    Expected: row 0 beats everyone with probability 1, row 1 beats row 2; every outcome is
    certain, so wins = n_games = 5 prompts x 4 samples = 20 above the diagonal and 0 below.
    Wilson interval of 20/20: [1 - 0.161125, 1] (test_eval_intervals).
    """
    pols = [tabular_entry("long", pure(2)), tabular_entry("mid", pure(1)), tabular_entry("short", pure(0))]
    judge = CallableJudge(longer_wins, name="longer")
    r = run_tournament(pols, ["x"] * 5, judge, CFG, progress=False)
    expected = np.array([[0.5, 1.0, 1.0], [0.0, 0.5, 1.0], [0.0, 0.0, 0.5]])
    np.testing.assert_array_equal(r.win_rate, expected)
    np.testing.assert_array_equal(r.wins, np.array([[0, 20, 20], [0, 0, 20], [0, 0, 0]]))
    np.testing.assert_array_equal(r.n_games, 20 * (1 - np.eye(3, dtype=int)))
    assert r.win_low[0, 1] == pytest.approx(1 - 0.161125, abs=2e-6) and r.win_high[0, 1] == pytest.approx(1.0)
    assert r.win_low[1, 0] == pytest.approx(0.0, abs=1e-12) and r.win_high[1, 0] == pytest.approx(
        0.161125, abs=2e-6
    )
    assert all(math.isnan(r.win_low[i, i]) for i in range(3))
    assert r.responses == [["ccc"] * 20, ["bb"] * 20, ["a"] * 20]
    np.testing.assert_array_equal(r.mean_length, [2.0, 2.0, 2.0])  # the action and EOS
    np.testing.assert_array_equal(r.truncated, [0.0, 0.0, 0.0])
    # no reference: no KL, exploitability from the pool only: max_j win(j, i) - 1/2
    assert r.exploitability_method == "pool"
    assert np.isnan(r.kl).all()
    np.testing.assert_allclose(r.exploitability, [-0.5, 0.5, 0.5])
    assert r.exploit_details["pool_best_opponent"] == ["mid", "long", "long"]


def test_best_of_n_exploiter_from_the_reference():
    """Reference mu always answers "a" (outside the pool): best-of-4 of mu wins 0 against "ccc" and "bb"
    and 1/2 against "a"; the pool gives -1/2, 1/2, 1/2, so exploitability = max(pool, best-of-n) - 1/2."""
    pols = [tabular_entry("long", pure(2)), tabular_entry("mid", pure(1)), tabular_entry("short", pure(0))]
    mu = tabular_entry("mu", pure(0))
    r = run_tournament(pols, ["x"] * 3, CallableJudge(longer_wins), CFG, reference=mu, progress=False)
    assert r.exploitability_method == "pool_best_of_n"
    np.testing.assert_allclose(r.exploit_details["best_of_n_win_rate"], [0.0, 0.0, 0.5])
    np.testing.assert_allclose(r.exploitability, [-0.5, 0.5, 0.5])
    assert "best-of-4" in " ".join(r.semantics())


def test_kl_matches_exact_enumeration_and_reference_is_zero():
    """Single-token responses: KL(pi || mu) = sum_y pi(y) log(pi(y)/mu(y)) (EOS has probability 1 under both).

    pi = softmax(1, 0, -1) = (0.665241, 0.244728, 0.090031), mu uniform:
    KL = sum pi log pi + log 3 = -0.832396 + 1.098612 = 0.266217.
    The Monte Carlo mean over 400 samples must lie within 3 standard errors of it.
    """
    tok = tabular_tokenizer(ACTIONS)
    mu = tabular_entry("mu", [0.0, 0.0, 0.0], tok)
    pi = tabular_entry("pi", [1.0, 0.0, -1.0], tok)
    p = torch.softmax(torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64), 0)
    exact = float((p * (p.log() + math.log(3))).sum())
    assert exact == pytest.approx(0.266217, abs=1e-6)
    cfg = TournamentConfig(samples_per_prompt=8, max_new_tokens=2, batch_size=64, bootstrap=0)
    r = run_tournament([mu, pi], ["x"] * 50, CallableJudge(longer_wins), cfg, reference=mu, progress=False)
    assert r.kl[0] == 0.0 and r.kl_se[0] == 0.0  # the reference: exactly 0
    assert r.kl_se[1] > 0
    assert abs(r.kl[1] - exact) < 3 * r.kl_se[1]
    # the per-sample estimate is log pi(y) - log mu(y) exactly: its mean equals the empirical mix's average
    counts = np.array([r.responses[1].count(a) for a in ACTIONS]) / 400
    expected_mc = float((counts * (p.log().numpy() + math.log(3))).sum())
    assert r.kl[1] == pytest.approx(expected_mc, abs=1e-5)
    # an entry's own reference takes precedence: pi against itself has KL 0 (up to float rounding)
    own = PolicyEntry("pi-self", pi.model, tok, reference=pi.model)
    r2 = run_tournament([own], ["x"] * 5, CallableJudge(longer_wins), cfg, progress=False)
    assert r2.kl[0] == pytest.approx(0.0, abs=1e-6)


def rps_judge():
    from nlhf.envs import ClassPreferenceJudge

    def classifier(prompts, responses):
        return np.array([ACTIONS.index(y) for y in responses])

    return ClassPreferenceJudge(rock_paper_scissors(), classifier=classifier, name="rps")


def test_class_level_exploitability_matches_the_lab():
    """Rock-paper-scissors over the three actions (a = rock, bb = paper, ccc = scissors).

    A pure policy is exploited by the action that beats it: exploitability 1 - 1/2 = 0.5.
    pi = softmax(log(0.7, 0.2, 0.1)) is exploited by paper: P(paper > pi) = 0.7 + 0.5 * 0.2 = 0.8,
    so about 0.3 on its empirical mix; the reported value is nlhf.lab's on that mix, exactly,
    and the bootstrap interval over prompts contains it.
    """
    judge = rps_judge()
    assert is_class_judge(judge)
    tok = tabular_tokenizer(ACTIONS)
    rock = tabular_entry("rock", pure(0), tok)
    mixed = tabular_entry("mixed", np.log([0.7, 0.2, 0.1]).tolist(), tok)
    cfg = TournamentConfig(samples_per_prompt=4, max_new_tokens=2, batch_size=64, bootstrap=300)
    r = run_tournament([rock, mixed], ["x"] * 60, judge, cfg, progress=False)
    assert r.exploitability_method == "class_exact"
    assert r.class_names == ("rock", "paper", "scissors")
    np.testing.assert_array_equal(r.class_distribution[0], [1.0, 0.0, 0.0])
    assert r.exploitability[0] == pytest.approx(0.5, abs=1e-12)
    assert (r.exploit_low[0], r.exploit_high[0]) == pytest.approx((0.5, 0.5), abs=1e-12)
    dist = r.class_distribution[1]
    assert r.exploitability[1] == pytest.approx(lab_exploitability(rock_paper_scissors(), dist), abs=1e-12)
    assert r.exploitability[1] == pytest.approx(0.3, abs=0.08)
    np.testing.assert_allclose(dist, [0.7, 0.2, 0.1], atol=0.08)
    assert r.exploit_low[1] <= r.exploitability[1] <= r.exploit_high[1]
    assert r.exploit_high[1] - r.exploit_low[1] > 0.01
    # the win rate of rock against the mix is the game's value on the sampled pairs
    assert r.win_rate[0, 1] == pytest.approx(np.mean(r.pair_probs[0, 1]))


def test_class_exploitability_on_the_rater_population():
    """Default rater population (nlhf.envs.oracles docstring), pi = (1/2 structured, 1/2 personal):
    P(y > pi) = structured 0.5*0.5 + 0.5*0.35 = 0.425, personal 0.5*0.65 + 0.5*0.5 = 0.575,
    direct 0.5*0.35 + 0.5*0.65 = 0.5, unfocused 0.05 -> exploitability 0.575 - 0.5 = 0.075."""
    from nlhf.envs import default_rater_population

    env = default_rater_population()
    dist, value = class_exploitability(env.P, np.array([0, 1, 0, 1, 1, 0]))
    np.testing.assert_allclose(dist, [0.5, 0.5, 0.0, 0.0])
    assert value == pytest.approx(0.075, abs=1e-12)


def test_adding_a_policy_keeps_the_others_samples():
    from nlhf.models.tiny import tiny_causal_lm, tiny_tokenizer

    tok = tiny_tokenizer()
    pols = [PolicyEntry(f"p{s}", tiny_causal_lm(tokenizer=tok, seed=s), tok) for s in range(3)]
    cfg = TournamentConfig(samples_per_prompt=2, max_new_tokens=6, batch_size=4, bootstrap=0)
    prompts = ["hi", "what is 2+2?", "name a colour"]
    judge = CallableJudge(longer_wins)
    two = run_tournament(pols[:2], prompts, judge, cfg, reference=pols[0], progress=False)
    three = run_tournament(pols, prompts, judge, cfg, reference=pols[0], progress=False)
    assert two.responses == three.responses[:2]
    np.testing.assert_allclose(two.win_rate, three.win_rate[:2, :2])
    # the win rates are the judge's answers on sample k vs sample k of the same prompt
    a, b = three.responses[0], three.responses[2]
    expected = np.mean([longer_wins(None, x, y) for x, y in zip(a, b)])
    assert three.win_rate[0, 2] == pytest.approx(expected)
    assert three.win_rate[0, 2] + three.win_rate[2, 0] == pytest.approx(1.0)
    # one uniform per comparison for both orders: under a symmetric judge the outcomes complement each other
    np.testing.assert_array_equal(three.wins + three.wins.T, 6 * (1 - np.eye(3, dtype=int)))
    assert three.kl[0] == 0.0 and not math.isnan(three.kl[1])
    assert three.responses_of("p1")[2] == three.responses[1][4:6]
    # a temperature other than 1 is said in the notes
    hot = run_tournament(pols[:1], prompts, judge, TournamentConfig(temperature=0.7, max_new_tokens=4, bootstrap=0),
                         progress=False)  # fmt: skip
    assert any("not samples of pi" in n for n in hot.notes)


def test_samples_do_not_depend_on_batch_size():
    """Each response row has its own stream seeded by (seed, policy, prompt, sample): batching changes nothing."""
    from nlhf.models.tiny import tiny_causal_lm, tiny_tokenizer

    tok = tiny_tokenizer()
    pols = [PolicyEntry(f"p{s}", tiny_causal_lm(tokenizer=tok, seed=s), tok) for s in range(2)]
    prompts = ["hi", "what is 2+2?", "name a colour", "a fourth, longer prompt here"]
    judge = CallableJudge(longer_wins)
    runs = [
        run_tournament(
            pols,
            prompts,
            judge,
            TournamentConfig(samples_per_prompt=2, max_new_tokens=6, batch_size=b, bootstrap=0),
            reference=pols[0],
            progress=False,
        )  # fmt: skip
        for b in (2, 8)
    ]
    assert runs[0].responses == runs[1].responses
    assert len(set(runs[0].responses[1])) > 1  # really sampled, not one repeated string
    # common random numbers: the same policy under two names gives the same responses, so a tie
    twin = [pols[0], PolicyEntry("twin", pols[0].model, pols[0].tokenizer)]
    tie = run_tournament(twin, prompts, judge, TournamentConfig(samples_per_prompt=2, max_new_tokens=6,
                         bootstrap=0), reference=pols[0], progress=False)  # fmt: skip
    assert tie.responses[0] == tie.responses[1]
    assert tie.win_rate[0, 1] == pytest.approx(0.5)
    np.testing.assert_allclose(runs[0].kl, runs[1].kl, rtol=1e-5, atol=1e-6)


def test_lora_policy_kl_uses_the_adapter_disabled_base():
    """A fresh LoRA adapter (B = 0) leaves the model unchanged: KL to its base is 0 up to rounding."""
    from nlhf.models.lora import LoraSettings, apply_lora
    from nlhf.models.tiny import tiny_causal_lm, tiny_tokenizer

    tok = tiny_tokenizer()
    torch.manual_seed(0)  # lora_A's random init
    settings = LoraSettings(r=2, target_modules=("q_proj", "v_proj", "lm_head"))
    peft_model = apply_lora(tiny_causal_lm(tokenizer=tok, seed=1), settings, task_type="CAUSAL_LM")
    cfg = TournamentConfig(samples_per_prompt=2, max_new_tokens=5, bootstrap=0)
    r = run_tournament([PolicyEntry("lora", peft_model, tok)], ["hi", "yo"], CallableJudge(longer_wins), cfg,
                       progress=False)  # fmt: skip
    assert r.kl[0] == pytest.approx(0.0, abs=1e-5)
    # mu in the pool as the base with the adapter disabled (nlhf.models.Reference): KL 0 exactly for it
    from nlhf.models.policy import Reference

    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # make the adapter do something: pi != mu
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.normal_(0.0, 1.0, generator=g)
    mu = PolicyEntry("mu", Reference(adapter_of=peft_model), tok)
    pi = PolicyEntry("lora", peft_model, tok)
    cfg = TournamentConfig(samples_per_prompt=8, max_new_tokens=3, bootstrap=0, batch_size=32)
    r = run_tournament([mu, pi], ["hi", "yo", "a", "b"], CallableJudge(longer_wins), cfg, reference=mu,
                       progress=False)  # fmt: skip
    assert r.reference == "mu" and r.kl[0] == 0.0
    assert r.kl[1] > 0.05 and r.kl_se[1] > 0  # mu is not the adapted model itself (that would give exactly 0)
    assert r.responses[0] != r.responses[1]


def test_bad_input_is_named():
    tok = tabular_tokenizer(ACTIONS)
    p = tabular_entry("same", pure(0), tok)
    with pytest.raises(ValueError, match="unique.*same"):
        run_tournament([p, tabular_entry("same", pure(1), tok)], ["x"], CallableJudge(longer_wins), CFG)
    with pytest.raises(ValueError, match="no prompts"):
        run_tournament([p], [], CallableJudge(longer_wins), CFG)
    from nlhf.config import ConfigError

    with pytest.raises(ConfigError, match="interval"):
        TournamentConfig(interval="normal")
    with pytest.raises(ConfigError, match="samples_per_prompt"):
        TournamentConfig(samples_per_prompt=0)
    with pytest.raises(ConfigError, match="max_prompt_tokens"):
        TournamentConfig(max_prompt_tokens=0)


def test_win_interval_is_on_the_fractional_win_count():
    """A judge that says 0.7 for every comparison: 5 prompts x 4 samples = 20 comparisons.

    wins = 20 x 0.7 = 14 expected wins (no coin flips), so the interval is Wilson(14, 20),
    centred on the point estimate's side: z = 1.959964, centre (0.7 + z^2/40) / (1 + z^2/20)
    = 0.796039 / 1.192079 = 0.667774, half-width z sqrt(0.21/20 + z^2/1600) / 1.192079
    = 1.959964 x 0.113582 / 1.192079 = 0.186747 -> [0.481027, 0.854521]. Clopper-Pearson
    on the same fractional count is wider and contains it.
    """
    pols = [tabular_entry("p", pure(2)), tabular_entry("q", pure(1))]
    judge = CallableJudge(lambda x, a, b: 0.7, name="constant")
    r = run_tournament(pols, ["x"] * 5, judge, CFG, progress=False)
    assert r.win_rate[0, 1] == pytest.approx(0.7) and r.wins[0, 1] == pytest.approx(14.0)
    assert r.win_low[0, 1] == pytest.approx(0.481027, abs=2e-5) and r.win_high[0, 1] == pytest.approx(
        0.854521, abs=2e-5
    )
    cp = run_tournament(pols, ["x"] * 5, judge, TournamentConfig(**{**CFG.__dict__, "interval": "clopper_pearson"}),
                        progress=False)  # fmt: skip
    assert cp.win_low[0, 1] < r.win_low[0, 1] < 0.7 < r.win_high[0, 1] < cp.win_high[0, 1]


def test_win_interval_counts_the_samples_of_a_prompt_as_one_cluster():
    """A judge that favours p on the first 3 of 6 prompts and q on the others, for every sample.

    6 prompts x 4 samples = 24 comparisons with P in {1, 0}: win rate 1/2. The per-prompt
    means are (1, 1, 1, 0, 0, 0): unbiased variance 0.3, v = 0.3 / 6 = 0.05, so
    n_eff = 0.25 / 0.05 = 5 and the interval is Wilson(2.5, 5): z = 1.959964, centre 1/2,
    half-width z sqrt(0.05 + z^2/100) / (1 + z^2/5) = 1.959964 x 0.297346 / 1.768292 =
    0.329576 -> [0.170424, 0.829576]. Counted as 24 independent comparisons (the negative
    control, cluster_prompts=False) it would be Wilson(12, 24) = [0.314274, 0.685726].
    """
    prompts = [f"x{i}" for i in range(6)]
    tok = tabular_tokenizer(ACTIONS, prompts)
    pols = [PolicyEntry(name, tabular_lm(3, 6, logits=torch.tensor([pure(k)] * 6)), tok)
            for name, k in (("p", 2), ("q", 1))]  # fmt: skip
    judge = CallableJudge(lambda x, a, b: float((int(x[1]) < 3) == (len(a) > len(b))), name="by prompt")
    r = run_tournament(pols, prompts, judge, CFG, progress=False)
    assert r.win_rate[0, 1] == pytest.approx(0.5) and r.n_effective[0, 1] == pytest.approx(5.0)
    assert r.win_low[0, 1] == pytest.approx(0.170424, abs=2e-5) and r.win_high[0, 1] == pytest.approx(
        0.829576, abs=2e-5
    )
    naive = run_tournament(pols, prompts, judge, TournamentConfig(**{**CFG.__dict__, "cluster_prompts": False}),
                           progress=False)  # fmt: skip
    assert naive.n_effective[0, 1] == 24.0
    assert naive.win_low[0, 1] == pytest.approx(0.314274, abs=2e-5) and naive.win_high[0, 1] == pytest.approx(
        0.685726, abs=2e-5
    )
    assert "effective number of comparisons" in r.to_markdown() and "independent" in naive.to_markdown()
    assert r.to_dict()["n_effective"][0][1] == 5.0
