"""UnitRows: unit rows held in memory or normalised block by block give the same bits, and the
passes that read them (fused retrieval, sampled uniformity, what-ifs) give the same results
from a memory-mapped store normalised on the fly as from memory."""

from __future__ import annotations

import numpy as np
import pytest
import reference as oracle
import torch

from gapscope.engine import unit_rows as _rows
from gapscope.engine.normalization import normalize_rows, unit_rows
from gapscope.engine.passes import cross_pass, modality_pass
from gapscope.engine.unit_rows import UnitRows, as_unit_rows, fits_in_memory
from gapscope.errors import EmbeddingError
from gapscope.metrics.retrieval import cross_modal_retrieval
from gapscope.metrics.uniformity import uniformity_sampled

KS = (1, 3, 10)


def _data(n: int = 150, m: int = 60, d: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, d)) * rng.uniform(0.5, 3, size=(n, 1))).astype(np.float32)
    gy = rng.permutation(m)
    gx = rng.integers(0, m, size=n)  # many-to-one, some y rows without a partner
    y = (x[rng.integers(0, n, size=m)] + rng.normal(size=(m, d))).astype(np.float32)
    labels = rng.integers(0, 5, size=n)
    return x, y, gx, gy, labels


def _memmap(tmp_path, name, array):
    path = tmp_path / f"{name}.npy"
    np.save(path, array)
    return np.load(path, mmap_mode="r")


# --------------------------------------------------------------------------- normalisation


def test_normalize_rows_is_exact_on_equal_magnitude_rows_and_any_slicing():
    rng = np.random.default_rng(1)
    x = np.zeros((300, 8), dtype=np.float32)
    for i in range(300):
        x[i, rng.choice(8, 4, replace=False)] = rng.choice([-1.0, 1.0], 4)
    x *= rng.uniform(0.5, 3.0, size=(300, 1)).astype(np.float32)
    u = normalize_rows(x).numpy()
    assert set(np.unique(np.abs(u))) == {0.0, 0.5}
    # Against float64 on generic rows: within two float32 ulps of a unit entry.
    g = rng.normal(size=(500, 64)).astype(np.float16)
    ref = g.astype(np.float64) / np.linalg.norm(g.astype(np.float64), axis=1, keepdims=True)
    assert np.abs(normalize_rows(g).numpy() - ref).max() < 2.5e-7
    parts = torch.cat([normalize_rows(g[s : s + 37]) for s in range(0, 500, 37)])
    assert torch.equal(parts, normalize_rows(g))


def test_normalize_rows_never_writes_the_callers_tensor_and_keeps_other_rows_bits():
    x = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    UnitRows(x, in_memory=False).block(0, 2)
    UnitRows(x)
    normalize_rows(x)
    assert x.tolist() == [[3.0, 4.0], [0.0, 2.0]]
    # A row outside the float32 range goes through float64 alone: its neighbours keep their bits.
    a = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    b = a.copy()
    b[4] *= np.float32(1e-32)
    assert torch.equal(normalize_rows(b)[:4], normalize_rows(a[:4]))
    np.testing.assert_allclose(normalize_rows(b)[4], normalize_rows(a)[4], atol=1e-7)


def test_normalize_rows_handles_extreme_magnitudes():
    x = np.array([[3e37, 4e37], [3e-36, 4e-36], [3.0, 4.0]], dtype=np.float32)
    np.testing.assert_allclose(normalize_rows(x).numpy(), [[0.6, 0.8]] * 3, rtol=1e-6)
    wide = np.array([[3e200, 4e200], [3e-200, 4e-200]])
    np.testing.assert_allclose(normalize_rows(wide).numpy(), [[0.6, 0.8]] * 2, rtol=1e-6)
    np.testing.assert_allclose(
        unit_rows(np.vstack([wide, [[3.0, 4.0]]])), [[0.6, 0.8]] * 3, rtol=1e-15
    )


# --------------------------------------------------------------------------- UnitRows


