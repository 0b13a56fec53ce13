"""What ``analyze`` reads: an embedding store, or plain arrays paired row by row.

:class:`EmbeddingSet` is the one in-memory view both turn into: raw embeddings per modality
(memory-mapped where the source allows), the group codes that define positive pairs, optional
labels, and where the rows came from.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from gapscope.data import remote
from gapscope.data.class_prompts import ClassPrompts, class_indices, read_store_classes
from gapscope.data.clip_retrieval import folder_notes, is_clip_retrieval_folder, read_folder
from gapscope.data.store import (
    MODALITIES,
    EmbeddingStore,
    check_modality_name,
    fingerprint_arrays,
)
from gapscope.errors import EmbeddingError, GapscopeError
from gapscope.extras import require

ARRAY_SUFFIXES = (".npy", ".pt", ".pth", ".safetensors", ".parquet:COLUMN")


@dataclass
class EmbeddingSet:
    """Raw embeddings of two or more modalities with the groups that pair them.

    Attributes:
        embeddings: modality -> raw rows ``(n, d)`` (float16/32/64, or a torch tensor of
            those or bfloat16 on any device; not normalised).
        groups: modality -> int64 codes; rows of different modalities with equal codes are
            positives.
        labels: modality -> int64 class codes (intra-modal ground truth), or absent.
        normalized: modality -> whether the encoder already L2-normalised its outputs (None when
            unknown, e.g. plain arrays).
        source: a short description of where the rows came from (shown in the report).
        model: the encoder description from a store's manifest, or None.
        known_fingerprint: the embeddings' sha256 when already known (a store's cached
            fingerprint), else None: :meth:`fingerprint` hashes the rows.
        label_values: modality -> the labels as given (names or numbers), one a row.
        classes: the class prompts of zero-shot classification, or None.
        class_labels: modality -> each row's class index into ``classes`` (the labelled
            modalities other than the class prompts' own; see :meth:`with_classes`).
        classes_as_rows: the class prompts stand in for their modality's rows
            (:meth:`with_class_rows`).
        notes: remarks on the input that the report carries (a clip-retrieval folder's
            files that were not read, its missing partitions).
        label_reader: modality -> its labels as stored, one a row, for the labelled
            modalities that ``label_values`` lacks, or None: a store's names are decoded
            only when class prompts need them (:meth:`with_classes`).
    """

    embeddings: dict[str, Any]
    groups: dict[str, np.ndarray]
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    normalized: dict[str, bool | None] = field(default_factory=dict)
    source: str = "<arrays>"
    model: dict[str, Any] | None = None
    known_fingerprint: str | None = None
    label_values: dict[str, np.ndarray] = field(default_factory=dict)
    classes: ClassPrompts | None = None
    class_labels: dict[str, np.ndarray] = field(default_factory=dict)
    classes_as_rows: bool = False
    notes: tuple[str, ...] = ()
    label_reader: Callable[[str], np.ndarray] | None = field(
        default=None, repr=False, compare=False
    )

    def with_classes(self, classes: ClassPrompts | None) -> EmbeddingSet:
        """This set with ``classes`` as its zero-shot class prompts (``None``: none), and the
        class index of every row of each labelled modality other than ``classes.modality``.

        Raises:
            GapscopeError: a label that is not a class (see
                :func:`~gapscope.data.class_prompts.class_indices`).
            EmbeddingError: class prompts of another dimension than the embeddings.
        """
        class_labels: dict[str, np.ndarray] = {}
        label_values = dict(self.label_values)
        if classes is not None:
            self._check_class_dim(classes)
            for m in self.modalities:
                if m == classes.modality:
                    continue
                if m not in label_values and m in self.labels and self.label_reader is not None:
                    label_values[m] = self.label_reader(m)
                if m in label_values:
                    values = label_values[m]
                    rows = self.embeddings[m].shape[0]
                    if np.shape(values) != (rows,):
                        raise EmbeddingError(
                            f"{m} labels: expected {rows} values (one a row), got shape "
                            f"{np.shape(values)}"
                        )
                    class_labels[m] = class_indices(values, classes, f"{m} labels")
        return replace(self, classes=classes, class_labels=class_labels, label_values=label_values)

    def _check_class_dim(self, classes: ClassPrompts) -> None:
        """Refuse class prompts whose width is not the embeddings': checked here, before any
        labels are read, because the analysis only compares them when a modality has labels to
        classify, and would otherwise drop prompts of another model without a word."""
        # The prompts' own modality when present (they stand for its rows); otherwise the rows
        # they are compared with. Modalities of differing widths are the analysis's error.
        names = [classes.modality] if classes.modality in self.embeddings else self.modalities
        for m in names:
            shape = tuple(getattr(self.embeddings[m], "shape", ()))
            if len(shape) == 2 and shape[1] != classes.dim:
                raise EmbeddingError(
                    f"classes: dim {classes.dim} differs from the embeddings' {shape[1]}: "
                    "the class prompts must come from the same model"
                )

    def with_class_rows(self) -> EmbeddingSet:
        """The set analysed when it holds one labelled modality and class prompts of another
        (images of a classification dataset, no captions): the prompts become that other
        modality's rows (one a class, unit rows) and each row pairs with its class's prompt
        (the groups are class indices), so every pair metric compares the rows with their
        classes' prompts. Any other set is returned as it is."""
        classes = self.classes
        if (
            classes is None
            or classes.modality in self.embeddings
            or len(self.embeddings) != 1
            or not self.class_labels
        ):
            return self
        (m,) = self.embeddings
        c = classes.modality
        return replace(
            self,
            embeddings={m: self.embeddings[m], c: classes.embeddings.astype(np.float32)},
            groups={m: self.class_labels[m], c: np.arange(classes.n_classes, dtype=np.int64)},
            normalized={**self.normalized, c: None},
            source=f"{self.source} (+ {classes.n_classes} class prompts as {c})",
            known_fingerprint=None,
            classes_as_rows=True,
        )

    @property
    def modalities(self) -> list[str]:
        """Modalities in a fixed order: image, text, audio, then other names alphabetically
        (so the pairs, and the report, do not depend on the order they were given in)."""
        known = [m for m in MODALITIES if m in self.embeddings]
        return known + sorted(m for m in self.embeddings if m not in MODALITIES)

    def fingerprint(self) -> str:
        """sha256 of the embeddings (:func:`~gapscope.data.store.fingerprint_arrays`); a
        store's cached value when the rows came from one."""
        if self.known_fingerprint is not None:
            return self.known_fingerprint
        return fingerprint_arrays({m: _host_rows(self.embeddings[m]) for m in self.modalities})

    @classmethod
    def from_store(
        cls, store: EmbeddingStore | str | os.PathLike[str], *, verify: bool = False
    ) -> EmbeddingSet:
        """Read an :class:`~gapscope.data.store.EmbeddingStore` (opened and validated if a
        path), with its fingerprint (cached, or with ``verify`` hashed again and checked:
        :meth:`~gapscope.data.store.EmbeddingStore.fingerprint`). A path to a clip-retrieval
        output folder is read as it is (:meth:`from_clip_retrieval`)."""
        if not isinstance(store, EmbeddingStore):
            if is_clip_retrieval_folder(store):
                return cls.from_clip_retrieval(store)
            store = EmbeddingStore.open(store)
        labels = {}
        for m in store.modalities:
            lab = store.labels(m)
            if lab is not None:
                labels[m] = lab
        classes = read_store_classes(store.path, store.encoder)
        data = cls(
            embeddings={m: store.embeddings(m) for m in store.modalities},
            groups={m: store.groups(m) for m in store.modalities},
            labels=labels,
            normalized={m: store.info(m).get("normalized") for m in store.modalities},
            source=str(store.path),
            model=store.encoder,
            known_fingerprint=store.fingerprint(verify=verify),
            # Decoded only when class prompts need the names (the store's own, or ones given
            # later to with_classes): the codes above serve every other metric.
            label_reader=partial(_store_label_values, store, codes=labels),
        )
        return data.with_classes(classes)

    @classmethod
    def from_arrays(
        cls,
        embeddings: Mapping[str, Any],
        *,
        groups: Mapping[str, Any] | None = None,
        labels: Any | None = None,
        source: str = "<arrays>",
        classes: ClassPrompts | None = None,
    ) -> EmbeddingSet:
        """Plain arrays of two or more modalities (any lowercase identifiers: ``image``,
        ``text``, ``video``, ``depth``, ...).

        Without ``groups``, row i of every modality pairs with row i of the others, so the row
        counts must agree. ``groups`` (one array a modality, one value a row, any hashable
        values) pairs rows with equal values instead: five captions an image are five text
        rows with their image's group. ``labels`` (the ground truth of intra-modal
        retrieval) is one array shared by every modality when the rows pair one to one, or
        one array a modality; label values are shared across modalities. ``classes`` are the
        class prompts of zero-shot classification (:meth:`with_classes`): the labels of the
        other modalities are then class names or class indices.

        Raises:
            GapscopeError: a bad modality name, fewer than two modalities, groups for some
                modalities only.
            EmbeddingError: row counts that differ without groups, groups or labels that are
                not one value a row.
        """
        for m in embeddings:
            check_modality_name(m)
        arrays = {m: _as_array(embeddings[m], m) for m in embeddings}
        if len(arrays) < 2 and classes is None:
            raise GapscopeError("need at least two modalities (e.g. image and text) to compare")
        rows = {m: a.shape[0] for m, a in arrays.items()}
        if groups is not None:
            missing = sorted(set(arrays) - set(groups)) or sorted(set(groups) - set(arrays))
            if missing:
                raise GapscopeError(
                    f"groups: give them for every modality or none ({missing[0]!r} differs)"
                )
            shared: dict[Any, int] = {}
            codes = {
                m: encode_labels(groups[m], rows[m], what=f"{m} groups", codes=shared)
                for m in arrays
            }
        elif len(set(rows.values())) > 1:
            counts = ", ".join(f"{m} has {n}" for m, n in rows.items())
            raise EmbeddingError(
                f"row counts differ ({counts}): plain arrays pair row i with row i, so every "
                "modality needs the same number of rows (or give groups)"
            )
        else:
            codes = {m: np.arange(n, dtype=np.int64) for m, n in rows.items()}
        label_codes: dict[str, np.ndarray] = {}
        label_values: dict[str, np.ndarray] = {}
        if isinstance(labels, Mapping):
            names: dict[Any, int] = {}
            for m, values in labels.items():
                if m not in arrays:
                    raise GapscopeError(f"labels: no modality {m!r} to label")
                label_codes[m] = encode_labels(values, rows[m], what=f"{m} labels", codes=names)
                label_values[m] = _label_array(values)
        elif labels is not None:
            if len(set(rows.values())) > 1:
                raise GapscopeError(
                    "labels: the modalities have different row counts; give labels a modality"
                )
            shared_labels = encode_labels(labels, next(iter(rows.values())))
            label_codes = {m: shared_labels for m in arrays}
            label_values = {m: _label_array(labels) for m in arrays}
        data = cls(
            embeddings=arrays,
            groups=codes,
            labels=label_codes,
            normalized={m: None for m in arrays},
            source=source,
            label_values=label_values,
        )
        return data.with_classes(classes)

    @classmethod
    def from_clip_retrieval(cls, path: str | os.PathLike[str]) -> EmbeddingSet:
        """Read a clip-retrieval output folder (``img_emb/``, ``text_emb/``, ``metadata/``;
        see :mod:`gapscope.data.clip_retrieval`): row r of a partition's image and text parts
        is one sample, so they pair row by row. The partitions are read into memory when
        there are several (``gapscope import`` writes a store that is memory-mapped)."""
        folder = read_folder(path)
        n = sum(folder.rows)
        return cls(
            embeddings={m: folder.embeddings(m) for m in folder.modalities},
            groups={m: np.arange(n, dtype=np.int64) for m in folder.modalities},
            normalized={m: None for m in folder.modalities},
            source=str(folder.path),
            notes=tuple(folder_notes(folder)),
        )

    @classmethod
    def from_files(
        cls,
        files: Mapping[str, str | os.PathLike[str]],
        *,
        labels: str | os.PathLike[str] | Mapping[str, str | os.PathLike[str]] | None = None,
        groups: Mapping[str, str | os.PathLike[str]] | None = None,
        classes: ClassPrompts | None = None,
    ) -> EmbeddingSet:
        """Load plain arrays from ``.npy`` (memory-mapped), ``.pt``, ``.safetensors`` or a
        Parquet column (``FILE.parquet:COLUMN``, a list or fixed-size-list column), with
        optional ``groups`` and ``labels`` files (one per modality; labels may also be one
        file shared by every modality): see :meth:`from_arrays`."""
        if groups is not None and set(groups) != set(files):
            odd = sorted(set(groups) ^ set(files))[0]
            raise GapscopeError(f"groups: give them for every modality or none ({odd!r} differs)")
        arrays = {m: load_array(path, m) for m, path in files.items() if path is not None}
        label_values: Any = None
        if isinstance(labels, Mapping):
            label_values = {
                m: load_array(p, f"{m} labels", allow_1d=True) for m, p in labels.items()
            }
        elif labels is not None:
            label_values = load_array(labels, "labels", allow_1d=True)
        group_values = None
        if groups is not None:
            group_values = {
                m: load_array(p, f"{m} groups", allow_1d=True) for m, p in groups.items()
            }
        names = [m for m in MODALITIES if m in files] + sorted(set(files) - set(MODALITIES))
        source = " ".join(f"{m}={files[m]}" for m in names if files.get(m) is not None)
        return cls.from_arrays(
            arrays, groups=group_values, labels=label_values, source=source, classes=classes
        )


