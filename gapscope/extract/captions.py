"""Reading a captions file: CSV, TSV or JSONL, one caption (or a list of captions) per row.

Each row names a file (column ``image``, ``audio``, ``file``, ``path``, ``filename`` or
``filepath``) and its caption (column ``caption``, ``text``, ``description`` or ``captions``).
Several rows for one file, or a JSON list of captions, give that file several captions, which
share its group. Paths are relative to the image or audio folder (absolute paths inside it work
too).
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
        GapscopeError: the file is missing, unreadable, of an unknown format, or lacks a file
            or caption column.
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
    records = _jsonl_records(path, text) if fmt == "jsonl" else _table_records(text, fmt)
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


def _table_records(text: str, fmt: str) -> list[tuple[int, dict[str, Any]]]:
    # newline="" lets the csv module see line breaks inside quoted captions as text.
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if fmt == "tsv" else ",")
    if reader.fieldnames is None:
        return []
    reader.fieldnames = [name.strip().lower() for name in reader.fieldnames]
    # Line numbers count the header as line 1, as an editor would show them.
    return [(reader.line_num, dict(row)) for row in reader if any(v for v in row.values())]


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
