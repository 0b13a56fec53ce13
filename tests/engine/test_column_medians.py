"""Column medians (gapscope.engine.column_medians): numpy.median's values from a radix select
over rows read whole, or from slices of columns, and how many reads each takes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from gapscope.engine import column_medians as cm
from gapscope.engine.column_medians import column_medians, median_reads

DTYPES = [np.float16, np.float32, np.float64]
#: Negatives, zeros of both signs, subnormals, the largest float16 values and many repeats.
POOL = np.array([-65504, -3.5, -1, -6e-8, -0.0, 0.0, 6e-8, 1e-5, 0.5, 2, 65504])


def _mixed(n: int, dtype: type, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [
            rng.choice(POOL, size=(n, 3)),
            rng.normal(scale=rng.choice([1e-6, 1.0, 1e3]), size=(n, 2)),
            np.full((n, 1), -2.0),
            # Far from zero against its spread: many values share their first 16 bits.
            rng.normal(5.0, 1e-3, size=(n, 1)),
        ],
        axis=1,
    ).astype(dtype)


def _radix(a: np.ndarray, budget: int = 10**9) -> np.ndarray:
    return cm._RadixSelect(a, budget).medians()


def _expected(a: np.ndarray) -> np.ndarray:
    return np.median(a.astype(np.float64), axis=0)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 10, 1000, 1001])
@pytest.mark.parametrize("dtype", DTYPES)
def test_both_ways_give_numpys_medians_on_every_kind_of_value(n, dtype):
    a = _mixed(n, dtype, n)
    expected = _expected(a)
    np.testing.assert_array_equal(_radix(a), expected)
    for budget in (1, 4096, 10**9):
        np.testing.assert_array_equal(cm._sliced_medians(a, budget), expected)
        np.testing.assert_array_equal(column_medians(a, budget), expected)


@pytest.mark.parametrize("lanes", [2, 3])
def test_lanes_take_slices_of_their_share_of_the_budget(monkeypatch, lanes):
    # One process in lanes cuts the columns into a slice a lane (7 columns in 3 lanes: 3, 3
    # and 1), each partitioned on its own thread: numpy's medians all the same.
    a = _mixed(1001, np.float32, seed=lanes)
    made = []
    copy = cm._copy_transposed
    monkeypatch.setattr(cm, "scan_lanes", lambda n_blocks, lane_bytes: lanes)
    monkeypatch.setattr(cm, "_copy_transposed", lambda t, s: made.append(t.shape) or copy(t, s))
    np.testing.assert_array_equal(cm._sliced_medians(a, 10**9), _expected(a))
    assert sorted(made) == sorted((w, 1001) for w in ([4, 3] if lanes == 2 else [3, 3, 1]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_rows_in_the_other_byte_order(dtype):
    # A memory-mapped file keeps its byte order: the patterns are read in the machine's.
    a = _mixed(1001, dtype, 7)
    swapped = a.astype(a.dtype.newbyteorder("S"))
    np.testing.assert_array_equal(_radix(swapped), _expected(a))
    np.testing.assert_array_equal(column_medians(swapped, 1), _expected(a))


@pytest.mark.parametrize("dtype", DTYPES)
def test_zeros_of_either_sign_give_positive_zero_as_numpy_does(dtype):
    a = np.array([[0.0, -0.0, -0.0], [-0.0, -0.0, 0.0], [-0.0, -0.0, 0.0]], dtype=dtype)
    for rows in (a, a[:2]):
        expected = _expected(rows)
        assert not np.signbit(expected).any()
        for got in (_radix(rows), cm._sliced_medians(rows, 10**9)):
            np.testing.assert_array_equal(got, expected)
            assert not np.signbit(got).any()


def test_other_dtypes_take_the_slices():
    # Integers of a float's width are not float patterns.
    a = np.array([[1, -5], [3, 7], [2, 0]], dtype=np.int32)
    np.testing.assert_array_equal(column_medians(a), [2.0, 0.0])
    assert not cm._radix(3, 2, np.dtype(np.int32), 10**9)


def test_a_tie_in_reads_goes_to_the_slices_for_few_rows():
    # One read either way: partitioning few rows costs less than 2^16 counts a column.
    budget = cm.MEDIAN_BUDGET_BYTES
    for n in (1000, cm._RADIX_ROWS - 1, cm._RADIX_ROWS):
        assert cm._radix_reads(n, 512, 2, budget) == cm._slice_reads(n, 512, budget) == 1
    assert not cm._radix(1000, 512, np.dtype(np.float16), budget)
    assert cm._radix(cm._RADIX_ROWS, 512, np.dtype(np.float16), budget)


@pytest.mark.parametrize("chunk_bytes", [1, 7, 64, 10**9])
@pytest.mark.parametrize("dtype", DTYPES)
def test_the_radix_select_does_not_depend_on_the_chunks_or_the_groups(
    monkeypatch, chunk_bytes, dtype
):
    # Chunks of one row up to every row at once; groups of one column (a tiny budget) or all.
    monkeypatch.setattr(cm, "_CHUNK_BYTES", chunk_bytes)
    a = _mixed(101, dtype, 3)
    for budget in (1, 10**9):
        np.testing.assert_array_equal(_radix(a, budget), _expected(a))


@pytest.mark.parametrize("dtype", DTYPES)
def test_middle_values_that_part_at_every_digit(dtype):
    # An even count whose two middle values first differ in the first, second, ... digit of
    # their bits: the lower is then the largest value of its prefix, the upper the smallest
    # of its own, found by the next read.
    bits = np.dtype(dtype).itemsize * 8
    unsigned = cm._PATTERNS[np.dtype(dtype).itemsize][0]
    base = np.array(1.5, dtype=dtype).view(unsigned)
    columns = []
    for depth in range(bits // 16):
        step = unsigned(1) << unsigned(bits - 16 * (depth + 1))
        low, high = base, unsigned(base + step)
        below = np.array([low - unsigned(3), low - unsigned(1), low], dtype=unsigned)
        above = np.array([high, high + unsigned(2), high + unsigned(5)], dtype=unsigned)
        for sign in (1.0, -1.0):
            values = np.concatenate([below, above]).view(dtype) * np.asarray(sign, dtype)
            columns.append(np.random.default_rng(depth).permutation(values))
    a = np.stack(columns, axis=1)
    np.testing.assert_array_equal(_radix(a), _expected(a))
    np.testing.assert_array_equal(_radix(np.ascontiguousarray(a[::-1])), _expected(a))


def test_the_largest_float64_values_of_an_odd_count_do_not_overflow():
    a = np.array([[1.7e308], [1.6e308], [-1.7e308]])
    np.testing.assert_array_equal(_radix(a), [1.6e308])


@pytest.mark.parametrize("n", [3, 5])
def test_reversed_rows_with_a_one_row_chunk(monkeypatch, n):
    # A last chunk of one row of reversed rows keeps a negative stride in a "contiguous"
    # view; the transposing copy must not hand it to torch.
    a = np.random.default_rng(n).normal(size=(n, 2)).astype(np.float16)[::-1]
    expected = _expected(a)
    monkeypatch.setattr(cm, "_CHUNK_BYTES", 4)  # two rows of the two columns a chunk
    for dtype in DTYPES:
        np.testing.assert_array_equal(_radix(a.astype(dtype)), expected)
        np.testing.assert_array_equal(_radix(a.astype(dtype)[::-1][::-1]), expected)
        np.testing.assert_array_equal(column_medians(a.astype(dtype)[::-1][::-1]), expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_views_with_negative_strides_are_read_through_a_copy(monkeypatch, dtype):
    # Chunks of a memory map are transposed in place; a view torch cannot take (reversed
    # rows or columns) is copied first.
    monkeypatch.setattr(cm, "_CHUNK_BYTES", 48)
    a = _mixed(41, dtype, 5)
    for view in (a[::-1], a[:, ::-1], a[::-2, ::-1]):
        np.testing.assert_array_equal(_radix(view), _expected(view))
        np.testing.assert_array_equal(_radix(view, 1), _expected(view))


def test_a_fortran_ordered_input_is_left_as_it_was():
    # A float64 Fortran-ordered input's columns are contiguous already: the median must not
    # partition the caller's array in place.
    a = np.asfortranarray(np.random.default_rng(9).normal(size=(50, 4)))
    before = a.copy()
    np.testing.assert_array_equal(column_medians(a), np.median(before, axis=0))
    np.testing.assert_array_equal(a, before)


class _CountedRows:
    """Rows that count how many of them are read (every slice of rows, whatever columns)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.rows_read = array, 0
        self.shape, self.dtype = array.shape, array.dtype

    def __getitem__(self, key):
        rows = key[0] if isinstance(key, tuple) else key
        self.rows_read += len(range(*rows.indices(self.shape[0])))
        return self.array[key]


