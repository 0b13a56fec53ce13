"""What ``analyze`` reads: an embedding store, or plain arrays paired row by row.

:class:`EmbeddingSet` is the one in-memory view both turn into: raw embeddings per modality
(memory-mapped where the source allows), the group codes that define positive pairs, optional
labels, and where the rows came from.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gapscope.data.store import MODALITIES, EmbeddingStore, fingerprint_arrays
from gapscope.errors import EmbeddingError, GapscopeError
from gapscope.extras import require

ARRAY_SUFFIXES = (".npy", ".pt", ".pth", ".safetensors")


@dataclass
class EmbeddingSet:
    """Raw embeddings of two or more modalities with the groups that pair them.

    Attributes:
        embeddings: modality -> raw rows ``(n, d)`` (float16/32/64; not normalised).
        groups: modality -> int64 codes; rows of different modalities with equal codes are
            positives.
        labels: modality -> int64 class codes (intra-modal ground truth), or absent.
        normalized: modality -> whether the encoder already L2-normalised its outputs (None when
            unknown, e.g. plain arrays).
        source: a short description of where the rows came from (shown in the report).
        model: the encoder description from a store's manifest, or None.
    """

    embeddings: dict[str, Any]
    groups: dict[str, np.ndarray]
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    normalized: dict[str, bool | None] = field(default_factory=dict)
    source: str = "<arrays>"
    model: dict[str, Any] | None = None

    @property
    def modalities(self) -> list[str]:
        """Modalities in a fixed order: image, text, audio, then any other name as given."""
        known = [m for m in MODALITIES if m in self.embeddings]
        return known + [m for m in self.embeddings if m not in MODALITIES]

    def fingerprint(self) -> str:
        return fingerprint_arrays({m: np.asarray(self.embeddings[m]) for m in self.modalities})

    @classmethod
    def from_store(cls, store: EmbeddingStore | str | os.PathLike[str]) -> EmbeddingSet:
        """Read an :class:`~gapscope.data.store.EmbeddingStore` (opened and validated if a path)."""
        if not isinstance(store, EmbeddingStore):
            store = EmbeddingStore.open(store)
        labels = {}
        for m in store.modalities:
            lab = store.labels(m)
            if lab is not None:
                labels[m] = lab
        return cls(
            embeddings={m: store.embeddings(m) for m in store.modalities},
            groups={m: store.groups(m) for m in store.modalities},
            labels=labels,
            normalized={m: store.info(m).get("normalized") for m in store.modalities},
            source=str(store.path),
            model=store.encoder,
        )

    @classmethod
    def from_arrays(
        cls,
        embeddings: Mapping[str, Any],
        *,
        labels: Any | None = None,
        source: str = "<arrays>",
    ) -> EmbeddingSet:
        """Plain arrays, row i of every modality paired with row i of the others.

        ``labels`` (optional, one per row, any hashable values) is shared by every modality and
        is the ground truth of intra-modal retrieval.
        """
        unknown = set(embeddings) - set(MODALITIES)
        if unknown:
            raise GapscopeError(
                f"unknown modality {sorted(unknown)[0]!r}: expected {', '.join(MODALITIES)}"
            )
        arrays = {m: _as_array(embeddings[m], m) for m in MODALITIES if m in embeddings}
        if len(arrays) < 2:
            raise GapscopeError("need at least two modalities (e.g. image and text) to compare")
        rows = {m: a.shape[0] for m, a in arrays.items()}
        if len(set(rows.values())) > 1:
            counts = ", ".join(f"{m} has {n}" for m, n in rows.items())
            raise EmbeddingError(
                f"row counts differ ({counts}): plain arrays pair row i with row i, "
                "so every modality needs the same number of rows"
            )
        n = next(iter(rows.values()))
        codes = encode_labels(labels, n) if labels is not None else None
        return cls(
            embeddings=arrays,
            groups={m: np.arange(n, dtype=np.int64) for m in arrays},
            labels={m: codes for m in arrays} if codes is not None else {},
            normalized={m: None for m in arrays},
            source=source,
        )

    @classmethod
    def from_files(
        cls,
        files: Mapping[str, str | os.PathLike[str]],
        *,
        labels: str | os.PathLike[str] | None = None,
    ) -> EmbeddingSet:
        """Load plain arrays from ``.npy`` (memory-mapped), ``.pt`` or ``.safetensors`` files."""
        arrays = {m: load_array(path, m) for m, path in files.items() if path is not None}
        label_values = load_array(labels, "labels", allow_1d=True) if labels is not None else None
        source = " ".join(f"{m}={files[m]}" for m in MODALITIES if files.get(m) is not None)
        return cls.from_arrays(arrays, labels=label_values, source=source)


def _as_array(value: Any, name: str) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(value)
    except (TypeError, ValueError):
        raise EmbeddingError(f"{name}: cannot read {type(value).__name__} as an array") from None


def encode_labels(labels: Any, n: int) -> np.ndarray:
    """Turn per-row labels of any hashable type into int64 codes (in order of first
    appearance).

    Raises:
        EmbeddingError: not one value a row, a NaN label (NaN equals nothing, not even
            itself, so it would make a class a row) or an unhashable one.

    >>> encode_labels(["cat", "dog", "cat"], 3).tolist()
    [0, 1, 0]
    """
    values = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else labels
    values = np.asarray(values)
    if values.ndim != 1 or values.shape[0] != n:
        raise EmbeddingError(f"labels: expected {n} values (one a row), got shape {values.shape}")
    if values.dtype.kind in "fc" and not np.isfinite(values).all():
        row = int(np.flatnonzero(~np.isfinite(values))[0])
        raise EmbeddingError(f"labels: row {row} is {values[row]}; labels must be finite")
    codes: dict[Any, int] = {}
    out = np.empty(n, dtype=np.int64)
    for row, v in enumerate(values):
        try:
            out[row] = codes.setdefault(v.item() if hasattr(v, "item") else v, len(codes))
        except TypeError:
            raise EmbeddingError(
                f"labels: row {row} holds a {type(v).__name__}, which cannot be a class label"
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

    Raises:
        GapscopeError: a missing file, an unknown suffix, an unreadable or object array, or
            (``EmbeddingError``) an array that is not ``(rows, dim)``.
    """
    path = Path(path)
    if not path.is_file():
        raise GapscopeError(f"{name}: no such file {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            _refuse_object_npy(path, name)
            arr = np.load(path, mmap_mode=None if allow_1d else "r", allow_pickle=False)
        elif suffix in (".pt", ".pth"):
            arr = _pick(torch.load(path, map_location="cpu", weights_only=True), name, path)
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
    if isinstance(arr, torch.Tensor):
        if arr.dtype == torch.bfloat16:
            arr = arr.float()
        arr = arr.numpy()
    if not allow_1d and getattr(arr, "ndim", 0) != 2:
        raise EmbeddingError(f"{name}: {path} holds shape {arr.shape}; expected (rows, dim)")
    return arr


def _refuse_object_npy(path: Path, name: str) -> None:
    """Refuse, by its first bytes, an ``.npy`` file that is not one or that holds Python
    objects, before reading any data (numpy calls anything without its header "pickled")."""
    with open(path, "rb") as fh:
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


def _pick(obj: Any, name: str, path: Path) -> Any:
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
    labels: str | os.PathLike[str] | None = None,
) -> EmbeddingSet:
    """The :class:`EmbeddingSet` of a store folder, or of plain array files by modality.

    This is what the commands' ``STORE`` / ``--image --text --audio --labels`` options mean:
    exactly one of the two must be given, and ``labels`` only goes with arrays.
    """
    given = {m: p for m, p in files.items() if p is not None}
    if store is not None and given:
        raise GapscopeError("give either a store or --image/--text/--audio arrays, not both")
    if store is None and not given:
        raise GapscopeError("give a store folder, or at least two of --image, --text, --audio")
    if store is not None and labels is not None:
        raise GapscopeError("--labels is for plain arrays; a store keeps labels in its items")
    if store is not None:
        return EmbeddingSet.from_store(store)
    return EmbeddingSet.from_files(given, labels=labels)
