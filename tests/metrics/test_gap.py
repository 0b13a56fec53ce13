"""Tests for gapscope.metrics.gap against hand-derived values and a full numpy re-computation."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from gapscope.errors import EmbeddingError
from gapscope.metrics.gap import ModalityGap, modality_gap


def reference_gap(x: np.ndarray, y: np.ndarray) -> dict:
    """Plain full-matrix numpy version of the definition."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    mx = (x / np.linalg.norm(x, axis=1, keepdims=True)).mean(axis=0)
    my = (y / np.linalg.norm(y, axis=1, keepdims=True)).mean(axis=0)
    g = mx - my
    sq = np.sort(g**2)[::-1]
    return {
        "vector": g,
        "gap": np.linalg.norm(g),
        "centroid_norm_x": np.linalg.norm(mx),
        "centroid_norm_y": np.linalg.norm(my),
        "centroid_cosine": mx @ my / (np.linalg.norm(mx) * np.linalg.norm(my)),
        "top1_share": sq[0] / sq.sum(),
        "top10_share": sq[:10].sum() / sq.sum(),
    }


def test_hand_derived_one_row_against_two():
    # x = (3, 4)/5 = (0.6, 0.8); y rows both normalise to (1, 0).
    # g = (-0.4, 0.8), ||g||^2 = 0.16 + 0.64 = 0.8, cos = 0.6, top1 = 0.64 / 0.8 = 0.8.
    g = modality_gap(np.array([[3.0, 4.0]]), np.array([[1.0, 0.0], [2.0, 0.0]]))
    assert g.gap == pytest.approx(math.sqrt(0.8), abs=1e-12)
    assert g.centroid_norm_x == pytest.approx(1.0, abs=1e-12)
    assert g.centroid_norm_y == pytest.approx(1.0, abs=1e-12)
    assert g.centroid_cosine == pytest.approx(0.6, abs=1e-12)
    assert g.top1_share == pytest.approx(0.8, abs=1e-12)
    assert g.top10_share == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(g.vector, [-0.4, 0.8], atol=1e-12)


def test_hand_derived_opposite_modalities():
    # x: e1, e2 (raw norms 3 and 2); y: -e1, -e2. Means (0.5, 0.5) and (-0.5, -0.5):
    # g = (1, 1), gap = sqrt(2), centroid norms sqrt(0.5), cosine -1, top1 = 1/2.
    g = modality_gap(np.array([[3.0, 0.0], [0.0, 2.0]]), np.array([[-1.0, 0.0], [0.0, -1.0]]))
    assert g.gap == pytest.approx(math.sqrt(2.0), abs=1e-12)
    assert g.centroid_norm_x == pytest.approx(math.sqrt(0.5), abs=1e-12)
    assert g.centroid_norm_y == pytest.approx(math.sqrt(0.5), abs=1e-12)
    assert g.centroid_cosine == pytest.approx(-1.0, abs=1e-12)
    assert g.top1_share == pytest.approx(0.5, abs=1e-12)
    assert g.top10_share == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(("a", "b"), [(0.3, 1.1), (1.2, 0.4), (0.7, 0.7)])
def test_analytic_known_gap_vector(a, b):
    # x rows: cos(a) e1 + sin(a) (+-e_k), k = 2..d; their mean is exactly cos(a) e1.
    # y rows: cos(b) e2 + sin(b) (+-e_k), k != 2; mean cos(b) e2. So g = (cos a, -cos b, 0, ...).
    d = 6
    eye = np.eye(d)
    xs = [math.cos(a) * eye[0] + s * math.sin(a) * eye[k] for k in range(1, d) for s in (1, -1)]
    ys = [
        math.cos(b) * eye[1] + s * math.sin(b) * eye[k] for k in range(d) if k != 1 for s in (1, -1)
    ]
    rng = np.random.default_rng(0)
    # Raw rows carry arbitrary positive norms: only directions matter.
    x = np.array(xs) * rng.uniform(0.5, 5.0, size=(len(xs), 1))
    y = np.array(ys) * rng.uniform(0.5, 5.0, size=(len(ys), 1))
    g = modality_gap(x, y)
    ca, cb = math.cos(a), math.cos(b)
    expected = np.zeros(d)
    expected[0], expected[1] = ca, -cb
    np.testing.assert_allclose(g.vector, expected, atol=1e-12)
    assert g.gap == pytest.approx(math.hypot(ca, cb), abs=1e-12)
    assert g.centroid_norm_x == pytest.approx(ca, abs=1e-12)
    assert g.centroid_norm_y == pytest.approx(cb, abs=1e-12)
    assert g.centroid_cosine == pytest.approx(0.0, abs=1e-12)
    assert g.top1_share == pytest.approx(max(ca, cb) ** 2 / (ca**2 + cb**2), abs=1e-12)


