"""clip-retrieval output folders: embeddings that already exist, read where they live.

``clip-retrieval inference --output_folder OUT`` writes, for each partition ``i`` (numbered
from 0, zero-padded to the width of the partition count)::

    OUT/img_emb/img_emb_{i}.npy          image embeddings of the partition (n_i, d)
    OUT/text_emb/text_emb_{i}.npy        text embeddings of the same samples (n_i, d)
    OUT/metadata/metadata_{i}.parquet    one row a sample: image_path, caption, and the
                                         flattened metadata columns (url, key, ...)

Row r of a partition's image file, text file and metadata table is one sample, so the image
and the caption of a row are a pair. :func:`read_folder` checks that layout (partitions that
agree in number, rows and dimension) and returns the rows of every partition in partition
order with one item a row (``id``: the metadata's ``key`` when it has one, else (no key
column, or a null key) ``<partition>:<row>``; ``source``: the image path, or the caption for
text rows; ``group``: the sample number). The metadata is optional; it needs ``pyarrow`` (the
``parquet`` extra).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gapscope.data.store import printable_name
from gapscope.errors import EmbeddingError
from gapscope.extras import require

__all__ = [
    "ClipRetrievalFolder",
    "import_folder",
    "folder_notes",
    "import_notes",
    "is_clip_retrieval_folder",
    "read_folder",
]

#: gapscope modality -> (sub-folder, file prefix) of clip-retrieval's layout.
LAYOUT = {"image": ("img_emb", "img_emb_"), "text": ("text_emb", "text_emb_")}
_METADATA = ("metadata", "metadata_")


def is_clip_retrieval_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder laid out as clip-retrieval writes its output (an
    ``img_emb/`` or ``text_emb/`` sub-folder of ``.npy`` parts; no gapscope manifest)."""
    folder = Path(path)
    if not folder.is_dir() or (folder / "manifest.json").exists():
        return False
    return any(_parts(folder / sub, prefix, ".npy") for sub, prefix in LAYOUT.values())


def _parts(folder: Path, prefix: str, suffix: str) -> dict[int, Path]:
    """Partition number -> file, for ``folder/<prefix><digits><suffix>``."""
    if not folder.is_dir():
        return {}
    pattern = re.compile(re.escape(prefix) + r"(\d+)" + re.escape(suffix))
    found: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        match = pattern.fullmatch(path.name)
        if match and path.is_file():
            number = int(match.group(1))
            if number in found:
                raise EmbeddingError(
                    f"{folder}: partition {number} appears twice ({found[number].name}, "
                    f"{path.name})"
                )
            found[number] = path
    return found


