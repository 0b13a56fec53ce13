"""Row blocks, block sizes and positive-pair enumeration shared by the blocked metrics.

The O(n^2) and O(|P|) metrics never hold more than one block of work in memory; these helpers
keep the block bookkeeping in one place so every metric slices the same way. Block sizes depend
only on the shapes (never on free memory), so the same input always gives the same blocks and
bit-identical results.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from gapscope.errors import GapscopeError

# Working memory one block may use. Large enough that BLAS calls stay efficient, small enough
# for a laptop; blocks are a pure function of the shapes so results stay reproducible.
BLOCK_BUDGET_BYTES = 128 * 2**20


def check_block_size(block_size: int | None, name: str = "block_size") -> int | None:
    """Validate an explicit block size (a positive int); ``None`` means "pick one".

    >>> check_block_size(16)
    16
    >>> check_block_size(0)
    Traceback (most recent call last):
    ...
    gapscope.errors.GapscopeError: block_size: expected a positive integer, got 0
    """
    if block_size is None:
        return None
    if isinstance(block_size, bool) or not isinstance(block_size, int | np.integer):
        raise GapscopeError(f"{name}: expected a positive integer, got {block_size!r}")
    if block_size < 1:
        raise GapscopeError(f"{name}: expected a positive integer, got {block_size!r}")
    return int(block_size)


def pick_block_size(
    n_cols: int, *, bytes_per_entry: int = 24, budget_bytes: int = BLOCK_BUDGET_BYTES
) -> int:
    """Rows per block so that a ``(rows, n_cols)`` block of work fits ``budget_bytes``.

    ``bytes_per_entry`` counts every temporary a metric keeps per entry (e.g. a float32 product
    plus two float64 copies is 4 + 8 + 8 + slack).

    >>> pick_block_size(1000, bytes_per_entry=8, budget_bytes=80_000)
    10
    >>> pick_block_size(10**9)
    1
    """
    return max(1, budget_bytes // max(1, n_cols * bytes_per_entry))


def resolve_block_size(
    block_size: int | None, n_cols: int, *, bytes_per_entry: int = 24, name: str = "block_size"
) -> int:
    """Return the validated ``block_size``, or one picked by :func:`pick_block_size`."""
    checked = check_block_size(block_size, name)
    if checked is not None:
        return checked
    return pick_block_size(n_cols, bytes_per_entry=bytes_per_entry)


def row_blocks(n: int, block_size: int) -> Iterator[tuple[int, int]]:
    """Yield ``(start, stop)`` row ranges of at most ``block_size`` rows covering ``range(n)``.

    >>> list(row_blocks(5, 2))
    [(0, 2), (2, 4), (4, 5)]
    """
    for start in range(0, n, block_size):
        yield start, min(n, start + block_size)


def unit_rows(block: np.ndarray) -> np.ndarray:
    """Return the rows of ``block`` L2-normalised, as a new float64 array.

    Rows must be non-zero (``check_embeddings`` guarantees it).

    >>> unit_rows(np.array([[3.0, 4.0]], dtype=np.float16)).tolist()
    [[0.6, 0.8]]
    """
    out = np.array(block, dtype=np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", out, out))
    odd = ~((norms > 1e-150) & (norms < 1e150))
    if odd.any():
        # Squares past the float64 range (e.g. entries of 1e200): scale those rows first.
        out[odd] /= np.abs(out[odd]).max(axis=1, keepdims=True)
        norms[odd] = np.sqrt(np.einsum("ij,ij->i", out[odd], out[odd]))
    out /= norms[:, None]
    return out


def sum_unit_rows(x: np.ndarray, block_size: int) -> tuple[np.ndarray, float]:
    """Sum of the L2-normalised rows of ``x`` and the sum of their squared norms, in float64.

    The squared norms are 1 up to rounding; returning their computed sum lets callers cancel
    the diagonal with the same rounding (identical rows then give a cone of 1 to ~1e-16).

    >>> s, q = sum_unit_rows(np.array([[2.0, 0.0], [0.0, 5.0]]), block_size=1)
    >>> s.tolist(), q
    ([1.0, 1.0], 2.0)
    """
    total = np.zeros(x.shape[1], dtype=np.float64)
    squares = 0.0
    for start, stop in row_blocks(x.shape[0], block_size):
        rows = unit_rows(x[start:stop])
        total += rows.sum(axis=0)
        squares += float(np.einsum("ij,ij->", rows, rows))
    return total, squares


def positive_pair_counts(groups_x: np.ndarray, groups_y: np.ndarray) -> np.ndarray:
    """For each row i of x, how many rows j of y share its group (int64, shape ``(n,)``).

    >>> positive_pair_counts(np.array([0, 1, 2]), np.array([0, 0, 1])).tolist()
    [2, 1, 0]
    """
    sorted_y = np.sort(groups_y, kind="stable")
    lo = np.searchsorted(sorted_y, groups_x, side="left")
    hi = np.searchsorted(sorted_y, groups_x, side="right")
    return (hi - lo).astype(np.int64)


def iter_positive_pairs(
    groups_x: np.ndarray, groups_y: np.ndarray, chunk: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield the positive pairs ``(i, j)`` (``groups_x[i] == groups_y[j]``) in chunks.

    Pairs come ordered by i, then by j, as two int64 index arrays of at most ``chunk`` entries,
    so memory is O(chunk) however many pairs a group makes (a group of a rows and b rows makes
    a * b pairs). Pair number p maps to its row i through the cumulative per-row counts.

    >>> [(i.tolist(), j.tolist()) for i, j in iter_positive_pairs(
    ...     np.array([7, 3]), np.array([3, 7, 7]), chunk=2)]
    [([0, 0], [1, 2]), ([1], [0])]
    """
    order_y = np.argsort(groups_y, kind="stable")
    sorted_y = groups_y[order_y]
    lo = np.searchsorted(sorted_y, groups_x, side="left")
    counts = np.searchsorted(sorted_y, groups_x, side="right") - lo
    offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
    total = int(offsets[-1])
    for start in range(0, total, chunk):
        pair = np.arange(start, min(total, start + chunk), dtype=np.int64)
        i = np.searchsorted(offsets, pair, side="right") - 1
        j = order_y[lo[i] + (pair - offsets[i])]
        yield i, j
