"""Every format and every file type reads into the same PreferenceExample values."""

from __future__ import annotations

import csv
import json

import pytest

from nlhf.data import Message, PreferenceDataError, load_preferences, load_prompts, save_preferences

TRL_TEXT = [
    {"prompt": "What is 2+2?", "chosen": " 4", "rejected": " 5"},
    {"prompt": "Capital of France?", "chosen": " Paris", "rejected": " Rome"},
]


def _user(text):
    return {"role": "user", "content": text}


def _assistant(text):
    return {"role": "assistant", "content": text}


def test_trl_text_jsonl(tmp_path, write_jsonl):
    ds = load_preferences(write_jsonl(tmp_path / "d.jsonl", TRL_TEXT))
    assert ds.format == "trl" and len(ds) == 2
    ex = ds[0]
    assert (ex.prompt, ex.first, ex.second, ex.label) == ("What is 2+2?", " 4", " 5", 1.0)
    assert ex.source == f"{tmp_path / 'd.jsonl'}:1"
    assert ds[1].source.endswith("d.jsonl:2")


def test_trl_conversational_explicit_prompt(tmp_path, write_jsonl):
    rows = [
        {
            "prompt": [{"role": "system", "content": "Be brief."}, _user("Hi")],
            "chosen": [_assistant("Hello!")],
            "rejected": [_assistant("Go away.")],
        }
    ]
    ex = load_preferences(write_jsonl(tmp_path / "c.jsonl", rows))[0]
    assert ex.prompt == (Message("system", "Be brief."), Message("user", "Hi"))
    assert (ex.first, ex.second) == ("Hello!", "Go away.")


def test_trl_conversational_implicit_prompt(tmp_path, write_jsonl):
    convo = [_user("Hi"), _assistant("Hello"), _user("Tell me a joke")]
    rows = [{"chosen": convo + [_assistant("Knock knock.")], "rejected": convo + [_assistant("No.")]}]
    ds = load_preferences(write_jsonl(tmp_path / "i.jsonl", rows))
    assert ds.format == "trl"
    ex = ds[0]
    assert ex.prompt == (
        Message("user", "Hi"),
        Message("assistant", "Hello"),
        Message("user", "Tell me a joke"),
    )
    assert (ex.first, ex.second) == ("Knock knock.", "No.")


def test_ultrafeedback_binarized_style(tmp_path, write_jsonl):
    rows = [
        {
            "prompt": "Name a colour",
            "prompt_id": "p1",
            "chosen": [_user("Name a colour"), _assistant("Blue")],
            "rejected": [_user("Name a colour"), _assistant("Seven")],
            "messages": [_user("Name a colour"), _assistant("Blue")],
            "score_chosen": 8.5,
            "score_rejected": 2,
        }
    ]
    ds = load_preferences(write_jsonl(tmp_path / "uf.jsonl", rows))
    assert ds.format == "ultrafeedback"
    ex = ds[0]
    assert (ex.prompt, ex.first, ex.second, ex.label) == ("Name a colour", "Blue", "Seven", 1.0)
    # scalar extras and the scores are kept; the list column 'messages' is not
    assert dict(ex.metadata) == {"prompt_id": "p1", "score_chosen": 8.5, "score_rejected": 2.0}


def test_ultrafeedback_with_system_turn_uses_whole_prefix(tmp_path, write_jsonl):
    prefix = [{"role": "system", "content": "You are kind."}, _user("Name a colour")]
    rows = [
        {
            "prompt": "Name a colour",
            "chosen": prefix + [_assistant("Blue")],
            "rejected": prefix + [_assistant("Seven")],
        }
    ]
    ex = load_preferences(write_jsonl(tmp_path / "uf.jsonl", rows))[0]
    assert ex.prompt == (Message("system", "You are kind."), Message("user", "Name a colour"))


def test_pairwise_soft_labels_and_letters(tmp_path, write_jsonl):
    rows = [
        {"prompt": "p1", "response_a": "x", "response_b": "y", "label": 0.25},
        {"prompt": "p2", "response_a": "x", "response_b": "y", "label": "a"},
        {"prompt": "p3", "response_a": "x", "response_b": "y", "label": "B"},
        {"prompt": "p4", "response_a": "x", "response_b": "y", "label": "tie"},
        {"prompt": "p5", "response_a": "x", "response_b": "y", "label": 0},
    ]
    ds = load_preferences(write_jsonl(tmp_path / "pw.jsonl", rows))
    assert ds.format == "pairwise"
    assert [e.label for e in ds] == [0.25, 1.0, 0.0, 0.5, 0.0]
    assert [(e.first, e.second) for e in ds] == [("x", "y")] * 5


