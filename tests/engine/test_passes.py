"""The O(n^2) passes against full-matrix oracles, and their properties: blocks that do not
change results, one product for both directions, the same numbers whatever else a pass
computes.

Gaussian data in float32 keep distinct scores far apart compared with float32 rounding, so
ranks (hence recall, mAP, R-precision) must agree with the float64 oracles exactly;
uniformity within 1e-6. Data with entries +-1 in d = 4 normalise to +-0.5, so every score
is a multiple of 0.25, computed exactly by any product: ties are exact and frequent.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import reference as ref
import torch

from gapscope.engine import ranking, unit_rows
from gapscope.engine.passes import cross_pair_pass, cross_pass, modality_pass
from gapscope.errors import GapscopeError

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


def _ties(seed: int = 11):
    rng = np.random.default_rng(seed)
    x = rng.choice([-1.0, 1.0], size=(40, 4)).astype(np.float32)
    y = rng.choice([-1.0, 1.0], size=(25, 4)).astype(np.float32)
    return x, y, rng.integers(0, 20, size=40), rng.integers(0, 20, size=25), rng.integers(0, 3, 40)


def _ref_row_terms(x: np.ndarray, t: float = 2.0) -> np.ndarray:
    """Full-matrix float64 log a_i (mean kernel over j != i)."""
    u = ref.unit(x)
    sq = np.clip(2.0 - 2.0 * (u @ u.T), 0.0, None)
    kern = np.exp(-t * sq)
    np.fill_diagonal(kern, 0.0)
    return np.log(kern.sum(axis=1) / (len(x) - 1))


def _assert_same(a: ranking.RetrievalResult, b: ranking.RetrievalResult) -> None:
    """Bit for bit: the same per-query ranks, so the same means."""
    assert a.recall == b.recall
    assert (a.n_queries, a.n_skipped) == (b.n_queries, b.n_skipped)
    np.testing.assert_array_equal(a.query_rows, b.query_rows)
    np.testing.assert_array_equal(a.first_rank, b.first_rank)
    assert a.mean_average_precision == b.mean_average_precision


@pytest.mark.parametrize(("n", "block_size"), [(50, 1), (97, 7), (200, 64), (301, None)])
@pytest.mark.parametrize("seed", [0, 1])
def test_modality_pass_matches_full_matrix(n, block_size, seed):
    x, _, _, _, labels = _data(n, seed)
    r = modality_pass(x, labels, k=KS, block_size=block_size)
    assert r.uniformity == pytest.approx(ref.uniformity(x), abs=1e-6)
    np.testing.assert_allclose(r.uniformity_row_terms, _ref_row_terms(x), atol=1e-6)
    assert r.uniformity_se is None and r.uniformity_rows is None
    expected = ref.intra_retrieval(x, labels, KS)
    assert r.retrieval.recall == {k: expected[f"R@{k}"] for k in KS}
    assert r.retrieval.mean_average_precision == pytest.approx(expected["mAP"], rel=1e-12)
    assert r.retrieval.r_precision == pytest.approx(expected["R-precision"], rel=1e-12)


@pytest.mark.parametrize(("n", "block_size"), [(50, 1), (97, 7), (200, 64), (301, None)])
def test_cross_pass_matches_full_matrix_both_ways(n, block_size):
    x, y, gx, gy, _ = _data(n, 2)
    x_to_y, y_to_x = cross_pass(x, y, gx, gy, k=KS, block_size=block_size)
    assert x_to_y.recall == ref.cross_recall(x, y, gx, gy, KS)
    assert y_to_x.recall == ref.cross_recall(y, x, gy, gx, KS)


def test_groups_as_relevance_and_queries_without_partner():
    x, y, gx, gy, _ = _data(120, 3)
    gy = gy.copy()
    gy[:5] = 10_000 + np.arange(5)  # five texts with no image, and their images lose a partner
    x_to_y, y_to_x = cross_pass(x, y, gx, gy, k=KS, block_size=11)
    assert x_to_y.recall == ref.cross_recall(x, y, gx, gy, KS)
    assert y_to_x.recall == ref.cross_recall(y, x, gy, gx, KS)
    assert y_to_x.n_skipped == 5 and x_to_y.n_skipped > 0


@pytest.mark.parametrize("block_size", [1, 4, 9, None])
@pytest.mark.parametrize("padded", [True, False])
def test_exact_ties_everywhere_break_to_the_lower_index(block_size, padded, monkeypatch):
    # padded=False: every query's best positive is found row by row instead of by one gather.
    if not padded:
        monkeypatch.setattr(ranking, "_VECTOR_MAX_POSITIVES", 0)
    x, y, gx, gy, labels = _ties()
    x_to_y, y_to_x = cross_pass(x, y, gx, gy, k=KS, block_size=block_size)
    assert x_to_y.recall == ref.cross_recall(x, y, gx, gy, KS)
    assert y_to_x.recall == ref.cross_recall(y, x, gy, gx, KS)
    r = modality_pass(x, labels, k=KS, block_size=block_size, uniformity=False)
    expected = ref.intra_retrieval(x, labels, KS)
    assert r.retrieval.recall == {k: expected[f"R@{k}"] for k in KS}
    assert r.retrieval.mean_average_precision == pytest.approx(expected["mAP"], rel=1e-12)


def test_many_relevant_rows_and_duplicated_rows():
    # Two labels over 60 rows (~29 relevant rows a query) and every row twice: exact ties,
    # broken by index whatever the block.
    rng = np.random.default_rng(6)
    base = rng.normal(size=(30, 16)).astype(np.float32)
    x = np.concatenate([base, 2.0 * base])  # 2x normalises to the same unit row, bit for bit
    labels = rng.integers(0, 2, size=60)
    expected = ref.intra_retrieval(x, labels, KS)
    for block_size in (1, 7, 60):
        r = modality_pass(x, labels, k=KS, block_size=block_size, uniformity=False)
        assert r.retrieval.recall == {k: expected[f"R@{k}"] for k in KS}
        assert r.retrieval.mean_average_precision == pytest.approx(expected["mAP"], rel=1e-12)


def test_orientation_depends_on_the_data_alone():
    # cross_pass(x, y) and cross_pass(y, x) compute the same product: the same ranks, bit for
    # bit, in swapped order; equal row counts included (then the rows' contents decide).
    for x, y, gx, gy, _ in (_data(90, 4), _data(60, 5, per_group=1), _ties()):
        a_xy, a_yx = cross_pass(x, y, gx, gy, k=KS, block_size=8)
        b_yx, b_xy = cross_pass(y, x, gy, gx, k=KS, block_size=8)
        _assert_same(a_xy, b_xy)
        _assert_same(a_yx, b_yx)


def test_one_direction_alone_equals_both_directions():
    x, y, gx, gy, _ = _data(90, 6)
    both = cross_pass(x, y, gx, gy, k=KS, block_size=8)
    only_x, none_y = cross_pass(x, y, gx, gy, k=KS, block_size=8, directions=("x_to_y",))
    none_x, only_y = cross_pass(x, y, gx, gy, k=KS, block_size=8, directions=("y_to_x",))
    assert none_y is None and none_x is None
    _assert_same(both[0], only_x)
    _assert_same(both[1], only_y)


def test_retrieval_alone_equals_retrieval_with_uniformity():
    # The blocks partition the queries the same way whatever a pass computes.
    x, _, _, _, labels = _data(130, 7)
    for q in (None, np.arange(3, 130, 5)):
        with_u = modality_pass(x, labels, k=KS, block_size=9, query_index=q)
        alone = modality_pass(x, labels, k=KS, block_size=9, query_index=q, uniformity=False)
        _assert_same(with_u.retrieval, alone.retrieval)
        np.testing.assert_array_equal(
            with_u.retrieval.average_precision, alone.retrieval.average_precision
        )


@pytest.mark.parametrize("block_size", [5, 64])
def test_sampled_queries_match_the_reference_on_them(block_size):
    x, y, gx, gy, labels = _data(240, 8)
    rng = np.random.default_rng(9)
    qx = np.sort(rng.choice(len(x), 60, replace=False))
    qy = np.sort(rng.choice(len(y), 30, replace=False))
    x_to_y, y_to_x = cross_pass(
        x, y, gx, gy, k=KS, block_size=block_size, query_index_x=qx, query_index_y=qy
    )
    assert x_to_y.recall == ref.cross_recall(x[qx], y, gx[qx], gy, KS)
    assert y_to_x.recall == ref.cross_recall(y[qy], x, gy[qy], gx, KS)
    r = modality_pass(x, labels, k=KS, block_size=block_size, query_index=qx)
    np.testing.assert_array_equal(r.uniformity_rows, qx)
    terms = _ref_row_terms(x)[qx]
    np.testing.assert_allclose(r.uniformity_row_terms, terms, atol=1e-6)
    a = np.exp(terms)
    assert r.uniformity == pytest.approx(math.log(a.mean()), abs=1e-6)
    se = math.sqrt((1 - 60 / 240) * a.var(ddof=1) / 60) / a.mean()
    assert r.uniformity_se == pytest.approx(se, rel=1e-4)


@pytest.mark.parametrize("t", [2.0, 3.0, 60.0])
def test_sampled_uniformity_over_several_key_chunks(monkeypatch, tmp_path, t):
    # Sampled queries meet the keys a chunk at a time; 7-key chunks put query rows at chunk
    # edges, and t = 3 (no prescaling) and t = 60 (the log-domain sum) take the other paths.
    from gapscope.engine import passes
    from gapscope.engine.unit_rows import UnitRows

    x, *_ = _data(100, 6)
    q = np.array([0, 6, 7, 13, 14, 50, 98, 99])
    whole = modality_pass(x, None, t=t, query_index=q)
    monkeypatch.setattr(passes, "key_chunk_columns", lambda n_queries: 7)
    chunked = modality_pass(x, None, t=t, query_index=q)
    np.save(tmp_path / "x.npy", x)
    streamed = UnitRows(np.load(tmp_path / "x.npy", mmap_mode="r"), in_memory=False, chunk_rows=5)
    streamed_chunked = modality_pass(streamed, None, t=t, query_index=q)
    terms = _ref_row_terms(x, t)[q]
    atol = 5e-5 if t > 10 else 1e-6
    for r in (whole, chunked, streamed_chunked):
        np.testing.assert_array_equal(r.uniformity_rows, q)
        np.testing.assert_allclose(r.uniformity_row_terms, terms, atol=atol)
        assert r.uniformity == pytest.approx(math.log(np.exp(terms).mean()), abs=atol)


def test_sampled_uniformity_and_retrieval_share_one_product(monkeypatch, tmp_path):
    # Keys in memory: the kernel is summed from the blocks the ranking reads, so asking for
    # retrieval as well changes no bit of uniformity and makes no product of its own.
    # Keys normalised on the fly: the kernel reads them once, chunk by chunk, instead.
    from gapscope.engine import passes
    from gapscope.engine.unit_rows import UnitRows

    x, _, _, _, labels = _data(120, 6)
    q = np.arange(0, 120, 7)
    alone = modality_pass(x, None, query_index=q, block_size=5)
    calls = []
    monkeypatch.setattr(passes, "_sampled_kernel", lambda *a, **k: calls.append(a))
    both = modality_pass(x, labels, k=KS, query_index=q, block_size=5)
    assert not calls
    assert (both.uniformity, both.uniformity_se) == (alone.uniformity, alone.uniformity_se)
    np.testing.assert_array_equal(both.uniformity_row_terms, alone.uniformity_row_terms)
    np.testing.assert_allclose(both.uniformity_row_terms, _ref_row_terms(x)[q], atol=1e-6)
    every = modality_pass(x, labels, k=KS, uniformity=False).retrieval
    at = np.searchsorted(every.query_rows, both.retrieval.query_rows)
    np.testing.assert_array_equal(both.retrieval.first_rank, every.first_rank[at])
    np.save(tmp_path / "x.npy", x)
    streamed = UnitRows(np.load(tmp_path / "x.npy", mmap_mode="r"), in_memory=False)
    modality_pass(streamed, None, query_index=q)
    assert len(calls) == 1


def test_sampled_uniformity_does_not_depend_on_the_block_size():
    x, *_ = _data(150, 4)
    q = np.arange(1, 150, 4)
    results = [modality_pass(x, None, block_size=b, query_index=q) for b in (1, 7, 64, None)]
    for r in results[1:]:
        assert (r.uniformity, r.uniformity_se) == (results[0].uniformity, results[0].uniformity_se)


def test_memmap_streamed_matches_in_memory(tmp_path):
    from gapscope.engine.unit_rows import UnitRows

    x, y, gx, gy, labels = _data(150, 9)
    np.save(tmp_path / "x.npy", x.astype(np.float16))
    mx = np.load(tmp_path / "x.npy", mmap_mode="r")
    streamed = UnitRows(mx, in_memory=False, chunk_rows=17)
    held = UnitRows(mx, in_memory=True)
    q = np.arange(0, 150, 3)
    a = modality_pass(streamed, labels, k=KS, block_size=16, query_index=q)
    b = modality_pass(held, labels, k=KS, block_size=16, query_index=q)
    assert a.uniformity == pytest.approx(b.uniformity, abs=1e-6)
    assert a.retrieval.recall == b.retrieval.recall


def test_large_temperature_does_not_underflow():
    x, *_ = _data(80, 2)
    r = modality_pass(x, None, t=60.0)
    assert math.isfinite(r.uniformity)
    # d log k / d s = 2t = 120: float32 cosines (~1e-7 off) move the value by ~1e-5.
    assert r.uniformity == pytest.approx(ref.uniformity(x, 60.0), abs=5e-5)


def test_deterministic_bit_identical():
    x, y, gx, gy, labels = _data(100, 10)
    first = (modality_pass(x, labels, k=KS, block_size=13), cross_pass(x, y, gx, gy, k=KS))
    again = (
        modality_pass(x.copy(), labels, k=KS, block_size=13),
        cross_pass(x.copy(), y.copy(), gx, gy, k=KS),
    )
    assert first[0].uniformity == again[0].uniformity
    _assert_same(first[0].retrieval, again[0].retrieval)
    for a, b in zip(first[1], again[1], strict=True):
        _assert_same(a, b)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: modality_pass(np.eye(3), None, t=0.0), "t:"),
        (lambda: modality_pass(np.eye(3), None, k=0), "k:"),
        (lambda: modality_pass(np.eye(3), None, block_size=0), "block_size"),
        (lambda: modality_pass(np.eye(3)[:1], None), "at least 2"),
        (lambda: cross_pass(np.eye(3), np.eye(3), directions=("up",)), "directions"),
        (lambda: cross_pass(np.eye(3), np.eye(3), query_index_x=[5]), "query_index"),
    ],
)
def test_bad_parameters_raise_one_clear_error(call, match):
    with pytest.raises(GapscopeError, match=match):
        call()


def _near_ties(seed: int = 5, n: int = 300, d: int = 8):
    """Small-integer rows, some of them permutations of each other: many pairs of distinct
    rows have mathematically equal cosines, which a float32 product rounds differently
    depending on the shape of the block it is part of."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, size=(n, d)).astype(np.float32)
    x[np.abs(x).sum(axis=1) == 0, 0] = 1.0
    x[1::5] = x[0::5][:, rng.permutation(d)][: x[1::5].shape[0]]
    y = x + rng.integers(-1, 2, size=(n, d)).astype(np.float32)
    y[np.abs(y).sum(axis=1) == 0, 0] = 1.0
    return x, y, np.arange(n), np.arange(n), rng.integers(0, 6, size=n)


