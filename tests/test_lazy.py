"""The lazy exports of nlhf (the Python API), nlhf.eval, nlhf.models and nlhf.sampling (nlhf._lazy.lazy_exports)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nlhf._lazy import lazy_exports

PACKAGES = ("nlhf", "nlhf.eval", "nlhf.models", "nlhf.sampling")


def fake_package() -> dict:
    """A package namespace exporting ``sqrt`` from math and ``dumps`` from json."""
    namespace = {"__name__": "pkg", "__all__": ["dumps", "sqrt"]}
    namespace["__getattr__"], namespace["__dir__"] = lazy_exports(
        namespace, {"sqrt": "math", "dumps": "json"}
    )
    return namespace


def test_getattr_imports_the_name_from_its_module_and_caches_it():
    ns = fake_package()
    import math

    assert "sqrt" not in ns
    assert ns["__getattr__"]("sqrt") is math.sqrt
    assert ns["sqrt"] is math.sqrt  # cached: the module's own lookup no longer reaches __getattr__


def test_unknown_name_is_an_attribute_error_naming_the_package():
    ns = fake_package()
    with pytest.raises(AttributeError, match=r"^module 'pkg' has no attribute 'cos'$"):
        ns["__getattr__"]("cos")


def test_dir_lists_the_namespace_and_all():
    ns = fake_package()
    assert ns["__dir__"]() == ["__all__", "__dir__", "__getattr__", "__name__", "dumps", "sqrt"]


@pytest.mark.parametrize("package", PACKAGES)
def test_package_exports_match_all_and_load_without_torch(package):
    """Importing the package and asking for a missing name loads neither torch nor transformers;
    every name of ``__all__`` has a module in ``_EXPORTS`` and the reverse."""
    code = (
        "import importlib, json, sys\n"
        f"pkg = importlib.import_module({package!r})\n"
        "try:\n"
        "    pkg.no_such_name\n"
        "except AttributeError as e:\n"
        "    error = str(e)\n"
        "print(json.dumps({'error': error, 'exports': sorted(pkg._EXPORTS), 'all': sorted(pkg.__all__),\n"
        "                  'heavy': sorted({'torch', 'transformers'} & set(sys.modules)),\n"
        "                  'in_dir': sorted(set(pkg.__all__) - set(dir(pkg)))}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    got = json.loads(proc.stdout)
    assert got["error"] == f"module '{package}' has no attribute 'no_such_name'"
    assert got["exports"] == got["all"]
    assert got["heavy"] == []
    assert got["in_dir"] == []  # dir() lists every export before it is loaded
