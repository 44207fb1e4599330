"""Bad input never passes silently: each error names the file, the row (or line) and the field."""

from __future__ import annotations

import csv
import gzip
import json
import logging
import re

import pytest

from nlhf.data import REASONS, PreferenceDataError, load_preferences, load_prompts

GOOD = {"prompt": "p", "chosen": "yes", "rejected": "no"}

# (bad row, field named in the message, reason, phrase in the message)
BAD_ROWS = [
    ({"prompt": "p", "rejected": "no"}, "chosen", "missing_field", "missing"),
    ({"prompt": "p", "chosen": None, "rejected": "no"}, "chosen", "missing_field", "is null"),
    (
        {"prompt": "p", "chosen": 3, "rejected": "no"},
        "chosen",
        "wrong_type",
        "expected text or a list of messages, got int",
    ),
    (
        {"prompt": 5, "chosen": "yes", "rejected": "no"},
        "prompt",
        "wrong_type",
        "expected text or a list of messages, got int",
    ),
    (
        {"prompt": "p", "chosen": "  \n ", "rejected": "no"},
        "chosen",
        "empty_response",
        "empty response (whitespace only)",
    ),
    ({"prompt": "p", "chosen": "yes", "rejected": ""}, "rejected", "empty_response", "empty response"),
    ({"prompt": " ", "chosen": "yes", "rejected": "no"}, "prompt", "empty_prompt", "empty prompt"),
    (
        {"prompt": "p", "chosen": "same ", "rejected": " same"},
        "chosen/rejected",
        "identical_responses",
        "the two responses are identical",
    ),
    (
        {"prompt": "p", "chosen": "yes", "rejected": "no", "label": 1.5},
        "label",
        "bad_label",
        "label must be in [0, 1], got 1.5",
    ),
    (
        {"prompt": "p", "chosen": "yes", "rejected": "no", "label": -0.1},
        "label",
        "bad_label",
        "label must be in [0, 1], got -0.1",
    ),
    (
        {"prompt": "p", "chosen": "yes", "rejected": "no", "label": "maybe"},
        "label",
        "bad_label",
        "'maybe' is neither a number",
    ),
    (
        {"prompt": "p", "chosen": "yes", "rejected": "no", "label": True},
        "label",
        "wrong_type",
        "a boolean label (True) is ambiguous",
    ),
    (
        {"prompt": [{"role": "human", "content": "hi"}], "chosen": "yes", "rejected": "no"},
        "prompt",
        "bad_message",
        "message 1 has role 'human'",
    ),
    (
        {"prompt": [{"role": "user", "content": ["img"]}], "chosen": "yes", "rejected": "no"},
        "prompt",
        "bad_message",
        "message 1 content must be a string, got list",
    ),
]


@pytest.mark.parametrize("bad, field, reason, phrase", BAD_ROWS, ids=[f"{r}-{f}" for _, f, r, _ in BAD_ROWS])
def test_each_bad_row_is_named_by_file_line_and_field(tmp_path, write_jsonl, bad, field, reason, phrase):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, GOOD, bad, GOOD])
    with pytest.raises(PreferenceDataError) as info:
        load_preferences(path)
    err = info.value
    assert isinstance(err, ValueError)
    assert str(err).startswith(f"{path} line 3: field '{field}': ")
    assert phrase in str(err)
    assert (err.reason, err.field) == (reason, field) and reason in REASONS


