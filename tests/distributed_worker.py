"""One process of the shared-pass test (tests/engine/test_distributed.py).

``python tests/distributed_worker.py OUT [THREADS]`` with RANK, WORLD_SIZE, MASTER_ADDR and
MASTER_PORT set joins a gloo group (with THREADS torch threads, 1 by default: with more, the
CPU passes run in lanes, gapscope.engine.pipelining.in_lanes), runs the passes shared under
gapscope.engine.distributed.sharing, and saves every array they produce to
``OUT/rank-<RANK>.npz`` (and how many chunks of streamed keys it multiplied to
``OUT/chunks-<RANK>.txt``). ``pass_arrays()`` run alone gives the
single-process arrays to compare with.
"""

from __future__ import annotations

import datetime
import os
import sys

import numpy as np
import torch

from gapscope.analysis import whatif
from gapscope.analysis.context import _ReadStats
from gapscope.engine import column_medians, passes, self_tiles
from gapscope.engine.distributed import ProcessCrashedError, current_share
from gapscope.engine.moments import unit_scatter
from gapscope.engine.normalization import unit_rows
from gapscope.engine.offset_passes import (
    ModalityToPass,
    OffsetRows,
    RowsToMove,
    offset_cross_passes,
    offset_modality_passes,
    offset_modality_passes_of_each,
    offset_rows,
    offset_rows_of_each,
)
from gapscope.engine.passes import CrossQueries, cross_pair_pass, modality_pass
from gapscope.engine.unit_rows import UnitRows
from gapscope.engine.validation import check_embeddings
from gapscope.errors import EmbeddingError
from gapscope.metrics import mir
from gapscope.metrics import similarity_stats as similarity_module
from gapscope.metrics.alignment import alignment
from gapscope.metrics.cosine import paired_cosine
from gapscope.metrics.similarity_stats import similarity_stats

KS = (1, 2, 5)
#: Keys a chunk of the sampled kernels (their own rule would make one chunk of these rows).
CHUNK = 64
#: Chunks of streamed keys multiplied by the last ``pass_arrays`` of this process, and blocks
#: of ``Share.in_order`` it made.
STREAMED_CHUNKS = [0]
MADE_BLOCKS = [0]
#: Chunks of the similarity statistics' cosines this process made.
SIMILARITY_CHUNKS = [0]


def data():
    """Near-ties (small-integer rows, permutations of each other) plus two captions an
    image, so that exact re-scoring, several positives and partial tiles all occur."""
    rng = np.random.default_rng(11)
    n, d = 530, 8
    x = rng.integers(-2, 3, size=(n, d)).astype(np.float32)
    x[np.abs(x).sum(axis=1) == 0, 0] = 1.0
    x[1::5] = x[0::5][:, rng.permutation(d)][: x[1::5].shape[0]]
    y = np.repeat(x, 2, axis=0) + rng.integers(-1, 2, size=(2 * n, d)).astype(np.float32)
    y[np.abs(y).sum(axis=1) == 0, 0] = 1.0
    return x, y, np.arange(n), np.repeat(np.arange(n), 2), rng.integers(0, 6, size=n)


def pass_arrays(block_size: int | None = 37, tile: int = 64) -> dict[str, np.ndarray]:
    """Every array of the passes; the exact modality pass in tiles of ``tile`` rows (45 tiles
    on and above the diagonal, shared among the processes)."""
    cm = column_medians
    saved = self_tiles._TILE_ROWS, passes.key_chunk_columns, cm.MEDIAN_BUDGET_BYTES
    saved_chunk = cm._CHUNK_BYTES
    self_tiles._TILE_ROWS = tile
    passes.key_chunk_columns = lambda n_queries: CHUNK
    # MIR's medians: three float64 columns of x a slice, three slices (fewer reads than a
    # radix select of one column's counts a read).
    cm.MEDIAN_BUDGET_BYTES = 3 * 530 * 8
    cm._CHUNK_BYTES = 37 * 8 * 2  # the radix select: 37 float16 rows of 8 columns a chunk
    try:
        return _pass_arrays(block_size)
    finally:
        self_tiles._TILE_ROWS, passes.key_chunk_columns, cm.MEDIAN_BUDGET_BYTES = saved
        cm._CHUNK_BYTES = saved_chunk


