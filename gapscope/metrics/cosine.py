"""Mean cosine over positive cross-modal pairs and over all other cross-modal pairs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gapscope.engine.blocks import resolve_scan_rows, row_blocks
from gapscope.engine.distributed import current_share
from gapscope.engine.normalization import unit_rows
from gapscope.engine.pipelining import PerThread
from gapscope.engine.validation import (
    ArrayLike,
    Rows,
    check_embeddings,
    check_same_dim,
    pair_groups,
)
from gapscope.engine.widening import WideningBuffer
from gapscope.errors import EmbeddingError

__all__ = ["PairCosine", "paired_cosine"]


@dataclass(frozen=True)
class PairCosine:
    """Mean cross-modal cosines (plain Python numbers).

    Attributes:
        paired: mean cosine over the positive pairs P, each (i, j) pair weighted equally.
        unpaired: mean cosine over every other cross pair; ``None`` when every pair is positive.
        n_pairs: ``|P|``.
        paired_total: ``sum_{(i,j) in P} <x_i, y_j>`` in float64, before the mean and its
            clipping (alignment with ``alpha = 2`` follows from it:
            :func:`~gapscope.metrics.alignment.alignment_from_cosine_total`).
    """

    paired: float
    unpaired: float | None
    n_pairs: int
    paired_total: float


def paired_cosine(
    x: ArrayLike,
    y: ArrayLike,
    groups_x: ArrayLike | Sequence[int] | None = None,
    groups_y: ArrayLike | Sequence[int] | None = None,
    *,
    block_size: int | None = None,
) -> PairCosine:
    """Mean cosine of the true pairs and of all other cross-modal pairs, exactly, in O((n+m) d).

    Positives P are the pairs with equal group codes (without groups, row i pairs with row i).
    With ``x_i``, ``y_j`` the L2-normalised rows and ``X_g = sum_{i in g} x_i`` (likewise
    ``Y_g``), the cosine sums are

        sum_{(i,j) in P} <x_i, y_j> = sum_g <X_g, Y_g>,
        sum_{all i,j} <x_i, y_j>  = <sum_i x_i, sum_j y_j>,

    so ``paired = sum_g <X_g, Y_g> / |P|`` and
    ``unpaired = (<sum x, sum y> - sum_g <X_g, Y_g>) / (n m - |P|)``. Group sums are built one
    block of groups at a time in float64 (memory O(block_size * d)), never an n x m matrix.
    Both means are clipped to [-1, 1] against rounding.

    Args:
        x: first modality, shape ``(n, d)``; numpy array (memmaps welcome) or torch tensor.
        y: second modality, shape ``(m, d)``.
        groups_x: integer group code per row of ``x`` (or ``None``, with ``groups_y`` ``None``).
        groups_y: integer group code per row of ``y``.
        block_size: rows (and groups) handled at a time; ``None`` picks one from ``d``.

    Returns:
        A :class:`PairCosine`; ``unpaired`` is ``None`` when all n m pairs are positive.

    Raises:
        EmbeddingError: bad arrays or groups, different ``d``, different row counts without
            groups, or no positive pair at all.

    Example:
        >>> x = np.array([[1.0, 0.0], [0.0, 1.0]])
        >>> y = np.array([[1.0, 1.0], [0.0, 2.0]])
        >>> c = paired_cosine(x, y)
        >>> round(c.paired, 4), round(c.unpaired, 4), c.n_pairs
        (0.8536, 0.3536, 2)
    """
    xa = check_embeddings(x, "x")
    ya = check_embeddings(y, "y")
    check_same_dim(xa, ya)
    gx, gy = pair_groups(xa, ya, groups_x, groups_y)
    rows = resolve_scan_rows(block_size, xa.shape[1])

    # Dense codes 0..G-1 shared by both modalities, so group sums line up by index.
    _, codes = np.unique(np.concatenate([gx, gy]), return_inverse=True)
    codes_x, codes_y = codes[: gx.shape[0]], codes[gx.shape[0] :]
    n_groups = int(codes.max()) + 1
    n_pairs = int(
        np.dot(
            np.bincount(codes_x, minlength=n_groups).astype(np.int64),
            np.bincount(codes_y, minlength=n_groups).astype(np.int64),
        )
    )
    if n_pairs == 0:
        raise EmbeddingError(
            "no positive pairs: no group code occurs in both x groups and y groups"
        )

    order_x = np.argsort(codes_x, kind="stable")
    order_y = np.argsort(codes_y, kind="stable")
    sorted_x, sorted_y = codes_x[order_x], codes_y[order_y]
    d = xa.shape[1]
    sum_x = np.zeros(d, dtype=np.float64)
    sum_y = np.zeros(d, dtype=np.float64)
    paired_sum = 0.0
    # Two buffers of group sums and one of unit rows, for every block of groups (a thread's
    # own: the blocks may be made in lanes): fresh arrays of tens of MiB a block would be
    # fresh pages each time.
    width = min(rows, n_groups)
    sums = PerThread(lambda: np.empty((2, width, d), dtype=np.float64))
    buffer = WideningBuffer(np.float64)
    blocks = list(row_blocks(n_groups, rows))

    def block_sums(b: int) -> np.ndarray:
        """Block ``b``'s paired sum, then its x and y sums, as one float64 array."""
        g0, g1 = blocks[b]
        held = sums()
        acc_x = _group_sums(xa, order_x, sorted_x, g0, g1, rows, held[0], buffer)
        acc_y = _group_sums(ya, order_y, sorted_y, g0, g1, rows, held[1], buffer)
        return np.concatenate(
            [[float((acc_x * acc_y).sum())], acc_x.sum(axis=0), acc_y.sum(axis=0)]
        )

    def add(b: int, packed: np.ndarray) -> None:
        nonlocal paired_sum
        paired_sum += float(packed[0])
        sum_x[...] += packed[1 : d + 1]
        sum_y[...] += packed[d + 1 :]

    # Processes sharing the passes take the blocks of groups in turn; every process adds
    # them in block order, as one process does.
    # A thread holds the group sums and a slice of unit rows.
    current_share().in_order(
        len(blocks), block_sums, add, 1 + 2 * d, lane_bytes=(2 * width + rows) * d * 8
    )

    n_all = xa.shape[0] * ya.shape[0]
    paired = float(np.clip(paired_sum / n_pairs, -1.0, 1.0))
    unpaired = None
    if n_all > n_pairs:
        rest = float(sum_x @ sum_y) - paired_sum
        unpaired = float(np.clip(rest / (n_all - n_pairs), -1.0, 1.0))
    return PairCosine(paired=paired, unpaired=unpaired, n_pairs=n_pairs, paired_total=paired_sum)


