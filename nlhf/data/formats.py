"""Row formats people already have, converted to :class:`~nlhf.data.schema.PreferenceExample`.

Formats (names for ``format=``; auto-detected from the keys of the first row otherwise):

``"trl"`` -- TRL's preference format, ``prompt`` / ``chosen`` / ``rejected``:
    * text: three strings (the prompt is kept verbatim, whitespace included);
    * conversational: ``prompt`` a list of ``{"role", "content"}`` messages and ``chosen`` /
      ``rejected`` each a list holding one assistant message;
    * implicit prompt (no ``prompt`` column): ``chosen`` / ``rejected`` are full
      conversations; the prompt is every message before the final assistant message, and
      the two must agree on it (else ``prompt_mismatch``).
``"ultrafeedback"`` -- UltraFeedback-binarized style: ``prompt`` (text) plus ``chosen`` /
    ``rejected`` full conversations (user turn, assistant turn), optional ``score_chosen`` /
    ``score_rejected`` (kept in ``metadata``). The conversation prefix must agree with the
    ``prompt`` column: equal to it as one user turn (the text prompt is used), or ending in
    a user turn equal to it (the whole prefix, e.g. with a system turn, is used).
    Otherwise ``prompt_mismatch``. Same converter as ``"trl"``; only the detected name differs.
``"hh"`` -- Anthropic HH-RLHF: ``chosen`` / ``rejected`` full transcripts, split into the
    shared prompt (chat messages) and the two final assistant turns by the rule in
    :mod:`nlhf.data.hh`.
``"pairwise"`` -- ``prompt`` / ``response_a`` / ``response_b`` / ``label`` with
    ``label = P(response_a > response_b)`` in [0, 1] (soft labels). Also accepted: the
    strings ``"a"`` (1.0), ``"b"`` (0.0) and ``"tie"`` (0.5), case-insensitive, and numeric
    strings (CSV cells). Booleans are refused (ambiguous).

Labels: a chosen/rejected row is ``label = 1.0`` with ``first = chosen``; an optional
``label`` column in a chosen/rejected row is read as ``P(chosen > rejected)`` (soft labels).

Validation (each raises :class:`~nlhf.data.errors.InvalidRow` with a reason from
:data:`~nlhf.data.errors.REASONS`): missing or null field, wrong type, a message that is
not ``{"role": system|user|assistant|tool, "content": str}``, an empty (or whitespace-only)
prompt or response, identical responses (compared after stripping surrounding whitespace),
a label outside [0, 1] or NaN, a string that is not valid Unicode (a lone surrogate such as
the JSON escape ``"\\ud800"``, which no tokenizer can encode: ``bad_text``). Responses are kept
verbatim (text formats) or as the message content (conversational formats).

Blank text: a prompt or response is empty when it holds nothing but whitespace, control
characters (Unicode category Cc, e.g. NUL) and invisible format characters (category Cf:
zero-width space and joiners, byte-order mark, direction marks). Such characters inside
otherwise visible text are kept verbatim.

Other columns with scalar values (str, int, float, bool, None) are kept in ``metadata``.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nlhf.data.errors import InvalidRow
from nlhf.data.hh import hh_prompt, looks_like_hh, split_hh_pair
from nlhf.data.schema import ROLES, Message, Prompt

#: Format names accepted by ``format=`` (aliases map to these).
FORMATS = ("trl", "ultrafeedback", "hh", "pairwise")
_ALIASES = {
    "hh-rlhf": "hh",
    "hh_rlhf": "hh",
    "anthropic": "hh",
    "trl_conversational": "trl",
    "conversational": "trl",
    "ultrafeedback_binarized": "ultrafeedback",
    "response_ab": "pairwise",
}
#: Extra format names for prompt-only loading.
PROMPT_FORMATS = (*FORMATS, "prompt", "messages")

#: Column names that ``columns=`` may map onto.
CANONICAL_COLUMNS = (
    "prompt",
    "chosen",
    "rejected",
    "response_a",
    "response_b",
    "label",
    "score_chosen",
    "score_rejected",
    "messages",
)
_CONSUMED = {
    "trl": ("prompt", "chosen", "rejected", "label"),
    "ultrafeedback": ("prompt", "chosen", "rejected", "label"),
    "hh": ("chosen", "rejected", "label"),
    "pairwise": ("prompt", "response_a", "response_b", "label"),
}


@dataclass
class Converted:
    """A converted row, before it becomes a PreferenceExample (which adds the source)."""

    prompt: Prompt
    first: str
    second: str
    label: float
    metadata: dict[str, Any] = field(default_factory=dict)
    repairs: tuple[str, ...] = ()


def canonical_format(name: str, allowed: tuple[str, ...] = FORMATS) -> str:
    """The canonical format name for ``name`` (an alias or a name in ``allowed``)."""
    fmt = _ALIASES.get(name, name)
    if fmt not in allowed:
        raise ValueError(f"unknown data format {name!r} (known: {', '.join(allowed)})")
    return fmt


def detect_format(row: Mapping[str, Any]) -> str:
    """The format of a preference dataset from the keys (and value types) of its first row."""
    keys = set(row)
    if {"response_a", "response_b"} <= keys:
        return "pairwise"
    if {"chosen", "rejected"} <= keys:
        chosen = row["chosen"]
        if "prompt" in keys:
            if "score_chosen" in keys or "score_rejected" in keys:
                return "ultrafeedback"
            if isinstance(chosen, list) and len(chosen) > 1 and isinstance(row["prompt"], str):
                return "ultrafeedback"
            return "trl"
        if isinstance(chosen, str):
            if looks_like_hh(chosen):
                return "hh"
            raise InvalidRow(
                "missing_field",
                "prompt",
                "text 'chosen'/'rejected' without a 'prompt' column must be HH-RLHF transcripts "
                "('\\n\\nHuman: ... \\n\\nAssistant: ...'); map your prompt column with columns={'prompt': ...}",
            )
        return "trl"
    raise InvalidRow(
        "missing_field",
        None,
        f"cannot tell the data format from the columns {sorted(keys)}: expected prompt/chosen/rejected "
        "(TRL, UltraFeedback), chosen/rejected transcripts (HH-RLHF) or prompt/response_a/response_b/label; "
        "rename columns with columns={'prompt': 'your_column', ...} or pass format=",
    )


def detect_prompt_format(row: Mapping[str, Any]) -> str:
    """Like :func:`detect_format`, for prompt-only loading (a lone ``prompt`` or ``messages`` column is fine)."""
    keys = set(row)
    if "prompt" in keys and not (isinstance(row.get("chosen"), list) and len(row["chosen"]) > 1):
        return "prompt"
    if "chosen" in keys:
        chosen = row["chosen"]
        if isinstance(chosen, str):
            if looks_like_hh(chosen):
                return "hh"
        elif isinstance(chosen, list):
            return "trl"
    if "messages" in keys:
        return "messages"
    raise InvalidRow(
        "missing_field",
        "prompt",
        f"cannot find a prompt in the columns {sorted(keys)}: expected 'prompt', 'messages', HH-RLHF "
        "'chosen' transcripts or 'chosen' conversations; rename columns with columns={'prompt': ...}",
    )


# ---------------------------------------------------------------------------------------------
# field helpers


def _get(row: Mapping[str, Any], key: str) -> Any:
    if key not in row:
        raise InvalidRow("missing_field", key, f"missing (columns: {sorted(row)})")
    value = row[key]
    if value is None:
        raise InvalidRow("missing_field", key, "is null")
    return value


def is_blank(text: str) -> bool:
    """True when ``text`` shows nothing: only whitespace, control (Cc) and format (Cf) characters."""
    if not text.strip():
        return True
    return all(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf") for ch in text)


def _blank_kind(text: str) -> str:
    if not text:
        return ""
    return " (whitespace only)" if not text.strip() else " (only whitespace, control or invisible characters)"


def check_unicode(text: str, key: str, what: str = "text") -> str:
    """``text`` if it can be encoded as UTF-8; else ``bad_text`` (a lone surrogate from a ``\\udXXX`` escape)."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidRow(
                "bad_text",
                key,
                f"{what} is not valid Unicode: lone surrogate {text[exc.start]!r} at "
                f"character {exc.start + 1}",
            ) from None
    return text


