"""Exact column medians of row-major rows, in a fixed number of reads whatever the row count.

``numpy.median(a, axis=0)`` needs each column whole. Taking a slice of columns of a
row-major memory map reads every page of the file (a row's few columns share a page with
the rest of it), and a slice that fits a memory budget holds fewer columns the more rows
there are: as float64 copies in 256 MiB, 33 columns of 1M rows (16 reads of a file of 512
columns), 3 of 10M rows (171 reads), one from 16.8M rows on (a read a column).

:func:`column_medians` selects the middle values by their bits instead (a radix select),
16 bits a read, from rows read whole and in order:

1. a value's bit pattern, read as an unsigned integer, orders like the value within each
   sign (larger patterns are larger positives and smaller negatives), so the patterns of a
   16-bit *digit* order like the values once the negative half is reversed;
2. each read counts, for every column, the digits at the current position of the values
   whose higher digits equal the column's prefix so far (``2^16`` counts a column); the
   running sum of the counts in value order tells which digit the middle value has, and
   its rank among the values that share the longer prefix;
3. for an even row count the lower and the upper middle value are followed together; where
   their digits part, the lower is the largest value of its prefix and the upper the
   smallest of its own, which the next read finds by one comparison a value.

float16 takes one read, float32 two and float64 four (times the groups of columns whose
counts fit the budget: 1,024 columns a group at 256 MiB, 512 from ``2^31`` rows on, when
the counts are int64); the slices of columns take ``ceil(d / width)`` with ``width`` the
columns of ``n`` float64 values that fit the budget. Each input takes whichever of the two
reads the rows fewer times (and the slices on a tie below :data:`_RADIX_ROWS` rows; a
function of the shape, the dtype and the budget alone), and both give ``numpy.median``'s
values (the middle value for an odd count, the mean of the two in float64 for an even one,
and +0.0 for zeros of either sign). Rows in the other byte order are read in the machine's.

Processes sharing the passes (:mod:`~gapscope.engine.distributed`) count their share of the
chunks of rows and add the counts (integers: exact) over the processes; the slices of
columns are shared through :meth:`~gapscope.engine.distributed.Share.in_order`.

The one read of float16 rows can be made in a read that happens anyway
(:class:`PatternCounts`: an analysis counts the patterns in its validating read), and the
medians then come from the counts without reading a row.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

from gapscope.engine.blocks import row_blocks
from gapscope.engine.distributed import current_share
from gapscope.engine.pipelining import in_lanes, scan_lanes
from gapscope.engine.validation import Rows

__all__ = ["MEDIAN_BUDGET_BYTES", "PatternCounts", "column_medians", "median_reads"]

#: What the medians hold at once: the counts of a group of columns (int32, ``2^16`` a
#: column; the chunk of rows being counted and its transposed copy add up to 128 MiB more),
#: those of every lane that counts chunks beside the others (each with its chunks too), or
#: a slice of columns as float64 (and the copy of the slice it is made from).
MEDIAN_BUDGET_BYTES = 256 * 2**20

_DIGIT_BITS = 16
_DIGITS = 1 << _DIGIT_BITS
_TOP_BIT = 1 << (_DIGIT_BITS - 1)
#: Rows from which the radix select is taken when it reads the rows as many times as the
#: slices of columns (`benchmarks/bench_column_medians.py --ties`, docs/performance.md).
_RADIX_ROWS = 1 << 15
#: Transposed rows of a chunk at once (a group's columns, contiguous), in bytes.
_CHUNK_BYTES = 64 * 2**20

# Unsigned integers of each float's width (their patterns), and the signed ones of the same
# width that torch's transposing copy takes.
_PATTERNS = {2: (np.uint16, np.int16), 4: (np.uint32, np.int32), 8: (np.uint64, np.int64)}

#: Position -> digit in the order of the values, for the first digit (it holds the sign):
#: the negative patterns from the largest down, then the positive ones up.
_FIRST_ORDER = np.concatenate(
    [np.arange(_DIGITS - 1, _TOP_BIT - 1, -1), np.arange(_TOP_BIT)]
).astype(np.int64)
_ASCENDING = np.arange(_DIGITS, dtype=np.int64)
_DESCENDING = _ASCENDING[::-1].copy()


def column_medians(a: Rows, budget_bytes: int | None = None) -> np.ndarray:
    """``numpy.median(a, axis=0)`` in float64, reading ``a`` a few times whole.

    Args:
        a: ``(n, d)`` float16, float32 or float64 rows, ``n >= 1`` (a numpy array or memory
            map, or validated :class:`~gapscope.engine.validation.Embeddings`), every value
            finite.
        budget_bytes: memory for the counts or the slices of columns at once;
            ``None``: :data:`MEDIAN_BUDGET_BYTES`.

    Returns:
        ``(d,)`` float64 medians: the middle value, or the mean of the two middle values for
        an even ``n``.

    Example:
        >>> column_medians(np.array([[1.0, -2.0], [3.0, 5.0], [2.0, 0.5]], np.float32)).tolist()
        [2.0, 0.5]
    """
    budget = MEDIAN_BUDGET_BYTES if budget_bytes is None else budget_bytes
    n, d = a.shape
    if _radix(n, d, np.dtype(a.dtype), budget):
        return _RadixSelect(a, budget).medians()
    return _sliced_medians(a, budget)


class PatternCounts:
    """:func:`column_medians` of float16 rows, counted from slices of rows read elsewhere.

    For float16 the radix select is one read that counts each column's ``2^16`` bit
    patterns. Here the caller hands over each slice of rows as it reads them for a purpose of
    its own (:meth:`add`, from any thread, in any order), and :meth:`medians` selects the
    middle values from the counts as :func:`column_medians` does from its own read: the same
    values, bit for bit, and no read of the rows. The counts are integers, so neither the
    order of the slices nor the threads that counted them change them; processes sharing the
    passes each count their own slices, and :meth:`medians` adds the counts over them.

    Each thread gathers its slices' patterns, transposed, until they fill a chunk of the
    radix select's size (64 MiB), and counts them then: adding ``2^16`` counts a column for
    every small slice would cost more than the counting itself.

    Memory: the counts, ``d x 2^16`` int32 (128 MiB for ``d = 512``; int64 from ``2^31``
    rows), and a chunk of transposed patterns for each thread that adds slices
    (:meth:`lane_bytes`), held until :meth:`medians`.

    Example:
        >>> rows = np.array([[1.0, -2.0], [3.0, 5.0], [2.0, 0.5]], np.float16)
        >>> counts = PatternCounts(3, 2)
        >>> counts.add(rows[2:]); counts.add(rows[:2])
        >>> counts.medians().tolist()
        [2.0, 0.5]
    """

    def __init__(self, n: int, d: int) -> None:
        self.n, self.d = n, d
        # Rows of the right shape that are never read: the counts are the select's only read.
        self._select = _RadixSelect(np.broadcast_to(np.float16(0), (n, d)), MEDIAN_BUDGET_BYTES)
        self.counts = np.zeros((d, _DIGITS), dtype=self._select.count_dtype)
        self.chunk_rows = max(1, min(n, _CHUNK_BYTES // (2 * max(d, 1))))
        self._adding = threading.Lock()
        # Each thread's patterns not counted yet, by thread: kept past the thread's end, so
        # that medians() counts what a lane left.
        self._pending: dict[int, _Pending] = {}

    @staticmethod
    def applies(n: int, d: int, dtype: np.dtype | type, budget_bytes: int | None = None) -> bool:
        """Whether :func:`column_medians` of an ``(n, d)`` array of ``dtype`` takes one read
        of float16 patterns (then :class:`PatternCounts` gives its values).

        >>> PatternCounts.applies(1_000_000, 512, np.float16)
        True
        >>> PatternCounts.applies(10**6, 512, np.float32), PatternCounts.applies(100, 8, np.float16)
        (False, False)
        """
        budget = MEDIAN_BUDGET_BYTES if budget_bytes is None else budget_bytes
        kind = np.dtype(dtype)
        return (
            kind.kind == "f"
            and kind.itemsize == 2
            and _radix(n, d, kind, budget)
            and _radix_reads(n, d, kind.itemsize, budget) == 1
        )

    def lane_bytes(self) -> int:
        """What a thread that adds slices holds: its chunk of transposed patterns, and one
        column's counts as numpy makes them (int64)."""
        return 2 * self.chunk_rows * self.d + 8 * _DIGITS

    def add(self, raw: np.ndarray) -> None:
        """Count the patterns of a slice of rows, ``(rows, d)`` float16 as read (either byte
        order, any strides)."""
        if raw.ndim != 2 or raw.shape[1] != self.d:
            raise ValueError(f"a slice of shape {raw.shape}, counts of {self.d} columns")
        if raw.dtype.kind != "f" or raw.dtype.itemsize != 2:
            raise ValueError(f"float16 rows only, got {raw.dtype}")
        pending = self._of_this_thread()
        done = 0
        while done < raw.shape[0]:
            take = min(self.chunk_rows - pending.filled, raw.shape[0] - done)
            target = pending.patterns[:, pending.filled : pending.filled + take]
            _transposed_patterns(raw[done : done + take], self._select.dtype, target)
            pending.filled += take
            done += take
            if pending.filled == self.chunk_rows:
                self._count(pending)

    def medians(self) -> np.ndarray:
        """``numpy.median(rows, axis=0)`` in float64, from the counts of every row (added
        over the processes that share the passes: every process calls this)."""
        for pending in self._pending.values():
            self._count(pending)
        self._pending.clear()
        current_share().sum(self.counts)
        # Every slice adds its rows to every column: the first column's total tells them all
        # (a guard on the row total, not on which rows were added).
        counted = int(self.counts[0].sum()) if self.d else self.n
        if counted != self.n:
            raise ValueError(f"counts of {counted} rows, expected {self.n}")
        return self._select.medians(first=self.counts)

    def _of_this_thread(self) -> _Pending:
        ident = threading.get_ident()
        with self._adding:
            pending = self._pending.get(ident)
            if pending is None:
                # A thread that started after another ended may take its identity, and with
                # it the patterns it left: they are counted all the same.
                pending = self._pending[ident] = _Pending(self.d, self.chunk_rows)
            return pending

    def _count(self, pending: _Pending) -> None:
        columns = pending.patterns[:, : pending.filled]
        if pending.filled:
            for c in range(self.d):
                found = np.bincount(columns[c], minlength=_DIGITS)
                with self._adding:
                    np.add(self.counts[c], found, out=self.counts[c], casting="unsafe")
        pending.filled = 0


