"""``nlhf lab compare``'s trainer column and trainer table name real ``nlhf train`` sub-commands and tests."""

import re
from pathlib import Path

from nlhf.lab.compare import (
    TRAINER_CHECKS,
    TRAINER_OF,
    algorithms,
    compare,
    format_table,
    format_trainer_table,
)
from nlhf.train.cli import TRAIN_FAMILIES

TESTS = Path(__file__).resolve().parents[1]


def test_every_trainer_named_by_the_table_is_a_train_sub_command():
    assert set(TRAINER_OF) <= {a.key for a in algorithms()}
    named = {t for trainers in TRAINER_OF.values() for t in trainers.split(", ")}
    assert named >= {"nash-md", "inpo", "sppo", "dno", "mpo", "mirror-prox"}
    assert named <= set(TRAIN_FAMILIES), named - set(TRAIN_FAMILIES)
    for check in TRAINER_CHECKS:
        assert check["trainer"].split(" ")[0] in TRAIN_FAMILIES


def test_trainer_checks_are_within_the_tolerance_and_stated_in_the_tests():
    sources = "".join(p.read_text() for p in TESTS.glob("test_successors_vs_lab*.py"))
    for check in TRAINER_CHECKS:
        assert float(check["tv"]) <= 0.02
        worst = float(re.findall(r"[\d.]+", check["seeds"])[-1])
        assert float(check["tv"]) <= worst <= 0.02
        assert check["tv"] in sources, check  # the number the test's docstring measured


def test_the_tables_show_the_trainer_column():
    result = compare(("rps",), checkpoints=(10,))
    table = format_table(result)
    assert table.splitlines()[0].startswith("| game | algorithm | trainer | target |")
    assert "| rps | SPPO last iterate, eta = 1 | sppo | Nash |" in table
    assert "| rps | SPPO average | - | Nash |" in table
    assert format_trainer_table().count("\n") == len(TRAINER_CHECKS) + 1
