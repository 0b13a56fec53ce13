"""A Hugging Face dataset saved to disk as an extraction input, read in place.

``--hf-dataset DIR`` is a folder written by ``datasets.Dataset.save_to_disk`` or
``DatasetDict.save_to_disk`` (``--split`` picks one split of a ``DatasetDict``; it may be left
out when there is only one), opened with ``datasets.load_from_disk``: its Arrow files are
memory-mapped, never loaded whole. One media column is named, ``--image-column`` (an ``Image``
feature, or raw encoded bytes) or ``--audio-column`` (an ``Audio`` feature, or raw bytes), and
optionally ``--text-column`` (a string, or a list of strings: several captions of one row).

Row ``i`` gives a media row (``id`` = ``group`` = ``"i"``, ``source`` = ``"<column>[i]"``) and a
text row for each of its captions (``id`` = ``"i#k"``, ``source`` = the caption, the same
group), so the rows look like those of a folder and a captions file and pair by row index.

Cells are read as ``datasets`` stores them (``{"bytes", "path"}``, with the feature's decoding
off) and decoded like files of a folder: images with Pillow, audio with soundfile, so the
embeddings of a dataset equal those of the same files in a folder, byte for byte, and audio
needs neither torchcodec nor ffmpeg. The feature's own decoding options (``Image(mode=...)``,
``Audio(sampling_rate=...)``) are not applied: the encoder's preprocessing converts to its own
colour mode and sampling rate anyway.

Nothing is dropped in silence: a row without media (a null cell, a file that cannot be read),
or without a usable caption while a text column is named, is skipped whole and listed
(``{modality, source, reason}``); an empty or null caption in a list that has others is
listed as a skipped text row. A cell that fails to decode is skipped at extraction, like a
corrupt file.

Identity: the dataset fingerprint holds every row (index, column, captions) and the sha256 of
every media cell's bytes, hashed while the scan reads the column in chunks; a dataset saved
again with the same content resumes, any changed image, clip or caption is noticed. The
fingerprint ``datasets`` records in ``state.json`` is not used: it describes how a dataset was
made, not what its files hold, and stays the same when an Arrow file is replaced.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gapscope.errors import GapscopeError
from gapscope.extract.captions import MAX_FIELD_CHARS
from gapscope.extract.datasets import Candidate, Dataset, MediaRef, rows_fingerprint
from gapscope.extras import require

# Rows read at once while scanning: their cells are the only media in memory.
SCAN_ROWS = 256
# Opened datasets of this process, by (folder, split): DataLoader workers open each once.
_OPENED: dict[tuple[str, str | None], Any] = {}


def require_datasets() -> Any:
    """Import datasets, or say how to install the hf-datasets extra."""
    return require("datasets", "reading Hugging Face datasets", extra="hf-datasets")


@dataclass(frozen=True, slots=True)
class DatasetCell(MediaRef):
    """A media cell of a saved dataset: read from the memory-mapped Arrow files when its batch
    is decoded."""

    folder: str  # the saved dataset, absolute
    split: str | None
    column: str
    index: int
    name: str  # "<column>[<index>]"
    sha256: str

    def _bytes(self) -> bytes:
        table = open_split(self.folder, self.split)[self.index : self.index + 1]
        data, problem = cell_bytes(table.column(self.column)[0].as_py())
        if data is None:
            raise ValueError(problem)
        return data


def open_split(folder: str, split: str | None) -> Any:
    """The split of the dataset saved at ``folder``, in Arrow format (no decoding), opened
    once a process."""
    key = (folder, split)
    if key not in _OPENED:
        loaded = require_datasets().load_from_disk(folder)
        _OPENED[key] = (loaded[split] if split is not None else loaded).with_format("arrow")
    return _OPENED[key]


def cell_bytes(cell: Any) -> tuple[bytes | None, str]:
    """A media cell's bytes (stored, or read from the file it names), or None and why not."""
    if isinstance(cell, dict):
        if cell.get("bytes") is not None:
            return bytes(cell["bytes"]), ""
        if cell.get("path"):
            try:
                return Path(cell["path"]).read_bytes(), ""
            except OSError as exc:
                return None, f"its file {cell['path']} cannot be read ({exc.strerror or exc})"
        return None, "an empty cell (no bytes, no path)"
    if isinstance(cell, bytes | bytearray):
        return bytes(cell), ""
    return None, "a null cell"