def test_streamed_rows_equal_the_rows_in_memory(tmp_path):
    x, *_ = _data()
    mx = _memmap(tmp_path, "x", x.astype(np.float16))
    held = UnitRows(mx, in_memory=True, chunk_rows=17)
    streamed = UnitRows(mx, in_memory=False, chunk_rows=17)
    assert held.in_memory and not streamed.in_memory
    assert torch.equal(held.block(0, 150), streamed.block(0, 150))
    assert torch.equal(held.block(0, 150), normalize_rows(mx))
    for index in ([5, 6, 7], [0, 0, 2], [9, 3, 3, 140], [149]):
        idx = np.array(index)
        assert torch.equal(streamed.take(idx), held.take(idx)), index
    q = held.take(np.array([1, 50, 99]))
    out_a, out_b = torch.empty((3, 150)), torch.empty((3, 150))
    # The products agree to float32 rounding (a BLAS may sum a narrow chunk differently).
    np.testing.assert_allclose(
        held.scores(q, out_a).numpy(), streamed.scores(q, out_b).numpy(), atol=1e-6
    )
    np.testing.assert_allclose(out_b.numpy(), q.numpy() @ held.block(0, 150).numpy().T, atol=1e-6)
    chunks = [(a, b) for a, b, _ in streamed.chunks()]
    assert chunks[0] == (0, 17) and chunks[-1] == (136, 150) and len(chunks) == 9


def test_offset_rows_are_renormalised_and_degenerate_rows_are_refused():
    x = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]], dtype=np.float32)
    offset = np.array([0.5, 0.0])
    rows = UnitRows(x, offset=offset, in_memory=False, chunk_rows=2)
    u = x / np.linalg.norm(x, axis=1, keepdims=True) - offset
    np.testing.assert_allclose(
        rows.block(0, 3).numpy(), u / np.linalg.norm(u, axis=1, keepdims=True), rtol=1e-6
    )
    with pytest.raises(EmbeddingError, match=r"^text: row 1 equals its mean, so it has no"):
        UnitRows(
            x, offset=[0.0, 1.0], name="text", why="equals its mean", chunk_rows=1, in_memory=False
        )
    with pytest.raises(EmbeddingError, match="row 1"):
        UnitRows(x, offset=[0.0, 1.0])


def test_as_unit_rows_reuses_unit_tensors_and_checks_the_rest():
    u = normalize_rows(np.random.default_rng(0).normal(size=(10, 4)))
    assert as_unit_rows(u, device=torch.device("cpu")).block(0, 10) is not None
    assert as_unit_rows(u, device=torch.device("cpu"))._full is u
    with pytest.raises(EmbeddingError, match="row 0 is a zero vector"):
        as_unit_rows(np.zeros((2, 3)), "image", device=torch.device("cpu"))
    with pytest.raises(EmbeddingError, match="needs at least 2 rows"):
        as_unit_rows(UnitRows(np.ones((1, 3))), device=torch.device("cpu"), min_rows=2)


def test_fits_in_memory_follows_the_budget(monkeypatch):
    assert fits_in_memory(1000, 512)
    monkeypatch.setattr(_rows, "IN_MEMORY_BUDGET_BYTES", 1000 * 512 * 4 - 1)
    assert not fits_in_memory(1000, 512)


# --------------------------------------------------------------------------- passes


@pytest.mark.parametrize("sampled", [False, True])
def test_fused_passes_on_streamed_memmaps_equal_those_in_memory(tmp_path, sampled):
    x, y, gx, gy, labels = _data(seed=2)
    mx, my = _memmap(tmp_path, "x", x), _memmap(tmp_path, "y", y)
    sx = UnitRows(mx, in_memory=False, chunk_rows=23)
    sy = UnitRows(my, in_memory=False, chunk_rows=23)
    qx = np.sort(np.random.default_rng(0).choice(150, 40, replace=False)) if sampled else None
    qy = np.arange(0, 60, 3) if sampled else None
    streamed = cross_pass(sx, sy, gx, gy, k=KS, query_index_x=qx, query_index_y=qy)
    held = cross_pass(x, y, gx, gy, k=KS, query_index_x=qx, query_index_y=qy)
    # Independent reference: the full similarity matrix of the sampled queries.
    rx = slice(None) if qx is None else qx
    ry = slice(None) if qy is None else qy
    expected = (
        oracle.cross_recall(x[rx], y, gx[rx], gy, KS),
        oracle.cross_recall(y[ry], x, gy[ry], gx, KS),
    )
    for s, h, r in zip(streamed, held, expected, strict=True):
        assert s.recall == h.recall == r
        np.testing.assert_array_equal(s.query_rows, h.query_rows)
    own = modality_pass(sx, labels, k=KS, uniformity=not sampled, query_index=qx, block_size=9)
    own_held = modality_pass(x, labels, k=KS, uniformity=not sampled, query_index=qx)
    assert own.uniformity == pytest.approx(own_held.uniformity, abs=1e-6)
    assert own.retrieval.recall == own_held.retrieval.recall
    if not sampled:
        expected_intra = oracle.intra_retrieval(x, labels, KS)
        assert own.retrieval.recall == {k: expected_intra[f"R@{k}"] for k in KS}
        assert own.retrieval.mean_average_precision == pytest.approx(
            expected_intra["mAP"], abs=1e-12
        )


