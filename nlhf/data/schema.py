"""One schema for preference data, whatever format it came from.

A :class:`PreferenceExample` is a prompt, two responses, and a label
``P(first > second)`` in [0, 1] (1.0 for a plain chosen/rejected pair, where ``first`` is
the chosen response; any value in [0, 1] for soft labels). Prompt-only data for online
training uses the same :data:`Prompt` type, wrapped in :class:`PromptExample`.

A prompt is either plain text or a conversation: a tuple of :class:`Message` (the turns
*before* the response). A response is the text of the final assistant turn.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class Message:
    """One chat turn."""

    role: str  # one of ROLES
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


Prompt = str | tuple[Message, ...]


def prompt_text(prompt: Prompt) -> str:
    """A plain-text rendering of a prompt (for logs, judges without a chat template)."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(f"{m.role.capitalize()}: {m.content}" for m in prompt)


def prompt_messages(prompt: Prompt) -> list[dict[str, str]]:
    """The prompt as chat messages (plain text becomes one user turn)."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [m.as_dict() for m in prompt]


@dataclass(frozen=True)
class PreferenceExample:
    """A prompt, two responses and ``label = P(first > second | prompt)``.

    ``source`` says where the example came from (``"file.jsonl:17"``) so that every later
    error can name the row.
    """

    prompt: Prompt
    first: str
    second: str
    label: float = 1.0
    source: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f" ({self.source})" if self.source else ""
        if not isinstance(self.first, str) or not isinstance(self.second, str):
            raise TypeError(f"responses must be strings{where}")
        if isinstance(self.label, bool) or not isinstance(self.label, int | float):
            raise TypeError(f"label must be a number in [0, 1]{where}, got {self.label!r}")
        if math.isnan(self.label) or not 0.0 <= self.label <= 1.0:
            raise ValueError(f"label must be in [0, 1]{where}, got {self.label!r}")

    def swapped(self) -> PreferenceExample:
        """The same comparison with the two responses in the other order."""
        return PreferenceExample(
            self.prompt, self.second, self.first, 1.0 - self.label, self.source, self.metadata
        )

    @property
    def chosen(self) -> str:
        """The response preferred with probability >= 1/2."""
        return self.first if self.label >= 0.5 else self.second

    @property
    def rejected(self) -> str:
        return self.second if self.label >= 0.5 else self.first


@dataclass(frozen=True)
class PromptExample:
    """A prompt without responses, for online training and evaluation."""

    prompt: Prompt
    source: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
