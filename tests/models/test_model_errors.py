"""Model errors (issue 7): every way a model can fail to load is a one-line ModelLoadError naming it.

Checked for the three public loaders (``load_causal_lm``, ``load_encoder``, ``load_backbone``):
a path that does not exist, a file or a directory that is not a model, a broken
``config.json``, an unknown model type, missing or corrupt weights, a missing tokenizer, a
GGUF file that is not GGUF, a GGUF file of an architecture transformers does not read
("whatever") and one of a listed architecture that is broken ("mamba" without a
tokenizer), a hub name that is not cached while ``HF_HUB_OFFLINE=1``. Plus the pad-token
policy of :func:`ensure_pad_token` and nlhf's own ``nlhf_tabular`` model type loading in a
fresh interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from nlhf.models.loading import ModelLoadError, ensure_pad_token, load_backbone, load_causal_lm, load_encoder

LOADERS = {"load_causal_lm": load_causal_lm, "load_encoder": load_encoder, "load_backbone": load_backbone}


def one_line_error(loader, target, **kwargs) -> str:
    with pytest.raises(ModelLoadError) as info:
        loader(target, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    return message


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    """A saved tiny Llama with its tokenizer, the same without a tokenizer, and one with corrupt weights."""
    import torch

    from nlhf.models.tiny import tiny_causal_lm, tiny_tokenizer

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("models")
    tok = tiny_tokenizer()
    model = tiny_causal_lm(tokenizer=tok, seed=0)
    model.save_pretrained(root / "good")
    tok.save_pretrained(root / "good")
    model.save_pretrained(root / "no_tokenizer")
    model.save_pretrained(root / "corrupt")
    tok.save_pretrained(root / "corrupt")
    (root / "corrupt" / "model.safetensors").write_bytes(b"not safetensors at all" * 4)
    return root


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize(
    "missing", ["/no/such/model/dir", "./no_such_dir/model", "~/no-such-nlhf-model/x", "missing-model.gguf"]
)
def test_path_that_does_not_exist(loader, missing):
    message = one_line_error(LOADERS[loader], missing)
    assert missing in message and ("not found" in message), message


@pytest.mark.parametrize("loader", LOADERS)
def test_directory_or_file_that_is_not_a_model(loader, tmp_path):
    (tmp_path / "README.md").write_text("not a model")
    message = one_line_error(LOADERS[loader], tmp_path)
    assert message == f"{tmp_path} is not a model directory (no config.json" + (
        " or adapter_config.json)" if loader == "load_causal_lm" else ")"
    ), message
    message = one_line_error(LOADERS[loader], tmp_path / "README.md")
    assert str(tmp_path / "README.md") in message, message


BROKEN_CONFIGS = {
    "not_json": ("{not json", "is not a valid JSON file"),
    "no_model_type": ("{}", "Should have a `model_type` key"),
    "unknown_type": (json.dumps({"model_type": "whatever"}), "model type `whatever`"),
    "no_weights": (
        json.dumps(
            {
                "model_type": "llama",
                "hidden_size": 8,
                "num_attention_heads": 2,
                "num_hidden_layers": 1,
                "intermediate_size": 8,
                "vocab_size": 10,
            }
        ),
        "no file named model.safetensors",
    ),
}


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("case", BROKEN_CONFIGS)
def test_broken_model_directories(loader, case, tmp_path):
    text, phrase = BROKEN_CONFIGS[case]
    (tmp_path / "config.json").write_text(text)
    message = one_line_error(LOADERS[loader], tmp_path)
    assert message.startswith("could not load the ") and f" in {tmp_path}" in message and phrase in message, (
        message
    )


@pytest.mark.parametrize("loader", LOADERS)
def test_missing_tokenizer_and_corrupt_weights(loader, tiny_dirs):
    message = one_line_error(LOADERS[loader], tiny_dirs / "no_tokenizer")
    assert f"in {tiny_dirs / 'no_tokenizer'}" in message and "tokenizer" in message, message
    message = one_line_error(LOADERS[loader], tiny_dirs / "corrupt")
    assert f"in {tiny_dirs / 'corrupt'}" in message and "SafetensorError" in message, message


def _write_gguf(path: Path, arch: str) -> Path:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("loader", ["load_causal_lm", "load_backbone"])
def test_gguf_of_an_unsupported_or_broken_architecture(loader, tmp_path):
    cache = tmp_path / "cache"
    path = _write_gguf(tmp_path / "odd.gguf", "whatever")
    message = one_line_error(LOADERS[loader], path, cache_dir=cache)
    assert message.startswith(
        f"{path}: GGUF architecture 'whatever' is not supported by transformers (supported: "
    )
    message = one_line_error(LOADERS[loader], tmp_path, gguf_file="odd.gguf", cache_dir=cache)
    assert "architecture 'whatever' is not supported" in message
    # an architecture transformers lists, in a file without what it needs (no tokenizer)
    path = _write_gguf(tmp_path / "mamba.gguf", "mamba")
    message = one_line_error(LOADERS[loader], path, cache_dir=cache)
    assert message.startswith(
        f"{path}: transformers could not read this GGUF file (architecture 'mamba'): "
    ), message
    (tmp_path / "junk.gguf").write_bytes(b"GGUF" + bytes(20))
    assert "is not a readable GGUF file" in one_line_error(
        LOADERS[loader], tmp_path / "junk.gguf", cache_dir=cache
    )
    assert not cache.exists() or not any(cache.iterdir()), "a failed conversion left something in the cache"


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("name", ["nlhf-test/not-a-cached-model", "not-a-cached-model-nlhf"])
def test_hub_name_offline_and_not_cached(loader, name, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    message = one_line_error(LOADERS[loader], name)
    assert message.startswith(f"could not load {name!r}: it is not a local directory, not a known name"), (
        message
    )
    assert "(HF_HUB_OFFLINE is set, so the hub was not contacted)" in message, message


def test_wrong_kind_of_known_name():
    assert "'minilm' is an encoder, not a causal LM" in one_line_error(load_causal_lm, "minilm")
    assert "'smollm2' is a causal LM" in one_line_error(load_encoder, "smollm2")


# ----------------------------------------------------------------------------- pad token policy


def _word_tokenizer(**special):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "</s>": 1, "hello": 2}
    backend = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", **special)


def test_ensure_pad_token_policy(tiny_dirs):
    """No pad: pad = eos with a warning (ids and model configs follow); a pad already set is kept; no
    pad and no eos: ModelLoadError."""
    from nlhf.models.tiny import tiny_causal_lm, tiny_tokenizer

    tok = _word_tokenizer(eos_token="</s>")
    assert tok.pad_token is None
    model = tiny_causal_lm(tokenizer=tiny_tokenizer(), seed=0)
    model.config.pad_token_id = None
    model.generation_config.pad_token_id = None
    with pytest.warns(UserWarning, match="has no pad token; using the eos token '</s>' as pad"):
        assert ensure_pad_token(tok, model) is tok
    assert (tok.pad_token, tok.pad_token_id) == ("</s>", 1)
    assert model.config.pad_token_id == 1 and model.generation_config.pad_token_id == 1

    tok = _word_tokenizer(eos_token="</s>", pad_token="<unk>")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ensure_pad_token(tok)
    assert tok.pad_token_id == 0  # kept

    tok = _word_tokenizer()
    with pytest.raises(ModelLoadError, match="has neither a pad nor an eos token; set tokenizer.pad_token"):
        ensure_pad_token(tok)


def test_loaded_tokenizer_without_pad_gets_eos(tiny_dirs, tmp_path):
    """Through load_causal_lm: a saved tokenizer whose pad token was removed loads with pad = eos."""
    import shutil

    target = tmp_path / "nopad"
    shutil.copytree(tiny_dirs / "good", target)
    cfg_path = target / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("pad_token", None)
    cfg_path.write_text(json.dumps(cfg))
    with pytest.warns(UserWarning, match="has no pad token; using the eos token"):
        model, tok = load_causal_lm(target)
    assert tok.pad_token == tok.eos_token and tok.pad_token_id == tok.eos_token_id
    assert model.config.pad_token_id == tok.eos_token_id


# ----------------------------------------------------------------------------- nlhf's own model type


def test_tabular_directory_loads_in_a_fresh_interpreter(tmp_path):
    """config.json with model_type nlhf_tabular: load_causal_lm imports nlhf.models.tabular first."""
    code = (
        "import sys, torch\n"
        "torch.set_num_threads(1)\n"
        "from nlhf.models.loading import load_causal_lm\n"
        "assert 'nlhf.models.tabular' not in sys.modules\n"
        f"model, tok = load_causal_lm({str(tmp_path / 'tab')!r})\n"
        "from nlhf.models.tabular import action_probs\n"
        "print(type(model).__name__, [round(p, 6) for p in action_probs(model).tolist()])\n"
    )
    import torch

    from nlhf.models.tabular import tabular_lm, tabular_tokenizer

    tabular_lm(3, logits=torch.tensor([[0.0, 1.0, 2.0]])).save_pretrained(tmp_path / "tab")
    tabular_tokenizer(("a", "b", "c")).save_pretrained(tmp_path / "tab")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    assert json.loads((tmp_path / "tab" / "config.json").read_text())["model_type"] == "nlhf_tabular"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    # softmax([0, 1, 2]) = [0.090031, 0.244728, 0.665241]
    assert out.stdout.strip() == "TabularLM [0.090031, 0.244728, 0.665241]", out.stdout