def test_nan_label_in_pairwise_json_and_csv(tmp_path):
    rows = [
        {"prompt": "p", "response_a": "a", "response_b": "b", "label": 0.5},
        {"prompt": "p", "response_a": "a", "response_b": "b", "label": float("nan")},
    ]
    (tmp_path / "d.json").write_text(json.dumps(rows))  # json writes the NaN literal
    with pytest.raises(
        PreferenceDataError,
        match=re.escape(f"{tmp_path / 'd.json'} row 2: field 'label': label must be in [0, 1], got nan"),
    ):
        load_preferences(tmp_path / "d.json")
    with open(tmp_path / "d.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "response_a", "response_b", "label"])
        w.writerow(["p", "a", "b", "1"])
        w.writerow(["p", "a", "b", "NaN"])
    with pytest.raises(PreferenceDataError, match=re.escape(f"{tmp_path / 'd.csv'} row 2: field 'label'")):
        load_preferences(tmp_path / "d.csv")


def test_parquet_row_number_in_error(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [dict(GOOD), dict(GOOD), {"prompt": "p", "chosen": "x", "rejected": "x"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    with pytest.raises(
        PreferenceDataError,
        match=re.escape(
            f"{tmp_path / 'd.parquet'} row 3: field 'chosen/rejected': the two responses are identical"
        ),
    ):
        load_preferences(tmp_path / "d.parquet")


def test_csv_row_with_too_many_cells(tmp_path):
    (tmp_path / "d.csv").write_text("prompt,chosen,rejected\np,a,b\np,a,b,extra\n")
    with pytest.raises(
        PreferenceDataError,
        match=re.escape(f"{tmp_path / 'd.csv'} row 2: 4 cells but the header has 3 columns"),
    ):
        load_preferences(tmp_path / "d.csv")
    (tmp_path / "short.csv").write_text("prompt,chosen,rejected\np,a\n")
    with pytest.raises(
        PreferenceDataError, match=re.escape(f"{tmp_path / 'short.csv'} row 1: field 'rejected': is null")
    ):
        load_preferences(tmp_path / "short.csv")


def test_non_json_line_names_the_line(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD] * 4, raw_lines={2: '{"prompt": "p", "chosen": '})
    with pytest.raises(
        PreferenceDataError, match=re.escape(f"{path} line 2: not valid JSON (Expecting value")
    ):
        load_preferences(path)
    path = write_jsonl(tmp_path / "e.jsonl", [GOOD] * 2, raw_lines={2: "[1, 2]"})
    with pytest.raises(
        PreferenceDataError, match=re.escape(f"{path} line 2: expected a JSON object, got list")
    ):
        load_preferences(path)


def test_blank_lines_are_ignored_but_counted_as_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(
        json.dumps(GOOD) + "\n\n   \n" + json.dumps({"prompt": "p", "chosen": "", "rejected": "x"}) + "\n"
    )
    with pytest.raises(PreferenceDataError, match=re.escape(f"{path} line 4: field 'chosen'")):
        load_preferences(path)


def test_empty_files(tmp_path):
    cases = {
        "a.jsonl": ("", "empty file"),
        "b.jsonl": ("\n\n  \n", "empty file (no JSON lines)"),
        "c.json": ("[]", "empty file (the JSON list has no rows)"),
        "d.csv": ("prompt,chosen,rejected\n", "empty file (a CSV header but no rows)"),
        "e.csv": ("\n", "empty file (no CSV header)"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(PreferenceDataError, match=re.escape(f"{tmp_path / name}: {message}")):
            load_preferences(tmp_path / name)
    with gzip.open(tmp_path / "f.jsonl.gz", "wt") as f:
        f.write("")
    with pytest.raises(
        PreferenceDataError, match=re.escape(f"{tmp_path / 'f.jsonl.gz'}: empty file (no JSON")
    ):
        load_preferences(tmp_path / "f.jsonl.gz")


def test_truncated_gzip_is_reported_as_truncated(tmp_path, write_jsonl):
    rows = [
        {"prompt": f"prompt number {i}", "chosen": "yes " * 20, "rejected": "no " * 20} for i in range(300)
    ]
    full = write_jsonl(tmp_path / "full.jsonl.gz", rows)
    data = full.read_bytes()
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        PreferenceDataError, match=re.escape(f"{cut}: truncated or corrupt gzip file after line")
    ):
        load_preferences(cut)
    # skip_invalid does not hide a truncated file
    with pytest.raises(PreferenceDataError, match="truncated or corrupt gzip"):
        load_preferences(cut, skip_invalid=True)
    # a file that is not gzip at all
    bogus = tmp_path / "bogus.jsonl.gz"
    bogus.write_bytes(b"this is not gzip data\n")
    with pytest.raises(
        PreferenceDataError, match=re.escape(f"{bogus}: truncated or corrupt gzip file at the start")
    ):
        load_preferences(bogus)


def test_not_utf8_and_bad_json_file_and_bad_parquet(tmp_path):
    (tmp_path / "l.jsonl").write_bytes(json.dumps(GOOD).encode() + b"\n\xff\xfe\n")
    with pytest.raises(
        PreferenceDataError, match=re.escape(f"{tmp_path / 'l.jsonl'} line 2: not UTF-8 text")
    ):
        load_preferences(tmp_path / "l.jsonl")
    (tmp_path / "d.json").write_text('[{"prompt": "p",\n "chosen": }]')
    with pytest.raises(
        PreferenceDataError,
        match=re.escape(f"{tmp_path / 'd.json'}: not valid JSON (Expecting value at line 2 column 12)"),
    ):
        load_preferences(tmp_path / "d.json")
    (tmp_path / "d.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(
        PreferenceDataError, match=re.escape(f"{tmp_path / 'd.parquet'}: not a readable Parquet")
    ):
        load_preferences(tmp_path / "d.parquet")
    (tmp_path / "obj.json").write_text('{"rows": []}')
    with pytest.raises(
        PreferenceDataError, match=r"expected a JSON list of objects or \{\"data\": \[\.\.\.\]\}"
    ):
        load_preferences(tmp_path / "obj.json")


def test_missing_file_unknown_suffix_and_split_on_file(tmp_path, write_jsonl):
    with pytest.raises(PreferenceDataError, match=re.escape(f"{tmp_path / 'nope.jsonl'}: no such file")):
        load_preferences(tmp_path / "nope.jsonl")
    (tmp_path / "d.txt").write_text("hello")
    with pytest.raises(PreferenceDataError, match="unknown file type"):
        load_preferences(tmp_path / "d.txt")
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD])
    with pytest.raises(PreferenceDataError, match="split='train' applies to Hugging Face datasets"):
        load_preferences(path, split="train")


def test_skip_invalid_counts_by_reason_and_logs(tmp_path, write_jsonl, caplog):
    rows = [GOOD, BAD_ROWS[0][0], BAD_ROWS[4][0], GOOD, BAD_ROWS[4][0], BAD_ROWS[7][0], BAD_ROWS[8][0], GOOD]
    path = write_jsonl(tmp_path / "d.jsonl", rows + [GOOD], raw_lines={9: "not json"})
    with caplog.at_level(logging.WARNING, logger="nlhf.data"):
        ds = load_preferences(path, skip_invalid=True)
    assert len(ds) == 3 and [e.source for e in ds] == [f"{path}:1", f"{path}:4", f"{path}:8"]
    assert dict(ds.skipped) == {
        "missing_field": 1,
        "empty_response": 2,
        "identical_responses": 1,
        "bad_label": 1,
        "bad_json": 1,
    }
    assert ds.num_skipped == 6
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"{path} line 3: field 'chosen': empty response" in m for m in messages)
    assert any("kept 3 examples, skipped 6 invalid rows" in m for m in messages)


def test_all_rows_invalid_is_an_error_even_when_skipping(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "d.jsonl", [BAD_ROWS[4][0]] * 2)
    with pytest.raises(
        PreferenceDataError, match=re.escape(f"{path}: no valid examples (skipped: {{'empty_response': 2}})")
    ):
        load_preferences(path, skip_invalid=True)


def test_conversational_mismatches(tmp_path, write_jsonl):
    u, a = {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}
    rows = [{"chosen": [u, a], "rejected": [{"role": "user", "content": "other"}, a]}]
    with pytest.raises(
        PreferenceDataError,
        match=re.escape(
            f"{tmp_path / 'm.jsonl'} line 1: field 'chosen/rejected': the two conversations differ"
        ),
    ):
        load_preferences(write_jsonl(tmp_path / "m.jsonl", rows))
    rows = [{"chosen": [u, a, u], "rejected": [u, a, u]}]
    with pytest.raises(PreferenceDataError, match="field 'chosen': the last message has role 'user'"):
        load_preferences(write_jsonl(tmp_path / "n.jsonl", rows))
    rows = [
        {"prompt": "something else", "chosen": [u, a], "rejected": [u, {"role": "assistant", "content": "x"}]}
    ]
    with pytest.raises(PreferenceDataError, match="field 'prompt': the 'prompt' column does not match"):
        load_preferences(write_jsonl(tmp_path / "o.jsonl", rows))


def test_text_without_prompt_that_is_not_hh(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "d.jsonl", [{"chosen": "a", "rejected": "b"}])
    with pytest.raises(PreferenceDataError, match="without a 'prompt' column must be HH-RLHF transcripts"):
        load_preferences(path)


def test_mapped_column_missing(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, {"q": "p", "chosen": "a", "rejected": "b"}])
    with pytest.raises(
        PreferenceDataError, match=re.escape(f"{path} line 1: field 'q': missing (mapped to 'prompt'")
    ):
        load_preferences(path, columns={"prompt": "q"})


def test_load_prompts_validates_prompts_only(tmp_path, write_jsonl):
    rows = [{"prompt": "p", "chosen": "", "rejected": ""}, {"prompt": "  ", "chosen": "a", "rejected": "b"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(PreferenceDataError, match=re.escape(f"{path} line 2: field 'prompt': empty prompt")):
        load_prompts(path)
    ps = load_prompts(path, skip_invalid=True)
    assert [p.prompt for p in ps] == ["p"] and dict(ps.skipped) == {"empty_prompt": 1}