@pytest.mark.parametrize(("dtype", "reads"), [(np.float16, 1), (np.float32, 2), (np.float64, 4)])
def test_the_radix_select_reads_each_row_once_a_digit(monkeypatch, dtype, reads):
    # 70,001 rows of 4 columns and 1 MiB: the four columns' counts fit, while a slice of
    # columns as float64 holds one column (four reads of every row; the radix select takes
    # the slices' path only when they read fewer times). An odd count: one middle value,
    # whose digits take every read (two middle values that part early take fewer).
    monkeypatch.setattr(cm, "_CHUNK_BYTES", 2**16)
    n = 70_001
    a = np.random.default_rng(0).normal(size=(n, 4)).astype(dtype)
    budget = 2**20
    assert cm._slice_reads(n, 4, budget) == 4
    rows = _CountedRows(a)
    np.testing.assert_array_equal(column_medians(rows, budget), _expected(a))  # type: ignore[arg-type]
    assert rows.rows_read == reads * n
    assert median_reads(n, 4, dtype, budget) == reads


def test_median_reads_grow_with_the_rows_only_for_slices_of_columns():
    # Slices of 256 MiB hold 3 float64 columns of 10M rows: 171 reads of 512 columns.
    assert cm._slice_reads(10_000_000, 512, cm.MEDIAN_BUDGET_BYTES) == 171
    assert [median_reads(n, 512, np.float16) for n in (10**4, 10**6, 10**7, 10**8)] == [1] * 4
    assert [median_reads(n, 512, np.float32) for n in (10**4, 10**6, 10**7, 10**8)] == [1, 2, 2, 2]
    assert median_reads(10**8, 512, np.float64) == 4
    # 1,024 columns' int32 counts fit 256 MiB: wider rows take a group of columns a read.
    assert median_reads(10**8, 1536, np.float16) == 2