def _group_sums(
    a: Rows,
    order: np.ndarray,
    sorted_codes: np.ndarray,
    g0: int,
    g1: int,
    rows: int,
    out: np.ndarray,
    buffer: WideningBuffer,
) -> np.ndarray:
    """Sums of the normalised rows of groups ``g0 <= g < g1``, shape ``(g1 - g0, d)``, in
    the first rows of ``out`` (the unit rows are made in ``buffer``).

    Rows are visited in group order in slices of ``rows``, so a group larger than a slice is
    accumulated across slices and memory stays O((g1 - g0 + rows) d).
    """
    acc = out[: g1 - g0]
    acc.fill(0.0)
    lo, hi = np.searchsorted(sorted_codes, [g0, g1], side="left")
    for start, stop in row_blocks(int(hi - lo), rows):
        idx = order[lo + start : lo + stop]
        codes = sorted_codes[lo + start : lo + stop]
        # Rows in order (e.g. pairs row by row) are a slice, not a gather.
        contiguous = bool(idx.size) and bool((np.diff(idx) == 1).all())
        unit = unit_rows(a[int(idx[0]) : int(idx[-1]) + 1] if contiguous else a[idx], buffer)
        # Consecutive runs of one code: each run is one group's share of this slice.
        starts = np.flatnonzero(np.concatenate([[True], codes[1:] != codes[:-1]]))
        # One row a group (pairs row by row): the rows are the sums.
        summed = unit if starts.size == idx.size else np.add.reduceat(unit, starts, axis=0)
        at = codes[starts] - g0
        if at.size and int(at[-1]) - int(at[0]) + 1 == at.size:
            # Consecutive groups (ascending, distinct): a slice, the same additions as a gather.
            acc[int(at[0]) : int(at[-1]) + 1] += summed
        else:
            acc[at] += summed
    return acc