def _ranks(r):
    return (r.query_rows.tolist(), r.first_rank.tolist())


@pytest.mark.parametrize("threads", [1, 2])
def test_ranks_do_not_depend_on_the_block_size_or_threads(threads):
    # Near-ties are ranked by exact scores, so neither the blocks (which change how a BLAS
    # rounds each score) nor the thread count can move a rank.
    x, y, gx, gy, labels = _near_ties()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        runs = []
        for block in (1, 3, 7, 64, None):
            x_to_y, y_to_x = cross_pass(x, y, gx, gy, k=KS, block_size=block)
            own = modality_pass(x, labels, k=KS, block_size=block)
            sampled = modality_pass(
                x, labels, k=KS, block_size=block, query_index=np.arange(0, 300, 7)
            )
            runs.append(
                (
                    _ranks(x_to_y),
                    _ranks(y_to_x),
                    _ranks(own.retrieval),
                    own.retrieval.average_precision.tolist(),
                    _ranks(sampled.retrieval),
                )
            )
    finally:
        torch.set_num_threads(previous)
    assert all(run == runs[0] for run in runs[1:])
    # ... and the ranks are those of the exact scores of the unit rows, ties to the lower index.
    from gapscope.engine.unit_rows import UnitRows, exact_scores

    rows, keys = np.divmod(np.arange(300 * 300), 300)
    exact = exact_scores(UnitRows(x), rows, UnitRows(y), keys).reshape(300, 300)
    diagonal = exact.diagonal()[:, None]
    before = np.arange(300)[None, :] < np.arange(300)[:, None]
    first = np.sum(exact > diagonal, axis=1) + np.sum((exact == diagonal) & before, axis=1)
    assert runs[0][0][1] == first.tolist()


