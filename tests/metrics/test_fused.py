"""Tests for gapscope.engine.passes: one pass per similarity block gives what the per-metric
functions give, and what a full-matrix numpy computation gives.

Gaussian data in float32 keep distinct scores far apart compared with float32 rounding, so
ranks (hence recall, mAP, R-precision) must agree exactly; uniformity within 1e-6.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gapscope.errors import GapscopeError
from gapscope.engine import passes as fused
from gapscope.engine.passes import cross_pass, fused_pair_pass, modality_pass
from gapscope.metrics.retrieval import cross_modal_retrieval, intra_modal_retrieval
from gapscope.metrics.uniformity import uniformity_with_row_terms

KS = (1, 3, 10, 50)


def _data(n: int, seed: int, per_group: int = 3, d: int = 24, n_labels: int = 7):
    """x with ``per_group`` rows a group (many-to-one), y one row a group, near its x rows."""
    rng = np.random.default_rng(seed)
    n_groups = -(-n // per_group)
    gx = np.arange(n) // per_group
    gy = rng.permutation(n_groups)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x[gy * per_group] + rng.normal(size=(n_groups, d))).astype(np.float32)
    labels = rng.integers(0, n_labels, size=n)
    return x, y, gx, gy, labels


def _ref_uniformity(x: np.ndarray, t: float = 2.0) -> tuple[float, np.ndarray]:
    """Full-matrix float64 uniformity and row terms (mean over j != i)."""
    u = x.astype(np.float64) / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    sq = np.clip(2.0 - 2.0 * (u @ u.T), 0.0, None)
    kern = np.exp(-t * sq)
    np.fill_diagonal(kern, 0.0)
    n = len(x)
    return math.log(kern.sum() / (n * (n - 1))), np.log(kern.sum(axis=1) / (n - 1))


def _same(a, b) -> None:
    assert a.recall == b.recall
    assert (a.n_queries, a.n_skipped) == (b.n_queries, b.n_skipped)
    for name in ("mean_average_precision", "r_precision"):
        va, vb = getattr(a, name), getattr(b, name)
        assert (va is None) == (vb is None)
        if va is not None:
            assert va == pytest.approx(vb, abs=1e-12)
    assert (a.se is None) == (b.se is None)
    if a.se is not None:
        for key in a.se:
            assert a.se[key] == pytest.approx(b.se[key], abs=1e-12, nan_ok=True)
    if a.per_query is not None or b.per_query is not None:
        np.testing.assert_array_equal(a.query_rows, b.query_rows)
        assert a.per_query.keys() == b.per_query.keys()
        for key in a.per_query:
            np.testing.assert_allclose(a.per_query[key], b.per_query[key], atol=1e-12)


@pytest.mark.parametrize(("n", "block_size"), [(50, 1), (97, 7), (200, 64), (301, None)])
@pytest.mark.parametrize("seed", [0, 1])
def test_fused_pair_matches_per_metric_functions(n, block_size, seed):
    x, y, gx, gy, labels = _data(n, seed)
    r = fused_pair_pass(
        x, y, gx, gy, labels, None, k=KS, block_size=block_size, row_terms=True, per_query=True
    )
    for arr, side in ((x, r.x), (y, r.y)):
        value, terms = uniformity_with_row_terms(arr, block_size=block_size)
        ref_value, ref_terms = _ref_uniformity(arr)
        assert side.uniformity == pytest.approx(value, abs=1e-6)
        assert side.uniformity == pytest.approx(ref_value, abs=1e-6)
        np.testing.assert_allclose(side.uniformity_row_terms, terms, atol=1e-6)
        np.testing.assert_allclose(side.uniformity_row_terms, ref_terms, atol=1e-6)
    _same(r.x.retrieval, intra_modal_retrieval(x, labels, k=KS, per_query=True))
    _same(r.y.retrieval, intra_modal_retrieval(y, gy, k=KS, per_query=True))
    _same(r.x_to_y, cross_modal_retrieval(x, y, gx, gy, k=KS, per_query=True))
    _same(r.y_to_x, cross_modal_retrieval(y, x, gy, gx, k=KS, per_query=True))


def test_groups_as_relevance_and_queries_without_partner():
    x, y, gx, gy, _ = _data(120, 3)
    gy = gy.copy()
    gy[:5] = 10_000 + np.arange(5)  # five texts with no image, and their images lose a partner
    r = fused_pair_pass(x, y, gx, gy, k=KS, block_size=11, per_query=True)
    _same(r.x.retrieval, intra_modal_retrieval(x, gx, k=KS, per_query=True))
    _same(r.x_to_y, cross_modal_retrieval(x, y, gx, gy, k=KS, per_query=True))
    _same(r.y_to_x, cross_modal_retrieval(y, x, gy, gx, k=KS, per_query=True))
    assert r.y_to_x.n_skipped == 5 and r.x_to_y.n_skipped > 0


@pytest.mark.parametrize("block_size", [5, 64])
def test_query_index_matches_per_metric_functions(block_size):
    x, y, gx, gy, labels = _data(240, 4)
    rng = np.random.default_rng(9)
    qx = rng.choice(len(x), 60, replace=False)
    qy = rng.choice(len(y), 30, replace=False)
    r = fused_pair_pass(
        x,
        y,
        gx,
        gy,
        labels,
        None,
        k=KS,
        block_size=block_size,
        query_index_x=qx,
        query_index_y=qy,
        per_query=True,
    )
    assert r.x.uniformity is None and r.y.uniformity is None
    _same(r.x.retrieval, intra_modal_retrieval(x, labels, k=KS, query_index=qx, per_query=True))
    _same(r.x_to_y, cross_modal_retrieval(x, y, gx, gy, k=KS, query_index=qx, per_query=True))
    _same(r.y_to_x, cross_modal_retrieval(y, x, gy, gx, k=KS, query_index=qy, per_query=True))


def test_one_sided_query_index_uses_the_full_product():
    x, y, gx, gy, _ = _data(90, 5, per_group=1)
    q = np.arange(0, 90, 4)
    i2t, t2i = cross_pass(x, y, gx, gy, k=KS, block_size=8, query_index_x=q)
    _same(i2t, cross_modal_retrieval(x, y, gx, gy, k=KS, query_index=q))
    _same(t2i, cross_modal_retrieval(y, x, gy, gx, k=KS))


def test_many_relevant_rows_take_the_sorted_path_with_ties():
    # Two labels over 60 rows (~29 relevant rows a query) and duplicated rows: exact ties.
    rng = np.random.default_rng(6)
    base = rng.normal(size=(30, 16)).astype(np.float32)
    x = np.concatenate([base, base])
    labels = rng.integers(0, 2, size=60)
    r = modality_pass(x, labels, k=KS, block_size=7, uniformity=False, per_query=True)
    _same(r.retrieval, intra_modal_retrieval(x, labels, k=KS, per_query=True))


def test_memmap_larger_than_block_matches_in_memory(tmp_path):
    x, y, gx, gy, labels = _data(150, 7)
    path_x, path_y = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(path_x, x.astype(np.float16))
    np.save(path_y, y.astype(np.float16))
    mx, my = np.load(path_x, mmap_mode="r"), np.load(path_y, mmap_mode="r")
    from_disk = fused_pair_pass(mx, my, gx, gy, labels, None, k=KS, block_size=16)
    in_memory = fused_pair_pass(
        np.array(mx), np.array(my), gx, gy, labels, None, k=KS, block_size=None
    )
    assert from_disk.x.uniformity == pytest.approx(in_memory.x.uniformity, abs=1e-6)
    assert from_disk.y.uniformity == pytest.approx(in_memory.y.uniformity, abs=1e-6)
    for a, b in (
        (from_disk.x.retrieval, in_memory.x.retrieval),
        (from_disk.x_to_y, in_memory.x_to_y),
        (from_disk.y_to_x, in_memory.y_to_x),
    ):
        _same(a, b)


def test_cached_modality_pass_is_reused():
    x, y, gx, gy, labels = _data(60, 8)
    cached = modality_pass(x, labels, k=KS)
    r = fused_pair_pass(x, y, gx, gy, labels, None, k=KS, cached_x=cached)
    assert r.x is cached


def test_large_temperature_does_not_underflow():
    x, *_ = _data(80, 2)
    r = modality_pass(x, None, t=60.0)
    ref, _ = _ref_uniformity(x, t=60.0)
    assert math.isfinite(r.uniformity)
    # d log k / d s = 2t = 120: float32 cosines (~1e-7 off) move the value by ~1e-5.
    assert r.uniformity == pytest.approx(ref, abs=5e-5)


def test_uniformity_with_query_index_is_refused():
    with pytest.raises(GapscopeError, match="uniformity needs every row"):
        modality_pass(np.eye(4), [0, 0, 1, 1], query_index=[0, 1])


@pytest.mark.parametrize("padded", [True, False])
@pytest.mark.parametrize("block_size", [1, 4, 9, None])
def test_exact_ties_everywhere_break_to_the_lower_index(block_size, padded, monkeypatch):
    # padded=False: every query's best positive is found row by row instead of by one gather.
    if not padded:
        monkeypatch.setattr(fused, "_VECTOR_MAX_POSITIVES", 0)
    # Rows of +-1 in d = 4 normalise to +-0.5: every score is a multiple of 0.25, computed
    # exactly by any product, so ties are exact and frequent (only 16 distinct rows).
    rng = np.random.default_rng(11)
    x = rng.choice([-1.0, 1.0], size=(40, 4)).astype(np.float32)
    y = rng.choice([-1.0, 1.0], size=(25, 4)).astype(np.float32)
    gx = rng.integers(0, 20, size=40)
    gy = rng.integers(0, 20, size=25)
    labels = rng.integers(0, 3, size=40)
    r = fused_pair_pass(x, y, gx, gy, labels, None, k=KS, block_size=block_size, per_query=True)
    _same(r.x.retrieval, intra_modal_retrieval(x, labels, k=KS, per_query=True))
    _same(r.y.retrieval, intra_modal_retrieval(y, gy, k=KS, per_query=True))
    _same(r.x_to_y, cross_modal_retrieval(x, y, gx, gy, k=KS, per_query=True))
    _same(r.y_to_x, cross_modal_retrieval(y, x, gy, gx, k=KS, per_query=True))