class _Pending:
    """A thread's transposed patterns (``d x chunk_rows``), the first ``filled`` columns not
    counted yet."""

    def __init__(self, d: int, chunk_rows: int) -> None:
        self.patterns = np.empty((d, chunk_rows), dtype=np.uint16)
        self.filled = 0


def median_reads(n: int, d: int, dtype: np.dtype | type, budget_bytes: int | None = None) -> int:
    """How many times, at most, :func:`column_medians` reads every row of an ``(n, d)``
    array (two middle values that part early take fewer reads).

    >>> median_reads(10_000_000, 512, np.float16), median_reads(10_000_000, 512, np.float32)
    (1, 2)
    """
    budget = MEDIAN_BUDGET_BYTES if budget_bytes is None else budget_bytes
    kind = np.dtype(dtype)
    if _radix(n, d, kind, budget):
        return _radix_reads(n, d, kind.itemsize, budget)
    return _slice_reads(n, d, budget)


def _radix(n: int, d: int, dtype: np.dtype, budget: int) -> bool:
    """Whether the radix select reads the rows fewer times than the slices of columns (or as
    many, from :data:`_RADIX_ROWS` rows on: below, its fixed work of ``2^16`` counts a column
    costs more than partitioning the columns)."""
    if dtype.kind != "f" or dtype.itemsize not in _PATTERNS:
        return False
    radix, sliced = _radix_reads(n, d, dtype.itemsize, budget), _slice_reads(n, d, budget)
    return radix < sliced or (radix == sliced and n >= _RADIX_ROWS)


