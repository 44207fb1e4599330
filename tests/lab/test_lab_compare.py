"""``nlhf lab compare``: every row of the table against a direct run of its algorithm."""

import argparse
import json

import numpy as np
import pytest

from nlhf.lab import nash_equilibrium, nash_md, psipo_optimum, regularized_nash, running_average
from nlhf.lab.compare import algorithms, classify_limit, compare, compare_game, format_table
from nlhf.lab.successors import dno, sppo

ROW_KEYS = [
    "nash_md",
    "inpo",
    "best_response",
    "nash_ema",
    "mirror_prox",
    "mpo",
    "mwu",
    "sppo",
    "sppo_avg",
    "dno",
    "dno_avg",
    "ipo",
    "rlhf",
]


def _tv(p, q):
    return 0.5 * float(np.abs(np.asarray(p) - np.asarray(q)).sum())


@pytest.fixture(scope="module")
def small():
    return compare(("rps", "random5"), tau=0.1, eta=1.0, checkpoints=(10, 100))


def test_every_algorithm_has_a_row_per_game(small):
    assert [a.key for a in algorithms()] == ROW_KEYS
    for entry in small["games"].values():
        assert [row["key"] for row in entry["rows"]] == ROW_KEYS
        for row in entry["rows"]:
            assert set(row["tv"]) == {"10", "100"} and set(row["exploitability"]) == {"10", "100"}
    table = format_table(small)
    assert table.count("\n| rps |") == len(ROW_KEYS) and table.count("\n| random5 |") == len(ROW_KEYS)


def test_rows_match_direct_runs(small):
    game, mu = compare_game("rps")
    rows = {row["key"]: row for row in small["games"]["rps"]["rows"]}
    pi_tau = regularized_nash(game, mu, 0.1)
    nash = nash_equilibrium(game)
    assert rows["nash_md"]["tv"]["100"] == pytest.approx(
        _tv(nash_md(game, mu, 0.1, 100)[100], pi_tau), abs=1e-14
    )
    assert rows["sppo_avg"]["tv"]["100"] == pytest.approx(
        _tv(running_average(sppo(game, mu, 100, 1.0))[100], nash), abs=1e-14
    )
    last = dno(game, mu, 100, 0.1, 0.1)[100]
    assert rows["dno"]["exploitability"]["100"] == pytest.approx(
        float(np.max(game.P @ last) - 0.5), abs=1e-14
    )
    ipo = psipo_optimum(game, mu, mu, 0.1, "identity")
    assert rows["ipo"]["tv"]["10"] == rows["ipo"]["tv"]["100"] == pytest.approx(_tv(ipo, pi_tau), abs=1e-14)
    # what the exact lab says each run converges to, on rps by T = 100
    assert rows["inpo"]["limit"] == "pi*_tau" and rows["mirror_prox"]["limit"] == "pi*_tau"
    assert rows["sppo"]["limit"] == "nothing (cycles)" and rows["dno"]["limit"] == "nothing (cycles)"
    assert rows["best_response"]["limit"] == "BR_tau(mu)"
    assert rows["rlhf"]["limit"] == "a BT optimum"


def test_classify_limit_cases():
    still = np.tile([0.5, 0.5], (101, 1))
    moving = np.array([[0.5 + 0.4 * np.sin(t), 0.5 - 0.4 * np.sin(t)] for t in range(101)])
    assert classify_limit(still, np.full(101, 1e-4), "Nash") == "Nash"
    assert classify_limit(still, 1.0 / np.arange(1, 102), "Nash") == "Nash, slowly"
    assert classify_limit(moving, np.full(101, 0.3), "Nash") == "nothing (cycles)"
    assert classify_limit(still, np.full(101, 0.3), "Nash") == "another point"


def test_lab_compare_command_prints_table_and_writes_json_and_plot(tmp_path, capsys):
    from nlhf.lab.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["lab", "compare", "--games", "rps", "--steps", "50", "--out", str(tmp_path)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "| rps | SPPO last iterate, eta = 1 | sppo | Nash |" in out and "TV T=50" in out
    result = json.loads((tmp_path / "compare.json").read_text())
    assert result["checkpoints"] == [10, 50]
    assert [row["key"] for row in result["games"]["rps"]["rows"]] == ROW_KEYS
    assert (tmp_path / "compare.png").stat().st_size > 10_000
    bad = parser.parse_args(["lab", "compare", "--games", "chess", "--no-plot", "--out", str(tmp_path)])
    assert bad.func(bad) == 2
    assert "unknown game 'chess'" in capsys.readouterr().err
