"""``nlhf demo``: the NLHF pipeline end to end on the tiny random model (CI), its pieces, and ``--lab``."""

import json

import numpy as np
import pytest
from scipy.special import expit

from nlhf.cli import main


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one torch thread (tests/conftest.py)."""


# ----------------------------------------------------------------------------- the whole pipeline (tiny)


def test_demo_pipeline_on_the_tiny_model(tmp_path, capsys):
    """Every stage runs on the tiny Llama with tiny BERT judges; files, counts and labels are consistent."""
    from nlhf.config import load_config
    from nlhf.data import load_preferences
    from nlhf.demo import DemoConfig
    from nlhf.envs import default_rater_population

    out = tmp_path / "demo"
    argv = [
        "demo",
        "--quick",
        "--model",
        "tiny",
        "--out",
        str(out),
        "--set",
        "judge_model=tiny",
        "--set",
        "threads=1",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for i, stage in enumerate(["model + environment", "reference samples + oracle labels",
                               "preference model + reward model",
                               "reward vs preference model under two sampling distributions",
                               "policies (Nash-MD, RLHF, IPO)",
                               "tournament (oracle, held-out prompts) + report"], start=1):  # fmt: skip
        assert f"[{i}/6] {stage}: " in printed, stage
    assert "NO significance claim" in printed
    assert f"report: {out / 'report.md'} and {out / 'report.html'}" in printed

    # the resolved config: quick settings, then the --set overrides
    cfg = load_config(DemoConfig, out / "config.yaml")
    assert (cfg.model, cfg.judge_model, cfg.n_train_prompts, cfg.samples_per_prompt, cfg.claims) == (
        "tiny", "tiny", 16, 2, False)  # fmt: skip

    # stage 2: 16 prompts x 2 samples; one pair per prompt, labels = Bernoulli(P*) with P* from the classes
    samples = [json.loads(x) for x in (out / "pairs" / "reference_samples.jsonl").read_text().splitlines()]
    assert len(samples) == 32
    env = default_rater_population()
    train = load_preferences(str(out / "pairs" / "train.jsonl"))
    held = load_preferences(str(out / "pairs" / "eval.jsonl"))
    summary = json.loads((out / "summary.json").read_text())
    assert len(train) + len(held) + sum(summary["pairs"]["dropped"].values()) == 16
    assert {e.metadata["prompt_id"] for e in train}.isdisjoint({e.metadata["prompt_id"] for e in held})
    for e in list(train) + list(held):
        a, b = env.classify([e.prompt, e.prompt], [e.first, e.second])
        assert e.metadata["p_star"] == pytest.approx(env.P[a, b], abs=1e-6)
        assert e.label in (0.0, 1.0)  # one rater per pair in --quick

    # stages 3-5: judges, three policies (LoRA adapters), the tournament under the oracle
    for d in ("pm", "rm"):
        assert (out / d / "nlhf_head.json").is_file()
    for d in ("nash_md", "rlhf", "ipo"):
        assert (out / d / "policy" / "adapter_config.json").is_file(), d
        assert (out / d / "metrics.jsonl").stat().st_size > 0
    t = summary["tournament"]
    assert t["names"] == ["reference", "RLHF", "IPO", "Nash-MD"]
    assert t["n_prompts"] == 8 and t["judge"] == "rater-population"
    W = np.array(t["win_rate"])
    np.testing.assert_allclose(W + W.T, 1.0, atol=1e-6)  # the oracle is exactly symmetric
    assert t["policies"][0]["kl"] == 0.0  # the reference against itself
    assert summary["claims"] is None and len(summary["stages"]) == 6
    # model-FLOP accounting: sampling and judging stages run forwards only; the policy stage trains
    by_name = {r["stage"]: r for r in summary["stages"]}
    assert (
        by_name["reference samples + oracle labels"]["gflop"]
        == by_name["reference samples + oracle labels"]["gflop_forward"]
        > 0
    )
    policies = by_name["policies (Nash-MD, RLHF, IPO)"]
    assert policies["gflop"] > policies["gflop_forward"] > 0
    assert summary["sgemm_peak_gflops"] > 0 and "of sgemm peak" in (out / "report.md").read_text()
    # the sampling-distribution section: two pair sets of 16 resampled pairs, RM + PM on each
    nu = summary["sampling_dependence"]
    for name in ("A", "B"):
        assert len(load_preferences(str(out / f"nu_{name}" / "pairs" / "train.jsonl"))) == 16
        for d in ("pm", "rm"):
            assert (out / f"nu_{name}" / d / "nlhf_head.json").is_file()
        assert (
            len(nu["answers"][f"rm_{name}"]["rlhf"]) == 4
            and len(nu["answers"][f"pm_{name}"]["nash_tau"]) == 4
        )
    assert nu["difference"] == pytest.approx(nu["rm_tv"] - nu["pm_tv"])
    # where the judges lead their trainers: needs every class in mu (here one is empty, so the run skipped it);
    # read on the run's own pm/ and rm/ with a uniform mu instead
    from nlhf.demo.judge_targets import judge_targets_of_run

    assert min(summary["reference"]["class_distribution"].values()) == 0 and "judge_targets" not in summary
    held_ids = {e.metadata["prompt_id"] for e in held}
    jt = judge_targets_of_run(cfg, out, env, held_ids, np.full(4, 0.25))
    assert jt["prompts"] == len(held_ids) and jt["pairs"] == 2 * len(
        held_ids
    )  # 2 samples a prompt: 2 ordered pairs
    assert sum(jt["nash_md_target"]) == pytest.approx(1.0, abs=1e-3) and len(jt["rlhf_target"]) == 4
    report = (out / "report.md").read_text()
    assert "it makes no significance claim" in report and "| reference | RLHF | IPO | Nash-MD |" in report
    assert "A reward model depends on the sampling distribution" in report
    assert (out / "report.html").stat().st_size > 5000 and (out / "learning_curves.png").stat().st_size > 5000


# ----------------------------------------------------------------------------- pieces


def test_label_pairs_average_bernoulli_draws_of_p_star():
    """structured vs direct has P* = 0.65 (oracles.py table); the mean of 2000 draws is within 4 sd (0.043)."""
    from nlhf.data.schema import PromptExample
    from nlhf.demo import label_pairs
    from nlhf.envs import default_rater_population

    env = default_rater_population()
    p = PromptExample("What is photosynthesis?", metadata={"id": "x-0", "kind": "explain"})
    structured, direct = "1. Light\n2. Water", "Photosynthesis is how plants make food."
    responses = [[structured, direct, "same", "same ", "", direct]]  # pair 2 identical, pair 3 empty
    examples, dropped = label_pairs(env, [p], responses, raters=2000, seed=0)
    assert dropped == {"empty": 1, "identical": 1}
    (e,) = examples
    assert (e.first, e.second, e.metadata["first_class"], e.metadata["second_class"]) == (
        structured, direct, "structured", "direct")  # fmt: skip
    assert e.metadata["p_star"] == pytest.approx(0.65)
    assert abs(e.label - 0.65) < 4 * (0.65 * 0.35 / 2000) ** 0.5
    # all C(3, 2) pairs of three responses: structured > direct 0.65, structured vs "same" (unfocused) 0.95,
    # direct vs "same" 0.95 (THEORY Sec. 7's population game, nlhf.envs.oracles)
    every, dropped = label_pairs(env, [p], [[structured, direct, "same"]], raters=1, seed=0, pairing="all")
    assert dropped == {"empty": 0, "identical": 0}
    assert [(x.first, x.second) for x in every] == [
        (structured, direct),
        (structured, "same"),
        (direct, "same"),
    ]
    assert [x.metadata["p_star"] for x in every] == pytest.approx([0.65, 0.95, 0.95])


def test_split_pairs_by_prompt_keeps_prompts_apart():
    from nlhf.data.schema import PreferenceExample
    from nlhf.demo import split_pairs_by_prompt

    ex = [
        PreferenceExample(f"q{i % 10}", "a", "b", 1.0, metadata={"prompt_id": f"p{i % 10}"})
        for i in range(40)
    ]
    train, held = split_pairs_by_prompt(ex, 0.2, seed=0)
    assert len({e.metadata["prompt_id"] for e in held}) == 2 and len(held) == 8 and len(train) == 32
    assert {e.metadata["prompt_id"] for e in train}.isdisjoint({e.metadata["prompt_id"] for e in held})


def test_lora_settings_target_the_last_blocks():
    from nlhf.demo import DemoConfig, lora_settings
    from nlhf.models.tiny import tiny_causal_lm

    model = tiny_causal_lm(num_layers=3)
    s = lora_settings(DemoConfig(lora_last_layers=1, lora_modules=("q_proj", "down_proj")), model)
    assert s.target_modules == ("layers.2.self_attn.q_proj", "layers.2.mlp.down_proj")
    from nlhf.models.lora import apply_lora

    peft_model = apply_lora(model, s, task_type="CAUSAL_LM")
    adapted = sorted({n.split(".lora_")[0] for n, _ in peft_model.named_parameters() if "lora_A" in n})
    assert adapted == [
        "base_model.model.model.layers.2.mlp.down_proj",
        "base_model.model.model.layers.2.self_attn.q_proj",
    ]
    assert lora_settings(DemoConfig(lora_last_layers=0, lora_modules=("q_proj",)), model).target_modules == (
        "q_proj",
    )


def test_evaluate_claims_reads_the_tournament():
    """Claim (i) needs its (clustered) interval's lower end above 1/2; claim (ii) needs the PAIRED exploitability
    difference's interval below 0. Class game: the demo's rater population. Nash-MD's samples are the three cycle
    classes on every prompt (pi = (1/3, 1/3, 1/3, 0): exploitability 0); RLHF's are all `structured`
    (exploited by `personal`: 0.65 - 1/2 = 0.15). Every prompt is the same, so every bootstrap resample gives the
    same difference -0.15: a degenerate interval below 0. With RLHF's samples equal to Nash-MD's the difference
    is 0 and the claim fails."""
    from types import SimpleNamespace

    from nlhf.demo import evaluate_claims
    from nlhf.envs import default_rater_population
    from nlhf.eval import TournamentConfig

    G, S = 10, 3
    names = ["reference", "RLHF", "IPO", "Nash-MD"]
    nan = float("nan")
    W = np.full((4, 4), 0.5)
    low, high = np.full((4, 4), nan), np.full((4, 4), nan)
    W[3, 0], low[3, 0], high[3, 0] = 0.62, 0.55, 0.69  # Nash-MD (row 3) against the reference (column 0)
    probs = np.full((4, 4, G * S), 0.5)
    probs[3, 0] = np.tile([0.95, 0.5, 0.41], G)  # mean 0.62
    labels = np.zeros((4, G, S), dtype=int)
    labels[3] = np.tile([0, 1, 2], (G, 1))  # Nash-MD: the three cycle classes on every prompt
    res = SimpleNamespace(
        names=names, win_rate=W, win_low=low, win_high=high, win_se=np.full((4, 4), 0.03), interval="cluster_t",
        pair_probs=probs, prompts=["x"] * G, samples_per_prompt=S, class_win_rate=None, class_labels=labels,
        class_P=default_rater_population().P, config=TournamentConfig(bootstrap=200), confidence=0.95,
        judge="oracle", index=names.index,
    )  # fmt: skip
    c = evaluate_claims(res, 0.95)
    c1, c2 = c["nash_vs_reference"], c["exploitability"]
    assert (c1["win_rate"], c1["low"], c1["high"], c1["holds"]) == (0.62, 0.55, 0.69, True)
    assert c1["binomial_interval"][0] < c1["low"]  # the coin-flip interval is wider here
    assert c2["nash_md"] == pytest.approx(0.0, abs=1e-12) and c2["rlhf"] == pytest.approx(0.15, abs=1e-12)
    assert (c2["difference"], c2["low"], c2["high"]) == pytest.approx((-0.15, -0.15, -0.15), abs=1e-12)
    assert c2["holds"] is True
    low[3, 0] = 0.49
    labels[1] = labels[3]
    c = evaluate_claims(res, 0.95)
    assert c["nash_vs_reference"]["holds"] is False and c["exploitability"]["holds"] is False
    assert c["exploitability"]["difference"] == pytest.approx(0.0, abs=1e-12)


def test_demo_config_layers_and_errors(tmp_path):
    from nlhf.config import ConfigError
    from nlhf.demo import QUICK, load_demo_config

    assert load_demo_config().nash_steps == 40
    quick = load_demo_config(quick=True)
    assert quick.nash_steps == QUICK["nash_steps"] and quick.claims is False
    yaml_file = tmp_path / "demo.yaml"
    yaml_file.write_text("nash_steps: 7\ntau: 0.02\n")
    cfg = load_demo_config(yaml_file, ["nash_steps=9"], quick=True, model="tiny", device=None)
    assert (cfg.nash_steps, cfg.tau, cfg.model, cfg.device, cfg.n_train_prompts) == (
        9,
        0.02,
        "tiny",
        "cpu",
        16,
    )
    with pytest.raises(ConfigError, match="nash_stepz"):
        load_demo_config(overrides=["nash_stepz=3"])
    with pytest.raises(ConfigError, match="samples_per_prompt"):
        load_demo_config(overrides=["samples_per_prompt=3"])


def test_demo_budget_long_preset():
    from nlhf.demo import load_demo_config
    from nlhf.demo.config import LONG

    default, long = load_demo_config(), load_demo_config(budget="long")
    assert (long.nash_steps, long.rlhf_steps, long.eval_samples_per_prompt) == (160, 160, 12)
    changed = {k for k in default.__dataclass_fields__ if getattr(default, k) != getattr(long, k)}
    assert changed == set(LONG)  # the preset changes only its own keys (no prompt, judge or oracle setting)
    assert load_demo_config(overrides=["nash_steps=5"], budget="long").nash_steps == 5  # --set still wins
    with pytest.raises(ValueError, match="budget"):
        load_demo_config(budget="huge")
    with pytest.raises(ValueError, match="exclude"):
        load_demo_config(quick=True, budget="long")


# ----------------------------------------------------------------------------- the lab showcase (nlhf demo --lab)


def test_demo_lab_writes_report_and_results(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--lab", "--quick", "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "[1/3] equilibria" in printed and "[3/3] ipo-bandit" in printed
    assert f"report: {out / 'report.md'}" in printed
    for name in (
        "report.md",
        "results.json",
        "equilibria.png",
        "dynamics_rps.png",
        "bandit_D1.png",
        "bandit_D2.png",
        "bandit_two.png",
    ):
        assert (out / name).stat().st_size > 500, name
    results = json.loads((out / "results.json").read_text())
    assert results["quick"] is True and results["device"] == "cpu"
    raters = next(e for e in results["equilibria"] if e["game"] == "raters")
    assert raters["nash"] == pytest.approx([0.5, 0.2, 0.3], abs=1e-9)
    bt = next(e for e in results["equilibria"] if e["game"] == "bt")
    assert bt["tv_pi_tau_vs_rlhf"] == pytest.approx(0.31, abs=0.005)
    nash_md_run = results["dynamics"]["runs"]["Nash-MD, eta_t = 2/(tau(t+2))"]
    assert nash_md_run["kl_at_steps"]["1000"] < 1e-5
    d1 = results["bandit"]["D1"]["methods"]
    assert d1["dpo"]["0.5"]["mean"][0] > 0.99
    assert d1["ipo"]["1"]["mean"] == pytest.approx(d1["ipo"]["1"]["closed_form"], abs=0.01)
    assert results["bandit"]["two"]["methods"]["ipo"]["0.1"]["mean"][0] == pytest.approx(expit(5.0), abs=1e-3)
    report = (out / "report.md").read_text()
    assert "## 3. IPO vs DPO" in report and "![dynamics](dynamics_rps.png)" in report


def test_ipo_subset_is_a_seeded_sample_in_file_order(tmp_path):
    """10 lines, n = 4: 4 distinct lines of the file, in file order, the same for the same seed; n = 0 or n >= 10: the file itself."""
    from nlhf.demo.stages import ipo_subset

    src = tmp_path / "train.jsonl"
    src.write_text("".join(f'{{"i": {i}}}\n' for i in range(10)))
    out = ipo_subset(src, tmp_path / "ipo.jsonl", 4, seed=0)
    picked = [int(line[6:-1]) for line in out.read_text().splitlines()]
    assert len(set(picked)) == 4 and picked == sorted(picked) and set(picked) <= set(range(10))
    assert ipo_subset(src, tmp_path / "again.jsonl", 4, seed=0).read_text() == out.read_text()
    assert (
        ipo_subset(src, tmp_path / "x.jsonl", 0, seed=0) == src
        and ipo_subset(src, tmp_path / "y.jsonl", 10, seed=0) == src
    )


def test_cap_pairs_per_prompt_keeps_a_seeded_subset_in_file_order():
    """Prompts with 5, 2 and 1 pairs, cap 3: 3 + 2 + 1 kept, each prompt's kept pairs in file order, the same
    subset for the same seed, another for another seed (over 20 seeds), everything with cap 0."""
    from nlhf.data.schema import PreferenceExample
    from nlhf.demo.stages import cap_pairs_per_prompt

    rows = [PreferenceExample("x", f"a{i}", f"b{i}", 1.0, metadata={"prompt_id": pid})
            for i, pid in enumerate(["p1"] * 5 + ["p0"] * 2 + ["p2"])]  # fmt: skip
    kept = cap_pairs_per_prompt(rows, 3, seed=0)
    ids = [e.metadata["prompt_id"] for e in kept]
    assert ids.count("p1") == 3 and ids.count("p0") == 2 and ids.count("p2") == 1
    p1 = [int(e.first[1:]) for e in kept if e.metadata["prompt_id"] == "p1"]
    assert p1 == sorted(p1) and set(p1) <= set(range(5))
    assert [e.first for e in cap_pairs_per_prompt(rows, 3, seed=0)] == [e.first for e in kept]
    subsets = {tuple(e.first for e in cap_pairs_per_prompt(rows, 3, seed=s)) for s in range(20)}
    assert len(subsets) > 1
    assert cap_pairs_per_prompt(rows, 0, seed=0) == rows