def test_uniformity_rows_are_bit_identical_whatever_the_blocks_and_threads():
    # A BLAS rounds a score differently in products of different shapes, and torch's
    # elementwise loops round at chunk edges that move with the thread count: the passes make
    # every score in the same product tile and sum the kernel in numpy, so every row term,
    # not only the rounded report, keeps its bits. 2,100 rows: two full tiles and a partial
    # one, blocks that straddle them, and sampled queries.
    rng = np.random.default_rng(8)
    x = rng.normal(size=(2100, 24)).astype(np.float32)
    sample = np.sort(rng.choice(2100, 1300, replace=False))
    previous = torch.get_num_threads()
    runs = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            for block in (None, 7, 33, 300, 1000):
                full = modality_pass(x, None, block_size=block)
                sampled = modality_pass(x, None, block_size=block, query_index=sample)
                runs.append(
                    (
                        full.uniformity_row_terms.tobytes(),
                        full.uniformity,
                        sampled.uniformity_row_terms.tobytes(),
                        sampled.uniformity,
                    )
                )
    finally:
        torch.set_num_threads(previous)
    assert all(run == runs[0] for run in runs[1:])
    assert runs[0][1] == pytest.approx(ref.uniformity(x), abs=1e-6)


def test_score_buffers_with_aligned_rows_give_the_same_bits(monkeypatch):
    # On a CPU the score blocks' rows start 32 floats apart (a product into rows of an odd
    # stride runs up to a third slower); the scores, ranks and kernel sums must not notice.
    rng = np.random.default_rng(12)
    n = 2101  # not a multiple of 32: the buffers are views of wider ones
    x = rng.normal(size=(n, 24)).astype(np.float32)
    y = (x + rng.normal(size=(n, 24))).astype(np.float32)
    labels = rng.integers(0, 9, size=n)
    groups = np.arange(n)
    sample = np.sort(rng.choice(n, 700, replace=False))

    def run() -> tuple:
        full = modality_pass(x, labels, k=KS)
        sampled = modality_pass(x, labels, k=KS, query_index=sample)
        # Blocks that cover product tiles in part go through the scratch buffer; rows
        # normalised on the fly give the sampled kernel its chunks of keys.
        partial = modality_pass(x, labels, k=KS, block_size=500)
        streamed = modality_pass(
            unit_rows.UnitRows(x, in_memory=False, chunk_rows=300), labels, k=KS, query_index=sample
        )
        both = cross_pass(x, y, groups, groups, k=KS, query_index_x=sample)
        return full, sampled, partial, streamed, both

    buffer = unit_rows.score_buffer(3, n, torch.device("cpu"))
    assert buffer.shape == (3, n) and buffer.stride() == (n + 32 - n % 32, 1)
    aligned = run()
    monkeypatch.setattr(unit_rows, "_ROW_ALIGN", 1)
    plain = run()
    for a, b in zip(aligned[:4], plain[:4], strict=True):
        assert a.uniformity_row_terms.tobytes() == b.uniformity_row_terms.tobytes()
        _assert_same(a.retrieval, b.retrieval)
    for a, b in zip(aligned[4], plain[4], strict=True):
        _assert_same(a, b)