@dataclass
class ClipRetrievalFolder:
    """The partitions of a clip-retrieval output folder, checked against each other.

    Attributes:
        path: the folder.
        partitions: partition numbers, ascending.
        files: modality -> the ``.npy`` part of each partition (memory-mapped when read).
        metadata: the Parquet table of each partition, or empty when there is none.
        rows: rows of each partition.
        dim: the embedding dimension.
        ignored: files of ``img_emb/``, ``text_emb/`` and ``metadata/`` that are not a
            partition's (their names do not fit the layout), relative to the folder.
        missing: partition numbers below the highest that no file has, the first 100
            (clip-retrieval numbers them from 0 without gaps, so a gap is a partition not
            written or lost).
    """

    path: Path
    partitions: list[int]
    files: dict[str, list[Path]]
    metadata: list[Path]
    rows: list[int]
    dim: int
    ignored: list[str] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    _columns: dict[int, dict[str, list[Any]]] = field(default_factory=dict, repr=False)

    @property
    def modalities(self) -> list[str]:
        return [m for m in LAYOUT if m in self.files]

    def parts(self, modality: str) -> Iterator[np.ndarray]:
        """The embeddings of ``modality``, one memory-mapped partition at a time."""
        for path in self.files[modality]:
            yield np.load(path, mmap_mode="r", allow_pickle=False)

    def embeddings(self, modality: str) -> np.ndarray:
        """Every partition of ``modality`` in one array (memory-mapped when there is one)."""
        parts = list(self.parts(modality))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def items(self, modality: str, part: int) -> list[dict[str, Any]]:
        """One item a row of partition number ``part`` (an index into :attr:`partitions`)."""
        columns = self._metadata_columns(part)
        first = sum(self.rows[:part])
        number = self.partitions[part]
        keys = columns.get("key")
        sources = columns.get("image_path" if modality == "image" else "caption")
        return [
            {
                "id": f"{number}:{r}" if keys is None or keys[r] is None else str(keys[r]),
                "source": "" if sources is None or sources[r] is None else str(sources[r]),
                "group": first + r,
            }
            for r in range(self.rows[part])
        ]

    def _metadata_columns(self, part: int) -> dict[str, list[Any]]:
        if not self.metadata:
            return {}
        if part not in self._columns:
            parquet = _parquet()
            path = self.metadata[part]
            try:
                names = parquet.ParquetFile(path).schema_arrow.names
                wanted = [c for c in ("key", "image_path", "caption") if c in names]
                table = parquet.read_table(path, columns=wanted)
            except Exception as exc:  # pyarrow raises its own types for damaged files
                raise EmbeddingError(f"{path}: not a readable Parquet table ({exc})") from None
            self._columns = {part: {c: table.column(c).to_pylist() for c in wanted}}
        return self._columns[part]


def read_folder(path: str | os.PathLike[str]) -> ClipRetrievalFolder:
    """Check a clip-retrieval output folder and describe its partitions.

    Raises:
        EmbeddingError: not such a folder, fewer than two modalities, partitions that are
            missing from one modality, partitions whose row counts, dimensions or dtypes
            disagree, or metadata tables that do not match them.
    """
    folder = Path(path)
    found = {m: _parts(folder / sub, prefix, ".npy") for m, (sub, prefix) in LAYOUT.items()}
    found = {m: parts for m, parts in found.items() if parts}
    if len(found) < 2:
        have = ", ".join(f"{LAYOUT[m][0]}/" for m in found) or "no embeddings"
        raise EmbeddingError(
            f"{folder}: a clip-retrieval folder needs both img_emb/ and text_emb/ parts to "
            f"pair (found {have})"
        )
    numbers = sorted(set().union(*found.values()))
    for modality, parts in found.items():
        missing = sorted(set(numbers) - set(parts))
        if missing:
            raise EmbeddingError(
                f"{folder}: partition {missing[0]} has no {LAYOUT[modality][0]}/ part"
            )
    metadata = _parts(folder / _METADATA[0], _METADATA[1], ".parquet")
    if metadata and sorted(metadata) != numbers:
        odd = sorted(set(numbers) ^ set(metadata))[0]
        raise EmbeddingError(f"{folder}: partition {odd} has embeddings or metadata, not both")
    table_rows = {k: _parquet_rows(p) for k, p in metadata.items()}
    rows: list[int] = []
    dims: set[int] = set()
    for number in numbers:
        shapes = {}
        for modality, parts in found.items():
            array = _header(parts[number])
            shapes[modality] = array.shape
            dims.add(array.shape[1])
        counts = {shape[0] for shape in shapes.values()}
        if len(counts) > 1:
            described = ", ".join(f"{m} {s[0]}" for m, s in shapes.items())
            raise EmbeddingError(
                f"{folder}: partition {number} has {described} rows; row r of each is one sample"
            )
        rows.append(counts.pop())
        if number in table_rows and table_rows[number] != rows[-1]:
            raise EmbeddingError(
                f"{metadata[number]}: {table_rows[number]} metadata rows for {rows[-1]} embeddings"
            )
    if len(dims) > 1:
        raise EmbeddingError(f"{folder}: embeddings of different dimensions {sorted(dims)}")
    if not sum(rows):
        raise EmbeddingError(f"{folder}: every partition is empty")
    # Partitions are matched by number, whatever their zero padding.
    return ClipRetrievalFolder(
        path=folder,
        partitions=numbers,
        files={m: [found[m][k] for k in numbers] for m in LAYOUT if m in found},
        metadata=[metadata[k] for k in numbers] if metadata else [],
        rows=rows,
        dim=dims.pop(),
        ignored=_not_partitions(folder, [*found.values(), metadata]),
        missing=_gaps(numbers),
    )