def _message(value: Any, key: str, i: int) -> Message:
    if not isinstance(value, Mapping):
        raise InvalidRow("bad_message", key, f"message {i + 1} is a {type(value).__name__}, not an object")
    role, content = value.get("role"), value.get("content")
    if role not in ROLES:
        raise InvalidRow(
            "bad_message", key, f"message {i + 1} has role {_short(role)} (expected one of {ROLES})"
        )
    if not isinstance(content, str):
        raise InvalidRow(
            "bad_message", key, f"message {i + 1} content must be a string, got {type(content).__name__}"
        )
    return Message(role, check_unicode(content, key, f"message {i + 1} content"))


def messages(value: Any, key: str) -> tuple[Message, ...]:
    """A list of ``{"role", "content"}`` dicts as a tuple of Message, validated."""
    if not isinstance(value, list | tuple):
        raise InvalidRow("wrong_type", key, f"expected a list of messages, got {type(value).__name__}")
    return tuple(_message(m, key, i) for i, m in enumerate(value))


def prompt_value(value: Any, key: str = "prompt") -> Prompt:
    """A prompt field: text or a non-empty list of messages, not blank."""
    if isinstance(value, str):
        if is_blank(value):
            raise InvalidRow("empty_prompt", key, f"empty prompt{_blank_kind(value)}")
        return check_unicode(value, key, "the prompt")
    if isinstance(value, list | tuple):
        msgs = messages(value, key)
        if not msgs or all(is_blank(m.content) for m in msgs):
            raise InvalidRow("empty_prompt", key, "empty prompt (no message with content)")
        return msgs
    raise InvalidRow("wrong_type", key, f"expected text or a list of messages, got {type(value).__name__}")