def test_sampled_uniformity_streams_to_the_same_value(tmp_path):
    x, *_ = _data(seed=3)
    mx = _memmap(tmp_path, "x", x.astype(np.float16))
    streamed = uniformity_sampled(
        UnitRows(mx, in_memory=False, chunk_rows=11), n_queries=30, seed=4, block_size=13
    )
    held = uniformity_sampled(np.array(mx), n_queries=30, seed=4, block_size=13)
    assert streamed == pytest.approx(held, abs=1e-6)


def test_equal_rows_are_found_by_their_bytes():
    # Hashes only pick the candidates: rows must match byte for byte (-0.0 is not 0.0).
    rng = np.random.default_rng(8)
    rows = rng.normal(size=(300, 5)).astype(np.float32)
    rows[[7, 40, 299]] = rows[3]
    rows[100] = rows[50]
    rows[200] = -0.0 * np.abs(rows[3])
    rows[201] = 0.0 * np.abs(rows[3])
    rows[202] = -0.0 * np.abs(rows[3])
    keys = rows.view(np.dtype((np.void, 20)))[:, 0]
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    expected = first[inverse.reshape(-1)]
    np.testing.assert_array_equal(_rows._first_equal_rows(rows), expected)
    assert _rows._first_equal_rows(rows)[[7, 40, 299, 100, 201, 202]].tolist() == [
        3,
        3,
        3,
        50,
        201,
        200,
    ]


# --------------------------------------------------------------------------- bfloat16


