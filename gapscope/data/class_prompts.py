"""Class prompts: one embedding a class, the text side of zero-shot classification.

A zero-shot classifier of a contrastive model is one text embedding a class (Radford et al.
2021, "Learning Transferable Visual Models From Natural Language Supervision", Sec. 3.1.2;
its prompt ensembling, Sec. 3.1.4):
each template (``"a photo of a {}."``) is filled with the class name and encoded by the text
tower, every prompt embedding is L2-normalised, the prompts of a class are averaged and the
mean is L2-normalised again (:func:`ensemble_prompts`; CLIP's prompt ensembling, as in
CLIP_benchmark's ``zero_shot_classifier``). :class:`ClassPrompts` holds those class
embeddings, the class names and the modality whose tower encoded them (``text``).

In a store the class prompts are two files beside the embeddings (written by
``gapscope extract --classes``)::

    classes.npy     (C, d) float32, the ensembled class embeddings, unit rows
    classes.json    {"format": "gapscope.classes", "format_version": 1, "modality": "text",
                     "names": [...], "templates": [...], "encoder": {...}}

``encoder`` is the store's encoder description when the prompts were encoded: prompts that
another model encoded are refused when the store is read (:func:`read_store_classes`).

Which class a labelled row belongs to (:func:`class_indices`): its label is a class name, or
(when the labels are integers and not names) the class's index.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gapscope.data import remote
from gapscope.data.atomic import atomic_save_npy, atomic_write_json
from gapscope.errors import EmbeddingError, GapscopeError, MissingDependencyError, StoreError

__all__ = [
    "CLASSES_JSON",
    "CLASSES_NPY",
    "ClassPrompts",
    "class_indices",
    "ensemble_prompts",
    "load_class_prompts",
    "read_class_names",
    "read_store_classes",
    "write_store_classes",
]

CLASSES_NPY = "classes.npy"
CLASSES_JSON = "classes.json"
FORMAT = "gapscope.classes"
FORMAT_VERSION = 1
# A row shorter than this has no direction (as the analysis's unit rows).
_MIN_NORM = 1e-12


@dataclass(frozen=True)
class ClassPrompts:
    """The class embeddings of a zero-shot classifier.

    Attributes:
        embeddings: ``(C, d)`` float64, one row a class (normalised again wherever used).
        names: the class names, in row order, or ``None`` (then labels are class indices).
        modality: the modality whose encoder made them (``text``): the side of a pair they
            stand for, which the gap what-ifs move with that modality.
        templates: the prompt templates that were ensembled, when known.

    Raises:
        EmbeddingError: not ``(C, d)`` with ``C >= 2``, a non-finite value, a zero row.
        GapscopeError: names that are not one a class, or a name given twice.
    """

    embeddings: np.ndarray
    names: tuple[str, ...] | None = None
    modality: str = "text"
    templates: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        rows = np.asarray(self.embeddings, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[0] < 2 or rows.shape[1] < 1:
            raise EmbeddingError(
                f"classes: expected (classes, dim) with at least 2 classes, got shape {rows.shape}"
            )
        if not np.isfinite(rows).all():
            row = int(np.flatnonzero(~np.isfinite(rows).all(axis=1))[0])
            raise EmbeddingError(f"classes: row {row} holds a non-finite value")
        norms = np.linalg.norm(rows, axis=1)
        if (norms < _MIN_NORM).any():
            raise EmbeddingError(f"classes: row {int(np.argmin(norms))} is zero (no direction)")
        object.__setattr__(self, "embeddings", rows)
        if self.names is not None:
            names = tuple(str(n) for n in self.names)
            if len(names) != rows.shape[0]:
                raise GapscopeError(
                    f"class names: {len(names)} names for {rows.shape[0]} class embeddings"
                )
            seen: set[str] = set()
            for name in names:
                if name in seen:
                    raise GapscopeError(f"class names: {name!r} is given twice")
                seen.add(name)
            object.__setattr__(self, "names", names)
        if self.templates is not None:
            object.__setattr__(self, "templates", tuple(str(t) for t in self.templates))

    @property
    def n_classes(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])


def ensemble_prompts(prompts: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """CLIP's prompt ensembling: one unit embedding a class from its prompts' embeddings.

    ``w_c = m_c / ||m_c||`` with ``m_c = (1/T_c) sum_t p_ct / ||p_ct||``, the ``p_ct`` the
    embeddings of class ``c``'s ``T_c`` prompts (Radford et al. 2021; CLIP_benchmark's
    ``zero_shot_classifier``).

    Args:
        prompts: ``(C, T, d)``, or a sequence of ``(T_c, d)`` arrays (one a class).

    Returns:
        ``(C, d)`` float64 unit rows.

    Raises:
        EmbeddingError: a class without prompts, a zero or non-finite prompt, or prompts whose
            mean is zero.

    Example:
        >>> ensemble_prompts([np.array([[2.0, 0.0], [0.0, 1.0]])]).round(4).tolist()
        [[0.7071, 0.7071]]
    """
    out = []
    for c, block in enumerate(prompts):
        rows = np.asarray(block, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[0] == 0:
            raise EmbeddingError(f"class {c}: expected (prompts, dim), got shape {rows.shape}")
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        if not np.isfinite(rows).all() or (norms < _MIN_NORM).any():
            raise EmbeddingError(f"class {c}: a prompt embedding is zero or not finite")
        mean = (rows / norms).mean(axis=0)
        length = float(np.linalg.norm(mean))
        if length < _MIN_NORM:
            raise EmbeddingError(f"class {c}: its prompt embeddings cancel out (zero mean)")
        out.append(mean / length)
    if not out:
        raise EmbeddingError("classes: no class to ensemble")
    return np.stack(out)


def class_indices(values: Any, prompts: ClassPrompts, what: str = "labels") -> np.ndarray:
    """The class index of each labelled row (int64).

    Labels are class names when every label is one of ``prompts.names``; otherwise integer
    labels are class indices, ``0 .. C-1``.

    Raises:
        GapscopeError: a label that is neither a class name nor (integer labels) a class
            index; the message names the first such row.

    Example:
        >>> p = ClassPrompts(np.eye(3), names=("cat", "dog", "fox"))
        >>> class_indices(np.array(["fox", "cat"]), p).tolist(), class_indices([2, 0], p).tolist()
        ([2, 0], [2, 0])
    """
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise GapscopeError(f"{what}: expected one label a row, got shape {arr.shape}")
    if arr.size == 0:
        raise GapscopeError(f"{what}: no labels")
    if prompts.names is not None:
        lookup = {name: i for i, name in enumerate(prompts.names)}
        as_text = [_label_text(v) for v in arr.tolist()]
        if all(t in lookup for t in as_text):
            return np.fromiter((lookup[t] for t in as_text), dtype=np.int64, count=len(as_text))
    integer = arr.dtype.kind in "iu" or (
        arr.dtype.kind == "f" and np.isfinite(arr).all() and (arr == np.round(arr)).all()
    )
    if not integer:
        if prompts.names is None:
            raise GapscopeError(
                f"{what}: the classes have no names, so labels must be class indices "
                f"0..{prompts.n_classes - 1}; row 0 is {arr.tolist()[0]!r}"
            )
        known = set(prompts.names)
        row = next(i for i, v in enumerate(arr.tolist()) if _label_text(v) not in known)
        shown = ", ".join(prompts.names[:5]) + (", ..." if prompts.n_classes > 5 else "")
        raise GapscopeError(
            f"{what}: row {row} is {arr.tolist()[row]!r}, which is not a class ({shown})"
        )
    # Checked in the labels' own type: a uint64 or float label beyond int64 would wrap.
    bad = np.flatnonzero((arr < 0) | (arr >= prompts.n_classes))
    if bad.size:
        row = int(bad[0])
        label = arr.tolist()[row]
        as_class = int(label) if isinstance(label, float) else label
        raise GapscopeError(
            f"{what}: row {row} is class {as_class}, outside 0..{prompts.n_classes - 1} "
            f"({prompts.n_classes} classes)"
        )
    return arr.astype(np.int64)


def _label_text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def read_class_names(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """Class names from a text file, one a line (blank lines and surrounding spaces dropped).

    Raises:
        GapscopeError: a missing or unreadable file, fewer than 2 names, a name given twice.
    """
    file = Path(path)
    if not file.is_file():
        raise GapscopeError(f"class names: no such file {file}")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GapscopeError(f"class names: cannot read {file} ({exc})") from None
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not names:
        raise GapscopeError(f"class names: {file} holds no names (one a line)")
    if len(names) < 2:
        raise GapscopeError(
            f"class names: {file} names one class ({names[0]!r}); zero-shot classification "
            "needs at least 2"
        )
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise GapscopeError(f"class names: {twice!r} is given twice in {file}")
    return names


def load_class_prompts(
    path: str | os.PathLike[str],
    names: str | os.PathLike[str] | Sequence[str] | None = None,
    *,
    modality: str = "text",
) -> ClassPrompts:
    """Class embeddings from a file (``.npy``, ``.pt``, ``.safetensors`` or
    ``FILE.parquet:COLUMN``, one row a class, already ensembled), with the class names from a
    text file (one a line) or a sequence, or none (labels are then class indices).

    Raises:
        GapscopeError: an unreadable file, a bad shape, names that do not fit.
    """
    from gapscope.data.embedding_set import load_array

    rows = np.asarray(load_array(path, "classes"), dtype=np.float64)
    if isinstance(names, str | os.PathLike):
        names = read_class_names(names)
    return ClassPrompts(rows, None if names is None else tuple(names), modality)


def write_store_classes(
    folder: str | os.PathLike[str],
    prompts: ClassPrompts,
    encoder: Mapping[str, Any] | None,
) -> bool:
    """Write ``classes.npy`` and ``classes.json`` into a store folder (atomically each; the
    JSON last, so a reader never sees names without their embeddings). Files that already
    hold exactly these prompts are left untouched; returns whether anything was written."""
    path = Path(folder)
    rows = prompts.embeddings.astype(np.float32)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "modality": prompts.modality,
        "names": None if prompts.names is None else list(prompts.names),
        "templates": None if prompts.templates is None else list(prompts.templates),
        "encoder": None if encoder is None else json.loads(json.dumps(dict(encoder))),
    }
    if _holds(path, rows, meta):
        return False
    atomic_save_npy(path / CLASSES_NPY, rows)
    atomic_write_json(path / CLASSES_JSON, meta)
    return True


def _holds(path: Path, rows: np.ndarray, meta: dict[str, Any]) -> bool:
    """Whether the store's class files already hold ``rows`` and ``meta``."""
    try:
        old_meta = json.loads((path / CLASSES_JSON).read_text(encoding="utf-8"))
        old_rows = np.load(path / CLASSES_NPY, allow_pickle=False)
    except (OSError, ValueError):
        return False
    return bool(
        old_meta == meta and old_rows.dtype == rows.dtype and np.array_equal(old_rows, rows)
    )


