"""Tests for gapscope.engine.numerics."""

from __future__ import annotations

import numpy as np
import pytest

from gapscope.engine.numerics import times_power_of_two


def _every_magnitude(seed: int) -> np.ndarray:
    """Float64 values over the whole range: subnormals, the extremes, zeros of both signs."""
    rng = np.random.default_rng(seed)
    mantissas = rng.uniform(0.5, 1.0, 20_000) * rng.choice([-1.0, 1.0], 20_000)
    values = np.ldexp(mantissas, rng.integers(-1074, 1025, 20_000))
    edges = [5e-324, -5e-324, 2.2250738585072014e-308, 1e-310, 1.7976931348623157e308, 0.0, -0.0]
    return np.concatenate([values, edges, [np.inf, -np.inf, np.nan]])


@pytest.mark.parametrize(
    "k",
    [0, 1, -1, 52, -52, 1023, -1022, -1023, -1074, -1075, 1024, 1500, 2046, 2047, -1100, -2100],
)
def test_times_power_of_two_is_ldexp_bit_for_bit(k):
    # Rounded results (scaling into the subnormals) and exact ones alike, overflow to inf
    # included: every bit of numpy's ldexp.
    x = _every_magnitude(k & 0xFFFF)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        want = np.ldexp(x, k)
        got = times_power_of_two(x, k, np.empty_like(x))
    assert np.array_equal(got.view(np.int64), want.view(np.int64))


def test_times_power_of_two_writes_in_place():
    # Small rows scaled far up (two products), into their own buffer.
    values = [1e-320, 3e-318, -5e-324]
    x = np.array(values)
    out = times_power_of_two(x, 1100, x)
    assert out is x
    assert np.array_equal(x, np.ldexp(np.array(values), 1100))
    assert np.isfinite(x).all()
