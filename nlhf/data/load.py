"""Load preference pairs and prompts from files or Hugging Face datasets, validated row by row.

:func:`load_preferences` reads any source :mod:`nlhf.data.readers` understands, renames
columns (``columns={"prompt": "question", "chosen": "good", ...}`` maps the names used
here to the dataset's), detects the format from the first row (:mod:`nlhf.data.formats`)
unless ``format=`` names it, and validates every row. A bad row raises
:class:`~nlhf.data.errors.PreferenceDataError` naming the file, the row and the field; with
``skip_invalid=True`` it is skipped, counted by reason in ``dataset.skipped`` and logged
(the first 10 one by one, then a summary). Rows changed by a documented repair rule (HH
turns merged) are counted in ``dataset.repaired``. :func:`load_prompts` reads the same
sources for their prompts only.

Duplicate rows: a row whose comparison repeats an earlier row's -- the same prompt, the
same two responses and the same label, in either order (``(a, b, p)`` repeats ``(b, a, 1 - p)``)
-- is counted in ``dataset.duplicates`` and logged as a warning (with the first repeat's
row). ``duplicates="keep"`` (the default) keeps it: repeated judgements of one pair carry
weight, and a soft label is often an average over raters written as repeated rows.
``duplicates="drop"`` keeps only the first occurrence. Metadata and ``source`` do not take
part in the comparison. Prompts: :func:`load_prompts` counts repeated prompts in
``dataset.duplicates`` (logged at INFO: many datasets ask one prompt several times) and drops
them with ``unique=True``. :func:`save_preferences` writes JSONL in the ``pairwise``
format, which :func:`load_preferences` reads back unchanged.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import closing
from pathlib import Path
from typing import Any, Self, SupportsIndex, TypeVar, overload

from nlhf.data.errors import InvalidRow, PreferenceDataError, RowLocation
from nlhf.data.formats import (
    CANONICAL_COLUMNS,
    FORMATS,
    PROMPT_FORMATS,
    canonical_format,
    convert_prompt_row,
    convert_row,
    detect_format,
    detect_prompt_format,
)
from nlhf.data.readers import open_rows
from nlhf.data.schema import PreferenceExample, PromptExample

logger = logging.getLogger("nlhf.data")

_LOG_EACH = 10  # rows logged one by one before only the summary is logged


_E = TypeVar("_E")


class _LoadedList(list[_E]):
    """A list of examples that remembers where it came from (the two datasets below).

    ``source``: the file or dataset name; ``format``: the format it was read as;
    ``skipped``: rows skipped by reason (``skip_invalid=True``); ``duplicates``: rows that
    repeated an earlier row (module docstring). Slicing keeps these attributes (:meth:`_like`).
    """

    def __init__(
        self,
        examples: Iterable[_E] = (),
        source: str = "",
        format: str = "",
        skipped: Mapping[str, int] | None = None,
        duplicates: int = 0,
    ) -> None:
        super().__init__(examples)
        self.source = source
        self.format = format
        self.skipped: Counter[str] = Counter(skipped or {})
        self.duplicates = duplicates

    def _like(self, examples: list[_E]) -> Self:
        """A dataset of ``examples`` with this one's attributes."""
        raise NotImplementedError

    @overload
    def __getitem__(self, index: SupportsIndex) -> _E: ...
    @overload
    def __getitem__(self, index: slice) -> Self: ...
    def __getitem__(self, index):
        item = super().__getitem__(index)
        if isinstance(index, slice):
            return self._like(item)
        return item

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())


