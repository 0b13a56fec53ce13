"""Every O(n^2) metric of a modality pair from one pass over each similarity block.

Uniformity and intra-modal retrieval of ``x`` both read ``X X^T``; those of ``y`` read
``Y Y^T``; image->text and text->image retrieval both read ``X Y^T``. Computed metric by
metric that is six ``n x n x d`` products (uniformity and retrieval each build ``X X^T``, and
the two cross-modal directions build ``X Y^T`` and ``Y X^T``). Here each block of rows of the
three products is computed once and every metric that needs it reads it before the next one
is made, so the cost is three products and memory stays ``O((n + m) d + block * max(n, m))``.

* :func:`modality_pass` (one ``X X^T`` pass): uniformity from each full block row (the row
  terms a bootstrap needs come for free), and intra-modal recall@K, mAP and R-precision.
* :func:`cross_pass` (one ``X Y^T`` pass): x->y from the block rows, and y->x from the block
  *columns*. For a y query j the score of its best positive, ``b_j = max_{i in P(j)} s_ij``, is
  known before the pass (from the positive pairs alone), so its rank

      rank_j = #{i not in P(j) : s_ij > b_j} + #{i not in P(j), i < i*_j : s_ij = b_j}

  (``i*_j`` the lowest-index best positive) is a count accumulated column-wise over the
  blocks. Positives are never counted, so the positive's own score, rounded differently by the
  product than by the up-front dot product, can never rank it above itself.
* :func:`fused_pair_pass`: both, for one pair, reusing per-modality results across pairs.

Results equal those of :func:`~gapscope.metrics.uniformity.uniformity`,
:func:`~gapscope.metrics.uniformity.uniformity_with_row_terms`,
:func:`~gapscope.metrics.retrieval.intra_modal_retrieval` and
:func:`~gapscope.metrics.retrieval.cross_modal_retrieval`: uniformity within float32 rounding
(~1e-6), ranks exactly wherever two scores are further apart than float32 rounding (a score
computed by another product may round the last bit differently).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from gapscope.errors import GapscopeError
from gapscope.engine.blocks import iter_positive_pairs
from gapscope.engine.validation import (
    ArrayLike,
    check_groups,
    check_same_dim,
    pair_groups,
    resolve_device,
)
from gapscope.engine.unit_rows import UnitRows, as_unit_rows, matmul_into, rowwise_dot
from gapscope.metrics.retrieval import (
    RetrievalResult,
    _check_block_size,
    _check_k,
    _check_query_index,
    _GroupMembers,
    _ranks_by_counting,
    _ranks_by_search,
    _summarize,
)

T = TypeVar("T")

__all__ = [
    "FusedResult",
    "ModalityPassResult",
    "auto_block_size",
    "cross_pass",
    "fused_pair_pass",
    "modality_pass",
]

# Scores in one block: 2**25 float32 values = 128 MiB. Blocks of a few hundred rows or more keep
# the products near the BLAS peak (on 2 CPU cores, 167-row blocks of a 50k x 512 product run at
# ~60 GFLOP/s, 1024-row blocks at ~90); the block's temporaries (a kernel copy, masks) make the
# working memory about 3x this.
_BLOCK_ELEMENTS = 2**25
# Up to this many relevant rows a query's ranks are counted with one pass over its row each;
# beyond it the keys that can outrank a relevant row are sorted (see _ranks_of_items).
_COUNT_MAX_ITEMS = 4
# Queries with up to this many positives find their best one in one padded gather per block.
_VECTOR_MAX_POSITIVES = 64
# Beyond ~1024 rows the products gain nothing on a CPU, and fewer blocks overlap less; below
# ~512 they slow down.
_MAX_BLOCK_ROWS = 1024
_MIN_BLOCK_ROWS = 512
# Blocks that would be thinner than _MIN_BLOCK_ROWS may take this many times the budget.
_SMALL_BLOCK_FACTOR = 4
# The unshifted kernel sum needs exp(+-2t) well inside float32 (2t <= 40: terms within
# [4e-18, 2.4e17], a sum of a billion of them far below the float32 maximum 3.4e38).
_MAX_UNSHIFTED_EXPONENT = 80.0


@dataclass(frozen=True)
class ModalityPassResult:
    """What one ``X X^T`` pass gives for one modality.

    Attributes:
        uniformity: Wang & Isola's uniformity (see :func:`~gapscope.metrics.uniformity.
            uniformity`), or ``None`` when not asked for.
        uniformity_row_terms: ``log a_i`` per row, float64 ``(n,)`` (see
            :func:`~gapscope.metrics.uniformity.uniformity_with_row_terms`), or ``None``.
        retrieval: intra-modal retrieval (recall@K, mAP, R-precision), or ``None``.
    """

    uniformity: float | None
    uniformity_row_terms: np.ndarray | None
    retrieval: RetrievalResult | None


@dataclass(frozen=True)
class FusedResult:
    """Every O(n^2) metric of one pair ``(x, y)``.

    Attributes:
        x, y: each modality's :class:`ModalityPassResult`.
        x_to_y, y_to_x: cross-modal retrieval results, or ``None`` when not asked for.
    """

    x: ModalityPassResult
    y: ModalityPassResult
    x_to_y: RetrievalResult | None
    y_to_x: RetrievalResult | None


def modality_pass(
    x: ArrayLike | UnitRows,
    relevance: ArrayLike | Sequence[int] | None = None,
    *,
    k: int | Sequence[int] = (1, 5, 10),
    t: float = 2.0,
    uniformity: bool = True,
    row_terms: bool = False,
    block_size: int | None = None,
    device: str | torch.device | None = None,
    query_index: ArrayLike | Sequence[int] | None = None,
    per_query: bool = False,
) -> ModalityPassResult:
    """Uniformity and intra-modal retrieval of one modality from a single ``X X^T`` pass.

    Each block of rows ``S = X_B X^T`` (float32, ``block x n``) is read by both metrics:

    * uniformity (Wang & Isola 2020): ``log a_i = log((1/(n-1)) sum_{j != i}
      exp(-t ||x_i - x_j||^2))`` per row, with ``||x_i - x_j||^2 = 2 - 2 s_ij``, and
      ``uniformity = log((1/n) sum_i a_i)`` (the mean over ordered pairs equals the mean over
      unordered pairs). The kernel is summed in float32 (shifted by the row maximum when
      ``4t`` leaves the float32 range) and combined in float64.
    * intra-modal retrieval exactly as :func:`~gapscope.metrics.retrieval.
      intra_modal_retrieval` (self excluded by index; ties to the lower index). With many
      relevant rows only the keys scoring at least the query's lowest relevant score are
      sorted: no other key can outrank a relevant row.

    Args:
        x: ``(n, d)`` float16/32/64 numpy array (memory maps welcome) or torch tensor, or
            :class:`~gapscope.engine.unit_rows.UnitRows` (e.g. normalised on the fly).
        relevance: ``(n,)`` integer codes (labels or groups); ``None`` skips retrieval.
        k: recall cut-offs.
        t: uniformity temperature (> 0).
        uniformity: compute uniformity (needs every row: not with ``query_index``).
        row_terms: also return the uniformity row terms.
        block_size: rows a block; ``None``: :func:`auto_block_size` of ``n``.
        device: device of the products; ranking and sums run on the CPU.
        query_index: evaluate retrieval for these rows only (see ``intra_modal_retrieval``).
        per_query: keep per-query retrieval values (for the bootstrap).

    Returns:
        :class:`ModalityPassResult`.

    Raises:
        EmbeddingError: bad embeddings or codes, fewer than 2 rows.
        GapscopeError: ``t`` not positive, or ``uniformity`` together with ``query_index``.

    Example:
        >>> r = modality_pass(np.eye(3), [0, 0, 1], k=(1,), row_terms=True)
        >>> round(r.uniformity, 4), r.retrieval.recall, r.retrieval.n_skipped
        (-4.0, {1: 1.0}, 1)
    """
    dev = resolve_device(device)
    unit = as_unit_rows(x, "x", device=dev, min_rows=2)
    n = unit.shape[0]
    t = float(t)
    if not (math.isfinite(t) and t > 0.0):
        raise GapscopeError(f"t: expected a finite positive number, got {t!r}")
    cutoffs = _check_k(k)
    block = _check_block_size(block_size) or auto_block_size(n)
    sample = _check_query_index(query_index, n)
    if uniformity and sample is not None:
        raise GapscopeError("uniformity needs every row: use uniformity_sampled with query_index")
    codes = check_groups(relevance, n, "relevance")

    retrieval = codes is not None
    if retrieval:
        members = _GroupMembers(codes)
        n_relevant = members.count(codes) - 1
        eligible = n_relevant > 0
        rows = np.arange(n) if sample is None else sample
        evaluated = rows[eligible[rows]]
        first_rank = np.empty(evaluated.size, dtype=np.int64)
        ap = np.empty(evaluated.size, dtype=np.float64)
        rp = np.empty(evaluated.size, dtype=np.float64)
        is_evaluated = np.zeros(n, dtype=bool)
        is_evaluated[evaluated] = True
        position = np.cumsum(is_evaluated) - 1
    # Uniformity needs every row as a block row; retrieval alone only the evaluated ones.
    block_rows = np.arange(n) if uniformity or not retrieval else evaluated
    row_lse = np.empty(n, dtype=np.float64) if uniformity else None
    two_t = 2.0 * t

    rows_max = min(block, block_rows.size)
    # Two score buffers: the products of one block fill one while a worker thread ranks the
    # previous block in the other (see _pipelined). Reused by every block: a fresh 128 MiB
    # tensor a block costs page faults that, on a CPU, take a sizeable share of the product.
    buffers = [
        torch.empty((rows_max, n), dtype=torch.float32, device=unit.device)
        for _ in range(2 if block_rows.size > block else 1)
    ]
    groups: dict[int, np.ndarray] = {}
    steps = np.arange(1, n + 1, dtype=np.float64)
    # With 2t a power of two (t = 2: 4) the query rows are scaled by it before the product:
    # exact in binary floating point, so the scores keep their order and ties bit for bit
    # (ranks do not change) and the kernel needs no scaling pass of its own.
    prescale = row_lse is not None and math.frexp(two_t)[0] == 0.5
    starts = range(0, block_rows.size, block)

    def product(k: int) -> tuple[np.ndarray, torch.Tensor]:
        idx = block_rows[starts[k] : starts[k] + block]
        idx_t = torch.from_numpy(idx).to(unit.device)
        queries = unit.take(idx)
        if prescale:
            queries = queries * two_t
        scores_t = unit.scores(queries, buffers[k % len(buffers)][: idx.size])
        # The query itself: -inf is both a zero kernel term and a key ranked below every other.
        scores_t[torch.arange(idx.size, device=scores_t.device), idx_t] = -math.inf
        return idx, scores_t

    def consume(item: tuple[np.ndarray, torch.Tensor]) -> None:
        idx, scores_t = item
        if retrieval:
            # Ranked first: the uniformity kernel below overwrites the scores in place.
            scores = scores_t.cpu().numpy()
            for r, i in enumerate(idx.tolist()):
                if not is_evaluated[i]:
                    continue
                code = int(codes[i])
                group = groups.get(code)
                if group is None:
                    group = groups[code] = members.of(code)
                ranks = np.sort(_ranks_of_items(scores[r], group[group != i]))
                p = position[i]
                n_rel = ranks.size
                first_rank[p] = ranks[0]
                ap[p] = np.sum(steps[:n_rel] / (ranks + 1.0)) / n_rel
                rp[p] = np.count_nonzero(ranks < n_rel) / n_rel
        if row_lse is not None:
            # exp(-t ||x_i - x_j||^2) = exp(2t s_ij) exp(-2t): exp in place and a sum; the
            # -inf self score gives a zero term.
            kernel = scores_t if prescale else scores_t.mul_(two_t)
            if 2.0 * two_t <= _MAX_UNSHIFTED_EXPONENT:
                # Every term lies in [exp(-2t), exp(2t)] (s rounded above 1 moves a term by
                # ~1e-7 relative): a plain float32 sum neither overflows nor underflows, and
                # torch sums float32 rows by cascades (error ~1e-7 relative); a float64 sum
                # would cost four times the exp itself.
                sums = kernel.exp_().sum(dim=1)
                row_lse[idx] = np.log(sums.cpu().numpy().astype(np.float64)) - two_t
            else:
                row_lse[idx] = torch.logsumexp(kernel, dim=1).double().cpu().numpy() - two_t

    _pipelined(len(starts), product, consume)

    value = terms = None
    if row_lse is not None:
        value = _log_sum_exp(row_lse) - math.log(n * (n - 1))
        terms = row_lse - math.log(n - 1) if row_terms else None
    result = None
    if retrieval:
        result = _summarize(
            cutoffs,
            first_rank,
            average_precision=ap,
            r_precision=rp,
            n_skipped=int(rows.size - evaluated.size),
            n_eligible_total=int(np.count_nonzero(eligible)) if sample is not None else None,
            query_rows=evaluated if per_query else None,
        )
    return ModalityPassResult(uniformity=value, uniformity_row_terms=terms, retrieval=result)


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
    per_query: bool = False,
) -> tuple[RetrievalResult, RetrievalResult]:
    """Cross-modal recall@K in both directions (x->y, y->x) from one ``X Y^T`` pass.

    The metric is that of :func:`~gapscope.metrics.retrieval.cross_modal_retrieval` (a query
    is a hit at K when its best positive ranks below K; ties to the lower index). x queries
    are ranked from the block rows; y queries from the block columns, counting for each the
    non-positive x rows that outrank its best positive (see the module docstring). With
    ``query_index_x``/``query_index_y`` and fewer products that way (or keys normalised on
    the fly), each direction is counted down the columns of one thin product (``Y X_q^T``
    and ``X Y_q^T``) instead of ``X Y^T``: a single pass over each modality's rows.

    Args:
        x: ``(n, d)`` embeddings; y: ``(m, d)`` embeddings of the other modality (arrays,
            tensors or :class:`~gapscope.engine.unit_rows.UnitRows`).
        groups_x, groups_y: integer group codes (both ``None``: row i pairs with row i).
        k: recall cut-offs.
        block_size: x rows a block; ``None``: :func:`auto_block_size` of ``m``.
        device: device of the products; counting runs on the CPU.
        query_index_x, query_index_y: evaluate only these queries of each direction.
        per_query: keep the per-query hit indicators.

    Returns:
        ``(x_to_y, y_to_x)`` :class:`~gapscope.metrics.retrieval.RetrievalResult`.

    Raises:
        EmbeddingError: bad arrays or groups, a dimension mismatch, bad ``query_index``.

    Example:
        >>> images = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
        >>> texts = np.array([[1.0, 0.0], [1.0, -0.2]], dtype=np.float32)
        >>> i2t, t2i = cross_pass(images, texts, k=(1, 5))
        >>> i2t.recall, t2i.recall
        ({1: 0.5, 5: 1.0}, {1: 0.5, 5: 1.0})
    """
    dev = resolve_device(device)
    ux = as_unit_rows(x, "x", device=dev)
    uy = as_unit_rows(y, "y", device=dev)
    check_same_dim(ux, uy, ("x", "y"))
    gx, gy = pair_groups(ux, uy, groups_x, groups_y, ("x", "y"))
    cutoffs = _check_k(k)
    block = _check_block_size(block_size) or auto_block_size(uy.shape[0])
    sample_x = _check_query_index(query_index_x, ux.shape[0])
    sample_y = _check_query_index(query_index_y, uy.shape[0])
    n, m = ux.shape[0], uy.shape[0]

    members_y, members_x = _GroupMembers(gy), _GroupMembers(gx)
    eligible_x = members_y.count(gx) > 0
    eligible_y = members_x.count(gy) > 0
    rows_x = np.arange(n) if sample_x is None else sample_x
    rows_y = np.arange(m) if sample_y is None else sample_y
    eval_x = rows_x[eligible_x[rows_x]]
    eval_y = rows_y[eligible_y[rows_y]]

    first_x = np.zeros(eval_x.size, dtype=np.int64)
    first_y = np.zeros(eval_y.size, dtype=np.int64)
    in_memory = ux.in_memory and uy.in_memory
    if in_memory and eval_x.size * m + n * eval_y.size >= n * m:
        # One full X Y^T: its rows serve x queries, its columns y queries.
        best, best_row = _best_positive_columns(ux, uy, gx, gy, eval_y, block)
        _pass(
            ux,
            uy,
            np.arange(n),
            eval_x,
            eval_y,
            np.arange(m),
            gx,
            gy,
            members_y,
            best,
            best_row,
            first_x,
            first_y,
            block,
        )
    else:
        # Each direction down the columns of a thin product: blocks of the keys' rows (read
        # once, in order) against only the sampled queries.
        none = np.empty(0, np.int64)
        for keys, queries, g_keys, g_queries, members, evaluated, first in (
            (ux, uy, gx, gy, members_y, eval_y, first_y),
            (uy, ux, gy, gx, members_x, eval_x, first_x),
        ):
            if not evaluated.size:
                continue
            col_block = _check_block_size(block_size) or auto_block_size(evaluated.size)
            best, best_row = _best_positive_columns(
                keys, queries, g_keys, g_queries, evaluated, col_block
            )
            _pass(
                keys,
                queries,
                np.arange(keys.shape[0]),
                none,
                evaluated,
                evaluated,
                g_keys,
                g_queries,
                members,
                best,
                best_row,
                none,
                first,
                col_block,
            )

    def result(
        first: np.ndarray,
        rows: np.ndarray,
        evaluated: np.ndarray,
        eligible: np.ndarray,
        sample: np.ndarray | None,
    ) -> RetrievalResult:
        return _summarize(
            cutoffs,
            first,
            n_skipped=int(rows.size - evaluated.size),
            n_eligible_total=int(np.count_nonzero(eligible)) if sample is not None else None,
            query_rows=evaluated if per_query else None,
        )

    return (
        result(first_x, rows_x, eval_x, eligible_x, sample_x),
        result(first_y, rows_y, eval_y, eligible_y, sample_y),
    )


def fused_pair_pass(
    x: ArrayLike,
    y: ArrayLike,
    groups_x: ArrayLike | Sequence[int] | None = None,
    groups_y: ArrayLike | Sequence[int] | None = None,
    relevance_x: ArrayLike | Sequence[int] | None = None,
    relevance_y: ArrayLike | Sequence[int] | None = None,
    *,
    k: int | Sequence[int] = (1, 5, 10),
    t: float = 2.0,
    uniformity: bool = True,
    retrieval: bool = True,
    row_terms: bool = False,
    block_size: int | None = None,
    device: str | torch.device | None = None,
    query_index_x: ArrayLike | Sequence[int] | None = None,
    query_index_y: ArrayLike | Sequence[int] | None = None,
    per_query: bool = False,
    cached_x: ModalityPassResult | None = None,
    cached_y: ModalityPassResult | None = None,
) -> FusedResult:
    """All O(n^2) metrics of the pair ``(x, y)``: three similarity products, each once.

    Runs :func:`modality_pass` on ``x`` and on ``y`` (skipped when ``cached_x``/``cached_y``
    is given: with three modalities each modality's pass is shared by its two pairs) and
    :func:`cross_pass` on ``(x, y)``. Uniformity is exact only: with a ``query_index`` it is
    left out (``None``) and :func:`~gapscope.metrics.uniformity.uniformity_sampled` estimates
    it. Relevance defaults to the groups (as ``analyze`` does without labels).

    Args:
        x, y: ``(n, d)`` and ``(m, d)`` embeddings.
        groups_x, groups_y: group codes defining positives (both ``None``: row i with row i).
        relevance_x, relevance_y: intra-modal relevance codes (labels); default the groups.
        k, t, block_size, device, per_query: as in :func:`modality_pass`.
        uniformity, retrieval: which metric families to compute.
        row_terms: return uniformity row terms (bootstrap).
        query_index_x, query_index_y: sampled queries of each modality.
        cached_x, cached_y: earlier :func:`modality_pass` results to reuse.

    Returns:
        :class:`FusedResult`.

    Raises:
        EmbeddingError, GapscopeError: as the passes it runs.

    Example:
        >>> r = fused_pair_pass(np.eye(3), np.eye(3) + 0.1, k=(1,))
        >>> r.x_to_y.recall, r.y_to_x.recall, round(r.x.uniformity, 4)
        ({1: 1.0}, {1: 1.0}, -4.0)
    """
    # Checked and normalised once here; the passes below take the unit rows as they are.
    dev = resolve_device(device)
    x = as_unit_rows(x, "x", device=dev, min_rows=2)
    y = as_unit_rows(y, "y", device=dev, min_rows=2)
    check_same_dim(x, y, ("x", "y"))
    gx, gy = pair_groups(x, y, groups_x, groups_y, ("x", "y"))
    exact_x = uniformity and query_index_x is None
    exact_y = uniformity and query_index_y is None

    def side(
        arr: UnitRows,
        rel: ArrayLike | Sequence[int] | None,
        groups: np.ndarray,
        qi: ArrayLike | Sequence[int] | None,
        exact: bool,
        cached: ModalityPassResult | None,
    ) -> ModalityPassResult:
        if cached is not None:
            return cached
        return modality_pass(
            arr,
            (groups if rel is None else rel) if retrieval else None,
            k=k,
            t=t,
            uniformity=exact,
            row_terms=row_terms and exact,
            block_size=block_size,
            device=device,
            query_index=qi if retrieval else None,
            per_query=per_query,
        )

    res_x = side(x, relevance_x, gx, query_index_x, exact_x, cached_x)
    res_y = side(y, relevance_y, gy, query_index_y, exact_y, cached_y)
    x_to_y = y_to_x = None
    if retrieval:
        x_to_y, y_to_x = cross_pass(
            x,
            y,
            gx,
            gy,
            k=k,
            block_size=block_size,
            device=device,
            query_index_x=query_index_x,
            query_index_y=query_index_y,
            per_query=per_query,
        )
    return FusedResult(x=res_x, y=res_y, x_to_y=x_to_y, y_to_x=y_to_x)


def auto_block_size(n_keys: int) -> int:
    """Rows a block: its ``rows x n_keys`` float32 scores take 128 MiB, but at most 1024 rows
    (more blocks let the products of one overlap the ranking of the previous) and at least
    512 rows while that stays within 512 MiB (thinner products lose speed: at n = 100k,
    335-row blocks ran 1.24x slower than 2048-row ones). Beyond 262,144 keys a block is the
    512 MiB's worth, which also means a store normalised on the fly (see
    :class:`~gapscope.engine.unit_rows.UnitRows`) is read a quarter as often as with 128 MiB.
    A pure function of the shapes, so the same input always gives the same blocks.

    >>> auto_block_size(50_000), auto_block_size(10_000), auto_block_size(100_000)
    (671, 1024, 512)
    >>> auto_block_size(10**6), auto_block_size(10**9)
    (134, 1)
    """
    n_keys = max(n_keys, 1)
    rows = _BLOCK_ELEMENTS // n_keys
    if rows < _MIN_BLOCK_ROWS:
        rows = min(_MIN_BLOCK_ROWS, _BLOCK_ELEMENTS * _SMALL_BLOCK_FACTOR // n_keys)
    return max(1, min(_MAX_BLOCK_ROWS, rows))


# ----------------------------------------------------------------------------- internals


def _log_sum_exp(values: np.ndarray) -> float:
    top = float(values.max())
    return top + math.log(float(np.exp(values - top).sum()))


def _best_positive_columns(
    ux: UnitRows,
    uy: UnitRows,
    gx: np.ndarray,
    gy: np.ndarray,
    cols: np.ndarray,
    chunk: int,
) -> tuple[np.ndarray, np.ndarray]:
    """For each y row, its best positive score ``b_j`` and the lowest x row reaching it.

    Computed from the positive pairs only (``O(|P| d)``), in float32 like the blocks; rows of
    ``y`` outside ``cols`` get ``(+inf, -1)`` and count nothing. Pairs come ordered by x row,
    so the first maximum seen for a column is its lowest-index best positive.
    """
    m = uy.shape[0]
    best = np.full(m, -np.inf, dtype=np.float32)
    best_row = np.full(m, -1, dtype=np.int64)
    wanted = np.zeros(m, dtype=bool)
    wanted[cols] = True
    for i, j in iter_positive_pairs(gx, gy, max(chunk * 64, 4096)):
        keep = wanted[j]
        i, j = i[keep], j[keep]
        if not i.size:
            continue
        s = rowwise_dot(ux.take(i), uy.take(j)).cpu().numpy() + 0.0
        # Pairs ascend by i: a later pair replaces a column's best only when strictly above.
        for jj, ii, ss in zip(j.tolist(), i.tolist(), s.tolist(), strict=True):
            if ss > best[jj]:
                best[jj], best_row[jj] = ss, ii
    best[~wanted] = np.inf
    return best, best_row


def _pass(
    ux: UnitRows,
    uy: UnitRows,
    x_rows: np.ndarray,
    eval_x: np.ndarray,
    eval_y: np.ndarray,
    y_cols: np.ndarray,
    gx: np.ndarray,
    gy: np.ndarray,
    members_y: _GroupMembers,
    best: np.ndarray,
    best_row: np.ndarray,
    first_x: np.ndarray,
    first_y: np.ndarray,
    block: int,
) -> None:
    """Blocks of ``X[x_rows] Y[y_cols]^T``: ranks of the x queries ``eval_x`` (their rows,
    which need every y column) into ``first_x``, counts of the y queries ``eval_y`` (columns)
    into ``first_y``."""
    n = ux.shape[0]
    is_eval_x = np.zeros(n, dtype=bool)
    is_eval_x[eval_x] = True
    pos_x = np.cumsum(is_eval_x) - 1
    # Column bookkeeping restricted to the evaluated y queries among y_cols.
    col_of_y = np.full(uy.shape[0], -1, dtype=np.int64)
    col_of_y[y_cols] = np.arange(y_cols.size)
    cols = col_of_y[eval_y]
    col_best = best[eval_y][None, :]
    col_best_row = best_row[eval_y][None, :]
    count_y = np.zeros(eval_y.size, dtype=np.int64)
    below_best = np.nextafter(col_best[0], np.float32(-np.inf))
    full_cols = y_cols.size == uy.shape[0]
    # Positive pairs (x row, evaluated y query number), ordered by x row. Column counting runs
    # over contiguous blocks of every x row, so a block's pairs are one slice of them.
    query_of_y = np.full(uy.shape[0], -1, dtype=np.int64)
    query_of_y[eval_y] = np.arange(eval_y.size)
    pair_i_parts, pair_q_parts = [], []
    if eval_y.size:
        for i, j in iter_positive_pairs(gx, gy, 1 << 20):
            keep = query_of_y[j] >= 0
            pair_i_parts.append(i[keep])
            pair_q_parts.append(query_of_y[j[keep]])
    pair_i = np.concatenate(pair_i_parts) if pair_i_parts else np.empty(0, np.int64)
    pair_q = np.concatenate(pair_q_parts) if pair_q_parts else np.empty(0, np.int64)
    # All of Y (read chunk by chunk when normalised on the fly), or the few sampled columns.
    uy_cols = None if full_cols else uy.take(y_cols)

    rows_max = min(block, x_rows.size)
    starts = range(0, x_rows.size, block)
    buffers = [
        torch.empty((rows_max, y_cols.size), dtype=torch.float32, device=ux.device)
        for _ in range(min(2, len(starts)))
    ]
    all_cols = full_cols and eval_y.size == uy.shape[0]
    mask_buf = np.empty((rows_max, max(y_cols.size, 1)), dtype=bool)

    def product(k: int) -> tuple[np.ndarray, torch.Tensor]:
        idx = x_rows[starts[k] : starts[k] + block]
        rows = ux.take(idx)
        out = buffers[k % len(buffers)][: idx.size]
        if uy_cols is None:
            return idx, uy.scores(rows, out)
        return idx, matmul_into(rows, uy_cols, out)

    def consume(item: tuple[np.ndarray, torch.Tensor]) -> None:
        idx, scores_t = item
        # Comparisons treat -0.0 and +0.0 as equal, so no +0.0 normalisation pass is needed.
        scores = scores_t.cpu().numpy()
        # x queries: rows (all y columns are present whenever eval_x is non-empty).
        queries = np.flatnonzero(is_eval_x[idx])
        if queries.size:
            first_x[pos_x[idx[queries]]] = _row_ranks(
                scores, queries, gx[idx[queries]], members_y, mask_buf
            )
        if not eval_y.size:
            return
        # y queries: columns, in one comparison pass. Rows before a column's best positive
        # outrank it when >= b_j, i.e. > the float32 just below b_j; rows after when > b_j.
        # Columns whose best positive lies inside this block get the tie term added exactly.
        sub = scores if all_cols else scores[:, cols]
        before = col_best_row[0] > idx[-1]
        threshold = np.where(before, below_best, col_best[0])
        mask = mask_buf[: idx.size, : sub.shape[1]]
        above = np.count_nonzero(np.greater(sub, threshold, out=mask), axis=0)
        inside = np.flatnonzero((col_best_row[0] >= idx[0]) & ~before)
        if inside.size:
            tied = sub[:, inside] == col_best[0, inside]
            tied &= idx[:, None] < col_best_row[0, inside]
            above[inside] += np.count_nonzero(tied, axis=0)
        # Positives of the block's rows were compared with b_j too: take back those counted
        # (through rounding or an equal score at a lower index), so only non-positives rank.
        lo, hi = np.searchsorted(pair_i, [idx[0], idx[-1] + 1])
        if hi > lo:
            pi, pq = pair_i[lo:hi], pair_q[lo:hi]
            s = scores[pi - idx[0], cols[pq]]
            counted = (s > col_best[0, pq]) | ((s == col_best[0, pq]) & (pi < col_best_row[0, pq]))
            np.subtract.at(above, pq[counted], 1)
        np.add(count_y, above, out=count_y)

    _pipelined(len(starts), product, consume)
    if eval_y.size:
        first_y[:] = count_y


def _pipelined(n_blocks: int, product: Callable[[int], T], consume: Callable[[T], None]) -> None:
    """``consume(product(k))`` for every block k, with block k + 1's product (on this thread;
    torch releases the GIL and uses every core) overlapping block k's consumption (ranking
    and counting in numpy, mostly on one core, on a worker thread). ``product`` alternates
    between two buffers, so block k's scores stay intact until their consumer is done. The
    results do not depend on the timing: each block writes its own rows of the outputs, and
    the consumer runs the blocks in order."""
    if n_blocks <= 1:
        for k in range(n_blocks):
            consume(product(k))
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending: Future[None] | None = None
        for k in range(n_blocks):
            item = product(k)
            if pending is not None:
                pending.result()
            pending = pool.submit(consume, item)
        assert pending is not None
        pending.result()


def _row_ranks(
    scores: np.ndarray,
    queries: np.ndarray,
    codes: np.ndarray,
    members: _GroupMembers,
    mask: np.ndarray,
) -> np.ndarray:
    """0-based rank of each query row's best positive (``members`` of its code), ties to the
    lower index: ``#{k : s_k > v} + #{k < j : s_k == v}`` with ``j`` the lowest-index best
    positive and ``v`` its score. The counts run over the whole block at once (``mask``: a
    boolean buffer of at least its shape); only rows where another key scores exactly ``v``
    get a tie scan of their own."""
    counts = members.count(codes)
    width = int(counts.max())
    if width <= _VECTOR_MAX_POSITIVES:
        # Every query's positives as a padded row of columns (ascending within a group, so
        # argmax finds the lowest-index best one).
        offsets = np.arange(width)
        valid = offsets[None, :] < counts[:, None]
        cols = members.padded(codes, width)
        values = np.where(valid, scores[queries[:, None], cols], -np.inf)
        pick = np.argmax(values, axis=1)
        best_col = cols[np.arange(queries.size), pick]
    else:
        best_col = np.array(
            [
                positives[np.argmax(scores[r, positives])]
                for r, positives in (
                    (r, members.of(c)) for r, c in zip(queries, codes, strict=True)
                )
            ],
            dtype=np.int64,
        )
    v = scores[queries, best_col]
    # numpy's SIMD compare and count beat torch's reductions over bools several times here.
    sub = scores if queries.size == scores.shape[0] else scores[queries]
    ranks = np.count_nonzero(np.greater(sub, v[:, None], out=mask[: sub.shape[0]]), axis=1)
    equal = np.count_nonzero(np.equal(sub, v[:, None], out=mask[: sub.shape[0]]), axis=1)
    for q in np.flatnonzero(equal > 1):
        r, j = queries[q], best_col[q]
        ranks[q] += np.count_nonzero(scores[r, :j] == v[q])
    return ranks


def _ranks_of_items(row: np.ndarray, items: np.ndarray) -> np.ndarray:
    """0-based ranks of the columns ``items`` in ``row`` (descending, ties to the lower index).

    ``rank(j) = #{k : row[k] > row[j]} + #{k < j : row[k] == row[j]}``, returned in no
    particular order. Few items: one counting pass each. Many: only the keys scoring at least
    the lowest item can outrank any item, so only those are sorted (often a small part of the
    row when relevant rows score high) and each rank is a binary search.
    """
    if items.size <= _COUNT_MAX_ITEMS:
        return _ranks_by_counting(row, items)
    return _ranks_by_search(row, np.sort(row[row >= row[items].min()]), items)
