"""The model card (nlhf.train.model_card): README.md in the saved model's directory, from the run's own files.

Runs of dpo (command line) and nash-md (Python API) on the tiny model; every other family's card is
checked by tests/test_examples.py, which runs each example."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import nlhf
from nlhf.cli import main
from nlhf.train.model_card import base_model_id, render_model_card, write_model_card

torch.set_num_threads(1)
DATA = Path(__file__).resolve().parents[2] / "examples" / "data"
LOOP = ["loop.max_steps=2", "loop.micro_batch_size=4", "loop.progress=false", "loop.report_to=none",
        "loop.min_free_disk_mb=1"]  # fmt: skip


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def table_value(card: str, label: str) -> str:
    (row,) = [line for line in card.splitlines() if line.startswith(f"| {label} |")]
    return row.split("|")[2].strip()


def test_dpo_from_the_command_line_writes_a_card_with_the_config_metrics_and_command(tmp_path, capsys):
    out = tmp_path / "dpo"
    argv = ["train", "dpo", "--data", str(DATA / "pairs.jsonl"), "--model", "tiny", "--out", str(out), "tau=0.2",
            *LOOP]  # fmt: skip
    assert main(argv) == 0
    card = (out / "policy" / "README.md").read_text()
    summary = json.loads((out / "metrics.json").read_text())
    meta = front_matter(card)
    assert meta["library_name"] == "transformers"
    assert "base_model" not in meta  # tiny is not a hub model
    assert {"nlhf", "dpo"} <= set(meta["tags"])
    assert table_value(card, "base model") == "`tiny`"
    assert table_value(card, "tau (KL strength; TRL's beta)") == "0.2"
    assert table_value(card, "offline loss") == "`dpo`"
    assert table_value(card, "data") == f"`{DATA / 'pairs.jsonl'}`"
    assert table_value(card, "steps").startswith("2 (micro-batch 4 x 1")
    assert f"| train | loss | {summary['train']['loss']:.4g} |" in card
    assert "nlhf train dpo --data " in card and "tau=0.2 loop.max_steps=2" in card  # the command as given
    assert nlhf.__version__ in card


def test_nash_md_from_python_writes_a_card_with_beta_the_judge_and_a_hub_base_model(tmp_path):
    out = tmp_path / "nash"
    nlhf.train_nash_md(model="tiny", prompts=str(DATA / "prompts.jsonl"), judge="llm:tiny", out=str(out), tau=0.05,
                       mixture_coef=0.25, sampling={"max_new_tokens": 4},
                       loop={"max_steps": 2, "micro_batch_size": 4, "progress": False, "report_to": "none"})  # fmt: skip
    card = (out / "policy" / "README.md").read_text()
    assert {"nlhf", "nash-md"} <= set(front_matter(card)["tags"])
    assert table_value(card, "algorithm") == "`nash_md`"
    assert table_value(card, "beta (mixture with the reference)") == "0.25"
    assert table_value(card, "tau (KL strength; TRL's beta)") == "0.05"
    assert table_value(card, "judge") == "`llm:tiny`"
    assert table_value(card, "prompts") == f"`{DATA / 'prompts.jsonl'}`"
    assert f"nlhf train nash-md --config {out}/config.yaml" in card
    # the same run directory's files, rendered with a hub base model: base_model in the front matter
    config = yaml.safe_load((out / "config.yaml").read_text())
    summary = json.loads((out / "metrics.json").read_text())
    hub = render_model_card("nash-md", {**config, "model": "smollm2"}, summary, None)
    assert front_matter(hub)["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_an_unmerged_lora_policy_is_a_peft_adapter_card():
    lora = {"r": 8, "lora_alpha": 16.0}
    adapter = render_model_card("dpo", {"model": "smollm2", "lora": lora, "merge_adapter": False}, {}, None)
    merged = render_model_card("dpo", {"model": "smollm2", "lora": lora, "merge_adapter": True}, {}, None)
    assert front_matter(adapter)["library_name"] == "peft"
    assert front_matter(adapter)["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert front_matter(merged)["library_name"] == "transformers"


def test_objects_passed_in_python_are_named_as_such(tmp_path):
    card = render_model_card("dpo", {"model": "tiny", "data": "", "loss": "dpo"}, {"steps": 1}, None)
    assert table_value(card, "data") == "(passed in Python)"
    assert "nlhf train dpo --config config.yaml" in card


@pytest.mark.parametrize(
    "spec, hub",
    [("smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct"), ("Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-0.5B"), ("tiny", None),
     ("tiny:3", None), ("model.gguf", None), ("", None), ("./a/b", None), ("a/b/c", None)],
)  # fmt: skip
def test_base_model_id(spec, hub):
    assert base_model_id(spec) == hub


def test_a_local_directory_is_not_a_hub_base_model(tmp_path):
    (tmp_path / "org" / "name").mkdir(parents=True)
    assert base_model_id(str(tmp_path / "org" / "name")) is None


def test_a_directory_without_a_finished_run_is_a_clear_error(tmp_path):
    (tmp_path / "config.yaml").write_text("model: tiny\n")
    with pytest.raises(FileNotFoundError, match=r"model card: .*metrics\.json does not exist"):
        write_model_card(tmp_path, "dpo")
