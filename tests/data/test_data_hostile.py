"""Hostile and broken input (issue 7): property-based tests of every loader and format.

The contract checked on every generated input:

* it loads into exactly the examples that were written (prompt, both responses, label,
  ``source`` = ``"<file>:<line or row>"``; a silently wrong example fails the test); or
* it raises :class:`nlhf.data.PreferenceDataError` whose location names the file and the
  first bad row -- the 1-based *line* of a JSONL file (blank lines counted), the 1-based
  *row* of a JSON list, a CSV file (header excluded), a Parquet file or a Hugging Face
  dataset -- and whose ``reason`` is one the corruption can cause; problems with the whole
  file (empty, truncated gzip, not UTF-8 in a JSON/CSV file, not Parquet) name the file;
* with ``skip_invalid=True`` every bad row is skipped and counted, the good rows load as
  written;
* no other exception type ever escapes.

Inputs: text with odd code points (NUL and other controls, zero-width and direction
marks, right-to-left scripts, combining marks, U+2028, astral planes, lone surrogates from
JSON escapes), fields of 300,000 characters, nested garbage (dicts and lists where text is
expected, messages that are not messages), numbers / booleans / null for text, missing
columns, blank responses, labels NaN / inf / "0.7" / out of range / 10**400, rows of another
format in the same file, duplicate rows, duplicate JSON keys, JSON nested 100,000 deep, empty
files, a byte-order mark, truncated gzip, invalid UTF-8. Containers: JSONL, JSON, CSV (each
also gzip-compressed), Parquet, a ``save_to_disk`` directory, a folder of data files.

Hypothesis runs derandomised (``derandomize=True``, no example database), so CI sees the
same inputs every time; the number of inputs tried is printed at the end of the module
("hostile inputs tried: N").
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import re
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nlhf.data import REASONS, Message, PreferenceDataError, load_preferences, load_prompts
from nlhf.data.errors import RowLocation
from nlhf.data.hh import hh_transcript
from nlhf.data.truncation import segment_budgets, water_fill

# ----------------------------------------------------------------------------- settings, counting

HOSTILE = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=100,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ],
)

TRIED: Counter[str] = Counter()  # inputs tried, by test


# (tests/data/conftest.py prints the total at the end of the session: "hostile inputs tried: N")


# ----------------------------------------------------------------------------- text

ODD = [
    "\x00",
    "\x1b",
    "\x7f",
    "\u200b",
    "\u200c",
    "\u200d",
    "\u2060",
    "\ufeff",
    "\u202e",
    "\u200f",
    "\u2028",
    "\u0301",
    "\u00ad",
    "\u0645\u0631\u062d\u0628\u0627",
    "\u05e9\u05dc\u05d5\u05dd",
    "\U0001f600",
    "\U0010fffd",
    "\uffff",
    "\r",
    "\n",
    "\r\n",
    "\t",
    " ",
    "\\",
    '"',
    ",",
    "'",
    "[{",
    "{}",
    "null",
    "\u3000",
]
_piece = st.one_of(st.text(st.characters(exclude_categories=("Cs",)), max_size=8), st.sampled_from(ODD))
_filler = st.lists(_piece, max_size=4).map("".join)
_visible = st.characters(categories=("L", "N", "P", "S"))


@st.composite
def texts(draw: Any, huge: bool = True) -> str:
    """Text with at least one visible character, full of odd code points; sometimes 300,000 characters."""
    text = draw(_filler) + draw(_visible) + draw(_filler)
    if huge and draw(st.integers(0, 19)) == 0:
        text = text + draw(_visible) * 300_000
    return text


def blank_texts() -> st.SearchStrategy[str]:
    """Text that shows nothing: whitespace, controls and zero-width/format characters only."""
    return st.lists(
        st.sampled_from(
            ["", " ", "\n", "\t", "\r\n", "\x00", "\u200b", "\ufeff", "\u200e", "\u3000", "\u2028", "\x1b"]
        ),
        max_size=6,
    ).map("".join)


ROLES = ("system", "user", "assistant", "tool")


# ----------------------------------------------------------------------------- valid rows

FORMATS = ("trl_text", "trl_soft", "trl_conv", "trl_implicit", "ultrafeedback", "hh", "pairwise")
TRL_FAMILY = ("trl_text", "trl_soft", "trl_conv", "trl_implicit", "ultrafeedback")
LOADER_FORMAT = {f: ("trl" if f in TRL_FAMILY[:4] else f) for f in FORMATS}
_TURN = re.compile(r"\n\n(Human|Assistant):")


@st.composite
def labels(draw: Any) -> tuple[Any, float]:
    """(what the file holds, the label it means)."""
    value = draw(st.floats(0.0, 1.0))
    return draw(
        st.sampled_from(
            [
                (value, value),
                (0, 0.0),
                (1, 1.0),
                ("a", 1.0),
                ("B", 0.0),
                (" tie ", 0.5),
                ("0.7", 0.7),
                (repr(value), value),
                (" 0.25\n", 0.25),
            ]
        )
    )


@st.composite
def valid_rows(
    draw: Any, fmt: str, plain: bool = False
) -> tuple[dict[str, Any], tuple[Any, str, str, float]]:
    """A row of format ``fmt`` and the example it must load as: ``(prompt, first, second, label)``.

    ``plain``: labels are floats (Parquet and Hugging Face columns have one type).
    """
    p, a, b = draw(texts()), draw(texts()), draw(texts())
    assume(a.strip() != b.strip())
    if fmt == "trl_text":
        return {"prompt": p, "chosen": a, "rejected": b}, (p, a, b, 1.0)
    if fmt == "trl_soft":
        raw, value = draw(labels())
        raw = value if plain else raw
        return {"prompt": p, "chosen": a, "rejected": b, "label": raw}, (p, a, b, value)
    if fmt in ("trl_conv", "trl_implicit"):
        turns = draw(st.lists(st.tuples(st.sampled_from(ROLES), texts(huge=False)), min_size=1, max_size=3))
        msgs = [{"role": r, "content": c} for r, c in turns]
        expected = tuple(Message(r, c) for r, c in turns)
        if fmt == "trl_conv":
            row = {
                "prompt": msgs,
                "chosen": [{"role": "assistant", "content": a}],
                "rejected": [{"role": "assistant", "content": b}],
            }
        else:
            row = {
                "chosen": [*msgs, {"role": "assistant", "content": a}],
                "rejected": [*msgs, {"role": "assistant", "content": b}],
            }
        return row, (expected, a, b, 1.0)
    if fmt == "ultrafeedback":
        s1, s2 = draw(st.floats(-10, 10)), draw(st.floats(-10, 10))
        row = {
            "prompt": p,
            "chosen": [{"role": "user", "content": p}, {"role": "assistant", "content": a}],
            "rejected": [{"role": "user", "content": p}, {"role": "assistant", "content": b}],
            "score_chosen": s1,
            "score_rejected": s2,
        }
        return row, (p, a, b, 1.0)
    if fmt == "hh":
        n = draw(st.integers(0, 2))
        contents = [draw(texts(huge=False)) for _ in range(2 * n + 1)]
        prompt = tuple(Message("user" if i % 2 == 0 else "assistant", c) for i, c in enumerate(contents))
        chosen, rejected = hh_transcript(prompt, a), hh_transcript(prompt, b)
        # contents that hold a "\n\nHuman:" turn marker are other transcripts (covered in test_data_hh.py)
        assume(len(_TURN.findall(chosen)) == len(_TURN.findall(rejected)) == len(prompt) + 1)
        assume(a.strip() != b.strip())
        expected = tuple(Message(m.role, m.content.strip()) for m in prompt)
        return {"chosen": chosen, "rejected": rejected}, (expected, a.strip(), b.strip(), 1.0)
    if fmt == "pairwise":
        raw, value = draw(labels())
        raw = value if plain else raw
        return {"prompt": p, "response_a": a, "response_b": b, "label": raw}, (p, a, b, value)
    raise AssertionError(fmt)


def swapped_duplicate(row: dict[str, Any], fmt: str, expected: tuple) -> tuple[dict[str, Any], tuple]:
    """The same comparison with the responses in the other order (a duplicate by the loader's rule)."""
    p, a, b, label = expected
    if fmt == "pairwise":
        return (
            {**row, "response_a": row["response_b"], "response_b": row["response_a"], "label": 1.0 - label},
            (p, b, a, 1.0 - label),
        )
    return dict(row), expected


# ----------------------------------------------------------------------------- containers


def _cell(value: Any) -> str:
    if isinstance(value, list | dict):
        return json.dumps(value)
    if isinstance(value, float):
        return repr(value)
    return "" if value is None else str(value)


def _json_bytes(value: Any, ensure_ascii: bool) -> bytes:
    """JSON as UTF-8; a lone surrogate can only be written as a ``\\udXXX`` escape."""
    try:
        return json.dumps(value, ensure_ascii=ensure_ascii).encode()
    except UnicodeEncodeError:
        return json.dumps(value, ensure_ascii=True).encode()


def write_container(
    directory: Path,
    container: str,
    rows: list[Any],
    *,
    blank_lines: list[int] | None = None,
    ensure_ascii: bool = True,
    raw: dict[int, bytes] | None = None,
) -> tuple[Path, list[int]]:
    """Write ``rows`` to ``directory`` in ``container``; return (path, the line/row number of each row).

    ``blank_lines[i]``: blank lines written before JSONL row i. ``raw[i]``: bytes that replace
    JSONL row i.
    """
    numbers = list(range(1, len(rows) + 1))
    if container.startswith("jsonl"):
        out, line = [], 0
        numbers = []
        for i, row in enumerate(rows):
            for _ in range((blank_lines or [0] * len(rows))[i]):
                out.append(b"  \t")
                line += 1
            out.append(raw[i] if raw and i in raw else _json_bytes(row, ensure_ascii))
            line += 1
            numbers.append(line)
        data = b"\n".join(out) + b"\n"
    elif container.startswith("json"):
        data = _json_bytes(rows, ensure_ascii)
    elif container.startswith("csv"):
        buf = io.StringIO(newline="")
        columns = list(dict.fromkeys(k for row in rows for k in row))
        writer = csv.writer(buf)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(k)) for k in columns])
        data = buf.getvalue().encode()
    elif container == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = directory / "d.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
        return path, numbers
    elif container == "hf_saved":
        import datasets

        path = directory / "saved"
        datasets.Dataset.from_list(rows).save_to_disk(str(path))
        return path, numbers
    else:
        raise AssertionError(container)
    path = directory / f"d.{container}"
    path.write_bytes(gzip.compress(data) if container.endswith(".gz") else data)
    return path, numbers