def _as_array(value: Any, name: str) -> Any:
    if isinstance(value, torch.Tensor):
        # Kept as it is (bfloat16, on its GPU): the similarity products read it there.
        return value.detach()
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(value)
    except (TypeError, ValueError):
        raise EmbeddingError(f"{name}: cannot read {type(value).__name__} as an array") from None


def _store_label_values(
    store: EmbeddingStore, modality: str, *, codes: Mapping[str, np.ndarray]
) -> np.ndarray:
    """Each row of ``modality``'s label as stored (a class name or number), from its label
    ``codes``, decoding only one row a distinct label: format 2 keeps the codes beside the
    columns."""
    distinct, first = np.unique(codes[modality], return_index=True)
    if store.format_version >= 2:
        column = store.item_columns(modality).column("label")
        assert column is not None
        names = [column[int(row)] for row in first]
    else:
        items = store.items(modality)
        names = [items[int(row)]["label"] for row in first]
    return np.array(names)[np.searchsorted(distinct, codes[modality])]


def _label_array(values: Any) -> np.ndarray:
    """Labels as given, as a 1-D numpy array (a tensor copied to the host)."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _host_rows(rows: Any) -> np.ndarray:
    """``rows`` as a numpy array on the host; bfloat16 widened (exactly) to float32, as
    :func:`~gapscope.engine.validation.check_embeddings` does, so a bfloat16 tensor and its
    float32 copy have one fingerprint."""
    if isinstance(rows, torch.Tensor):
        rows = rows.detach().cpu()
        return (rows.float() if rows.dtype == torch.bfloat16 else rows).numpy()
    return np.asarray(rows)


def encode_labels(
    labels: Any, n: int, *, what: str = "labels", codes: dict[Any, int] | None = None
) -> np.ndarray:
    """Turn per-row labels (or groups) of any hashable type into int64 codes, in order of
    first appearance; ``codes`` carries the assignment over from another modality, so equal
    values of two modalities get equal codes.

    Raises:
        EmbeddingError: not one value a row, a NaN value (NaN equals nothing, not even
            itself, so it would make a class a row) or an unhashable one.

    >>> encode_labels(["cat", "dog", "cat"], 3).tolist()
    [0, 1, 0]
    """
    values = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else labels
    values = np.asarray(values)
    if values.ndim != 1 or values.shape[0] != n:
        raise EmbeddingError(f"{what}: expected {n} values (one a row), got shape {values.shape}")
    if values.dtype.kind in "fc" and not np.isfinite(values).all():
        row = int(np.flatnonzero(~np.isfinite(values))[0])
        raise EmbeddingError(f"{what}: row {row} is {values[row]}; values must be finite")
    codes = {} if codes is None else codes
    out = np.empty(n, dtype=np.int64)
    for row, v in enumerate(values):
        try:
            out[row] = codes.setdefault(v.item() if hasattr(v, "item") else v, len(codes))
        except TypeError:
            raise EmbeddingError(
                f"{what}: row {row} holds a {type(v).__name__}, which cannot be a class label"
            ) from None
    return out


def load_array(path: str | os.PathLike[str], name: str, *, allow_1d: bool = False) -> Any:
    """Load one array from ``.npy``, ``.pt``/``.pth`` (a tensor or a one-tensor dict) or
    ``.safetensors`` (one tensor, or the one named like the modality).

    Nothing is ever unpickled: ``.npy`` files are read with ``allow_pickle=False`` and a
    Python-object array is refused (string labels work as a numpy unicode array,
    ``np.array(labels, dtype=str)``, which needs no pickle), ``.pt`` files with
    ``weights_only=True``. ``allow_1d`` (labels) reads the whole array instead of mapping it
    and accepts one value a row.

    ``path`` may be an fsspec URL (``s3://``, ``gs://``, ``hf://``, ``memory://``; the
    ``remote`` extra): the file is read into memory (:mod:`gapscope.data.remote`); a
    ``file://`` URL is the local file, memory-mapped as usual.

    Raises:
        GapscopeError: a missing file, an unknown suffix, an unreadable or object array, or
            (``EmbeddingError``) an array that is not ``(rows, dim)``.
    """
    if remote.is_url(path):
        local = remote.local_path(str(path))
        if local is None:
            return _load_remote_array(str(path), name, allow_1d)
        path = local
    path, column = _parquet_column(path)
    if path.is_dir():
        raise GapscopeError(f"{name}: {path} is a folder; give the path of an array file")
    if not path.is_file():
        raise GapscopeError(f"{name}: no such file {path}")
    suffix = path.suffix.lower()
    try:
        if column is not None:
            arr = _read_parquet_column(path, column, name, allow_1d)
        elif suffix == ".parquet":
            raise GapscopeError(f"{name}: name the column of {path} to read, as {path}:COLUMN")
        elif suffix == ".npy":
            _refuse_object_npy(path, name)
            arr = np.load(path, mmap_mode=None if allow_1d else "r", allow_pickle=False)
        elif suffix in (".pt", ".pth"):
            arr = _pick(load_weights_only(path), name, path)
        elif suffix == ".safetensors":
            require("safetensors", "reading .safetensors files")
            from safetensors.numpy import load_file

            arr = _pick(load_file(str(path)), name, path)
        else:
            raise GapscopeError(
                f"{name}: {path} has an unknown suffix; use one of {', '.join(ARRAY_SUFFIXES)}"
            )
    except GapscopeError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is bad input here
        raise GapscopeError(f"{name}: cannot read {path} ({load_failure(exc)})") from None
    return _as_loaded(arr, name, path, allow_1d)


def _as_loaded(arr: Any, name: str, path: Any, allow_1d: bool) -> Any:
    """A loaded array as numpy (bfloat16 widened), checked to be ``(rows, dim)`` unless
    ``allow_1d``."""
    if isinstance(arr, torch.Tensor):
        if arr.dtype == torch.bfloat16:
            arr = arr.float()
        arr = arr.numpy()
    if not allow_1d and getattr(arr, "ndim", 0) != 2:
        raise EmbeddingError(f"{name}: {path} holds shape {arr.shape}; expected (rows, dim)")
    return arr


def _load_remote_array(url: str, name: str, allow_1d: bool) -> Any:
    """:func:`load_array` of a file at a URL, read whole into memory."""
    head, sep, column = url.rpartition(":")
    is_column = bool(sep and column and head.lower().endswith(".parquet"))
    target, col = (head, column) if is_column else (url, None)
    payload = remote.read_bytes(target, name)
    suffix = PurePosixPath(target.split("://", 1)[1]).suffix.lower()
    source = io.BytesIO(payload)
    try:
        if col is not None:
            arr = _read_parquet_column(source, col, name, allow_1d, where=target)
        elif suffix == ".parquet":
            raise GapscopeError(f"{name}: name the column of {target} to read, as {target}:COLUMN")
        elif suffix == ".npy":
            _refuse_object_header(source, target, name)
            source.seek(0)
            arr = np.load(source, allow_pickle=False)
        elif suffix in (".pt", ".pth"):
            arr = _pick(load_weights_only(source), name, target)
        elif suffix == ".safetensors":
            require("safetensors", "reading .safetensors files")
            from safetensors.numpy import load

            arr = _pick(load(payload), name, target)
        else:
            raise GapscopeError(
                f"{name}: {target} has an unknown suffix; use one of {', '.join(ARRAY_SUFFIXES)}"
            )
    except GapscopeError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is bad input here
        raise GapscopeError(f"{name}: cannot read {target} ({load_failure(exc)})") from None
    return _as_loaded(arr, name, target, allow_1d)


def _parquet_column(path: str | os.PathLike[str]) -> tuple[Path, str | None]:
    """``FILE.parquet:COLUMN`` -> ``(FILE.parquet, COLUMN)``; any other path -> ``(path,
    None)``.

    >>> _parquet_column("emb.parquet:image_embedding")
    (PosixPath('emb.parquet'), 'image_embedding')
    """
    text = os.fspath(path)
    head, sep, column = text.rpartition(":")
    if sep and column and head.lower().endswith(".parquet"):
        return Path(head), column
    return Path(text), None


def _read_parquet_column(
    source: Any, column: str, name: str, allow_1d: bool, *, where: Any = None
) -> np.ndarray:
    """One column of a Parquet table: a list (or fixed-size list) column of equal-length
    float lists as ``(rows, dim)``, or with ``allow_1d`` (labels, groups) a column of one
    scalar a row, where lists and other nested values are refused. ``source`` is a path or a
    binary file object (``where`` then names it)."""
    path = source if where is None else where
    require("pyarrow", "reading Parquet columns", extra="parquet")
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = pq.ParquetFile(source).schema_arrow.names
    if column not in names:
        raise GapscopeError(f"{name}: {path} has no column {column!r} (it has {', '.join(names)})")
    if hasattr(source, "seek"):
        source.seek(0)
    values = pq.read_table(source, columns=[column]).column(column).combine_chunks()
    if values.null_count:
        raise EmbeddingError(f"{name}: column {column!r} of {path} has {values.null_count} nulls")
    if allow_1d and pa.types.is_nested(values.type):
        # Labels and groups are one value a row; read as an embedding matrix, a list column
        # would be refused for not holding floats, or leave a (rows, 1) matrix.
        raise EmbeddingError(
            f"{name}: column {column!r} of {path} holds {values.type}; it must hold one "
            "scalar (an int or a string) a row"
        )
    if (
        pa.types.is_list(values.type)
        or pa.types.is_large_list(values.type)
        or (pa.types.is_fixed_size_list(values.type))
    ):
        lengths = np.asarray(pa.compute.list_value_length(values).to_numpy(zero_copy_only=False))
        if lengths.size and (lengths != lengths[0]).any():
            row = int(np.flatnonzero(lengths != lengths[0])[0])
            raise EmbeddingError(
                f"{name}: column {column!r} of {path}: row {row} has {lengths[row]} values, "
                f"row 0 has {lengths[0]}"
            )
        flat = values.flatten()
        if not pa.types.is_floating(flat.type):
            raise EmbeddingError(
                f"{name}: column {column!r} of {path} holds lists of {flat.type}, not floats"
            )
        dim = int(lengths[0]) if lengths.size else 0
        return np.asarray(flat.to_numpy(zero_copy_only=False)).reshape(len(values), dim)
    if not allow_1d:
        raise EmbeddingError(
            f"{name}: column {column!r} of {path} holds {values.type}, not lists of floats"
        )
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        return np.array(values.to_pylist(), dtype=str)
    return np.asarray(values.to_numpy(zero_copy_only=False))


def _refuse_object_npy(path: Path, name: str) -> None:
    """Refuse, by its first bytes, an ``.npy`` file that is not one or that holds Python
    objects, before reading any data (numpy calls anything without its header "pickled")."""
    with open(path, "rb") as fh:
        _refuse_object_header(fh, path, name)


def _refuse_object_header(fh: Any, path: Any, name: str) -> None:
    """:func:`_refuse_object_npy` on an open binary file ``fh`` (``path`` names it)."""
    if fh.read(6) != b"\x93NUMPY":
        fh.seek(0)
        head = fh.read(1)
        what = "a pickle, which gapscope never loads" if head == b"\x80" else "not a .npy file"
        raise GapscopeError(f"{name}: {path} is {what} (no NumPy header)")
    fh.seek(0)
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            _, _, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            _, _, dtype = np.lib.format.read_array_header_2_0(fh)
        else:  # a newer format: np.load(allow_pickle=False) refuses objects in it too
            return
    except ValueError as exc:
        raise GapscopeError(f"{name}: cannot read {path} ({load_failure(exc)})") from None
    if dtype.hasobject:
        raise GapscopeError(
            f"{name}: {path} holds Python objects (dtype {dtype}), which only pickle can read, "
            "and gapscope never unpickles input files; save numbers, or strings as a unicode "
            "array (np.save(path, np.array(values, dtype=str)))"
        )


def load_weights_only(path: str | Path | io.BytesIO) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, without torch's warnings: its
    warning about a file's pickle protocol would put a second line beside the one-line error
    that a refused file gets."""
    with quiet_weights_only():
        return torch.load(path, map_location="cpu", weights_only=True)


