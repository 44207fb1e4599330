"""The architecture test: read every import of every module under ``nlhf/`` and check the layers.

Like import-linter's contracts, from the source (``ast``: top-level imports, imports inside
functions and ``TYPE_CHECKING`` blocks alike). Data flows one way through the package; a
module imports only from its own layer or a lower one, and no two modules import each
other, directly or round a longer circle. Layers, low to high::

    base      nlhf (the package), nlhf._lazy, nlhf._version, nlhf.config
    data      nlhf.data
    models    nlhf.models
    judges    nlhf.judges (with nlhf.judges.http), nlhf.logprobs
    sampling  nlhf.sampling, nlhf.losses
    envs      nlhf.envs
    train     nlhf.train
    eval      nlhf.eval
    report    nlhf.report
    top       nlhf.demo (package), nlhf.pipeline (its old name, re-exports), nlhf.cli, nlhf.__main__, nlhf.api, and every area's command line
              (nlhf.train.cli, nlhf.eval.cli: the ``nlhf`` sub-commands next to the code they run)

``nlhf.lab`` stands beside all of them: anything may import it, and it imports nothing of
nlhf but itself and the base. A trainer never imports another trainer or the command line,
and the evaluation (``nlhf.eval``) imports no trainer. The checker is tested on synthetic
graphs too (it must be able to fail).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "nlhf"

LAYERS: dict[str, int] = {
    "": 0,  # the package itself
    "_lazy": 0,
    "_version": 0,
    "config": 0,
    "data": 1,
    "models": 2,
    "judges": 3,
    "logprobs": 3,
    "sampling": 4,
    "losses": 4,
    "envs": 5,
    "train": 6,
    "eval": 7,
    "report": 8,
    "demo": 9,
    "pipeline": 9,
    "cli": 9,
    "__main__": 9,
    "api": 9,  # the Python API (train_*, tournament): beside the command line
}
LAB = "lab"
BASE = 0
TOP = 9

# The trainers of nlhf.train: none imports another, nor the command line.
TRAINERS = (
    "nlhf.train.dpo",
    "nlhf.train.nash_md",
    "nlhf.train.online_ipo",
    "nlhf.train.rlhf",
    "nlhf.train.fit",
    "nlhf.train.sppo",
    "nlhf.train.inpo",
    "nlhf.train.dno",
    "nlhf.train.mpo",
    "nlhf.train.mirror_prox",
)
TRAIN_CLI = "nlhf.train.cli"

# No circle is tolerated (the last one, nlhf.demo <-> nlhf.pipeline, went with the nlhf/demo package).
KNOWN_CYCLES: list[list[str]] = []


# ----------------------------------------------------------------------------- reading the imports


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, modules: set[str], root: Path = ROOT) -> set[str]:
    """The nlhf modules ``path`` imports anywhere in its source (``from P import name`` counts as
    ``P.name`` when that is a module, else as ``P``)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                       for alias in node.names]  # fmt: skip
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import nlhf.a.b` names nlhf.a.b; trim to a module
                target = target.rpartition(".")[0]
            if target.startswith("nlhf") and target != name:
                found.add(target)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the nlhf modules it imports, for every ``.py`` file under ``root``."""
    paths = sorted(root.rglob("*.py"))
    modules = {module_name(p, root) for p in paths}
    return {module_name(p, root): imported_modules(p, modules, root) for p in paths}


# ----------------------------------------------------------------------------- the rules


def area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer(module: str) -> int | None:
    """The layer of ``module`` (None: an area without one); an area's ``cli`` module is on top."""
    name = area(module)
    if name != LAB and module.endswith(".cli"):
        return TOP
    return LAYERS.get(name)


def upward_edges(graph: Mapping[str, Iterable[str]]) -> list[str]:
    """Every import from a lower layer to a higher one (and out of ``nlhf.lab``), as ``a -> b`` lines."""
    bad = []
    for source, targets in sorted(graph.items()):
        for target in sorted(targets):
            a, b = area(source), area(target)
            if b == LAB:
                continue  # the lab stands beside everything
            if a == LAB:
                if LAYERS.get(b) != BASE:
                    bad.append(f"{source} -> {target} (nlhf.lab imports nothing of nlhf but itself)")
                continue
            la, lb = layer(source), layer(target)
            if la is None or lb is None:
                bad.append(f"{source} -> {target} (no layer for {a if la is None else b!r})")
            elif lb > la:
                bad.append(f"{source} -> {target} ({source} is below {b})")
    return bad


def trainer_edges(graph: Mapping[str, Iterable[str]]) -> list[str]:
    """Imports from a trainer to another trainer or to the command line, and from the evaluation to a trainer."""
    bad = [f"{source} -> {target}" for source in TRAINERS for target in sorted(graph.get(source, ()))
           if target in TRAINERS or target == TRAIN_CLI]  # fmt: skip
    bad += [f"{source} -> {target}" for source, targets in sorted(graph.items()) if area(source) == "eval"
            for target in sorted(targets) if target in TRAINERS]  # fmt: skip
    return bad


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The import circles: the strongly connected components of more than one module (Tarjan), and self-loops."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # recursion depth: the longest import chain, a few dozen
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


# ----------------------------------------------------------------------------- the tests


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_the_graph_is_read(graph):
    """The reader finds top-level and in-function imports (guards against a reader that sees nothing)."""
    assert len(graph) > 80
    assert "nlhf.train.run" in graph["nlhf.train.nash_md"]  # top-level
    assert "nlhf.losses.nash" in graph["nlhf.train.nash_md"]  # inside make_step
    assert "nlhf.sampling.decode" in graph["nlhf.train.rollouts"]  # inside a function


def test_no_import_circles(graph):
    assert [c for c in cycles(graph) if c not in KNOWN_CYCLES] == []


def test_no_import_from_a_lower_layer_to_a_higher_one(graph):
    assert upward_edges(graph) == []


def test_no_trainer_imports_another_trainer_or_the_cli(graph):
    assert trainer_edges(graph) == []


def test_every_area_has_a_layer(graph):
    assert sorted({area(m) for m in graph} - set(LAYERS) - {LAB}) == []


# negative controls: the checks report what they are for


def test_cycle_check_reports_a_circle():
    synthetic = {"nlhf.a": {"nlhf.b"}, "nlhf.b": {"nlhf.c"}, "nlhf.c": {"nlhf.a"}, "nlhf.d": {"nlhf.a"}}
    assert cycles(synthetic) == [["nlhf.a", "nlhf.b", "nlhf.c"]]
    assert cycles({"nlhf.a": {"nlhf.b"}, "nlhf.b": set()}) == []


def test_layer_check_reports_an_upward_import():
    synthetic = {
        "nlhf.eval.tournament": {"nlhf.report.writer", "nlhf.data.collate", "nlhf.lab.solvers"},
        "nlhf.eval.cli": {"nlhf.report.writer"},  # an area's command line is on top
        "nlhf.lab.games": {"nlhf.models.tiny"},
        "nlhf.data.load": {"nlhf.config", "nlhf.models.tiny"},
    }
    assert upward_edges(synthetic) == [
        "nlhf.data.load -> nlhf.models.tiny (nlhf.data.load is below models)",
        "nlhf.eval.tournament -> nlhf.report.writer (nlhf.eval.tournament is below report)",
        "nlhf.lab.games -> nlhf.models.tiny (nlhf.lab imports nothing of nlhf but itself)",
    ]


def test_trainer_check_reports_a_trainer_importing_another():
    synthetic = {
        "nlhf.train.rlhf": {"nlhf.train.nash_md", "nlhf.train.run"},
        "nlhf.train.dpo": {"nlhf.train.cli"},
    }
    assert trainer_edges(synthetic) == [
        "nlhf.train.dpo -> nlhf.train.cli",
        "nlhf.train.rlhf -> nlhf.train.nash_md",
    ]


def test_reader_sees_imports_inside_functions(tmp_path):
    pkg = tmp_path / "nlhf"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("")
    (pkg / "data" / "a.py").write_text("def f():\n    from nlhf.train import b\n")
    (pkg / "train").mkdir()
    (pkg / "train" / "__init__.py").write_text("")
    (pkg / "train" / "b.py").write_text("from nlhf.data.a import f\n")
    g = import_graph(pkg)
    assert g["nlhf.data.a"] == {"nlhf.train.b"}
    assert cycles(g) == [["nlhf.data.a", "nlhf.train.b"]]
    assert upward_edges(g) == ["nlhf.data.a -> nlhf.train.b (nlhf.data.a is below train)"]