def _brief(value: Any) -> str:
    """A repr that cuts long strings (hypothesis' 300,000-character fields)."""
    text = repr(value)
    return text if len(text) < 600 else text[:300] + f"...<{len(text)} chars>..." + text[-300:]


def check_examples(ds: Any, expected: list[tuple], sources: list[str]) -> None:
    got = [(e.prompt, e.first, e.second) for e in ds]
    assert len(got) == len(expected), (_brief(got), _brief(expected), [e.source for e in ds], sources, ds)
    assert got == [x[:3] for x in expected]
    for e, x in zip(ds, expected):
        assert e.label == pytest.approx(x[3], abs=1e-12)
    assert [e.source for e in ds] == sources


def check_error(err: PreferenceDataError, path: Path, number: int, reasons: set[str], unit: str) -> None:
    """The error names the file and the row (or line), and says why."""
    assert isinstance(err.location, RowLocation), err
    assert (err.location.name, err.location.index, err.location.unit) == (str(path), number, unit), err
    assert str(err).startswith(f"{path} {unit} {number}: "), err
    assert err.reason in reasons, (err.reason, reasons, str(err)[:300])
    assert err.reason in REASONS


def unit_of(container: str) -> str:
    return "line" if container.startswith("jsonl") else "row"


# ----------------------------------------------------------------------------- 1. valid data round-trips