def test_exact_scores_depend_on_the_pair_alone():
    from gapscope.engine.unit_rows import UnitRows, exact_scores

    rng = np.random.default_rng(3)
    a = UnitRows(rng.normal(size=(50, 33)).astype(np.float32))
    b = UnitRows(rng.normal(size=(40, 33)).astype(np.float32))
    rows, keys = rng.integers(0, 50, 500), rng.integers(0, 40, 500)
    batch = exact_scores(a, rows, b, keys)
    one_by_one = [exact_scores(a, rows[p : p + 1], b, keys[p : p + 1])[0] for p in range(500)]
    assert batch.tolist() == one_by_one
    left = a.take(rows).double().numpy()
    right = b.take(keys).double().numpy()
    fsum = [math.fsum(v) for v in left * right]
    np.testing.assert_allclose(batch, fsum, rtol=0, atol=1e-15)


def test_exact_scores_of_moved_rows_take_each_row_once():
    """The pairs of a window's keys share their query: each distinct row is made once (a
    moved row of a what-if is made anew at every take), with the same scores as pair by
    pair."""
    from gapscope.engine.offset_passes import OffsetRows
    from gapscope.engine.unit_rows import UnitRows, exact_scores

    rng = np.random.default_rng(5)
    base = UnitRows(rng.normal(size=(60, 17)).astype(np.float32) + 1.0)
    moved = OffsetRows(base, 0.3 * rng.normal(size=17))
    taken: list[int] = []
    take = moved.take

    def counted(index):
        taken.append(len(index))
        return take(index)

    moved.take = counted  # type: ignore[method-assign]
    rows = np.repeat(rng.integers(0, 60, 4), 250)  # four queries, 250 keys each
    keys = rng.integers(0, 60, 1000)
    batch = exact_scores(moved, rows, moved, keys)
    assert taken[0] == 4 and taken[1] <= 60
    one_by_one = [
        exact_scores(moved, rows[p : p + 1], moved, keys[p : p + 1])[0] for p in range(1000)
    ]
    assert batch.tolist() == one_by_one