@contextmanager
def quiet_weights_only() -> Iterator[None]:
    """Hide torch's ``UserWarning`` about a checkpoint's pickle protocol (the weights-only
    reader is used either way, and refuses what it cannot read) while loading weights."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
        yield


def load_failure(exc: BaseException) -> str:
    """A short reason for a file that torch, numpy or safetensors could not read.

    torch's weights-only refusal is a long paragraph that suggests loading the file unsafely;
    only its reason is kept.
    """
    text = " ".join(str(exc).split())
    if text.startswith("Weights only load failed"):
        detail = text.split(" Check the documentation", 1)[0]
        for boilerplate in ("from a trusted source.", "compatible with your use case:"):
            detail = detail.split(boilerplate, 1)[-1]
        detail = detail.replace("WeightsUnpickler error:", "").strip().rstrip(".")
        return (
            f"{detail or 'refused'}: corrupt, or it holds objects that only a full unpickle "
            "would load, which gapscope never does"
        )
    if "PytorchStreamReader" in text:  # not a zip archive: the rest is advice on corruption
        return text.split(". ", 1)[0]
    if "pickled" in text or "allow_pickle" in text:  # numpy suggests loading it unsafely
        return "it holds pickled Python objects, which gapscope never loads"
    if not text:
        return type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _pick(obj: Any, name: str, path: str | Path) -> Any:
    if isinstance(obj, torch.Tensor | np.ndarray):
        return obj
    if isinstance(obj, Mapping):
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor | np.ndarray)}
        if name in tensors:
            return tensors[name]
        if len(tensors) == 1:
            return next(iter(tensors.values()))
        raise GapscopeError(
            f"{name}: {path} holds {len(tensors)} tensors ({', '.join(sorted(tensors))}); "
            f"name one of them {name!r} or save a single tensor"
        )
    raise GapscopeError(f"{name}: {path} holds a {type(obj).__name__}, not a tensor")


def open_source(
    store: str | os.PathLike[str] | None,
    files: Mapping[str, str | os.PathLike[str] | None],
    labels: str | os.PathLike[str] | Sequence[str] | None = None,
    *,
    verify: bool = False,
    groups: Sequence[str] | None = None,
    classes: ClassPrompts | None = None,
) -> EmbeddingSet:
    """The :class:`EmbeddingSet` of a store folder, or of plain array files by modality.

    This is what the commands' ``STORE`` / ``--image --text --audio --modality NAME=PATH
    --groups NAME=PATH --labels`` options mean: a store or arrays, not both; ``labels`` (a
    path shared by every modality, or ``NAME=PATH`` specs) and ``groups`` (``NAME=PATH``
    specs, for every modality or none) only go with arrays. ``verify`` re-hashes a store's
    embeddings against the fingerprint cached in its manifest.
    """
    given = {m: p for m, p in files.items() if p is not None}
    if store is not None and given:
        raise GapscopeError("give either a store or arrays (--image/--text/--modality), not both")
    if store is None and not given:
        raise GapscopeError(
            "give a store folder, or at least two modalities (--image, --text, --audio, "
            "--modality NAME=PATH)"
        )
    if store is not None and (labels or groups):
        option = "--labels" if labels else "--groups"
        raise GapscopeError(f"{option} is for plain arrays; a store keeps them in its items")
    if store is not None:
        data = EmbeddingSet.from_store(store, verify=verify)
        return data if classes is None else data.with_classes(classes)
    label_spec: Any = labels
    if labels is not None and not isinstance(labels, str | os.PathLike):
        specs = list(labels)
        named = [s for s in specs if "=" in s]
        if named and len(named) < len(specs):
            raise GapscopeError("--labels: give one PATH for every modality, or NAME=PATH each")
        if not named and len(specs) > 1:
            raise GapscopeError("--labels: one PATH is shared by every modality; give it once")
        label_spec = named_paths(specs, "--labels") if named else (specs[0] if specs else None)
    group_spec = named_paths(list(groups), "--groups") if groups else None
    return EmbeddingSet.from_files(given, labels=label_spec, groups=group_spec, classes=classes)


def named_paths(specs: Sequence[str], option: str) -> dict[str, str]:
    """``["video=v.npy", "text=t.npy"]`` -> ``{"video": "v.npy", "text": "t.npy"}``.

    Raises:
        GapscopeError: a spec without ``=``, a bad modality name, or a name given twice.

    >>> named_paths(["video=v.npy"], "--modality")
    {'video': 'v.npy'}
    """
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not path:
            raise GapscopeError(f"{option}: expected NAME=PATH, got {spec!r}")
        check_modality_name(name)
        if name in out:
            raise GapscopeError(f"{option}: {name} given twice")
        out[name] = path
    return out
