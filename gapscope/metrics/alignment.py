"""Alignment of positive pairs on the unit sphere (Wang & Isola 2020)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from gapscope.engine.blocks import PairIndex, positive_pair_counts, resolve_scan_rows
from gapscope.engine.distributed import current_share
from gapscope.engine.normalization import unit_rows
from gapscope.engine.validation import (
    ArrayLike,
    Rows,
    check_embeddings,
    check_positive,
    check_same_dim,
    pair_groups,
)
from gapscope.engine.widening import WideningBuffer
from gapscope.errors import EmbeddingError, GapscopeError

__all__ = [
    "MAX_MEAN_COSINE_FOR_TOTAL",
    "alignment",
    "alignment_from_cosine_total",
    "alignment_row_terms",
]


def alignment(
    x: ArrayLike,
    y: ArrayLike,
    groups_x: ArrayLike | Sequence[int] | None = None,
    groups_y: ArrayLike | Sequence[int] | None = None,
    alpha: float = 2.0,
    *,
    block_size: int | None = None,
) -> float:
    """Alignment of positive pairs (Wang & Isola 2020): mean ``||x_i - y_j||_2 ** alpha``.

    With ``x_i``, ``y_j`` the L2-normalised rows and P the positive pairs (equal group codes;
    without groups row i pairs with row i),

        alignment = (1 / |P|) sum_{(i,j) in P} ||x_i - y_j||_2^alpha,

    in ``[0, 2^alpha]``; lower is better. For ``alpha = 2`` it equals
    ``2 - 2 * paired cosine``. Pairs are enumerated in chunks (O(|P| d) time,
    O(block_size * d) memory, never an n x m matrix) and differences are taken directly in
    float64, which stays accurate for nearly equal pairs where ``2 - 2 cos`` would cancel.

    Args:
        x: first modality, shape ``(n, d)``; numpy array (memmaps welcome) or torch tensor.
        y: second modality, shape ``(m, d)``.
        groups_x: integer group code per row of ``x`` (or ``None``, with ``groups_y`` ``None``).
        groups_y: integer group code per row of ``y``.
        alpha: exponent, finite and > 0 (2 in the paper).
        block_size: pairs per chunk; ``None`` picks one from ``d``.

    Returns:
        The mean distance to the power ``alpha``, a float.

    Raises:
        EmbeddingError: bad arrays or groups, different ``d``, different row counts without
            groups, or no positive pair at all.
        GapscopeError: ``alpha`` or ``block_size`` not positive.

    Example:
        >>> x = np.array([[1.0, 0.0], [0.0, 1.0]])
        >>> y = np.array([[0.0, 3.0], [0.0, 1.0]])
        >>> alignment(x, y), round(alignment(x, y, alpha=1.0), 4)
        (1.0, 0.7071)
    """
    pairs = _PositivePairs(x, y, groups_x, groups_y, alpha, block_size)
    total = 0.0

    def add(_: int, chunk_sum: np.ndarray) -> None:
        nonlocal total
        total += float(chunk_sum[0])

    # Processes sharing the passes take the chunks of pairs in turn; every process adds the
    # chunk sums in chunk order, as one process does. A thread holds both modalities' unit
    # rows of a chunk (each gathered to the pairs, a copy), and their differences.
    current_share().in_order(
        pairs.n_chunks,
        lambda c: np.array([pairs.chunk_terms(c)[1].sum()]),
        add,
        1,
        lane_bytes=5 * pairs.chunk * pairs.x.shape[1] * 8,
    )
    return total / pairs.n_pairs


#: The largest mean paired cosine ``c`` at which :func:`alignment_from_cosine_total` answers.
#: The total's rounding is at most some units of float64's 1.1e-16 a pair (each cosine of unit
#: rows is at most 1; the units grow with the group sizes and ``d``, 18 measured on one group of
#: 300 x 300 rows), and ``2 - 2 c`` divides it by ``1 - c``: at most 10 times that, relative
#: to the result. Nearer 1, the differences that :func:`alignment` takes keep digits that
#: ``2 - 2 c`` cancels (at a cosine of ``1 - 1e-8``, eight of them).
MAX_MEAN_COSINE_FOR_TOTAL = 0.9


def alignment_from_cosine_total(paired_total: float, n_pairs: int) -> float | None:
    """Alignment with ``alpha = 2`` from the positive pairs' cosine total, reading no row.

    For unit rows ``||x_i - y_j||^2 = 2 - 2 <x_i, y_j>``, so

        alignment = (1 / |P|) sum_{(i,j) in P} ||x_i - y_j||^2 = 2 - 2 (1 / |P|) sum <x_i, y_j>,

    with the total ``sum <x_i, y_j>`` of :func:`~gapscope.metrics.cosine.paired_cosine`
    (``PairCosine.paired_total``). Where the mean cosine exceeds
    :data:`MAX_MEAN_COSINE_FOR_TOTAL` (nearly equal pairs), ``2 - 2 c`` would cancel the digits
    that :func:`alignment` keeps by taking the differences themselves: ``None`` then, and the
    caller computes :func:`alignment`.

    Args:
        paired_total: ``sum_{(i,j) in P} <x_i, y_j>`` of the unit rows, float64.
        n_pairs: ``|P|`` (> 0).

    Returns:
        ``2 - 2 * paired_total / n_pairs`` (at least 0.2), or ``None`` above the threshold.

    Example:
        >>> alignment_from_cosine_total(0.5, 2), alignment_from_cosine_total(1.9, 2) is None
        (1.5, True)
    """
    if isinstance(n_pairs, bool) or not n_pairs > 0:
        raise GapscopeError(f"n_pairs: expected a positive count, got {n_pairs!r}")
    mean = paired_total / n_pairs
    if mean > MAX_MEAN_COSINE_FOR_TOTAL:
        return None
    return 2.0 * (1.0 - mean)


def alignment_row_terms(
    x: ArrayLike,
    y: ArrayLike,
    groups_x: ArrayLike | Sequence[int] | None = None,
    groups_y: ArrayLike | Sequence[int] | None = None,
    alpha: float = 2.0,
    *,
    block_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each row of ``x``'s share of :func:`alignment`: its sum of pair terms and pair count.

    ``sums[i] = sum_{j : (i, j) in P} ||x_i - y_j||_2^alpha`` and ``counts[i]`` the number of
    those ``j``, so ``alignment = sums.sum() / counts.sum()``. A bootstrap over groups adds them
    up per group instead of enumerating the pairs again for every resample.

    Args:
        x: first modality, shape ``(n, d)``.
        y: second modality, shape ``(m, d)``.
        groups_x: integer group code per row of ``x`` (or ``None``, with ``groups_y`` ``None``).
        groups_y: integer group code per row of ``y``.
        alpha: exponent, finite and > 0.
        block_size: pairs per chunk; ``None`` picks one from ``d``.

    Returns:
        ``(sums, counts)``: float64 and int64 arrays of shape ``(n,)``.

    Raises:
        EmbeddingError: as :func:`alignment` (bad arrays or groups, no positive pair).
        GapscopeError: ``alpha`` or ``block_size`` not positive.

    Example:
        >>> sums, counts = alignment_row_terms(np.eye(2), np.array([[0.0, 3.0], [0.0, 1.0]]))
        >>> sums.tolist(), counts.tolist()
        ([2.0, 0.0], [1, 1])
    """
    pairs = _PositivePairs(x, y, groups_x, groups_y, alpha, block_size)
    sums = np.zeros(pairs.counts.shape[0], dtype=np.float64)
    for i, powered in pairs.terms():
        sums += np.bincount(i, weights=powered, minlength=sums.shape[0])
    return sums, pairs.counts