def test_identical_modalities_give_exactly_zero():
    x = np.random.default_rng(1).normal(size=(20, 8))
    g = modality_gap(x, x.copy())
    assert g.gap == 0.0
    assert g.top1_share == 0.0 and g.top10_share == 0.0
    assert g.centroid_cosine == pytest.approx(1.0, abs=1e-12)
    assert not g.vector.any()


def test_zero_centroid_gives_zero_cosine():
    # x = {e1, -e1} has centroid 0; the gap is then the norm of y's centroid, (0.6, 0.8).
    g = modality_gap(np.array([[1.0, 0.0], [-1.0, 0.0]]), np.array([[3.0, 4.0]]))
    assert g.centroid_norm_x == 0.0
    assert g.centroid_cosine == 0.0
    assert g.gap == pytest.approx(1.0, abs=1e-12)
    assert g.top1_share == pytest.approx(0.64, abs=1e-12)


def test_top10_share_when_d_above_10():
    # x = one row with squared coordinates 12, 11, ..., 1 (after normalising by sum = 78);
    # y = -x, so g = 2 x and the shares are those of x's squared coordinates.
    x = np.sqrt(np.arange(12, 0, -1, dtype=np.float64))[None, :]
    g = modality_gap(x, -x)
    assert g.top1_share == pytest.approx(12 / 78, abs=1e-12)
    assert g.top10_share == pytest.approx((78 - 1 - 2) / 78, abs=1e-12)
    assert g.gap == pytest.approx(2.0, abs=1e-12)


@pytest.mark.parametrize("block_size", [1, 5, 16, 37, 64, None])
def test_blocked_equals_full_matrix_reference(block_size):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(37, 32)) + 0.5
    y = rng.normal(size=(23, 32)) - 0.3
    g = modality_gap(x, y, block_size=block_size)
    ref = reference_gap(x, y)
    np.testing.assert_allclose(g.vector, ref["vector"], atol=1e-12)
    for key in (
        "gap",
        "centroid_norm_x",
        "centroid_norm_y",
        "centroid_cosine",
        "top1_share",
        "top10_share",
    ):
        assert getattr(g, key) == pytest.approx(ref[key], abs=1e-12), key


def test_float16_memmap_and_torch_inputs(tmp_path):
    rng = np.random.default_rng(3)
    x16 = rng.normal(size=(50, 16)).astype(np.float16)
    y16 = rng.normal(size=(40, 16)).astype(np.float16)
    np.save(tmp_path / "x.npy", x16)
    np.save(tmp_path / "y.npy", y16)
    xm = np.load(tmp_path / "x.npy", mmap_mode="r")
    ym = np.load(tmp_path / "y.npy", mmap_mode="r")
    assert not xm.flags.writeable
    ref = reference_gap(x16, y16)
    g = modality_gap(xm, ym, block_size=7)
    assert g.gap == pytest.approx(ref["gap"], abs=1e-12)
    gt = modality_gap(torch.from_numpy(x16.astype(np.float32)), torch.from_numpy(y16))
    assert gt.gap == pytest.approx(ref["gap"], abs=1e-7)


def test_deterministic_and_frozen():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(30, 10)), rng.normal(size=(30, 10))
    a, b = modality_gap(x, y), modality_gap(x, y)
    assert a == b
    assert np.array_equal(a.vector, b.vector)
    assert isinstance(a.gap, float) and isinstance(a.top10_share, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.gap = 0.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        a.vector[0] = 1.0
    assert isinstance(a, ModalityGap)


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        (np.array([[np.nan, 1.0]]), np.ones((1, 2)), "NaN"),
        (np.ones((1, 2)), np.array([[np.inf, 1.0]]), "NaN or Inf"),
        (np.array([[0.0, 0.0], [1.0, 0.0]]), np.ones((1, 2)), "zero vector"),
        (np.ones(3), np.ones((1, 3)), "2-D"),
        (np.ones((2, 3)), np.ones((2, 4)), "dim"),
        (np.ones((2, 3), dtype=np.int64), np.ones((2, 3)), "dtype"),
        (np.ones((0, 3)), np.ones((2, 3)), "at least 1"),
    ],
)
def test_bad_input_raises(x, y, match):
    with pytest.raises(EmbeddingError, match=match):
        modality_gap(x, y)