def scan_hf_dataset(
    folder: str | os.PathLike[str],
    *,
    image_column: str | None = None,
    text_column: str | None = None,
    audio_column: str | None = None,
    split: str | None = None,
) -> Dataset:
    """The rows of one split of a dataset saved with ``save_to_disk``.

    Raises:
        GapscopeError: a missing folder, a folder that is not a saved dataset, a missing or
            ambiguous split, no media column or two, a missing column or one of the wrong
            type, no rows, or no row with both media and a caption.
    """
    path = Path(folder)
    ds, split = _load(path, split)
    modality, media_column = _media_column(path, ds, image_column, audio_column)
    _check_column(path, ds, media_column, modality)
    if text_column is not None:
        _check_column(path, ds, text_column, "text")
    if len(ds) == 0:
        raise GapscopeError(f"--hf-dataset {path}: {_split_name(split)} has no rows")
    resolved = str(path.resolve())
    _OPENED[(resolved, split)] = ds
    media, texts, skipped = _rows(ds, resolved, split, modality, media_column, text_column)
    if not media:
        first = f" (first: {skipped[0]['source']}: {skipped[0]['reason']})" if skipped else ""
        raise GapscopeError(
            f"--hf-dataset {path}: none of its {len(ds)} rows has "
            f"{'an image' if modality == 'image' else 'audio'}"
            f"{' and a caption' if text_column else ''}{first}"
        )
    candidates = {modality: media, **({"text": texts} if text_column is not None else {})}
    description: dict[str, Any] = {
        "images": None,
        "audio": None,
        "captions": None,
        "hf_dataset": resolved,
        "split": split,
        "columns": {modality: media_column, **({"text": text_column} if text_column else {})},
        "rows_read": len(ds),
        "files": len(media),
        "labels": None,
        "fingerprint": rows_fingerprint(candidates, skipped),
    }
    return Dataset(tuple(candidates), candidates, skipped, description)


def _split_name(split: str | None) -> str:
    return f"split {split!r}" if split is not None else "the dataset"


