"""The uniformity kernel over every cross pair, read from the cross pass: cross-modal
uniformity and MMD² against full-matrix oracles (tests/reference.py), exact at every block
size and thread count, estimated from sampled rows, and the same in the report."""

from __future__ import annotations

import math

import numpy as np
import pytest
import reference as ref
import torch

from gapscope.api import analyze
from gapscope.data.embedding_set import EmbeddingSet
from gapscope.engine import passes
from gapscope.engine.passes import cross_pair_pass, cross_pass
from gapscope.errors import GapscopeError
from gapscope.metrics import cross_modal_uniformity, mmd2

KS = (1, 5)


def _data(n: int, seed: int, captions: int = 2, shift: float = 0.6):
    """Images, ``captions`` texts an image near their image plus a shift (a modality gap),
    and the groups that pair them."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 12)).astype(np.float32)
    y = np.repeat(x, captions, axis=0) + 0.8 * rng.normal(size=(n * captions, 12)) + shift
    return x, y.astype(np.float32), np.arange(n), np.repeat(np.arange(n), captions)


@pytest.mark.parametrize(("n", "block_size"), [(40, 1), (97, 7), (150, 64), (211, None)])
def test_kernel_matches_the_full_matrix(n, block_size):
    x, y, gx, gy = _data(n, n)
    r = cross_pair_pass(x, y, gx, gy, k=KS, block_size=block_size, kernel_t=2.0)
    assert r.kernel.se is None and r.kernel.rows is None
    assert r.kernel.log_mean == pytest.approx(ref.cross_uniformity(x, y), abs=1e-6)
    # The retrieval of the same pass is untouched by the kernel reading its blocks.
    assert r.x_to_y.recall == ref.cross_recall(x, y, gx, gy, KS)
    assert r.y_to_x.recall == ref.cross_recall(y, x, gy, gx, KS)


@pytest.mark.parametrize("t", [0.5, 2.0, 3.0, 30.0])
def test_kernel_at_other_temperatures(t):
    # t = 30: the terms leave the float32 range and are summed in the log domain.
    x, y, gx, gy = _data(60, 1)
    r = cross_pair_pass(x, y, gx, gy, kernel_t=t)
    assert r.kernel.log_mean == pytest.approx(ref.cross_uniformity(x, y, t), abs=5e-5)


def test_kernel_alone_needs_no_pairs_and_no_equal_row_counts():
    x, y, _, _ = _data(30, 2, captions=3)
    r = cross_pair_pass(x, y, directions=(), kernel_t=2.0)
    assert r.x_to_y is None and r.y_to_x is None
    assert r.kernel.log_mean == pytest.approx(ref.cross_uniformity(x, y), abs=1e-6)
    # Without the kernel, unequal row counts still need groups.
    with pytest.raises(GapscopeError, match="rows"):
        cross_pass(x, y)


def test_kernel_is_symmetric_and_bit_identical_whatever_the_blocks_and_threads():
    x, y, gx, gy = _data(180, 3)
    values = set()
    threads = torch.get_num_threads()
    try:
        for n_threads in (1, 2):
            torch.set_num_threads(n_threads)
            for block_size in (1, 5, 64, None):
                for directions in (passes.CROSS_DIRECTIONS, ("y_to_x",), ()):
                    r = cross_pair_pass(
                        x, y, gx, gy, block_size=block_size, directions=directions, kernel_t=2.0
                    )
                    values.add(r.kernel.log_mean)
    finally:
        torch.set_num_threads(threads)
    assert len(values) == 1
    # Swapping the modalities computes the same oriented product: the same bits.
    swapped = cross_pair_pass(y, x, gy, gx, kernel_t=2.0)
    assert values == {swapped.kernel.log_mean}


def test_one_side_sampled_is_still_exact():
    # The full product is made for the unsampled side's queries: the kernel is exact.
    x, y, gx, gy = _data(90, 4)
    r = cross_pair_pass(x, y, gx, gy, kernel_t=2.0, query_index_x=np.arange(0, 90, 3))
    assert r.kernel.se is None
    assert r.kernel.log_mean == pytest.approx(ref.cross_uniformity(x, y), abs=1e-6)


@pytest.mark.parametrize("block_size", [3, None])
def test_both_sides_sampled_estimates_from_the_sampled_x_rows(block_size, monkeypatch):
    x, y, gx, gy = _data(120, 5)
    n, m = x.shape[0], y.shape[0]
    qx, qy = np.arange(1, n, 4), np.arange(0, m, 9)
    results = [
        cross_pair_pass(
            x, y, gx, gy, block_size=block_size, kernel_t=2.0, query_index_x=qx, query_index_y=qy
        )
    ]
    # Keys a few columns at a time: rows of the sum split over several chunks.
    monkeypatch.setattr(passes, "key_chunk_columns", lambda n_queries: 7)
    results.append(cross_pair_pass(x, y, gx, gy, kernel_t=2.0, query_index_x=qx, query_index_y=qy))
    xu, yu = ref.unit(x), ref.unit(y)
    c = np.exp(-2.0 * ((xu[qx, None, :] - yu[None, :, :]) ** 2).sum(-1)).mean(axis=1)
    se = math.sqrt((1 - qx.size / n) * c.var(ddof=1) / qx.size) / c.mean()
    for r in results:
        np.testing.assert_array_equal(r.kernel.rows, qx)
        assert r.kernel.log_mean == pytest.approx(math.log(c.mean()), abs=1e-6)
        assert r.kernel.se == pytest.approx(se, rel=1e-4)


def test_public_functions_match_the_oracles():
    x, y, _, _ = _data(70, 6, captions=1)
    assert cross_modal_uniformity(x, y) == pytest.approx(ref.cross_uniformity(x, y), abs=1e-6)
    assert mmd2(x, y) == pytest.approx(ref.mmd2_unbiased(x, y), abs=1e-6)
    assert mmd2(x, y, t=0.5) == pytest.approx(ref.mmd2_unbiased(x, y, 0.5), abs=1e-6)
    # Unequal sizes: MMD needs no pairs.
    x2, y2, _, _ = _data(25, 7, captions=3)
    assert mmd2(x2, y2) == pytest.approx(ref.mmd2_unbiased(x2, y2), abs=1e-6)


def test_mmd_falls_as_the_gap_closes_and_is_near_zero_for_one_distribution():
    rng = np.random.default_rng(8)
    same = [mmd2(rng.normal(size=(150, 16)), rng.normal(size=(150, 16))) for _ in range(3)]
    assert all(abs(v) < 5e-3 for v in same)
    values = [mmd2(*_data(150, 9, captions=1, shift=s)[:2]) for s in (0.0, 0.5, 1.5)]
    assert values[0] < values[1] < values[2]


def test_the_report_carries_both_with_no_product_of_their_own(monkeypatch):
    x, y, gx, gy = _data(80, 10)
    data = EmbeddingSet(embeddings={"image": x, "text": y}, groups={"image": gx, "text": gy})
    calls = []
    real = passes.cross_pair_pass

    def counted(*args, **kwargs):
        calls.append(kwargs.get("kernel_t"))
        return real(*args, **kwargs)

    monkeypatch.setattr(passes, "cross_pair_pass", counted)
    import gapscope.analysis.context as context

    monkeypatch.setattr(context, "cross_pair_pass", counted)
    report = analyze(data, metrics="uniformity,mmd,retrieval", device="cpu")
    # One cross pass for retrieval and the kernel together.
    assert calls == [2.0]
    entry = report.pairs["image-text"]
    assert entry["cross_uniformity"] == pytest.approx(ref.cross_uniformity(x, y), abs=1e-6)
    assert entry["mmd2"] == pytest.approx(ref.mmd2_unbiased(x, y), abs=1e-6)
    assert report.directions["mmd2"] == "lower" and "cross_uniformity" not in report.directions


def test_the_report_estimates_from_the_sample():
    x, y, gx, gy = _data(300, 11, captions=1)
    report = analyze({"image": x, "text": y}, metrics="mmd", sample=100, seed=3, device="cpu")
    entry = report.pairs["image-text"]
    assert entry["cross_uniformity_se"] > 0
    assert entry["cross_uniformity"] == pytest.approx(ref.cross_uniformity(x, y), abs=0.1)


def test_bad_temperature_is_one_clear_error():
    x, y, _, _ = _data(10, 12, captions=1)
    with pytest.raises(GapscopeError, match="kernel_t"):
        cross_pair_pass(x, y, kernel_t=0.0)
