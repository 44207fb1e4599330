"""Response classes: deterministic classifiers from (prompt, response TEXT) to a style class.

The environments' oracles (:mod:`nlhf.envs.oracles`) see a response only through its
class, so every class-level quantity (Nash equilibria, exploitability, the RLHF optimum)
can be computed exactly with :mod:`nlhf.lab` on a policy's empirical class distribution.

The classes are about how a response OPENS: a short LoRA fine-tune shifts the first few
tokens far more easily than anything later, and an opening survives truncation (the demo
keeps responses to about 48 new tokens on CPU, and SmolLM2-135M-Instruct is cut off by
that limit in more than 90% of its answers, so length bands would measure the limit, not
the model). Each response gets exactly one class; the rules are tried in this order and
the first that holds wins (``unfocused`` is tested twice, second and last):

``structured`` (0)
    The response is laid out in lines: after stripping outer whitespace it contains a line
    break, or its first line starts with a list or heading marker (``1.``, ``2)``, ``-``,
    ``*``, ``•``, ``#``). Lists, paragraphs, verse.
``unfocused`` (3), first test
    A single block whose first sentence is longer than :data:`OPENING_MAX_WORDS` (20)
    words: the answer rambles before it makes a point. (A first sentence cut off by the
    token limit counts with the words it has.)
``personal`` (1)
    A single block with a short first sentence that talks to the user or as the assistant:
    it contains a first- or second-person word (:data:`PERSON_WORDS`: I, I'm, me, my, we,
    let's, you, your, ...) or an exclamation or question mark. ("I'm glad you asked.",
    "What a great question!")
``direct`` (2)
    A single, impersonal block whose short first sentence names the topic of the prompt: it
    shares a content word with the prompt (:func:`content_words`: lower-cased words of 3+
    characters outside :data:`STOP_WORDS`, a final plural "s" dropped). ("Photosynthesis is a
    process ...", "A spider has eight legs.")
``unfocused`` (3), second test
    Anything else: a single, impersonal block whose first sentence never names the topic
    (a detour such as "The morning can be a transformative time." for "What is the best way
    to start the day?", or noise); also the empty response.

The first sentence is the text up to the first ``.``, ``!`` or ``?`` followed by a space or
the end, or up to the first line break, whichever comes first (:func:`first_sentence`).

Measured on SmolLM2-135M-Instruct (chat template, temperature 1, 48 new tokens, 4 samples
on each of 100 training prompts; ``benchmarks/env_coverage.py``): structured 20.8%,
personal 13.8%, direct 30.0%, unfocused 35.5% of 400 samples (11% ended before the limit).
The same samples cut to 32 and 16 tokens give (13.8, 14.1, 35.3, 36.9)% and
(7.2, 20.6, 51.2, 20.9)%: line breaks come later, so shorter limits mean fewer
``structured`` answers, but every class stays above 5%.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from nlhf.data.schema import Prompt

CLASSES: tuple[str, ...] = ("structured", "personal", "direct", "unfocused")
STRUCTURED, PERSONAL, DIRECT, UNFOCUSED = range(4)

# A first sentence longer than this many words (see :func:`words`) makes a block unfocused.
OPENING_MAX_WORDS = 20

# Words that make an opening personal (matched as whole words, case-insensitive; the
# apostrophe forms are listed because \b splits "i'm" into "i" and "m" anyway).
PERSON_WORDS: frozenset[str] = frozenset(
    "i i'm i'd i'll i've me my mine myself we we're we'll we've us our ours let's "
    "you you're you'll you've you'd your yours yourself".split()
)

# Function words and question scaffolding that do not name a topic.
STOP_WORDS: frozenset[str] = frozenset(
    """a an the of to in on for and or but not no is are was were be been being am do does did
    done have has had what how why who whom which when where can could should would will shall
    may might must i me my you your we our us it its this that these those some any give tell
    name list write make about with from by at as into most more best good few three two one
    four five there here please than then them they their he she his her him also just very
    so such if like get got let lot lots way ways thing things much many use used using""".split()
)

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_LIST_MARKER = re.compile(r"^\s*(?:\d+[.)]|[-*\u2022#])\s*\S")
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n")


def prompt_question(prompt: Prompt) -> str:
    """The text whose topic a response should name: the prompt, or its last user turn."""
    if isinstance(prompt, str):
        return prompt
    users = [m.content for m in prompt if m.role == "user"]
    return users[-1] if users else (prompt[-1].content if prompt else "")


def words(text: str) -> list[str]:
    """Lower-cased words (letters and digits, with an inner apostrophe: "let's", "i'm")."""
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def content_words(text: str) -> set[str]:
    """Topic words of ``text``: words of 3+ characters not in :data:`STOP_WORDS`, final "s" dropped."""
    out = set()
    for w in words(text):
        if len(w) < 3 or w in STOP_WORDS or "'" in w:
            continue
        out.add(w[:-1] if w.endswith("s") and len(w) > 3 else w)
    return out


@lru_cache(maxsize=4096)
def _topic_words(question: str) -> frozenset[str]:
    """content_words of a prompt, cached (the same prompts are classified again and again)."""
    return frozenset(content_words(question))


def first_sentence(response: str) -> str:
    """The response up to its first sentence end (``.``/``!``/``?`` before a space or the end) or line break."""
    text = response.strip()
    m = _SENTENCE_END.search(text)
    return text[: m.end()].strip() if m else text


@dataclass(frozen=True)
class ResponseFeatures:
    """The measurements behind a response's class (for tests, debugging and reports)."""

    line_break: bool  # a line break inside the stripped response
    list_marker: bool  # the first line starts with a list or heading marker
    personal_opening: bool  # first sentence has a person word, "!" or "?"
    topic_opening: bool  # first sentence shares a content word with the prompt
    opening_words: int  # number of words in the first sentence
    first_sentence: str

    @property
    def label(self) -> int:
        """The class index (rules tried in the order of :data:`CLASSES`)."""
        if self.line_break or self.list_marker:
            return STRUCTURED
        if self.opening_words > OPENING_MAX_WORDS:
            return UNFOCUSED
        if self.personal_opening:
            return PERSONAL
        if self.topic_opening:
            return DIRECT
        return UNFOCUSED


