"""The environments' built-in prompt set: 200 short user questions, split train / held-out.

``prompts.jsonl`` (next to this file) has one JSON object a line::

    {"id": "list-03", "kind": "list", "split": "heldout", "prompt": "Name a few good habits ..."}

Four kinds of 50 questions each, chosen so that SmolLM2-135M-Instruct's answers vary in
the style classes of :mod:`nlhf.envs.features`:

* ``list``     requests for tips, steps, ideas ("Give me three tips for ...")  -> lists
* ``fact``     one-line factual questions ("What is the capital of Japan?")   -> short answers
* ``explain``  "why / how / what is" questions                                -> prose
* ``open``     advice, opinions, small creative tasks ("Write a haiku ...")    -> mixed

The split is deterministic and written into the file: within each kind, question number
``i`` (0-based) is held out when ``i % 4 == 3`` (12 per kind: 152 train, 48 held-out).
:func:`load_env_prompts` checks every row, and the rule, and names the line of a bad one.
"""

from __future__ import annotations

import json
from pathlib import Path

from nlhf.data.schema import PromptExample

PROMPTS_PATH = Path(__file__).with_name("prompts.jsonl")
KINDS = ("list", "fact", "explain", "open")
SPLITS = ("train", "heldout", "all")


def heldout_rule(index_in_kind: int) -> str:
    """The split of the ``index_in_kind``-th question of its kind: every fourth is held out."""
    return "heldout" if index_in_kind % 4 == 3 else "train"


def load_env_prompts(split: str = "train", path: str | Path = PROMPTS_PATH) -> list[PromptExample]:
    """The prompts of ``split`` ("train", "heldout" or "all") in file order, as :class:`PromptExample`.

    Each example's ``source`` is ``"prompts.jsonl:LINE"`` and its ``metadata`` holds
    ``id``, ``kind`` and ``split``. A malformed row is a ``ValueError`` naming the file and line.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = Path(path)
    out: list[PromptExample] = []
    seen: set[str] = set()
    count_in_kind: dict[str, int] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not valid JSON ({exc})") from exc
            if not isinstance(row, dict) or set(row) != {"id", "kind", "split", "prompt"}:
                raise ValueError(f"{where}: expected the keys id, kind, split, prompt; got {row!r}")
            if row["kind"] not in KINDS:
                raise ValueError(f"{where}: kind {row['kind']!r} is not one of {KINDS}")
            if not isinstance(row["prompt"], str) or not row["prompt"].strip():
                raise ValueError(f"{where}: prompt must be a non-empty string")
            if row["id"] in seen:
                raise ValueError(f"{where}: duplicate id {row['id']!r}")
            seen.add(row["id"])
            i = count_in_kind.get(row["kind"], 0)
            count_in_kind[row["kind"]] = i + 1
            if row["split"] != heldout_rule(i):
                raise ValueError(
                    f"{where}: split {row['split']!r} breaks the rule (question {i} of kind "
                    f"{row['kind']!r} belongs to {heldout_rule(i)!r})"
                )
            if split in ("all", row["split"]):
                meta = {"id": row["id"], "kind": row["kind"], "split": row["split"]}
                out.append(PromptExample(row["prompt"], source=f"{path.name}:{lineno}", metadata=meta))
    return out
