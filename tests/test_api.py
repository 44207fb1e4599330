"""The Python API (nlhf.api, exported lazily by nlhf): config objects / dicts / keywords with nested dicts, the
keys a family fixes, objects handed to the run function, the tournament, and the README's Nash-MD example."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import nlhf
from nlhf import api
from nlhf.config import ConfigError, build_config, load_config
from nlhf.train.config import LoopConfig
from nlhf.train.dpo import OfflineConfig
from nlhf.train.nash_md import NashMDConfig

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "data"
LOOP = {"max_steps": 2, "micro_batch_size": 4, "progress": False, "report_to": "none", "min_free_disk_mb": 1}


# ----------------------------------------------------------------------------- configs from Python


def test_build_config_takes_a_dict_keywords_or_a_config_with_nested_dicts():
    from_dict = build_config(NashMDConfig, {"loop": {"max_steps": 2}, "lora": {"r": 8}})
    from_kw = build_config(NashMDConfig, loop={"max_steps": 2}, lora={"r": 8})
    assert from_dict == from_kw
    assert isinstance(from_dict.loop, LoopConfig) and from_dict.loop.max_steps == 2 and from_dict.lora.r == 8
    # a config plus keyword overrides: a nested override changes only what it names
    again = build_config(NashMDConfig, from_dict, loop={"seed": 3}, tau=0.5)
    assert (again.loop.max_steps, again.loop.seed, again.tau, again.lora.r) == (2, 3, 0.5, 8)
    assert build_config(NashMDConfig, from_dict) is from_dict


def test_a_partial_nested_section_keeps_its_fields_own_defaults():
    # OfflineConfig's optim default is OptimConfig(lr=1e-6); OptimConfig's own default lr is 1e-4
    assert build_config(OfflineConfig, optim={"warmup_steps": 0}).optim.lr == 1e-6
    assert load_config(OfflineConfig, None, ["optim.warmup_steps=0"]).optim.lr == 1e-6  # the command line too
    assert build_config(OfflineConfig, optim={"lr": 3e-4}).optim.lr == 3e-4


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"loop": {"max_step": 2}}, r"^unknown key 'loop\.max_step' \(known keys under loop: "),
        ({"lora": {"rank": 8}}, r"^unknown key 'lora\.rank'"),
        ({"loop": {"max_steps": "two"}}, r"^loop\.max_steps: expected int, got str 'two'"),
        ({"loop": {"max_steps": 0}}, r"^loop\.max_steps: must be > 0"),
        ({"taux": 0.1}, r"^unknown key 'taux'"),
        ({"loop": 3}, r"^loop: expected a mapping for LoopConfig"),
    ],
)
def test_bad_nested_values_are_config_errors_naming_the_key(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        build_config(NashMDConfig, **kwargs)


def test_a_config_of_another_class_is_an_error():
    with pytest.raises(
        ConfigError, match=r"^config: expected a NashMDConfig or a mapping, got OfflineConfig"
    ):
        build_config(NashMDConfig, OfflineConfig())


# ----------------------------------------------------------------------------- the train_* functions


def test_a_key_the_family_fixes_cannot_be_contradicted_and_nothing_runs(monkeypatch):
    monkeypatch.setattr(
        api, "_family", lambda name: (OfflineConfig, lambda cfg: pytest.fail("ran"), {"loss": "ipo"})
    )
    with pytest.raises(ConfigError, match=r"^loss: ipo sets loss='ipo', but the config says loss='dpo'"):
        api.train("ipo", {"loss": "dpo"})
    with pytest.raises(ConfigError, match=r"^loss: ipo sets"):
        api.train("ipo", OfflineConfig(loss="dpo"))
    with pytest.raises(ConfigError, match=r"^unknown key 'loop\.max_step'"):
        api.train("ipo", loop={"max_step": 1})


def test_the_algorithm_picks_the_sub_command_of_an_open_family(monkeypatch):
    calls = []
    monkeypatch.setattr(api, "train", lambda family, config=None, **kw: calls.append((family, config, kw)))
    nlhf.train_nash_md(algorithm="nash_ema", tau=0.2)
    nlhf.train_nash_md({"algorithm": "self_play"})
    nlhf.train_nash_md()
    nlhf.train_rlhf(algorithm="rlhf_pg")
    nlhf.train_online_ipo({"algorithm": "ipo_md"})
    assert [c[0] for c in calls] == ["nash-ema", "self-play", "nash-md", "rlhf-pg", "ipo-md"]
    with pytest.raises(ConfigError, match=r"^algorithm: 'ppo' is not an algorithm of train_nash_md"):
        nlhf.train_nash_md(algorithm="ppo")


def test_an_unknown_family_is_an_error_listing_them():
    with pytest.raises(ValueError, match=r"unknown training family 'dpoo' \(one of dpo, ipo, "):
        api.train("dpoo")


def test_split_kwargs_sends_strings_to_the_config_and_objects_to_the_run_function():
    from nlhf.train.nash_md import run_nash_md

    judge = object()
    config_kw, objects = api._split_kwargs(NashMDConfig, run_nash_md,
                                           {"model": "tiny", "judge": judge, "train_prompts": ["hi"], "tau": 0.1})  # fmt: skip
    assert config_kw == {"model": "tiny", "tau": 0.1}
    assert objects == {"judge": judge, "train_prompts": ["hi"]}


def test_train_dpo_with_python_objects_and_a_dict_config(tmp_path):
    from nlhf.data import PreferenceExample
    from nlhf.models.tiny import tiny_causal_lm, tiny_tokenizer

    tok = tiny_tokenizer()
    pairs = [PreferenceExample("Hi", "Hello there", "No."), PreferenceExample("2 + 2?", "4", "five")]
    result = nlhf.train_dpo({"tau": 0.3, "loop": {**LOOP, "micro_batch_size": 2}}, out=str(tmp_path),
                            model=tiny_causal_lm(tokenizer=tok, seed=0), tokenizer=tok, train_examples=pairs)  # fmt: skip
    assert result.summary["steps"] == 2 and result.summary["tau"] == 0.3
    card = (tmp_path / "policy" / "README.md").read_text()
    assert "| base model | (passed in Python) |" in card and "| data | (passed in Python) |" in card
    assert "base_model" not in card.split("---")[1]  # not the config's default smollm2


def test_the_api_names_load_lazily_and_cheaply():
    code = (
        "import json, sys, nlhf\n"
        "before = sorted({'torch', 'transformers', 'nlhf.api'} & set(sys.modules))\n"
        "fn = nlhf.train_nash_md\n"
        "print(json.dumps({'before': before, 'after': sorted({'torch', 'transformers'} & set(sys.modules)),\n"
        "                  'module': fn.__module__, 'name': fn.__name__, 'all': nlhf.__all__}))\n"
    )
    got = json.loads(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    )
    assert got["before"] == [] and got["after"] == []
    assert (got["module"], got["name"]) == ("nlhf.api", "train_nash_md")
    assert got["all"] == sorted(["train_dpo", "train_ipo", "train_nash_md", "train_online_ipo", "train_rlhf",
                                 "train_sppo", "train_inpo", "train_dno", "train_mpo", "train_mirror_prox",
                                 "train_preference_model", "train_reward_model", "train_general_preference_model",
                                 "tournament"])  # fmt: skip
    assert all(callable(getattr(nlhf, name)) for name in got["all"])


# ----------------------------------------------------------------------------- tournament


def test_tournament_from_specs_with_a_judge_object_writes_the_report(tmp_path):
    from nlhf.judges import CallableJudge

    judge = CallableJudge(lambda p, a, b: 0.5 if len(a) == len(b) else float(len(a) < len(b)), name="shorter")
    result = nlhf.tournament({"a": "tiny", "b": "tiny:1"}, ["Hi", "Name a colour"], judge,
                             {"samples_per_prompt": 1}, max_new_tokens=4, best_of_n=0, bootstrap=0, out=str(tmp_path))  # fmt: skip
    assert result.names == ["a", "b"]
    assert result.win_rate[0, 1] + result.win_rate[1, 0] == pytest.approx(1.0)
    assert result.config.max_new_tokens == 4 and result.config.samples_per_prompt == 1
    assert (tmp_path / "results.json").is_file() and (tmp_path / "eval_config.yaml").is_file()


# ----------------------------------------------------------------------------- the README's example


def readme_python_api_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_nash_md_example_runs_on_the_tiny_model(tmp_path, monkeypatch):
    block = readme_python_api_block()
    assert len(block.strip().splitlines()) <= 15
    assert "nlhf.train_nash_md(" in block
    code = (block.replace('"smollm2"', '"tiny"').replace('"llm:smollm2"', '"llm:tiny"')
            .replace('"examples/data/', f'"{DATA}/').replace('"max_steps": 200', '"max_steps": 2'))  # fmt: skip
    assert code.count('"tiny"') >= 1 and '"max_steps": 2' in code and "smollm2" not in code
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    result = namespace["result"]
    assert result.summary["steps"] == 2
    assert (tmp_path / "runs" / "nash-md" / "policy" / "README.md").is_file()