CONTAINERS = ("jsonl", "jsonl.gz", "json", "json.gz", "csv", "csv.gz", "parquet", "hf_saved")


@HOSTILE
@given(data=st.data())
def test_valid_rows_load_exactly_as_written(data):
    """Any valid rows, in any format and container, load as written (duplicates counted, kept or dropped)."""
    TRIED["valid"] += 1
    container = data.draw(st.sampled_from(CONTAINERS), label="container")
    typed = container in ("parquet", "hf_saved") or container.startswith("csv")
    fmt = data.draw(st.sampled_from(FORMATS), label="fmt")
    n = data.draw(st.integers(1, 4), label="n")
    rows, expected = [], []
    for _ in range(n):
        row, exp = data.draw(valid_rows(fmt, plain=typed))
        rows.append(row)
        expected.append(exp)
    # duplicates: repeat some rows, as they are or (pairwise) with the responses swapped
    n_dup = data.draw(st.integers(0, 2), label="n_dup")
    is_dup = [False] * n
    for _ in range(n_dup):
        i = data.draw(st.integers(0, len(rows) - 1))
        if is_dup[i]:
            continue
        row, exp = (
            swapped_duplicate(rows[i], fmt, expected[i])
            if data.draw(st.booleans())
            else (rows[i], expected[i])
        )
        j = data.draw(st.integers(i + 1, len(rows)))
        rows.insert(j, row)
        expected.insert(j, exp)
        is_dup.insert(j, True)
    if container in ("parquet", "hf_saved") and fmt in ("pairwise", "trl_soft"):
        rows = [{**r, "label": float(x[3])} for r, x in zip(rows, expected)]
    blank = data.draw(st.lists(st.integers(0, 2), min_size=len(rows), max_size=len(rows)))
    drop = data.draw(st.booleans(), label="drop")
    explicit = data.draw(st.booleans(), label="explicit format")
    with tempfile.TemporaryDirectory() as tmp:
        path, numbers = write_container(
            Path(tmp), container, rows, blank_lines=blank, ensure_ascii=data.draw(st.booleans())
        )
        ds = load_preferences(
            path, format=LOADER_FORMAT[fmt] if explicit else None, duplicates="drop" if drop else "keep"
        )
    # rows drawn independently may repeat too: a duplicate is any repeat of (prompt, {a, b}, P(a > b))
    seen: set[Any] = set()
    for i, (p, a, b, label) in enumerate(expected):
        key = (p, a, b, round(label, 9)) if a <= b else (p, b, a, round(1.0 - label, 9))
        is_dup[i] = key in seen
        seen.add(key)
    keep = [i for i in range(len(rows)) if not (drop and is_dup[i])]
    check_examples(ds, [expected[i] for i in keep], [f"{path}:{numbers[i]}" for i in keep])
    assert ds.duplicates == sum(is_dup)
    assert ds.num_skipped == 0
    if fmt == "ultrafeedback" and not typed:
        assert [e.metadata["score_chosen"] for e in ds] == [rows[i]["score_chosen"] for i in keep]


@HOSTILE
@given(data=st.data())
def test_prompts_load_exactly_as_written(data):
    """load_prompts reads the prompt of every format (and of prompt-only rows) as written."""
    TRIED["prompts"] += 1
    container = data.draw(st.sampled_from(("jsonl", "json.gz", "csv", "parquet")), label="container")
    fmt = data.draw(st.sampled_from((*FORMATS, "prompt_only")), label="fmt")
    rows, expected = [], []
    for _ in range(data.draw(st.integers(1, 4))):
        if fmt == "prompt_only":
            p = data.draw(texts())
            rows.append({"prompt": p})
            expected.append(p)
        else:
            row, exp = data.draw(valid_rows(fmt, plain=True))
            rows.append(row)
            expected.append(exp[0])
    if data.draw(st.booleans()):  # a repeated prompt
        rows.append(dict(rows[0]))
        expected.append(expected[0])
    unique = data.draw(st.booleans())
    with tempfile.TemporaryDirectory() as tmp:
        path, numbers = write_container(Path(tmp), container, rows)
        ps = load_prompts(path, unique=unique)
    first_index = {}
    for i, p in enumerate(expected):
        first_index.setdefault(p, i)
    keep = [i for i, p in enumerate(expected) if not unique or first_index[p] == i]
    assert [x.prompt for x in ps] == [expected[i] for i in keep]
    assert [x.source for x in ps] == [f"{path}:{numbers[i]}" for i in keep]
    assert ps.duplicates == len(expected) - len(first_index)