def test_near_window_rounds_outwards():
    from gapscope.engine.ranking import near_window

    rng = np.random.default_rng(4)
    s = rng.uniform(-4, 4, 10_000).astype(np.float32)
    for margin in (0.0, 1e-9, 3.1e-5, 0.25):
        lo, hi = near_window(s, margin)
        assert lo.dtype == hi.dtype == np.float32
        assert np.all(lo.astype(np.float64) <= s.astype(np.float64) - margin)
        assert np.all(hi.astype(np.float64) >= s.astype(np.float64) + margin)


def test_reduced_precision_products_set_by_the_caller_are_not_used():
    # TF32 or "medium" float32 products would break the error bound near-ties rely on: the
    # passes switch them off while they run and restore the caller's setting.
    x, y, gx, gy, _ = _near_ties(seed=6, n=120)
    expected = cross_pass(x, y, gx, gy, k=KS)
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        got = cross_pass(x, y, gx, gy, k=KS)
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(previous)
    for a, b in zip(expected, got, strict=True):
        assert _ranks(a) == _ranks(b)


def test_reduced_precision_stays_off_while_lanes_multiply():
    # Lanes multiply blocks at once; the first to start sets full float32 products and the
    # last to finish puts the caller's setting back, so no block runs in between.
    x, y, gx, gy, _ = _near_ties(seed=6, n=120)
    expected = cross_pass(x, y, gx, gy, k=KS, block_size=7)
    previous = (torch.get_float32_matmul_precision(), torch.get_num_threads())
    torch.set_float32_matmul_precision("medium")
    torch.set_num_threads(3)
    try:
        got = cross_pass(x, y, gx, gy, k=KS, block_size=7)
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(previous[0])
        torch.set_num_threads(previous[1])
    for a, b in zip(expected, got, strict=True):
        assert _ranks(a) == _ranks(b)


def _float32_products() -> str:
    """What a float32 product on this CPU does: ``"ieee"`` (full) or a reduced precision."""
    mkldnn = getattr(getattr(torch.backends, "mkldnn", None), "matmul", None)
    # "none" defers to the legacy setting.
    if getattr(mkldnn, "fp32_precision", "none") != "none":
        return str(mkldnn.fp32_precision)  # type: ignore[union-attr]
    return "ieee" if torch.get_float32_matmul_precision() == "highest" else "reduced"


def test_full_float32_products_are_entered_once_by_threads_at_once():
    import threading

    from gapscope.engine.unit_rows import full_float32_products

    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    reduced = _float32_products()
    inside, leave = threading.Event(), threading.Event()

    def other() -> None:
        with full_float32_products():
            inside.set()
            leave.wait(timeout=10)

    thread = threading.Thread(target=other)
    try:
        assert reduced != "ieee"
        thread.start()
        inside.wait(timeout=10)
        with full_float32_products():
            assert _float32_products() == "ieee"
            # The thread that came in first leaves first: this one is still multiplying.
            leave.set()
            thread.join()
            assert _float32_products() == "ieee"
        assert _float32_products() == reduced
    finally:
        leave.set()
        if thread.ident is not None:
            thread.join()
        torch.set_float32_matmul_precision(previous)
    assert _float32_products() == "ieee"