def _group_columns(n: int, budget: int) -> int:
    """Columns whose counts fit ``budget`` (int32 counts while ``n`` fits them)."""
    width = 4 if n < 2**31 else 8
    return max(1, budget // (width * _DIGITS))


def _radix_reads(n: int, d: int, itemsize: int, budget: int) -> int:
    groups = -(-d // _group_columns(n, budget))
    return groups * (itemsize * 8 // _DIGIT_BITS)


def _slice_width(n: int, d: int, budget: int) -> int:
    return max(1, min(d, budget // (8 * n)))


def _slice_reads(n: int, d: int, budget: int) -> int:
    return -(-d // _slice_width(n, d, budget))


def _sliced_medians(a: Rows, budget: int) -> np.ndarray:
    """The medians a slice of columns at a time (a float64 copy of each slice, partitioned by
    ``numpy.median``); processes take the slices in turn, and lanes of one process take
    slices of their share of the budget."""
    n, d = a.shape
    width = _slice_width(n, d, budget)
    share = current_share()
    # One process alone splits the budget among lanes, a slice each (at 20,000 rows of 512
    # columns the whole array is one slice, partitioned on one thread while the others
    # wait). The slices never change a median, only how many lanes read the rows.
    lanes = scan_lanes(d, 16 * n) if share.world == 1 else 0
    if lanes:
        width = max(1, min(_slice_width(n, d, budget // lanes), -(-d // lanes)))
    slices = list(row_blocks(d, width))
    out = np.empty(d, dtype=np.float64)

    def make(b: int) -> np.ndarray:
        c0, c1 = slices[b]
        # Each column contiguous (a transposed copy): partitioning a strided column is slower.
        columns = np.empty((c1 - c0, n), dtype=np.float64)
        _copy_transposed(columns, np.array(a[:, c0:c1], dtype=np.float64, order="C"))
        values = np.zeros(width)
        values[: c1 - c0] = np.median(columns, axis=1, overwrite_input=True)
        return values

    def fold(b: int, values: np.ndarray) -> None:
        c0, c1 = slices[b]
        out[c0:c1] = values[: c1 - c0]

    # A lane holds its slice's float64 copy and the transposed copy.
    share.in_order(len(slices), make, fold, width, lane_bytes=16 * n * width if lanes else None)
    return out


def _copy_transposed(target: np.ndarray, source: np.ndarray) -> None:
    """``target[...] = source.T`` (``source`` with non-negative strides, in whole elements:
    a C-ordered array, or a slice of one, read in place). torch's transposing copy is several
    times faster than numpy's: 0.16 s against 0.90 s for 128 float16 columns of a million
    rows, about a third of numpy's time for float64."""
    torch.from_numpy(target).copy_(torch.from_numpy(source).t())


@dataclass(frozen=True)
class _Sought:
    """What a read of the radix select looks for in columns ``c0:c1``: the digits at
    ``depth`` (``shift`` bits above the pattern's end) of the ``counting`` columns' values
    whose bits above ``above`` are their ``lows``, and the extremes of the ``extremes``
    columns' values under ``lows`` (the largest) and ``highs`` (the smallest)."""

    c0: int
    c1: int
    depth: int
    shift: int
    above: int
    lows: np.ndarray
    highs: np.ndarray
    counting: list[int]
    extremes: list[int]


class _Tally:
    """What one thread counts in a read of the radix select: the digits of the counting
    columns, the extremes of the others, and the chunk of rows it transposes."""

    def __init__(self, counting: int, extremes: int, count_dtype: type[np.integer]) -> None:
        self.shape = (counting, _DIGITS)
        self.count_dtype = count_dtype
        self.counts = np.zeros((0, _DIGITS), dtype=count_dtype)
        self.largest = np.full(extremes, -np.inf)
        self.smallest = np.full(extremes, np.inf)
        self.patterns: np.ndarray | None = None

    def allocate(self) -> None:
        """The counts (allocated where a failure is caught: the memory they take)."""
        self.counts = np.zeros(self.shape, dtype=self.count_dtype)


class _RadixSelect:
    """The radix select of :func:`column_medians`, a group of columns at a time.

    Per column: ``prefix`` (the digits of the middle values found so far, as an integer) and
    the ranks ``lower`` and ``upper`` of the two middle values among the values that share
    it. Once the two part, ``prefix`` is the lower's (it is the largest value under it) and
    ``prefix_upper`` the upper's (the smallest under it)."""

    def __init__(self, a: Rows, budget: int) -> None:
        self.a = a
        self.n, self.d = a.shape
        # Chunks are read in the machine's byte order: the patterns are then the values'.
        self.dtype = np.dtype(a.dtype).newbyteorder("=")
        self.bits = self.dtype.itemsize * 8
        self.unsigned, self.signed = _PATTERNS[self.dtype.itemsize]
        self.group = min(self.d, _group_columns(self.n, budget))
        self.budget = budget
        self.count_dtype = np.int32 if self.n < 2**31 else np.int64
        self.share = current_share()

    def medians(self, first: np.ndarray | None = None) -> np.ndarray:
        """The medians; ``first``: the counts of the first digit of every column, counted
        already (:class:`PatternCounts`), in place of the first read."""
        out = np.empty(self.d, dtype=np.float64)
        for c0, c1 in row_blocks(self.d, self.group):
            out[c0:c1] = self._group_medians(c0, c1, None if first is None else first[c0:c1])
        # numpy's median of zeros is +0.0 (its mean adds from +0.0), whatever their signs.
        return out + 0.0

    def _group_medians(self, c0: int, c1: int, first: np.ndarray | None) -> np.ndarray:
        g = c1 - c0
        prefix = np.zeros(g, dtype=np.uint64)
        prefix_upper = np.zeros(g, dtype=np.uint64)
        lower = np.full(g, (self.n - 1) // 2, dtype=np.int64)
        upper = np.full(g, self.n // 2, dtype=np.int64)
        parted = np.zeros(g, dtype=bool)
        done = np.zeros(g, dtype=bool)
        low_value, high_value = np.zeros(g), np.zeros(g)
        depths = self.bits // _DIGIT_BITS
        for depth in range(depths):
            counting = np.flatnonzero(~done & ~parted)
            extremes = np.flatnonzero(~done & parted)
            if not counting.size and not extremes.size:
                break
            if depth == 0 and first is not None:
                # Every column counts at the first digit, and none is parted yet.
                counts, largest, smallest = first, np.empty(0), np.empty(0)
            else:
                counts, largest, smallest = self._read(
                    c0, c1, depth, prefix, prefix_upper, counting, extremes
                )
            low_value[extremes], high_value[extremes] = largest, smallest
            done[extremes] = True
            for row, c in enumerate(counting.tolist()):
                order = self._order(depth, int(prefix[c]))
                running = np.cumsum(counts[row][order], dtype=np.int64)
                at = np.searchsorted(running, [lower[c], upper[c]], side="right")
                below = np.where(at > 0, running[np.maximum(at - 1, 0)], 0)
                found = (prefix[c] << np.uint64(_DIGIT_BITS)) | order[at].astype(np.uint64)
                if depth == depths - 1:
                    low_value[c], high_value[c] = self._values(found)
                    done[c] = True
                elif at[0] == at[1]:
                    prefix[c] = found[0]
                    lower[c], upper[c] = lower[c] - below[0], upper[c] - below[1]
                else:
                    # Parted: the lower is the last value of its digit, the upper the first
                    # of its own; the next read finds both by comparison.
                    prefix[c], prefix_upper[c] = found
                    parted[c] = True
        if self.n % 2:
            # numpy's median of an odd count is the middle value itself (its mean with
            # itself would overflow for the largest float64 values).
            return low_value
        return (low_value + high_value) / 2.0

    def _order(self, depth: int, prefix: int) -> np.ndarray:
        """Position -> digit in the order of the values, at ``depth`` below ``prefix``."""
        if depth == 0:
            return _FIRST_ORDER
        negative = prefix >> ((depth * _DIGIT_BITS) - 1) & 1
        return _DESCENDING if negative else _ASCENDING

    def _values(self, patterns: np.ndarray) -> tuple[float, float]:
        """The two values of whole ``patterns`` (uint64), as floats."""
        values = patterns.astype(self.unsigned).view(self.dtype).astype(np.float64)
        return float(values[0]), float(values[1])

    def _read(
        self,
        c0: int,
        c1: int,
        depth: int,
        prefix: np.ndarray,
        prefix_upper: np.ndarray,
        counting: np.ndarray,
        extremes: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One read of the rows: for each ``counting`` column, the counts of the digit at
        ``depth`` of its values under its prefix; for each ``extremes`` column, the largest
        value under ``prefix`` and the smallest under ``prefix_upper``.

        This process reads its share of the chunks of rows; the counts and the extremes are
        then combined over the processes (integer sums, maxima and minima: the same on every
        process). Everything a process can fail at alone (the buffers, the reads) is caught
        and handed to the sum, whose status exchange
        (:meth:`~gapscope.engine.distributed.Share.raise_together`) every process reaches
        and raises it on all, so none is left waiting in the sums."""
        g = c1 - c0
        rows = max(1, _CHUNK_BYTES // (g * self.dtype.itemsize))
        chunks = list(row_blocks(self.n, rows))
        sought = _Sought(
            c0,
            c1,
            depth,
            # Python ints: a numpy uint64 shift would widen uint32 patterns to uint64.
            shift=self.bits - _DIGIT_BITS * (depth + 1),
            above=self.bits - _DIGIT_BITS * depth,
            lows=prefix.astype(self.unsigned),
            highs=prefix_upper.astype(self.unsigned),
            counting=counting.tolist(),
            extremes=extremes.tolist(),
        )
        share = self.share
        chunk_rows = min(rows, self.n)
        # One process alone counts its chunks in lanes, each with counts and a chunk of its
        # own, added up after (integers, maxima and minima: the same whichever lane counted
        # which chunk), as many as the budget holds counts for (two for 512 float16 columns
        # in 256 MiB).
        counted = counting.size * _DIGITS * np.dtype(self.count_dtype).itemsize
        lanes = 0
        if share.world == 1:
            lanes = scan_lanes(len(chunks), counted + 2 * g * chunk_rows * self.dtype.itemsize)
            lanes = min(lanes, self.budget // max(counted, 1))
            lanes = lanes if lanes >= 2 else 0
        tallies = [
            _Tally(counting.size, extremes.size, self.count_dtype) for _ in range(lanes or 1)
        ]

        def count(k: int, lane: int) -> None:
            tally = tallies[lane]
            if tally.patterns is None:
                tally.patterns = np.empty((g, chunk_rows), dtype=self.unsigned)
            self._count(sought, tally, *chunks[k])

        error: Exception | None = None
        try:
            for tally in tallies:
                tally.allocate()
            if lanes:
                in_lanes(len(chunks), lanes, count, blas_threads=1)
            else:
                for k in share.blocks(len(chunks)):
                    count(k, 0)
        except Exception as exc:  # raised on every process below
            error = exc
        counts = tallies[0].counts
        for tally in tallies[1:]:
            counts += tally.counts
        largest = np.max([t.largest for t in tallies], axis=0, initial=-np.inf)
        smallest = np.min([t.smallest for t in tallies], axis=0, initial=np.inf)
        share.sum(counts, error=error)
        if extremes.size and share.world > 1:
            largest = share.gather(largest).max(axis=0)
            smallest = share.gather(smallest).min(axis=0)
        return counts, largest, smallest

    def _count(self, sought: _Sought, tally: _Tally, start: int, stop: int) -> None:
        """Add the digits and extremes of rows ``start:stop`` to ``tally``."""
        assert tally.patterns is not None
        columns = tally.patterns[:, : stop - start]
        self._transposed(start, stop, sought.c0, sought.c1, columns)
        counts = tally.counts
        for row, c in enumerate(sought.counting):
            column = columns[c]
            if sought.depth:
                column = column[(column >> sought.above) == sought.lows[c]]
            digits = column
            if self.bits > _DIGIT_BITS:
                digits = (column >> sought.shift) & (_DIGITS - 1)
            # Digits below 2^16: an int64 view of uint64 ones is the same numbers.
            if digits.dtype == np.uint64:
                digits = digits.view(np.int64)
            np.add(counts[row], np.bincount(digits, minlength=_DIGITS), out=counts[row])
        for row, c in enumerate(sought.extremes):
            top = columns[c] >> sought.above
            low = columns[c][top == sought.lows[c]].view(self.dtype)
            high = columns[c][top == sought.highs[c]].view(self.dtype)
            if low.size:
                tally.largest[row] = max(tally.largest[row], float(low.max()))
            if high.size:
                tally.smallest[row] = min(tally.smallest[row], float(high.min()))

    def _transposed(self, start: int, stop: int, c0: int, c1: int, out: np.ndarray) -> None:
        """``out[...] = a[start:stop, c0:c1].T`` as bit patterns, in the machine's byte order."""
        _transposed_patterns(np.asarray(self.a[start:stop, c0:c1]), self.dtype, out)


def _transposed_patterns(part: np.ndarray, dtype: np.dtype, out: np.ndarray) -> None:
    """``out[...] = part.T`` as the bit patterns of ``dtype`` (``part``'s kind in the
    machine's byte order; ``out``: its unsigned integers of the same width)."""
    if part.dtype != dtype or any(s < 0 or s % part.itemsize for s in part.strides):
        # A copy in the machine's byte order with strides torch takes (it refuses negative
        # ones). Rows as read (a slice of a memory map) need none: torch's transposing copy
        # reads them in place, which saves a copy of every row (about 1 s a read of a
        # million float16 rows of d = 512).
        part = np.array(part, dtype, order="C")
    # Viewed as the signed integers torch copies.
    signed = _PATTERNS[dtype.itemsize][1]
    _copy_transposed(out.view(signed), part.view(signed))
