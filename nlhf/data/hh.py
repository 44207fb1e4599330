"""Anthropic HH-RLHF transcripts: split two full dialogues into a prompt and two responses.

An HH-RLHF row holds two complete transcripts, ``chosen`` and ``rejected``, written as
``"\\n\\nHuman: ...\\n\\nAssistant: ...\\n\\nHuman: ...\\n\\nAssistant: ..."``. They normally
share every turn but the final Assistant turn.

The rule used here (:func:`split_hh_pair`):

1. Each transcript is split into turns at ``"\\n\\nHuman:"`` and ``"\\n\\nAssistant:"``
   (a speaker name *not* preceded by a blank line is part of the text). Contents are
   stripped of surrounding whitespace. Text before the first turn is an error
   (``bad_transcript``); a missing leading blank line is tolerated.
2. Consecutive turns of the same speaker are merged into one turn, joined by a blank line
   (``"\\n\\n"``); an example where this happened is counted as ``hh_merged_turns``. (In the
   1,700-row harmless test sample this touches 3 rows, lines 500, 1202 and 1608; in the
   first two the chosen transcript ends with two Assistant turns, the first of which
   contains an inline "Human:", so without the merge their prompts would differ.)
3. Both transcripts must end with an Assistant turn (else ``bad_transcript``). The prompt
   is every turn before that final turn, as chat messages (Human -> ``user``, Assistant ->
   ``assistant``); the responses are the two final Assistant turns.
4. The two prompts must be identical. If they are not, the row is invalid with reason
   ``hh_prefix_mismatch`` (an error, or skipped and counted with ``skip_invalid=True``).
   Equivalently: the prompt is the longest common prefix of turns ending on a Human turn,
   and each side's remainder must be exactly one (merged) Assistant turn; a row whose
   dialogues diverge earlier compares more than the final answers, so it is not a pair.

Empty final turns (4 of the 3,400 transcripts in the sample) are ``empty_response``.
"""

from __future__ import annotations

import re

from nlhf.data.errors import InvalidRow
from nlhf.data.schema import Message

_TURN = re.compile(r"\n\n(Human|Assistant):")
_ROLE = {"Human": "user", "Assistant": "assistant"}
_SPEAKER = {"user": "Human", "assistant": "Assistant"}


def looks_like_hh(text: object) -> bool:
    """True for a string that starts with an HH ``Human:`` turn."""
    return isinstance(text, str) and text.lstrip().startswith("Human:") and "\n\nAssistant:" in text


def parse_hh_transcript(text: str, field: str = "transcript") -> tuple[list[Message], bool]:
    """Turns of one transcript (rules 1-2 above) and whether same-speaker turns were merged."""
    if not isinstance(text, str):
        raise InvalidRow(
            "wrong_type", field, f"expected an HH-RLHF transcript string, got {type(text).__name__}"
        )
    if not text.startswith("\n\n") and text.lstrip().startswith(("Human:", "Assistant:")):
        text = "\n\n" + text.lstrip()
    parts = _TURN.split(text)
    head, pairs = parts[0], list(zip(parts[1::2], parts[2::2]))
    if not pairs:
        raise InvalidRow(
            "bad_transcript",
            field,
            "not an HH-RLHF transcript (no '\\n\\nHuman:' / '\\n\\nAssistant:' turns)",
        )
    if head.strip():
        raise InvalidRow(
            "bad_transcript", field, f"text before the first 'Human:' turn: {head.strip()[:40]!r}"
        )
    turns: list[Message] = []
    merged = False
    for speaker, content in pairs:
        role, content = _ROLE[speaker], content.strip()
        if turns and turns[-1].role == role:
            previous = turns[-1].content
            turns[-1] = Message(
                role, f"{previous}\n\n{content}" if previous and content else previous + content
            )
            merged = True
        else:
            turns.append(Message(role, content))
    return turns, merged


def split_hh_pair(chosen: str, rejected: str) -> tuple[tuple[Message, ...], str, str, bool]:
    """``(prompt, chosen_response, rejected_response, merged)`` by the rule in the module docstring."""
    chosen_turns, merged_c = parse_hh_transcript(chosen, "chosen")
    rejected_turns, merged_r = parse_hh_transcript(rejected, "rejected")
    for field, turns in (("chosen", chosen_turns), ("rejected", rejected_turns)):
        if turns[-1].role != "assistant":
            raise InvalidRow("bad_transcript", field, "the transcript does not end with an 'Assistant:' turn")
    prompt_c, prompt_r = chosen_turns[:-1], rejected_turns[:-1]
    if prompt_c != prompt_r:
        k = next(
            (i for i, (a, b) in enumerate(zip(prompt_c, prompt_r)) if a != b),
            min(len(prompt_c), len(prompt_r)),
        )
        raise InvalidRow(
            "hh_prefix_mismatch",
            "chosen/rejected",
            f"the dialogues differ before their final Assistant turn (first at turn {k + 1}; "
            f"{len(prompt_c)} vs {len(prompt_r)} prompt turns)",
        )
    return tuple(prompt_c), chosen_turns[-1].content, rejected_turns[-1].content, merged_c or merged_r


def hh_prompt(text: str, field: str = "chosen") -> tuple[Message, ...]:
    """The prompt part of one transcript: every turn before a final Assistant turn (all turns otherwise)."""
    turns, _ = parse_hh_transcript(text, field)
    return tuple(turns[:-1] if turns[-1].role == "assistant" else turns)


def hh_transcript(prompt: tuple[Message, ...] | str, response: str | None = None) -> str:
    """Render a prompt (and optionally a final Assistant response) back into HH-RLHF text.

    The inverse of :func:`parse_hh_transcript` up to whitespace around turn contents. A
    plain-text prompt becomes one Human turn; only user and assistant roles can be written.
    """
    turns = [Message("user", prompt)] if isinstance(prompt, str) else list(prompt)
    if response is not None:
        turns.append(Message("assistant", response))
    out = []
    for m in turns:
        if m.role not in _SPEAKER:
            raise ValueError(f"HH-RLHF transcripts have only Human and Assistant turns, got role {m.role!r}")
        out.append(f"\n\n{_SPEAKER[m.role]}: {m.content}")
    return "".join(out)