def _streamed(rows: np.ndarray) -> UnitRows:
    """``rows`` normalised a chunk at a time, each chunk of keys (up to CHUNK rows) counted in
    STREAMED_CHUNKS. Not counted: single rows, which every process gathers for exact scores,
    and the whole reads of the moved rows' norms, which every process makes."""
    unit = UnitRows(rows, in_memory=False, name="y")
    block = unit.block

    def counted(start: int, stop: int) -> torch.Tensor:
        STREAMED_CHUNKS[0] += 1 < stop - start <= CHUNK
        return block(start, stop)

    unit.block = counted  # type: ignore[method-assign]
    return unit


class _FailingRows:
    """Rows whose read of row ``bad`` fails."""

    def __init__(self, array: np.ndarray, bad: int) -> None:
        self.array, self.bad = array, bad
        self.shape, self.dtype = array.shape, array.dtype

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        if key[0].start <= self.bad < key[0].stop:
            raise FloatingPointError(f"row {self.bad}")
        return self.array[key]


def _whatif_arrays(
    out: dict[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    gx: np.ndarray,
    gy: np.ndarray,
    labels: np.ndarray,
    queries: np.ndarray,
    block_size: int | None,
) -> None:
    # The what-ifs against keys normalised on the fly: every version's kernel and ranks
    # counted down chunks of keys shared out in rounds (captions as relevance; both cross
    # directions sampled).
    unit_x, unit_y = UnitRows(x, in_memory=False, name="x"), _streamed(y)
    offsets = [None, np.full(8, 0.05, np.float32), np.linspace(-0.1, 0.1, 8).astype(np.float32)]
    views_x = [OffsetRows(unit_x, p) for p in offsets]
    views_y = [OffsetRows(unit_y, None if p is None else -p) for p in offsets]
    for v, r in enumerate(offset_modality_passes(unit_y, views_y, gy, k=KS, query_index=queries)):
        out[f"whatif_{v}_terms"] = r.uniformity_row_terms
        out[f"whatif_{v}_ranks"] = r.retrieval.first_rank
        out[f"whatif_{v}_ap"] = r.retrieval.average_precision
    # Labels too wide for the column counts: the kernel from the sweep, the ranks from
    # blocks of the queries that have a relevant row, added over the processes.
    wide = [OffsetRows(unit_x, p) for p in offsets]
    labelled = offset_modality_passes(
        unit_x, wide, labels, k=KS, block_size=block_size, query_index=np.arange(3, 530, 4)
    )
    for v, r in enumerate(labelled):
        out[f"whatif_labels_{v}_terms"] = r.uniformity_row_terms
        out[f"whatif_labels_{v}_ranks"] = r.retrieval.first_rank
        out[f"whatif_labels_{v}_ap"] = r.retrieval.average_precision
        out[f"whatif_labels_{v}_rp"] = r.retrieval.r_precision_per_query
    sample_x, sample_y = np.arange(0, 530, 3), np.arange(1, 1060, 7)
    crossed = offset_cross_passes(
        unit_x,
        unit_y,
        list(zip(views_x, views_y, strict=True)),
        gx,
        gy,
        k=KS,
        query_index_x=sample_x,
        query_index_y=sample_y,
    )
    for v, (x_to_y, y_to_x) in enumerate(crossed):
        out[f"whatif_{v}_x_to_y"] = x_to_y.first_rank
        out[f"whatif_{v}_y_to_x"] = y_to_x.first_rank
    # Every version's norms and dot products, and the gap sums of every fix, from chunks of 37
    # rows shared out in turn; the last fix sends row 100 (a chunk of process 2 of 3) to the
    # origin.
    chunked = UnitRows(x, in_memory=False, name="x", chunk_rows=37)
    moved = offset_rows(chunked, offsets, name="x", dots_with=offsets[::-1])
    for v, view in enumerate(moved):
        out[f"whatif_{v}_factors"] = view.factors.numpy()
    known = moved[0].dots.known
    out["whatif_dots"] = np.concatenate([known[k] for k in sorted(known)])
    # Both modalities in one scan (chunks of 37 and of 53 rows, y's 1,060 rows): each
    # process makes some chunks of each, every process ends with every value.
    y_chunked = UnitRows(y, in_memory=False, name="y", chunk_rows=53)
    minus = [None if p is None else -p for p in offsets]
    joint = offset_rows_of_each(
        [
            RowsToMove(chunked, offsets, "x", None, minus),
            RowsToMove(y_chunked, minus, "y", None, offsets),
        ]
    )
    # Both modalities' passes over every row as one list of blocks (530 and 1,060 keys),
    # shared out among the processes.
    held_x, held_y = UnitRows(x), UnitRows(y)
    both = offset_modality_passes_of_each(
        [
            ModalityToPass(held_x, [OffsetRows(held_x, p) for p in offsets[1:]], labels),
            ModalityToPass(held_y, [OffsetRows(held_y, p) for p in minus[1:]], gy),
        ],
        k=KS,
        block_size=block_size,
    )
    for m, results in zip("xy", both, strict=True):
        for v, r in enumerate(results):
            out[f"whatif_both_{m}_{v}_terms"] = r.uniformity_row_terms
            out[f"whatif_both_{m}_{v}_ranks"] = r.retrieval.first_rank
    for m, views in zip("xy", joint, strict=True):
        known = views[0].dots.known
        out[f"whatif_joint_{m}_dots"] = np.concatenate([known[k] for k in sorted(known)])
        for v, view in enumerate(views):
            out[f"whatif_joint_{m}_{v}_factors"] = view.factors.numpy()
    fixes = [None if p is None else p.astype(np.float64) for p in offsets]
    fixes.append(unit_rows(x[100:101])[0])
    sums = [whatif._TransformedSums(8, p, "x", "lands on the origin") for p in fixes]
    feed = whatif._SumsOfEveryFix(sums)
    feed.read(x, chunk_rows=37)
    out["whatif_sums"] = np.concatenate([np.r_[s.sum_w, s.sum_unit] for s in sums[:-1]])
    out["whatif_sums_error"] = np.frombuffer(str(feed.errors[-1]).encode(), dtype=np.uint8)


def _pass_arrays(block_size: int | None) -> dict[str, np.ndarray]:
    x, y, gx, gy, labels = data()
    out: dict[str, np.ndarray] = {}
    full = modality_pass(x, labels, k=KS, block_size=block_size)
    sampled = modality_pass(
        x, labels, k=KS, block_size=block_size, query_index=np.arange(3, 530, 4)
    )
    # Sampled queries against keys normalised on the fly: the kernel and the intra-modal ranks
    # (captions: each one's item is the other caption) counted down 17 chunks of keys, and a
    # kernel in the log domain (4t beyond float32's range); and x's sampled queries ranked
    # against y from the same chunks (a cross direction riding on the pass).
    STREAMED_CHUNKS[0] = 0
    queries = np.arange(0, 1060, 5)
    streamed = modality_pass(
        _streamed(y),
        gy,
        k=KS,
        block_size=block_size,
        query_index=queries,
        cross=[CrossQueries(x, gx, gy, np.arange(0, 530, 3))],
    )
    out["streamed_x_to_y"] = streamed.cross[0].first_rank
    shifted = modality_pass(_streamed(y), None, t=32.0, query_index=queries)
    out["shifted_terms"] = shifted.uniformity_row_terms
    for name, r in (("full", full), ("sampled", sampled), ("streamed", streamed)):
        out[f"{name}_terms"] = r.uniformity_row_terms
        out[f"{name}_value"] = np.array([r.uniformity])
        out[f"{name}_ranks"] = r.retrieval.first_rank
        out[f"{name}_ap"] = r.retrieval.average_precision
        out[f"{name}_rp"] = r.retrieval.r_precision_per_query
        out[f"{name}_means"] = np.array(
            [r.retrieval.mean_average_precision, r.retrieval.r_precision]
        )
    _whatif_arrays(out, x, y, gx, gy, labels, queries, block_size)
    for name, kwargs in (
        ("cross", {}),
        (
            "cross_sampled",
            {"query_index_x": np.arange(0, 530, 3), "query_index_y": np.arange(1, 1060, 7)},
        ),
    ):
        r = cross_pair_pass(x, y, gx, gy, k=KS, block_size=block_size, kernel_t=2.0, **kwargs)
        out[f"{name}_x_to_y"] = r.x_to_y.first_rank
        out[f"{name}_y_to_x"] = r.y_to_x.first_rank
        out[f"{name}_kernel"] = np.array([r.kernel.log_mean, r.kernel.se or 0.0])
    # MIR's moments (blocks of 37 rows) and its medians (norm outliers: slices of columns),
    # float16 (counted) and float32 (partitioned).
    outlying = x.copy()
    outlying[::53] *= 6.0
    for dtype in (np.float16, np.float32):
        r = mir.modality_integration_rate(
            outlying.astype(dtype), y.astype(dtype), block_size=block_size or 37
        )
        out[f"mir_{dtype.__name__}"] = np.array([r.mir, r.fd, r.outliers_x, r.outliers_y])
    # The medians' radix select (chunks of rows shared out, their counts added up): float16,
    # float32 and float64, an even count (two middle values, which may part) and an odd one.
    spread = np.random.default_rng(5).normal(size=x.shape) * np.array([1, 1e-3, 1e3, 1, 1, 1, 1, 1])
    for dtype in (np.float16, np.float32, np.float64):
        for rows in (x + spread, (x + spread)[:-1], x):
            a = rows.astype(dtype)
            out[f"radix_{dtype.__name__}_{len(out)}"] = column_medians._RadixSelect(
                a, 10**9
            ).medians()
    # A read that fails on the process reading the chunk raises on every process: there
    # the read's own error, elsewhere a crash of another process.
    raised = 0
    try:
        column_medians._RadixSelect(_FailingRows(x, 300), 10**9).medians()
    except (FloatingPointError, ProcessCrashedError):
        raised = 1
    out["radix_raised"] = np.array([raised])
    # The paired cosines (blocks of 37 groups) and the alignment (chunks of 37 pairs).
    cosines = paired_cosine(x, y, gx, gy, block_size=37)
    out["cosines"] = np.array([cosines.paired, cosines.unpaired, cosines.paired_total])
    out["alignment"] = np.array(
        [alignment(x, y, gx, gy, block_size=37), alignment(x, y, gx, gy, 1.5, block_size=37)]
    )
    # The similarity statistics (their cosines in chunks of 37 pairs: 29 chunks of positive
    # pairs, 14 of sampled negatives, shared out), as printed.
    cosines_of = similarity_module._cosines
    SIMILARITY_CHUNKS[0] = 0

    def counted(*args: np.ndarray) -> np.ndarray:
        SIMILARITY_CHUNKS[0] += 1
        return cosines_of(*args)

    similarity_module._cosines = counted
    try:
        similarity = similarity_stats(x, y, gx, gy, max_negatives=500, block_size=37)
    finally:
        similarity_module._cosines = cosines_of
    out["similarity"] = np.frombuffer(repr(similarity).encode(), dtype=np.uint8)
    # The validating read of an analysis (slices of 50 rows: the raw norms, the formats that
    # hold the values, the unit-row sums, the raw moments), and the first bad row named alike
    # everywhere.
    stats = _ReadStats(*x.shape, 50, sums=True, moments=True)
    check_embeddings(x, "x", slice_rows=50, stats=stats)
    assert stats.unit is not None and stats.moments is not None
    norms = stats.norms.result()
    out["read_norms"] = norms.norms
    out["read_sums"] = np.r_[stats.unit.total, stats.unit.squares, stats.unit.n]
    moments = stats.moments.result()
    out["read_moments"] = np.r_[
        moments.rows, moments.exponent, moments.mean, moments.scatter.ravel()
    ]
    out["read_rounding"] = np.frombuffer(norms.rounding.encode(), dtype=np.uint8)
    # The medians of float16 rows counted in the same read: each process counts the slices
    # it reads, and the counts are added over the processes.
    rows16 = (x + np.random.default_rng(5).normal(size=x.shape)).astype(np.float16)
    stats = _ReadStats(*x.shape, 50, sums=False, moments=True, medians=True)
    check_embeddings(rows16, "x", slice_rows=50, stats=stats)
    assert stats.medians is not None
    out["read_medians"] = stats.medians.medians()
    bad = x.copy()
    bad[[333, 401], 2] = [np.nan, 0.0]
    bad[401] = 0.0
    for rows in (bad, bad[::-1]):
        try:
            check_embeddings(rows, "x", slice_rows=50, stats=_ReadStats(*x.shape, 50, sums=True))
        except EmbeddingError as error:
            out[f"bad_{len(out)}"] = np.frombuffer(str(error).encode(), dtype=np.uint8)
    # The unit rows' scatter (the gap direction, the effective rank), blocks of 37 rows.
    mean, scatter = unit_scatter(x, block_size=37)
    out["scatter"] = np.r_[mean, scatter.reshape(-1)]
    out["scatter_raw"] = unit_scatter(y, center=False, block_size=37)[1]
    # Blocks folded in order, with the bits they were made with (-0.0 included).
    MADE_BLOCKS[0] = 0
    folded: list[np.ndarray] = []

    def make(b: int) -> np.ndarray:
        MADE_BLOCKS[0] += 1
        return np.array([b, -0.0 if b % 2 else 1.5])

    current_share().in_order(7, make, lambda b, v: folded.append(np.r_[b, v]), 2)
    out["in_order"] = np.array(folded)
    # A block that fails on the process making it raises on every process, none left waiting.
    raised = 0

    def failing(b: int) -> np.ndarray:
        if b == 5:
            raise FloatingPointError("block 5")
        return np.zeros(1)

    share = current_share()
    try:
        share.in_order(7, failing, lambda b, v: None, 1)
    except FloatingPointError:
        raised = int(share.rank == 5 % share.world)
    except ProcessCrashedError:
        raised = int(share.rank != 5 % share.world)
    out["raised"] = np.array([raised])
    return out


def main(folder: str, threads: int = 1) -> None:
    import torch.distributed as dist

    from gapscope.engine import distributed
    from gapscope.engine.distributed import process_group_share, sharing

    torch.set_num_threads(threads)
    # A process left waiting (an exchange missed) fails the test instead of hanging it.
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=120))
    # A status exchange every round of a pass's blocks, so that every pass whose blocks do not
    # split evenly (15 blocks of 37 rows and 45 tiles over 2 processes; 4 blocks of sampled
    # queries and the cross pass's 29 over 3) makes a process with a block fewer catch up: an
    # exchange missed there would pair with another process's reduction and fail the pass.
    distributed.PACE_ROUNDS = 1
    try:
        with sharing(process_group_share()) as share:
            arrays = pass_arrays()
        np.savez(os.path.join(folder, f"rank-{share.rank}.npz"), **arrays)
        with open(os.path.join(folder, f"chunks-{share.rank}.txt"), "w") as f:
            f.write(f"{STREAMED_CHUNKS[0]} {MADE_BLOCKS[0]} {SIMILARITY_CHUNKS[0]}")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:3]))
