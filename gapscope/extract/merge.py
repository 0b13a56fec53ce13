"""``gapscope merge``: combine the shard stores of ``extract --shard i/n`` into one store.

The shards must all be finished, come from the same encoder, dataset and batch size (their
manifests' ``extract`` records agree except for the shard), and cover ``0/n`` .. ``n-1/n``
once each. Rows are concatenated in shard order, which is the order of one unsharded run, so
the merged store equals the store a single ``gapscope extract`` would have written.

The output is locked while it is written. ``overwrite`` builds the merged store beside the one
it replaces and swaps it in once complete; an output that is one of the shards (or lies inside
one, or holds one) is refused. A merge that was killed starts again when run again.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gapscope.data.store import MODALITIES, EmbeddingStore, StoreLock
from gapscope.errors import GapscopeError
from gapscope.extract.extraction import SkipLog, check_readable_rows, identity_difference
from gapscope.extract.shards import parse_shard

_CHUNK_ROWS = 65536


def merge_stores(
    out: str | os.PathLike[str],
    shards: Sequence[str | os.PathLike[str]],
    *,
    overwrite: bool = False,
) -> EmbeddingStore:
    """Merge finished shard stores into a new store at ``out`` and return it (opened).

    An unfinished store at ``out`` from an earlier merge of the same extract (a killed one) is
    merged again, and a finished one is returned as it is (it holds what the merge would
    write); with ``overwrite``, a store at ``out`` is replaced once the merged one is
    complete, and the folder's other files are kept.

    Raises:
        GapscopeError: an unfinished or non-shard store, shards of different extracts, a missing
            or repeated shard, ``out`` being one of the shards, or ``out`` already holding
            something (without ``overwrite``).
    """
    if not shards:
        raise GapscopeError("merge needs the shard stores to combine")
    _check_out_apart(Path(out), [Path(s) for s in shards])
    ordered = _in_shard_order([EmbeddingStore.open(path) for path in shards])
    _check_same_extract(ordered)
    first = ordered[0]
    identity = {**first.manifest["extract"], "shard": None}
    skips = SkipLog()
    for store in ordered:
        for entry in store.manifest.get("skipped") or []:
            skips.add(entry)

    with StoreLock.acquire(out) as lock:
        merged, replace = _finished_or_replaced(Path(out), lock, identity, overwrite)
        if merged is None:
            existed = Path(out).is_dir()
            merged = EmbeddingStore.create(
                out,
                encoder=first.encoder,
                dataset=first.dataset,
                overwrite=replace,
                lock=lock,
                extract=identity,
                skipped=skips.entries(),
            )
            _append_shards(merged, ordered)
            try:
                # Each shard may lack a modality's rows (its slice all unreadable); the whole
                # may not, as one process's extract may not.
                written = {m for shard in ordered for m in shard.modalities}
                # A modality no shard has a row of is known from the files it skipped.
                written |= {entry["modality"] for entry in skips.entries()}
                for m in sorted(written):
                    check_readable_rows(m, merged.rows_written(m), skips.entries())
            except GapscopeError:
                merged.abandon(Path(out) if existed else None)  # nothing left of a merge refused
                raise
            normalized = {
                m: bool(s.info(m).get("normalized", False)) for s in ordered for m in s.modalities
            }
            merged.finalize(normalized=normalized, skipped=skips.entries())
        else:
            merged.swap_in()
    return EmbeddingStore.open(Path(out))


def _check_out_apart(out: Path, shards: list[Path]) -> None:
    """Refuse an output that is a shard, or lies inside one, or holds one: replacing it, or
    writing into it, would change the stores being read."""
    real = out.resolve()
    for shard in shards:
        other = shard.resolve()
        if other == real:
            raise GapscopeError(
                f"{out}: is one of the shards to merge; write the merged store to another folder"
            )
        if other in real.parents or real in other.parents:
            raise GapscopeError(
                f"{out}: overlaps the shard {shard} (one lies inside the other); write the "
                "merged store to another folder"
            )


def _finished_or_replaced(
    out: Path, lock: StoreLock, identity: dict[str, Any], overwrite: bool
) -> tuple[EmbeddingStore | None, bool]:
    """``(store, replace)``: the finished merge of these shards, when one is there already or
    a kill left it unswapped beside ``out`` (then it is swapped in), else ``None``; and
    whether the store at ``out`` is to be replaced."""
    current = EmbeddingStore.reopen(out, lock=lock)
    if current is None:
        return None, overwrite
    if overwrite:
        staged = EmbeddingStore.reopen(out, lock=lock, staged=True)
        if staged is not None and staged.complete and staged.manifest.get("extract") == identity:
            return staged, True
        return None, True
    difference = identity_difference(current.manifest.get("extract"), identity)
    if difference is not None:
        state = "a finished" if current.complete else "an unfinished"
        raise GapscopeError(
            f"{out}: folder is not empty: it holds {state} store of another extract "
            f"({difference}); pass --overwrite to replace it"
        )
    if current.complete:
        return current, False  # merged already (a rerun after a kill at its very end)
    return None, True  # an interrupted merge of these shards: merged again, then swapped in


def _append_shards(merged: EmbeddingStore, ordered: list[EmbeddingStore]) -> None:
    """Every shard's rows, modality by modality, in shard order (the order of one run)."""
    for modality in MODALITIES:
        for store in ordered:
            if modality not in store.modalities:
                continue
            rows, items = store.embeddings(modality), store.items(modality)
            for start in range(0, rows.shape[0], _CHUNK_ROWS):
                stop = start + _CHUNK_ROWS
                merged.append(modality, rows[start:stop], items[start:stop])


def _in_shard_order(stores: list[EmbeddingStore]) -> list[EmbeddingStore]:
    """The shard stores ordered by shard index, once each shard of one count is there."""
    by_index: dict[int, EmbeddingStore] = {}
    count = None
    for store in stores:
        record = store.manifest.get("extract")
        if not isinstance(record, dict) or not record.get("shard"):
            raise GapscopeError(
                f"{store.path}: not a shard store (it was not extracted with --shard i/n)"
            )
        shard = parse_shard(record["shard"])
        assert shard is not None
        if count is None:
            count = shard.count
        if shard.count != count:
            raise GapscopeError(
                f"{store.path}: shard {shard} of {shard.count}, but {stores[0].path} is one of "
                f"{count}"
            )
        if shard.index in by_index:
            raise GapscopeError(
                f"shard {shard} given twice: {by_index[shard.index].path} and {store.path}"
            )
        by_index[shard.index] = store
    assert count is not None
    missing = [f"{i}/{count}" for i in range(count) if i not in by_index]
    if missing:
        raise GapscopeError(f"missing shard(s) {', '.join(missing)}: merge needs all {count}")
    return [by_index[i] for i in range(count)]


def _check_same_extract(ordered: list[EmbeddingStore]) -> None:
    """Refuse shards whose extract identities (model, data, options) differ."""
    first = ordered[0]
    for store in ordered[1:]:
        difference = identity_difference(
            first.manifest["extract"],
            {**store.manifest["extract"], "shard": first.manifest["extract"]["shard"]},
        )
        if difference is not None:
            raise GapscopeError(
                f"{first.path} and {store.path} come from different extracts ({difference})"
            )
