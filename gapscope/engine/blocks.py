"""The block-size policy, and the row ranges and positive pairs that blocked code walks.

Two kinds of work are blocked, each with one rule, and both rules are pure functions of the
shapes (never of free memory), so the same input always gives the same blocks and the same
bits:

* **similarity blocks** (:func:`similarity_block_rows`): ``rows x n_keys`` float32 scores of
  an O(n^2) pass, 128 MiB a block, between 512 and 1024 rows where that fits 512 MiB;
* **scan chunks** (:func:`scan_block_rows`): rows of an O(n d) pass (normalising, summing,
  pair terms), 128 MiB of working memory a chunk.

``block_size`` arguments override the first (:func:`resolve_block_size`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from gapscope.engine.validation import check_block_size

__all__ = [
    "NegativePairIndex",
    "PairIndex",
    "SCAN_BUDGET_BYTES",
    "iter_positive_pairs",
    "positive_pair_counts",
    "positive_pairs_at",
    "resolve_block_size",
    "resolve_scan_rows",
    "row_blocks",
    "scan_block_rows",
    "shares_a_code",
    "similarity_block_rows",
]

#: Working memory of one scan chunk: large enough for efficient numpy calls, small for a laptop.
SCAN_BUDGET_BYTES = 128 * 2**20
# Scores in one similarity block: 2**25 float32 values = 128 MiB. Blocks of a few hundred rows
# or more keep the products near the BLAS peak (on 2 CPU cores, 167-row blocks of a 50k x 512
# product run at ~60 GFLOP/s, 1024-row blocks at ~90); a block's temporaries (a kernel copy,
# masks) make the working memory about 3x this.
_BLOCK_ELEMENTS = 2**25
# Chunks of keys wider than this are a multiple of it (see key_chunk_columns).
_KEY_CHUNK_MULTIPLE = 1024
# Beyond ~1024 rows the products gain nothing on a CPU, and fewer blocks overlap less; below
# ~512 they slow down.
_MAX_BLOCK_ROWS = 1024
_MIN_BLOCK_ROWS = 512
# Blocks that would be thinner than _MIN_BLOCK_ROWS may take this many times the budget.
_SMALL_BLOCK_FACTOR = 4


def similarity_block_rows(n_keys: int) -> int:
    """Rows a similarity block: its ``rows x n_keys`` float32 scores take 128 MiB, but at most
    1024 rows (more blocks let the products of one overlap the ranking of the previous) and at
    least 512 rows while that stays within 512 MiB (thinner products lose speed: at n = 100k,
    335-row blocks ran 1.24x slower than 2048-row ones). Beyond 262,144 keys a block is the
    512 MiB's worth, which also means a store normalised on the fly is read a quarter as often
    as with 128 MiB.

    >>> similarity_block_rows(50_000), similarity_block_rows(10_000)
    (671, 1024)
    >>> similarity_block_rows(10**6), similarity_block_rows(10**9)
    (134, 1)
    """
    n_keys = max(n_keys, 1)
    rows = _BLOCK_ELEMENTS // n_keys
    if rows < _MIN_BLOCK_ROWS:
        rows = min(_MIN_BLOCK_ROWS, _BLOCK_ELEMENTS * _SMALL_BLOCK_FACTOR // n_keys)
    return max(1, min(_MAX_BLOCK_ROWS, rows))


def key_chunk_columns(n_queries: int) -> int:
    """Keys a chunk when a fixed set of query rows meets every key a chunk of keys at a time
    (sampled uniformity): the ``n_queries x columns`` float32 scores take 128 MiB. It depends
    on the number of queries only, never on ``block_size``, so the chunked sums (and the
    report's bytes) do not change with the block size.

    Beyond 1,024 columns the width is a multiple of 1,024: a float32 product whose width is
    not a multiple of 16 or so runs up to a third slower on the CPU (``docs/performance.md``).

    >>> key_chunk_columns(2000), key_chunk_columns(40000), key_chunk_columns(10**9)
    (16384, 838, 1)
    """
    columns = max(1, _BLOCK_ELEMENTS // max(1, n_queries))
    return columns - columns % _KEY_CHUNK_MULTIPLE if columns >= _KEY_CHUNK_MULTIPLE else columns


def resolve_block_size(block_size: int | None, n_keys: int) -> int:
    """The validated ``block_size``, or :func:`similarity_block_rows` of ``n_keys``.

    >>> resolve_block_size(None, 10_000), resolve_block_size(7, 10_000)
    (1024, 7)
    """
    checked = check_block_size(block_size)
    return similarity_block_rows(n_keys) if checked is None else checked


def scan_block_rows(n_cols: int, *, bytes_per_entry: int = 24) -> int:
    """Rows a scan chunk, so that a ``(rows, n_cols)`` chunk of work fits 128 MiB.

    ``bytes_per_entry`` counts every temporary a pass keeps per entry (e.g. a float32 row
    plus two float64 copies is 4 + 8 + 8 + slack).

    >>> scan_block_rows(64), scan_block_rows(10**9)
    (87381, 1)
    """
    return max(1, SCAN_BUDGET_BYTES // max(1, n_cols * bytes_per_entry))


def resolve_scan_rows(block_size: int | None, n_cols: int, *, bytes_per_entry: int = 24) -> int:
    """The validated ``block_size``, or :func:`scan_block_rows` of ``n_cols``.

    >>> resolve_scan_rows(None, 64), resolve_scan_rows(10, 64)
    (87381, 10)
    """
    checked = check_block_size(block_size)
    return scan_block_rows(n_cols, bytes_per_entry=bytes_per_entry) if checked is None else checked


def row_blocks(n: int, block_size: int) -> Iterator[tuple[int, int]]:
    """Yield ``(start, stop)`` row ranges of at most ``block_size`` rows covering ``range(n)``.

    >>> list(row_blocks(5, 2))
    [(0, 2), (2, 4), (4, 5)]
    """
    for start in range(0, n, block_size):
        yield start, min(n, start + block_size)


def shares_a_code(groups_x: np.ndarray, groups_y: np.ndarray) -> bool:
    """Whether some code occurs in both ``groups_x`` and ``groups_y``.

    One sort and a binary search a code: ``numpy.intersect1d`` calls ``numpy.unique``, which
    numpy 2.4 runs by hashing for integers, about ten times slower than sorting at a million
    distinct codes (1.4 s against 0.1 s for two million-row modalities).

    >>> shares_a_code(np.array([3, 1]), np.array([2, 3]))
    True
    >>> shares_a_code(np.array([1, 4]), np.array([5, 2, 0]))
    False
    """
    if not groups_x.size or not groups_y.size:
        return False
    sorted_x = np.sort(groups_x)
    at = np.minimum(np.searchsorted(sorted_x, groups_y), sorted_x.size - 1)
    return bool((sorted_x[at] == groups_y).any())


def positive_pair_counts(groups_x: np.ndarray, groups_y: np.ndarray) -> np.ndarray:
    """For each row i of x, how many rows j of y share its group (int64, shape ``(n,)``).

    >>> positive_pair_counts(np.array([0, 1, 2]), np.array([0, 0, 1])).tolist()
    [2, 1, 0]
    """
    sorted_y = np.sort(groups_y, kind="stable")
    lo = np.searchsorted(sorted_y, groups_x, side="left")
    hi = np.searchsorted(sorted_y, groups_x, side="right")
    return (hi - lo).astype(np.int64)


class PairIndex:
    """Positive pairs ``(i, j)`` (``groups_x[i] == groups_y[j]``) numbered 0, 1, ... in order
    of i, then j, without listing them: pair number p maps to its row i through the
    cumulative per-row counts."""

    def __init__(self, groups_x: np.ndarray, groups_y: np.ndarray) -> None:
        self.order_y = np.argsort(groups_y, kind="stable")
        sorted_y = groups_y[self.order_y]
        self.lo = np.searchsorted(sorted_y, groups_x, side="left")
        counts = np.searchsorted(sorted_y, groups_x, side="right") - self.lo
        self.offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        self.total = int(self.offsets[-1])

    def at(self, numbers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The pairs with the given numbers, as int64 ``(i, j)``."""
        i = np.searchsorted(self.offsets, numbers, side="right") - 1
        j = self.order_y[self.lo[i] + (numbers - self.offsets[i])]
        return i.astype(np.int64), j.astype(np.int64)


class NegativePairIndex:
    """Negative pairs ``(i, j)`` (``groups_x[i] != groups_y[j]``) numbered 0, 1, ... in order
    of i, then j, without listing them (the complement of :class:`PairIndex`).

    Pair number p is in row i of the cumulative per-row counts, ``r = p - offsets[i]``-th
    of that row's negatives; with the rows of i's group in y at ``m_0 < m_1 < ...``, the r-th
    index not among them is ``j = r + #{t: m_t - t <= r}``. Every group's ``m_t - t`` is
    nondecreasing, so one sorted array of them (each group's values lifted past the
    previous groups') answers every pair with one binary search: O(log m) a pair and no
    ``n x m`` mask, however the groups fall.

    >>> index = NegativePairIndex(np.array([7, 3]), np.array([3, 7, 7]))
    >>> i, j = index.at(np.arange(index.total))
    >>> index.total, i.tolist(), j.tolist()
    (3, [0, 1, 1], [0, 1, 2])
    """

    def __init__(self, groups_x: np.ndarray, groups_y: np.ndarray) -> None:
        m = groups_y.shape[0]
        order_y = np.argsort(groups_y, kind="stable")  # each group's rows ascending
        sorted_y = groups_y[order_y]
        self.lo = np.searchsorted(sorted_y, groups_x, side="left")
        in_group = np.searchsorted(sorted_y, groups_x, side="right") - self.lo
        self.present = in_group > 0
        counts = m - in_group
        self.offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        self.total = int(self.offsets[-1])
        # Position p of the sorted y rows, in a group starting at position s: key s (m + 1)
        # + (order_y[p] - (p - s)). Keys rise within a group (m_t - t does not fall) and
        # from group to group (s rises and m_t - t <= m).
        starts = np.searchsorted(sorted_y, sorted_y, side="left").astype(np.int64)
        self.width = m + 1
        self.keys = starts * self.width + (order_y - (np.arange(m) - starts))

    def at(self, numbers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The pairs with the given numbers, as int64 ``(i, j)``."""
        i = np.searchsorted(self.offsets, numbers, side="right") - 1
        r = numbers - self.offsets[i]
        lo = self.lo[i].astype(np.int64)
        below = np.searchsorted(self.keys, lo * self.width + r, side="right") - lo
        j = r + np.where(self.present[i], below, 0)
        return i.astype(np.int64), j.astype(np.int64)


def iter_positive_pairs(
    groups_x: np.ndarray, groups_y: np.ndarray, chunk: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield the positive pairs ``(i, j)`` (``groups_x[i] == groups_y[j]``) in chunks.

    Pairs come ordered by i, then by j, as two int64 index arrays of at most ``chunk`` entries,
    so memory is O(chunk) however many pairs a group makes (a group of a rows and b rows makes
    a * b pairs).

    >>> [(i.tolist(), j.tolist()) for i, j in iter_positive_pairs(
    ...     np.array([7, 3]), np.array([3, 7, 7]), chunk=2)]
    [([0, 0], [1, 2]), ([1], [0])]
    """
    index = PairIndex(groups_x, groups_y)
    for start in range(0, index.total, chunk):
        yield index.at(np.arange(start, min(index.total, start + chunk), dtype=np.int64))


def positive_pairs_at(
    groups_x: np.ndarray, groups_y: np.ndarray, numbers: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The positive pairs with the given pair numbers, in the order of
    :func:`iter_positive_pairs` (by i, then by j).

    Lets a metric draw a uniform sample of positive pairs without listing them all.

    >>> i, j = positive_pairs_at(np.array([7, 3]), np.array([3, 7, 7]), np.array([1, 2]))
    >>> i.tolist(), j.tolist()
    ([0, 1], [2, 0])
    """
    return PairIndex(groups_x, groups_y).at(np.asarray(numbers, dtype=np.int64))
