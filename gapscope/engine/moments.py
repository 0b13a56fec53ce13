"""Means, scatter matrices and spectra of L2-normalised rows, shared by the spectral metrics.

Effective rank, the gap's direction and CKA all start from the same moments of the unit rows;
computing them here, in float64 and one block of rows at a time, keeps memory at O(d^2 +
block_size * d) and makes every metric use the same numerics. Also the seeded sampling helpers
(positive pairs by number, row subsets) that the sampled diagnostics share.
"""

from __future__ import annotations

import numpy as np

from gapscope.engine.blocks import resolve_block_size, row_blocks, unit_rows


def unit_mean(x: np.ndarray, block_size: int | None = None) -> np.ndarray:
    """Mean of the L2-normalised rows of ``x`` (float64, shape ``(d,)``).

    >>> unit_mean(np.array([[2.0, 0.0], [0.0, 3.0]])).tolist()
    [0.5, 0.5]
    """
    rows = resolve_block_size(block_size, x.shape[1])
    total = np.zeros(x.shape[1], dtype=np.float64)
    for start, stop in row_blocks(x.shape[0], rows):
        total += unit_rows(x[start:stop]).sum(axis=0)
    return total / x.shape[0]


def unit_scatter(
    x: np.ndarray, *, center: bool = True, block_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scatter matrix ``sum_i (x_i - mu)(x_i - mu)^T`` of the unit rows, in float64.

    Two passes (the mean first, then the centred products) rather than ``sum x x^T - n mu
    mu^T``: the one-pass form cancels catastrophically for a narrow cone, where ``||mu||``
    is close to 1 and the spread is tiny. With ``center=False`` the scatter is ``X^T X``.

    >>> mu, s = unit_scatter(np.array([[1.0, 0.0], [-1.0, 0.0]]))
    >>> mu.tolist(), s.tolist()
    ([0.0, 0.0], [[2.0, 0.0], [0.0, 0.0]])
    """
    d = x.shape[1]
    rows = resolve_block_size(block_size, max(d, 1), bytes_per_entry=16)
    mu = unit_mean(x, rows) if center else np.zeros(d, dtype=np.float64)
    scatter = np.zeros((d, d), dtype=np.float64)
    for start, stop in row_blocks(x.shape[0], rows):
        block = unit_rows(x[start:stop])
        if center:
            block -= mu
        scatter += block.T @ block
    # Symmetrise exactly so eigh sees the matrix it assumes.
    scatter = (scatter + scatter.T) / 2.0
    return mu, scatter


def spectrum(scatter: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending, rounding-level ones set to exactly 0) and eigenvectors.

    ``scale`` is the size of the data the scatter came from (e.g. the number of unit rows, the
    trace of the uncentred scatter): eigenvalues at or below ``d * eps * max(largest, scale
    * eps)`` are rounding noise of ``eigh`` and count as 0, so data confined to k dimensions
    has exactly k non-zero eigenvalues and identical rows have none.

    >>> values, _ = spectrum(np.diag([3.0, 1e-20, 1.0]), scale=2.0)
    >>> values.tolist()
    [3.0, 1.0, 0.0]
    """
    d = scatter.shape[0]
    values, vectors = np.linalg.eigh(scatter)
    values = values[::-1].copy()
    vectors = vectors[:, ::-1].copy()
    eps = np.finfo(np.float64).eps
    largest = float(values[0]) if values.size else 0.0
    tol = max(d, 1) * eps * max(largest, scale * max(d, 1) * eps)
    values[values <= tol] = 0.0
    return values, vectors


def sample_rows(n: int, limit: int | None, seed: int, stream: int = 0) -> np.ndarray | None:
    """Sorted, seeded sample of ``limit`` distinct rows of ``n``, or ``None`` for all rows.

    One independent stream a use (``stream``), so the rows one diagnostic draws do not depend
    on which other diagnostics ran.

    >>> sample_rows(10, None, 0) is None, sample_rows(10, 20, 0) is None
    (True, True)
    >>> sample_rows(10, 3, 0).size
    3
    """
    if limit is None or limit >= n:
        return None
    rng = np.random.default_rng([seed, stream])
    return np.sort(rng.choice(n, size=limit, replace=False))


def positive_pairs_at(
    groups_x: np.ndarray, groups_y: np.ndarray, numbers: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The positive pairs with the given pair numbers, in the order of
    :func:`gapscope.engine.blocks.iter_positive_pairs` (by i, then by j).

    Lets a metric draw a uniform sample of positive pairs without listing them all.

    >>> i, j = positive_pairs_at(np.array([7, 3]), np.array([3, 7, 7]), np.array([1, 2]))
    >>> i.tolist(), j.tolist()
    ([0, 1], [2, 0])
    """
    order_y = np.argsort(groups_y, kind="stable")
    sorted_y = groups_y[order_y]
    lo = np.searchsorted(sorted_y, groups_x, side="left")
    counts = np.searchsorted(sorted_y, groups_x, side="right") - lo
    offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
    numbers = np.asarray(numbers, dtype=np.int64)
    i = np.searchsorted(offsets, numbers, side="right") - 1
    j = order_y[lo[i] + (numbers - offsets[i])]
    return i.astype(np.int64), j.astype(np.int64)