# ----------------------------------------------------------------------------- 2. hostile rows

GARBAGE = st.one_of(
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.lists(st.one_of(st.integers(), st.text(max_size=3), st.none()), min_size=1, max_size=3),
)


@st.composite
def corrupted_rows(draw: Any, fmt: str) -> tuple[dict[str, Any] | bytes, set[str], str]:
    """A row of format ``fmt`` broken in one way; ``(row or raw JSONL bytes, possible reasons, how)``."""
    row, (p, a, b, _) = draw(valid_rows(fmt))
    row = dict(row)
    text_keys = {
        "trl_text": ("prompt", "chosen", "rejected"),
        "trl_soft": ("prompt", "chosen", "rejected"),
        "pairwise": ("prompt", "response_a", "response_b"),
        "hh": ("chosen", "rejected"),
        "trl_conv": ("prompt", "chosen", "rejected"),
        "trl_implicit": ("chosen", "rejected"),
        "ultrafeedback": ("chosen", "rejected"),
    }[fmt]  # (without its prompt it is TRL-implicit)
    how = draw(
        st.sampled_from(
            [
                "missing",
                "null",
                "garbage",
                "blank",
                "surrogate",
                "identical",
                "label",
                "bad_messages",
                "other_format",
                "raw",
            ]
        )
    )
    key = draw(st.sampled_from(text_keys))
    hh = fmt == "hh"
    if how in ("missing", "null"):
        if how == "missing":
            del row[key]
        else:
            row[key] = None
        # a conversational row without a prompt takes it from the conversations: here there is none
        return row, {"empty_prompt"} if (fmt, key) == ("trl_conv", "prompt") else {"missing_field"}, how
    if how == "garbage":
        value = draw(GARBAGE)
        row[key] = value
        if isinstance(value, list):
            reasons = (
                {"wrong_type"} if hh else {"bad_message", "empty_prompt", "empty_response", "wrong_type"}
            )
        else:
            reasons = {"wrong_type"}
        return row, reasons, how
    if how == "blank":
        value = draw(blank_texts())
        row[key] = value
        if hh:
            return row, {"bad_transcript"}, how
        if (
            isinstance(row.get(key), str)
            and fmt in ("trl_conv", "trl_implicit", "ultrafeedback")
            and key != "prompt"
        ):
            # a text response next to a conversation
            return row, {"empty_response", "bad_conversation"}, how
        if fmt in ("ultrafeedback",) and key == "prompt":
            return row, {"empty_prompt"}, how
        return row, {"empty_prompt" if key == "prompt" else "empty_response"}, how
    if how == "surrogate":
        bad = draw(texts(huge=False)) + draw(st.sampled_from(["\ud800", "\udfff", "\udc80x"]))
        if hh:
            transcript = row[key]
            row[key] = transcript + bad
            return row, {"bad_text"}, how
        if fmt in ("trl_conv", "trl_implicit", "ultrafeedback") and key != "prompt":
            row[key] = [*row[key][:-1], {"role": "assistant", "content": bad}]
            return row, {"bad_text"}, how
        if fmt == "trl_conv" and key == "prompt":
            row[key] = [{"role": "user", "content": bad}]
            return row, {"bad_text"}, how
        row[key] = bad
        reasons = (
            {"bad_text", "prompt_mismatch"} if (fmt == "ultrafeedback" and key == "prompt") else {"bad_text"}
        )
        return row, reasons, how
    if how == "identical":
        if fmt == "pairwise":
            row["response_b"] = " " + a + "\n"
        elif hh:
            row["rejected"] = row["chosen"] + " \n"
        elif fmt in ("trl_conv", "trl_implicit", "ultrafeedback"):
            row["rejected"] = [*row["rejected"][:-1], {"role": "assistant", "content": "\t" + a}]
        else:
            row["rejected"] = a + " "
        return row, {"identical_responses"}, how
    if how == "label":
        value, reason = draw(
            st.sampled_from(
                [
                    (math.nan, "bad_label"),
                    (math.inf, "bad_label"),
                    (-math.inf, "bad_label"),
                    (1.5, "bad_label"),
                    (-0.1, "bad_label"),
                    (10**400, "bad_label"),
                    ("maybe", "bad_label"),
                    ("nan", "bad_label"),
                    ("1e999", "bad_label"),
                    ("", "bad_label"),
                    (True, "wrong_type"),
                    ([0.5], "wrong_type"),
                    ({"p": 0.5}, "wrong_type"),
                ]
            )
        )
        row["label"] = value
        return row, {reason}, how
    if how == "bad_messages":
        msgs = draw(
            st.sampled_from(
                [
                    [{"role": "human", "content": "hi"}],
                    [{"role": "user"}],
                    [{"content": "x"}],
                    ["user: hi"],
                    [{"role": "user", "content": 3}],
                    [{"role": ["user"], "content": "x"}],
                    [[{"role": "user"}]],
                    [{"role": "user", "content": {"text": "x"}}],
                ]
            )
        )
        field = "prompt" if "prompt" in text_keys and fmt != "ultrafeedback" else key
        row[field] = msgs
        if hh:
            return row, {"wrong_type"}, how
        return row, {"bad_message"}, how
    if how == "other_format":
        other = draw(
            st.sampled_from([f for f in FORMATS if f != fmt and not (f in TRL_FAMILY and fmt in TRL_FAMILY)])
        )
        row, _ = draw(valid_rows(other))
        if fmt == "hh":
            reasons = {"bad_transcript", "wrong_type", "missing_field"}
        else:
            reasons = {"missing_field"}
        return row, reasons, how
    # raw: a JSONL line that is not a JSON object
    raw = draw(
        st.sampled_from(
            [
                b"{not json",
                b"[1, 2]",
                b'"just a string"',
                b"42",
                b"null",
                b"\xff\xfe{}",
                b'{"prompt": "\xc3"}',
                b"[" * 100_000 + b"]" * 100_000,
                b'{"prompt": "p", "prompt": "q", "chosen": "a", "rejected": "b"}',
                b'{"label": 1' + b"0" * 5000 + b"}",
                b'{"prompt": "p", "chosen": "a", "rejected": "b"',
            ]
        )
    )
    return raw, {"bad_json"}, how


