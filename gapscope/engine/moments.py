"""Sums, means, scatter matrices and spectra of L2-normalised rows.

The gap, the cone, the what-ifs and the spectral diagnostics (effective rank, the gap's
direction) all start from the same moments of the unit rows: their sum (whose norm gives the
cone and whose mean gives the gap) and their centred scatter. Computed here, in float64 and one
scan chunk at a time (memory O(d^2 + chunk * d)), every metric uses the same numerics, and an
analysis computes each modality's sum once (:class:`~gapscope.analysis.context.AnalysisContext`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gapscope.engine.blocks import resolve_scan_rows, row_blocks
from gapscope.engine.distributed import current_share
from gapscope.engine.normalization import unit_rows
from gapscope.engine.validation import Rows
from gapscope.engine.widening import WideningBuffer

__all__ = ["UnitSums", "UnitSumsScan", "spectrum", "unit_scatter", "unit_sums"]


@dataclass(frozen=True)
class UnitSums:
    """The sum of a modality's unit rows and of their squared norms, in float64.

    The squared norms are 1 up to rounding; keeping their computed sum lets the cone cancel
    the diagonal with the same rounding (identical rows then give a cone of 1 to ~1e-16).

    Attributes:
        total: ``sum_i x_i / ||x_i||``, shape ``(d,)``, read-only.
        squares: ``sum_i ||x_i / ||x_i|| ||^2``.
        n: the number of rows.
    """

    total: np.ndarray = field(repr=False)
    squares: float
    n: int

    @property
    def mean(self) -> np.ndarray:
        """The mean unit row (the modality's centroid), shape ``(d,)``."""
        return self.total / self.n


class UnitSumsScan:
    """:class:`UnitSums` made one slice of rows at a time, in row order (the slices of
    :func:`unit_sums` give the same bits: each slice's sum is added to the total)."""

    def __init__(self, dim: int) -> None:
        self.total = np.zeros(dim, dtype=np.float64)
        self.squares = 0.0
        self.n = 0
        self._buffer = WideningBuffer(np.float64)

    def add(self, rows: Rows) -> None:
        """Add the next slice of (non-zero) rows."""
        self.fold(rows.shape[0], self.make(rows))

    @property
    def size(self) -> int:
        """Values :meth:`make` returns: the sum of the unit rows, then their squares."""
        return self.total.shape[0] + 1

    def make(self, rows: Rows) -> np.ndarray:
        """A slice's statistics (the slices are combined by :meth:`fold`, in row order)."""
        unit = unit_rows(rows, self._buffer)
        out = np.empty(self.size)
        out[:-1] = unit.sum(axis=0)
        out[-1] = float(np.einsum("ij,ij->", unit, unit))
        return out

    def fold(self, n_rows: int, stats: np.ndarray) -> None:
        """Add a slice of ``n_rows`` rows by its statistics (:meth:`make`)."""
        self.total += stats[:-1]
        self.squares += float(stats[-1])
        self.n += n_rows

    def result(self) -> UnitSums:
        total = self.total.copy()
        total.flags.writeable = False
        return UnitSums(total, self.squares, self.n)


def unit_sums(x: Rows, block_size: int | None = None) -> UnitSums:
    """:class:`UnitSums` of the rows of ``x`` (which must be non-zero), one scan of
    ``block_size`` rows at a time (``None``: the scan policy of :mod:`gapscope.engine.blocks`).

    >>> s = unit_sums(np.array([[2.0, 0.0], [0.0, 5.0]]))
    >>> s.total.tolist(), s.squares, s.mean.tolist()
    ([1.0, 1.0], 2.0, [0.5, 0.5])
    """
    scan = UnitSumsScan(x.shape[1])
    for start, stop in row_blocks(x.shape[0], resolve_scan_rows(block_size, x.shape[1])):
        scan.add(x[start:stop])
    return scan.result()


def unit_scatter(
    x: Rows,
    *,
    center: bool = True,
    mean: np.ndarray | None = None,
    block_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scatter matrix ``sum_i (x_i - mu)(x_i - mu)^T`` of the unit rows, in float64.

    Two passes (the mean first, unless ``mean`` is given, then the centred products) rather
    than ``sum x x^T - n mu mu^T``: the one-pass form cancels catastrophically for a narrow
    cone, where ``||mu||`` is close to 1 and the spread is tiny. With ``center=False`` the
    scatter is ``X^T X``.

    >>> mu, s = unit_scatter(np.array([[1.0, 0.0], [-1.0, 0.0]]))
    >>> mu.tolist(), s.tolist()
    ([0.0, 0.0], [[2.0, 0.0], [0.0, 0.0]])
    """
    d = x.shape[1]
    if not center:
        mu = np.zeros(d, dtype=np.float64)
    else:
        mu = unit_sums(x, block_size).mean if mean is None else np.asarray(mean, np.float64)
    scatter = np.zeros((d, d), dtype=np.float64)
    rows = resolve_scan_rows(block_size, d)
    blocks = list(row_blocks(x.shape[0], rows))

    def block_scatter(b: int) -> np.ndarray:
        block = unit_rows(x[blocks[b][0] : blocks[b][1]])
        if center:
            block -= mu
        return (block.T @ block).reshape(-1)

    def add(_: int, products: np.ndarray) -> None:
        scatter[...] += products.reshape(d, d)

    # Processes sharing the passes take the blocks in turn; every process adds them in block
    # order, as one process does (gapscope.engine.distributed.Share.in_order).
    # A thread holds a block of unit rows and its products.
    current_share().in_order(len(blocks), block_scatter, add, d * d, lane_bytes=(rows + d) * d * 8)
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
