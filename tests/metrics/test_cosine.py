"""Tests for gapscope.metrics.cosine against hand-derived values and full cosine matrices."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gapscope.errors import EmbeddingError
from gapscope.metrics.cosine import PairCosine, paired_cosine

R = 1 / math.sqrt(2)


def reference_cosines(x, y, gx=None, gy=None):
    """Full n x m cosine matrix, masked by group equality."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    cos = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (
        y / np.linalg.norm(y, axis=1, keepdims=True)
    ).T
    if gx is None:
        positive = np.eye(len(x), dtype=bool)
    else:
        positive = np.asarray(gx)[:, None] == np.asarray(gy)[None, :]
    unpaired = cos[~positive].mean() if (~positive).any() else None
    return cos[positive].mean(), unpaired, int(positive.sum())


def test_hand_derived_one_to_one():
    # x: e1, e2; y normalises to (1, 1)/sqrt(2), e2.
    # positives: <e1, (1,1)/sqrt2> = 1/sqrt2, <e2, e2> = 1  -> (1 + 1/sqrt2) / 2
    # others:    <e1, e2> = 0, <e2, (1,1)/sqrt2> = 1/sqrt2 -> (1/sqrt2) / 2
    c = paired_cosine(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 1.0], [0.0, 2.0]]))
    assert c.paired == pytest.approx((1 + R) / 2, abs=1e-12)
    assert c.unpaired == pytest.approx(R / 2, abs=1e-12)
    assert c.n_pairs == 2


def test_hand_derived_many_to_one_groups():
    # Images e1 (group 10), e2 (group 20); captions e1, (1,1)/sqrt2 (group 10), e2 (group 20).
    # Positives: (0,0) = 1, (0,1) = 1/sqrt2, (1,2) = 1            -> (2 + 1/sqrt2) / 3
    # Others:    (0,2) = 0, (1,0) = 0, (1,1) = 1/sqrt2            -> (1/sqrt2) / 3
    x = np.array([[1.0, 0.0], [0.0, 5.0]])
    y = np.array([[2.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    c = paired_cosine(x, y, [10, 20], [10, 10, 20])
    assert c.paired == pytest.approx((2 + R) / 3, abs=1e-12)
    assert c.unpaired == pytest.approx(R / 3, abs=1e-12)
    assert c.n_pairs == 3


def test_groups_present_in_one_modality_only():
    # Group 7 has no caption, group 9 no image: they only add unpaired pairs.
    # x: e1 (g 1), e2 (g 7); y: e1 (g 1), -e1 (g 9).
    # Positives: (0,0) = 1. Others: (0,1) = -1, (1,0) = 0, (1,1) = 0 -> -1/3.
    c = paired_cosine(
        np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 0.0], [-1.0, 0.0]]), [1, 7], [1, 9]
    )
    assert c.paired == pytest.approx(1.0, abs=1e-12)
    assert c.unpaired == pytest.approx(-1 / 3, abs=1e-12)
    assert c.n_pairs == 1


def test_identical_modalities_pair_with_cosine_one():
    x = np.random.default_rng(0).normal(size=(25, 6))
    c = paired_cosine(x, x.copy())
    assert c.paired == pytest.approx(1.0, abs=1e-12)
    assert c.n_pairs == 25


def test_all_pairs_positive_gives_no_unpaired():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(4, 3)), rng.normal(size=(5, 3))
    c = paired_cosine(x, y, np.zeros(4, dtype=np.int64), np.zeros(5, dtype=np.int32))
    ref, _, n_pairs = reference_cosines(x, y, np.zeros(4), np.zeros(5))
    assert c.unpaired is None
    assert c.n_pairs == n_pairs == 20
    assert c.paired == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("block_size", [1, 5, 16, 37, 64, None])
def test_blocked_equals_full_matrix_reference_with_groups(block_size):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(37, 12)) + 0.2
    y = rng.normal(size=(53, 12))
    # Non-contiguous, negative and large codes; some groups only on one side.
    gx = rng.choice([-5, 3, 3, 8, 1000, 42, 17], size=37)
    gy = rng.choice([-5, 3, 8, 1000, 99, 17, 17], size=53)
    c = paired_cosine(x, y, gx, gy, block_size=block_size)
    paired, unpaired, n_pairs = reference_cosines(x, y, gx, gy)
    assert c.n_pairs == n_pairs
    assert c.paired == pytest.approx(paired, abs=1e-12)
    assert c.unpaired == pytest.approx(unpaired, abs=1e-12)


