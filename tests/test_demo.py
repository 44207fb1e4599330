"""``nlhf demo --quick`` runs the lab showcase and writes the report, results and plots."""

import json

import pytest
from scipy.special import expit

from nlhf.cli import main


def test_demo_quick_writes_report_and_results(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "[1/3] equilibria" in printed and "[3/3] ipo-bandit" in printed
    assert f"report: {out / 'report.md'}" in printed
    for name in (
        "report.md",
        "results.json",
        "equilibria.png",
        "dynamics_rps.png",
        "bandit_D1.png",
        "bandit_D2.png",
        "bandit_two.png",
    ):
        assert (out / name).stat().st_size > 500, name
    results = json.loads((out / "results.json").read_text())
    assert results["quick"] is True and results["device"] == "cpu"
    raters = next(e for e in results["equilibria"] if e["game"] == "raters")
    assert raters["nash"] == pytest.approx([0.5, 0.2, 0.3], abs=1e-9)
    bt = next(e for e in results["equilibria"] if e["game"] == "bt")
    assert bt["tv_pi_tau_vs_rlhf"] == pytest.approx(0.31, abs=0.005)
    nash_md_run = results["dynamics"]["runs"]["Nash-MD, eta_t = 2/(tau(t+2))"]
    assert nash_md_run["kl_at_steps"]["1000"] < 1e-5
    d1 = results["bandit"]["D1"]["methods"]
    assert d1["dpo"]["0.5"]["mean"][0] > 0.99
    assert d1["ipo"]["1"]["mean"] == pytest.approx(d1["ipo"]["1"]["closed_form"], abs=0.01)
    assert results["bandit"]["two"]["methods"]["ipo"]["0.1"]["mean"][0] == pytest.approx(expit(5.0), abs=1e-3)
    report = (out / "report.md").read_text()
    assert "## 3. IPO vs DPO" in report and "![dynamics](dynamics_rps.png)" in report
