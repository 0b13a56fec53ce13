"""Extraction across ``torchrun`` ranks: each rank is a shard, rank 0 merges.

``torchrun --nproc-per-node G -m gapscope extract ... -o store/`` starts G processes with the
same arguments. Each one extracts shard ``RANK/WORLD_SIZE`` into ``store.shards/``, waits for the
others at a barrier (the gloo backend, so it works on CPU-only machines too), and rank 0 merges
the shards into ``store/`` exactly as ``gapscope merge`` would (unless a rerun finds the merge
done already), then removes them. Every shard is an ordinary resumable extract, so rerunning
the same command after a failure resumes each rank.
We use torch's own launcher rather than a scheduler of our own; for many machines, run
``gapscope extract --shard i/n`` as Slurm array tasks and ``gapscope merge`` at the end.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

from gapscope.engine.distributed import RankInfo, init_process_group, launcher_rank, rank_device
from gapscope.errors import GapscopeError


def torchrun_rank(environ: dict[str, str] | None = None) -> RankInfo | None:
    """The rank of this process when ``torchrun`` or ``srun`` started two or more
    (:func:`gapscope.engine.distributed.launcher_rank`).

    >>> torchrun_rank({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    RankInfo(rank=1, world_size=4, local_rank=1)
    """
    return launcher_rank(environ)


def shard_folder(out: Path, info: RankInfo) -> Path:
    """Where rank ``info.rank`` writes its shard: beside ``out``, never inside it."""
    return out.with_name(f"{out.name}.shards") / f"shard-{info.rank:04d}-of-{info.world_size:04d}"


def extract_distributed(out: str | os.PathLike[str], info: RankInfo, **options: Any) -> Any:
    """Extract this rank's shard, wait for every rank, and merge on rank 0.

    Returns this rank's :class:`~gapscope.extract.summary.ExtractSummary`; rank 0's holds
    the merged store's rows and every rank's skipped files (``ranks`` set), its throughput
    its own.
    """
    import torch.distributed as dist

    from gapscope.extract.extraction import extract
    from gapscope.extract.merge import merge_stores

    if options.pop("shard", None) is not None:
        raise GapscopeError("under torchrun each rank is a shard already; drop --shard")
    out = Path(out)
    options["device"] = rank_device(options.get("device", "auto"), info)
    # Only rank 0 draws progress bars; G bars fighting over one terminal help nobody.
    options["quiet"] = bool(options.get("quiet")) or info.rank != 0
    summary = extract(shard_folder(out, info), shard=f"{info.rank}/{info.world_size}", **options)
    init_process_group(info, "gloo")
    try:
        dist.barrier()
        if info.rank == 0:
            shards = [
                shard_folder(out, RankInfo(r, info.world_size, r)) for r in range(info.world_size)
            ]
            overwrite = bool(options.get("overwrite"))
            if overwrite or not _merged_already(out, shards[0]):
                merge_stores(out, shards, overwrite=overwrite)
            _remove_shards(shards[0].parent)
            summary = _merged_summary(summary, out, info.world_size)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return summary


def _merged_summary(summary: Any, out: Path, ranks: int) -> Any:
    """Rank 0's summary with the merged store's rows and skipped files: the skips of every
    rank's slice are listed, not rank 0's alone."""
    from gapscope.data.store import EmbeddingStore

    merged = EmbeddingStore.open(out)
    return dataclasses.replace(
        summary,
        store=out,
        rows={m: int(merged.info(m)["rows"]) for m in merged.modalities},
        skipped=list(merged.manifest.get("skipped") or []),
        shard=None,
        ranks=ranks,
    )


def _merged_already(out: Path, shard: Path) -> bool:
    """Whether ``out`` holds the finished merge of these shards (a rerun after a kill that
    came once the merge was done)."""
    from gapscope.data.store import EmbeddingStore

    try:
        merged, first = EmbeddingStore.open(out), EmbeddingStore.open(shard)
    except GapscopeError:
        return False
    return merged.manifest.get("extract") == {**first.manifest["extract"], "shard": None}


def _remove_shards(folder: Path) -> None:
    """Remove the shard folder in one rename, then delete it: a kill never leaves some
    shards half deleted (the renamed folder goes on the next run)."""
    trash = folder.with_name(f".{folder.name}.gapscope-old")
    shutil.rmtree(trash, ignore_errors=True)
    if folder.exists():
        os.rename(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)