@HOSTILE
@given(data=st.data())
def test_hostile_rows_are_named_or_skipped_and_counted(data):
    """Rows broken in one way each: an error naming file, row and reason, or (skip_invalid) skipped and counted."""
    TRIED["hostile_rows"] += 1
    container = data.draw(st.sampled_from(("jsonl", "jsonl.gz", "json", "json.gz")), label="container")
    fmt = data.draw(st.sampled_from(FORMATS), label="fmt")
    n = data.draw(st.integers(1, 5), label="n")
    rows: list[Any] = []
    expected: list[tuple | None] = []
    reasons: list[set[str]] = []
    raw: dict[int, bytes] = {}
    for i in range(n):
        if data.draw(st.booleans()):
            row, exp = data.draw(valid_rows(fmt))
            rows.append(row)
            expected.append(exp)
            reasons.append(set())
            continue
        bad, why, how = data.draw(corrupted_rows(fmt))
        if isinstance(bad, bytes):
            if container.startswith("jsonl"):
                raw[i] = bad
                bad = {}
            else:  # a JSON list holds a value that is not an object
                bad = (
                    json.loads(bad)
                    if bad in (b"[1, 2]", b'"just a string"', b"42", b"null")
                    else [bad.decode("latin-1")[:20]]
                )
        rows.append(bad)
        expected.append(None)
        reasons.append(why)
    skip = data.draw(st.booleans(), label="skip_invalid")
    with tempfile.TemporaryDirectory() as tmp:
        path, numbers = write_container(
            Path(tmp),
            container,
            rows,
            raw=raw,
            blank_lines=data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)),
            ensure_ascii=data.draw(st.booleans()),
        )
        bad_rows = [i for i in range(n) if expected[i] is None]
        good_rows = [i for i in range(n) if expected[i] is not None]
        try:
            ds = load_preferences(path, format=LOADER_FORMAT[fmt], skip_invalid=skip)
        except PreferenceDataError as err:
            if not skip:
                assert bad_rows, f"a valid file was refused: {err}"
                first = bad_rows[0]
                check_error(err, path, numbers[first], reasons[first], unit_of(container))
            else:
                assert not good_rows, f"skip_invalid refused a file with valid rows: {err}"
                assert str(err).startswith(f"{path}: no valid examples (skipped: ")
                assert sum(err_counts(str(err)).values()) == len(bad_rows)
            return
    assert skip or not bad_rows, "a broken row was loaded"
    check_examples(ds, [expected[i] for i in good_rows], [f"{path}:{numbers[i]}" for i in good_rows])
    assert ds.num_skipped == len(bad_rows)
    counted = Counter(ds.skipped)
    for i in bad_rows:  # each skipped row counted under a reason it can have
        match = next((r for r in sorted(reasons[i]) if counted[r] > 0), None)
        assert match is not None, (reasons[i], dict(ds.skipped))
        counted[match] -= 1


def err_counts(message: str) -> dict[str, int]:
    return eval(message.split("(skipped: ", 1)[1].rstrip(")"))  # a dict literal written by the loader


