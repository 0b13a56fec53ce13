"""Group codes shared by two modalities, found by one sort."""

from __future__ import annotations

import numpy as np
import pytest

from gapscope.engine.blocks import shares_a_code


@pytest.mark.parametrize("seed", range(8))
def test_shares_a_code_agrees_with_intersect1d(seed):
    rng = np.random.default_rng(seed)
    high = int(rng.choice([3, 50, 2**40, 2**62]))  # dense codes and hashed ones
    x = rng.integers(-high, high, size=int(rng.integers(0, 40)))
    y = rng.integers(-high, high, size=int(rng.integers(0, 40)))
    assert shares_a_code(x, y) == bool(np.intersect1d(x, y).size)
    assert shares_a_code(y, x) == shares_a_code(x, y)


def test_a_code_at_either_end_is_found():
    x = np.array([7, -3, 11])
    assert shares_a_code(x, np.array([100, -3]))  # the smallest of x
    assert shares_a_code(x, np.array([11]))  # the largest
    assert not shares_a_code(x, np.array([12, -4, 0]))
    assert not shares_a_code(x, np.array([], dtype=np.int64))
    assert not shares_a_code(np.array([], dtype=np.int64), x)