@pytest.mark.parametrize("block_size", [1, 5, 16, 37, 64])
def test_blocked_equals_full_matrix_reference_one_to_one(block_size):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(37, 9))
    y = x + 0.5 * rng.normal(size=(37, 9))
    c = paired_cosine(x, y, block_size=block_size)
    paired, unpaired, n_pairs = reference_cosines(x, y)
    assert c.n_pairs == n_pairs == 37
    assert c.paired == pytest.approx(paired, abs=1e-12)
    assert c.unpaired == pytest.approx(unpaired, abs=1e-12)


@pytest.mark.parametrize("order", ["ascending", "descending", "shuffled"])
def test_one_row_a_group_in_any_row_order(order):
    # One row a group takes the sums without reduceat, and rows in group order are read as
    # a slice: groups that run backwards or shuffled must be read by index.
    rng = np.random.default_rng(4)
    x = rng.normal(size=(41, 6))
    y = x + rng.normal(size=(41, 6))
    codes = {
        "ascending": np.arange(41),
        "descending": np.arange(41)[::-1].copy(),
        "shuffled": rng.permutation(41),
    }[order]
    gy = rng.permutation(codes)
    c = paired_cosine(x, y, codes, gy, block_size=8)
    paired, unpaired, n_pairs = reference_cosines(x, y, codes, gy)
    assert c.n_pairs == n_pairs == 41
    assert c.paired == pytest.approx(paired, abs=1e-12)
    assert c.unpaired == pytest.approx(unpaired, abs=1e-12)


def test_float16_memmap_and_torch_inputs(tmp_path):
    rng = np.random.default_rng(4)
    x16 = rng.normal(size=(30, 8)).astype(np.float16)
    y16 = rng.normal(size=(30, 8)).astype(np.float16)
    np.save(tmp_path / "x.npy", x16)
    xm = np.load(tmp_path / "x.npy", mmap_mode="r")
    paired, unpaired, _ = reference_cosines(x16, y16)
    c = paired_cosine(xm, torch.from_numpy(y16), block_size=4)
    assert c.paired == pytest.approx(paired, abs=1e-12)
    assert c.unpaired == pytest.approx(unpaired, abs=1e-12)


def test_deterministic_and_plain_types():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(40, 7)), rng.normal(size=(40, 7))
    a, b = paired_cosine(x, y), paired_cosine(x, y)
    assert a == b
    assert isinstance(a, PairCosine)
    assert type(a.paired) is float and type(a.unpaired) is float and type(a.n_pairs) is int


def test_no_positive_pairs_raises():
    with pytest.raises(EmbeddingError, match="no positive pairs"):
        paired_cosine(np.ones((2, 2)), np.ones((3, 2)), [0, 1], [2, 3, 4])


@pytest.mark.parametrize(
    ("x", "y", "gx", "gy", "match"),
    [
        (np.ones((3, 2)), np.ones((4, 2)), None, None, "without groups"),
        (np.ones((3, 2)), np.ones((3, 2)), [0, 1, 2], None, "both modalities"),
        (np.ones((3, 2)), np.ones((3, 2)), [0, 1], [0, 1, 2], "shape"),
        (np.ones((3, 2)), np.ones((3, 2)), [0.5, 1, 2], [0, 1, 2], "integer"),
        (np.ones((3, 2)), np.ones((3, 3)), None, None, "dim"),
        (np.array([[np.nan, 1.0]]), np.ones((1, 2)), None, None, "NaN"),
        (np.ones((1, 2)), np.zeros((1, 2)), None, None, "zero vector"),
        (np.ones(2), np.ones((1, 2)), None, None, "2-D"),
    ],
)
def test_bad_input_raises(x, y, gx, gy, match):
    with pytest.raises(EmbeddingError, match=match):
        paired_cosine(x, y, gx, gy)