@HOSTILE
@given(data=st.data())
def test_mixed_formats_in_one_file(data):
    """A file whose rows change format: TRL-family rows mix freely; any other switch names the row."""
    TRIED["mixed"] += 1
    fmts = data.draw(st.lists(st.sampled_from(FORMATS), min_size=2, max_size=4), label="formats")
    rows, expected = zip(*(data.draw(valid_rows(f)) for f in fmts))
    compatible = all(
        (f in TRL_FAMILY) == (fmts[0] in TRL_FAMILY) and (f == fmts[0] or f in TRL_FAMILY) for f in fmts
    )
    with tempfile.TemporaryDirectory() as tmp:
        path, numbers = write_container(Path(tmp), "jsonl", list(rows))
        if compatible:
            ds = load_preferences(path)
            check_examples(ds, list(expected), [f"{path}:{k}" for k in numbers])
            return
        with pytest.raises(PreferenceDataError) as info:
            load_preferences(path)
    first = next(
        i
        for i, f in enumerate(fmts)
        if not ((f in TRL_FAMILY) == (fmts[0] in TRL_FAMILY) and (f == fmts[0] or f in TRL_FAMILY))
    )
    check_error(info.value, path, numbers[first], {"missing_field", "wrong_type", "bad_transcript"}, "line")


@HOSTILE
@given(data=st.data())
def test_hostile_cells_in_typed_containers(data):
    """CSV, Parquet and saved datasets: blank, null, identical and out-of-range cells name the row."""
    TRIED["typed_cells"] += 1
    container = data.draw(
        st.sampled_from(("csv", "csv.gz", "parquet", "parquet", "hf_saved")), label="container"
    )
    fmt = data.draw(st.sampled_from(("trl_text", "pairwise", "hh")), label="fmt")
    n = data.draw(st.integers(1, 4))
    rows, expected = zip(*(data.draw(valid_rows(fmt, plain=True)) for _ in range(n)))
    rows = [dict(r) for r in rows]
    i = data.draw(st.integers(0, n - 1), label="bad row")
    first, second = {
        "trl_text": ("chosen", "rejected"),
        "pairwise": ("response_a", "response_b"),
        "hh": ("chosen", "rejected"),
    }[fmt]
    key = data.draw(st.sampled_from(("prompt", first, second) if fmt != "hh" else (first, second)))
    how = data.draw(
        st.sampled_from(
            ("blank", "null", "identical", "label") if fmt == "pairwise" else ("blank", "null", "identical")
        )
    )
    empty = (
        ("bad_transcript",) if fmt == "hh" else ("empty_prompt",) if key == "prompt" else ("empty_response",)
    )
    if how == "label":
        rows[i]["label"] = data.draw(st.sampled_from((math.nan, 1.5, -0.25, math.inf)))
        why = {"bad_label"}
    elif how == "null":  # CSV cannot hold a null: it writes an empty cell
        rows[i][key] = None
        why = set(empty) if container.startswith("csv") else {"missing_field"}
    elif how == "identical":
        rows[i][second] = rows[i][first] + data.draw(st.sampled_from((" ", "\n", " \t")))
        why = {"identical_responses"}
    else:
        rows[i][key] = data.draw(blank_texts())
        why = set(empty)
    skip = data.draw(st.booleans()) and n > 1
    with tempfile.TemporaryDirectory() as tmp:
        path, numbers = write_container(Path(tmp), container, rows)
        if skip:
            ds = load_preferences(path, format=LOADER_FORMAT[fmt], skip_invalid=True)
            good = [k for k in range(n) if k != i]
            check_examples(ds, [expected[k] for k in good], [f"{path}:{numbers[k]}" for k in good])
            assert ds.num_skipped == 1 and set(ds.skipped) <= why, dict(ds.skipped)
            return
        with pytest.raises(PreferenceDataError) as info:
            load_preferences(path, format=LOADER_FORMAT[fmt])
    check_error(info.value, path, numbers[i], why, "row")


@HOSTILE
@given(data=st.data())
def test_hostile_prompts(data):
    """load_prompts: a broken prompt names the row, or is skipped and counted."""
    TRIED["hostile_prompts"] += 1
    n = data.draw(st.integers(2, 4))
    rows: list[Any] = [{"prompt": data.draw(texts())} for _ in range(n)]
    i = data.draw(st.integers(1, n - 1))  # row 1 is valid: the format is detected from it
    rows[i], why = data.draw(
        st.sampled_from(
            [
                ({"other": 1}, "missing_field"),
                ({"prompt": None}, "missing_field"),
                ({"prompt": 3}, "wrong_type"),
                ({"prompt": {"text": "x"}}, "wrong_type"),
                ({"prompt": " \u200b\x00"}, "empty_prompt"),
                ({"prompt": []}, "empty_prompt"),
                ({"prompt": [{"role": "user", "content": "\u200d"}]}, "empty_prompt"),
                ({"prompt": [{"role": "robot", "content": "x"}]}, "bad_message"),
                ({"prompt": "x\ud83d"}, "bad_text"),
                ({"messages": "hello"}, "missing_field"),
                ({"prompt": [[]]}, "bad_message"),
                ({"prompt": True}, "wrong_type"),
                ({"prompt": 10**400}, "wrong_type"),
            ]
        )
    )
    skip = data.draw(st.booleans())
    with tempfile.TemporaryDirectory() as tmp:
        path, numbers = write_container(Path(tmp), "jsonl", rows)
        if not skip:
            with pytest.raises(PreferenceDataError) as info:
                load_prompts(path)
            check_error(info.value, path, numbers[i], {why}, "line")
            return
        ps = load_prompts(path, skip_invalid=True)
    assert [p.prompt for p in ps] == [r["prompt"] for k, r in enumerate(rows) if k != i]
    assert ps.num_skipped == 1 and dict(ps.skipped) == {why: 1}


# ----------------------------------------------------------------------------- 3. hostile files