def test_soft_label_column_in_chosen_rejected_rows(tmp_path, write_jsonl):
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b", "label": 0.7}]
    ex = load_preferences(write_jsonl(tmp_path / "s.jsonl", rows))[0]
    assert ex.label == 0.7 and ex.chosen == "a"


def test_json_list_and_data_wrapper(tmp_path):
    (tmp_path / "l.json").write_text(json.dumps(TRL_TEXT))
    (tmp_path / "w.json").write_text(json.dumps({"data": TRL_TEXT, "version": 1}))
    a, b = load_preferences(tmp_path / "l.json"), load_preferences(tmp_path / "w.json")
    assert (
        [(e.prompt, e.first) for e in a]
        == [(e.prompt, e.first) for e in b]
        == [("What is 2+2?", " 4"), ("Capital of France?", " Paris")]
    )
    assert a[1].source == f"{tmp_path / 'l.json'}:2"


def test_parquet_with_conversations(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": [_user("Hi")], "chosen": [_assistant("Hello")], "rejected": [_assistant("Bye")]}] * 3
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    ds = load_preferences(tmp_path / "d.parquet")
    assert len(ds) == 3 and ds[2].source.endswith("d.parquet:3")
    assert (ds[0].prompt, ds[0].first, ds[0].second) == ((Message("user", "Hi"),), "Hello", "Bye")


def test_csv_text_and_json_cells(tmp_path):
    path = tmp_path / "d.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["question", "response_a", "response_b", "label"])
        w.writerow(["Why, oh why?", "Because, that's why.", "No idea", "0.9"])
        w.writerow([json.dumps([_user("Hi")]), "Hello", "Bye", "b"])
    ds = load_preferences(path, columns={"prompt": "question"})
    assert [(e.prompt, e.first, e.label) for e in ds] == [
        ("Why, oh why?", "Because, that's why.", 0.9),
        ((Message("user", "Hi"),), "Hello", 0.0),
    ]
    assert "question" not in ds[0].metadata


def test_column_mapping(tmp_path, write_jsonl):
    rows = [{"q": "p", "good": "yes", "bad": "no", "id": 7}]
    ex = load_preferences(
        write_jsonl(tmp_path / "m.jsonl", rows), columns={"prompt": "q", "chosen": "good", "rejected": "bad"}
    )[0]
    assert (ex.prompt, ex.first, ex.second, dict(ex.metadata)) == ("p", "yes", "no", {"id": 7})
    with pytest.raises(ValueError, match="unknown key 'answer'"):
        load_preferences(tmp_path / "m.jsonl", columns={"answer": "good"})


def test_explicit_format_and_unknown_format(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "d.jsonl", TRL_TEXT)
    assert load_preferences(path, format="trl").format == "trl"
    with pytest.raises(ValueError, match="unknown data format 'dpo'"):
        load_preferences(path, format="dpo")


def test_undetectable_columns_named(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(
        PreferenceDataError,
        match=r"d\.jsonl line 1: cannot tell the data format from the "
        r"columns \['answer', 'question'\]",
    ):
        load_preferences(path, skip_invalid=True)  # a format problem is never skipped


def test_limit(tmp_path, write_jsonl):
    rows = [{"prompt": f"p{i}", "chosen": "a", "rejected": "b"} for i in range(10)]
    ds = load_preferences(write_jsonl(tmp_path / "d.jsonl", rows), limit=3)
    assert [e.prompt for e in ds] == ["p0", "p1", "p2"]


def test_hf_save_to_disk_dataset_and_dict(tmp_path):
    import datasets

    rows = {"prompt": ["a", "b", "c"], "chosen": ["x", "y", "z"], "rejected": ["u", "v", "w"]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "single"))
    ds = load_preferences(tmp_path / "single")
    assert [(e.prompt, e.first, e.second) for e in ds] == [("a", "x", "u"), ("b", "y", "v"), ("c", "z", "w")]
    assert ds[1].source == f"{tmp_path / 'single'}:2"

    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(rows),
            "test": datasets.Dataset.from_dict({k: v[:1] for k, v in rows.items()}),
        }
    )
    dd.save_to_disk(str(tmp_path / "dict"))
    assert len(load_preferences(tmp_path / "dict")) == 3  # "train" by default
    test = load_preferences(tmp_path / "dict", split="test")
    assert len(test) == 1 and test[0].source == f"{tmp_path / 'dict'}[test]:1"
    with pytest.raises(PreferenceDataError, match=r"no split 'valid' \(splits: \['train', 'test'\]\)"):
        load_preferences(tmp_path / "dict", split="valid")


