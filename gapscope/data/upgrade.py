"""``gapscope upgrade``: rewrite a format-1 store (items as JSON lines) as format 2 (items as
memory-mapped columns, :mod:`gapscope.data.item_columns`), atomically.

The conversion holds the store's lock and builds the new store beside the old one, in
``.<name>.gapscope-new`` as an overwrite does: the embeddings are hard-linked (copied where
links fail), the items written as columns, the fingerprint stamps recorded, and the manifest
saying ``complete`` written last; then the two folders are swapped (docs/architecture.md,
section 4.3). Until the swap the old store is untouched and readable; a kill at any point
leaves it whole, and the next ``gapscope upgrade`` (or any writer taking the lock) finishes a
swap that was under way or starts the conversion again. The files of the folder that are not
the store's own are carried over, as by an overwrite.

The embeddings are not rewritten, so the fingerprint stays what it was: the manifest's
value, checked against the bytes when the stamps no longer hold (a copied store), refused if
they differ.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gapscope.data import item_columns
from gapscope.data.atomic import atomic_write_json, kill_point
from gapscope.data.store import (
    FORMAT_VERSION,
    MANIFEST,
    STAMPS,
    EmbeddingStore,
    StoreLock,
    StorePaths,
    _file_stamp,
    _is_empty,
    _link_or_copy,
    _read_manifest,
    _remove_tree,
    _swap_in,
    check_replaceable,
)
from gapscope.errors import StoreError

__all__ = ["UpgradeResult", "upgrade_store"]

#: The manifest field that records the format a store was upgraded from; it also tells an
#: upgrade's replacement from another command's.
_UPGRADED_FROM = "upgraded_from"


@dataclass(frozen=True)
class UpgradeResult:
    """What :func:`upgrade_store` did.

    Attributes:
        path: the store.
        from_version: its format version before.
        to_version: its format version now.
        rows: rows per modality.
    """

    path: Path
    from_version: int
    to_version: int
    rows: dict[str, int]

    @property
    def upgraded(self) -> bool:
        """Whether the store was rewritten (``False``: it was already current)."""
        return self.from_version != self.to_version


def upgrade_store(path: str | os.PathLike[str]) -> UpgradeResult:
    """Convert the finished store at ``path`` to the current format (2), atomically; a store
    already in it is left as it is.

    Raises:
        StoreError: no finished store at ``path``, a folder this process may not write to,
            another process writing it, a replacement
            of another command (an interrupted ``--overwrite``) beside it, or embeddings that
            no longer match the fingerprint in the manifest.
    """
    with StoreLock.acquire(path) as lock:
        store = EmbeddingStore.open(path)
        rows = {m: int(store.info(m)["rows"]) for m in store.modalities}
        version = store.format_version
        if version >= FORMAT_VERSION:
            return UpgradeResult(Path(path), version, version, rows)
        check_replaceable(lock.paths)
        _discard_own_staging(lock.paths)
        staging = lock.paths.staging
        manifest = _converted_manifest(store)
        staging.mkdir()
        kill_point("upgrade:folder-made")
        atomic_write_json(staging / MANIFEST, {**manifest, "complete": False})
        _write_format2(store, staging, manifest)
        atomic_write_json(staging / MANIFEST, manifest)
        _swap_in(lock.paths)
    return UpgradeResult(Path(path), version, FORMAT_VERSION, rows)


def _converted_manifest(store: EmbeddingStore) -> dict[str, Any]:
    """The format-2 manifest of ``store``: its own, with the items' file names, the version
    and the fingerprint (checked against the bytes unless the stamps hold)."""
    manifest = copy.deepcopy(store.manifest)
    manifest["format_version"] = FORMAT_VERSION
    manifest[_UPGRADED_FROM] = store.format_version
    manifest["fingerprint"] = store.fingerprint(verify=not store._stamps_hold())
    for modality in store.modalities:
        manifest["modalities"][modality]["items"] = f"{modality}.items.npz"
    return manifest


def _write_format2(store: EmbeddingStore, staging: Path, manifest: dict[str, Any]) -> None:
    """Link the embeddings into ``staging``, write the items as columns and the stamps."""
    codes: tuple[dict[Any, int], dict[Any, int]] = ({}, {})
    for modality in store.modalities:
        name = store.info(modality)["file"]
        _link_or_copy(str(store.path / name), str(staging / name))
        kill_point(f"upgrade:linked:{name}")
        columns = item_columns.ColumnsBuilder(*codes)
        for item in store.items(modality):
            columns.add(item)
        store._items.pop(modality, None)  # one modality's dicts in memory at a time
        item_columns.write_npz(
            staging / manifest["modalities"][modality]["items"], columns.members()
        )
    files = sorted({e["file"] for e in manifest["modalities"].values()})
    atomic_write_json(staging / STAMPS, {name: _file_stamp(staging / name) for name in files})


def _discard_own_staging(paths: StorePaths) -> None:
    """Remove a replacement a killed upgrade left (unfinished, or finished but not swapped
    in); refuse one that another command is building."""
    staging = paths.staging
    if not os.path.lexists(staging):
        return
    manifest = _read_manifest(staging) if staging.is_dir() else None
    ours = manifest is not None and _UPGRADED_FROM in manifest
    if ours or (staging.is_dir() and _is_empty(staging)):
        _remove_tree(staging, "staging")
        return
    raise StoreError(
        f"{staging}: a replacement of {paths.given} that another command is building (an "
        "interrupted --overwrite) lies beside it; run that command again to finish it, or "
        "remove the folder, then upgrade"
    )