@HOSTILE
@given(data=st.data())
def test_broken_files_name_the_file(data):
    """Empty, whitespace-only, truncated gzip, random bytes, invalid UTF-8, a BOM: load as written or name the file."""
    TRIED["files"] += 1
    container = data.draw(
        st.sampled_from(("jsonl", "jsonl.gz", "json", "json.gz", "csv", "csv.gz", "parquet"))
    )
    fmt = data.draw(st.sampled_from(("trl_text", "pairwise", "hh")))
    rows, expected = zip(
        *(data.draw(valid_rows(fmt, plain=True)) for _ in range(data.draw(st.integers(1, 3))))
    )
    how = data.draw(
        st.sampled_from(("empty", "whitespace", "truncate", "random", "bad_utf8", "bom", "gzip_empty"))
    )
    with tempfile.TemporaryDirectory() as tmp:
        path, numbers = write_container(Path(tmp), container, list(rows))
        if how == "bom" and container != "parquet":
            payload = gzip.decompress(path.read_bytes()) if container.endswith(".gz") else path.read_bytes()
            payload = b"\xef\xbb\xbf" + payload
            path.write_bytes(gzip.compress(payload) if container.endswith(".gz") else payload)
            ds = load_preferences(path)
            check_examples(ds, list(expected), [f"{path}:{k}" for k in numbers])
            return
        if how == "bad_utf8" and container in ("jsonl", "json", "csv"):
            blob = path.read_bytes()
            cut = data.draw(st.integers(0, len(blob)))
            path.write_bytes(blob[:cut] + b"\xff\xc3(" + blob[cut:])
        elif how == "truncate":
            blob = path.read_bytes()
            path.write_bytes(blob[: data.draw(st.integers(0, len(blob) - 1))])
        elif how == "random":
            path.write_bytes(data.draw(st.binary(max_size=200)))
        elif how == "empty":
            path.write_bytes(b"")
        elif how == "whitespace":
            blank = data.draw(st.sampled_from((b" ", b"\n\n", b"\t \r\n", b"\xef\xbb\xbf")))
            path.write_bytes(gzip.compress(blank) if container.endswith(".gz") else blank)
        elif how == "gzip_empty" and container.endswith(".gz"):
            path.write_bytes(gzip.compress(b""))
        else:
            path.write_bytes(b"")
        try:
            ds = load_preferences(path, format=LOADER_FORMAT[fmt])
        except PreferenceDataError as err:
            location = err.location.name if isinstance(err.location, RowLocation) else err.location
            assert location == str(path), err
            assert str(err).startswith(str(path)), err
            return
    # loading can only succeed when what is left is still a valid file (e.g. random bytes
    # that happen to parse); then each example is a valid one (the PreferenceExample
    # checks held) and comes from a row of this file.
    assert how in ("truncate", "random", "bad_utf8"), (how, ds)
    assert all(e.source.startswith(f"{path}:") for e in ds)


def test_hf_local_folder_of_data_files(tmp_path):
    """A folder of data files (datasets.load_dataset(folder)): rows and errors like a file's, named by row."""
    TRIED["hf_folder"] += 1
    folder = tmp_path / "folder"
    folder.mkdir()
    rows = [
        {"prompt": "p\u200b1", "chosen": "\u05e9\u05dc\u05d5\u05dd", "rejected": "b\x00"},
        {"prompt": "p2", "chosen": "a", "rejected": " \u200b "},
    ]
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(PreferenceDataError) as info:
        load_preferences(folder, cache_dir=str(tmp_path / "cache"))
    check_error(info.value, folder, 2, {"empty_response"}, "row")
    ds = load_preferences(folder, skip_invalid=True, cache_dir=str(tmp_path / "cache"))
    check_examples(ds, [("p\u200b1", "\u05e9\u05dc\u05d5\u05dd", "b\x00", 1.0)], [f"{folder}:1"])
    assert dict(ds.skipped) == {"empty_response": 1}


# ----------------------------------------------------------------------------- 4. specific regressions