def _exact_in_bf16(n: int, d: int, seed: int) -> np.ndarray:
    """Rows of four +-1 entries: unit entries are +-0.5 and every score a multiple of 0.25, so
    bfloat16 rows and products are exact and ranks must equal float32's, ties included."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, d), dtype=np.float32)
    for i in range(n):
        x[i, rng.choice(d, 4, replace=False)] = rng.choice([-1.0, 1.0], 4)
    return x * rng.uniform(0.5, 2.0, size=(n, 1)).astype(np.float32)


@pytest.mark.parametrize("in_memory", [True, False])
def test_bf16_rows_give_float32_products_and_the_exact_ranks(in_memory):
    x, y = _exact_in_bf16(70, 6, 0), _exact_in_bf16(50, 6, 1)
    rng = np.random.default_rng(2)
    gx, gy = rng.integers(0, 30, 70), rng.integers(0, 30, 50)
    labels = rng.integers(0, 3, 70)
    bx = UnitRows(x, dtype=torch.bfloat16, in_memory=in_memory, chunk_rows=16)
    by = UnitRows(y, dtype=torch.bfloat16, in_memory=in_memory, chunk_rows=16)
    rows = bx.take(np.array([0, 3]))
    assert torch.equal(rows.float(), rows.to(torch.bfloat16).float())  # rounded to bf16
    out = bx.scores(by.block(0, 50), torch.empty((50, 70)))
    assert out.dtype == torch.float32
    expected = normalize_rows(y).numpy() @ normalize_rows(x).numpy().T
    np.testing.assert_array_equal(out.numpy(), expected)
    for qx, qy in ((None, None), (np.arange(0, 70, 3), np.arange(0, 50, 4))):
        bf = cross_pass(bx, by, gx, gy, k=KS, block_size=7, query_index_x=qx, query_index_y=qy)
        fp = cross_pass(x, y, gx, gy, k=KS, block_size=7, query_index_x=qx, query_index_y=qy)
        ref = (
            cross_modal_retrieval(x, y, gx, gy, k=KS, query_index=qx),
            cross_modal_retrieval(y, x, gy, gx, k=KS, query_index=qy),
        )
        for b, f, r in zip(bf, fp, ref, strict=True):
            assert b.recall == f.recall == r.recall
    own = modality_pass(bx, labels, k=KS, block_size=9)
    own_fp = modality_pass(x, labels, k=KS, block_size=9)
    assert own.retrieval.recall == own_fp.retrieval.recall
    assert own.retrieval.mean_average_precision == own_fp.retrieval.mean_average_precision
    assert own.uniformity == pytest.approx(own_fp.uniformity, abs=1e-6)


def test_bf16_on_generic_rows_moves_the_metrics_little():
    x, y, gx, gy, labels = _data(n=300, m=300, d=64, seed=7)
    gx = np.arange(300)
    gy = np.arange(300)
    bx, by = (UnitRows(a, dtype=torch.bfloat16) for a in (x, y))
    # The rows are rounded to 8 significant bits; the products are not rounded again.
    held = bx.block(0, 300)
    assert torch.equal(held, held.to(torch.bfloat16).float())
    scores = bx.scores(by.block(0, 300), torch.empty((300, 300)))
    np.testing.assert_allclose(
        scores.numpy(), by.block(0, 300).double().numpy() @ held.double().numpy().T, atol=1e-5
    )
    own, own_fp = modality_pass(bx, labels, k=KS), modality_pass(x, labels, k=KS)
    # 8 significant bits: scores move by ~1e-3, uniformity by about as much.
    assert own.uniformity == pytest.approx(own_fp.uniformity, abs=5e-3)
    assert own.retrieval.mean_average_precision == pytest.approx(
        own_fp.retrieval.mean_average_precision, abs=0.02
    )
    for b, f in zip(cross_pass(bx, by, gx, gy, k=KS), cross_pass(x, y, gx, gy, k=KS), strict=True):
        for k in KS:
            assert b.recall[k] == pytest.approx(f.recall[k], abs=0.03)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_passes_match_the_cpu_in_float32_and_bf16():
    x, y = _exact_in_bf16(70, 6, 3), _exact_in_bf16(50, 6, 4)
    rng = np.random.default_rng(5)
    gx, gy, labels = rng.integers(0, 30, 70), rng.integers(0, 30, 50), rng.integers(0, 3, 70)
    for dtype in (torch.float32, torch.bfloat16):
        on_gpu = [
            UnitRows(a, device="cuda", dtype=dtype, in_memory=False, chunk_rows=16) for a in (x, y)
        ]
        gpu = cross_pass(*on_gpu, gx, gy, k=KS, block_size=7, device="cuda")
        cpu = cross_pass(x, y, gx, gy, k=KS, block_size=7, device="cpu")
        assert [r.recall for r in gpu] == [r.recall for r in cpu]
        own = modality_pass(on_gpu[0], labels, k=KS, block_size=9, device="cuda")
        own_cpu = modality_pass(x, labels, k=KS, block_size=9, device="cpu")
        assert own.retrieval.recall == own_cpu.retrieval.recall
        assert own.uniformity == pytest.approx(own_cpu.uniformity, abs=1e-5)


@pytest.mark.parametrize(
    ("in_memory", "offset", "seen"), [(True, None, True), (False, 0.1, True), (False, None, False)]
)
def test_on_rows_sees_every_source_row_once_in_order(in_memory, offset, seen):
    # A caller's own statistics of the rows come from the read that makes the unit rows: every
    # row once, in order, in the unit rows' chunks; rows that are neither kept nor offset are
    # not read up front, and rows_seen says so.
    x = np.random.default_rng(3).normal(size=(30, 4))
    seen_rows: list[tuple[int, np.ndarray]] = []
    units = UnitRows(
        x,
        in_memory=in_memory,
        offset=None if offset is None else np.full(4, offset),
        chunk_rows=7,
        on_rows=lambda start, rows: seen_rows.append((start, np.array(rows))),
    )
    assert units.rows_seen is seen
    if seen:
        assert [start for start, _ in seen_rows] == [0, 7, 14, 21, 28]
        assert np.array_equal(np.concatenate([rows for _, rows in seen_rows]), x)
    else:
        assert seen_rows == []


def test_duplicates_are_found_once_for_threads_that_ask_at_once(monkeypatch):
    # Lanes multiply their first blocks at once: one that asked while another was finding
    # the duplicates must wait for them, not take "none" and leave the duplicates' columns
    # with their own roundings.
    import threading
    import time

    rows = np.tile(np.eye(4, 8, dtype=np.float32), (3, 1))
    unit = UnitRows(rows)
    find = _rows._first_equal_rows
    calls = []

    def slow(array: np.ndarray) -> np.ndarray:
        calls.append(1)
        time.sleep(0.3)
        return find(array)

    monkeypatch.setattr(_rows, "_first_equal_rows", slow)
    seen: list[list[int]] = []

    def ask() -> None:
        seen.append(unit.duplicates()[0].tolist())

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    for thread in threads:
        thread.join()
    assert seen == [list(range(4, 12))] * 2
    assert len(calls) == 1
