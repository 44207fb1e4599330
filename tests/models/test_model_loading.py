"""The loader on tiny models: local paths, pad = eos, clear errors, GGUF checks, the atomic cache."""

from __future__ import annotations

import json

import pytest
import torch

from nlhf.models import ModelLoadError, load_backbone, load_causal_lm, load_encoder
from nlhf.models import gguf as G
from nlhf.models import loading as L
from nlhf.models.tiny import tiny_causal_lm


def test_local_directory_round_trip(tmp_path, tiny_lm, tiny_tok):
    tiny_lm.save_pretrained(tmp_path / "m")
    tiny_tok.save_pretrained(tmp_path / "m")
    model, tok = load_causal_lm(str(tmp_path / "m"))
    assert not model.training and tok.pad_token == tok.eos_token == "<|im_end|>"
    ids = torch.tensor([[5, 6, 7, 2]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, tiny_lm(ids).logits, atol=0, rtol=0)
    base, _ = load_backbone(str(tmp_path / "m"))
    assert type(base).__name__ == "LlamaModel"  # no LM head for a preference/reward backbone
    half, _ = load_causal_lm(tmp_path / "m", dtype="bfloat16")
    assert next(half.parameters()).dtype == torch.bfloat16


def test_tokenizer_without_pad_gets_eos_with_a_warning(tmp_path, tiny_tok):
    tiny_tok.pad_token = None
    model = tiny_causal_lm(tokenizer=tiny_tok)
    model.config.pad_token_id = None
    model.save_pretrained(tmp_path / "m")
    tiny_tok.save_pretrained(tmp_path / "m")
    with pytest.warns(UserWarning, match="no pad token"):
        model, tok = load_causal_lm(tmp_path / "m")
    assert tok.pad_token == "<|im_end|>" and tok.pad_token_id == tok.eos_token_id == 2
    assert model.config.pad_token_id == 2


@pytest.mark.parametrize("name", ["./no/such/model", "/no/such/dir", "~/no-such-model-xyz", "missing.gguf"])
def test_missing_path_is_a_clear_error(name):
    with pytest.raises(ModelLoadError, match="not found"):
        load_causal_lm(name)


def test_hub_name_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="hub name failed.*HF_HUB_OFFLINE"):
        load_causal_lm("nlhf-test-no-such-org/no-such-model")


def test_names_of_the_wrong_kind(tmp_path):
    with pytest.raises(ModelLoadError, match="is an encoder"):
        load_causal_lm("minilm")
    with pytest.raises(ModelLoadError, match="is a causal LM"):
        load_encoder("smollm2")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="not a model directory"):
        load_causal_lm(tmp_path / "empty")


def test_minilm_encoder():
    model, tok = load_encoder("minilm")
    assert type(model).__name__ == "BertModel" and model.config.hidden_size == 384
    assert tok.pad_token == "[PAD]" and tok.cls_token == "[CLS]" and tok.model_max_length == 512


def _write_gguf(path, arch: str) -> None:
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), arch)
    writer.add_tensor("token_embd.weight", np.zeros((4, 2), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_gguf_architecture_checks(tmp_path):
    _write_gguf(tmp_path / "odd.gguf", "madeup_arch")
    assert G.gguf_architecture(tmp_path / "odd.gguf") == "madeup_arch"
    with pytest.raises(ModelLoadError, match="architecture 'madeup_arch' is not supported.*llama"):
        load_causal_lm(tmp_path / "odd.gguf", cache_dir=tmp_path / "cache")
    with pytest.raises(ModelLoadError, match="architecture 'madeup_arch'"):
        load_causal_lm(tmp_path, gguf_file="odd.gguf", cache_dir=tmp_path / "cache")
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(ModelLoadError, match="not a readable GGUF file"):
        load_causal_lm(tmp_path / "junk.gguf", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "smollm2").exists()
    assert not list((tmp_path / "cache").glob("gguf-*"))  # failed conversions leave no cache


def test_atomic_directory_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), L.atomic_directory(target) as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("killed mid-write")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with L.atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("1")
    assert (target / "a.txt").read_text() == "1"
    with L.atomic_directory(target) as tmp:  # target exists, no overwrite: the old one stays
        (tmp / "a.txt").write_text("2")
    assert (target / "a.txt").read_text() == "1"
    with L.atomic_directory(target, overwrite=True) as tmp:
        (tmp / "a.txt").write_text("3")
    assert (target / "a.txt").read_text() == "3" and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_gguf_cache_converts_once_and_rebuilds_incomplete(tmp_path, monkeypatch):
    """The conversion is replaced by a stub that records calls; the cache logic is real.

    1st call converts (and removes an hour-old temporary directory of a killed conversion,
    not a fresh one); 2nd reads the cache; a cache without its marker file (what a crash
    between files would leave if writes were not atomic) is rebuilt; a changed source file
    (different size) is rebuilt too."""
    source = tmp_path / "model.gguf"
    source.write_bytes(b"0" * 10)
    calls = []

    def fake_convert(gguf_path, out_dir, *, overwrite=False):
        calls.append(overwrite)
        with L.atomic_directory(out_dir, overwrite=overwrite) as tmp:
            (tmp / "config.json").write_text("{}")
            (tmp / L.CACHE_MARKER).write_text(json.dumps(G._gguf_source_record(source)))
        return out_dir

    monkeypatch.setattr(G, "convert_gguf", fake_convert)
    cache = tmp_path / "cache"
    import os
    import time

    name = G._gguf_cache_name(source)
    stale = cache / f".tmp-{name}-killed"  # what a SIGKILL mid-conversion left 2 hours ago
    fresh = cache / f".tmp-{name}-running"  # another process converting right now
    stale.mkdir(parents=True)
    fresh.mkdir()
    old = time.time() - 7200
    os.utime(stale, (old, old))
    first = G.cached_gguf_dir(source, cache_dir=cache)
    assert first.parent == cache and first.name.startswith("gguf-model-") and calls == [False]
    assert not stale.exists() and fresh.exists()
    assert G.cached_gguf_dir(source, cache_dir=cache) == first and calls == [False]
    (first / L.CACHE_MARKER).unlink()
    assert G.cached_gguf_dir(source, cache_dir=cache) == first and calls == [False, True]
    source.write_bytes(b"0" * 11)
    G.cached_gguf_dir(source, cache_dir=cache)
    assert calls == [False, True, True]
    assert json.loads((first / L.CACHE_MARKER).read_text())["size"] == 11


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("NLHF_CACHE", str(tmp_path))
    assert L.default_cache_dir() == tmp_path / "models"
    monkeypatch.delenv("NLHF_CACHE")
    assert L.default_cache_dir().parts[-3:] == (".cache", "nlhf", "models")