def response_features(prompt: Prompt, response: str) -> ResponseFeatures:
    """Measure one response (see the module docstring for the definitions)."""
    if not isinstance(response, str):
        raise TypeError(f"response must be a string, got {type(response).__name__}")
    text = response.strip()
    opening = first_sentence(text)
    opening_words = words(opening)
    person = any(w in PERSON_WORDS for w in opening_words) or "!" in opening or "?" in opening
    topic = not _topic_words(prompt_question(prompt)).isdisjoint(content_words(opening))
    return ResponseFeatures(
        line_break="\n" in text,
        list_marker=bool(_LIST_MARKER.match(text)),
        personal_opening=person,
        topic_opening=topic,
        opening_words=len(opening_words),
        first_sentence=opening,
    )


def response_class(prompt: Prompt, response: str) -> int:
    """The class index (into :data:`CLASSES`) of one response to ``prompt``."""
    return response_features(prompt, response).label


def classify(prompts: Sequence[Prompt], responses: Sequence[str]) -> np.ndarray:
    """Class indices of a batch, shape (B,) int64; ``ValueError`` if the lengths differ."""
    if len(prompts) != len(responses):
        raise ValueError(f"classify: {len(prompts)} prompts but {len(responses)} responses")
    return np.array([response_class(x, y) for x, y in zip(prompts, responses)], dtype=np.int64)


def class_distribution(labels: Sequence[int] | np.ndarray, n_classes: int = len(CLASSES)) -> np.ndarray:
    """Empirical frequencies of class indices, shape (n_classes,), summing to 1."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if labels.size == 0:
        raise ValueError("class_distribution: no responses")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(
            f"class_distribution: labels must be in 0..{n_classes - 1}, got {labels.min()}..{labels.max()}"
        )
    return np.bincount(labels, minlength=n_classes) / labels.size
