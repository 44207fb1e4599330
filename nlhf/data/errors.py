"""Errors for bad preference data, each naming the file, the row and the field.

Every problem with an input row is raised as :class:`PreferenceDataError` (a
``ValueError``) whose message reads like ``train.jsonl line 17: field 'chosen': empty
response (whitespace only)``. Rows of JSONL files are named by their 1-based line number;
rows of JSON, CSV (header excluded), Parquet files and Hugging Face datasets by their
1-based row number. ``reason`` is one of :data:`REASONS`; with ``skip_invalid=True`` the
loaders skip such rows and count them under that reason instead of raising.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Why a row can be invalid (the keys of ``PreferenceDataset.skipped``).
REASONS: dict[str, str] = {
    "bad_json": "the line (or row) is not valid JSON / not an object",
    "bad_row": "the row has the wrong shape (e.g. more CSV cells than the header has columns)",
    "missing_field": "a required field is missing or null",
    "wrong_type": "a field has the wrong type (e.g. a number where text is expected)",
    "bad_message": "a chat message is not {'role': one of system/user/assistant/tool, 'content': str}",
    "empty_prompt": "the prompt is empty or blank (whitespace, control and zero-width characters only)",
    "empty_response": "a response is empty or blank (whitespace, control and zero-width characters only)",
    "bad_text": "a string is not valid Unicode (a lone surrogate, e.g. from the JSON escape \\ud800)",
    "identical_responses": "the two responses are identical (after stripping whitespace)",
    "bad_label": "the label is not a number in [0, 1] (NaN included) nor 'a' / 'b' / 'tie'",
    "prompt_mismatch": "the two conversations disagree on the turns before the response",
    "bad_conversation": "a response conversation does not end with exactly one assistant turn",
    "bad_transcript": "an HH-RLHF transcript has no Human/Assistant turns or does not end on an Assistant turn",
    "hh_prefix_mismatch": "the HH-RLHF chosen and rejected dialogues differ before their final Assistant turn",
}


@dataclass(frozen=True)
class RowLocation:
    """Where a row lives: ``str(loc)`` is for messages, ``loc.source`` for ``PreferenceExample.source``."""

    name: str  # the file path (as given) or the dataset name with its split
    index: int  # 1-based line (JSONL) or row number
    unit: str = "row"  # "line" or "row"

    def __str__(self) -> str:
        return f"{self.name} {self.unit} {self.index}"

    @property
    def source(self) -> str:
        return f"{self.name}:{self.index}"


class PreferenceDataError(ValueError):
    """Bad input data; the message names the file, the row (or line) and the field."""

    def __init__(
        self,
        message: str,
        *,
        location: RowLocation | str | None = None,
        field: str | None = None,
        reason: str | None = None,
    ) -> None:
        self.location = location
        self.field = field
        self.reason = reason
        self.detail = message
        parts = []
        if location is not None:
            parts.append(str(location))
        if field is not None:
            parts.append(f"field {field!r}")
        parts.append(message)
        super().__init__(": ".join(parts))


class InvalidRow(Exception):
    """Raised by the row converters; the loader adds the location and decides to raise or skip."""

    def __init__(self, reason: str, field: str | None, message: str) -> None:
        assert reason in REASONS, reason
        super().__init__(message)
        self.reason = reason
        self.field = field
        self.message = message

    def at(self, location: RowLocation) -> PreferenceDataError:
        return PreferenceDataError(self.message, location=location, field=self.field, reason=self.reason)