def test_duplicate_rows_share_their_score_in_lanes():
    # Duplicate rows share one score in every block, whichever lane made it: the same bits
    # as one thread (the duplicates found once for every lane: test_unit_rows.py).
    rng = np.random.default_rng(12)
    base = rng.normal(size=(40, 24)).astype(np.float32)
    x = base[rng.integers(0, 40, 900)]
    y = (x + 0.1 * rng.normal(size=x.shape)).astype(np.float32)
    groups = np.arange(900)
    sample = np.arange(0, 900, 3)
    runs = []
    previous = torch.get_num_threads()
    try:
        for threads in (1, 3):
            torch.set_num_threads(threads)
            cross = cross_pair_pass(x, y, groups, groups, k=KS, block_size=64)
            own = modality_pass(x, groups % 40, k=KS, block_size=64, query_index=sample)
            runs.append(
                (
                    cross.x_to_y.first_rank.tobytes(),
                    cross.y_to_x.first_rank.tobytes(),
                    own.uniformity_row_terms.tobytes(),
                    own.retrieval.average_precision.tobytes(),
                )
            )
    finally:
        torch.set_num_threads(previous)
    assert runs[0] == runs[1]


@pytest.mark.parametrize("rows", [1, 254, 255, 256, 600])
def test_column_counts_are_exact_beyond_one_uint8(rows):
    # Counts are summed as uint8 a slice of 255 rows: columns where every row counts (600 of
    # them) must not wrap around.
    from gapscope.engine.passes import _column_counts

    rng = np.random.default_rng(rows)
    scores = rng.normal(size=(rows, 7)).astype(np.float32)
    scores[:, 0] = 5.0
    bounds = np.array([0.0, 0.1, -0.2, 3.0, -np.inf, np.inf, 0.5], dtype=np.float32)
    mask = np.empty((rows + 3, 9), dtype=bool)[:rows, :7]
    for compare in (np.greater, np.greater_equal):
        expected = np.count_nonzero(compare(scores, bounds[None, :]), axis=0)
        got = _column_counts(compare, scores, bounds, mask)
        np.testing.assert_array_equal(got, expected)
        assert got.dtype == np.int64
    assert _column_counts(np.greater, scores, bounds, mask)[0] == rows


