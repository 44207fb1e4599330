"""HH-RLHF transcripts: the split rule, its repairs and errors, and the real 1,700-pair sample."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from nlhf.data import (
    Message,
    PreferenceDataError,
    hh_transcript,
    load_preferences,
    load_prompts,
    parse_hh_transcript,
    save_preferences,
)

H, A = "\n\nHuman:", "\n\nAssistant:"
HH_FILE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "hh-rlhf-harmless-1700.jsonl.gz"


def test_split_into_shared_prompt_and_final_turns(tmp_path, write_jsonl):
    prefix = f"{H} How do I bake bread?{A} Flour, water, yeast.{H} And then?"
    rows = [{"chosen": prefix + f"{A} Knead it.", "rejected": prefix + f"{A} Burn it."}]
    ds = load_preferences(write_jsonl(tmp_path / "hh.jsonl", rows))
    assert ds.format == "hh"
    ex = ds[0]
    assert ex.prompt == (
        Message("user", "How do I bake bread?"),
        Message("assistant", "Flour, water, yeast."),
        Message("user", "And then?"),
    )
    assert (ex.first, ex.second, ex.label) == ("Knead it.", "Burn it.", 1.0)
    assert dict(ds.repaired) == {}


def test_inline_speaker_name_is_text_and_same_speaker_turns_merge(tmp_path, write_jsonl):
    # Like row 500 of the real sample: an Assistant turn containing "Human:" without a blank
    # line, followed by a second Assistant turn. The merge makes the prompts agree.
    prefix = f"{H} Are drag queens men?{A} No.{H} Isn't that drag kings?"
    chosen = prefix + f"{A} No, kings.  Human: Then why?{A}  Because."
    rejected = prefix + f"{A} A drag king is the opposite."
    ds = load_preferences(write_jsonl(tmp_path / "hh.jsonl", [{"chosen": chosen, "rejected": rejected}]))
    ex = ds[0]
    assert ex.prompt[-1] == Message("user", "Isn't that drag kings?") and len(ex.prompt) == 3
    assert ex.first == "No, kings.  Human: Then why?\n\nBecause."
    assert ex.second == "A drag king is the opposite."
    assert dict(ds.repaired) == {"hh_merged_turns": 1}


def test_prefix_mismatch_is_an_error_or_skipped_and_counted(tmp_path, write_jsonl):
    good = {"chosen": f"{H} hi{A} hello", "rejected": f"{H} hi{A} go away"}
    bad = {"chosen": f"{H} hi{A} hello{H} more?{A} yes", "rejected": f"{H} hi{A} bye{H} more?{A} no"}
    path = write_jsonl(tmp_path / "hh.jsonl", [good, bad, good])
    with pytest.raises(
        PreferenceDataError,
        match=re.escape(
            f"{path} line 2: field 'chosen/rejected': the dialogues differ before their final Assistant turn "
            "(first at turn 2; 3 vs 3 prompt turns)"
        ),
    ):
        load_preferences(path)
    ds = load_preferences(path, skip_invalid=True)
    assert len(ds) == 2 and dict(ds.skipped) == {"hh_prefix_mismatch": 1}


def test_transcript_errors(tmp_path, write_jsonl):
    cases = [
        (
            {"chosen": f"{H} hi{A} a{H} what?", "rejected": f"{H} hi{A} b"},
            "chosen",
            "the transcript does not end with an 'Assistant:' turn",
        ),
        ({"chosen": f"{H} hi{A} a", "rejected": "just text"}, "rejected", "not an HH-RLHF transcript"),
        (
            {"chosen": f"{H} hi{A} a", "rejected": f"preamble{H} hi{A} b"},
            "rejected",
            "text before the first 'Human:' turn",
        ),
        ({"chosen": f"{H} hi{A}   ", "rejected": f"{H} hi{A} b"}, "chosen", "empty response"),
        (
            {"chosen": f"{H} hi{A} same", "rejected": f"{H} hi{A} same "},
            "chosen/rejected",
            "the two responses are identical",
        ),
        (
            {"chosen": f"{H} hi{A} a", "rejected": ["not", "text"]},
            "rejected",
            "expected an HH-RLHF transcript string, got list",
        ),
    ]
    for i, (row, field, phrase) in enumerate(cases):
        path = write_jsonl(tmp_path / f"e{i}.jsonl", [row])
        with pytest.raises(PreferenceDataError, match=re.escape(f"{path} line 1: field '{field}': {phrase}")):
            load_preferences(path, format="hh")


def test_missing_leading_blank_line_is_tolerated():
    turns, merged = parse_hh_transcript("Human: hi\n\nAssistant: hello")
    assert turns == [Message("user", "hi"), Message("assistant", "hello")] and not merged


def test_hh_transcript_renders_back():
    prompt = (Message("user", "hi"), Message("assistant", "hello"), Message("user", "bye?"))
    text = hh_transcript(prompt, "bye.")
    assert text == "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bye?\n\nAssistant: bye."
    assert parse_hh_transcript(text) == (list(prompt) + [Message("assistant", "bye.")], False)
    with pytest.raises(ValueError, match="only Human and Assistant turns, got role 'system'"):
        hh_transcript((Message("system", "x"),))


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


@pytest.mark.skipif(
    not HH_FILE.is_file(),
    reason=f"the shared HH-RLHF sample is absent ({HH_FILE}); "
    "it lives in ../shared/data beside the repository checkout",
)
def test_real_hh_sample_loads_and_round_trips(tmp_path):
    """The 1,700 harmless-base test pairs: 4 have an empty chosen turn (lines 341, 1034, 1469,
    1642); 3 need same-speaker turns merged; every other pair re-renders to its transcripts."""
    with pytest.raises(
        PreferenceDataError, match=re.escape(f"{HH_FILE} line 341: field 'chosen': empty response")
    ):
        load_preferences(HH_FILE)
    ds = load_preferences(HH_FILE, skip_invalid=True)
    assert ds.format == "hh" and len(ds) == 1696
    assert dict(ds.skipped) == {"empty_response": 4}
    assert dict(ds.repaired) == {"hh_merged_turns": 3}
    assert all(ex.label == 1.0 and isinstance(ex.prompt, tuple) and ex.prompt[-1].role == "user" for ex in ds)

    raw = [json.loads(line) for line in gzip.open(HH_FILE, "rt", encoding="utf-8")]
    first = ds[0]
    assert first.source == f"{HH_FILE}:1"
    assert first.prompt == (Message("user", "I'm gonna feed my dog some marijuana brownies right now"),)
    assert first.second == (
        "Hey, that's really interesting, do you mind if I listen to your thoughts while you're eating that?"
    )
    # Round trip 1: example -> HH transcripts, equal to the originals up to whitespace, except
    # for the 3 rows whose same-speaker turns were merged.
    mismatched, merged = [], []
    for ex in ds:
        row = raw[int(ex.source.rsplit(":", 1)[1]) - 1]
        same = _squash(hh_transcript(ex.prompt, ex.first)) == _squash(row["chosen"]) and _squash(
            hh_transcript(ex.prompt, ex.second)
        ) == _squash(row["rejected"])
        if not same:
            mismatched.append(ex.source)
        if parse_hh_transcript(row["chosen"])[1] or parse_hh_transcript(row["rejected"])[1]:
            merged.append(ex.source)
    assert mismatched == merged and len(merged) == 3

    # Round trip 2: save -> load gives the same examples.
    back = load_preferences(save_preferences(ds, tmp_path / "hh.jsonl.gz"))
    assert len(back) == len(ds)
    assert [(e.prompt, e.first, e.second, e.label) for e in back] == [
        (e.prompt, e.first, e.second, e.label) for e in ds
    ]

    # Prompts: every row has one (responses are not read), 1,698 distinct.
    assert len(load_prompts(HH_FILE)) == 1700
    assert len(load_prompts(HH_FILE, unique=True)) == 1698


@pytest.mark.skipif(
    not HH_FILE.is_file(),
    reason=f"the shared HH-RLHF sample is absent ({HH_FILE}); "
    "it lives in ../shared/data beside the repository checkout",
)
def test_real_hh_minilm_lengths_and_truncation(minilm_tok):
    """The numbers in nlhf/data/truncation.py's docstring: MiniLM triples have p50 161, p90 391,
    max 1035 tokens, 76 of 1,696 exceed 512; cut to 512, 75 lose prompt tokens and 5 lose
    response tokens, and every triple is exactly within budget."""
    import logging

    import numpy as np

    from nlhf.data import encode_triple

    logging.getLogger("nlhf.data").setLevel(logging.ERROR)
    try:
        ds = load_preferences(HH_FILE, skip_invalid=True)
    finally:
        logging.getLogger("nlhf.data").setLevel(logging.NOTSET)
    full = np.array(
        [len(encode_triple(minilm_tok, e.prompt, e.first, e.second, 10**6).input_ids) for e in ds]
    )
    assert [int(np.percentile(full, q)) for q in (50, 90)] + [int(full.max())] == [161, 391, 1035]
    assert int((full > 512).sum()) == 76
    cut = [encode_triple(minilm_tok, e.prompt, e.first, e.second, 512) for e in ds]
    assert max(len(c.input_ids) for c in cut) == 512
    assert sum(c.truncated for c in cut) == 76
    assert sum(c.prompt_cut > 0 for c in cut) == 75
    assert sum(any(c.response_cuts) for c in cut) == 5
