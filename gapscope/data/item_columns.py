"""Store items as columns (store format 2): one uncompressed ``.npz`` a modality.

A format-1 store keeps its items as JSON lines, which a reader turns into one Python dict a
row (865 MiB and 6.8 s a million rows in ``benchmarks/bench_store_items.py``). Format 2 keeps
them in ``<modality>.items.npz``, a zip archive of ``.npy`` arrays stored without compression,
so that numpy reads it (``numpy.load("image.items.npz")["id.offsets"]``) and gapscope
memory-maps every member where it lies in the file; nothing is decoded until a row is asked
for. Members, in this order:

```
id.offsets, id.data          the row's "id": JSON text, UTF-8
source.offsets, source.data  "source"
group.offsets, group.data    "group"
group.codes                  int64 group codes, shared across the store's modalities
label.offsets, label.data    "label" (only when a row has one)
label.codes                  int64 label codes, -1 where a row has none
extra.offsets, extra.data    the row's other keys as one JSON object (only when a row has some)
```

A text column is ``offsets`` (int64, rows + 1, from 0) and ``data`` (uint8): row ``i`` is
``data[offsets[i]:offsets[i + 1]]``, the JSON text of its value (``"cat/1.jpg"`` with its
quotes, ``3``, ``[1, "a"]``), empty where the row lacks the key. The codes are what
:meth:`~gapscope.data.store.EmbeddingStore.groups` and ``labels`` return, assigned as format 1
assigns them on reading (first appearance, modalities in store order, values compared with
their JSON type), so analysing a store never decodes an item. Each member's data starts at a
multiple of 64 bytes in the file; the archive's bytes depend on the items only.

The columns are built from the JSON lines of the parts when a store is finalised
(:class:`ColumnsBuilder`): extraction still appends JSON-lines parts and resumes from them.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

from gapscope.data.atomic import AtomicFile
from gapscope.errors import StoreError

__all__ = [
    "ColumnsBuilder",
    "ItemColumns",
    "JsonColumn",
    "read_columns",
    "value_key",
    "write_npz",
]

#: Text columns in the order they are stored; ``extra`` holds every other key of a row.
TEXT_COLUMNS = ("id", "source", "group", "label", "extra")
_REQUIRED = ("id", "group")
#: The keys that have a column of their own; any other key (``extra`` too) goes in ``extra``.
_KEYS = ("id", "source", "group", "label")
_ALIGN = 64
#: Extra-field id of the padding that aligns a member's data (the one zipalign uses).
_PAD_ID = 0xD935
_EPOCH = (1980, 1, 1, 0, 0, 0)
_SCAN_ROWS = 1 << 20


def value_key(value: Any) -> Any:
    """What two groups (or labels) are compared by: the value with its JSON type, so ``3``
    and ``"3"`` differ; lists become tuples (hashable).

    >>> value_key(3) == value_key("3"), value_key([1, "a"])
    (False, ('tuple', (('int', 1), ('str', 'a'))))
    """
    if isinstance(value, list):
        return ("tuple", tuple(value_key(v) for v in value))
    return (type(value).__name__, value)


def _json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=False).encode("utf-8")


class _TextBuilder:
    def __init__(self) -> None:
        self.offsets = array("q", [0])
        self.data = bytearray()

    def add(self, text: bytes) -> None:
        self.data += text
        self.offsets.append(len(self.data))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.frombuffer(self.offsets, dtype=np.int64), np.frombuffer(self.data, np.uint8)


class ColumnsBuilder:
    """The columns of one modality, built row by row from item dicts.

    ``group_codes`` and ``label_codes`` are shared by the builders of one store, modality by
    modality in store order, so that equal values get equal codes across modalities.
    """

    def __init__(self, group_codes: dict[Any, int], label_codes: dict[Any, int]) -> None:
        self._group_codes, self._label_codes = group_codes, label_codes
        self._text = {name: _TextBuilder() for name in TEXT_COLUMNS}
        self._groups = array("q")
        self._labels = array("q")
        self._has = {"label": False, "extra": False}

    def add(self, item: Mapping[str, Any]) -> None:
        """Append one row (a dict with at least ``id`` and ``group``)."""
        rest = {k: v for k, v in item.items() if k not in _KEYS}
        for name in _KEYS:
            self._text[name].add(_json(item[name]) if name in item else b"")
        self._text["extra"].add(_json(rest) if rest else b"")
        self._has["label"] |= "label" in item
        self._has["extra"] |= bool(rest)
        codes = self._group_codes
        self._groups.append(codes.setdefault(value_key(item["group"]), len(codes)))
        label = item.get("label")
        if label is None:
            self._labels.append(-1)
        else:
            self._labels.append(
                self._label_codes.setdefault(value_key(label), len(self._label_codes))
            )

    def __len__(self) -> int:
        return len(self._groups)

    def members(self) -> list[tuple[str, np.ndarray]]:
        """The archive's members, in their order (see the module docstring)."""
        out: list[tuple[str, np.ndarray]] = []
        for name in TEXT_COLUMNS:
            if name in self._has and not self._has[name]:
                continue
            offsets, data = self._text[name].arrays()
            out += [(f"{name}.offsets", offsets), (f"{name}.data", data)]
            if name == "group":
                out.append(("group.codes", np.frombuffer(self._groups, dtype=np.int64)))
            if name == "label":
                out.append(("label.codes", np.frombuffer(self._labels, dtype=np.int64)))
        return out


