"""GGUF files converted once and cached as safetensors (docs/PEERS.md, "Pitfalls").

transformers de-quantises GGUF tensors on load (~20-40 s on 2 cores) but leaves a quantizer
attached (``model.hf_quantizer``, ``config.quantization_config``) that blocks training and
``save_pretrained``. :func:`convert_gguf` rebuilds the model from its config *without* the
quantisation entry, loads the de-quantised state dict (logits are identical), and writes
model + tokenizer into the cache directory atomically (:func:`nlhf.models.files.atomic_directory`).
:func:`cached_gguf_dir` returns the cache of a GGUF file, converting it when the cache is
missing or stale (the source's size and modification time are recorded in ``CACHE_MARKER``).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from nlhf.models.files import (
    CACHE_MARKER,
    SMOLLM2_PACKAGE,
    ModelLoadError,
    atomic_directory,
    default_cache_dir,
    ensure_pad_token,
    one_line,
    smollm2_gguf_path,
)


def gguf_architecture(path: str | os.PathLike[str]) -> str:
    """The ``general.architecture`` field of a GGUF file (read from its header only)."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except Exception as exc:  # the gguf package raises many types
        raise ModelLoadError(f"{path} is not a readable GGUF file: {exc}") from exc
    field = reader.fields.get("general.architecture")
    if field is None:
        raise ModelLoadError(f"{path}: GGUF file has no 'general.architecture' field")
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def _supported_gguf_architectures() -> list[str]:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return [a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer")]


def _gguf_source_record(path: Path) -> dict[str, Any]:
    import transformers

    st = path.stat()
    return {
        "source": str(path.resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "transformers": transformers.__version__,
    }


def _gguf_cache_name(path: Path) -> str:
    if _has_package(SMOLLM2_PACKAGE) and path.resolve() == smollm2_gguf_path().resolve():
        return "smollm2"
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    return f"gguf-{path.stem}-{digest}"


def _has_package(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def _cache_is_valid(cache: Path, record: dict[str, Any]) -> bool:
    marker = cache / CACHE_MARKER
    if not marker.is_file():
        return False
    try:
        saved = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return saved.get("size") == record["size"] and saved.get("source") == record["source"]


def convert_gguf(
    gguf_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """De-quantise a GGUF checkpoint into a plain ``save_pretrained`` directory (atomically).

    The model is rebuilt from its config with ``quantization_config`` removed (the GGUF
    quantizer flag blocks training and saving, docs/PEERS.md) and the de-quantised state
    dict is loaded into it, so logits are identical to the GGUF load. Returns ``out_dir``.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise ModelLoadError(f"GGUF file not found: {gguf_path}")
    arch = gguf_architecture(gguf_path)
    supported = _supported_gguf_architectures()
    if arch not in supported:
        raise ModelLoadError(
            f"{gguf_path}: GGUF architecture {arch!r} is not supported by transformers "
            f"(supported: {', '.join(sorted(supported))})"
        )
    folder, fname = str(gguf_path.parent), gguf_path.name
    record = _gguf_source_record(gguf_path)
    t0 = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
        quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=torch.float32)
    except Exception as exc:  # transformers raises ValueError, KeyError, OSError... for broken files
        raise ModelLoadError(
            f"{gguf_path}: transformers could not read this GGUF file (architecture {arch!r}): {one_line(exc)}"
        ) from exc
    state = quantized.state_dict()
    config_dict = quantized.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    model_type = config_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **config_dict)
    del quantized
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    missing = [k for k in missing if k not in tied and not k.endswith("lm_head.weight")]
    if missing or unexpected:
        raise ModelLoadError(
            f"{gguf_path}: rebuilt model does not match the GGUF tensors "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    ensure_pad_token(tokenizer, model)
    record["convert_seconds"] = round(time.perf_counter() - t0, 2)
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / CACHE_MARKER).write_text(json.dumps(record, indent=2) + "\n")
    return Path(out_dir)


def _remove_stale_temporaries(target: Path, older_than_s: float = 3600.0) -> None:
    """Delete ``.tmp-<name>-*`` siblings left by killed conversions (older than an hour, so a
    conversion still running in another process is left alone)."""
    if not target.parent.is_dir():
        return
    now = time.time()
    for tmp in target.parent.glob(f".tmp-{target.name}-*"):
        with contextlib.suppress(OSError):
            if now - tmp.stat().st_mtime > older_than_s:
                shutil.rmtree(tmp, ignore_errors=True)


def cached_gguf_dir(
    gguf_path: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    name: str | None = None,
) -> Path:
    """The converted-safetensors directory for ``gguf_path``, converting it on first use."""
    gguf_path = Path(gguf_path).expanduser()
    if not gguf_path.is_file():
        raise ModelLoadError(f"GGUF file not found: {gguf_path}")
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = root / (name or _gguf_cache_name(gguf_path))
    record = _gguf_source_record(gguf_path)
    if _cache_is_valid(target, record):
        return target
    _remove_stale_temporaries(target)
    # absent, or stale (the source file changed) / incomplete: (re)build it
    return convert_gguf(gguf_path, target, overwrite=target.exists())


__all__ = ["cached_gguf_dir", "convert_gguf", "gguf_architecture"]
