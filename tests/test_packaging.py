"""``pyproject.toml``'s package data: every declared pattern matches a file that exists (issue 13)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_data_pattern_matches_a_file():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = data["tool"]["setuptools"]["package-data"]
    for package, patterns in declared.items():
        base = ROOT / package.replace(".", "/")
        for pattern in patterns:
            assert sorted(base.glob(pattern)), f"package data {package}: {pattern} matches no file"


def test_the_check_can_fail(tmp_path):
    assert not sorted((ROOT / "nlhf").glob("configs/*.yaml"))  # the pattern declared before, with no file


def test_the_version_is_the_same_in_pyproject_and_the_package():
    import nlhf
    from nlhf._version import __version__

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    assert project["version"] == __version__ == nlhf.__version__