def test_hf_directory_of_jsonl_files(tmp_path, write_jsonl):
    folder = tmp_path / "ds"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", TRL_TEXT)
    write_jsonl(folder / "test.jsonl", TRL_TEXT[:1])
    train = load_preferences(folder, cache_dir=str(tmp_path / "cache"))
    test = load_preferences(folder, split="test", cache_dir=str(tmp_path / "cache"))
    assert [e.first for e in train] == [" 4", " Paris"] and [e.first for e in test] == [" 4"]


def test_hf_hub_name_goes_through_load_dataset_and_fails_clearly_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        PreferenceDataError,
        match=r"nobody/no-such-dataset.*could not load the Hugging Face "
        r"dataset \(datasets\.load_dataset",
    ):
        load_preferences("nobody/no-such-dataset", split="train", cache_dir=str(tmp_path / "cache"))


def test_save_and_reload_roundtrip(tmp_path, write_jsonl):
    rows = [
        {"prompt": [_user("Hi")], "chosen": [_assistant("Hello")], "rejected": [_assistant("Bye")], "id": 3},
        {"prompt": "p", "chosen": "a", "rejected": "b", "label": 0.6},
    ]
    ds = load_preferences(write_jsonl(tmp_path / "d.jsonl", rows))
    back = load_preferences(save_preferences(ds, tmp_path / "out.jsonl.gz"))
    assert back.format == "pairwise"
    assert [(e.prompt, e.first, e.second, e.label, dict(e.metadata)) for e in back] == [
        (e.prompt, e.first, e.second, e.label, dict(e.metadata)) for e in ds
    ]


def test_load_prompts_from_every_format(tmp_path, write_jsonl):
    hh = "\n\nHuman: Hi there\n\nAssistant: Hello\n\nHuman: A joke?\n\nAssistant: "
    files = {
        "trl.jsonl": [{"prompt": "What?", "chosen": "a", "rejected": "b"}],
        "pw.jsonl": [{"prompt": "What?", "response_a": "a", "response_b": "b", "label": 0.5}],
        "only.jsonl": [{"prompt": "What?", "id": 1}],
        "hh.jsonl": [{"chosen": hh + "No.", "rejected": hh + "Sure."}],
        "conv.jsonl": [
            {"chosen": [_user("What?"), _assistant("a")], "rejected": [_user("What?"), _assistant("b")]}
        ],
        "msgs.jsonl": [{"messages": [_user("What?"), _assistant("a")]}],
    }
    got = {name: load_prompts(write_jsonl(tmp_path / name, rows))[0].prompt for name, rows in files.items()}
    what = (Message("user", "What?"),)
    assert got == {
        "trl.jsonl": "What?",
        "pw.jsonl": "What?",
        "only.jsonl": "What?",
        "hh.jsonl": (Message("user", "Hi there"), Message("assistant", "Hello"), Message("user", "A joke?")),
        "conv.jsonl": what,
        "msgs.jsonl": what,
    }
    assert load_prompts(tmp_path / "only.jsonl")[0].metadata == {"id": 1}


def test_load_prompts_unique_and_limit(tmp_path, write_jsonl):
    rows = [{"prompt": p} for p in ["a", "b", "a", "c", "b", "d"]]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    assert [p.prompt for p in load_prompts(path, unique=True)] == ["a", "b", "c", "d"]
    assert [p.prompt for p in load_prompts(path, unique=True, limit=3)] == ["a", "b", "c"]
    assert [p.source for p in load_prompts(path, limit=2)] == [f"{path}:1", f"{path}:2"]


def test_slicing_keeps_provenance(tmp_path, write_jsonl):
    rows = [{"prompt": f"p{i}", "chosen": "a", "rejected": "b"} for i in range(5)]
    ds = load_preferences(write_jsonl(tmp_path / "d.jsonl", rows))
    head = ds[:2]
    assert type(head).__name__ == "PreferenceDataset" and len(head) == 2
    assert head.source == ds.source and head.format == "trl"
