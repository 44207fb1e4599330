"""Raw row readers: files (JSONL, JSON, Parquet, CSV; ``.gz`` allowed) and Hugging Face datasets.

:func:`open_rows` turns a path or a dataset name into a :class:`RowSource`: a name for
messages and an iterator of ``(RowLocation, row)``. A row that cannot be read (a line that
is not JSON, a CSV row with too many cells) is yielded as an :class:`~nlhf.data.errors.InvalidRow`
instead of a dict, so the loader can raise or skip it; problems with the whole file (missing,
empty, truncated gzip, not UTF-8, not Parquet) raise :class:`PreferenceDataError` at once.
JSON text is parsed strictly: an object naming a key twice, nesting too deep for Python's
parser and integer literals over Python's 4300-digit limit are "not valid JSON" (``bad_json``
for a JSONL line), never a silent last-key-wins nor a ``RecursionError``. CSV fields may be
of any length (the ``csv`` module's 128 KiB field limit is raised).

What ``path_or_name`` may be:

* a file, by suffix: ``.jsonl`` / ``.jsonl.gz`` (one object a line; blank lines ignored;
  rows named by line), ``.json`` / ``.json.gz`` (a list of objects, or ``{"data": [...]}``),
  ``.parquet``, ``.csv`` / ``.csv.gz`` (header row; cells are strings, a cell holding a JSON
  list of objects with a ``role`` key, such as ``[{"role": "user", ...}]``, is read as that list);
* a directory written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``
  (``datasets.load_from_disk``);
* any other directory: ``datasets.load_dataset(directory)`` (a folder of data files);
* anything else: a Hugging Face hub name, ``datasets.load_dataset(name, split=...)``.

``split`` picks the split of a Hugging Face dataset; when it is ``None`` the only split is
used, or ``"train"`` if there are several and one is called so (otherwise an error lists
them). Files have no splits: passing ``split`` with a file is an error.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nlhf.data.errors import InvalidRow, PreferenceDataError, RowLocation

FILE_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet", ".csv", ".csv.gz")


@dataclass
class RowSource:
    """A named stream of rows."""

    name: str
    rows: Iterator[tuple[RowLocation, dict[str, Any] | InvalidRow]]


def file_kind(path: Path) -> str | None:
    """``"jsonl"``, ``"json"``, ``"parquet"``, ``"csv"`` from the suffix, or None."""
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for kind in ("jsonl", "json", "parquet", "csv"):
        if name.endswith("." + kind):
            return kind
    return None


def open_rows(path_or_name: str | Path, split: str | None = None, **load_kwargs: Any) -> RowSource:
    """Open a file, a local dataset directory or a hub dataset as a stream of rows."""
    path = Path(path_or_name).expanduser()
    name = str(path_or_name)
    if path.is_file():
        if split is not None:
            raise PreferenceDataError(
                f"split={split!r} applies to Hugging Face datasets, not to files", location=name
            )
        if load_kwargs:
            raise PreferenceDataError(
                f"unexpected keyword arguments for a file: {sorted(load_kwargs)}", location=name
            )
        kind = file_kind(path)
        if kind is None:
            raise PreferenceDataError(
                f"unknown file type (supported suffixes: {', '.join(FILE_SUFFIXES)})", location=name
            )
        if path.stat().st_size == 0:
            raise PreferenceDataError("empty file", location=name)
        reader = {"jsonl": _jsonl_rows, "json": _json_rows, "parquet": _parquet_rows, "csv": _csv_rows}[kind]
        return RowSource(name, reader(path, name))
    if path.is_dir():
        return _hf_rows(name, path, split, load_kwargs)
    if file_kind(path) is not None or path.suffix == ".gz" or name.startswith((".", "/", "~")):
        raise PreferenceDataError("no such file or directory", location=name)
    return _hf_rows(name, None, split, load_kwargs)


def _open_text(path: Path, name: str) -> io.TextIOBase:
    try:
        if path.name.lower().endswith(".gz"):
            return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
        return open(path, encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise PreferenceDataError(
            f"cannot open the file ({type(exc).__name__}: {exc.strerror or exc})", location=name
        ) from None


def _read_error(name: str, where: str, exc: BaseException) -> PreferenceDataError:
    if isinstance(exc, UnicodeDecodeError):
        return PreferenceDataError(f"not UTF-8 text ({exc.reason}) {where}", location=name)
    if isinstance(exc, EOFError | zlib.error | gzip.BadGzipFile):
        return PreferenceDataError(f"truncated or corrupt gzip file {where} ({exc})", location=name)
    return PreferenceDataError(f"cannot read the file {where} ({type(exc).__name__}: {exc})", location=name)


_READ_ERRORS = (UnicodeDecodeError, EOFError, zlib.error, gzip.BadGzipFile, OSError)


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook``: an object that names a key twice is refused (JSON would keep the last silently)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(f"an object has the key {key!r} twice")
            seen.add(key)
    return obj


def _parse_json(text: str) -> Any:
    """``json.loads`` with every failure as a ``ValueError`` whose message says what is wrong.

    Besides syntax errors: an object with a duplicate key, nesting too deep for Python's
    parser (RecursionError), an integer literal over Python's 4300-digit limit.
    """
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except _DuplicateKey as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    except RecursionError:
        raise ValueError("not valid JSON (nested too deeply)") from None
    except ValueError as exc:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
        raise ValueError(f"not valid JSON ({str(exc).split(':')[0]})") from None


def _open_binary(path: Path, name: str) -> io.BufferedIOBase:
    try:
        return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")
    except OSError as exc:
        raise PreferenceDataError(
            f"cannot open the file ({type(exc).__name__}: {exc.strerror or exc})", location=name
        ) from None


def _lines_with_lookahead(f: io.BufferedIOBase, name: str) -> Iterator[tuple[int, bytes]]:
    """Yield ``(line_number, line)`` only after the next line was read without error.

    So a truncated gzip reports "truncated" instead of "line N is not JSON" for the
    half-written last line that gzip hands out before noticing the truncation.
    """
    pending: tuple[int, bytes] | None = None
    number = 0
    while True:
        try:
            line = f.readline()
        except _READ_ERRORS as exc:
            where = f"after line {number}" if number else "at the start"
            raise _read_error(name, where, exc) from None
        if pending is not None:
            yield pending
        if not line:
            return
        number += 1
        pending = (number, line)


def _jsonl_rows(path: Path, name: str) -> Iterator[tuple[RowLocation, Any]]:
    seen = False
    with _open_binary(path, name) as f:
        for number, raw in _lines_with_lookahead(f, name):
            loc = RowLocation(name, number, "line")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                seen = True
                yield (
                    loc,
                    InvalidRow("bad_json", None, f"not UTF-8 text ({exc.reason} at byte {exc.start + 1})"),
                )
                continue
            if number == 1:
                line = line.removeprefix("\ufeff")  # a UTF-8 byte-order mark
            if not line.strip():
                continue
            seen = True
            try:
                row = _parse_json(line)
            except ValueError as exc:
                yield loc, InvalidRow("bad_json", None, str(exc).replace(" at line 1 column", " at column"))
                continue
            yield loc, _object_or_invalid(row)
    if not seen:
        raise PreferenceDataError("empty file (no JSON lines)", location=name)


def _object_or_invalid(row: Any) -> dict[str, Any] | InvalidRow:
    if isinstance(row, dict):
        return row
    return InvalidRow("bad_json", None, f"expected a JSON object, got {type(row).__name__}")


def _json_rows(path: Path, name: str) -> Iterator[tuple[RowLocation, Any]]:
    try:
        with _open_text(path, name) as f:
            text = f.read()
    except _READ_ERRORS as exc:
        raise _read_error(name, "while reading", exc) from None
    if not text.strip():
        raise PreferenceDataError("empty file (whitespace only)", location=name)
    try:
        data = _parse_json(text)
    except ValueError as exc:
        raise PreferenceDataError(str(exc), location=name) from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise PreferenceDataError(
            f'expected a JSON list of objects or {{"data": [...]}}, got {type(data).__name__}'
            + (f" with keys {sorted(data)[:8]}" if isinstance(data, dict) else ""),
            location=name,
        )
    if not data:
        raise PreferenceDataError("empty file (the JSON list has no rows)", location=name)
    for i, row in enumerate(data, start=1):
        yield RowLocation(name, i, "row"), _object_or_invalid(row)


def _csv_cell(value: Any) -> Any:
    """CSV cells are text; a cell that is a JSON list of objects with a ``role`` key (chat messages) is parsed."""
    if isinstance(value, str) and value.lstrip().startswith("[{"):
        try:
            parsed = _parse_json(value)
        except ValueError:
            return value
        if isinstance(parsed, list) and parsed and all(isinstance(m, dict) and "role" in m for m in parsed):
            return parsed
    return value


_EXTRA = "\0extra"  # DictReader's key for cells beyond the header


_CSV_FIELD_LIMIT = 2**31 - 1  # csv's default (128 KiB) would refuse long responses


def _csv_rows(path: Path, name: str) -> Iterator[tuple[RowLocation, Any]]:
    if csv.field_size_limit() < _CSV_FIELD_LIMIT:
        csv.field_size_limit(_CSV_FIELD_LIMIT)
    with _open_text(path, name) as f:
        reader = csv.DictReader(f, restkey=_EXTRA)
        number = 0
        try:
            if not reader.fieldnames:
                raise PreferenceDataError("empty file (no CSV header)", location=name)
            for row in reader:
                number += 1
                loc = RowLocation(name, number, "row")
                if _EXTRA in row:
                    n_cells = len(reader.fieldnames) + len(row[_EXTRA])
                    yield (
                        loc,
                        InvalidRow(
                            "bad_row",
                            None,
                            f"{n_cells} cells but the header has {len(reader.fieldnames)} columns",
                        ),
                    )
                    continue
                yield loc, {k: _csv_cell(v) for k, v in row.items()}
        except csv.Error as exc:
            raise PreferenceDataError(
                f"malformed CSV at line {reader.line_num} ({exc})", location=name
            ) from None
        except _READ_ERRORS as exc:
            raise _read_error(name, f"after row {number}", exc) from None
    if number == 0:
        raise PreferenceDataError("empty file (a CSV header but no rows)", location=name)


def _parquet_rows(path: Path, name: str) -> Iterator[tuple[RowLocation, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise PreferenceDataError(f"not a readable Parquet file ({exc})", location=name) from None
    if pf.metadata.num_rows == 0:
        raise PreferenceDataError("empty file (the Parquet file has no rows)", location=name)
    number = 0
    try:
        for batch in pf.iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                number += 1
                yield RowLocation(name, number, "row"), row
    except (pa.ArrowException, OSError) as exc:
        raise PreferenceDataError(
            f"cannot read the Parquet file after row {number} ({exc})", location=name
        ) from None


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _hf_rows(name: str, path: Path | None, split: str | None, load_kwargs: dict[str, Any]) -> RowSource:
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is a dependency
        raise PreferenceDataError(f"reading {name!r} needs the 'datasets' package ({exc})") from None

    how = "load_from_disk" if path is not None and _is_saved_dataset(path) else "load_dataset"
    target = name if path is None else str(path)
    try:
        if how == "load_from_disk":
            if load_kwargs:
                raise PreferenceDataError(
                    f"unexpected keyword arguments for a saved dataset: {sorted(load_kwargs)}", location=name
                )
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                ds = ds[_pick_split(name, list(ds), split)]
            elif split is not None:
                ds = _slice_saved(ds, split, name)
        elif split is not None:
            ds = datasets.load_dataset(target, split=split, **load_kwargs)
        else:
            dd = datasets.load_dataset(target, **load_kwargs)
            ds = dd[_pick_split(name, list(dd), None)] if hasattr(dd, "keys") else dd
    except PreferenceDataError:
        raise
    except Exception as exc:  # datasets raises many types (FileNotFoundError, DatasetNotFoundError, ...)
        raise PreferenceDataError(
            f"could not load the Hugging Face dataset (datasets.{how}, split={split!r}): "
            f"{type(exc).__name__}: {exc}",
            location=name,
        ) from exc
    label = name if split is None else f"{name}[{split}]"
    return RowSource(label, _dataset_rows(ds, label))


def _slice_saved(ds: Any, split: str, name: str) -> Any:
    """A saved single ``Dataset`` has no named splits: only ``split="train"`` names it."""
    if split == "train":
        return ds
    raise PreferenceDataError(f"a saved Dataset (not a DatasetDict) has no split {split!r}", location=name)


def _pick_split(name: str, splits: list[str], split: str | None) -> str:
    if split is not None:
        if split not in splits:
            raise PreferenceDataError(f"no split {split!r} (splits: {splits})", location=name)
        return split
    if len(splits) == 1:
        return splits[0]
    if "train" in splits:
        return "train"
    raise PreferenceDataError(f"several splits {splits}: pass split=...", location=name)


def _dataset_rows(ds: Any, label: str) -> Iterator[tuple[RowLocation, Any]]:
    number = 0
    rows = iter(ds)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            break
        except Exception as exc:  # e.g. a streaming dataset failing half-way
            raise PreferenceDataError(
                f"reading the dataset failed after row {number}: {type(exc).__name__}: {exc}", location=label
            ) from exc
        number += 1
        yield RowLocation(label, number, "row"), _object_or_invalid(row)
    if number == 0:
        raise PreferenceDataError("the dataset has no rows", location=label)