def response_text(text: Any, key: str) -> str:
    if not isinstance(text, str):
        raise InvalidRow("wrong_type", key, f"expected a string, got {type(text).__name__}")
    if is_blank(text):
        raise InvalidRow("empty_response", key, f"empty response{_blank_kind(text)}")
    return check_unicode(text, key, "the response")


def label_value(value: Any, key: str = "label") -> float:
    """A label ``P(first > second)``: a number in [0, 1], a numeric string, or 'a' / 'b' / 'tie'."""
    if isinstance(value, bool):
        raise InvalidRow(
            "wrong_type", key, f"a boolean label ({value}) is ambiguous: use 1.0 / 0.0 or 'a' / 'b'"
        )
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("a", "b", "tie"):
            return {"a": 1.0, "b": 0.0, "tie": 0.5}[word]
        try:
            value = float(word)
        except ValueError:
            raise InvalidRow(
                "bad_label", key, f"{_short(value)} is neither a number in [0, 1] nor 'a' / 'b' / 'tie'"
            ) from None
    if not isinstance(value, int | float):
        raise InvalidRow("wrong_type", key, f"expected a number in [0, 1], got {type(value).__name__}")
    if isinstance(value, int) and not 0 <= value <= 1:  # float(10**400) would overflow
        raise InvalidRow("bad_label", key, f"label must be in [0, 1], got {_short(value)}")
    label = float(value)
    if math.isnan(label) or not 0.0 <= label <= 1.0:
        raise InvalidRow("bad_label", key, f"label must be in [0, 1], got {value!r}")
    return label


