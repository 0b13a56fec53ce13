"""The O(n^2) passes: every similarity-based metric, from one pass over each product.

Uniformity and intra-modal retrieval of ``x`` both read ``X X^T``; those of ``y`` read
``Y Y^T``; ``x -> y`` and ``y -> x`` retrieval both read ``X Y^T``. Each block of rows of a
product is computed once and every metric that needs it reads it before the next block is
made, so a pair costs three products and memory stays ``O((n + m) d + block * max(n, m))``.
These passes are the only implementation of those metrics: the public functions of
:mod:`gapscope.metrics` and the analysis call them, so both give the same numbers.

* :func:`modality_pass` (one ``X X^T`` pass): uniformity (exact over every row, or estimated
  from sampled query rows), and intra-modal recall@K, mAP and R-precision. Over every row it
  reads only the tiles on and above the diagonal of ``X X^T``
  (:mod:`~gapscope.engine.self_tiles`); sampled queries read blocks of their rows.
* :func:`cross_pass` (one ``X Y^T`` pass): one direction from the block rows, the other from
  the block *columns*. For a column query j the score of its best positive,
  ``b_j = max_{i in P(j)} s_ij``, is known before the pass (from the positive pairs alone),
  so its rank

      rank_j = #{i not in P(j) : s_ij > b_j} + #{i not in P(j), i < i*_j : s_ij = b_j}

  (``i*_j`` the lowest-index best positive) is a count accumulated column-wise over the
  blocks. Positives are never counted, so the positive's own score, rounded differently by the
  product than by the up-front dot product, can never rank it above itself.

Blocks partition the query rows (every row, or the sampled ones) by a rule that depends only
on the shapes and ``block_size``, never on which metrics are asked for, and :func:`cross_pass`
orients ``X Y^T`` by the data alone (:func:`_blocked_first`), so a metric computed alone and
the same metric computed with the others see the same products, bit for bit. Ranks are exact
wherever two scores are further apart than float32 rounding.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from gapscope.engine import device_ranking
from gapscope.engine.blocks import (
    iter_positive_pairs,
    key_chunk_columns,
    resolve_block_size,
    row_blocks,
)
from gapscope.engine.column_ranks import IntraColumnRanks, fits_columns
from gapscope.engine.device_ranking import (
    column_window_counts,
    relevant_ranks_device,
    row_ranks_device,
)
from gapscope.engine.devices import resolve_device
from gapscope.engine.distributed import current_share
from gapscope.engine.numerics import MAX_UNSHIFTED_EXPONENT, log_mean_exp, log_sum_exp
from gapscope.engine.pipelining import InOrder, PerThread, lane_count, pipelined, run_blocks
from gapscope.engine.ranking import (
    GroupMembers,
    RetrievalResult,
    near_window,
    outranking_best_positive,
    row_ranks,
    score_error_bound,
    summarize,
)
from gapscope.engine.self_tiles import TILE_SLOTS_MAX, TileRanks, self_tiles, tile_rows, tile_slots
from gapscope.engine.unit_rows import (
    RowSource,
    UnitRows,
    as_unit_rows,
    exact_scores,
    matmul_into,
    rowwise_dot,
    score_buffer,
)
from gapscope.engine.validation import (
    ArrayLike,
    check_groups,
    check_k,
    check_query_index,
    check_same_dim,
    check_temperature,
    pair_groups,
)
from gapscope.engine.window_ranks import block_ranks
from gapscope.errors import GapscopeError

__all__ = [
    "CROSS_DIRECTIONS",
    "CrossKernel",
    "CrossPassResult",
    "CrossQueries",
    "ModalityPassResult",
    "cross_pair_pass",
    "cross_pass",
    "modality_pass",
]

#: The two directions of :func:`cross_pass`.
CROSS_DIRECTIONS = ("x_to_y", "y_to_x")


@dataclass(frozen=True)
class ModalityPassResult:
    """What one ``X X^T`` pass gives for one modality.

    Attributes:
        uniformity: Wang & Isola's uniformity (see :func:`gapscope.metrics.uniformity`):
            exact over every row, or the estimate from the sampled rows; ``None`` when not
            asked for.
        uniformity_se: the estimate's standard error (``None`` when exact or not asked for).
        uniformity_rows: the rows the row terms belong to (ascending); ``None``: every row.
        uniformity_row_terms: ``log a_i = log((1/(n-1)) sum_{j != i} exp(-t ||x_i -
            x_j||^2))`` of those rows, float64; ``None`` when uniformity was not asked for.
        retrieval: intra-modal retrieval (recall@K, mAP, R-precision), or ``None``.
        cross: cross-modal retrieval of each :class:`CrossQueries` asked for, in order.
    """

    uniformity: float | None
    uniformity_se: float | None
    uniformity_rows: np.ndarray | None
    uniformity_row_terms: np.ndarray | None
    retrieval: RetrievalResult | None
    cross: tuple[RetrievalResult, ...] = ()


@dataclass(frozen=True)
class CrossQueries:
    """Sampled queries of another modality, ranked against the rows of a
    :func:`modality_pass` as keys: one direction of :func:`cross_pass`, with its numbers.

    Where the pass reads its keys a chunk at a time anyway (sampled queries against keys
    normalised on the fly), the queries are multiplied by the same chunks and counted down
    the columns, so the keys are read once for both; otherwise the direction is computed as
    :func:`cross_pass` computes it.

    Attributes:
        rows: the queries' modality, ``(m, d)`` (array, tensor or
            :class:`~gapscope.engine.unit_rows.UnitRows`).
        groups: its rows' integer pair codes, ``(m,)``.
        key_groups: the pass's rows' pair codes, ``(n,)`` (equal codes are positives).
        query_index: the sampled query rows of ``rows``.
    """

    rows: ArrayLike | UnitRows
    groups: ArrayLike | Sequence[int]
    key_groups: ArrayLike | Sequence[int]
    query_index: ArrayLike | Sequence[int]


def modality_pass(
    x: ArrayLike | UnitRows,
    relevance: ArrayLike | Sequence[int] | None = None,
    *,
    k: int | Sequence[int] = (1, 5, 10),
    t: float = 2.0,
    uniformity: bool = True,
    block_size: int | None = None,
    device: str | torch.device | None = None,
    query_index: ArrayLike | Sequence[int] | None = None,
    cross: Sequence[CrossQueries] = (),
) -> ModalityPassResult:
    """Uniformity and intra-modal retrieval of one modality from a single ``X X^T`` pass.

    Over every row, the tiles on and above the diagonal of ``X X^T`` are read along their rows
    and down their columns (:mod:`~gapscope.engine.self_tiles`); for sampled queries, each
    block of query rows ``S = X_B X^T`` (float32, ``block x n``). Either way the query's own
    score is ``-inf``, and the scores are read by both metrics:

    * uniformity (Wang & Isola 2020): ``log a_i = log((1/(n-1)) sum_{j != i}
      exp(-t ||x_i - x_j||^2))`` per query row, with ``||x_i - x_j||^2 = 2 - 2 s_ij``, and
      the value at most 0 (float32 rounding may lift identical rows a hair above). Over
      every row, ``uniformity = log((1/n) sum_i a_i)`` exactly (the mean over ordered pairs
      equals the mean over unordered pairs). Over sampled rows ``Q`` (``query_index``), the
      estimate is ``log(mean_{q in Q} a_q)`` (unbiased inside the log) with the delta-method
      standard error ``se(abar) / abar``, ``se(abar)^2 = (1 - |Q|/n) s^2 / |Q|`` (``s^2`` the
      sample variance of the ``a_q``). The kernel is summed in float32 (shifted by the row
      maximum when ``4t`` leaves the float32 range) and combined in float64.
    * intra-modal retrieval (see :func:`gapscope.metrics.intra_modal_retrieval`): the query
      itself excluded by index, ties to the lower index.

    Args:
        x: ``(n, d)`` float16/32/64 numpy array (memory maps welcome) or torch tensor, or
            :class:`~gapscope.engine.unit_rows.UnitRows` (e.g. normalised on the fly).
        relevance: ``(n,)`` integer codes (labels or groups); ``None`` skips retrieval.
        k: recall cut-offs.
        t: uniformity temperature (> 0).
        uniformity: compute uniformity.
        block_size: query rows a block of the sampled queries (and of intra-modal ranks too
            wide for the tiles' windows); ``None``: the shapes decide
            (:func:`~gapscope.engine.blocks.similarity_block_rows`). The tiles of the exact
            pass depend on ``n`` alone.
        device: device of the products; ranking and sums run on the CPU.
        query_index: evaluate only these query rows (still against every row): retrieval on
            them, and uniformity estimated from them.
        cross: cross-modal directions whose keys are these rows (:class:`CrossQueries`),
            counted from the pass's own chunks of keys where it reads them a chunk at a time.

    Returns:
        :class:`ModalityPassResult`.

    Raises:
        EmbeddingError: bad embeddings or codes, fewer than 2 rows (for uniformity).
        GapscopeError: a bad ``t``, ``k``, ``block_size`` or ``query_index``.

    Example:
        >>> r = modality_pass(np.eye(3), [0, 0, 1], k=(1,))
        >>> round(r.uniformity, 4), r.retrieval.recall, r.retrieval.n_skipped
        (-4.0, {1: 1.0}, 1)
    """
    cutoffs = check_k(k)
    dev = resolve_device(device)
    # A uniformity needs two rows; retrieval of one row simply has no eligible query.
    unit = as_unit_rows(x, "x", device=dev, min_rows=2 if uniformity else 1)
    n = unit.shape[0]
    t = check_temperature(t, "t")
    block = resolve_block_size(block_size, n)
    sample = check_query_index(query_index, n)
    codes = check_groups(relevance, n, "relevance")
    rows = np.arange(n) if sample is None else sample
    directions = [_cross_sides(unit, c, dev) for c in cross]
    intra = None if codes is None else _IntraRanks(codes, rows, unit)
    kernel = _KernelRows(rows.size, t) if uniformity else None
    # The kernel is summed from the rows of the same blocks that the ranking reads (one
    # product for both), except for sampled queries against keys normalised on the fly:
    # those blocks would read every key once a block, so the kernel reads them once, chunk
    # by chunk, and the ranks are counted down the columns of the same chunks when the blocks
    # would read the keys more than once and the queries' relevant rows are few enough to
    # gather (column_ranks.py). The kernel's path depends on the data alone, never on what
    # is asked for, so uniformity alone equals uniformity computed with retrieval, bit for
    # bit; the ranks are exact, so the same either way.
    if sample is None:
        _exact_pass(unit, block, intra, kernel)
    streamed = sample is not None and not unit.in_memory
    # Without the kernel, only the queries that have relevant rows are multiplied.
    thin = rows if kernel is not None or intra is None else intra.evaluated
    columns = None
    if streamed and intra is not None and intra.evaluated.size > block:
        columns = intra.columns(thin, _KernelRows.scale_of(kernel))
    # The cross directions ride on the sweep's chunks of keys (their counts are exact, so
    # the same first ranks as cross_pass's blocks of keys), else take cross_pass's path.
    if streamed and (kernel is not None or columns is not None):
        riders = [_CrossColumns(q, keys, block_size) for q, keys in directions if q.evaluated.size]
        _sampled_kernel(unit, thin, kernel, columns=columns, riders=riders)
        if columns is not None:
            assert intra is not None
            columns.finish(intra.store)
        for rider in riders:
            rider.finish()
    else:
        for q, keys in directions:
            if q.evaluated.size:
                _sampled_direction(q, keys, block_size)
    block_kernel = None if streamed or sample is None else kernel
    block_intra = None if columns is not None or sample is None else intra
    # Blocks that hold no query to rank are skipped when only retrieval is asked for; the
    # partition itself never depends on what is asked for.
    wanted = None if block_kernel is not None or block_intra is None else block_intra.wanted
    if block_kernel is not None or (block_intra is not None and block_intra.evaluated.size):
        _self_blocks(unit, rows, block, block_intra, block_kernel, wanted)

    value = se = terms = None
    if kernel is not None:
        terms = kernel.row_lse - math.log(n - 1)
        if sample is None:
            # At most 0 (every term at most 1), though the float32 terms and their sums may
            # round a hair above: the bound is kept on the value (on each pair it would cost
            # a pass over every score).
            value = min(log_sum_exp(kernel.row_lse) - math.log(n * (n - 1)), 0.0)
        else:
            value, se = _sampled_estimate(terms, n)
    result = None
    if intra is not None and codes is not None:
        result = intra.result(cutoffs, sample)
    return ModalityPassResult(
        uniformity=value,
        uniformity_se=se,
        uniformity_rows=None if sample is None else sample,
        uniformity_row_terms=terms,
        retrieval=result,
        cross=tuple(q.wanted_result(cutoffs) for q, _ in directions),
    )


def _cross_sides(keys: UnitRows, cross: CrossQueries, device: torch.device) -> tuple[_Side, _Side]:
    """The queries' and the keys' :class:`_Side` of one :class:`CrossQueries` direction."""
    names = ("x", "cross queries")
    unit = as_unit_rows(cross.rows, names[1], device=device)
    check_same_dim(keys, unit, names)
    key_groups, groups = pair_groups(keys, unit, cross.key_groups, cross.groups, names)
    sample = check_query_index(cross.query_index, unit.shape[0])
    if sample is None:
        raise GapscopeError("cross queries: query_index is required (sampled queries)")
    queries = _Side(unit, groups, sample, True)
    keys_side = _Side(keys, key_groups, None, False)
    # Only the queries' side is evaluated: the keys' side needs no link of its own.
    queries.link(keys_side)
    return queries, keys_side


def _exact_pass(
    unit: UnitRows, block: int, intra: _IntraRanks | None, kernel: _KernelRows | None
) -> None:
    """Uniformity and intra-modal ranks of every row from the tiles on and above the
    diagonal of ``X X^T`` (:mod:`~gapscope.engine.self_tiles`). The kernel always comes from
    the tiles, whatever else is asked for; the ranks too, unless their windows would take
    more than :data:`~gapscope.engine.self_tiles.TILE_SLOTS_MAX` slots (few large groups):
    then they come from blocks of whole rows, with the same (exact) numbers."""
    tile = tile_rows(unit.shape[0])
    scale = _KernelRows.scale_of(kernel)
    ranks = None
    if intra is not None and intra.evaluated.size:
        counts = intra.members.count(intra.codes) - 1
        if tile_slots(counts, tile) <= TILE_SLOTS_MAX:
            ranks = TileRanks(unit, intra.codes, counts, intra.margin, scale, tile)
        else:
            _self_blocks(unit, intra.rows, block, intra, None, intra.wanted)
    if kernel is None and ranks is None:
        return
    row_lse = self_tiles(
        unit,
        two_t=None if kernel is None else kernel.two_t,
        prescale=kernel is not None and kernel.prescale,
        ranks=ranks,
        tile=tile,
    )
    if kernel is not None:
        assert row_lse is not None
        kernel.row_lse[:] = row_lse
    if ranks is not None:
        assert intra is not None
        ranks.finish(intra.store_rows)
        # Each process stored its share of the queries; the others' values are zeros.
        current_share().sum(intra.first_rank, intra.ap, intra.rp)


def _sampled_estimate(log_a: np.ndarray, n: int) -> tuple[float, float]:
    """``log(mean a_q)`` and its delta-method standard error, shifted so nothing underflows."""
    value, _, shifted = log_mean_exp(log_a)
    # A mean of kernel values is at most 1: kept at most 0 against the float32 rounding.
    value = min(value, 0.0)
    q = log_a.size
    if q < 2:
        return value, math.nan
    mean = float(shifted.mean())
    se_mean = math.sqrt(max(0.0, 1.0 - q / n) * float(shifted.var(ddof=1)) / q)
    return value, se_mean / mean


class _IntraRanks:
    """Per-query intra-modal ranks, AP and R-precision, filled block by block."""

    def __init__(self, codes: np.ndarray, rows: np.ndarray, unit: RowSource) -> None:
        n = codes.size
        self.unit = unit
        # Near-ties closer than twice the float32 error bound are ranked by exact scores.
        self.margin = 2.0 * score_error_bound(unit.shape[1])
        self.codes = codes
        self.members = GroupMembers(codes)
        # The query is one of its own group's members: it has a relevant row when the group
        # has two.
        self.eligible = self.members.count(codes) > 1
        self.rows = rows
        self.evaluated = rows[self.eligible[rows]]
        # Zeros where no block of this process wrote (Share.sum adds the processes' arrays).
        self.first_rank = np.zeros(self.evaluated.size, dtype=np.int64)
        self.ap = np.zeros(self.evaluated.size, dtype=np.float64)
        self.rp = np.zeros(self.evaluated.size, dtype=np.float64)
        self.wanted = np.zeros(n, dtype=bool)
        self.wanted[self.evaluated] = True
        self.position = np.cumsum(self.wanted) - 1
        self.steps = np.arange(1, n + 1, dtype=np.float64)
        self.groups: dict[int, np.ndarray] = {}

    def rank_block(self, idx: np.ndarray, scores_t: torch.Tensor, scale: float = 1.0) -> None:
        """Rank the wanted queries of a block (``scores_t``: the block's rows, multiplied by
        ``scale``, a power of two) in host memory, all at once
        (:func:`~gapscope.engine.window_ranks.block_ranks`)."""
        rows = np.flatnonzero(self.wanted[idx])
        if rows.size:
            # Counted in host memory (a no-op on a CPU; a device without device ranking, MPS,
            # is copied).
            scores_t = scores_t.cpu()
            margin = self.margin * scale
            block_ranks(scores_t, rows, idx[rows], self.members, self.unit, margin, self.store_rows)

    def columns(self, product_rows: np.ndarray, scale: float) -> IntraColumnRanks | None:
        """The ranks of the evaluated queries counted down the columns of thin products of
        ``product_rows`` (ascending, the evaluated queries among them) against chunks of
        keys (:mod:`~gapscope.engine.column_ranks`), when their relevant rows are few enough
        to gather (:func:`~gapscope.engine.column_ranks.fits_columns`); else ``None``."""
        counts = self.members.count(self.codes[self.evaluated]) - 1
        if not fits_columns(counts, self.codes.size):
            return None
        return IntraColumnRanks(
            self.unit,
            self.evaluated,
            [self.items(int(i)) for i in self.evaluated.tolist()],
            self.codes,
            self.margin,
            scale,
            product_rows,
        )

    def items(self, i: int) -> np.ndarray:
        """Query ``i``'s relevant rows: its group's other members (ascending)."""
        code = int(self.codes[i])
        group = self.groups.get(code)
        if group is None:
            group = self.groups[code] = self.members.of(code)
        return group[group != i]

    def rank_block_device(self, idx: np.ndarray, scores_t: torch.Tensor, scale: float) -> None:
        """:meth:`rank_block` with the block left on its device
        (:func:`~gapscope.engine.device_ranking.relevant_ranks_device`)."""
        rows = np.flatnonzero(self.wanted[idx])
        if not rows.size:
            return
        queries = idx[rows].tolist()
        items, relevant, exact = [], [], []
        for i in queries:
            items.append(self.items(i))
            relevant.append(self._is_relevant(int(self.codes[i])))
            exact.append(self._exact_keys(i))
        ranks = relevant_ranks_device(scores_t, rows, items, relevant, self.margin * scale, exact)
        for i, r in zip(queries, ranks, strict=True):
            self.store(i, r)

    def store(self, i: int, ranks: np.ndarray) -> None:
        p = self.position[i]
        n_rel = ranks.size
        self.first_rank[p] = ranks[0]
        self.ap[p] = np.sum(self.steps[:n_rel] / (ranks + 1.0)) / n_rel
        self.rp[p] = np.count_nonzero(ranks < n_rel) / n_rel

    def store_rows(self, rows: np.ndarray, ranks: np.ndarray) -> None:
        """:meth:`store` of queries ``rows`` with as many relevant rows each, their ranks the
        rows of ``ranks``: the same bits (numpy sums each row of a C-contiguous array along
        it as it sums a 1-D array)."""
        p = self.position[rows]
        n_rel = ranks.shape[1]
        self.first_rank[p] = ranks[:, 0]
        self.ap[p] = np.sum(self.steps[:n_rel][None, :] / (ranks + 1.0), axis=1) / n_rel
        self.rp[p] = np.count_nonzero(ranks < n_rel, axis=1) / n_rel

    def _is_relevant(self, code: int) -> Callable[[np.ndarray], np.ndarray]:
        # The query itself counts as relevant too, harmlessly: its own score is -inf.
        codes = self.codes
        return lambda keys: codes[keys] == code

    def _exact_keys(self, query: int) -> Callable[[np.ndarray], np.ndarray]:
        unit = self.unit
        return lambda keys: exact_scores(unit, np.full(keys.size, query), unit, keys)

    def result(self, cutoffs: Sequence[int], sample: np.ndarray | None) -> RetrievalResult:
        return summarize(
            cutoffs,
            self.first_rank,
            average_precision=self.ap,
            r_precision=self.rp,
            n_skipped=int(self.rows.size - self.evaluated.size),
            n_eligible_total=None if sample is None else int(np.count_nonzero(self.eligible)),
            query_rows=self.evaluated,
        )


class _KernelRows:
    """Per query row ``log sum_{j != i} exp(-t ||x_i - x_j||^2)``, filled block by block."""

    def __init__(self, size: int, t: float, *, prescale: bool = True) -> None:
        self.row_lse = np.zeros(size, dtype=np.float64)
        self.two_t = 2.0 * t
        # With 2t a power of two (t = 2: 4) the query rows are scaled by it before the
        # product: exact in binary floating point, so the scores keep their order and ties bit
        # for bit (ranks do not change) and the kernel needs no scaling pass of its own. The
        # cross pass shares its scores with the column counts, so it never prescales.
        # Only by 1 to 2^64: rows scaled down could leave the normal float32 range and lose
        # the precision the ranks' error bound counts on, and far up they would overflow.
        self.prescale = (
            prescale and math.frexp(self.two_t)[0] == 0.5 and 1.0 <= self.two_t <= 2.0**64
        )

    @staticmethod
    def scale_of(kernel: _KernelRows | None) -> float:
        """The factor query rows are multiplied by before the product: ``2t`` when
        ``kernel`` prescales, else 1."""
        return kernel.two_t if kernel is not None and kernel.prescale else 1.0

    def add_block(self, positions: slice, scores_t: torch.Tensor) -> None:
        # exp(-t ||x_i - x_j||^2) = exp(2t s_ij) exp(-2t); the -inf self score is a zero term.
        self.row_lse[positions] = self.row_log_sums(scores_t) - self.two_t

    def row_log_sums(self, scores_t: torch.Tensor) -> np.ndarray:
        """``log sum_j exp(2t s_ij)`` of each row, as float64; the scores are overwritten."""
        kernel = scores_t if self.prescale else scores_t.mul_(self.two_t)
        if 2.0 * self.two_t > MAX_UNSHIFTED_EXPONENT:
            return torch.logsumexp(kernel, dim=1).cpu().double().numpy()
        # Every term lies in [exp(-2t), exp(2t)] (s rounded above 1 moves a term by ~1e-7
        # relative, as the float32 sum does; not clamped, which would cost a pass over every
        # score): a plain float32 sum neither overflows nor underflows, and torch sums float32
        # rows by cascades (error ~1e-7 relative); a float64 sum would cost four times the exp
        # itself. Each row's sum depends on that row alone (the thread count and the number of
        # rows in the block do not change its bits: tests/engine/test_passes.py).
        return np.log(kernel.exp_().sum(dim=1).cpu().numpy().astype(np.float64))


def _sampled_kernel(
    unit: UnitRows,
    rows: np.ndarray,
    kernel: _KernelRows | None,
    keys: UnitRows | None = None,
    columns: IntraColumnRanks | None = None,
    riders: Sequence[_CrossColumns] = (),
) -> None:
    """The kernel rows of the sampled query ``rows`` (ascending) of ``unit`` against every
    key of ``keys`` (default: ``unit`` itself, each query's own column left out), one chunk
    of keys at a time (:func:`sweep_key_chunks`): each chunk's float32 terms are summed as in
    :meth:`_KernelRows.add_block` and the chunk sums combined in float64, in the order of the
    chunks (in the log domain when ``4t`` leaves the float32 range). ``columns`` counts the
    intra-modal ranks from the same chunks (before the kernel overwrites them), while the
    next chunk's product is made; ``riders`` count cross-modal directions from the same
    chunks of keys.

    Among processes, each round's sums (one float64 a process and query) are gathered to
    every process and combined in chunk order, so every process ends with the bits one
    process alone makes, holding ``world`` sums a query."""
    queries = unit.take(rows)
    if kernel is not None and kernel.prescale:
        queries = queries * kernel.two_t
    # Without keys of their own the queries meet their own rows (their own key left out).
    own = keys is None
    keys = unit if keys is None else keys
    sums = None if kernel is None else _ChunkSums(kernel, keys.shape[0])

    def consume(r: int, start: int, scores: torch.Tensor | None, lane: int) -> None:
        if scores is not None and columns is not None:
            columns.add_chunk(start, scores)
        if sums is not None:
            sums.add_round(r, scores)

    # Pipelined, counting overlaps the next chunk's product; the kernel alone needs no second
    # buffer. In lanes, the counting's flags of a chunk are a lane's own.
    sweep_key_chunks(
        queries,
        rows,
        keys,
        consume,
        own=own,
        overlap=columns is not None,
        lane_bytes_per_score=0 if columns is None else 1,
        riders=riders,
    )
    if sums is not None:
        sums.finish()


def key_chunk_width(n_keys: int, n_queries: int) -> int:
    """The keys a chunk of :func:`sweep_key_chunks` for ``n_queries`` query rows."""
    return min(n_keys, key_chunk_columns(n_queries))


def key_chunks(n_keys: int, n_queries: int) -> int:
    """How many chunks of keys :func:`sweep_key_chunks` cuts ``n_keys`` keys into for
    ``n_queries`` query rows."""
    return -(-n_keys // key_chunk_width(n_keys, n_queries))


def sweep_key_chunks(
    queries: torch.Tensor,
    rows: np.ndarray,
    keys: UnitRows,
    consume: Callable[[int, int, torch.Tensor | None, int], None],
    *,
    own: bool,
    overlap: bool,
    lane_bytes_per_score: int = 0,
    riders: Sequence[_CrossColumns] = (),
) -> None:
    """``consume(r, start, scores, lane)`` for every round ``r`` of chunks of ``keys``: ``scores``
    are the float32 products of the ``queries`` (the rows ``rows`` of their modality,
    ascending) with this process's chunk of the round (keys ``start, start + 1, ...``;
    :func:`~gapscope.engine.blocks.key_chunk_columns` wide, which depends on the number of
    queries alone), or ``None`` when it has none. With ``own`` the keys are the queries'
    modality, and each query's own key is ``-inf`` (a zero kernel term, never ranked).

    Every query meets one chunk of keys at a time, so the keys are read (and normalised, when
    streamed) once a sweep. Processes sharing the passes (:mod:`~gapscope.engine.distributed`)
    take the chunks in turn: in round ``r`` process ``p`` makes chunk ``r * world + p``, and
    every process runs every round (a round may hold no chunk of its own), so that
    collectives in ``consume`` meet in the same order on every process; before consuming
    round ``r`` every process makes the status exchange of
    :meth:`~gapscope.engine.distributed.Share.keep_pace`, so a sweep that only counts is heard
    from too. With ``overlap`` the next chunk's product is made while a worker thread
    consumes this one (two buffers).

    One process alone on a CPU with several threads runs the rounds in lanes instead
    (:func:`~gapscope.engine.pipelining.in_lanes`): each lane multiplies a chunk into a buffer
    of its own and consumes it, ``lane`` naming it (``0`` otherwise), so ``consume`` must
    accept rounds in any order and at once (folding its sums in round order, e.g. with
    :class:`~gapscope.engine.pipelining.InOrder`). ``lane_bytes_per_score``: the bytes of
    the buffers ``consume`` holds a lane, a score of a chunk (besides the product's and the
    chunk of keys). Among processes, where
    ``consume`` makes collectives a round, the rounds stay in order. Each of ``riders``
    (:class:`_CrossColumns`) counts every chunk of keys this process makes, right after its
    product, from the same normalised keys."""
    n = keys.shape[0]
    width = key_chunk_width(n, rows.size)
    starts = list(range(0, n, width))
    share = current_share()
    rounds = -(-len(starts) // share.world)
    device = queries.device
    lanes = 0
    if share.world == 1:
        # A lane's product and its chunk of keys (normalised anew when not held).
        held = 4 * rows.size * width + (0 if keys.in_memory else 4 * width * keys.shape[1])
        held += sum(rider.lane_bytes() for rider in riders)
        lanes = lane_count(device, rounds, held + lane_bytes_per_score * rows.size * width)
    count = lanes or (2 if overlap and rounds > 1 else 1)
    buffers = [score_buffer(rows.size, width, device) for _ in range(count)]

    def product(r: int, buffer: int) -> tuple[int, int, torch.Tensor | None]:
        c = r * share.world + share.rank
        if c >= len(starts):
            return r, 0, None
        start, stop = starts[c], min(n, starts[c] + width)
        buffer_rows = buffers[buffer][:, : stop - start]
        block = keys.block(start, stop)
        scores = matmul_into(queries, block, buffer_rows)
        for rider in riders:
            rider.add_chunk(start, block)
        lo, hi = np.searchsorted(rows, [start, stop]) if own else (0, 0)
        if hi > lo:
            query_rows = torch.from_numpy(np.arange(lo, hi)).to(device)
            own_keys = torch.from_numpy(rows[lo:hi] - start).to(device)
            scores[query_rows, own_keys] = -math.inf
        return r, start, scores

    if lanes:
        run_blocks(rounds, lanes, product, lambda item, lane: consume(*item, lane), share.keep_pace)
        return

    def take(item: tuple[int, int, torch.Tensor | None]) -> None:
        # Every process runs every round: the pace's exchanges need no catching up. Made
        # where ``consume`` makes its own collectives (the kernel's round sums), in order.
        share.keep_pace(item[0])
        consume(*item, 0)

    if len(buffers) > 1:
        pipelined(rounds, lambda r: product(r, r % 2), take)
    else:
        for r in range(rounds):
            take(product(r, 0))


#: What a :class:`_CrossColumns` holds a thread at once: a part of a chunk's scores and
#: their flags (5 bytes a score).
_RIDER_BYTES = 4 * 2**20


class _CrossColumns:
    """One sampled cross-modal direction counted down the columns of another sweep's chunks of
    keys (:func:`sweep_key_chunks`'s ``riders``): each chunk's keys, as the sweep normalised
    them, multiplied by the direction's query rows a part at a time and counted as
    :func:`_pass` counts blocks of keys against thin columns (:class:`_ColumnCounts`: exact
    counts, so the first ranks do not depend on the chunks), with no read of the keys of its
    own."""

    def __init__(self, queries: _Side, keys: _Side, block_size: int | None) -> None:
        evaluated = queries.evaluated
        best, _ = _best_of_sampled(queries, keys, block_size)
        margin = 2.0 * score_error_bound(keys.unit.shape[1])
        self.queries = queries
        self.counts = _ColumnCounts(
            keys.unit,
            queries.unit,
            keys.groups,
            queries.groups,
            evaluated,
            evaluated,
            best,
            margin,
            keys.members,
        )
        self.query_rows = queries.unit.take(evaluated)
        self.rows = max(1, _RIDER_BYTES // (5 * evaluated.size))
        columns, device = evaluated.size, self.query_rows.device
        # A thread's scores and flags: lanes make their chunks side by side.
        self._buffers = PerThread(
            lambda: (
                score_buffer(self.rows, columns, device),
                np.empty((self.rows, columns), dtype=bool),
            )
        )

    def lane_bytes(self) -> int:
        """What a thread holds while it counts a chunk."""
        return 5 * self.rows * self.query_rows.shape[0]

    def add_chunk(self, start: int, keys: torch.Tensor) -> None:
        """Count the keys ``start, start + 1, ...`` (``keys``: their unit rows)."""
        scores, flags = self._buffers()
        for a, b in row_blocks(keys.shape[0], self.rows):
            block = matmul_into(keys[a:b], self.query_rows, scores[: b - a])
            idx = np.arange(start + a, start + b)
            if ranks_on_device(block):
                self.counts.add_block_device(idx, block)
            else:
                self.counts.add_block(idx, block.cpu().numpy(), flags)

    def finish(self) -> None:
        """The queries' first ranks, from every process's chunks."""
        counts = self.counts.finish()
        current_share().sum(counts)
        self.queries.first_rank[:] = counts


class _ChunkSums:
    """The rows of ``kernel`` from a sweep of its query rows over chunks of ``n_keys`` keys
    (:func:`sweep_key_chunks`): each chunk's float32 terms summed as in
    :meth:`_KernelRows.add_block`, the chunks' sums combined in chunk order in float64 (in the
    log domain when ``4t`` leaves the float32 range); among processes, a round of chunks at a
    time (:meth:`~gapscope.engine.distributed.Share.round`)."""

    def __init__(self, kernel: _KernelRows, n_keys: int) -> None:
        self.kernel = kernel
        self.queries = kernel.row_lse.size
        self.chunks = key_chunks(n_keys, self.queries)
        self.shifted = 2.0 * kernel.two_t > MAX_UNSHIFTED_EXPONENT
        self.share = current_share()
        self.total = np.full(self.queries, -math.inf) if self.shifted else np.zeros(self.queries)
        # One process alone may sweep in lanes: its rounds' sums are added in round order.
        self._in_order: InOrder[np.ndarray] = InOrder(lambda _, sums: self._add(sums))

    def add_round(self, r: int, scores: torch.Tensor | None) -> None:
        """Add round ``r``: ``scores`` are this process's chunk of the round, as the product
        made them (the query rows multiplied by ``2t`` when the kernel prescales; overwritten),
        ``None`` when it has none. Every process's sums of the round are added in chunk
        order."""

        def chunk_sums(_: int) -> np.ndarray:
            assert scores is not None  # a process without a chunk this round makes nothing
            kernel = self.kernel
            return self._chunk_sums(scores if kernel.prescale else scores.mul_(kernel.two_t))

        if self.share.world == 1:
            self._in_order.put(r, chunk_sums(r))
            return
        self.share.round(r, self.chunks, chunk_sums, lambda _, sums: self._add(sums), self.queries)

    def finish(self) -> None:
        """The kernel's rows, ``log sum_j exp(-t ||x_i - y_j||^2)``, from every round."""
        log_sums = self.total if self.shifted else np.log(self.total)
        self.kernel.row_lse[:] = log_sums - self.kernel.two_t

    def _chunk_sums(self, terms: torch.Tensor) -> np.ndarray:
        if self.shifted:
            return torch.logsumexp(terms, dim=1).cpu().double().numpy()
        # float32 sums, widened exactly.
        return terms.exp_().sum(dim=1).cpu().numpy().astype(np.float64)

    def _add(self, sums: np.ndarray) -> None:
        if self.shifted:
            self.total = np.logaddexp(self.total, sums)
        else:
            self.total += sums


def _self_blocks(
    unit: UnitRows,
    rows: np.ndarray,
    block: int,
    intra: _IntraRanks | None,
    kernel: _KernelRows | None,
    wanted: np.ndarray | None,
) -> None:
    """Blocks of ``X[rows] X^T`` (self scores ``-inf``), ranked by ``intra`` and summed by
    ``kernel``; with ``wanted`` set, blocks without a wanted row are not computed."""
    n = unit.shape[0]
    starts = [
        s for s in range(0, rows.size, block) if wanted is None or wanted[rows[s : s + block]].any()
    ]
    share = current_share()
    mine = share.blocks(len(starts))
    rows_max = min(block, rows.size)
    lanes = lane_count(unit.device, len(mine), 4 * rows_max * n + unit.scratch_bytes(block))
    # A score buffer a lane, or two (pipelined: the products of one block fill one while a
    # worker thread ranks the previous block in the other). Reused by every block: a fresh
    # 128 MiB tensor a block costs page faults that, on a CPU, take a sizeable share of the
    # product.
    buffers = [score_buffer(rows_max, n, unit.device) for _ in range(max(lanes, min(2, len(mine))))]
    prescale = kernel is not None and kernel.prescale
    # Prescaled query rows give scores times 2t (a power of two: the order is unchanged).
    scale = _KernelRows.scale_of(kernel)

    def queries(a: int, b: int) -> torch.Tensor:
        picked = unit.take(rows[a:b])
        return picked * scale if prescale else picked

    def product(b: int, buffer: int) -> tuple[int, np.ndarray, torch.Tensor]:
        start = starts[mine[b]]
        idx = rows[start : start + block]
        idx_t = torch.from_numpy(idx).to(unit.device)
        out = buffers[buffer][: idx.size]
        scores_t = unit.block_scores(queries, rows.size, start, start + idx.size, out)
        # The query itself: -inf is both a zero kernel term and a key ranked below every other.
        scores_t[torch.arange(idx.size, device=scores_t.device), idx_t] = -math.inf
        return start, idx, scores_t

    def consume(item: tuple[int, np.ndarray, torch.Tensor], lane: int) -> None:
        start, idx, scores_t = item
        if intra is not None:
            # Ranked first: the uniformity kernel below overwrites the scores in place.
            if ranks_on_device(scores_t):
                intra.rank_block_device(idx, scores_t, scale)
            else:
                intra.rank_block(idx, scores_t, scale)
        if kernel is not None:
            kernel.add_block(slice(start, start + idx.size), scores_t)

    run_blocks(len(mine), lanes, product, consume, share.keep_pace)
    share.catch_up(len(mine), len(starts))
    if intra is not None:
        share.sum(intra.first_rank, intra.ap, intra.rp)
    if kernel is not None:
        share.sum(kernel.row_lse)


@dataclass(frozen=True)
class CrossKernel:
    """The Gaussian kernel summed over every cross pair of one ``X Y^T`` pass.

    Attributes:
        log_mean: ``log((1/(n m)) sum_{i,j} exp(-t ||x_i - y_j||^2))`` over every pair of
            rows, positives included (the cross-modal uniformity of Fahim et al. 2024), or its
            estimate from sampled ``x`` rows.
        se: the estimate's delta-method standard error; ``None`` when exact.
        rows: the ``x`` rows of the estimate (ascending); ``None``: every row.
    """

    log_mean: float
    se: float | None
    rows: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class CrossPassResult:
    """What one ``X Y^T`` pass gives: each retrieval direction asked for, and the kernel."""

    x_to_y: RetrievalResult | None
    y_to_x: RetrievalResult | None
    kernel: CrossKernel | None


def cross_pass(
    x: ArrayLike | UnitRows,
    y: ArrayLike | UnitRows,
    groups_x: ArrayLike | Sequence[int] | None = None,
    groups_y: ArrayLike | Sequence[int] | None = None,
    *,
    k: int | Sequence[int] = (1, 5, 10),
    block_size: int | None = None,
    device: str | torch.device | None = None,
    query_index_x: ArrayLike | Sequence[int] | None = None,
    query_index_y: ArrayLike | Sequence[int] | None = None,
    directions: Sequence[str] = CROSS_DIRECTIONS,
) -> tuple[RetrievalResult | None, RetrievalResult | None]:
    """Cross-modal recall@K, ``x -> y`` and ``y -> x``, from one ``X Y^T`` pass.

    The metric is that of :func:`gapscope.metrics.cross_modal_retrieval` (a query is a hit at
    K when its best positive ranks below K; ties to the lower index). The product is oriented
    by the data (:func:`_blocked_first`): queries of the blocked side are ranked from the
    block rows, queries of the other side counted down the block columns. A direction with
    sampled queries (``query_index_*``) has a product of its own: blocks of the sampled
    query rows against every key, ranked by rows, when the keys are held in memory; else
    counted down the columns of a thin product (the other modality's rows in blocks, read
    once, against the sampled queries). Ranks are exact, so both give the same numbers. So
    each direction's numbers depend only on the data and its own queries, whether or not the
    other direction is computed. :func:`cross_pair_pass` is the same pass, with the kernel
    sum of every cross pair as well.

    Args:
        x: ``(n, d)`` embeddings; y: ``(m, d)`` embeddings of the other modality (arrays,
            tensors or :class:`~gapscope.engine.unit_rows.UnitRows`).
        groups_x, groups_y: integer group codes (both ``None``: row i pairs with row i).
        k: recall cut-offs.
        block_size: rows a block; ``None``: the shapes decide.
        device: device of the products; counting runs on the CPU.
        query_index_x, query_index_y: evaluate only these queries of each direction.
        directions: which of ``"x_to_y"`` and ``"y_to_x"`` to compute.

    Returns:
        ``(x_to_y, y_to_x)``: a :class:`~gapscope.engine.ranking.RetrievalResult` for each
        direction asked for, ``None`` for the other.

    Raises:
        EmbeddingError: bad arrays or groups, a dimension mismatch.
        GapscopeError: a bad ``k``, ``block_size``, ``query_index_*`` or direction.

    Example:
        >>> images = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
        >>> texts = np.array([[1.0, 0.0], [1.0, -0.2]], dtype=np.float32)
        >>> i2t, t2i = cross_pass(images, texts, k=(1, 5))
        >>> i2t.recall, t2i.recall
        ({1: 0.5, 5: 1.0}, {1: 0.5, 5: 1.0})
    """
    r = cross_pair_pass(
        x,
        y,
        groups_x,
        groups_y,
        k=k,
        block_size=block_size,
        device=device,
        query_index_x=query_index_x,
        query_index_y=query_index_y,
        directions=directions,
    )
    return r.x_to_y, r.y_to_x


def cross_pair_pass(
    x: ArrayLike | UnitRows,
    y: ArrayLike | UnitRows,
    groups_x: ArrayLike | Sequence[int] | None = None,
    groups_y: ArrayLike | Sequence[int] | None = None,
    *,
    k: int | Sequence[int] = (1, 5, 10),
    block_size: int | None = None,
    device: str | torch.device | None = None,
    query_index_x: ArrayLike | Sequence[int] | None = None,
    query_index_y: ArrayLike | Sequence[int] | None = None,
    directions: Sequence[str] = CROSS_DIRECTIONS,
    kernel_t: float | None = None,
) -> CrossPassResult:
    """:func:`cross_pass`, and with ``kernel_t`` the Gaussian kernel over every cross pair.

    The kernel sum ``sum_{i,j} exp(-t ||x_i - y_j||^2) = exp(-2t) sum_{i,j} exp(2t s_ij)``
    is read from the rows of the same score blocks that the ranking reads (no product of
    its own): each block row is summed in float32 and the rows combined in float64, as in
    :func:`modality_pass`, so the value does not depend on the block size, the thread count
    or the number of processes. When both sides are sampled (``query_index_x`` and
    ``query_index_y``: no full product is made) the mean is estimated from the sampled ``x``
    rows against every ``y`` row, ``log(mean_{q in Q} c_q)`` with
    ``c_q = (1/m) sum_j exp(-t ||x_q - y_j||^2)`` and the delta-method standard error of
    :func:`modality_pass`, from one thin product of its own (``|Q| x m``).

    Args:
        x, y, groups_x, groups_y, k, block_size, device, query_index_x, query_index_y,
            directions: as for :func:`cross_pass` (``directions`` may be empty).
        kernel_t: the kernel's temperature ``t`` (> 0); ``None``: no kernel.

    Returns:
        :class:`CrossPassResult`.

    Example:
        >>> r = cross_pair_pass(np.eye(2), np.eye(2), directions=(), kernel_t=2.0)
        >>> round(r.kernel.log_mean, 6)  # log((2 + 2 exp(-4)) / 4)
        -0.674997
    """
    unknown = [d for d in directions if d not in CROSS_DIRECTIONS]
    if unknown:
        raise GapscopeError(
            f"directions: expected {' or '.join(CROSS_DIRECTIONS)}, got {unknown[0]!r}"
        )
    cutoffs = check_k(k)
    t = None if kernel_t is None else check_temperature(kernel_t, "kernel_t")
    dev = resolve_device(device)
    ux = as_unit_rows(x, "x", device=dev)
    uy = as_unit_rows(y, "y", device=dev)
    check_same_dim(ux, uy, ("x", "y"))
    if directions or groups_x is not None or groups_y is not None:
        gx, gy = pair_groups(ux, uy, groups_x, groups_y, ("x", "y"))
    else:
        # The kernel alone needs no pairs (and the row counts may differ): no positives.
        gx, gy = np.zeros(ux.shape[0], np.int64), np.ones(uy.shape[0], np.int64)
    sides = (
        _Side(ux, gx, check_query_index(query_index_x, ux.shape[0]), "x_to_y" in directions),
        _Side(uy, gy, check_query_index(query_index_y, uy.shape[0]), "y_to_x" in directions),
    )
    sides[0].link(sides[1])
    sides[1].link(sides[0])
    a, b = sides if _blocked_first(ux, uy) else sides[::-1]
    x_side, y_side = sides
    sampled = x_side.sample is not None and y_side.sample is not None
    # Exact from the rows of the full product whenever a side is not sampled (the product is
    # made for that side's queries, or for the kernel alone), else estimated from x's sample.
    full = None if t is None or sampled else _KernelRows(a.unit.shape[0], t, prescale=False)
    _cross(a, b, block_size, full)
    n, m = ux.shape[0], uy.shape[0]
    kernel = None
    if full is not None:
        # At most 0, as the uniformity (modality_pass): rounding may not lift it above.
        kernel = CrossKernel(min(log_sum_exp(full.row_lse) - math.log(n * m), 0.0), None)
    elif t is not None:
        assert x_side.sample is not None
        thin = _KernelRows(x_side.sample.size, t, prescale=False)
        _sampled_kernel(ux, x_side.sample, thin, keys=uy)
        value, se = _sampled_estimate(thin.row_lse - math.log(m), n)
        kernel = CrossKernel(value, se, x_side.sample)
    return CrossPassResult(x_side.result(cutoffs), y_side.result(cutoffs), kernel)


class _Side:
    """One modality of a cross pass, with the queries of the direction it starts."""

    def __init__(
        self, unit: UnitRows, groups: np.ndarray, sample: np.ndarray | None, wanted: bool
    ) -> None:
        self.unit, self.groups, self.sample, self.wanted = unit, groups, sample, wanted

    @cached_property
    def members(self) -> GroupMembers:
        # Made when first used: the queries' side of a rider never needs its own (32 MB at a
        # million rows); the keys' side makes it for the queries' link.
        return GroupMembers(self.groups)

    def link(self, other: _Side) -> None:
        self.other = other
        self.eligible = other.members.count(self.groups) > 0
        self.rows = np.arange(self.unit.shape[0]) if self.sample is None else self.sample
        self.evaluated = self.rows[self.eligible[self.rows]] if self.wanted else self.rows[:0]
        self.first_rank = np.zeros(self.evaluated.size, dtype=np.int64)

    @property
    def needs_full_product(self) -> bool:
        return self.sample is None and self.evaluated.size > 0

    def wanted_result(self, cutoffs: Sequence[int]) -> RetrievalResult:
        """:meth:`result` of a side whose direction is wanted."""
        result = self.result(cutoffs)
        assert result is not None
        return result

    def result(self, cutoffs: Sequence[int]) -> RetrievalResult | None:
        if not self.wanted:
            return None
        return summarize(
            cutoffs,
            self.first_rank,
            n_skipped=int(self.rows.size - self.evaluated.size),
            n_eligible_total=None if self.sample is None else int(np.count_nonzero(self.eligible)),
            query_rows=self.evaluated,
        )


def _cross(a: _Side, b: _Side, block_size: int | None, kernel: _KernelRows | None) -> None:
    """Fill the first ranks of ``a``'s and ``b``'s queries, with ``a`` the blocked side, and
    ``kernel``'s rows (``a``'s) from the full product."""
    none = np.empty(0, np.int64)
    n_a, n_b = a.unit.shape[0], b.unit.shape[0]
    if a.needs_full_product or b.needs_full_product or kernel is not None:
        # One full A B^T: its rows serve a's unsampled queries, its columns b's.
        rows_a = a.evaluated if a.needs_full_product else none
        cols_b = b.evaluated if b.needs_full_product else none
        block = resolve_block_size(block_size, n_b)
        best = _best_positive_columns(a.unit, b.unit, a.groups, b.groups, cols_b, block)
        first_a = np.zeros(rows_a.size, dtype=np.int64)
        first_b = np.zeros(cols_b.size, dtype=np.int64)
        _pass(
            a.unit,
            b.unit,
            np.arange(n_a),
            rows_a,
            cols_b,
            np.arange(n_b),
            a.groups,
            b.groups,
            a.members,
            b.members,
            best,
            first_a,
            first_b,
            block,
            kernel,
        )
        if a.needs_full_product:
            a.first_rank[:] = first_a
        if b.needs_full_product:
            b.first_rank[:] = first_b
    for queries, keys in ((a, b), (b, a)):
        if queries.sample is not None and queries.evaluated.size:
            _sampled_direction(queries, keys, block_size)


def _sampled_direction(queries: _Side, keys: _Side, block_size: int | None) -> None:
    """The first ranks of ``queries``' sampled queries against every key of ``keys``.

    Against keys held in memory: blocks of query rows against every key, ranked by rows, as
    the intra-modal pass does (the product runs faster in that shape, and the first ranks are
    exact either way, so the path changes no number). Against keys normalised on the fly: down
    the columns of a thin product, the keys in blocks (read once, in order) against only the
    sampled queries (:class:`_CrossColumns` counts them the same way from the chunks of keys
    that a modality pass sweeps anyway)."""
    none = np.empty(0, np.int64)
    evaluated = queries.evaluated
    if keys.unit.in_memory:
        n_keys = keys.unit.shape[0]
        _pass(
            queries.unit,
            keys.unit,
            evaluated,
            evaluated,
            none,
            np.arange(n_keys),
            queries.groups,
            keys.groups,
            queries.members,
            keys.members,
            np.full(n_keys, np.inf, dtype=np.float32),
            queries.first_rank,
            none,
            resolve_block_size(block_size, n_keys),
            None,
        )
        return
    best, block = _best_of_sampled(queries, keys, block_size)
    _pass(
        keys.unit,
        queries.unit,
        np.arange(keys.unit.shape[0]),
        none,
        evaluated,
        evaluated,
        keys.groups,
        queries.groups,
        keys.members,
        queries.members,
        best,
        none,
        queries.first_rank,
        block,
        None,
    )


def _best_of_sampled(queries: _Side, keys: _Side, block_size: int | None) -> tuple[np.ndarray, int]:
    """The best positive score of each of ``queries``' evaluated queries against ``keys``
    (:func:`_best_positive_columns`), and the rows a block of keys that counts them down the
    columns of a thin product."""
    block = resolve_block_size(block_size, queries.evaluated.size)
    best = _best_positive_columns(
        keys.unit, queries.unit, keys.groups, queries.groups, queries.evaluated, block
    )
    return best, block


def _blocked_first(ux: UnitRows, uy: UnitRows, chunk: int = 1024) -> bool:
    """Whether ``x`` is the blocked side of ``X Y^T`` (else ``Y X^T`` is computed): the side
    with fewer rows; with equal counts, the one whose first differing unit row is
    lexicographically smaller. A function of the data alone, symmetric in its arguments, so
    ``cross_pass(x, y)`` and ``cross_pass(y, x)`` compute the same product."""
    if ux.shape[0] != uy.shape[0]:
        return ux.shape[0] < uy.shape[0]
    for start in range(0, ux.shape[0], chunk):
        stop = min(ux.shape[0], start + chunk)
        a = ux.block(start, stop).float().cpu().numpy()
        b = uy.block(start, stop).float().cpu().numpy()
        differ = a != b
        rows = np.flatnonzero(differ.any(axis=1))
        if rows.size:
            r = rows[0]
            c = np.flatnonzero(differ[r])[0]
            return bool(a[r, c] < b[r, c])
    return True


def _best_positive_columns(
    ux: UnitRows,
    uy: UnitRows,
    gx: np.ndarray,
    gy: np.ndarray,
    cols: np.ndarray,
    chunk: int,
) -> np.ndarray:
    """For each y row, its best positive's float32 score ``b_j``, within rounding of the
    block's score of that pair (the column counts resolve scores near ``b_j`` exactly).

    Computed from the positive pairs only (``O(|P| d)``); rows of ``y`` outside ``cols`` get
    ``+inf`` and count nothing.
    """
    m = uy.shape[0]
    best = np.full(m, -np.inf, dtype=np.float32)
    wanted = np.zeros(m, dtype=bool)
    wanted[cols] = True
    if cols.size:
        for i, j in iter_positive_pairs(gx, gy, max(chunk * 64, 4096)):
            keep = wanted[j]
            i, j = i[keep], j[keep]
            if i.size:
                np.maximum.at(best, j, rowwise_dot(ux.take(i), uy.take(j)).cpu().numpy())
    best[~wanted] = np.inf
    return best


def _pass(
    ux: UnitRows,
    uy: UnitRows,
    x_rows: np.ndarray,
    eval_x: np.ndarray,
    eval_y: np.ndarray,
    y_cols: np.ndarray,
    gx: np.ndarray,
    gy: np.ndarray,
    members_x: GroupMembers,
    members_y: GroupMembers,
    best: np.ndarray,
    first_x: np.ndarray,
    first_y: np.ndarray,
    block: int,
    kernel: _KernelRows | None,
) -> None:
    """Blocks of ``X[x_rows] Y[y_cols]^T``: ranks of the x queries ``eval_x`` (their rows,
    which need every y column) into ``first_x``, counts of the y queries ``eval_y`` (columns)
    into ``first_y``, and with ``kernel`` (every row and column) its row sums. ``members_x``
    and ``members_y``: the groups of ``gx`` and ``gy``, which the caller holds already."""
    margin = 2.0 * score_error_bound(ux.shape[1])

    def exact_xy(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return exact_scores(ux, rows, uy, cols)

    columns = _ColumnCounts(ux, uy, gx, gy, eval_y, y_cols, best, margin, members_x)
    is_eval_x = np.zeros(ux.shape[0], dtype=bool)
    is_eval_x[eval_x] = True
    pos_x = np.cumsum(is_eval_x) - 1
    # All of Y (read chunk by chunk when normalised on the fly), or the few sampled columns.
    full_cols = y_cols.size == uy.shape[0]
    uy_cols = None if full_cols else uy.take(y_cols)

    rows_max = min(block, x_rows.size)
    starts = range(0, x_rows.size, block)
    share = current_share()
    mine = share.blocks(len(starts))
    # A lane's buffers: a block's scores (float32) and their flags, and a scratch tile for
    # blocks that cover tiles in part.
    scratch = uy.scratch_bytes(block) if uy_cols is None else 0
    lanes = lane_count(ux.device, len(mine), 5 * rows_max * y_cols.size + scratch)
    n_buffers = max(lanes, min(2, len(mine)))
    buffers = [score_buffer(rows_max, y_cols.size, ux.device) for _ in range(n_buffers)]
    masks = [np.empty((rows_max, max(y_cols.size, 1)), dtype=bool) for _ in range(max(lanes, 1))]

    def product(b: int, buffer: int) -> tuple[np.ndarray, torch.Tensor]:
        start = starts[mine[b]]
        idx = x_rows[start : start + block]
        out = buffers[buffer][: idx.size]
        if uy_cols is None:
            take = lambda a, b: ux.take(x_rows[a:b])  # noqa: E731
            return idx, uy.block_scores(take, x_rows.size, start, start + idx.size, out)
        return idx, matmul_into(ux.take(idx), uy_cols, out)

    def consume(item: tuple[np.ndarray, torch.Tensor], lane: int) -> None:
        idx, scores_t = item
        # x queries: rows (all y columns are present whenever eval_x is non-empty).
        queries = np.flatnonzero(is_eval_x[idx])
        rows = idx[queries]
        if ranks_on_device(scores_t):
            if queries.size:
                first_x[pos_x[rows]] = row_ranks_device(
                    scores_t, queries, rows, gx[rows], members_y, margin, exact_xy
                )
            columns.add_block_device(idx, scores_t)
        else:
            # Comparisons treat -0.0 and +0.0 as equal: no +0.0 normalisation pass is needed.
            scores = scores_t.cpu().numpy()
            if queries.size:
                first_x[pos_x[rows]] = row_ranks(
                    scores, queries, rows, gx[rows], members_y, margin, exact_xy, masks[lane]
                )
            columns.add_block(idx, scores, masks[lane])
        if kernel is not None:
            # Last: the kernel overwrites the scores in place.
            kernel.add_block(slice(int(idx[0]), int(idx[0]) + idx.size), scores_t)

    run_blocks(len(mine), lanes, product, consume, share.keep_pace)
    share.catch_up(len(mine), len(starts))
    share.sum(first_x)
    if kernel is not None:
        share.sum(kernel.row_lse)
    if eval_y.size:
        counts = columns.finish()
        share.sum(counts)
        first_y[:] = counts


class _ColumnCounts:
    """For each column query j (a y row), the non-positive x rows that outrank its best
    positive, counted block by block down the columns.

    ``b_j``, the best positive's float32 score, is known up front (from the positive pairs).
    A row scoring above ``b_j + margin`` outranks every positive of j whatever the rounding,
    and is counted (no positive can: none is above the best); rows within ``margin`` of
    ``b_j`` that are not positives of j are kept and, at the end, ranked by exact scores
    against j's exact best positive
    (:func:`~gapscope.engine.ranking.outranking_best_positive`). Counts therefore do not
    depend on how the product was blocked.
    """

    def __init__(
        self,
        ux: UnitRows,
        uy: UnitRows,
        gx: np.ndarray,
        gy: np.ndarray,
        eval_y: np.ndarray,
        y_cols: np.ndarray,
        best: np.ndarray,
        margin: float,
        members_x: GroupMembers,
    ) -> None:
        self.ux, self.uy, self.gx, self.gy = ux, uy, gx, gy
        # The x rows' groups, as the caller holds them.
        self.members_x = members_x
        self.eval_y = eval_y
        self.size = eval_y.size
        col_of_y = np.full(uy.shape[0], -1, dtype=np.int64)
        col_of_y[y_cols] = np.arange(y_cols.size)
        self.cols = col_of_y[eval_y]
        self.lo, self.hi = near_window(best[eval_y], margin)
        # The block's columns are the queries themselves (every column, or the thin product
        # of the sampled queries): counted in place, with no gather.
        self.all_cols = np.array_equal(self.cols, np.arange(y_cols.size))
        self.counts = np.zeros(eval_y.size, dtype=np.int64)
        self._device_bounds: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        # Near rows and queries by the block's first row: blocks may be counted in any order
        # (lanes), and are put in row order at the end.
        self.near: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._adding = threading.Lock()
        # Positive pairs (x row, evaluated y query number), ordered by x row: the rows of a
        # block are contiguous, so a block's pairs are one slice.
        query_of_y = np.full(uy.shape[0], -1, dtype=np.int64)
        query_of_y[eval_y] = np.arange(eval_y.size)
        parts_i, parts_q = [], []
        if eval_y.size:
            for i, j in iter_positive_pairs(gx, gy, 1 << 20):
                keep = query_of_y[j] >= 0
                parts_i.append(i[keep])
                parts_q.append(query_of_y[j[keep]])
        self.pair_i = np.concatenate(parts_i) if parts_i else np.empty(0, np.int64)
        self.pair_q = np.concatenate(parts_q) if parts_q else np.empty(0, np.int64)

    def add_block(self, idx: np.ndarray, scores: np.ndarray, mask_buf: np.ndarray) -> None:
        if not self.size:
            return
        # np.take, not scores[:, cols]: the latter lays the copy out column by column, and
        # the row slices counted below would then stride through memory.
        sub = scores if self.all_cols else np.take(scores, self.cols, axis=1)
        mask = mask_buf[: idx.size, : sub.shape[1]]
        above = _column_counts(np.greater, sub, self.hi, mask)
        near = _column_counts(np.greater_equal, sub, self.lo, mask) - above
        with self._adding:
            np.add(self.counts, above, out=self.counts)
        # The block's positives near b_j (the best one among them) need no exact score.
        lo_pair, hi_pair = np.searchsorted(self.pair_i, [idx[0], idx[-1] + 1])
        if hi_pair > lo_pair:
            pi, pq = self.pair_i[lo_pair:hi_pair], self.pair_q[lo_pair:hi_pair]
            s = sub[pi - idx[0], pq]
            close = (s >= self.lo[pq]) & (s <= self.hi[pq])
            np.subtract.at(near, pq[close], 1)
        cols = np.flatnonzero(near > 0)
        if cols.size:
            part = sub[:, cols]
            rows, c = np.nonzero((part >= self.lo[cols]) & (part <= self.hi[cols]))
            self.near[int(idx[0])] = (idx[rows], cols[c])

    def add_block_device(self, idx: np.ndarray, scores_t: torch.Tensor) -> None:
        """:meth:`add_block` with the block left on its device: the same counts, and the same
        near rows kept (copied to the host)."""
        if not self.size:
            return
        dev = scores_t.device
        if self._device_bounds is None or self._device_bounds[0].device != dev:
            self._device_bounds = (
                torch.from_numpy(self.lo).to(dev),
                torch.from_numpy(self.hi).to(dev),
                torch.from_numpy(self.cols).to(dev),
            )
        lo, hi, cols_t = self._device_bounds
        sub = scores_t if self.all_cols else scores_t[:, cols_t]
        above, near = column_window_counts(sub, lo, hi)
        with self._adding:
            np.add(self.counts, above, out=self.counts)
        lo_pair, hi_pair = np.searchsorted(self.pair_i, [idx[0], idx[-1] + 1])
        if hi_pair > lo_pair:
            pi, pq = self.pair_i[lo_pair:hi_pair], self.pair_q[lo_pair:hi_pair]
            at = (torch.from_numpy(pi - idx[0]).to(dev), torch.from_numpy(pq).to(dev))
            s = sub[at].cpu().numpy()
            close = (s >= self.lo[pq]) & (s <= self.hi[pq])
            np.subtract.at(near, pq[close], 1)
        cols = np.flatnonzero(near > 0)
        if cols.size:
            c_t = torch.from_numpy(cols).to(dev)
            part = sub[:, c_t]
            window = (part >= lo[c_t][None, :]) & (part <= hi[c_t][None, :])
            rows, c = (t.cpu().numpy() for t in torch.nonzero(window, as_tuple=True))
            self.near[int(idx[0])] = (idx[rows], cols[c])

    def finish(self) -> np.ndarray:
        """The counts, with each column's near non-positive rows ranked by exact scores."""
        if self.near:
            parts = [self.near[first] for first in sorted(self.near)]
            rows = np.concatenate([part[0] for part in parts])
            queries = np.concatenate([part[1] for part in parts])
            asked, owner = np.unique(queries, return_inverse=True)
            y_rows = self.eval_y[asked]
            ux, uy = self.ux, self.uy
            self.counts[asked] += outranking_best_positive(
                owner.reshape(-1),
                rows,
                y_rows,
                self.gy[y_rows],
                self.members_x,
                lambda q, k: exact_scores(uy, q, ux, k),
            )
        return self.counts


# Rows a slice of _column_counts: a column's count within a slice fits one uint8.
_UINT8_ROWS = 255


def _column_counts(
    compare: np.ufunc, scores: np.ndarray, bounds: np.ndarray, mask: np.ndarray
) -> np.ndarray:
    """``count_nonzero(compare(scores, bounds[None, :]), axis=0)`` as int64: the comparisons
    of a slice of rows summed as uint8 (exact: at most 255 rows a slice), then added up, about
    twice as fast as ``count_nonzero`` down the columns, which widens every flag first."""
    counts = np.zeros(scores.shape[1], dtype=np.int64)
    for start, stop in row_blocks(scores.shape[0], _UINT8_ROWS):
        flags = compare(scores[start:stop], bounds[None, :], out=mask[: stop - start])
        counts += flags.view(np.uint8).sum(axis=0, dtype=np.uint8)
    return counts


def ranks_on_device(scores: torch.Tensor) -> bool:
    """Whether a block is ranked on its device
    (:data:`~gapscope.engine.device_ranking.DEVICE_RANKING`) rather than copied to the
    host."""
    return scores.device.type in device_ranking.DEVICE_RANKING
