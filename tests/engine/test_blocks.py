"""Group codes shared by two modalities, found by one sort; pairs of rows numbered without
listing them."""

from __future__ import annotations

import numpy as np
import pytest

from gapscope.engine.blocks import NegativePairIndex, PairIndex, shares_a_code


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


@pytest.mark.parametrize("seed", range(40))
def test_pair_indexes_number_the_mask_in_row_major_order(seed):
    """Against the full n x m mask: every positive and every negative pair, by number."""
    rng = np.random.default_rng(seed)
    n, m = (int(v) for v in rng.integers(0, 14, size=2))
    groups = int(rng.integers(1, 6))
    gx = rng.integers(-2, groups, size=n)
    gy = rng.integers(-2, groups, size=m)
    if seed % 5 == 0:  # one row a group, as without groups
        gx, gy = np.arange(n), np.arange(m)
    for index, mask in (
        (PairIndex(gx, gy), gx[:, None] == gy[None, :]),
        (NegativePairIndex(gx, gy), gx[:, None] != gy[None, :]),
    ):
        expected_i, expected_j = np.nonzero(mask)
        i, j = index.at(np.arange(index.total, dtype=np.int64))
        assert index.total == expected_i.size
        assert i.tolist() == expected_i.tolist() and j.tolist() == expected_j.tolist()
        some = rng.permutation(index.total)[: index.total // 2]  # any numbers, any order
        assert index.at(some)[1].tolist() == expected_j[some].tolist()


def test_negative_pairs_of_a_group_covering_most_of_y():
    """Rows whose group holds all of y but one: their one negative each is found by search."""
    gy = np.array([5, 5, 1, 5, 5])
    index = NegativePairIndex(np.array([5, 5, 9]), gy)
    i, j = index.at(np.arange(index.total))
    assert (i.tolist(), j.tolist()) == ([0, 1, 2, 2, 2, 2, 2], [2, 2, 0, 1, 2, 3, 4])
