"""The policies of a tournament: :class:`PolicyEntry` and :func:`load_policy` (run dirs, saved policies, names).

A spec is one of (tried in this order):

1. a training run directory written by ``nlhf train`` (:func:`nlhf.train.dpo.run_offline`,
   :func:`nlhf.train.nash_md.run_nash_md`, :func:`nlhf.train.rlhf.run_rlhf`): it holds
   ``config.yaml`` (whose ``model`` key names the base model mu) and ``policy/`` (the saved
   policy, merged or a LoRA adapter directory). The base model is loaded too, as the
   entry's ``reference`` (mu, for the KL column), unless ``load_reference=False`` or the
   policy is an adapter directory (then mu is the base with the adapter disabled);
2. a saved policy directory (``config.json`` or ``adapter_config.json``: written by
   :func:`nlhf.models.policy.save_policy`, merged or adapter);
3. ``"tiny"`` (``"tiny:SEED"``): the random test model of :mod:`nlhf.models.tiny`;
4. anything :func:`nlhf.models.loading.load_causal_lm` accepts (``"smollm2"``, a hub
   name, a path, a ``.gguf`` file).

A spec that loads nothing is a ``ValueError`` naming the spec and why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUN_POLICY_DIR = "policy"
RUN_CONFIG = "config.yaml"
TINY = "tiny"


@dataclass
class PolicyEntry:
    """One policy of a tournament.

    ``reference``: mu's model for the KL column. None -> the base with the adapter disabled
    if ``model`` is a peft model, else the tournament's reference policy (if any), else no KL.
    """

    name: str
    model: Any  # a Hugging Face causal LM, possibly a peft model (LoRA)
    tokenizer: Any
    reference: Any = None
    spec: str = ""  # where it was loaded from (for the report)


def _load_model(spec: str, device: str, dtype: Any) -> tuple[Any, Any]:
    """(model, tokenizer) for a model name/path/tiny spec (no run-directory logic), in eval mode."""
    from nlhf.models.loading import ModelLoadError, load_model

    try:
        model, tok = load_model(spec, dtype=dtype or "float32", device=device)
    except ModelLoadError as exc:
        if spec.startswith(TINY + ":"):  # a bad tiny seed is a bad policy spec
            raise ValueError(f"policy spec {spec!r}: expected tiny or tiny:SEED (an integer seed)") from exc
        raise
    return model.eval(), tok


def _run_config(run_dir: Path) -> dict[str, Any]:
    import yaml

    path = run_dir / RUN_CONFIG
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"policy spec {str(run_dir)!r}: cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"policy spec {str(run_dir)!r}: {path} is not a mapping")
    return data


def _base_spec(run_cfg: dict[str, Any]) -> str | None:
    model = run_cfg.get("model")
    if not model:
        return None
    if model == TINY:  # the trainers seed the tiny model with loop.seed
        seed = (run_cfg.get("loop") or {}).get("seed", 0)
        return f"{TINY}:{int(seed)}"
    return str(model)


def _load_run(run_dir: Path, device: str, dtype: Any, load_reference: bool, cache: dict | None) -> tuple:
    """(model, tokenizer, reference) from a training run directory."""
    policy_dir = run_dir / RUN_POLICY_DIR
    run_cfg = _run_config(run_dir)
    base = _base_spec(run_cfg)
    dtype = dtype or run_cfg.get("dtype") or "float32"
    if not policy_dir.is_dir():
        ckpts = sorted(p.name for p in run_dir.glob("ckpt-*"))
        raise ValueError(
            f"policy spec {str(run_dir)!r}: a run directory without {RUN_POLICY_DIR}/ (training not finished?"
            f"{' checkpoints: ' + ', '.join(ckpts) if ckpts else ''})"
        )
    is_adapter = (policy_dir / "adapter_config.json").is_file() and not (policy_dir / "config.json").is_file()
    if is_adapter:
        if base is None:
            raise ValueError(
                f"policy spec {str(run_dir)!r}: {RUN_CONFIG} names no base model for the adapter"
            )
        from peft import PeftModel

        base_model, tok = _load_model(base, device, dtype)  # a fresh copy: the adapter is attached to it
        model = PeftModel.from_pretrained(base_model, str(policy_dir)).eval()
        if any((policy_dir / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
            from transformers import AutoTokenizer

            from nlhf.models.loading import ensure_pad_token

            tok = ensure_pad_token(AutoTokenizer.from_pretrained(str(policy_dir)))
        return model, tok, None  # mu: the base with the adapter disabled
    model, tok = _load_model(str(policy_dir), device, dtype)
    reference = None
    if load_reference and base is not None:
        key = (base, str(device), str(dtype))
        if cache is not None and key in cache:
            reference = cache[key]
        else:
            reference, _ = _load_model(base, device, dtype)
            reference.requires_grad_(False)
            if cache is not None:
                cache[key] = reference
    return model, tok, reference


def load_policy(
    spec: str,
    *,
    name: str | None = None,
    device: str = "cpu",
    dtype: Any = None,
    load_reference: bool = True,
    reference_cache: dict | None = None,
) -> PolicyEntry:
    """Load a policy for :func:`nlhf.eval.run_tournament` from a run directory, a saved policy or a model name.

    See the module docstring for the accepted specs. ``name`` defaults to the directory's
    name (a run directory's own name, not ``policy``) or the spec. ``reference_cache``: a
    dict shared between calls so that run directories with the same base model share one
    frozen copy of it. Raises ``ValueError`` naming the spec when nothing loads.
    """
    from nlhf.models.loading import ModelLoadError

    spec = str(spec)
    path = Path(spec).expanduser()
    default_name = spec
    if path.is_dir():
        resolved = path.resolve()
        default_name = resolved.parent.name if resolved.name == RUN_POLICY_DIR else resolved.name
    is_run = path.is_dir() and ((path / RUN_POLICY_DIR).is_dir() or (path / RUN_CONFIG).is_file())
    try:
        if is_run:
            model, tok, reference = _load_run(path, device, dtype, load_reference, reference_cache)
        elif path.is_dir() and not any((path / f).is_file() for f in ("config.json", "adapter_config.json")):
            raise ValueError(
                f"policy spec {spec!r}: a directory that is neither a run directory ({RUN_CONFIG} and "
                f"{RUN_POLICY_DIR}/) nor a saved model (config.json or adapter_config.json)"
            )
        else:
            model, tok = _load_model(spec, device, dtype)
            reference = None
    except (ModelLoadError, OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"policy spec {spec!r}: could not load a causal LM: {exc}") from exc
    model.eval()
    return PolicyEntry(name=name or default_name, model=model, tokenizer=tok, reference=reference, spec=spec)


def parse_policy_arg(arg: str) -> tuple[str | None, str]:
    """``"NAME=SPEC"`` -> (NAME, SPEC); a bare ``"SPEC"`` -> (None, SPEC)."""
    if "=" in arg:
        name, spec = arg.split("=", 1)
        if not name or not spec:
            raise ValueError(f"--policy {arg!r}: expected NAME=SPEC")
        return name, spec
    return None, arg