# --------------------------------------------------------------------------- the archive


def write_npz(path: Path, members: Iterable[tuple[str, np.ndarray]]) -> None:
    """Write ``members`` as an uncompressed ``.npz`` at ``path``, atomically.

    Every member's array data starts at a multiple of 64 bytes (padding in the zip entry's
    extra field), so that it can be memory-mapped in place; the timestamps are fixed, so the
    bytes depend on the arrays only.
    """
    with (
        AtomicFile(path, "wb") as fh,
        zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf,
    ):
        for name, arr in members:
            arr = np.ascontiguousarray(arr)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                header, np.lib.format.header_data_from_array_1_0(arr)
            )
            # Local header: 30 bytes, the name, our padding, then the zip64 field (20 bytes).
            start = fh.tell() + 30 + len(info.filename.encode()) + 20 + len(header.getvalue())
            pad = (-(start + 4)) % _ALIGN
            info.extra = struct.pack("<HH", _PAD_ID, pad) + b"\0" * pad
            with zf.open(info, "w", force_zip64=True) as out:
                out.write(header.getvalue())
                flat = arr.reshape(-1).view(np.uint8) if arr.size else arr.reshape(-1)
                for start in range(0, flat.size, 1 << 24):
                    out.write(flat[start : start + (1 << 24)].tobytes())