def _load(path: Path, split: str | None) -> tuple[Any, str | None]:
    """The chosen split (Arrow format) and its name (None for a dataset saved without
    splits)."""
    datasets = require_datasets()
    if not path.is_dir():
        what = "a file, not a folder" if path.exists() else "folder not found"
        raise GapscopeError(f"--hf-dataset {path}: {what}")
    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError:
        raise GapscopeError(
            f"--hf-dataset {path}: not a dataset saved with save_to_disk (no dataset_dict.json, "
            "or state.json and dataset_info.json)"
        ) from None
    except Exception as exc:  # a damaged Arrow or JSON file
        raise GapscopeError(
            f"--hf-dataset {path}: not a readable saved dataset ({type(exc).__name__}: {exc})"
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = sorted(loaded)
        if split is None:
            if len(splits) != 1:
                raise GapscopeError(
                    f"--hf-dataset {path} holds the splits {', '.join(splits)}: choose one "
                    "with --split"
                )
            split = splits[0]
        if split not in loaded:
            raise GapscopeError(
                f"--split {split}: no such split in {path} (splits: {', '.join(splits)})"
            )
        return loaded[split].with_format("arrow"), split
    if split is not None:
        raise GapscopeError(
            f"--split {split}: {path} is one dataset saved without splits; leave --split out"
        )
    return loaded.with_format("arrow"), None


def _media_column(
    path: Path, ds: Any, image_column: str | None, audio_column: str | None
) -> tuple[str, str]:
    if image_column is not None and audio_column is not None:
        raise GapscopeError(
            "give --image-column or --audio-column, not both: one extract uses one encoder "
            "(run two)"
        )
    if image_column is None and audio_column is None:
        raise GapscopeError(
            f"--hf-dataset {path}: name its media column with --image-column or "
            f"--audio-column (columns: {_columns(ds)})"
        )
    if image_column is not None:
        return "image", image_column
    assert audio_column is not None
    return "audio", audio_column


def _columns(ds: Any) -> str:
    return ", ".join(f"{name} ({_kind(feature)})" for name, feature in ds.features.items())


def _kind(feature: Any) -> str:
    """A feature in a few words: Image, Audio, string, list of string, ..."""
    name = type(feature).__name__
    if name == "Value":
        return str(feature.dtype)
    inner = getattr(feature, "feature", None)
    if name in ("List", "LargeList", "Sequence") and inner is not None:
        return f"list of {_kind(inner)}"
    return name


_ACCEPTED = {
    "image": ({"Image"}, {"binary", "large_binary"}, "images (an Image feature, or bytes)"),
    "audio": ({"Audio"}, {"binary", "large_binary"}, "audio (an Audio feature, or bytes)"),
    "text": (set(), {"string", "large_string"}, "captions (strings, or lists of strings)"),
}


def _check_column(path: Path, ds: Any, column: str, modality: str) -> None:
    option = f"--{modality}-column"
    if column not in ds.features:
        raise GapscopeError(
            f"{option} {column}: no such column in {path} (columns: {_columns(ds)})"
        )
    feature = ds.features[column]
    kinds, values, what = _ACCEPTED[modality]
    kind = _kind(feature)
    if type(feature).__name__ in kinds or kind in values:
        return
    if modality == "text" and kind.removeprefix("list of ") in values:
        return
    raise GapscopeError(f"{option} {column}: a column of {kind}, not of {what}")


def _rows(
    ds: Any,
    folder: str,
    split: str | None,
    modality: str,
    media_column: str,
    text_column: str | None,
) -> tuple[list[Candidate], list[Candidate], list[dict[str, Any]]]:
    """Media and text rows, read ``SCAN_ROWS`` rows at a time, and the rows left out."""
    media: list[Candidate] = []
    texts: list[Candidate] = []
    skipped: list[dict[str, Any]] = []
    view = ds.select_columns([media_column] + ([text_column] if text_column else []))
    for start in range(0, len(ds), SCAN_ROWS):
        table = view[start : start + SCAN_ROWS]  # Arrow slices of the memory-mapped files
        cells = table.column(media_column)
        captions = table.column(text_column).to_pylist() if text_column else [None] * len(cells)
        for offset, caption in enumerate(captions):
            index = start + offset
            source = f"{media_column}[{index}]"
            # One cell at a time becomes Python bytes: the scan holds one image, not a chunk.
            data, problem = cell_bytes(cells[offset].as_py())
            kept, dropped = _captions(caption) if text_column else ([], [])
            if data is not None and text_column and not kept:
                problem = dropped[0] if dropped else "no caption in this row"
            if data is None or problem:
                skipped.append({"modality": modality, "source": source, "reason": problem})
                continue
            digest = hashlib.sha256(data).hexdigest()
            ref = DatasetCell(folder, split, media_column, index, source, digest)
            media.append(Candidate(str(index), source, str(index), None, ref, digest))
            for k, text in enumerate(kept):
                texts.append(Candidate(f"{index}#{k}", text, str(index), None, text))
            skipped.extend(
                {"modality": "text", "source": f"{text_column}[{index}]", "reason": reason}
                for reason in dropped
            )
    return media, texts, skipped


def _captions(value: Any) -> tuple[list[str], list[str]]:
    """The usable captions of a cell, and why each other one is not usable."""
    values = value if isinstance(value, list) else [value]
    kept: list[str] = []
    dropped: list[str] = []
    for raw in values:
        if raw is None:
            listed = isinstance(value, list)
            dropped.append("a null caption in the list" if listed else "no caption in this row")
            continue
        if not isinstance(raw, str):
            dropped.append(f"a caption that is not text ({type(raw).__name__})")
            continue
        text = raw.strip()
        if len(text) > MAX_FIELD_CHARS:
            dropped.append(f"a caption longer than {MAX_FIELD_CHARS:,} characters")
        elif text:
            kept.append(text)
        else:
            dropped.append("an empty caption")
    return kept, dropped