class PreferenceDataset(_LoadedList[PreferenceExample]):
    """A list of :class:`PreferenceExample` that remembers where it came from.

    ``source``: the file or dataset name; ``format``: the format it was read as;
    ``skipped``: rows skipped by reason (``skip_invalid=True``); ``repaired``: rows changed
    by a documented rule (e.g. ``hh_merged_turns``); ``duplicates``: rows that repeated an
    earlier row (kept or dropped, module docstring). Slicing keeps these attributes.
    """

    def __init__(
        self,
        examples: Iterable[PreferenceExample] = (),
        source: str = "",
        format: str = "",
        skipped: Mapping[str, int] | None = None,
        repaired: Mapping[str, int] | None = None,
        duplicates: int = 0,
    ) -> None:
        super().__init__(examples, source, format, skipped, duplicates)
        self.repaired: Counter[str] = Counter(repaired or {})

    def _like(self, examples: list[PreferenceExample]) -> PreferenceDataset:
        return PreferenceDataset(
            examples, self.source, self.format, self.skipped, self.repaired, self.duplicates
        )

    def __repr__(self) -> str:
        return (
            f"PreferenceDataset({len(self)} examples from {self.source!r}, format={self.format!r}, "
            f"skipped={dict(self.skipped)}, repaired={dict(self.repaired)}, duplicates={self.duplicates})"
        )


class PromptDataset(_LoadedList[PromptExample]):
    """A list of :class:`PromptExample` with ``source``, ``format``, ``skipped``, ``duplicates`` like PreferenceDataset."""

    def _like(self, examples: list[PromptExample]) -> PromptDataset:
        return PromptDataset(examples, self.source, self.format, self.skipped, self.duplicates)

    def __repr__(self) -> str:
        return f"PromptDataset({len(self)} prompts from {self.source!r}, skipped={dict(self.skipped)})"


def _check_columns(columns: Mapping[str, str] | None) -> dict[str, str]:
    if columns is None:
        return {}
    if not isinstance(columns, Mapping):
        raise TypeError(
            f"columns must be a mapping {{our_name: dataset_column}}, got {type(columns).__name__}"
        )
    for ours, theirs in columns.items():
        if ours not in CANONICAL_COLUMNS:
            raise ValueError(f"columns: unknown key {ours!r} (known: {', '.join(CANONICAL_COLUMNS)})")
        if not isinstance(theirs, str):
            raise TypeError(f"columns[{ours!r}] must be a column name (str), got {type(theirs).__name__}")
    return dict(columns)


DUPLICATES = ("keep", "drop")


def _check_limit(limit: Any) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer, got {limit!r}")


def comparison_key(prompt: Any, first: str, second: str, label: float) -> tuple[Any, str, str, float]:
    """What makes two rows the same comparison: ``(a, b, p)`` and ``(b, a, 1 - p)`` share a key."""
    if second < first:
        return prompt, second, first, round(1.0 - label, 12)
    return prompt, first, second, round(label, 12)


class _Duplicates:
    """Count rows repeating an earlier row's key; remember the first repeat for the log."""

    def __init__(self) -> None:
        self.first_seen: dict[Any, RowLocation] = {}
        self.count = 0
        self.example: tuple[RowLocation, RowLocation] | None = None

    def seen(self, key: Any, loc: RowLocation) -> bool:
        earlier = self.first_seen.setdefault(key, loc)
        if earlier is loc:
            return False
        self.count += 1
        if self.example is None:
            self.example = (loc, earlier)
        return True

    def log(self, name: str, what: str, dropped: bool, level: int) -> None:
        if self.count and self.example is not None:
            loc, earlier = self.example
            logger.log(
                level,
                "%s: %d duplicate %s (%s; the first: %s repeats %s)",
                name,
                self.count,
                what,
                "dropped" if dropped else "kept",
                f"{loc.unit} {loc.index}",
                f"{earlier.unit} {earlier.index}",
            )


def rename_columns(row: Mapping[str, Any], columns: Mapping[str, str]) -> dict[str, Any]:
    """``row`` with dataset columns renamed to ours (``columns`` maps ours -> theirs)."""
    if not columns:
        return dict(row)
    out = {k: v for k, v in row.items() if k not in columns.values()}
    for ours, theirs in columns.items():
        if theirs not in row:
            raise InvalidRow("missing_field", theirs, f"missing (mapped to {ours!r}; columns: {sorted(row)})")
        out[ours] = row[theirs]
    return out


