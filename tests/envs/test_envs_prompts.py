"""The built-in prompt set: 200 questions, a deterministic train / held-out split, checked rows."""

import json

import pytest

from nlhf.data.schema import PromptExample
from nlhf.envs.prompts import KINDS, PROMPTS_PATH, load_env_prompts


def test_counts_split_and_rule():
    everything = load_env_prompts("all")
    train, heldout = load_env_prompts("train"), load_env_prompts("heldout")
    assert (len(everything), len(train), len(heldout)) == (200, 152, 48)
    assert all(isinstance(p, PromptExample) and isinstance(p.prompt, str) for p in everything)
    assert len({p.prompt for p in everything}) == 200
    for kind in KINDS:
        rows = [p for p in everything if p.metadata["kind"] == kind]
        assert len(rows) == 50
        assert [p.metadata["split"] == "heldout" for p in rows] == [i % 4 == 3 for i in range(50)]
    assert {p.prompt for p in train}.isdisjoint(p.prompt for p in heldout)
    assert train[0].source == "prompts.jsonl:1" and train[0].metadata == {
        "id": "list-00",
        "kind": "list",
        "split": "train",
    }
    assert heldout[0].metadata["id"] == "list-03"


def _write(tmp_path, rows):
    path = tmp_path / "p.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ("{not json", r"p.jsonl:2: not valid JSON"),
        ({"id": "b", "kind": "list", "split": "train"}, r"p.jsonl:2: expected the keys"),
        ({"id": "b", "kind": "poem", "split": "train", "prompt": "x"}, r"p.jsonl:2: kind 'poem'"),
        ({"id": "a", "kind": "list", "split": "train", "prompt": "x"}, r"p.jsonl:2: duplicate id 'a'"),
        (
            {"id": "b", "kind": "list", "split": "heldout", "prompt": "x"},
            r"p.jsonl:2: split 'heldout' breaks the rule",
        ),
        (
            {"id": "b", "kind": "list", "split": "train", "prompt": " "},
            r"p.jsonl:2: prompt must be a non-empty",
        ),
    ],
)
def test_bad_rows_name_the_line(tmp_path, bad, match):
    good = {"id": "a", "kind": "list", "split": "train", "prompt": "Give me tips."}
    with pytest.raises(ValueError, match=match):
        load_env_prompts("all", _write(tmp_path, [good, bad]))
    with pytest.raises(ValueError, match="split must be one of"):
        load_env_prompts("test")


def test_shipped_file_is_next_to_the_module():
    assert PROMPTS_PATH.name == "prompts.jsonl" and PROMPTS_PATH.is_file()
