"""Rows widened by torch are numpy's values, bit for bit, and the checks made from them hold."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

from gapscope.engine.moments import unit_sums
from gapscope.engine.normalization import normalize_rows, unit_rows
from gapscope.engine.validation import check_embeddings
from gapscope.engine.widening import WideningBuffer, widen
from gapscope.errors import EmbeddingError


def _every_float16() -> np.ndarray:
    """Every one of the 2^16 float16 bit patterns (NaNs, infinities, subnormals, -0.0)."""
    return np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).reshape(-1, 64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_float16_pattern_widens_to_numpys_value(dtype):
    rows = _every_float16()
    ours, numpys = widen(rows, dtype), rows.astype(dtype)
    assert ours.dtype == dtype and ours.flags.c_contiguous
    nan = np.isnan(numpys)
    np.testing.assert_array_equal(np.isnan(ours), nan)
    # Bits, not values: -0.0 stays -0.0 and subnormals stay exact.
    uint = np.uint32 if dtype == np.float32 else np.uint64
    np.testing.assert_array_equal(ours.view(uint)[~nan], numpys.view(uint)[~nan])


@pytest.mark.parametrize(
    "layout",
    ["memmap", "fortran", "columns", "reversed", "big-endian", "float32", "float64", "tensor"],
)
@pytest.mark.parametrize("target", [np.float32, np.float64])
def test_any_layout_or_dtype_widens_to_the_same_values(tmp_path, layout, target):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((300, 24)).astype(np.float16)
    if layout == "memmap":
        np.save(tmp_path / "rows.npy", base)
        rows = np.load(tmp_path / "rows.npy", mmap_mode="r")  # read-only
    elif layout == "fortran":
        rows = np.asfortranarray(base)
    elif layout == "columns":
        rows = base[:, 3:17]
    elif layout == "reversed":
        rows = base[::-1, ::-1]
    elif layout == "big-endian":
        rows = base.astype(">f2")
    elif layout == "float32":
        rows = base.astype(np.float32)
    elif layout == "float64":
        rows = base.astype(np.float64)
    else:
        import torch

        rows = torch.from_numpy(base.copy())
    expected = np.asarray(rows, dtype=target)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a read-only memory map must not make torch warn
        out = widen(rows, target)
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, expected)


def test_the_buffer_is_reused_and_grows():
    buffer = WideningBuffer(np.float32)
    a = buffer(np.ones((5, 3), dtype=np.float16))
    b = buffer(np.full((2, 3), 2.0, dtype=np.float16))
    assert np.shares_memory(a, b) and b.shape == (2, 3)
    np.testing.assert_array_equal(b, 2.0)
    c = buffer(np.full((9, 3), 3.0, dtype=np.float16))  # more rows: a larger buffer
    assert c.shape == (9, 3) and not np.shares_memory(a, c)
    d = buffer(np.full((2, 4), 4.0, dtype=np.float16))  # other columns: a buffer of their own
    assert d.shape == (2, 4)
    np.testing.assert_array_equal(d, 4.0)
    with pytest.raises(ValueError, match="widen: out holds"):
        widen(np.ones((3, 3), dtype=np.float16), np.float64, np.empty((2, 3)))


def test_unit_rows_in_a_buffer_are_the_same_bits():
    rng = np.random.default_rng(1)
    rows = (rng.standard_normal((257, 48)) * 30).astype(np.float16)
    buffer = WideningBuffer(np.float64)
    for start in range(0, 257, 100):
        part = rows[start : start + 100]
        np.testing.assert_array_equal(unit_rows(part, buffer), unit_rows(part))
        np.testing.assert_array_equal(
            unit_rows(part), unit_rows(part.astype(np.float64))
        )  # float16 widened exactly
    # The float32 unit rows of one slice are the same tensor values as those of many slices.
    one = normalize_rows(rows).numpy()
    np.testing.assert_array_equal(one[:100], normalize_rows(rows[:100]).numpy())
    total = unit_sums(rows, block_size=64)
    expected = sum(unit_rows(rows[s : s + 64]).sum(axis=0) for s in range(0, 257, 64))
    np.testing.assert_array_equal(total.total, expected)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_rows_at_the_ends_of_the_format_are_neither_infinite_nor_zero(dtype):
    info = np.finfo(dtype)
    tiny = np.array(info.smallest_subnormal, dtype=dtype)
    rows = np.ones((6, 512), dtype=dtype)
    rows[1] = info.max  # squares sum to 512 * max^2: finite in float64
    rows[2] = 0.0
    rows[2, 7] = tiny  # one subnormal: its square is not zero in float64
    rows[3] = -0.0
    rows[3, 0] = -tiny
    checked = check_embeddings(rows, "image", slice_rows=4)
    assert checked.shape == (6, 512)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.nan, "row 5 contains NaN or Inf"),
        (np.inf, "row 5 contains NaN or Inf"),
        (-np.inf, "row 5 contains NaN or Inf"),
        (0.0, "row 5 is a zero vector"),
        (-0.0, "row 5 is a zero vector"),
    ],
)
def test_bad_narrow_rows_are_named(dtype, value, message):
    rows = np.ones((9, 5), dtype=dtype)
    if value == 0.0:
        rows[5] = value  # the whole row
    else:
        rows[5, 3] = value
    rows[7] = 0.0  # a later bad row is not the one named
    with pytest.raises(EmbeddingError, match=message):
        check_embeddings(rows, "text", slice_rows=4)


def test_a_read_only_memory_map_makes_no_warning_even_as_errors(tmp_path):
    # torch warns once a process about arrays that are not writable; widen spends that one
    # warning at import, so a run with warnings as errors reads a read-only store.
    np.save(tmp_path / "rows.npy", np.ones((4, 3), dtype=np.float16))
    code = (
        "import numpy as np, sys\n"
        "from gapscope.engine.widening import widen\n"
        "rows = np.load(sys.argv[1], mmap_mode='r')\n"
        "assert not rows.flags.writeable\n"
        "print(widen(rows, np.float32).sum())\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code, str(tmp_path / "rows.npy")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "12.0"


@pytest.mark.parametrize("value", [1e200, 1e-200])
def test_big_endian_float64_rows_keep_the_elementwise_checks(value):
    # Squares of float64 values can overflow or underflow: only float16/32 rows (in either
    # byte order) are checked from their sums of squares.
    rows = np.full((6, 3), value, dtype=">f8")
    assert check_embeddings(rows, "image", slice_rows=4).shape == (6, 3)
    rows[4] = 0.0
    with pytest.raises(EmbeddingError, match="row 4 is a zero vector"):
        check_embeddings(rows, "image", slice_rows=4)
    small = np.ones((6, 3), dtype=">f4")
    small[2, 1] = np.inf
    with pytest.raises(EmbeddingError, match="row 2 contains NaN or Inf"):
        check_embeddings(small, "image", slice_rows=4)
