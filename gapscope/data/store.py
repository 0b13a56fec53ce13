"""The embedding store: one folder, format version 1 (see docs/architecture.md, section 4).

```
manifest.json          format, versions, encoder, dataset, per-modality file/rows/dim/dtype
image.npy              raw encoder outputs, (N_image, d), float32 or float16, not normalised
image.items.jsonl      one JSON object a row: {"id", "source", "group", "label"?}
text.npy, text.items.jsonl, audio.npy, audio.items.jsonl
```

Every file is written atomically (temporary name in the same folder, fsync, rename), so a crash
never leaves a half-written file under a final name. Extraction appends rows in *parts*
(``parts/<modality>/<index>.npy`` and ``.items.jsonl``); a part exists only once complete, so
an interrupted extract resumes from the parts on disk, and :meth:`EmbeddingStore.finalize`
concatenates them into the documented files. A store whose manifest says ``"complete": false``
is refused by :meth:`EmbeddingStore.open` unless asked for explicitly.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gapscope._version import __version__
from gapscope.data.atomic import AtomicFile, atomic_save_npy, atomic_write_json
from gapscope.errors import StoreError

FORMAT = "gapscope.store"
FORMAT_VERSION = 1
MODALITIES = ("image", "text", "audio")
MANIFEST = "manifest.json"
_DTYPES = ("float16", "float32")
_PARTS = "parts"


def _write_jsonl(fh, items: Iterable[Mapping[str, Any]]) -> None:
    for item in items:
        fh.write(json.dumps(item, sort_keys=True, ensure_ascii=False))
        fh.write("\n")


# --------------------------------------------------------------------------- helpers


def fingerprint_arrays(arrays: Mapping[str, np.ndarray], chunk_rows: int = 65536) -> str:
    """sha256 over the modality names, shapes, dtypes and raw bytes of the arrays, in order.

    Reads memory-mapped arrays one slice at a time, so it is cheap in memory.
    """
    h = hashlib.sha256()
    for name in sorted(arrays, key=_modality_order):
        arr = arrays[name]
        h.update(f"{name}:{tuple(arr.shape)}:{np.dtype(arr.dtype).str}\n".encode())
        for start in range(0, arr.shape[0], chunk_rows):
            h.update(np.ascontiguousarray(arr[start : start + chunk_rows]).tobytes())
    return h.hexdigest()


def _modality_order(name: str) -> tuple[int, str]:
    return (MODALITIES.index(name), name) if name in MODALITIES else (len(MODALITIES), name)


def _check_modality(modality: str) -> None:
    if modality not in MODALITIES:
        raise StoreError(f"unknown modality {modality!r}: expected one of {', '.join(MODALITIES)}")


def _check_rows(modality: str, embeddings: np.ndarray, items: Sequence[Mapping[str, Any]]) -> None:
    if not isinstance(embeddings, np.ndarray) or embeddings.ndim != 2:
        shape = getattr(embeddings, "shape", None)
        raise StoreError(f"{modality}: embeddings must be a 2-D numpy array, got shape {shape}")
    if embeddings.dtype.name not in _DTYPES:
        raise StoreError(
            f"{modality}: embeddings must be float16 or float32, got {embeddings.dtype.name}"
        )
    if len(items) != embeddings.shape[0]:
        raise StoreError(f"{modality}: {embeddings.shape[0]} embedding rows but {len(items)} items")
    for i, item in enumerate(items):
        if "id" not in item or "group" not in item:
            raise StoreError(f"{modality}: item {i} needs an 'id' and a 'group', got {dict(item)}")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    items = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise StoreError(f"{path}: line {lineno} is not valid JSON ({exc.msg})") from None
    return items


def _load_npy(path: Path, mmap: bool) -> np.ndarray:
    if not path.is_file():
        raise StoreError(f"{path}: file is missing")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StoreError(f"{path}: truncated or not a valid .npy file ({reason})") from None


# --------------------------------------------------------------------------- the store


class EmbeddingStore:
    """An embedding store folder (format version 1).

    Create one with :meth:`create` (then :meth:`append` parts and :meth:`finalize`) or with
    :meth:`write` when all arrays are in memory; read one with :meth:`open`.

    >>> import tempfile, numpy as np
    >>> folder = Path(tempfile.mkdtemp()) / "demo"
    >>> emb = {"image": np.eye(2, 4, dtype=np.float32), "text": np.eye(2, 4, 1, dtype=np.float32)}
    >>> items = {m: [{"id": f"{m}{i}", "source": "", "group": i} for i in range(2)] for m in emb}
    >>> store = EmbeddingStore.write(folder, emb, items)
    >>> store = EmbeddingStore.open(folder)
    >>> store.modalities, store.embeddings("text").shape, store.groups("text").tolist()
    (['image', 'text'], (2, 4), [0, 1])
    """

    def __init__(self, path: Path, manifest: dict[str, Any], *, mmap: bool = True) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self._mmap = mmap
        self._items: dict[str, list[dict[str, Any]]] = {}
        self._codes: dict[str, dict[str, np.ndarray | None]] | None = None

    # ---------------------------------------------------------------- creating

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        encoder: Mapping[str, Any] | None = None,
        dataset: Mapping[str, Any] | None = None,
        overwrite: bool = False,
        **extra: Any,
    ) -> EmbeddingStore:
        """Start a new, empty, incomplete store at ``path``.

        ``path`` must not exist or be an empty folder, unless ``overwrite`` is true (then an
        existing store there is removed first; a non-store folder is never removed).
        ``extra`` keys are added to the manifest as they are.
        """
        path = Path(path)
        if path.exists():
            if not path.is_dir():
                raise StoreError(f"{path}: exists and is not a folder")
            if any(path.iterdir()):
                if not overwrite:
                    raise StoreError(
                        f"{path}: folder is not empty (pass overwrite to replace a store)"
                    )
                if not (path / MANIFEST).is_file():
                    raise StoreError(f"{path}: not an embedding store; refusing to overwrite it")
                shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "gapscope_version": __version__,
            "complete": False,
            "encoder": dict(encoder) if encoder is not None else None,
            "dataset": dict(dataset) if dataset is not None else None,
            "modalities": {},
            **extra,
        }
        atomic_write_json(path / MANIFEST, manifest)
        return cls(path, manifest)

    @classmethod
    def write(
        cls,
        path: str | os.PathLike[str],
        embeddings: Mapping[str, np.ndarray],
        items: Mapping[str, Sequence[Mapping[str, Any]]],
        *,
        encoder: Mapping[str, Any] | None = None,
        dataset: Mapping[str, Any] | None = None,
        normalized: Mapping[str, bool] | None = None,
        overwrite: bool = False,
        **extra: Any,
    ) -> EmbeddingStore:
        """Write a complete store from in-memory arrays and item lists, one modality each."""
        if set(embeddings) != set(items):
            raise StoreError("embeddings and items must name the same modalities")
        for modality in embeddings:
            _check_modality(modality)
            _check_rows(modality, embeddings[modality], items[modality])
        store = cls.create(path, encoder=encoder, dataset=dataset, overwrite=overwrite, **extra)
        for modality in sorted(embeddings, key=_modality_order):
            store.append(modality, embeddings[modality], items[modality])
        store.finalize(normalized=normalized)
        return cls.open(path)

    def _part_dir(self, modality: str) -> Path:
        return self.path / _PARTS / modality

    def _parts(self, modality: str) -> list[Path]:
        folder = self._part_dir(modality)
        if not folder.is_dir():
            return []
        parts = sorted(p for p in folder.glob("*.npy") if not p.name.startswith("."))
        for expected, part in enumerate(parts):
            if part.stem != f"{expected:08d}":
                raise StoreError(f"{part}: parts are not contiguous (expected {expected:08d}.npy)")
        return parts

    def append(
        self, modality: str, embeddings: np.ndarray, items: Sequence[Mapping[str, Any]]
    ) -> None:
        """Append rows of one modality as a new part (atomic: the part appears whole or not at all).

        The part's items are written first and its ``.npy`` last, so a part counts as written
        exactly when its ``.npy`` exists.
        """
        if self.complete:
            raise StoreError(
                f"{self.path}: store is already finalised; create a new one to add rows"
            )
        _check_modality(modality)
        _check_rows(modality, embeddings, items)
        known = self.manifest["modalities"].get(modality)
        parts = self._parts(modality)
        if parts:
            first = _load_npy(parts[0], mmap=True)
            if first.shape[1] != embeddings.shape[1] or first.dtype != embeddings.dtype:
                raise StoreError(
                    f"{modality}: new rows have dim {embeddings.shape[1]} and dtype "
                    f"{embeddings.dtype}, earlier parts have dim {first.shape[1]} and {first.dtype}"
                )
        elif known:
            raise StoreError(f"{modality}: already written in this store")
        index = len(parts)
        folder = self._part_dir(modality)
        with AtomicFile(folder / f"{index:08d}.items.jsonl", "w") as fh:
            _write_jsonl(fh, items)
        atomic_save_npy(folder / f"{index:08d}.npy", embeddings)

    def rows_written(self, modality: str) -> int:
        """Rows of ``modality`` on disk: the finalised file's, or the sum over written parts."""
        info = self.manifest["modalities"].get(modality)
        if self.complete and info:
            return int(info["rows"])
        return sum(_load_npy(p, mmap=True).shape[0] for p in self._parts(modality))

    def part_items(self, modality: str) -> list[dict[str, Any]]:
        """Items of all parts written so far (for resuming an interrupted extract)."""
        items: list[dict[str, Any]] = []
        for part in self._parts(modality):
            items.extend(_read_jsonl(part.with_name(f"{part.stem}.items.jsonl")))
        return items

    def finalize(self, *, normalized: Mapping[str, bool] | None = None, **extra: Any) -> None:
        """Concatenate the parts into ``<modality>.npy`` and ``.items.jsonl``; mark complete.

        ``normalized`` records, per modality, whether the encoder's outputs were already
        L2-normalised (the report shows it as ``normalized_by_encoder``); ``extra`` keys go into
        the manifest.
        """
        if self.complete:
            raise StoreError(f"{self.path}: store is already finalised")
        modalities = {}
        for modality in MODALITIES:
            parts = self._parts(modality)
            if not parts:
                continue
            arrays = [_load_npy(p, mmap=True) for p in parts]
            rows = sum(a.shape[0] for a in arrays)
            dim, dtype = arrays[0].shape[1], arrays[0].dtype
            npy = self.path / f"{modality}.npy"
            with AtomicFile(npy, "wb") as fh:
                np.lib.format.write_array_header_1_0(
                    fh,
                    {
                        "descr": np.lib.format.dtype_to_descr(dtype),
                        "fortran_order": False,
                        "shape": (rows, dim),
                    },
                )
                for a in arrays:
                    fh.write(np.ascontiguousarray(a).tobytes())
            items_path = self.path / f"{modality}.items.jsonl"
            with AtomicFile(items_path, "w") as out:
                for p in parts:
                    with open(p.with_name(f"{p.stem}.items.jsonl"), encoding="utf-8") as fh:
                        shutil.copyfileobj(fh, out)
            modalities[modality] = {
                "file": npy.name,
                "items": items_path.name,
                "rows": rows,
                "dim": int(dim),
                "dtype": dtype.name,
                "normalized": bool(normalized.get(modality, False)) if normalized else False,
            }
        if not modalities:
            raise StoreError(f"{self.path}: nothing to finalise, no rows were written")
        dims = {info["dim"] for info in modalities.values()}
        if len(dims) > 1:
            raise StoreError(f"{self.path}: modalities have different dims {sorted(dims)}")
        self.manifest.update(extra)
        self.manifest["modalities"] = modalities
        self.manifest["complete"] = True
        atomic_write_json(self.path / MANIFEST, self.manifest)
        shutil.rmtree(self.path / _PARTS, ignore_errors=True)

    def update_manifest(self, **fields: Any) -> None:
        """Merge ``fields`` into the manifest and rewrite it atomically."""
        self.manifest.update(fields)
        atomic_write_json(self.path / MANIFEST, self.manifest)

    # ---------------------------------------------------------------- reading

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, mmap: bool = True, allow_incomplete: bool = False
    ) -> EmbeddingStore:
        """Open and validate a store; arrays are memory-mapped read-only unless ``mmap=False``."""
        path = Path(path)
        if not path.exists():
            raise StoreError(f"{path}: no such store")
        if not path.is_dir():
            raise StoreError(f"{path}: not a store folder")
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise StoreError(f"{path}: not an embedding store (no {MANIFEST})")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StoreError(f"{manifest_path}: not valid JSON ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise StoreError(f"{manifest_path}: not a gapscope store manifest")
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise StoreError(
                f"{path}: unknown store format version {version!r} "
                f"(this gapscope {__version__} reads version {FORMAT_VERSION})"
            )
        store = cls(path, manifest, mmap=mmap)
        if not manifest.get("complete"):
            if allow_incomplete:
                return store
            raise StoreError(
                f"{path}: store is incomplete (an extract was interrupted); "
                "run the same extract again to resume it"
            )
        store.validate()
        return store

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    @property
    def modalities(self) -> list[str]:
        """Modalities present, in the order image, text, audio."""
        return sorted(self.manifest.get("modalities", {}), key=_modality_order)

    @property
    def encoder(self) -> dict[str, Any] | None:
        return self.manifest.get("encoder")

    @property
    def dataset(self) -> dict[str, Any] | None:
        return self.manifest.get("dataset")

    def info(self, modality: str) -> dict[str, Any]:
        """The manifest's entry for one modality (file, items, rows, dim, dtype, normalized)."""
        try:
            return self.manifest["modalities"][modality]
        except KeyError:
            raise StoreError(
                f"{self.path}: no {modality!r} modality (has {', '.join(self.modalities)})"
            ) from None

    def embeddings(self, modality: str) -> np.ndarray:
        """Raw embeddings of one modality, ``(rows, dim)``, memory-mapped read-only by default."""
        info = self.info(modality)
        return _load_npy(self.path / info["file"], mmap=self._mmap)

    def items(self, modality: str) -> list[dict[str, Any]]:
        """One dict a row: ``id``, ``source``, ``group`` and optionally ``label``."""
        if modality not in self._items:
            info = self.info(modality)
            path = self.path / info.get("items", f"{modality}.items.jsonl")
            if not path.is_file():
                raise StoreError(f"{path}: file is missing")
            self._items[modality] = _read_jsonl(path)
        return self._items[modality]

    def _encode(self) -> dict[str, dict[str, np.ndarray | None]]:
        # Codes are shared across modalities, so equal groups (or labels) of two modalities get
        # equal integers; assigned in order of first appearance for determinism.
        if self._codes is None:
            group_codes: dict[Any, int] = {}
            label_codes: dict[Any, int] = {}
            codes: dict[str, dict[str, np.ndarray | None]] = {}
            for modality in self.modalities:
                items = self.items(modality)
                groups = np.fromiter(
                    (group_codes.setdefault(_key(it["group"]), len(group_codes)) for it in items),
                    dtype=np.int64,
                    count=len(items),
                )
                with_label = sum(1 for it in items if it.get("label") is not None)
                if with_label == 0:
                    labels = None
                elif with_label < len(items):
                    raise StoreError(
                        f"{self.path}: {modality} has labels on {with_label} of {len(items)} "
                        "rows; give a label to every row or to none"
                    )
                else:
                    labels = np.fromiter(
                        (
                            label_codes.setdefault(_key(it["label"]), len(label_codes))
                            for it in items
                        ),
                        dtype=np.int64,
                        count=len(items),
                    )
                codes[modality] = {"groups": groups, "labels": labels}
            self._codes = codes
        return self._codes

    def groups(self, modality: str) -> np.ndarray:
        """Integer group codes, ``(rows,)`` int64; equal codes across modalities are positives."""
        self.info(modality)
        groups = self._encode()[modality]["groups"]
        assert groups is not None
        return groups

    def labels(self, modality: str) -> np.ndarray | None:
        """Integer label codes ``(rows,)`` int64, or ``None`` when the modality has no labels."""
        self.info(modality)
        return self._encode()[modality]["labels"]

    def fingerprint(self) -> str:
        """sha256 of the embeddings (see :func:`fingerprint_arrays`)."""
        return fingerprint_arrays({m: self.embeddings(m) for m in self.modalities})

    def validate(self) -> None:
        """Check every file against the manifest; raise :class:`StoreError` on the first problem."""
        if not self.modalities:
            raise StoreError(f"{self.path}: store has no modalities")
        dims = set()
        for modality in self.modalities:
            _check_modality(modality)
            info = self.info(modality)
            for key in ("file", "rows", "dim", "dtype"):
                if key not in info:
                    raise StoreError(f"{self.path}: manifest entry for {modality} lacks {key!r}")
            arr = self.embeddings(modality)
            where = self.path / info["file"]
            if arr.ndim != 2:
                raise StoreError(f"{where}: expected a 2-D array, got shape {arr.shape}")
            if arr.dtype.name != info["dtype"] or arr.dtype.name not in _DTYPES:
                raise StoreError(
                    f"{where}: dtype {arr.dtype.name}, manifest says {info['dtype']} "
                    f"(stores hold {' or '.join(_DTYPES)})"
                )
            if arr.shape != (info["rows"], info["dim"]):
                raise StoreError(
                    f"{where}: shape {arr.shape} disagrees with the manifest "
                    f"({info['rows']} rows, dim {info['dim']})"
                )
            if arr.shape[0] == 0:
                raise StoreError(f"{where}: has no rows")
            n_items = len(self.items(modality))
            if n_items != arr.shape[0]:
                raise StoreError(
                    f"{self.path}: {modality} has {arr.shape[0]} embedding rows but {n_items} items"
                )
            for i, item in enumerate(self.items(modality)):
                if not isinstance(item, dict) or "group" not in item or "id" not in item:
                    raise StoreError(f"{self.path}: {modality} item {i} lacks an 'id' or 'group'")
            dims.add(arr.shape[1])
        if len(dims) > 1:
            raise StoreError(f"{self.path}: modalities have different dims {sorted(dims)}")
        self._encode()

    def __repr__(self) -> str:
        rows = ", ".join(f"{m}={self.info(m)['rows']}" for m in self.modalities)
        return f"EmbeddingStore({str(self.path)!r}, {rows})"


def _key(value: Any) -> Any:
    # JSON round-trips 3 and "3" differently; keep them distinct but hashable (lists -> tuples).
    if isinstance(value, list):
        return tuple(_key(v) for v in value)
    return (type(value).__name__, value)
