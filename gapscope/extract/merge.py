"""``gapscope merge``: combine the shard stores of ``extract --shard i/n`` into one store.

The shards must all be finished, come from the same encoder, dataset and batch size (their
manifests' ``extract`` records agree except for the shard), and cover ``0/n`` .. ``n-1/n``
once each. Rows are concatenated in shard order, which is the order of one unsharded run, so
the merged store equals the store a single ``gapscope extract`` would have written.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from gapscope.data.store import MODALITIES, EmbeddingStore
from gapscope.errors import GapscopeError
from gapscope.extract.extraction import SkipLog, identity_difference
from gapscope.extract.shards import parse_shard

_CHUNK_ROWS = 65536


def merge_stores(
    out: str | os.PathLike[str],
    shards: Sequence[str | os.PathLike[str]],
    *,
    overwrite: bool = False,
) -> EmbeddingStore:
    """Merge finished shard stores into a new store at ``out`` and return it (opened).

    Raises:
        GapscopeError: an unfinished or non-shard store, shards of different extracts, a missing
            or repeated shard, or ``out`` already holding something (without ``overwrite``).
    """
    if not shards:
        raise GapscopeError("merge needs the shard stores to combine")
    ordered = _in_shard_order([EmbeddingStore.open(path) for path in shards])
    first = ordered[0]
    identity = {**first.manifest["extract"], "shard": None}
    _check_same_extract(ordered)
    skips = SkipLog()
    for store in ordered:
        for entry in store.manifest.get("skipped") or []:
            skips.add(entry)

    merged = EmbeddingStore.create(
        out,
        encoder=first.encoder,
        dataset=first.dataset,
        overwrite=overwrite,
        extract=identity,
        skipped=skips.entries(),
    )
    normalized = {}
    for modality in MODALITIES:
        for store in ordered:
            if modality not in store.modalities:
                continue
            normalized[modality] = bool(store.info(modality).get("normalized", False))
            rows, items = store.embeddings(modality), store.items(modality)
            for start in range(0, rows.shape[0], _CHUNK_ROWS):
                stop = start + _CHUNK_ROWS
                merged.append(modality, rows[start:stop], items[start:stop])
    merged.finalize(normalized=normalized, skipped=skips.entries())
    return EmbeddingStore.open(Path(out))


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