class _Tally:
    """Raise or skip-and-count invalid rows, logging the first few."""

    def __init__(self, skip_invalid: bool) -> None:
        self.skip_invalid = skip_invalid
        self.skipped: Counter[str] = Counter()

    def invalid(self, problem: InvalidRow, loc: RowLocation) -> None:
        error = problem.at(loc)
        if not self.skip_invalid:
            raise error
        self.skipped[problem.reason] += 1
        n = sum(self.skipped.values())
        if n <= _LOG_EACH:
            logger.warning("skipping invalid row (%s): %s", problem.reason, error)
        elif n == _LOG_EACH + 1:
            logger.warning("more invalid rows are being skipped; a summary follows")

    def finish(self, name: str, n_kept: int, what: str) -> None:
        if self.skipped:
            logger.warning(
                "%s: kept %d %s, skipped %d invalid rows: %s",
                name,
                n_kept,
                what,
                sum(self.skipped.values()),
                dict(self.skipped),
            )
        if n_kept == 0:
            detail = f" (skipped: {dict(self.skipped)})" if self.skipped else ""
            raise PreferenceDataError(f"no valid {what}{detail}", location=name)


class _Converter:
    """Rows -> ``convert(row, format)``, columns renamed first; invalid rows go to the tally.

    A row is invalid when the reader marked it (an :class:`InvalidRow`), a renamed column is
    missing, or ``convert`` refuses it. ``format`` None: ``detect`` names it from the first
    row that gets that far (a failure there is never skipped: :func:`_detect`); ``.format``
    then holds it.
    """

    def __init__(
        self, renames: dict[str, str], format: str | None, detect: Any, convert: Any, tally: _Tally
    ) -> None:
        self.renames, self.format, self.detect, self.convert, self.tally = (
            renames,
            format,
            detect,
            convert,
            tally,
        )

    def rows(self, rows: Iterable[tuple[RowLocation, Any]]) -> Iterator[tuple[RowLocation, Any]]:
        """``(loc, converted)`` for each valid row of ``rows``."""
        for loc, row in rows:
            try:
                if isinstance(row, InvalidRow):
                    raise row
                row = rename_columns(row, self.renames)
                if self.format is None:
                    self.format = _detect(self.detect, row, loc)
                converted = self.convert(row, self.format)
            except InvalidRow as problem:
                self.tally.invalid(problem, loc)
                continue
            yield loc, converted


def load_preferences(
    path_or_name: str | Path,
    format: str | None = None,
    split: str | None = None,
    columns: Mapping[str, str] | None = None,
    skip_invalid: bool = False,
    limit: int | None = None,
    duplicates: str = "keep",
    **load_kwargs: Any,
) -> PreferenceDataset:
    """Load and validate preference pairs.

    Args:
        path_or_name: a ``.jsonl[.gz]``, ``.json[.gz]``, ``.parquet`` or ``.csv[.gz]`` file; a
            ``save_to_disk`` directory; a directory of data files; or a Hugging Face hub name.
        format: one of ``"trl"``, ``"ultrafeedback"``, ``"hh"``, ``"pairwise"`` (see
            :mod:`nlhf.data.formats`); ``None`` detects it from the first row's keys.
        split: the split of a Hugging Face dataset (``None``: the only one, or ``"train"``).
        columns: rename dataset columns to ours, ``{"prompt": "question", ...}``.
        skip_invalid: skip invalid rows (counted in ``.skipped`` by reason, logged) instead
            of raising :class:`PreferenceDataError`.
        limit: stop after this many valid examples (kept ones, after dropping duplicates).
        duplicates: ``"keep"`` (default) or ``"drop"`` rows repeating an earlier comparison;
            either way they are counted in ``.duplicates`` and logged (module docstring).
        **load_kwargs: passed to ``datasets.load_dataset`` (e.g. ``name=``, ``data_dir=``,
            ``cache_dir=``, ``revision=``); an error for files.

    Returns:
        A :class:`PreferenceDataset`; each example's ``source`` is ``"<file>:<line or row>"``.
    """
    renames = _check_columns(columns)
    fmt = None if format is None else canonical_format(format, FORMATS)
    _check_limit(limit)
    if duplicates not in DUPLICATES:
        raise ValueError(f"duplicates must be one of {DUPLICATES}, got {duplicates!r}")
    source = open_rows(path_or_name, split=split, **load_kwargs)
    tally = _Tally(skip_invalid)
    converter = _Converter(renames, fmt, detect_format, convert_row, tally)
    repeats = _Duplicates()
    examples: list[PreferenceExample] = []
    repaired: Counter[str] = Counter()
    with closing(source.rows) as rows:
        for loc, converted in converter.rows(rows):
            key = comparison_key(converted.prompt, converted.first, converted.second, converted.label)
            if repeats.seen(key, loc) and duplicates == "drop":
                continue
            repaired.update(converted.repairs)
            examples.append(
                PreferenceExample(
                    converted.prompt,
                    converted.first,
                    converted.second,
                    converted.label,
                    loc.source,
                    converted.metadata,
                )
            )
            if limit is not None and len(examples) >= limit:
                break
    tally.finish(source.name, len(examples), "examples")
    repeats.log(source.name, "rows", duplicates == "drop", logging.WARNING)
    return PreferenceDataset(
        examples, source.name, converter.format or "", tally.skipped, repaired, repeats.count
    )


