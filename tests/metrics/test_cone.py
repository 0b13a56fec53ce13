"""Tests for gapscope.metrics.cone against hand-derived values and the full cosine matrix."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gapscope.errors import EmbeddingError
from gapscope.metrics.cone import cone_effect


def reference_cone(x) -> float:
    """Mean of the off-diagonal entries of the full cosine matrix."""
    x = np.asarray(x, dtype=np.float64)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    cos = u @ u.T
    n = len(x)
    return float(cos[~np.eye(n, dtype=bool)].mean())


def test_hand_derived_three_rows():
    # Rows e1, e2, (1,1)/sqrt2: pair cosines 0, 1/sqrt2, 1/sqrt2 -> mean sqrt(2)/3.
    value = cone_effect(np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]]))
    assert value == pytest.approx(math.sqrt(2) / 3, abs=1e-12)


def test_identical_directions_give_one():
    direction = np.random.default_rng(0).normal(size=(1, 9))
    scales = np.array([[0.1], [1.0], [3.0], [250.0], [7.0]])
    assert cone_effect(direction * scales) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("d", [2, 5, 64])
def test_orthonormal_basis_gives_zero(d):
    assert cone_effect(np.eye(d)) == pytest.approx(0.0, abs=1e-12)


def test_antipodal_rows_give_minimum():
    # e1, -e1: the only pair has cosine -1 = -1 / (n - 1).
    assert cone_effect(np.array([[1.0, 0.0], [-2.0, 0.0]])) == pytest.approx(-1.0, abs=1e-12)
    # Three rows at 120 degrees sum to zero: minimum -1 / (n - 1) = -1/2.
    angles = np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3])
    rows = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    assert cone_effect(rows) == pytest.approx(-0.5, abs=1e-12)


@pytest.mark.parametrize("block_size", [1, 5, 16, 37, 64, None])
def test_blocked_equals_full_matrix_reference(block_size):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(37, 20)) + 0.7
    assert cone_effect(x, block_size=block_size) == pytest.approx(reference_cone(x), abs=1e-12)


def test_float16_memmap_and_torch_inputs(tmp_path):
    x16 = np.random.default_rng(2).normal(size=(33, 8)).astype(np.float16)
    np.save(tmp_path / "x.npy", x16)
    xm = np.load(tmp_path / "x.npy", mmap_mode="r")
    ref = reference_cone(x16)
    assert cone_effect(xm, block_size=10) == pytest.approx(ref, abs=1e-12)
    assert cone_effect(torch.from_numpy(x16)) == pytest.approx(ref, abs=1e-12)


def test_deterministic():
    x = np.random.default_rng(3).normal(size=(100, 16))
    assert cone_effect(x) == cone_effect(x.copy())
    assert type(cone_effect(x)) is float


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (np.ones((1, 3)), "at least 2"),
        (np.array([[np.nan, 1.0], [1.0, 1.0]]), "NaN"),
        (np.array([[1.0, 1.0], [np.inf, 1.0]]), "NaN or Inf"),
        (np.array([[1.0, 1.0], [0.0, 0.0]]), "zero vector"),
        (np.ones(4), "2-D"),
        (np.ones((2, 2), dtype=np.int32), "dtype"),
    ],
)
def test_bad_input_raises(x, match):
    with pytest.raises(EmbeddingError, match=match):
        cone_effect(x)
