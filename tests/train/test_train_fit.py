"""``nlhf train-pm`` / ``nlhf train-rm`` end to end on a tiny backbone, config resolution,
and the calibration metric."""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

import pytest
import torch

from nlhf.config import ConfigError
from nlhf.train.calibration import both_orientations, expected_calibration_error, reliability_table
from nlhf.train.cli import register
from nlhf.train.fit import FitConfig, load_fit_config, run_fit
from nlhf.train.loop import RunDirError

torch.set_num_threads(1)

WORDS = "the a cat dog sun moon tree river blue red small big".split()


def keyword_pairs(n: int, seed: int) -> list[dict]:
    """Pairs where the response ending in "yes" is preferred (labels 1, 0, and soft 0.9 / 0.1)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        prompt = " ".join(rng.choice(WORDS) for _ in range(4))
        good = " ".join(rng.choice(WORDS) for _ in range(3)) + " yes"
        bad = " ".join(rng.choice(WORDS) for _ in range(3)) + " no"
        strength = 0.9 if i % 4 == 3 else 1.0
        if rng.random() < 0.5:
            rows.append({"prompt": prompt, "response_a": good, "response_b": bad, "label": strength})
        else:
            rows.append({"prompt": prompt, "response_a": bad, "response_b": good, "label": 1.0 - strength})
    return rows


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> dict[str, Path]:
    """A tiny Llama backbone directory (2 layers, 64 hidden) and 32 + 32 keyword pairs."""
    from nlhf.models.tiny import tiny_causal_lm, tiny_tokenizer

    root = tmp_path_factory.mktemp("fit")
    tok = tiny_tokenizer()
    lm = tiny_causal_lm(tokenizer=tok, seed=0)
    lm.model.save_pretrained(root / "backbone")  # the base transformer: AutoModel loads a LlamaModel
    tok.save_pretrained(root / "backbone")
    for name, seed in (("train", 0), ("eval", 1)):
        with open(root / f"{name}.jsonl", "w") as f:
            for row in keyword_pairs(32, seed):
                f.write(json.dumps(row) + "\n")
    return {
        "root": root,
        "backbone": root / "backbone",
        "train": root / "train.jsonl",
        "eval": root / "eval.jsonl",
    }


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="nlhf")
    register(parser.add_subparsers())
    args = parser.parse_args(list(argv))
    return args.func(args)


TRAIN_ARGS = (
    "optim.lr=3e-3", "optim.warmup_steps=2", "loop.max_steps=16", "loop.micro_batch_size=4",
    "loop.grad_accum_steps=2", "loop.log_every=4", "loop.eval_every=8", "loop.progress=false",
    "loop.min_free_disk_mb=1",
)  # fmt: skip


@pytest.mark.parametrize("kind", ["pm", "rm", "gpm"])
def test_train_end_to_end_beats_chance_and_reloads(task, tmp_path, kind, capsys):
    from nlhf.models import GeneralPreferenceModel, PairwisePreferenceModel, RewardModel

    out = tmp_path / kind
    assert cli(f"train-{kind}", "--data", str(task["train"]), "--eval-data", str(task["eval"]),
               "--model", str(task["backbone"]), "--out", str(out), *TRAIN_ARGS) == 0  # fmt: skip
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["kind"] == {"pm": "pairwise_preference", "rm": "reward", "gpm": "general_preference"}[kind]
    assert metrics["n_eval"] == 32 and metrics["n_train"] == 32 and metrics["steps"] == 16
    assert metrics["accuracy"] >= 0.8  # chance is 0.5 on this balanced task
    assert metrics["log_loss"] < math.log(2)  # better than always predicting 1/2
    assert 0.0 <= metrics["ece"] <= 1.0
    assert printed["accuracy"] == metrics["accuracy"]

    # the saved model judges the eval pairs exactly as the final evaluation did
    cls = {"pm": PairwisePreferenceModel, "rm": RewardModel, "gpm": GeneralPreferenceModel}[kind]
    model = cls.from_pretrained(out)
    if kind == "gpm":
        assert model.rank == 2 and model.head.out_features == 5
    rows = [json.loads(x) for x in task["eval"].read_text().splitlines()]
    probs = model.prob(
        [r["prompt"] for r in rows], [r["response_a"] for r in rows], [r["response_b"] for r in rows]
    )
    labels = torch.tensor([r["label"] for r in rows])
    accuracy = (0.5 * (torch.sign(probs - 0.5) * torch.sign(labels - 0.5) + 1)).mean().item()
    assert accuracy == pytest.approx(metrics["accuracy"])
    log_loss = -(labels * probs.log() + (1 - labels) * (1 - probs).log()).mean().item()
    assert log_loss == pytest.approx(metrics["log_loss"], rel=1e-4, abs=1e-6)
    assert metrics["ece"] == pytest.approx(  # over both orientations of every pair
        expected_calibration_error(*both_orientations(probs.numpy(), labels.numpy())), abs=1e-5
    )
    assert metrics["calibration"]["orientations"] == 2 and sum(metrics["calibration"]["count"]) == 64

    # run directory: resolved config, logs, plot
    cfg = load_fit_config(out / "config.yaml")
    assert cfg.optim.lr == 3e-3 and cfg.loop.max_steps == 16 and cfg.model == str(task["backbone"])
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["split"], r["step"]) for r in records if r["split"] == "eval"] == [("eval", 8), ("eval", 16)]
    assert (out / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any((out / "tensorboard").iterdir())


def test_resume_continues_a_run_bit_identically(task, tmp_path):
    """4 steps + ``--resume`` to 8 steps == 8 steps straight (constant lr, so the schedule
    does not depend on the planned length). Needs the seed set before the head is built."""
    from safetensors.torch import load_file

    common = ("--data", str(task["train"]), "--eval-data", str(task["eval"]), "--model", str(task["backbone"]),
              "optim.lr=3e-3", "optim.schedule=constant", "optim.warmup_steps=0", "loop.micro_batch_size=8",
              "loop.save_every=4", "loop.progress=false", "loop.min_free_disk_mb=1", "loop.tensorboard=false")  # fmt: skip
    cli("train-pm", *common, "--out", str(tmp_path / "straight"), "loop.max_steps=8")
    cli("train-pm", *common, "--out", str(tmp_path / "cut"), "loop.max_steps=4")
    cli("train-pm", *common, "--out", str(tmp_path / "cut"), "loop.max_steps=8", "--resume")
    for name in ("model.safetensors", "head.safetensors"):
        a, b = load_file(tmp_path / "straight" / name), load_file(tmp_path / "cut" / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    log = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["split"] == "eval"] == [4, 8]


def test_overrides_may_follow_options():
    parser = argparse.ArgumentParser(prog="nlhf")
    register(parser.add_subparsers())
    args = parser.parse_args(
        ["train-rm", "optim.lr=1e-4", "--data", "d", "--out", "o", "loop.max_steps=3", "lora.r=4"]
    )
    assert args.overrides == ["optim.lr=1e-4", "loop.max_steps=3", "lora.r=4"]
    assert (args.data, args.out, args.resume) == ("d", "o", False)
    with pytest.raises(SystemExit):
        parser.parse_args(["train-rm", "--data", "d", "--bogus"])


def test_config_sources_and_precedence(tmp_path):
    yaml_file = tmp_path / "fit.yaml"
    yaml_file.write_text(
        "data: from-yaml.jsonl\nout: yaml-out\noptim:\n  lr: 1.0e-3\nloop:\n  max_steps: 7\n"
    )
    cfg = load_fit_config(yaml_file, ["optim.lr=2e-4", "lora.r=4"], data="flag.jsonl", out=None)
    assert cfg.data == "flag.jsonl"  # flags beat YAML
    assert cfg.out == "yaml-out"  # a flag left out (None) does not erase YAML
    assert cfg.optim.lr == 2e-4 and cfg.optim.warmup_steps == 10  # override, and FitConfig's own default kept
    assert cfg.loop.max_steps == 7 and cfg.loop.micro_batch_size == 16
    assert cfg.lora is not None and cfg.lora.r == 4
    assert isinstance(cfg, FitConfig)


@pytest.mark.parametrize(
    ("overrides", "flags", "message"),
    [
        (["optim.lrr=1"], {}, r"unknown key 'optim\.lrr'"),
        (["loop.max_steps=many"], {}, r"loop\.max_steps: expected int"),
        (["optim.lr=-1"], {}, r"optim\.lr: must be > 0"),
        (["pooling=max"], {}, r"pooling: must be one of"),
        (["eval_fraction=1.5"], {}, r"eval_fraction"),
        ([], {"out": None}, r"out: required"),
        ([], {"data": None}, r"data: required"),
    ],
)
def test_config_errors_name_the_key(overrides, flags, message):
    base = {"data": "train.jsonl", "out": "run", **flags}
    with pytest.raises(ConfigError, match=message):
        load_fit_config(None, overrides, **base)


def test_bad_data_and_unwritable_out_fail_before_the_model_loads(task, tmp_path, monkeypatch):
    import nlhf.train.fit as fit

    def no_model(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(fit, "_build_model", no_model)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "response_a": "x", "response_b": "y", "label": 1.5}) + "\n")
    from nlhf.data import PreferenceDataError

    cfg = load_fit_config(
        None, ["loop.min_free_disk_mb=1"], data=str(bad), out=str(tmp_path / "o"), model="minilm"
    )
    with pytest.raises(PreferenceDataError, match="bad.jsonl"):
        run_fit("pm", cfg)
    blocker = tmp_path / "file"
    blocker.write_text("")
    cfg = load_fit_config(None, [], data=str(task["train"]), out=str(blocker / "run"), model="minilm")
    with pytest.raises(RunDirError, match="cannot be created"):
        run_fit("rm", cfg)


def test_ece_over_both_orientations_by_hand():
    """probs (0.7, 0.7, 0.2), labels all 1 (chosen first, as in HH-RLHF), 2 bins.

    One orientation: bin [0, .5) conf 0.2, freq 1; bin [.5, 1] conf 0.7, freq 1:
    ECE = 1/3 * 0.8 + 2/3 * 0.3 = 7/15 (every label is 1: it only measures confidence).
    Both orientations: probs (.7, .7, .2, .3, .3, .8), labels (1, 1, 1, 0, 0, 0):
    bin [0, .5) = {.2: 1, .3: 0, .3: 0}: conf 0.8/3, freq 1/3, gap 1/15;
    bin [.5, 1] = {.7: 1, .7: 1, .8: 0}: conf 2.2/3, freq 2/3, gap 1/15 -> ECE = 1/15.
    """
    p, y = both_orientations([0.7, 0.7, 0.2], [1, 1, 1])
    assert p.tolist() == pytest.approx([0.7, 0.7, 0.2, 0.3, 0.3, 0.8]) and y.tolist() == [1, 1, 1, 0, 0, 0]
    assert expected_calibration_error([0.7, 0.7, 0.2], [1, 1, 1], bins=2) == pytest.approx(7 / 15)
    table = reliability_table(p, y, bins=2)
    assert table.count == (3, 3) and table.frequency == pytest.approx((1 / 3, 2 / 3))
    assert table.ece == pytest.approx(1 / 15)
    with pytest.raises(ValueError, match="differ in size"):
        both_orientations([0.5], [1, 0])


def test_collate_carries_segment_ids_and_pooling_config(task):
    """make_collate puts the model's segment ids in the batch; pooling=segments is a valid key."""
    from nlhf.data.schema import PreferenceExample
    from nlhf.models import PairwisePreferenceModel, RewardModel
    from nlhf.train.fit import make_collate, preference_logits

    pm = PairwisePreferenceModel.from_backbone(str(task["backbone"]), pooling="segments")
    ex = [PreferenceExample("q", "ab", "c", 1.0)]
    batch = make_collate("pm", pm)(ex)
    # byte tokens: "q" + marker A (14) + "ab" + marker B (14) + "c" + EOS
    assert batch["segment_ids"].tolist() == [[0] * 15 + [1, 1] + [0] * 14 + [2, 0],
                                             [0] * 15 + [1] + [0] * 14 + [2, 2, 0]]  # fmt: skip
    with torch.no_grad():
        logit = preference_logits("pm", pm, batch)
        direct = pm.score(batch["input_ids"], batch["attention_mask"], batch["segment_ids"])
    torch.testing.assert_close(logit, direct[:1] - direct[1:], atol=1e-5, rtol=0)  # shared-prefix path
    rm = RewardModel.from_backbone(str(task["backbone"]))
    rm_batch = make_collate("rm", rm)(ex)
    assert rm_batch["segment_ids"].tolist() == [[0, 1, 1, 0], [0, 1, 0, 0]]  # "q" "ab" EOS / "q" "c" EOS
    assert load_fit_config(None, ["pooling=segments"], data="d", out="o").pooling == "segments"


