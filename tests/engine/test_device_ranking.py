"""Ranking on the device: the torch path (used for CUDA) run on CPU tensors gives the host
path's ranks bit for bit, on tie-heavy data where near-ties go to exact re-scoring."""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref
import torch
from distributed_worker import data as _near_ties

from gapscope.engine import device_ranking, ranking
from gapscope.engine.device_ranking import relevant_ranks_device, window_device
from gapscope.engine.passes import cross_pair_pass, modality_pass

KS = (1, 2, 5, 10)


def _signs(seed: int = 3):
    """+-1 rows in 4 dimensions: nearly every score ties with many others."""
    rng = np.random.default_rng(seed)
    x = rng.choice([-1.0, 1.0], size=(80, 4)).astype(np.float32)
    y = rng.choice([-1.0, 1.0], size=(50, 4)).astype(np.float32)
    return x, y, rng.integers(0, 30, size=80), rng.integers(0, 30, size=50), rng.integers(0, 3, 80)


@pytest.fixture
def on_cpu(monkeypatch):
    """Rank CPU blocks on their device (the path CUDA blocks take)."""
    monkeypatch.setattr(device_ranking, "DEVICE_RANKING", {"cuda", "cpu"})


def _passes(data, block_size, **sample):
    x, y, gx, gy, labels = data
    intra = modality_pass(x, labels, k=KS, block_size=block_size, query_index=sample.get("qx"))
    cross = cross_pair_pass(
        x,
        y,
        gx,
        gy,
        k=KS,
        block_size=block_size,
        query_index_x=sample.get("qx"),
        query_index_y=sample.get("qy"),
        kernel_t=2.0,
    )
    return intra, cross


def _arrays(intra, cross) -> dict[str, bytes]:
    r = intra.retrieval
    out = {
        "intra_first": r.first_rank.tobytes(),
        "intra_ap": r.average_precision.tobytes(),
        "intra_rp": r.r_precision_per_query.tobytes(),
        "uniformity": np.float64(intra.uniformity).tobytes(),
        "kernel": np.float64(cross.kernel.log_mean).tobytes(),
    }
    for name in ("x_to_y", "y_to_x"):
        out[name] = getattr(cross, name).first_rank.tobytes()
    return out


@pytest.mark.parametrize("data", [_near_ties, _signs], ids=["near-ties", "signs"])
@pytest.mark.parametrize("block_size", [1, 7, None])
def test_device_path_equals_the_host_path(data, block_size, monkeypatch):
    host = _arrays(*_passes(data(), block_size))
    monkeypatch.setattr(device_ranking, "DEVICE_RANKING", {"cuda", "cpu"})
    device = _arrays(*_passes(data(), block_size))
    assert device == host


def test_device_path_with_sampled_queries_equals_the_host_path(monkeypatch):
    data = _near_ties()
    sample = {"qx": np.arange(2, 530, 7), "qy": np.arange(1, 1060, 11)}
    host = _arrays(*_passes(data, 16, **sample))
    monkeypatch.setattr(device_ranking, "DEVICE_RANKING", {"cuda", "cpu"})
    assert _arrays(*_passes(data, 16, **sample)) == host


def test_device_path_matches_the_full_matrix_reference(on_cpu):
    x, y, gx, gy, labels = _signs(8)
    intra, cross = _passes((x, y, gx, gy, labels), 9)
    expected = ref.intra_retrieval(x, labels, KS)
    assert intra.retrieval.recall == {k: expected[f"R@{k}"] for k in KS}
    assert intra.retrieval.mean_average_precision == pytest.approx(expected["mAP"], rel=1e-12)
    assert cross.x_to_y.recall == ref.cross_recall(x, y, gx, gy, KS)
    assert cross.y_to_x.recall == ref.cross_recall(y, x, gy, gx, KS)


def test_the_device_path_is_taken(on_cpu, monkeypatch):
    calls = []
    real = device_ranking.relevant_ranks_device

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    from gapscope.engine import passes

    monkeypatch.setattr(passes, "relevant_ranks_device", counted)
    monkeypatch.setattr(passes, "block_ranks", None)  # the host path would fail
    x, _, _, _, labels = _signs()
    # Every row as a sampled query: blocks of rows (the exact pass reads tiles instead).
    modality_pass(x, labels, k=KS, block_size=10, uniformity=False, query_index=np.arange(80))
    assert len(calls) == 8


def test_window_is_the_host_window_bit_for_bit():
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [rng.normal(size=1000).astype(np.float32), np.array([0.0, -0.0, 1.0, -1.0], np.float32)]
    )
    for margin in (1e-7, 3.08e-05, 0.1, 2.0**-20):
        lo, hi = ranking.near_window(values, margin)
        lo_t, hi_t = window_device(torch.from_numpy(values), margin)
        assert lo_t.numpy().tobytes() == lo.tobytes()
        assert hi_t.numpy().tobytes() == hi.tobytes()


def test_relevant_ranks_of_a_row_match_the_host_function():
    # The docstring's example of the host function, and a row with one relevant item among
    # exact ties.
    row = np.array([0.5, 0.9, 0.5, 0.1], np.float32)
    items = [np.array([0, 2]), np.array([3])]
    relevant = [lambda k: k % 2 == 0, lambda k: k == 3]
    exact = [lambda k: row.astype(np.float64)[k]] * 2
    got = relevant_ranks_device(
        torch.from_numpy(np.stack([row, row])), np.array([0, 1]), items, relevant, 1e-6, exact
    )
    want = [
        ranking.relevant_ranks(row, i, r, 1e-6, e)
        for i, r, e in zip(items, relevant, exact, strict=True)
    ]
    assert [g.tolist() for g in got] == [w.tolist() for w in want] == [[1, 2], [3]]
