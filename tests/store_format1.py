"""Format-1 stores, written as gapscope wrote them before format 2 (items as JSON lines).

``tests/data/fixtures/store_format1`` was written by that code itself; :func:`write_format1`
writes the same bytes (checked against the fixture), so tests can make format-1 stores of any
content.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gapscope._version import __version__
from gapscope.data.store import EmbeddingStore, fingerprint_arrays

FIXTURE = Path(__file__).parent / "data" / "fixtures" / "store_format1"
ORDER = ("image", "text", "audio")


def write_format1(
    path: Path,
    embeddings: Mapping[str, np.ndarray],
    items: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    encoder: Mapping[str, Any] | None = None,
    dataset: Mapping[str, Any] | None = None,
    normalized: Mapping[str, bool] | None = None,
    version: str = __version__,
) -> Path:
    """A complete format-1 store at ``path`` (a new folder)."""
    path.mkdir(parents=True)
    names = sorted(embeddings, key=lambda m: (ORDER.index(m), m) if m in ORDER else (3, m))
    modalities = {}
    for m in names:
        arr = np.ascontiguousarray(embeddings[m])
        np.save(path / f"{m}.npy", arr, allow_pickle=False)
        with open(path / f"{m}.items.jsonl", "w", encoding="utf-8") as fh:
            for item in items[m]:
                fh.write(json.dumps(item, sort_keys=True, ensure_ascii=False) + "\n")
        modalities[m] = {
            "file": f"{m}.npy",
            "items": f"{m}.items.jsonl",
            "rows": int(arr.shape[0]),
            "dim": int(arr.shape[1]),
            "dtype": arr.dtype.name,
            "normalized": bool((normalized or {}).get(m, False)),
        }
    manifest = {
        "format": "gapscope.store",
        "format_version": 1,
        "gapscope_version": version,
        "complete": True,
        "encoder": dict(encoder) if encoder is not None else None,
        "dataset": dict(dataset) if dataset is not None else None,
        "modalities": modalities,
        "fingerprint": fingerprint_arrays({m: embeddings[m] for m in names}),
    }
    text = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    (path / "manifest.json").write_text(text, encoding="utf-8")
    stamps = {}
    for m in names:
        st = (path / f"{m}.npy").stat()
        stamps[f"{m}.npy"] = {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}
    text = json.dumps(stamps, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    (path / "fingerprint.stamps.json").write_text(text, encoding="utf-8")
    return path


def as_format1(path: Path) -> Path:
    """Rewrite the store at ``path`` in place as format 1 (same embeddings and items)."""
    store = EmbeddingStore.open(path)
    embeddings = {m: np.array(store.embeddings(m)) for m in store.modalities}
    items = {m: store.items(m) for m in store.modalities}
    normalized = {m: bool(store.info(m).get("normalized")) for m in store.modalities}
    encoder, dataset = store.encoder, store.dataset
    shutil.rmtree(path)
    return write_format1(
        path, embeddings, items, encoder=encoder, dataset=dataset, normalized=normalized
    )