@pytest.mark.parametrize("block_size", [3, 16, None])
def test_sampled_cross_queries_rank_the_same_by_rows_and_by_columns(tmp_path, block_size):
    # Keys in memory: blocks of sampled query rows ranked by rows. Keys normalised on the fly:
    # counted down the columns of a thin product. Exact ranks make both give the same first
    # rank for every query, on tie-heavy rows too.
    from gapscope.engine.unit_rows import UnitRows

    for x, y, gx, gy in (_ties()[:4], _data(90, 12)[:4]):
        rng = np.random.default_rng(3)
        qx = np.sort(rng.choice(len(x), len(x) // 3, replace=False))
        qy = np.sort(rng.choice(len(y), len(y) // 2, replace=False))
        np.save(tmp_path / "x.npy", x)
        np.save(tmp_path / "y.npy", y)
        streamed = [
            UnitRows(np.load(tmp_path / f"{m}.npy", mmap_mode="r"), in_memory=False, chunk_rows=7)
            for m in ("x", "y")
        ]
        kw = dict(k=KS, block_size=block_size, query_index_x=qx, query_index_y=qy)
        by_rows = cross_pass(x, y, gx, gy, **kw)
        by_columns = cross_pass(*streamed, gx, gy, **kw)
        for r, c in zip(by_rows, by_columns, strict=True):
            _assert_same(r, c)
        assert by_rows[0].recall == ref.cross_recall(x[qx], y, gx[qx], gy, KS)
        assert by_rows[1].recall == ref.cross_recall(y[qy], x, gy[qy], gx, KS)


def _ref_sampled_intra(x: np.ndarray, codes: np.ndarray, queries: np.ndarray):
    """Full-matrix float64 first rank and AP of each query with a relevant row (ties to the
    lower index), the way ``reference.intra_retrieval`` ranks them."""
    s = ref.unit(x) @ ref.unit(x).T
    first, aps = [], []
    for i in queries.tolist():
        others = np.array([j for j in range(len(x)) if j != i])
        rel = codes[others] == codes[i]
        if not rel.any():
            continue
        positions = np.nonzero(rel[ref._ranking(s[i, others])])[0]
        first.append(positions[0])
        aps.append(np.mean([(r + 1) / (p + 1) for r, p in enumerate(positions)]))
    return np.array(first), np.array(aps)


@pytest.mark.parametrize("uniformity", [True, False])
@pytest.mark.parametrize("data", ["gaussian", "ties", "duplicates"])
@pytest.mark.parametrize("candidates_max", [None, 5])
@pytest.mark.parametrize("counted_by", ["numpy", "torch"])
def test_streamed_sampled_intra_ranks_counted_down_the_columns(
    monkeypatch, tmp_path, uniformity, data, candidates_max, counted_by
):
    # Keys normalised on the fly: the sampled queries' intra-modal ranks are counted down the
    # columns of the kernel's chunks of keys (7 keys a chunk here, so queries and their
    # relevant rows sit at chunk edges). Exact ranks: the same as the blocks of rows of the
    # keys held in memory, and as the float64 oracle, on tie-heavy and duplicated rows too;
    # also when a chunk's candidate keys are taken out a few rows at a time, and when they
    # are taken by torch (as on a device) rather than numpy.
    from gapscope.engine import column_ranks, passes, window_ranks
    from gapscope.engine.unit_rows import UnitRows

    if counted_by == "torch":
        monkeypatch.setattr(window_ranks, "HOST_SUMS", set())

    rng = np.random.default_rng(21)
    if data == "gaussian":
        x, _, codes, _, _ = _data(150, 13)  # groups of three
    elif data == "ties":
        x = rng.choice([-1.0, 1.0], size=(90, 4)).astype(np.float32)
        codes = rng.integers(0, 6, size=90)
    else:
        base = rng.normal(size=(40, 8)).astype(np.float32)
        x = np.concatenate([base, 2.0 * base, base])  # the same unit row three times
        codes = rng.integers(0, 3, size=120)
    q = np.sort(rng.choice(len(x), len(x) // 2, replace=False))
    finished = []
    finish = column_ranks.IntraColumnRanks.finish

    def counted_finish(self, store):
        finished.append(1)
        finish(self, store)

    monkeypatch.setattr(column_ranks.IntraColumnRanks, "finish", counted_finish)
    monkeypatch.setattr(passes, "fits_columns", lambda counts, n_keys: True)
    monkeypatch.setattr(passes, "key_chunk_columns", lambda n_queries: 7)
    if candidates_max is not None:
        monkeypatch.setattr(column_ranks, "CANDIDATES_MAX", candidates_max)
    held = modality_pass(x, codes, k=KS, block_size=5, query_index=q, uniformity=uniformity)
    assert not finished
    np.save(tmp_path / "x.npy", x)
    mx = np.load(tmp_path / "x.npy", mmap_mode="r")
    streamed = UnitRows(mx, in_memory=False, chunk_rows=11)
    # Blocks of 5 queries would read the keys once a block: counted down the columns.
    by_columns = modality_pass(
        streamed, codes, k=KS, block_size=5, query_index=q, uniformity=uniformity
    )
    assert finished == [1]
    _assert_same(held.retrieval, by_columns.retrieval)
    np.testing.assert_array_equal(
        held.retrieval.average_precision, by_columns.retrieval.average_precision
    )
    np.testing.assert_array_equal(held.retrieval.r_precision, by_columns.retrieval.r_precision)
    first, aps = _ref_sampled_intra(x, codes, q)
    np.testing.assert_array_equal(by_columns.retrieval.first_rank, first)
    np.testing.assert_allclose(by_columns.retrieval.average_precision, aps, rtol=1e-12)
    if uniformity:
        alone = modality_pass(streamed, None, query_index=q)
        assert by_columns.uniformity_row_terms.tobytes() == alone.uniformity_row_terms.tobytes()


def test_streamed_sampled_intra_reads_the_keys_once(monkeypatch):
    # 60 sampled queries in blocks of 4 would read the keys 15 times by rows; counted down
    # the columns, the uniformity's chunks of keys are the only read. Relevant rows too many
    # to gather (one label shared by every row) keep the blocks of rows, with the same ranks,
    # and so does one block of every query (a read of its own beside the kernel's).
    from gapscope.engine import passes
    from gapscope.engine.unit_rows import UnitRows

    x, _, groups, _, _ = _data(300, 14)
    q = np.arange(0, 300, 5)
    monkeypatch.setattr(passes, "key_chunk_columns", lambda n_queries: 64)
    for codes, reads, block_size in (
        (groups, 300, 4),
        (np.zeros(300, np.int64), 300 * 16, 4),
        # One block of queries reads the keys once: it stays.
        (groups, 300 * 2, 60),
    ):
        streamed = UnitRows(x, in_memory=False, chunk_rows=50)
        read = []
        block = streamed.block

        def counted_block(start, stop, block=block, read=read):
            read.append(stop - start)
            return block(start, stop)

        monkeypatch.setattr(streamed, "block", counted_block)
        r = modality_pass(streamed, codes, k=KS, block_size=block_size, query_index=q)
        assert sum(read) == reads
        held = modality_pass(x, codes, k=KS, block_size=block_size, query_index=q)
        _assert_same(held.retrieval, r.retrieval)
        assert r.uniformity == pytest.approx(held.uniformity, abs=1e-6)


@pytest.mark.parametrize("t", [2.0, 100.0])
def test_a_sweeps_chunk_sums_are_added_in_chunk_order_whatever_order_they_come_in(monkeypatch, t):
    # Lanes hand in a sweep's rounds out of order; the chunks' sums are combined in chunk
    # order, as one thread combines them (in the log domain, at t = 100, where the order of
    # logaddexp moves the last bits).
    from gapscope.engine import passes

    monkeypatch.setattr(passes, "key_chunk_columns", lambda n_queries: 4)
    rng = np.random.default_rng(3)
    # Scores just below 1: no chunk's sum drowns the others', and the row terms (their log
    # sums less 2t) keep the last bits of the sums.
    chunks = [
        torch.from_numpy((1 - 1e-3 * np.abs(rng.normal(size=(5, 4)))).astype(np.float32))
        for _ in range(12)
    ]

    def total(order: list[int]) -> bytes:
        kernel = passes._KernelRows(5, t)
        sums = passes._ChunkSums(kernel, 48)
        for r in order:
            sums.add_round(r, chunks[r].clone())
        sums.finish()
        return kernel.row_lse.tobytes()

    in_order = total(list(range(12)))
    for seed in range(5):
        assert total(np.random.default_rng(seed).permutation(12).tolist()) == in_order


def test_ranks_stored_a_group_at_a_time_keep_every_bit():
    # TileRanks.finish hands the ranks of queries with as many relevant rows at once; the
    # average precision sums each row of the group as numpy sums a 1-D array (pairwise
    # beyond 8 and 128 values too), so the measures are those of one query at a time.
    from gapscope.engine.passes import _IntraRanks
    from gapscope.engine.unit_rows import UnitRows

    rng = np.random.default_rng(4)
    sizes = [2, 3, 9, 10, 129, 130, 301]
    codes = np.repeat(np.arange(len(sizes)), sizes)
    n = codes.size
    unit = UnitRows(rng.normal(size=(n, 4)).astype(np.float32))
    one, together = _IntraRanks(codes, np.arange(n), unit), _IntraRanks(codes, np.arange(n), unit)
    for size in sizes:
        rows = np.flatnonzero(np.bincount(codes)[codes] == size)
        m = size - 1
        ranks = np.sort(rng.integers(0, 5 * n, size=(rows.size, m)), axis=1) + np.arange(m)
        for row, r in zip(rows.tolist(), ranks, strict=True):
            one.store(row, r)
        together.store_rows(rows, ranks)
    assert one.first_rank.tobytes() == together.first_rank.tobytes()
    assert one.ap.tobytes() == together.ap.tobytes()
    assert one.rp.tobytes() == together.rp.tobytes()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("uniformity", [True, False])
@pytest.mark.parametrize("rider_rows", [1, 5, 10**6])
def test_cross_directions_counted_in_a_modality_passs_chunks_of_keys(
    monkeypatch, tmp_path, threads, uniformity, rider_rows
):
    # Other modalities' sampled queries ranked against a modality pass's keys (CrossQueries):
    # where the pass reads its keys a chunk at a time (keys normalised on the fly), they are
    # counted down the columns of the same chunks, a few keys at a time, and give
    # cross_pass's direction exactly, on tie-heavy rows too; the pass's own numbers keep
    # every bit. Keys held in memory take cross_pass's own path, with the same numbers.
    from gapscope.engine import passes
    from gapscope.engine.passes import CrossQueries
    from gapscope.engine.unit_rows import UnitRows

    monkeypatch.setattr(passes, "key_chunk_columns", lambda n_queries: 7)
    monkeypatch.setattr(passes, "_RIDER_BYTES", 5 * rider_rows * 1000)
    monkeypatch.setattr(passes, "fits_columns", lambda counts, n_keys: True)
    swept: list[int] = []
    add = passes._CrossColumns.add_chunk
    monkeypatch.setattr(
        passes._CrossColumns, "add_chunk", lambda s, *a: swept.append(1) or add(s, *a)
    )
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for x, y, gx, gy in (_ties()[:4], _data(90, 12)[:4]):
            rng = np.random.default_rng(3)
            qx = np.sort(rng.choice(len(x), len(x) // 3, replace=False))
            qy = np.sort(rng.choice(len(y), len(y) // 2, replace=False))
            labels = rng.integers(0, 5, size=len(y))
            np.save(tmp_path / "y.npy", y)
            streamed = UnitRows(np.load(tmp_path / "y.npy", mmap_mode="r"), in_memory=False)
            x_to_y, _ = cross_pass(x, y, gx, gy, k=KS, query_index_x=qx, query_index_y=qy)
            for keys, counted in ((streamed, True), (y, False)):
                swept.clear()
                kw = dict(k=KS, block_size=5, query_index=qy, uniformity=uniformity)
                alone = modality_pass(keys, labels, **kw)
                riding = modality_pass(keys, labels, cross=[CrossQueries(x, gx, gy, qx)], **kw)
                assert bool(swept) == counted
                (got,) = riding.cross
                _assert_same(got, x_to_y)
                assert got.recall == x_to_y.recall and got.n_skipped == x_to_y.n_skipped
                _assert_same(riding.retrieval, alone.retrieval)
                if uniformity:
                    assert riding.uniformity_row_terms.tobytes() == (
                        alone.uniformity_row_terms.tobytes()
                    )
            assert x_to_y.recall == ref.cross_recall(x[qx], y, gx[qx], gy, KS)
    finally:
        torch.set_num_threads(torch_threads)


def test_cross_queries_must_be_sampled():
    from gapscope.engine.passes import CrossQueries

    x = np.eye(4, dtype=np.float32)
    with pytest.raises(GapscopeError, match="query_index is required"):
        modality_pass(x, cross=[CrossQueries(x, np.arange(4), np.arange(4), None)])  # type: ignore[arg-type]