def test_reliability_table_by_hand():
    """probs (0.1, 0.3, 0.8, 0.9), labels (0, 1, 1, 1), 2 bins.

    bin [0, 0.5): conf (0.1 + 0.3) / 2 = 0.2, freq 1/2; bin [0.5, 1]: conf 0.85, freq 1.
    ECE = 2/4 |0.5 - 0.2| + 2/4 |1 - 0.85| = 0.15 + 0.075 = 0.225.
    With 10 bins each example is alone: ECE = (0.1 + 0.7 + 0.2 + 0.1) / 4 = 0.275.
    """
    table = reliability_table([0.1, 0.3, 0.8, 0.9], [0, 1, 1, 1], bins=2)
    assert table.count == (2, 2)
    assert table.confidence == pytest.approx((0.2, 0.85))
    assert table.frequency == pytest.approx((0.5, 1.0))
    assert table.ece == pytest.approx(0.225)
    assert expected_calibration_error([0.1, 0.3, 0.8, 0.9], [0, 1, 1, 1], bins=10) == pytest.approx(0.275)
    assert reliability_table([1.0], [1.0], bins=4).count == (0, 0, 0, 1)  # prob 1 falls in the last bin
    with pytest.raises(ValueError, match="row 1"):
        reliability_table([0.2, 1.2], [0, 1])


@pytest.mark.parametrize("kind", ["pm", "rm", "gpm"])
def test_pretokenized_pairs_collate_to_the_same_batch(task, kind):
    """pretokenize + make_collate gives exactly the batch of make_collate on the raw examples."""
    from nlhf.data import load_preferences
    from nlhf.models import GeneralPreferenceModel, PairwisePreferenceModel, RewardModel
    from nlhf.train.fit import EncodedPair, make_collate, pretokenize

    cls = {"pm": PairwisePreferenceModel, "rm": RewardModel, "gpm": GeneralPreferenceModel}[kind]
    model = cls.from_backbone(str(task["backbone"]), max_length=72)  # cuts some PM rows
    examples = list(load_preferences(task["train"]))[:6]
    encoded = pretokenize(model, examples, chunk=4)  # two chunks
    assert len(encoded) == 6 and all(isinstance(e, EncodedPair) for e in encoded)
    collate = make_collate(kind, model)
    raw, pre = collate(examples), collate(encoded)
    assert set(raw) == set(pre)
    for key in ("input_ids", "attention_mask", "segment_ids", "labels", "truncated"):
        assert torch.equal(raw[key], pre[key]), key
    assert raw["input_ids"].shape[0] == 12
