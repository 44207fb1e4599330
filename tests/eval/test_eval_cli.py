"""``nlhf eval`` through its register() function (tiny policies, the oracle and a saved preference model)."""

import argparse
import json

import pytest

from nlhf.eval.cli import register


def run_cli(argv):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_eval_with_the_oracle(tmp_path, capsys):
    out = tmp_path / "eval"
    rc = run_cli(["eval", "--policy", "ref=tiny", "--policy", "other=tiny:1", "--prompts", "env-heldout",
                  "--limit", "3", "--judge", "oracle", "--out", str(out), "--max-new-tokens", "6",
                  "--samples-per-prompt", "2", "--interval", "clopper_pearson", "--set", "bootstrap=50",
                  "--no-progress"])  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    assert f"report written to {out / 'report.html'}" in printed
    data = json.loads((out / "results.json").read_text())
    assert data["names"] == ["ref", "other"] and data["reference"] == "ref"
    assert data["interval"] == "clopper_pearson" and data["config"]["bootstrap"] == 50
    assert data["exploitability_method"] == "class_exact"
    assert data["n_prompts"] == 3 and data["wins"][0][1] + data["wins"][1][0] <= 12
    assert data["policies"][0]["kl"] == 0.0
    assert (out / "eval_config.yaml").is_file()
    assert "- policy **other**: `tiny:1`" in (out / "tournament.md").read_text()


def test_eval_with_a_saved_preference_model(tmp_path, capsys):
    from nlhf.models import PairwisePreferenceModel
    from nlhf.models.tiny import tiny_causal_lm, tiny_tokenizer

    tok = tiny_tokenizer()
    pm_dir = tmp_path / "pm"
    PairwisePreferenceModel(tiny_causal_lm(tokenizer=tok, seed=5), tok).save_pretrained(pm_dir)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "hi"}\n{"prompt": "name a fruit"}\n')
    out = tmp_path / "eval"
    rc = run_cli(["eval", "--policy", "a=tiny", "--policy", "b=tiny:2", "--reference", "tiny:3",
                  "--prompts", str(prompts), "--judge", str(pm_dir), "--out", str(out),
                  "--max-new-tokens", "4", "--set", "best_of_n=2", "--set", "bootstrap=20", "--no-progress"])  # fmt: skip
    assert rc == 0
    data = json.loads((out / "results.json").read_text())
    assert data["exploitability_method"] == "pool_best_of_n"
    assert (
        data["exploit_details"]["best_of_n"] == 2
        and data["exploit_details"]["best_of_n_reference"] == "reference"
    )
    assert data["reference"] == "reference"  # loaded outside the pool
    assert data["judge"].startswith("PreferenceModelJudge")


def test_eval_errors_name_the_input(tmp_path, capsys):
    from nlhf.config import ConfigError

    with pytest.raises(ConfigError, match="bootstrapp"):
        run_cli(["eval", "--policy", "tiny", "--prompts", "env-heldout", "--judge", "oracle", "--out",
                 str(tmp_path), "--set", "bootstrapp=3"])  # fmt: skip
    rc = run_cli(["eval", "--policy", "tiny", "--prompts", "env-heldout", "--judge", str(tmp_path / "no-pm"),
                  "--out", str(tmp_path)])  # fmt: skip
    assert rc == 2 and "no-pm" in capsys.readouterr().err
    rc = run_cli(["eval", "--policy", "x=tiny", "--policy", "x=tiny:1", "--prompts", "env-heldout", "--judge",
                  "oracle", "--out", str(tmp_path)])  # fmt: skip
    assert rc == 2 and "unique" in capsys.readouterr().err