class _PositivePairs:
    """The checked inputs of alignment and its pair terms ``||x_i - y_j||^alpha``, in chunks."""

    def __init__(
        self,
        x: ArrayLike,
        y: ArrayLike,
        groups_x: ArrayLike | Sequence[int] | None,
        groups_y: ArrayLike | Sequence[int] | None,
        alpha: float,
        block_size: int | None,
    ) -> None:
        self.x = check_embeddings(x, "x")
        self.y = check_embeddings(y, "y")
        check_same_dim(self.x, self.y)
        self.alpha = check_positive(alpha, "alpha")
        self.gx, self.gy = pair_groups(self.x, self.y, groups_x, groups_y)
        self.chunk = resolve_scan_rows(block_size, self.x.shape[1], bytes_per_entry=40)
        self.counts = positive_pair_counts(self.gx, self.gy)
        self.n_pairs = int(self.counts.sum())
        if self.n_pairs == 0:
            raise EmbeddingError(
                "no positive pairs: no group code occurs in both x groups and y groups"
            )

        self.index = PairIndex(self.gx, self.gy)
        self.n_chunks = -(-self.n_pairs // self.chunk)
        # One float64 buffer a modality for every chunk (a thread's own): both chunks' unit
        # rows live at once.
        self.buffers = (WideningBuffer(np.float64), WideningBuffer(np.float64))

    def chunk_terms(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """``(i, ||x_i - y_j||^alpha)`` for chunk ``c`` of the positive pairs (numbers
        ``c * chunk, ...``, as :func:`~gapscope.engine.blocks.iter_positive_pairs` cuts them)."""
        start = c * self.chunk
        i, j = self.index.at(
            np.arange(start, min(self.n_pairs, start + self.chunk), dtype=np.int64)
        )
        diff = _unit_rows_at(self.x, i, self.buffers[0]) - _unit_rows_at(self.y, j, self.buffers[1])
        squared = np.einsum("ij,ij->i", diff, diff)
        # alpha = 2 skips the sqrt so that case matches 2 - 2 cos to the last bits.
        return i, squared if self.alpha == 2.0 else squared ** (self.alpha / 2.0)

    def terms(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(i, ||x_i - y_j||^alpha)`` for the positive pairs, ordered by i then j."""
        for c in range(self.n_chunks):
            yield self.chunk_terms(c)


def _unit_rows_at(a: Rows, index: np.ndarray, buffer: WideningBuffer) -> np.ndarray:
    """``unit_rows(a[index])``, reading each distinct row once (a row in several pairs, such
    as an image with five captions, is not read five times) and a run of consecutive rows as
    a slice, made in ``buffer`` (overwritten by the next call). A unit row depends on its row
    alone, so the bits are the same."""
    rows, where = np.unique(index, return_inverse=True)
    if rows.size and int(rows[-1]) - int(rows[0]) + 1 == rows.size:
        unit = unit_rows(a[int(rows[0]) : int(rows[-1]) + 1], buffer)
    else:
        unit = unit_rows(a[rows], buffer)
    # Pairs row by row: every row once, in order.
    return unit if np.array_equal(rows, index) else unit[where]
