"""Frozen dataclass configs: built from dicts, YAML files and ``key=value`` overrides.

Every config in nlhf is a frozen dataclass. This module turns untrusted input (a YAML
file, command-line overrides) into such a dataclass, and refuses anything it does not
understand *before* any model is loaded:

* an unknown key            -> ``ConfigError: unknown key 'optim.lrr' (known: ...)``
* a value of the wrong type -> ``ConfigError: optim.lr: expected float, got str 'fast'``
* a value out of range      -> raised by the dataclass's own ``__post_init__`` through
  :func:`check`, which names the key.

From Python, :func:`build_config` takes a config object, a dict or keyword arguments,
with nested sections as plain dicts. A nested section given in part keeps its field's own
defaults for the rest (``optim.warmup_steps=0`` leaves a trainer's ``optim.lr=1e-6``, not
``OptimConfig``'s 1e-4). Overrides use dotted paths into nested dataclasses, and their values are parsed as YAML
scalars (``optim.lr=3e-4``, ``lora=true``, ``model=null``). The resolved config is saved
in every run directory with :func:`save_config`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value that cannot be used; the message names the offending key."""


def check(condition: bool, key: str, message: str) -> None:
    """Raise :class:`ConfigError` naming ``key`` unless ``condition`` holds.

    Meant for ``__post_init__`` range checks: ``check(self.tau > 0, "tau", "must be > 0")``.
    """
    if not condition:
        raise ConfigError(f"{key}: {message}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check (and minimally coerce) ``value`` against the annotation ``tp``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got null")
        options = [arg for arg in args if arg is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own error names the key and the reason
            return _coerce(value, options[0], key)
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key}: must be one of {list(allowed)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {type(value).__name__}")
        return from_dict(tp, value, prefix=f"{key}.")
    if origin in (tuple, list, Sequence) or tp in (tuple, list):
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        args = get_args(tp)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            item_tp = args[0]
        elif origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        else:
            item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected bool, got {type(value).__name__} {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected int, got {type(value).__name__} {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected float, got {type(value).__name__} {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected str, got {type(value).__name__} {value!r}")
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise ConfigError(f"{key}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build the dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key '{prefix}{unknown[0]}' (known keys{' under ' + prefix.rstrip('.') if prefix else ''}: "
            f"{', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, value in data.items():
        default = _field_default(fields[name])
        if isinstance(value, Mapping) and dataclasses.is_dataclass(default) and not isinstance(default, type):
            value = merge(_init_fields(default), value)  # a nested section keeps its field's own defaults
        kwargs[name] = _coerce(value, hints[name], f"{prefix}{name}")
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        if prefix and not str(exc).startswith(prefix):
            raise ConfigError(f"{prefix}{exc}") from None
        raise
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {exc}") from None


def _field_default(f: dataclasses.Field) -> Any:
    """The default value of the dataclass field ``f`` (its factory called), or None when it has none."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def to_dict(cfg: Any) -> dict[str, Any]:
    """The plain-data form of a config (tuples become lists), suitable for YAML/JSON."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, Mapping):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return plain(cfg)


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``["optim.lr=1e-4", "lora=true"]`` -> ``{"optim": {"lr": 1e-4}, "lora": True}``."""
    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip().lstrip("-").replace("-", "_")
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: '{part}' is not a section")
        node[parts[-1]] = value
    return nested


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``update`` wins."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    defaults: Mapping[str, Any] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> T:
    """Resolve ``cls``: ``defaults`` < the YAML file < ``key=value`` overrides < ``flags``.

    ``flags`` are the dedicated command-line options (``--data``, ``--out``...): entries
    whose value is None (an option not given) are ignored.
    """
    data: dict[str, Any] = dict(defaults or {})
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{path}: the top level must be a mapping, got {type(loaded).__name__}")
        data = merge(data, loaded)
    data = merge(data, parse_overrides(overrides))
    data = merge(data, {k: v for k, v in (flags or {}).items() if v is not None})
    return from_dict(cls, data)


def resolve_config(
    cls: type[T],
    config_path: str | Path | None = None,
    overrides: Sequence[str] = (),
    flags: Mapping[str, Any] | None = None,
    fixed: Mapping[str, Any] | None = None,
) -> T:
    """Build ``cls`` from its defaults < ``fixed`` < YAML < ``key=value`` overrides < non-None ``flags``.

    Resolved by :func:`load_config` (unknown keys and wrong types are rejected naming the
    key). A ``fixed`` key that the YAML file or the overrides set to another value is a
    :class:`ConfigError`: ``nlhf train dpo loss=ipo`` is a contradiction, not a choice.
    """
    fixed = dict(fixed or {})
    cfg = load_config(cls, config_path, overrides, defaults=fixed, flags=flags)
    for key, value in fixed.items():
        if getattr(cfg, key) != value:
            raise ConfigError(
                f"{key}: this sub-command sets {key}={value}, but the config says {key}={getattr(cfg, key)!r}"
            )
    return cfg


def build_config(cls: type[T], config: Any = None, /, **overrides: Any) -> T:
    """``cls`` from a config object, a plain dict or keyword arguments (or a config/dict plus keyword overrides).

    Nested sections may be plain dicts (``loop={"max_steps": 2}``, ``lora={"r": 8}``): every
    level goes through :func:`from_dict`, so nested dicts become their typed dataclasses and
    an unknown key is a :class:`ConfigError` naming it (``unknown key 'loop.max_step'``).
    A keyword override merges into a nested section of ``config`` (``loop={"seed": 1}``
    changes only the seed). ``config`` of another config class is an error.
    """
    if config is None:
        data: dict[str, Any] = {}
    elif isinstance(config, cls):
        if not overrides:
            return config
        data = _init_fields(config)
    elif isinstance(config, Mapping):
        data = dict(config)
    else:
        raise ConfigError(f"config: expected a {cls.__name__} or a mapping, got {type(config).__name__}")
    return from_dict(cls, merge(data, overrides))


def sections_from_dicts(cfg: Any) -> None:
    """Turn the nested sections of the config dataclass ``cfg`` given as plain dicts into their dataclasses, in place.

    Called first in a config's ``__post_init__``, so ``NashMDConfig(loop={"max_steps": 2})`` works
    like the YAML/command line: a partial section keeps the field's own default for the other keys
    (``optim={"lr": 1e-5}`` keeps the trainer's ``warmup_steps``), and an unknown key is a
    :class:`ConfigError` naming it (``unknown key 'loop.max_step'``).
    """
    hints = get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if not f.init or not isinstance(value, Mapping):
            continue
        tp = hints[f.name]
        options = (
            [a for a in get_args(tp) if a is not type(None)]
            if get_origin(tp) in (Union, types.UnionType)
            else [tp]
        )
        if len(options) != 1 or not dataclasses.is_dataclass(options[0]):
            continue  # a plain dict field (or a union the YAML loader resolves)
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        base = _init_fields(default) if dataclasses.is_dataclass(default) else {}
        object.__setattr__(cfg, f.name, from_dict(options[0], merge(base, value), prefix=f"{f.name}."))


def _init_fields(cfg: Any) -> dict[str, Any]:
    """The constructor arguments of the config dataclass ``cfg`` (nested configs as dicts, recursively)."""
    return {
        f.name: _init_fields(v) if dataclasses.is_dataclass(v := getattr(cfg, f.name)) else v
        for f in dataclasses.fields(cfg)
        if f.init
    }


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically: temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    tmp.replace(path)


def replace(cfg: T, **changes: Any) -> T:
    """``dataclasses.replace`` that re-runs validation."""
    return dataclasses.replace(cfg, **changes)


__all__ = [
    "ConfigError",
    "check",
    "from_dict",
    "to_dict",
    "parse_overrides",
    "merge",
    "load_config",
    "resolve_config",
    "build_config",
    "sections_from_dicts",
    "save_config",
    "replace",
]

# keep typing imported for forward references resolved by get_type_hints
_ = typing