class _FailingRows(_CountedRows):
    def __getitem__(self, key):
        if key[0].start <= 30 < key[0].stop:
            raise FloatingPointError("row 30")
        return super().__getitem__(key)


def test_a_failed_read_raises(monkeypatch):
    monkeypatch.setattr(cm, "_CHUNK_BYTES", 64)
    with pytest.raises(FloatingPointError, match="row 30"):
        _radix(_FailingRows(np.ones((100, 2), np.float16)))  # type: ignore[arg-type]


def _counted(a: np.ndarray, slices: list[tuple[int, int]], threads: int = 3) -> np.ndarray:
    """PatternCounts of ``a`` fed ``slices`` from ``threads`` threads at once, in the order
    given, every other slice in the other byte order and every third reversed."""
    counts = cm.PatternCounts(*a.shape)

    def add(k: int) -> None:
        part = a[slices[k][0] : slices[k][1]]
        if k % 2:
            part = part.astype(part.dtype.newbyteorder("S"))
        if k % 3 == 2:
            part = part[::-1]  # the same rows: counts do not depend on their order
        counts.add(part)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(add, range(len(slices))))
    return counts.medians()


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 10, 1000, 1001])
@pytest.mark.parametrize("chunk_rows", [1, 7, None])
def test_pattern_counts_give_the_medians_of_the_radix_select(monkeypatch, n, chunk_rows):
    # Each thread counts its patterns a chunk of rows at a time (here 1 or 7 rows, or the
    # default 64 MiB): slices fill, cross and leave chunks part-filled, and the threads end
    # before medians() counts what they left.
    if chunk_rows is not None:
        monkeypatch.setattr(cm, "_CHUNK_BYTES", 2 * 7 * chunk_rows)  # 7 columns of float16
    a = _mixed(n, np.float16, n)
    bounds = np.unique(np.r_[0, np.random.default_rng(n).integers(0, n, 4), n])
    slices = list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))
    np.random.default_rng(1).shuffle(slices)
    got = _counted(a, slices)
    # Bit for bit: the zeros too (numpy's median of zeros of either sign is +0.0).
    assert got.tobytes() == _radix(a).tobytes() == (_expected(a) + 0.0).tobytes()


def test_pattern_counts_of_middle_values_that_part_and_of_one_column():
    # Two middle values far apart (an even count), and the largest values of an odd count.
    a = np.array([[-65504.0], [-1.0], [3.0], [65504.0]], np.float16)
    assert _counted(a, [(0, 1), (1, 4)]).tolist() == [1.0]
    odd = np.array([[65504.0], [65504.0], [-65504.0]], np.float16)
    assert _counted(odd, [(0, 3)]).tolist() == [65504.0]


def test_pattern_counts_of_some_rows_only_raise():
    # The counts are the only read: a slice left out (or added twice) is never taken for it.
    a = np.arange(12, dtype=np.float16).reshape(6, 2)
    counts = cm.PatternCounts(6, 2)
    counts.add(a[:3])
    with pytest.raises(ValueError, match="counts of 3 rows, expected 6"):
        counts.medians()
    with pytest.raises(ValueError, match=r"shape \(2, 3\), counts of 2 columns"):
        counts.add(np.zeros((2, 3), np.float16))
    # Other formats are never cast to float16 (float32 values would round to other medians).
    with pytest.raises(ValueError, match="float16 rows only, got float32"):
        counts.add(np.zeros((2, 2), np.float32))


def test_pattern_counts_apply_where_the_medians_take_one_read_of_float16():
    applies = cm.PatternCounts.applies
    assert applies(10**6, 512, np.float16) and applies(10**8, 1024, np.float16)
    assert applies(10**6, 512, np.dtype(">f2"))
    # Other formats take more reads; below 32,768 rows a slice of columns is as few reads
    # and is taken; 1,536 columns' counts are two groups, a read each.
    assert not applies(10**6, 512, np.float32) and not applies(10**6, 512, np.float64)
    assert not applies(1000, 512, np.float16) and not applies(10**8, 1536, np.float16)
    # A budget that holds 8 columns' counts, or slices of 2 float64 columns of 100,000 rows.
    assert applies(100_000, 8, np.float16, budget_bytes=8 * 2**16 * 4)
    assert not applies(100_000, 9, np.float16, budget_bytes=8 * 2**16 * 4)
