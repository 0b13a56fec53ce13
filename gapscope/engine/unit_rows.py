"""The unit rows the similarity products read: held in memory, or normalised block by block.

Every O(n^2) metric multiplies L2-normalised rows. For a probe set that fits, one float32 copy
of the unit rows is made once and every block is a view of it. For a store of a million rows
a modality that copy alone is 2 GiB (4 GiB for a pair), so with ``--sample`` (few queries,
every row a key) :class:`UnitRows` can instead keep only the (memory-mapped) source and
normalise each block of keys again whenever a pass reads it: memory is then one chunk of keys,
whatever n is, at the price of one O(n d) normalisation a pass over the keys.

Both modes give bit-identical rows (a row's unit vector depends on that row alone, see
:func:`~gapscope.engine.normalization.normalize_rows`); their products agree to float32 rounding
(a BLAS may sum a chunk of keys in another order than the whole matrix; with the edges of
every product made as :func:`matmul_into` makes them, MKL on the reference CPU gives the same
bits), so the metrics agree wherever two scores are further apart than that. The choice
is a pure function of the shapes (:func:`fits_in_memory`), so the same input always takes
the same path and gives the same bits; within a path, :meth:`UnitRows.block_scores` makes
every score by the same product whatever the block size.

``dtype=torch.bfloat16`` (``analyze --precision bf16``) rounds the unit rows to bfloat16 (8
significant bits) and multiplies them with float32 accumulation and a float32 result
(:func:`matmul`). On CUDA the rows are kept in bfloat16 (half the memory) and the products run
on the bfloat16 tensor cores. torch has no CPU product of bfloat16 inputs with a float32
result (its bfloat16 product rounds every score to 8 bits, which ties most of them), so on
the CPU the rounded rows are kept as float32 and multiplied in float32: the same numbers as
the GPU up to the order of the sums, at float32 speed.

``offset`` moves every unit row before it is normalised again (``(u_i - v) / ||u_i - v||``):
the gap-closing what-ifs (:mod:`gapscope.analysis.whatif`) measure mean-centred and shifted
rows this way without a float64 copy of the transformed modality.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Protocol

import numpy as np
import torch

from gapscope.engine.blocks import row_blocks, similarity_block_rows
from gapscope.engine.normalization import normalize_rows
from gapscope.engine.validation import ArrayLike, Embeddings, check_embeddings
from gapscope.errors import EmbeddingError

__all__ = [
    "IN_MEMORY_BUDGET_BYTES",
    "MIN_NORM",
    "PRECISIONS",
    "STREAM_CHUNK_ROWS",
    "RowSource",
    "UnitRows",
    "as_unit_rows",
    "exact_scores",
    "fits_in_memory",
    "full_float32_products",
    "matmul",
    "matmul_into",
    "moved_norms",
    "moved_unit_rows",
    "rowwise_dot",
]

#: ``--precision`` names and the dtype the unit rows are multiplied in.
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}

#: Unit rows (float32) of all modalities together up to this size are held in memory.
IN_MEMORY_BUDGET_BYTES = 1 << 30
#: Rows a chunk of keys when the unit rows are normalised on the fly (128 MiB at d = 512).
STREAM_CHUNK_ROWS = 65536
#: A transformed row shorter than this (a unit row is 1) has lost its direction.
MIN_NORM = 1e-6


def fits_in_memory(n_rows: int, dim: int) -> bool:
    """Whether ``n_rows`` float32 unit rows of ``dim`` values fit ``IN_MEMORY_BUDGET_BYTES``.

    >>> fits_in_memory(100_000, 512), fits_in_memory(2_000_000, 512)
    (True, False)
    """
    return n_rows * dim * 4 <= IN_MEMORY_BUDGET_BYTES


class UnitRows:
    """Float32 unit rows of an ``(n, d)`` embedding matrix, on ``device``.

    Args:
        x: the embeddings, already checked (finite, no zero rows); numpy arrays (memory maps
            welcome) or torch tensors. Checked :class:`Embeddings` that came as a tensor on
            ``device`` (a GPU) are normalised from that tensor, never through the host.
        device: where blocks and products live.
        in_memory: keep one float32 copy (``True``) or normalise blocks on the fly.
        offset: subtract this ``(d,)`` vector from every unit row, then normalise again.
        name: the modality's name, for errors.
        why: what it means when ``offset`` sends a row to the origin, for the error.
        chunk_rows: rows a chunk (default ``STREAM_CHUNK_ROWS``).
        already_unit: ``x`` is a float32 tensor of unit rows on ``device``: use it as is.
        dtype: float32, or bfloat16 to round the rows to it (kept in bfloat16 on CUDA; the
            products are float32 either way, see the module notes).
        on_rows: called as ``on_rows(start, rows)`` with the source rows of every chunk this
            constructor reads (in row order), before they are normalised: a caller that needs
            its own statistics of the rows gets them from the same read. Whether every row
            was seen is :attr:`rows_seen` (not when the rows are neither kept nor offset).

    Raises:
        EmbeddingError: with ``offset``, a row it sends (within 1e-6) to the origin.
    """

    def __init__(
        self,
        x: ArrayLike,
        *,
        device: torch.device | str | None = None,
        in_memory: bool = True,
        offset: np.ndarray | None = None,
        name: str = "x",
        why: str = "is sent to the origin by the offset",
        chunk_rows: int | None = None,
        already_unit: bool = False,
        dtype: torch.dtype = torch.float32,
        on_rows: Callable[[int, ArrayLike], None] | None = None,
    ) -> None:
        self.device = torch.device(device or "cpu")
        self.rows_seen = False
        if isinstance(x, Embeddings):
            x = _source_rows(x, self.device)
        self.source = x
        self.shape: tuple[int, int] = (int(x.shape[0]), int(x.shape[1]))
        self.chunk_rows = max(1, int(chunk_rows or STREAM_CHUNK_ROWS))
        self.name, self._why = name, why
        self.dtype = dtype
        # What the rows are held in: bfloat16 only where products of it are float32 (CUDA).
        self._storage = dtype if self.device.type == "cuda" else torch.float32
        self._offset = None
        if offset is not None:
            self._offset = torch.as_tensor(np.asarray(offset, dtype=np.float32)).to(self.device)
        self._full: torch.Tensor | None = None
        self._duplicates: tuple[torch.Tensor, torch.Tensor] | None = None
        self._first_of: np.ndarray | None = None
        # Scratch buffers are a thread's own: lanes multiply blocks at once; the duplicates
        # are found once, by the first lane that asks.
        self._scratch_buffers = threading.local()
        self._finding_duplicates = threading.Lock()
        if (
            already_unit
            and isinstance(x, torch.Tensor)
            and offset is None
            and dtype == torch.float32
        ):
            # Float32 unit rows on the device already (e.g. from normalize_rows): no copy.
            self._full = x
        elif in_memory:
            full = torch.empty(self.shape, dtype=self._storage, device=self.device)
            for start, rows in self._source_chunks(on_rows):
                full[start : start + rows.shape[0]] = self._normalise(rows, start)
            self._full = full
        elif self._offset is not None:
            # Stream once now so that a degenerate row fails here, not deep inside a pass.
            for start, rows in self._source_chunks(on_rows):
                self._normalise(rows, start)

    def _source_chunks(
        self, on_rows: Callable[[int, ArrayLike], None] | None
    ) -> Iterator[tuple[int, ArrayLike]]:
        """``(start, source rows)`` of every chunk, each handed to ``on_rows`` first."""
        for start in range(0, self.shape[0], self.chunk_rows):
            rows = self.source[start : min(self.shape[0], start + self.chunk_rows)]
            if on_rows is not None:
                on_rows(start, rows)
            yield start, rows
        self.rows_seen = on_rows is not None

    @property
    def in_memory(self) -> bool:
        return self._full is not None

    def __len__(self) -> int:
        return self.shape[0]

    def block(self, start: int, stop: int) -> torch.Tensor:
        """Unit rows ``start:stop`` (a view when in memory)."""
        if self._full is not None:
            return self._full[start:stop]
        return self._normalise(self.source[start:stop], start)

    def take(self, index: np.ndarray) -> torch.Tensor:
        """Unit rows at ``index`` (int64, any order, repeats allowed), as a new tensor."""
        index = np.asarray(index, dtype=np.int64)
        if self._full is not None:
            return self._full.index_select(0, torch.from_numpy(index).to(self.device))
        if index.size and bool((np.diff(index) == 1).all()):
            return self.block(int(index[0]), int(index[-1]) + 1)
        source = self.source
        picked = (
            source[torch.from_numpy(index)] if isinstance(source, torch.Tensor) else source[index]
        )
        return self._normalise(picked, None, index)

    def chunks(self) -> Iterator[tuple[int, int, torch.Tensor]]:
        """``(start, stop, rows)`` over every row, ``chunk_rows`` at a time."""
        n = self.shape[0]
        for start in range(0, n, self.chunk_rows):
            stop = min(n, start + self.chunk_rows)
            yield start, stop, self.block(start, stop)

    def block_scores(
        self,
        queries: Callable[[int, int], torch.Tensor],
        n_queries: int,
        start: int,
        stop: int,
        out: torch.Tensor,
    ) -> torch.Tensor:
        """Scores of the queries at positions ``start:stop`` of a fixed list of ``n_queries``
        against every key, into ``out`` (``(stop - start, n)`` float32); ``queries(a, b)`` gives
        the unit query rows at positions ``a:b``.

        Every score comes from the same product whatever ``start:stop`` is: the queries are
        cut into tiles of :func:`~gapscope.engine.blocks.similarity_block_rows` positions (a
        function of the number of keys only) counted from position 0, and each tile is one
        product against the keys. A BLAS rounds a dot product differently in products of
        different shapes (blocks of 7 and of 1024 rows disagree in the last bit of a third of the
        scores), which would let the block size reach the sums that are not ranks
        (uniformity). With the default block size a block is a tile; a block that covers a
        tile only in part computes the whole tile into a scratch buffer and copies its rows
        out, so other block sizes cost up to a tile's product per block more."""
        tile = similarity_block_rows(self.shape[0])
        for t0 in range(start - start % tile, stop, tile):
            t1 = min(t0 + tile, n_queries)
            lo, hi = max(t0, start), min(t1, stop)
            if (lo, hi) == (t0, t1):
                self.scores(queries(t0, t1), out[lo - start : hi - start])
            else:
                product = self.scores(queries(t0, t1), self._scratch(t1 - t0))
                out[lo - start : hi - start] = product[lo - t0 : hi - t0]
        return out

    def scratch_bytes(self, block: int) -> int:
        """The bytes of the scratch tile :meth:`block_scores` takes on each thread that calls it
        with blocks of ``block`` query positions: none when every block covers whole tiles."""
        tile = similarity_block_rows(self.shape[0])
        return 0 if block % tile == 0 else 4 * tile * self.shape[0]

    def _scratch(self, rows: int) -> torch.Tensor:
        """A ``(rows, n)`` float32 buffer for tiles a block covers in part, reused (a
        :func:`score_buffer`, so its rows are aligned like the blocks')."""
        held: torch.Tensor | None = getattr(self._scratch_buffers, "buffer", None)
        if held is None or held.shape[0] < rows:
            held = self._scratch_buffers.buffer = score_buffer(rows, self.shape[0], self.device)
        return held[:rows]

    def scores(self, queries: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``queries @ U^T`` into ``out`` (``(q, n)`` float32), reading the keys chunk by chunk
        when they are not in memory.

        Identical unit rows (duplicated items) share one score: a product can round the same
        dot product differently in different columns, which would order duplicates by
        rounding rather than by index. Each duplicate column gets the score of its first
        occurrence (for rows held in memory, where the duplicates are found once)."""
        if self._full is None:
            for start, stop, keys in self.chunks():
                matmul_into(queries, keys, out[:, start:stop])
            return out
        matmul_into(queries, self._full, out)
        duplicates, firsts = self.duplicates()
        if duplicates.numel():
            out[:, duplicates] = out[:, firsts]
        return out

    def duplicates(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rows, firsts)``: every row (ascending) whose unit vector equals an earlier row's,
        and the first row with that vector; empty when all rows differ or they are not held in
        memory. Found by one sort of the rows' bytes, once."""
        with self._finding_duplicates:
            if self._duplicates is None:
                self._duplicates = self._find_duplicates()
        return self._duplicates

    def first_rows(self, index: np.ndarray) -> np.ndarray:
        """For each row of ``index``, the first row whose unit vector has the same bits: the
        row itself when it has no earlier twin or the rows are not held in memory (int64). A
        row's exact scores depend on its bits alone, so a twin's are its first row's."""
        index = np.asarray(index, dtype=np.int64)
        duplicates, firsts = self.duplicates()
        if not duplicates.numel():
            return index
        with self._finding_duplicates:
            if self._first_of is None:
                first_of = np.arange(self.shape[0], dtype=np.int64)
                first_of[duplicates.cpu().numpy()] = firsts.cpu().numpy()
                self._first_of = first_of
        return self._first_of[index]

    def _find_duplicates(self) -> tuple[torch.Tensor, torch.Tensor]:
        empty = torch.empty(0, dtype=torch.long, device=self.device)
        if self._full is None or self.shape[0] <= 1:
            return empty, empty
        rows = np.ascontiguousarray(self._full.float().cpu().numpy())
        firsts = _first_equal_rows(rows)
        dup = np.flatnonzero(firsts != np.arange(rows.shape[0]))
        if not dup.size:
            return empty, empty
        return (
            torch.from_numpy(dup).to(self.device),
            torch.from_numpy(firsts[dup].astype(np.int64)).to(self.device),
        )

    def _normalise(
        self, rows: ArrayLike, start: int | None, index: np.ndarray | None = None
    ) -> torch.Tensor:
        unit = normalize_rows(rows, device=self.device)
        if self._offset is None:
            return self._rounded(unit)
        moved, norms = moved_unit_rows(unit, self._offset)
        short = np.flatnonzero(norms < MIN_NORM)
        if short.size:
            at = int(short[0])
            row = start + at if start is not None else int(index[at])  # type: ignore[index]
            raise EmbeddingError(f"{self.name}: row {row} {self._why}, so it has no direction left")
        return self._rounded(moved)

    def _rounded(self, unit: torch.Tensor) -> torch.Tensor:
        if self.dtype == torch.float32:
            return unit
        return unit.to(self.dtype).to(self._storage)


def moved_unit_rows(unit: torch.Tensor, offset: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
    """``fl32(fl32(u_i - p) / nu_i)`` for float32 unit rows ``u_i`` and a float32 offset ``p``,
    with ``nu_i`` the float64 norm of ``fl32(u_i - p)`` (also returned, as numpy).

    The difference is one float32 operation an element, the norm a numpy sum along the row
    and the quotient rounded once, so a row's bits depend on that row alone (not on how many
    rows come with it, nor on the thread count). Rows whose norm is below :data:`MIN_NORM`
    are the caller's to refuse (their quotient is meaningless)."""
    moved, norms = _moved_rows(unit, offset)
    with np.errstate(divide="ignore", invalid="ignore"):
        moved /= norms[:, None]
    return torch.from_numpy(moved.astype(np.float32)).to(unit.device), norms


def moved_norms(unit: torch.Tensor, offset: torch.Tensor) -> np.ndarray:
    """The norms ``nu_i`` of :func:`moved_unit_rows` alone (the same bits), without the rows."""
    return _moved_rows(unit, offset)[1]


def _moved_rows(unit: torch.Tensor, offset: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``fl32(u_i - p)`` as float64, and each row's float64 norm (a numpy sum along the row)."""
    moved = (unit - offset).cpu().numpy().astype(np.float64)
    return moved, np.sqrt(np.multiply(moved, moved).sum(axis=1))


def _first_equal_rows(rows: np.ndarray) -> np.ndarray:
    """For each row, the first row with the same bytes (itself when it has no earlier twin).

    Rows are hashed to one 64-bit word each (a fixed random linear form of their 32-bit
    words, wrapping), and only rows whose hash occurs more than once are compared byte for
    byte: sorting every row's full bytes instead takes seconds at 250k rows."""
    n = rows.shape[0]
    words = np.ascontiguousarray(rows).view(np.uint32)
    weights = np.random.default_rng(0).integers(1, 2**63, size=words.shape[1], dtype=np.uint64)
    weights |= np.uint64(1)
    hashes = np.zeros(n, dtype=np.uint64)
    # A few thousand rows at a time: the 64-bit products stay small beside the rows.
    for start, stop in row_blocks(n, 4096):
        hashes[start:stop] = (words[start:stop].astype(np.uint64) * weights).sum(axis=1)
    firsts = np.arange(n)
    _, inverse, counts = np.unique(hashes, return_inverse=True, return_counts=True)
    shared = np.flatnonzero(counts[inverse.reshape(-1)] > 1)
    if shared.size:
        keys = np.ascontiguousarray(rows[shared])
        keys = keys.view(np.dtype((np.void, keys.dtype.itemsize * keys.shape[1])))[:, 0]
        _, first, same = np.unique(keys, return_index=True, return_inverse=True)
        firsts[shared] = shared[first[same.reshape(-1)]]
    return firsts


def _source_rows(x: Embeddings, device: torch.device) -> ArrayLike:
    """The rows :class:`UnitRows` normalises on ``device``: the caller's tensor when it lives
    on that GPU already, else the rows on the host (for a CPU tensor these are its own
    memory, or its exact float32 widening for bfloat16, so CPU tensors and numpy arrays take
    one path and give the same bits)."""
    tensor = x.tensor
    if tensor is not None and _same_gpu(tensor.device, device):
        return tensor
    return x.array


def _same_gpu(a: torch.device, b: torch.device) -> bool:
    """Whether two devices are one CUDA device (``cuda`` means the current one)."""
    if a.type != "cuda" or b.type != "cuda":
        return False
    current = torch.cuda.current_device()
    first = current if a.index is None else a.index
    return first == (current if b.index is None else b.index)


#: Passes entered into :func:`full_float32_products` (lanes multiply at once), and how to
#: put the caller's settings back when the last one leaves.
_FULL_LOCK = threading.Lock()
_full_depth = 0
_full_restore: Callable[[], None] | None = None


@contextlib.contextmanager
def full_float32_products() -> Iterator[None]:
    """Float32 products with float32 inputs and accumulation while inside, whatever the caller
    set: TF32 on CUDA, or ``torch.set_float32_matmul_precision("high"/"medium")`` (which also
    lets oneDNN multiply float32 in bfloat16 on a CPU), round the inputs to 10 or 8 bits,
    beyond the error bound the ranking relies on
    (:func:`~gapscope.engine.ranking.score_error_bound`). The settings are torch's, one for
    the process: threads that multiply at once (lanes) share one entry, made by the first
    to come in, and the caller's settings come back when the last one leaves."""
    global _full_depth, _full_restore
    with _FULL_LOCK:
        if _full_depth == 0:
            _full_restore = _force_full_float32()
        _full_depth += 1
    try:
        yield
    finally:
        with _FULL_LOCK:
            _full_depth -= 1
            if _full_depth == 0 and _full_restore is not None:
                restore, _full_restore = _full_restore, None
                restore()


def _force_full_float32() -> Callable[[], None] | None:
    """Set full float32 products; return what puts the previous settings back (``None``:
    they were full already)."""
    backends = [
        b
        for b in (
            getattr(torch.backends.cuda, "matmul", None),
            getattr(getattr(torch.backends, "mkldnn", None), "matmul", None),
        )
        if b is not None and hasattr(b, "fp32_precision")
    ]
    if backends:  # torch's per-backend settings (mixing them with the legacy ones is an error)
        saved = [b.fp32_precision for b in backends]
        if all(v == "ieee" for v in saved):
            return None
        for b in backends:
            b.fp32_precision = "ieee"

        def restore_backends() -> None:
            for b, value in zip(backends, saved, strict=True):
                b.fp32_precision = value

        return restore_backends
    precision = torch.get_float32_matmul_precision()
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.set_float32_matmul_precision("highest")
    torch.backends.cuda.matmul.allow_tf32 = False

    def restore_legacy() -> None:
        torch.set_float32_matmul_precision(precision)
        torch.backends.cuda.matmul.allow_tf32 = tf32

    return restore_legacy


def score_buffer(rows: int, columns: int, device: torch.device) -> torch.Tensor:
    """An uninitialised ``(rows, columns)`` float32 buffer for blocks of scores.

    On a CPU its rows are :data:`_ROW_ALIGN` floats apart (a view of a slightly wider
    buffer): a product written into rows whose stride is not such a multiple runs up to a
    third slower (20,001 keys: about 0.7x the speed of 20,000; ``benchmarks/bench_product_width.py``
    and ``docs/performance.md``). Every row is contiguous, and the scores are the same bits
    either way."""
    if device.type != "cpu" or columns % _ROW_ALIGN == 0:
        return torch.empty((rows, columns), dtype=torch.float32, device=device)
    stride = columns + _ROW_ALIGN - columns % _ROW_ALIGN
    return torch.empty((rows, stride), dtype=torch.float32, device=device)[:, :columns]


#: Floats between the starts of two rows of a CPU score buffer (128 bytes).
_ROW_ALIGN = 32


def matmul(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """``queries @ keys^T`` as float32, for float32 or bfloat16 rows (see the module notes),
    every score the same bits whatever the thread count (:func:`matmul_into`)."""
    out = torch.empty((queries.shape[0], keys.shape[0]), dtype=torch.float32, device=keys.device)
    return matmul_into(queries, keys, out)


#: A product's scores are made in blocks of whole groups of this many query rows and
#: :data:`_KEY_GROUP` keys (the last group padded with zero rows), because a CPU BLAS may round
#: the scores of a ragged edge differently with different thread counts. Measured with MKL's
#: float32 product (AVX-512, torch 2.14): blocks of 5-7 or 9-11 query rows took other bits on
#: 2 threads than on 1, and with 16-64 threads so did ragged row counts up to about 150 and
#: key counts below about 150 that are not a multiple of 16; on an Intel Xeon with AMX, products
#: of 12 rows or fewer took other bits than larger ones at 512 and 768 dimensions on any thread
#: count (groups of 4 rows were too few there). Every score of blocks cut this way equalled
#: the same score of one large product, on 1 to 64 threads (``tests/engine/test_products.py``),
#: except on that Xeon at 1,024 dimensions and more, where most shapes and
#: thread counts took bits of their own (``docs/architecture.md``, section 7.4).
_QUERY_GROUP = 16
_KEY_GROUP = 16


def matmul_into(queries: torch.Tensor, keys: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """:func:`matmul` into the float32 buffer ``out`` (``(q, n)``; no temporary for float32
    rows whose shape is a whole number of groups).

    A score's bits depend on its two rows alone, not on the shape of the product it is made
    in nor on the thread count: the whole groups of query rows and keys are one product, the
    ragged edges (fewer than :data:`_QUERY_GROUP` rows, fewer than :data:`_KEY_GROUP` keys)
    products of their own, padded to whole groups. The edges cost at most a product of
    ``q x 16`` and one of ``16 x n``."""
    q, n = queries.shape[0], keys.shape[0]
    if q and n and out.stride(-1) != 1:
        # A BLAS writes a buffer whose columns are apart in another order, with other bits.
        return out.copy_(matmul(queries, keys))
    q_main, n_main = q - q % _QUERY_GROUP, n - n % _KEY_GROUP
    if q_main and n_main:
        _product_into(queries[:q_main], keys[:n_main], out[:q_main, :n_main])
    if q_main < q and n_main:
        edge = _padded(queries[q_main:], _QUERY_GROUP)
        out[q_main:, :n_main] = _product(edge, keys[:n_main])[: q - q_main]
    if n_main < n:
        rows = _padded(queries, _QUERY_GROUP)
        out[:, n_main:] = _product(rows, _padded(keys[n_main:], _KEY_GROUP))[:q, : n - n_main]
    return out


def _padded(rows: torch.Tensor, group: int) -> torch.Tensor:
    """``rows`` followed by zero rows up to a whole number of ``group`` rows."""
    extra = -rows.shape[0] % group
    if not extra:
        return rows
    return torch.cat([rows, rows.new_zeros((extra, rows.shape[1]))])


def _product(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """``queries @ keys^T`` as a new float32 tensor, for float32 or bfloat16 rows."""
    with full_float32_products():
        if queries.dtype == torch.float32:
            return torch.mm(queries, keys.T)
        try:
            # bf16 inputs, float32 accumulation and float32 output (torch >= 2.8 on CUDA).
            return torch.mm(queries, keys.T, out_dtype=torch.float32)
        except (TypeError, RuntimeError):
            # Never a product rounded to bf16: the same numbers from float32 copies.
            return torch.mm(queries.float(), keys.float().T)


def _product_into(queries: torch.Tensor, keys: torch.Tensor, out: torch.Tensor) -> None:
    if queries.dtype == torch.float32:
        with full_float32_products():
            torch.mm(queries, keys.T, out=out)
    else:
        out.copy_(_product(queries, keys))


class RowSource(Protocol):
    """Float32 rows that can be picked by index: :class:`UnitRows`, or
    :class:`~gapscope.engine.offset_passes.OffsetRows`."""

    shape: tuple[int, int]

    def take(self, index: np.ndarray) -> torch.Tensor: ...

    def first_rows(self, index: np.ndarray) -> np.ndarray: ...


# Pairs a chunk of exact_scores (two gathers of this many rows, and their float64 products).
_EXACT_CHUNK = 4096


def exact_scores(a: RowSource, rows_a: np.ndarray, b: RowSource, rows_b: np.ndarray) -> np.ndarray:
    """The float64 dot product of unit rows ``a[rows_a[p]]`` and ``b[rows_b[p]]`` for every
    pair ``p``.

    The rows are the ones the products multiply (float32, or bfloat16 with ``--precision
    bf16``); every elementwise product is exact in float64 and each pair's terms are summed by
    numpy along one contiguous row, so a pair's score depends on its two rows alone, never on
    a block's shape or a thread count. The ranking resolves near-ties with these scores
    (:mod:`gapscope.engine.ranking`).
    """
    rows_a = np.asarray(rows_a, dtype=np.int64)
    rows_b = np.asarray(rows_b, dtype=np.int64)
    out = np.empty(rows_a.size, dtype=np.float64)
    for start in range(0, rows_a.size, _EXACT_CHUNK):
        stop = min(rows_a.size, start + _EXACT_CHUNK)
        left = _taken_once(a, rows_a[start:stop])
        right = _taken_once(b, rows_b[start:stop])
        # Each float32 (or bfloat16) entry widens exactly to float64 as it is multiplied:
        # the same products and sums as float64 copies, without making them.
        out[start:stop] = np.multiply(left, right, dtype=np.float64).sum(axis=1)
    return out


def _taken_once(source: RowSource, index: np.ndarray) -> np.ndarray:
    """``source.take(index)`` on the host, each distinct row taken once: the pairs of a
    window's keys share their query, and a moved row (the what-ifs) is made anew at every
    take. A row's bits depend on that row alone, so repeating it is the same."""
    distinct, inverse = np.unique(index, return_inverse=True)
    if distinct.size == index.size:
        return _host_float32(source.take(index))
    return _host_float32(source.take(distinct))[inverse]


def _host_float32(rows: torch.Tensor) -> np.ndarray:
    """``rows`` as a float32 numpy array on the host (bfloat16 widens exactly)."""
    rows = rows.cpu()
    return (rows if rows.dtype == torch.float32 else rows.float()).numpy()


def rowwise_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``sum(a * b, dim=1)`` as float32; for bfloat16 rows a batch of 1 x 1 products with
    float32 results (how the terms are summed may differ from a block's product in the last
    bit; callers that compare the two must not rely on bit equality)."""
    if a.dtype == torch.float32:
        return (a * b).sum(dim=1)
    return matmul_batched(a[:, None, :], b[:, :, None]).reshape(-1)


def matmul_batched(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.bmm`` as float32 for bfloat16 inputs, like :func:`matmul`."""
    with full_float32_products():
        try:
            return torch.bmm(a, b, out_dtype=torch.float32)
        except (TypeError, RuntimeError):
            return torch.bmm(a.float(), b.float())


def as_unit_rows(
    x: ArrayLike | UnitRows, name: str = "x", *, device: torch.device, min_rows: int = 1
) -> UnitRows:
    """``x`` as :class:`UnitRows` on ``device``: itself when it is one, a float32 unit tensor on
    ``device`` without a copy, anything else checked and normalised into memory.

    Raises:
        EmbeddingError: bad embeddings (see ``check_embeddings``), fewer than ``min_rows``.
    """
    if isinstance(x, UnitRows):
        if x.shape[0] < min_rows:
            raise EmbeddingError(f"{name}: needs at least {min_rows} rows, got {x.shape[0]}")
        return x
    arr = check_embeddings(x, name, min_rows=min_rows)
    if isinstance(x, torch.Tensor) and x.dtype == torch.float32 and x.device == device:
        norms = torch.linalg.vector_norm(x, dim=1)
        if bool(((norms - 1.0).abs() <= 1e-6).all()):
            return UnitRows(x, device=device, already_unit=True, name=name)
    return UnitRows(arr, device=device, name=name)
