"""``nlhf lab`` commands, and the promise that ``import nlhf.lab`` stays free of torch."""

import json
import subprocess
import sys

import pytest

from nlhf.cli import main


def test_import_lab_does_not_import_torch_or_matplotlib():
    code = (
        "import sys, nlhf.lab, nlhf.lab.cli, nlhf.lab.showcase, nlhf.demo; "
        "print('torch' in sys.modules, 'matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_lab_nash_raters_prints_the_hand_equilibrium(capsys):
    assert main(["lab", "nash", "--game", "raters", "--tau", "0.1"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line[:2] in ("a ", "b ", "c ")}
    assert [float(rows[k][0]) for k in "abc"] == pytest.approx([0.5, 0.2, 0.3], abs=1e-6)


def test_lab_nash_json_and_errors(capsys):
    assert main(["lab", "nash", "--game", "tournament", "--n", "40", "--seed", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["nash_exploitability"] <= 1e-9 and result["pi_tau_residual"] <= 1e-12
    assert main(["lab", "nash", "--game", "rps", "--mu", "0.5,0.5"]) == 2
    assert "--mu: expected a probability vector of shape (3,)" in capsys.readouterr().err


def test_lab_nash_md_constant_step_reports_the_biased_point(tmp_path, capsys):
    args = [
        "lab",
        "nash-md",
        "--game",
        "rps",
        "--mu",
        "0.6,0.3,0.1",
        "--tau",
        "0.2",
        "--eta",
        "2",
        "--steps",
        "400",
        "--out",
        str(tmp_path),
    ]
    assert main(args) == 0
    result = json.loads((tmp_path / "nash_md.json").read_text())
    assert result["pi_T"] == pytest.approx(result["pg_stationary_point"], abs=1e-10)
    assert (tmp_path / "dynamics.png").stat().st_size > 10_000
    assert "pg_stationary_point(beta = eta tau = 0.4)" in capsys.readouterr().out


def test_lab_ipo_bandit_writes_results(tmp_path):
    args = [
        "lab",
        "ipo-bandit",
        "--dataset",
        "two",
        "--tau",
        "0.5",
        "1",
        "--seeds",
        "2",
        "--steps",
        "1500",
        "--out",
        str(tmp_path),
        "--no-plot",
    ]
    assert main(args) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["methods"]) == {"dpo", "ipo"}
    ipo = results["methods"]["ipo"]["0.5"]
    assert ipo["mean"][0] == pytest.approx(ipo["closed_form"][0], abs=1e-3)  # sigmoid(1) = 0.7311
    assert ipo["closed_form"][0] == pytest.approx(0.7310585786, abs=1e-9)
    assert results["methods"]["dpo"]["1"]["mean"][0] > 0.95