def _detect(detector: Any, row: Mapping[str, Any], loc: RowLocation) -> str:
    """Format detection failures are never skipped: the whole file is in an unknown format."""
    try:
        return detector(row)
    except InvalidRow as problem:
        raise problem.at(loc) from None


def load_prompts(
    path_or_name: str | Path,
    format: str | None = None,
    split: str | None = None,
    columns: Mapping[str, str] | None = None,
    skip_invalid: bool = False,
    limit: int | None = None,
    unique: bool = False,
    **load_kwargs: Any,
) -> PromptDataset:
    """Load prompts for online training or evaluation; the same sources as :func:`load_preferences`.

    The prompt of a row is its ``prompt`` column; or, without one, the turns before the
    final assistant turn of an HH-RLHF ``chosen`` transcript, of a ``chosen`` conversation,
    or of a ``messages`` conversation. Responses are not read (nor validated). ``format``
    may also be ``"prompt"`` or ``"messages"``. ``unique=True`` keeps the first occurrence
    of each prompt (``limit`` then counts distinct prompts).
    """
    renames = _check_columns(columns)
    fmt = None if format is None else canonical_format(format, PROMPT_FORMATS)
    _check_limit(limit)
    source = open_rows(path_or_name, split=split, **load_kwargs)
    tally = _Tally(skip_invalid)
    converter = _Converter(renames, fmt, detect_prompt_format, convert_prompt_row, tally)
    prompts: list[PromptExample] = []
    repeats = _Duplicates()
    with closing(source.rows) as rows:
        for loc, (prompt, metadata) in converter.rows(rows):
            if repeats.seen(prompt, loc) and unique:
                continue
            prompts.append(PromptExample(prompt, loc.source, metadata))
            if limit is not None and len(prompts) >= limit:
                break
    tally.finish(source.name, len(prompts), "prompts")
    repeats.log(source.name, "prompts", unique, logging.INFO)
    return PromptDataset(prompts, source.name, converter.format or "", tally.skipped, repeats.count)


_RESERVED = ("prompt", "response_a", "response_b", "label")


def example_to_row(example: PreferenceExample) -> dict[str, Any]:
    """One example as a ``pairwise``-format row (JSON-ready); metadata become extra columns."""
    prompt = example.prompt if isinstance(example.prompt, str) else [m.as_dict() for m in example.prompt]
    row: dict[str, Any] = {
        "prompt": prompt,
        "response_a": example.first,
        "response_b": example.second,
        "label": example.label,
    }
    for key, value in example.metadata.items():
        if key in _RESERVED:
            raise ValueError(f"metadata key {key!r} of example {example.source} clashes with a column name")
        row[key] = value
    return row


def save_preferences(examples: Iterable[PreferenceExample], path: str | Path) -> Path:
    """Write examples as JSONL (gzip-compressed if ``path`` ends in ``.gz``) in the ``pairwise`` format.

    The file is written to a temporary name and renamed, so a crash leaves no partial file.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(tmp, "wt", encoding="utf-8") as f:
        for example in examples:
            f.write(json.dumps(example_to_row(example), ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path
