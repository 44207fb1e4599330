"""load_policy: names, saved policies, run directories, errors; cheap imports."""

import subprocess
import sys

import pytest
import torch
import yaml

from nlhf.eval import TournamentConfig, load_policy, run_tournament
from nlhf.judges import CallableJudge


def test_importing_nlhf_eval_is_cheap():
    code = (
        "import sys, nlhf.eval, nlhf.eval.cli, nlhf.eval.tournament, nlhf.eval.policies, nlhf.report; "
        "from nlhf.eval import TournamentConfig, TournamentResult, PolicyEntry; "
        "heavy = [m for m in ('torch', 'matplotlib', 'transformers', 'peft') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_tiny_spec_and_seed():
    a = load_policy("tiny")
    b = load_policy("tiny:3", name="b")
    assert a.name == "tiny" and b.name == "b" and b.reference is None
    assert not torch.equal(next(a.model.parameters()), next(b.model.parameters()))
    with pytest.raises(ValueError, match="tiny:SEED"):
        load_policy("tiny:x")


def test_saved_policy_and_run_directory(tmp_path):
    """A merged save of tiny:3 inside a run directory whose config names tiny with loop.seed 3: the run's
    reference is the same weights, so the policy's KL to it is 0."""
    from nlhf.models.policy import save_policy
    from nlhf.models.tiny import tiny_causal_lm, tiny_tokenizer

    tok = tiny_tokenizer()
    run = tmp_path / "nash-run"
    save_policy(tiny_causal_lm(tokenizer=tok, seed=3), run / "policy", tokenizer=tok)
    (run / "config.yaml").write_text(yaml.safe_dump({"model": "tiny", "loop": {"seed": 3}}))
    entry = load_policy(str(run))
    assert entry.name == "nash-run" and entry.reference is not None
    direct = load_policy(str(run / "policy"))
    assert direct.name == "nash-run" and direct.reference is None  # a bare saved policy: no base known
    cfg = TournamentConfig(samples_per_prompt=2, max_new_tokens=4, bootstrap=0)
    judge = CallableJudge(lambda x, a, b: 0.5)
    r = run_tournament([entry], ["hi", "yo"], judge, cfg, progress=False)
    assert r.kl[0] == pytest.approx(0.0, abs=1e-5)
    # a shared cache gives one reference object for runs with the same base
    cache: dict = {}
    e1 = load_policy(str(run), name="a", reference_cache=cache)
    e2 = load_policy(str(run), name="b", reference_cache=cache)
    assert e1.reference is e2.reference


def test_lora_adapter_run_directory(tmp_path):
    """An adapter save (merge=False) in a run dir: loaded as a PeftModel on the run's base; mu = adapter off."""
    from nlhf.models.lora import LoraSettings, apply_lora, is_peft_model
    from nlhf.models.policy import save_policy
    from nlhf.models.tiny import tiny_causal_lm, tiny_tokenizer

    tok = tiny_tokenizer()
    peft_model = apply_lora(tiny_causal_lm(tokenizer=tok, seed=0), LoraSettings(r=2), task_type="CAUSAL_LM")
    run = tmp_path / "lora-run"
    save_policy(peft_model, run / "policy", merge=False, tokenizer=tok)
    (run / "config.yaml").write_text(yaml.safe_dump({"model": "tiny", "loop": {"seed": 0}}))
    entry = load_policy(str(run))
    assert is_peft_model(entry.model) and entry.reference is None


def test_unloadable_specs_are_named(tmp_path):
    with pytest.raises(ValueError, match="does-not-exist"):
        load_policy(str(tmp_path / "does-not-exist"))
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty-dir.*neither a run directory"):
        load_policy(str(empty))
    unfinished = tmp_path / "unfinished"
    (unfinished / "ckpt-10").mkdir(parents=True)
    (unfinished / "config.yaml").write_text("model: tiny\n")
    with pytest.raises(ValueError, match="unfinished.*without policy/.*ckpt-10"):
        load_policy(str(unfinished))