def test_regressions_found_by_the_properties(tmp_path):
    """Each of these escaped as a non-PreferenceDataError (or loaded silently) before the fixes."""
    TRIED["regressions"] += 1
    good = '{"prompt": "p", "chosen": "a", "rejected": "b"}'
    cases = {
        '{"prompt": "p", "chosen": "a", "rejected": "b", "label": 1' + "0" * 400 + "}": (
            "bad_label",
            "label must be in [0, 1], got an integer of 1329 bits",
        ),
        '{"label": 1' + "0" * 5000 + "}": ("bad_json", "not valid JSON (Exceeds the limit (4300 digits)"),
        "[" * 100_000 + "]" * 100_000: ("bad_json", "not valid JSON (nested too deeply)"),
        '{"prompt": "p", "chosen": "a", "chosen": "c", "rejected": "b"}': (
            "bad_json",
            "not valid JSON (an object has the key 'chosen' twice)",
        ),
        '{"prompt": "p", "chosen": "\\ud800", "rejected": "b"}': (
            "bad_text",
            "the response is not valid Unicode: lone surrogate '\\ud800' at character 1",
        ),
        '{"prompt": "p", "chosen": "\\u200b\\u200d", "rejected": "b"}': (
            "empty_response",
            "empty response (only whitespace, control or invisible characters)",
        ),
        '{"prompt": "p", "chosen": [{"role": "user", "content": "p"}, {"role": "assistant", "content": "a"}], '
        '"rejected": [{"role": "user", "content": "p"}, {"role": "assistant", "content": "b"}], '
        '"score_chosen": 1' + "0" * 400 + "}": (
            "wrong_type",
            "an integer of 1329 bits is too large for a float",
        ),
    }
    for k, (line, (reason, phrase)) in enumerate(cases.items()):
        path = tmp_path / f"r{k}.jsonl"
        path.write_text(good + "\n" + line + "\n")
        with pytest.raises(PreferenceDataError) as info:
            load_preferences(path, format="trl")
        assert str(info.value).startswith(f"{path} line 2: ") and phrase in str(info.value), str(info.value)[
            :200
        ]
        assert info.value.reason == reason
    # the same deep nesting in a .json file names the file
    (tmp_path / "deep.json").write_text("[" + good + "," + "[" * 100_000 + "]" * 100_000 + "]")
    with pytest.raises(
        PreferenceDataError, match=re.escape(f"{tmp_path / 'deep.json'}: not valid JSON (nested")
    ):
        load_preferences(tmp_path / "deep.json")
    # a CSV field over the csv module's 128 KiB default limit is data, not an error
    with open(tmp_path / "huge.csv", "w", newline="") as f:
        csv.writer(f).writerows([["prompt", "chosen", "rejected"], ["p", "a" * 300_000, "b"]])
    assert load_preferences(tmp_path / "huge.csv")[0].first == "a" * 300_000
    # a whitespace-only .json file is an empty file
    (tmp_path / "ws.json").write_text(" \n")
    with pytest.raises(
        PreferenceDataError, match=re.escape(f"{tmp_path / 'ws.json'}: empty file (whitespace only)")
    ):
        load_preferences(tmp_path / "ws.json")
    with pytest.raises(ValueError, match="limit must be a positive integer, got True"):
        load_preferences(tmp_path / "huge.csv", limit=True)


def test_duplicates_are_counted_logged_and_kept_or_dropped(tmp_path, write_jsonl, caplog):
    """The duplicate rule: same prompt, responses and label, in either order; kept by default, counted, logged."""
    import logging

    rows = [
        {"prompt": "p", "response_a": "x", "response_b": "y", "label": 0.7},
        {"prompt": "p", "response_a": "y", "response_b": "x", "label": 0.3},  # the same comparison, swapped
        {
            "prompt": "p",
            "response_a": "x",
            "response_b": "y",
            "label": 0.6,
        },  # another judgement: not a duplicate
        {"prompt": "q", "response_a": "x", "response_b": "y", "label": 0.7},
        {"prompt": "p", "response_a": "x", "response_b": "y", "label": 0.7, "rater": 2},  # metadata ignored
    ]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="nlhf.data"):
        kept = load_preferences(path)
    assert len(kept) == 5 and kept.duplicates == 2 and kept[1:].duplicates == 2
    assert f"{path}: 2 duplicate rows (kept; the first: line 2 repeats line 1)" in caplog.text
    dropped = load_preferences(path, duplicates="drop")
    assert [e.source for e in dropped] == [f"{path}:1", f"{path}:3", f"{path}:4"] and dropped.duplicates == 2
    assert len(load_preferences(path, duplicates="drop", limit=3)) == 3
    with pytest.raises(ValueError, match="duplicates must be one of"):
        load_preferences(path, duplicates="error")


# ----------------------------------------------------------------------------- 5. truncation on any lengths


@HOSTILE
@given(
    lengths=st.lists(st.integers(0, 5000), min_size=1, max_size=4),
    budget=st.integers(0, 6000),
    prompt_len=st.integers(0, 5000),
    floor=st.integers(0, 600),
    cap=st.one_of(st.none(), st.integers(1, 800)),
)
def test_truncation_budgets_on_any_lengths(lengths, budget, prompt_len, floor, cap):
    """water_fill and segment_budgets keep their promises for any lengths (the huge-field side of issue 7)."""
    TRIED["truncation"] += 1
    keeps = water_fill(lengths, budget)
    assert all(0 <= k <= n for k, n in zip(keeps, lengths))
    if sum(lengths) <= budget:
        assert keeps == lengths
    else:
        assert budget - len(lengths) < sum(keeps) <= budget
        cut = [k for k, n in zip(keeps, lengths) if k < n]
        assert max(cut) - min(cut) <= 1  # the cut segments keep (almost) the same length
        assert all(n <= max(cut) for k, n in zip(keeps, lengths) if k == n)  # only the longest are cut
    assert water_fill(lengths[::-1], budget) == keeps[::-1]  # the order of the segments does not matter
    k = len(lengths)
    try:
        prompt_keep, response_keeps = segment_budgets(
            prompt_len, lengths, budget, min_prompt_tokens=floor, max_response_tokens=cap
        )
    except ValueError as err:
        assert budget < min(prompt_len, floor) + k and "cannot hold" in str(err)
        return
    assert prompt_keep + sum(response_keeps) <= budget
    assert min(prompt_len, floor) <= prompt_keep <= prompt_len
    assert all(
        1 <= r <= (n if cap is None else min(n, cap)) for r, n in zip(response_keeps, lengths) if n > 0
    )
