"""Reading a captions file: CSV, TSV or JSONL, one caption (or a list of captions) per row.

Each row names a file (column ``image``, ``audio``, ``file``, ``path``, ``filename`` or
``filepath``) and its caption (column ``caption``, ``text``, ``description`` or ``captions``).
Several rows for one file, or a JSON list of captions, give that file several captions, which
share its group. Paths are relative to the image or audio folder (absolute paths inside it work
too).

Nothing is dropped silently: a row without a file name or caption is returned as a
:class:`CaptionProblem` (the extract lists it), and a file that cannot be read as intended
is refused with its line number: a CSV/TSV field that spans lines and holds what look like
further rows (an unterminated quote swallows the rows after it), a row with more fields than
the header (an unquoted comma would cut its caption), a field longer than
:data:`MAX_FIELD_CHARS`, or a CSV syntax error. A quoted caption with a line break in it and
no delimiter on its later lines is a caption with a line break, and is kept.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gapscope.errors import GapscopeError

FILE_COLUMNS = (
    "image",
    "audio",
    "file",
    "path",
    "filename",
    "filepath",
    "image_path",
    "audio_path",
)
CAPTION_COLUMNS = ("caption", "text", "description", "captions", "sentence")
#: The longest file name or caption accepted, in characters. Text encoders read 77 tokens
#: (a few hundred characters), so a longer field is a swallowed file, not a caption.
MAX_FIELD_CHARS = 10_000
_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


@dataclass(frozen=True)
class CaptionRow:
    """One caption: the file it describes (as written), its text, and where it was found."""

    file: str
    caption: str
    line: int


@dataclass(frozen=True)
class CaptionProblem:
    """A row that gave no caption (empty caption or file name), with the reason."""

    line: int
    file: str
    reason: str


def read_captions(
    path: str | os.PathLike[str],
    *,
    file_column: str | None = None,
    caption_column: str | None = None,
) -> tuple[list[CaptionRow], list[CaptionProblem], dict[str, str]]:
    """Read a captions file; return its captions in file order, the rows skipped, and the
    columns used (``{"file": ..., "caption": ...}``).

    The format follows the suffix: ``.csv``, ``.tsv``/``.tab``, ``.jsonl``/``.ndjson``.

    Raises:
        GapscopeError: the file is missing, unreadable, of an unknown format, lacks a file or
            caption column, or has a row that cannot be read as intended (see the module
            docstring); the message names the file and the line.
    """
    path = Path(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise GapscopeError(
            f"--captions {path}: unknown format {path.suffix!r} (use .csv, .tsv or .jsonl)"
        )
    if not path.is_file():
        raise GapscopeError(f"--captions {path}: file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise GapscopeError(f"--captions {path}: cannot read it as UTF-8 text ({exc})") from None
    records = _jsonl_records(path, text) if fmt == "jsonl" else _table_records(path, text, fmt)
    if not records:
        raise GapscopeError(f"--captions {path}: no rows")
    columns = sorted({key for _, record in records for key in record})
    file_key = _pick_column(path, columns, file_column, FILE_COLUMNS, "file", "--file-column")
    caption_key = _pick_column(
        path, columns, caption_column, CAPTION_COLUMNS, "caption", "--caption-column"
    )
    rows: list[CaptionRow] = []
    problems: list[CaptionProblem] = []
    for line, record in records:
        _check_lengths(path, line, record, (file_key, caption_key))
        file = record.get(file_key)
        file = "" if file is None else str(file).strip()
        captions = record.get(caption_key)
        if isinstance(captions, str) or captions is None:
            captions = [captions]
        elif not isinstance(captions, list):
            captions = [str(captions)]
        if not file:
            problems.append(CaptionProblem(line, file, f"no {file_key!r} value"))
            continue
        for caption in captions:
            caption = "" if caption is None else str(caption).strip()
            if caption:
                rows.append(CaptionRow(file, caption, line))
            else:
                problems.append(CaptionProblem(line, file, "empty caption"))
    return rows, problems, {"file": file_key, "caption": caption_key}


def _table_records(path: Path, text: str, fmt: str) -> list[tuple[int, dict[str, Any]]]:
    """The rows of a CSV/TSV file as ``(first line, {column: value})``, the header being
    line 1, as an editor shows it; blank lines are left out."""
    delimiter = "\t" if fmt == "tsv" else ","
    # newline="" lets the csv module see line breaks inside quoted captions as text.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    records: list[tuple[int, dict[str, Any]]] = []
    header: list[str] | None = None
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return records
        except csv.Error as exc:
            raise GapscopeError(f"--captions {path}: line {line}: {exc}") from None
        if not any(value.strip() for value in row):
            continue
        _check_row_lines(path, line, reader.line_num, row, delimiter)
        if header is None:
            header = [name.strip().lower() for name in row]
            continue
        records.append((line, _as_record(path, line, header, row, delimiter)))


def _check_row_lines(path: Path, line: int, last: int, row: list[str], delimiter: str) -> None:
    """Refuse a row whose quoted field spans lines and holds what look like further rows."""
    if last == line:
        return
    for value in row:
        later = value.replace("\r\n", "\n").replace("\r", "\n").split("\n")[1:]
        if any(delimiter in part for part in later):
            raise GapscopeError(
                f"--captions {path}: line {line}: a quoted field runs to line {last} and holds "
                f"what look like {last - line} more rows (an unterminated quote?); close the "
                "quote, or put the caption on one line"
            )


def _as_record(
    path: Path, line: int, header: list[str], row: list[str], delimiter: str
) -> dict[str, Any]:
    """``{column: value}``; a missing trailing value is None (an empty caption, listed)."""
    if any(value.strip() for value in row[len(header) :]):
        # csv's DictReader would file the extra values under None: a caption cut silently.
        separator = "tab" if delimiter == "\t" else "comma"
        raise GapscopeError(
            f"--captions {path}: line {line} has {len(row)} fields but the header has "
            f"{len(header)} (a caption with a {separator} in it must be quoted)"
        )
    return {name: (row[k] if k < len(row) else None) for k, name in enumerate(header)}


def _check_lengths(path: Path, line: int, record: dict[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        value = record.get(key)
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, str) and len(v) > MAX_FIELD_CHARS:
                raise GapscopeError(
                    f"--captions {path}: line {line}: the {key!r} value has {len(v):,} "
                    f"characters (at most {MAX_FIELD_CHARS:,}: a text encoder reads a few "
                    "hundred); an unterminated quote, or not a caption?"
                )


def _jsonl_records(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    records = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise GapscopeError(
                f"--captions {path}: line {lineno} is not valid JSON ({exc.msg})"
            ) from None
        if not isinstance(record, dict):
            raise GapscopeError(f"--captions {path}: line {lineno} is not a JSON object")
        records.append((lineno, {str(k).strip().lower(): v for k, v in record.items()}))
    return records


def _pick_column(
    path: Path,
    columns: list[str],
    chosen: str | None,
    known: tuple[str, ...],
    what: str,
    option: str,
) -> str:
    if chosen is not None:
        if chosen.strip().lower() not in columns:
            raise GapscopeError(
                f"--captions {path}: no column {chosen!r} (columns: {', '.join(columns)})"
            )
        return chosen.strip().lower()
    for name in known:
        if name in columns:
            return name
    raise GapscopeError(
        f"--captions {path}: no {what} column (looked for {', '.join(known)}; found "
        f"{', '.join(columns) or 'none'}); name it with {option}"
    )