#: Missing partition numbers kept at most (a stray ``img_emb_9999999999.npy`` leaves a gap of
#: ten billion numbers: the first ones are enough to tell what happened).
_MISSING_SHOWN = 100


def _gaps(numbers: list[int]) -> list[int]:
    """The first :data:`_MISSING_SHOWN` numbers from 0 to the highest that ``numbers``
    (ascending) lacks."""
    gaps: list[int] = []
    expected = 0
    for number in numbers:
        gaps.extend(range(expected, min(number, expected + _MISSING_SHOWN - len(gaps))))
        if len(gaps) >= _MISSING_SHOWN:
            break
        expected = number + 1
    return gaps


def _not_partitions(folder: Path, parts: list[dict[int, Path]]) -> list[str]:
    """The files of the layout's sub-folders that no partition reads, relative to
    ``folder`` (hidden files left out, as clip-retrieval never writes them)."""
    read = {path for found in parts for path in found.values()}
    ignored = []
    for sub in [*(sub for sub, _ in LAYOUT.values()), _METADATA[0]]:
        if (folder / sub).is_dir():
            for path in sorted((folder / sub).iterdir()):
                if path not in read and not path.name.startswith("."):
                    ignored.append(printable_name(path.relative_to(folder).as_posix()))
    return ignored


def _parquet() -> Any:
    """``pyarrow.parquet``, or one line naming the extra that brings it."""
    require("pyarrow", "reading clip-retrieval metadata (Parquet)")
    import pyarrow.parquet

    return pyarrow.parquet


def _parquet_rows(path: Path) -> int:
    """Rows of a Parquet table, from its footer alone."""
    parquet = _parquet()
    try:
        return int(parquet.ParquetFile(path).metadata.num_rows)
    except Exception as exc:  # pyarrow raises its own types for damaged files
        raise EmbeddingError(f"{path}: not a readable Parquet table ({exc})") from None