def _read_if_there(path: Path | remote.UrlPath) -> bytes | None:
    """The bytes of a store's file, local or at a URL; ``None`` when there is no such file."""
    if isinstance(path, remote.UrlPath):
        try:
            return remote.read_bytes(str(path))
        except MissingDependencyError:
            raise
        except GapscopeError:
            # read_bytes says "no such file" (and other failures) the same way: tell them
            # apart by asking the filesystem.
            fs, inner = remote.filesystem(str(path))
            if not fs.exists(inner):
                return None
            raise
    if not path.is_file():
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise StoreError(f"{path}: cannot read ({exc})") from None


def read_store_classes(
    folder: str | os.PathLike[str] | remote.UrlPath, encoder: Mapping[str, Any] | None
) -> ClassPrompts | None:
    """The class prompts of a store folder (local, or a remote store's
    :class:`~gapscope.data.remote.UrlPath`), or ``None`` when it has none.

    Raises:
        StoreError: unreadable or inconsistent files, or prompts that another encoder made
            (``encoder`` is the store's own description).
    """
    path = folder if isinstance(folder, remote.UrlPath) else Path(folder)
    meta_path = path / CLASSES_JSON
    payload = _read_if_there(meta_path)
    if payload is None:
        return None
    try:
        meta = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"{meta_path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise StoreError(f"{meta_path}: not a gapscope classes file")
    if meta.get("format_version") != FORMAT_VERSION:
        raise StoreError(
            f"{meta_path}: unknown classes format version {meta.get('format_version')!r}"
        )
    if meta.get("encoder") != (None if encoder is None else dict(encoder)):
        raise StoreError(
            f"{meta_path}: the class prompts were encoded by another model than the store's "
            "embeddings; run the extract again with --classes"
        )
    npy = path / CLASSES_NPY
    data = _read_if_there(npy)
    if data is None:
        raise StoreError(f"{npy}: file is missing")
    try:
        rows = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise StoreError(f"{npy}: cannot read ({exc})") from None
    try:
        return ClassPrompts(
            rows,
            names=meta.get("names"),
            modality=str(meta.get("modality", "text")),
            templates=meta.get("templates"),
        )
    except GapscopeError as exc:
        raise StoreError(f"{path}: {exc}") from None
