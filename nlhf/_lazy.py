"""Lazy package exports: a package's public names load from their submodules on first use.

Keeps ``import nlhf.<package>`` cheap (no torch, transformers or matplotlib until a name that
needs them is used). A package ``__init__`` declares each public name once, in
``_EXPORTS = {name: submodule}``, and derives the rest from it::

    __all__ = sorted(_EXPORTS)
    __getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)

(No ``TYPE_CHECKING`` mirror of the table: it would declare every name a second time.
Static tools find a name's home in the table, or import it from its submodule.)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    namespace: dict[str, Any], exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` (PEP 562) of the package whose ``globals()`` is ``namespace``.

    ``__getattr__(name)`` imports ``exports[name]``, caches the attribute in ``namespace`` (the
    next lookup does not come here) and returns it; a name not in ``exports`` raises
    ``AttributeError: module '<package>' has no attribute '<name>'``. ``__dir__()`` lists the
    names already in ``namespace`` and the package's ``__all__``.
    """
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(list(namespace) + list(namespace["__all__"]))

    return __getattr__, __dir__