def _header(path: Path) -> np.ndarray:
    """The memory-mapped array of a part (its header checked: 2-D float, no pickle)."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise EmbeddingError(f"{path}: not a readable .npy array ({exc})") from None
    if array.ndim != 2 or array.dtype.kind != "f":
        raise EmbeddingError(
            f"{path}: expected a 2-D float array, got shape {array.shape} {array.dtype}"
        )
    return array


#: A modality whose every row has a norm within this of 1 is recorded as normalised by its
#: encoder (clip-retrieval stores unit rows in float16: ~1e-3 off).
_UNIT_NORM_TOLERANCE = 1e-2


def _stored_dtype(files: Sequence[Path]) -> str:
    """A store holds one dtype a modality: float16 when every partition is, else float32 (a
    folder that mixes the two is widened, exactly, as ``analyze FOLDER`` reads it)."""
    found = {np.load(f, mmap_mode="r", allow_pickle=False).dtype.name for f in files}
    return "float16" if found == {"float16"} else "float32"


def import_folder(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    progress: Any = None,
) -> Any:
    """Write the clip-retrieval folder ``path`` as a gapscope store at ``out``, one
    partition at a time (never the whole folder in memory), and return the opened store.

    The store's items keep each sample's key (``id``), image path or caption (``source``)
    and sample number (``group``, which pairs an image with its caption); ``dataset`` in
    the manifest names the folder and its partitions. Float16 and float32 rows are copied as
    they are (a modality whose partitions mix the two is widened to float32, exactly), other
    float types as float32. Whether the rows are unit vectors is measured,
    not assumed (``normalized`` in the manifest).

    Raises:
        EmbeddingError: see :func:`read_folder`.
        StoreError: ``out`` exists and is not a store to overwrite, or is being written.
    """
    from gapscope.data.store import EmbeddingStore

    folder = read_folder(path)
    dataset: dict[str, Any] = {
        "format": "clip-retrieval",
        "folder": str(folder.path),
        "partitions": len(folder.partitions),
        "metadata": bool(folder.metadata),
    }
    if folder.ignored:
        dataset["ignored"] = folder.ignored
    if folder.missing:
        dataset["missing_partitions"] = folder.missing
    existed = Path(out).is_dir()
    store = EmbeddingStore.create(out, dataset=dataset, overwrite=overwrite)
    unit = {m: True for m in folder.modalities}
    kept = {m: _stored_dtype(folder.files[m]) for m in folder.modalities}
    try:
        for part in range(len(folder.partitions)):
            for modality in folder.modalities:
                rows = np.load(folder.files[modality][part], mmap_mode="r", allow_pickle=False)
                if rows.dtype.name != kept[modality]:
                    rows = rows.astype(kept[modality])
                if rows.shape[0]:
                    norms = np.linalg.norm(np.asarray(rows, dtype=np.float64), axis=1)
                    unit[modality] &= bool(np.all(np.abs(norms - 1.0) <= _UNIT_NORM_TOLERANCE))
                store.append(modality, np.asarray(rows), folder.items(modality, part))
            if progress is not None:
                progress(part + 1, len(folder.partitions))
        store.finalize(normalized=unit)
    except BaseException:
        store.abandon(Path(out) if existed else None)  # nothing half written stays behind
        raise
    finally:
        store.close()
    return EmbeddingStore.open(out)


def import_notes(dataset: Mapping[str, Any]) -> list[str]:
    """One line for the files an import left out and one for the partitions it found
    missing (``dataset`` as :func:`import_folder` writes it in the manifest), the first five
    of each named.

    >>> for line in import_notes({"ignored": ["img_emb/notes.txt"], "missing_partitions": [1]}):
    ...     print(line)
    Note: 1 file not read, not a partition: img_emb/notes.txt (manifest: dataset.ignored)
    Note: partition 1 missing (numbered from 0 without gaps; dataset.missing_partitions)
    """
    return _unread(
        dataset.get("ignored", []),
        dataset.get("missing_partitions", []),
        "Note: ",
        (
            " (manifest: dataset.ignored)",
            " (numbered from 0 without gaps; dataset.missing_partitions)",
        ),
    )


def folder_notes(folder: ClipRetrievalFolder) -> list[str]:
    """The same lines for a folder read in place (``gapscope analyze FOLDER``), for the
    report's notes."""
    return _unread(
        folder.ignored,
        folder.missing,
        f"clip-retrieval folder {folder.path}: ",
        ("", " (numbered from 0 without gaps)"),
    )


def _unread(
    ignored: Sequence[str],
    missing: Sequence[int],
    lead: str,
    where: tuple[str, str],
    shown: int = 5,
) -> list[str]:
    """What was not read, in words: a line for the ignored files, one for the missing
    partitions (none for none), each between ``lead`` and its ``where``."""

    def named(values: Sequence[Any]) -> str:
        more = f" and {len(values) - shown} more" if len(values) > shown else ""
        return ", ".join(str(v) for v in values[:shown]) + more

    lines = []
    if ignored:
        count = "1 file" if len(ignored) == 1 else f"{len(ignored)} files"
        lines.append(f"{lead}{count} not read, not a partition: {named(ignored)}{where[0]}")
    if missing:
        which = "partition" if len(missing) == 1 else "partitions"
        lines.append(f"{lead}{which} {named(missing)} missing{where[1]}")
    return lines