def _short(value: Any) -> str:
    """``repr(value)`` cut to 40 characters (huge integers included: no 4300-digit str() limit hit)."""
    if isinstance(value, int) and value.bit_length() > 128:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _score(value: Any, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise InvalidRow("wrong_type", key, f"expected a number, got {_short(value)}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRow("wrong_type", key, f"expected a number, got {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:
        raise InvalidRow("wrong_type", key, f"{_short(value)} is too large for a float") from None


def _check_pair(first: str, second: str, keys: str) -> None:
    if first.strip() == second.strip():
        raise InvalidRow("identical_responses", keys, "the two responses are identical")


def _extras(row: Mapping[str, Any], consumed: tuple[str, ...]) -> dict[str, Any]:
    return {
        k: v
        for k, v in row.items()
        if k not in consumed and (v is None or isinstance(v, str | int | float | bool))
    }


# ---------------------------------------------------------------------------------------------
# conversations


def _same(a: tuple[Message, ...], b: tuple[Message, ...]) -> bool:
    return len(a) == len(b) and all(
        x.role == y.role and x.content.strip() == y.content.strip() for x, y in zip(a, b)
    )


def resolve_conversation_prompt(prompt: Any, prefix: tuple[Message, ...], key: str) -> Prompt:
    """The prompt of a row whose ``chosen`` is a full conversation with message prefix ``prefix``.

    ``prompt`` is the row's ``prompt`` column (None when absent); see the module docstring.
    """
    if prompt is None:
        return prompt_value(list(m.as_dict() for m in prefix), key)
    given = prompt_value(prompt, "prompt")
    if isinstance(given, str):
        if len(prefix) == 1 and prefix[0].role == "user" and prefix[0].content.strip() == given.strip():
            return given
        if prefix and prefix[-1].role == "user" and prefix[-1].content.strip() == given.strip():
            return prompt_value(list(m.as_dict() for m in prefix), key)
    elif _same(given, prefix):
        return given
    raise InvalidRow(
        "prompt_mismatch",
        "prompt",
        f"the 'prompt' column does not match the turns before the response in {key!r} ({len(prefix)} turns)",
    )


def _conversation_response(value: Any, key: str, prompt: Any) -> tuple[tuple[Message, ...] | None, str]:
    """Split a response field into (message prefix or None, response text)."""
    if isinstance(value, str):
        return None, response_text(value, key)
    if not isinstance(value, list | tuple):
        raise InvalidRow(
            "wrong_type", key, f"expected text or a list of messages, got {type(value).__name__}"
        )
    msgs = messages(value, key)
    if not msgs:
        raise InvalidRow("empty_response", key, "empty conversation")
    if msgs[-1].role != "assistant":
        raise InvalidRow(
            "bad_conversation", key, f"the last message has role {msgs[-1].role!r}, not 'assistant'"
        )
    if len(msgs) == 1 and prompt is not None:
        return None, response_text(msgs[0].content, key)
    return msgs[:-1], response_text(msgs[-1].content, key)


def _chosen_rejected(row: Mapping[str, Any], fmt: str) -> Converted:
    prompt = row.get("prompt")
    chosen_prefix, chosen = _conversation_response(_get(row, "chosen"), "chosen", prompt)
    rejected_prefix, rejected = _conversation_response(_get(row, "rejected"), "rejected", prompt)
    if chosen_prefix is None and rejected_prefix is None:
        resolved = prompt_value(_get(row, "prompt"))
    elif chosen_prefix is not None and rejected_prefix is not None:
        if not _same(chosen_prefix, rejected_prefix):
            raise InvalidRow(
                "prompt_mismatch",
                "chosen/rejected",
                "the two conversations differ before their final assistant message",
            )
        resolved = resolve_conversation_prompt(prompt, chosen_prefix, "chosen")
    else:
        raise InvalidRow(
            "bad_conversation",
            "chosen/rejected",
            "one response is a full conversation and the other is not",
        )
    _check_pair(chosen, rejected, "chosen/rejected")
    label = label_value(row["label"]) if row.get("label") is not None else 1.0
    metadata = _extras(row, _CONSUMED[fmt])
    for key in ("score_chosen", "score_rejected"):
        if key in row:
            metadata[key] = _score(row[key], key)
    return Converted(resolved, chosen, rejected, label, metadata)


def _hh(row: Mapping[str, Any]) -> Converted:
    chosen, rejected = _get(row, "chosen"), _get(row, "rejected")
    for key, value in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(value, str):
            raise InvalidRow(
                "wrong_type", key, f"expected an HH-RLHF transcript string, got {type(value).__name__}"
            )
    prompt, first, second, merged = split_hh_pair(chosen, rejected)
    if not prompt or all(is_blank(m.content) for m in prompt):
        raise InvalidRow("empty_prompt", "chosen", "no turns before the final Assistant turn")
    for i, m in enumerate(prompt):
        check_unicode(m.content, "chosen", f"prompt turn {i + 1}")
    response_text(first, "chosen")
    response_text(second, "rejected")
    _check_pair(first, second, "chosen/rejected")
    label = label_value(row["label"]) if row.get("label") is not None else 1.0
    return Converted(
        prompt, first, second, label, _extras(row, _CONSUMED["hh"]), ("hh_merged_turns",) if merged else ()
    )


def _pairwise(row: Mapping[str, Any]) -> Converted:
    prompt = prompt_value(_get(row, "prompt"))
    first = _single_response(_get(row, "response_a"), "response_a")
    second = _single_response(_get(row, "response_b"), "response_b")
    _check_pair(first, second, "response_a/response_b")
    label = label_value(_get(row, "label"))
    return Converted(prompt, first, second, label, _extras(row, _CONSUMED["pairwise"]))


def _single_response(value: Any, key: str) -> str:
    if isinstance(value, list):
        msgs = messages(value, key)
        if len(msgs) != 1 or msgs[0].role != "assistant":
            raise InvalidRow("bad_conversation", key, "expected text or a list with one assistant message")
        return response_text(msgs[0].content, key)
    return response_text(value, key)


def convert_row(row: Mapping[str, Any], fmt: str) -> Converted:
    """Convert one row (a mapping, after column renaming) of format ``fmt``."""
    if fmt == "hh":
        return _hh(row)
    if fmt == "pairwise":
        return _pairwise(row)
    return _chosen_rejected(row, fmt)


def convert_prompt_row(row: Mapping[str, Any], fmt: str) -> tuple[Prompt, dict[str, Any]]:
    """The prompt of one row for prompt-only loading, and the row's scalar extras."""
    consumed = (
        "prompt",
        "chosen",
        "rejected",
        "response_a",
        "response_b",
        "label",
        "messages",
        "score_chosen",
        "score_rejected",
    )
    extras = _extras(row, consumed)
    if fmt in ("prompt", "pairwise"):
        return prompt_value(_get(row, "prompt")), extras
    if fmt == "hh":
        chosen = _get(row, "chosen")
        if not isinstance(chosen, str):
            raise InvalidRow(
                "wrong_type", "chosen", f"expected an HH-RLHF transcript string, got {type(chosen).__name__}"
            )
        prompt = hh_prompt(chosen)
        return prompt_value([m.as_dict() for m in prompt], "chosen"), extras
    if fmt == "messages":
        msgs = messages(_get(row, "messages"), "messages")
        if msgs and msgs[-1].role == "assistant":
            msgs = msgs[:-1]
        return prompt_value([m.as_dict() for m in msgs], "messages"), extras
    # trl / ultrafeedback
    chosen = row.get("chosen")
    if isinstance(chosen, list) and not (len(chosen) == 1 and row.get("prompt") is not None):
        msgs = messages(chosen, "chosen")
        prefix = msgs[:-1] if msgs and msgs[-1].role == "assistant" else msgs
        return resolve_conversation_prompt(row.get("prompt"), prefix, "chosen"), extras
    return prompt_value(_get(row, "prompt")), extras