def _local_members(path: Path) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """The members of an ``.npz`` file, memory-mapped where stored uncompressed, and where
    the data of each mapped one starts in the file."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise StoreError(f"{path}: not a readable .npz archive ({exc})") from None
    members: dict[str, np.ndarray] = {}
    starts: dict[str, int] = {}
    with open(path, "rb") as fh:
        for info in infos:
            name = info.filename.removesuffix(".npy")
            if info.compress_type != zipfile.ZIP_STORED:  # re-zipped by hand: read it whole
                members[name] = _read_member(path, info.filename)
                continue
            fh.seek(info.header_offset)
            local = fh.read(30)
            if len(local) < 30 or local[:4] != b"PK\x03\x04":
                raise StoreError(f"{path}: member {info.filename} has no local header")
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            fh.seek(info.header_offset + 30 + name_len + extra_len)
            shape, dtype = _npy_header(fh, path, info.filename)
            offset = fh.tell()
            count = int(np.prod(shape))
            if (
                offset + count * dtype.itemsize
                > info.header_offset + 30 + name_len + extra_len + info.file_size
            ):
                raise StoreError(f"{path}: member {info.filename} is truncated")
            if count == 0:
                members[name] = np.zeros(shape, dtype)
            else:
                mapped = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
                members[name] = mapped.view(np.ndarray)
                starts[name] = offset
    return members, starts


def _npy_header(fh: Any, path: Any, member: str) -> tuple[tuple[int, ...], np.dtype]:
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    except ValueError as exc:
        raise StoreError(f"{path}: member {member} is not a .npy array ({exc})") from None
    if dtype.hasobject or fortran:
        raise StoreError(
            f"{path}: member {member} holds {dtype} (fortran {fortran}), not plain numbers"
        )
    return tuple(shape), dtype


def _read_member(source: Any, member: str) -> np.ndarray:
    try:
        with np.load(source, allow_pickle=False) as npz:
            return npz[member.removesuffix(".npy")]
    except (ValueError, OSError, KeyError, zipfile.BadZipFile) as exc:
        raise StoreError(f"{source}: member {member} is not readable ({exc})") from None


def _bytes_members(payload: bytes, where: str) -> dict[str, np.ndarray]:
    """The members of an ``.npz`` archive held in memory (a remote store's)."""
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise StoreError(f"{where}: not a readable .npz archive ({exc})") from None


# --------------------------------------------------------------------------- reading


class JsonColumn(Sequence[Any]):
    """One text column, decoded a row at a time: the value, or ``None`` where it is absent.

    ``offsets`` and ``data`` are the raw arrays (memory-mapped); :meth:`text` is the JSON text
    of a row without decoding it.
    """

    def __init__(self, name: str, offsets: np.ndarray, data: np.ndarray, where: str) -> None:
        self.name, self.offsets, self.data, self._where = name, offsets, data, where

    def __len__(self) -> int:
        return int(self.offsets.shape[0]) - 1

    def text(self, row: int) -> bytes:
        """The JSON text of ``row`` (empty when the row lacks the key)."""
        start, end = int(self.offsets[row]), int(self.offsets[row + 1])
        return self.data[start:end].tobytes()

    @overload
    def __getitem__(self, row: int) -> Any: ...
    @overload
    def __getitem__(self, row: slice) -> list[Any]: ...
    def __getitem__(self, row: int | slice) -> Any:
        if isinstance(row, slice):
            return [self[i] for i in range(*row.indices(len(self)))]
        n = len(self)
        if not -n <= row < n:
            raise IndexError(f"row {row} of {n}")
        row = row % n
        text = self.text(row)
        if not text:
            return None
        try:
            return json.loads(text.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StoreError(
                f"{self._where}: {self.name} of row {row} is not valid JSON ({exc})"
            ) from None


class ItemColumns(Sequence[dict[str, Any]]):
    """The items of one modality of a format-2 store, read lazily from their columns.

    ``columns[i]`` is row ``i``'s dict (the keys it was written with, sorted), decoded when
    asked for; :meth:`column` gives one column; ``group_codes`` and ``label_codes`` are the
    int64 codes (memory-mapped, ``label_codes`` ``None`` without labels).
    """

    def __init__(self, members: Mapping[str, np.ndarray], where: str) -> None:
        self._where = where
        self._text = {
            name: JsonColumn(name, members[f"{name}.offsets"], members[f"{name}.data"], where)
            for name in TEXT_COLUMNS
            if f"{name}.offsets" in members
        }
        self.group_codes: np.ndarray = members["group.codes"]
        self.label_codes: np.ndarray | None = members.get("label.codes")

    def __len__(self) -> int:
        return int(self.group_codes.shape[0])

    def column(self, name: str) -> JsonColumn | None:
        """The column ``name`` (``id``, ``source``, ``group``, ``label``, ``extra``), or
        ``None`` when no row has it."""
        return self._text.get(name)

    def _row(self, row: int) -> dict[str, Any]:
        item: dict[str, Any] = {}
        for name, column in self._text.items():
            if not column.text(row):
                continue
            value = column[row]
            if name == "extra":
                item.update(value)
            else:
                item[name] = value
        return dict(sorted(item.items()))

    @overload
    def __getitem__(self, row: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, row: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, row: int | slice) -> Any:
        if isinstance(row, slice):
            return [self._row(i) for i in range(*row.indices(len(self)))]
        n = len(self)
        if not -n <= row < n:
            raise IndexError(f"row {row} of {n}")
        return self._row(row % n)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for row in range(len(self)):
            yield self._row(row)


def read_columns(source: Path | bytes, rows: int, where: str | None = None) -> ItemColumns:
    """The item columns of a format-2 store's ``.npz`` file (memory-mapped), or of its bytes
    (a remote store's, held in memory), checked for ``rows`` rows.

    The checks read the offsets and codes a chunk at a time (no copy of a column is kept):
    every member present with its dtype and length, offsets that start at 0, never decrease
    and end at the data's length, an ``id`` and a ``group`` on every row, group codes that are
    not negative, and labels on every row or on none. The JSON text itself is decoded only
    when a row is read.

    Raises:
        StoreError: the first problem, in one line naming the file.
    """
    if isinstance(source, bytes):
        label = where or "<bytes>"
        members, starts = _bytes_members(source, label), dict[str, int]()
    else:
        label = where or str(source)
        members, starts = _local_members(source)

    def chunks(name: str, overlap: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        if name in starts:
            assert isinstance(source, Path)
            return _file_chunks(source, starts[name], members[name], overlap)
        return _chunks(members[name], overlap)

    _check_members(members, rows, label, chunks)
    return ItemColumns(members, label)


def _member(
    members: Mapping[str, np.ndarray], name: str, dtype: Any, length: int | None, where: str
) -> np.ndarray:
    """Member ``name``, checked to be a 1-D array of ``dtype`` and ``length`` entries."""
    if name not in members:
        raise StoreError(f"{where}: member {name} is missing")
    arr = members[name]
    if arr.dtype != np.dtype(dtype) or arr.ndim != 1:
        raise StoreError(
            f"{where}: member {name} must be 1-D {np.dtype(dtype)}, got {arr.dtype} {arr.shape}"
        )
    if length is not None and arr.shape[0] != length:
        raise StoreError(f"{where}: member {name} has {arr.shape[0]} entries, expected {length}")
    return arr


def _check_members(
    members: Mapping[str, np.ndarray],
    rows: int,
    where: str,
    chunks: Callable[..., Iterator[tuple[int, np.ndarray]]],
) -> None:
    for name in TEXT_COLUMNS:
        if name in _REQUIRED or f"{name}.offsets" in members:
            _check_text(members, name, rows, where, chunks)
    _member(members, "group.codes", np.int64, rows, where)
    for start, chunk in chunks("group.codes"):
        if chunk.size and int(chunk.min()) < 0:
            row = start + int(np.flatnonzero(chunk < 0)[0])
            raise StoreError(f"{where}: group.codes of item {row} is negative")
    if "label.codes" in members or "label.offsets" in members:
        _member(members, "label.codes", np.int64, rows, where)
        labelled = 0
        for _, chunk in chunks("label.codes"):
            if chunk.size and int(chunk.min()) < -1:
                raise StoreError(f"{where}: label.codes holds values below -1")
            labelled += int(np.count_nonzero(chunk >= 0))
        if 0 < labelled < rows:
            raise StoreError(
                f"{where}: labels on {labelled} of {rows} rows; give a label to every row or "
                "to none"
            )


def _check_text(
    members: Mapping[str, np.ndarray],
    name: str,
    rows: int,
    where: str,
    chunks: Callable[..., Iterator[tuple[int, np.ndarray]]],
) -> None:
    """A text column's offsets: from 0 to the data's length, never decreasing, and never
    empty for the keys every item has (``id``, ``group``)."""
    offsets = _member(members, f"{name}.offsets", np.int64, rows + 1, where)
    data = _member(members, f"{name}.data", np.uint8, None, where)
    if int(offsets[0]) != 0 or int(offsets[-1]) != data.shape[0]:
        raise StoreError(
            f"{where}: {name}.offsets must run from 0 to {data.shape[0]} (the data's "
            f"length), got {int(offsets[0])} to {int(offsets[-1])}"
        )
    least = 1 if name in _REQUIRED else 0
    for start, chunk in chunks(f"{name}.offsets", 1):
        steps = np.diff(chunk)
        if steps.size and int(steps.min()) < least:
            first = int(np.flatnonzero(steps < least)[0])
            what = f"lacks its {name!r}" if steps[first] == 0 else f"has a negative {name} length"
            raise StoreError(f"{where}: item {start + first} {what}")


def _chunks(arr: np.ndarray, overlap: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """Consecutive slices of ``arr`` with ``overlap`` entries shared between neighbours."""
    n = arr.shape[0]
    for start in range(0, max(n - overlap, 1), _SCAN_ROWS):
        yield start, arr[start : min(start + _SCAN_ROWS + overlap, n)]


def _file_chunks(
    path: Path, offset: int, arr: np.ndarray, overlap: int = 0
) -> Iterator[tuple[int, np.ndarray]]:
    """:func:`_chunks` of a memory-mapped member, read from the file instead of the map:
    pages of a map stay in the process's memory once touched, a read chunk is dropped."""
    n, size = arr.shape[0], arr.dtype.itemsize
    with open(path, "rb") as fh:
        for start in range(0, max(n - overlap, 1), _SCAN_ROWS):
            count = min(start + _SCAN_ROWS + overlap, n) - start
            fh.seek(offset + start * size)
            yield start, np.fromfile(fh, dtype=arr.dtype, count=count)
