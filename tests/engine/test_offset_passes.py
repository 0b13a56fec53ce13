"""Passes over moved rows read from one product of the rows as they are, against passes over
the moved rows themselves and against float64 full-matrix oracles.

Ranks are exact, so every version's recall, mAP and R-precision must equal those of a pass over
its own rows bit for bit, on Gaussian data and on data full of exact ties, however far the
offsets move the rows (the error bound grows with ``1 / ||u - p||``); uniformity agrees to
float32 rounding, and is the same bits whatever the block size or thread count.
"""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref
import torch

from gapscope.engine.offset_passes import (
    DERIVED_MAX_FACTOR,
    OffsetRows,
    offset_cross_passes,
    offset_modality_passes,
)
from gapscope.engine.passes import cross_pair_pass, cross_pass, modality_pass
from gapscope.engine.unit_rows import UnitRows
from gapscope.errors import EmbeddingError, GapscopeError

KS = (1, 3, 10)


def _data(n: int = 90, d: int = 16, seed: int = 0, cone: float = 2.0):
    """Two modalities in cones around different directions, paired row by row, with labels."""
    rng = np.random.default_rng(seed)
    content = rng.normal(size=(n, d))
    x = content + cone * rng.normal(size=d) + 0.5 * rng.normal(size=(n, d))
    y = content + cone * rng.normal(size=d) + 0.5 * rng.normal(size=(n, d))
    return x.astype(np.float32), y.astype(np.float32), rng.integers(0, 5, n)


def _ties(n: int = 70, seed: int = 3):
    """Entries in {-1, 0, 1} and repeated rows: many scores tie exactly."""
    rng = np.random.default_rng(seed)
    pool = rng.integers(-1, 2, size=(12, 6)).astype(np.float32)
    pool[np.abs(pool).sum(axis=1) == 0, 0] = 1.0
    x = pool[rng.integers(0, 12, n)]
    y = pool[rng.integers(0, 12, n)]
    return x, y, rng.integers(0, 4, n)


def _unit_mean(x: np.ndarray) -> np.ndarray:
    return ref.unit(x).mean(axis=0)


def _offsets(x: np.ndarray, y: np.ndarray) -> list[tuple[np.ndarray | None, np.ndarray | None]]:
    """The what-ifs' versions: as is, mean-centred, shifted both ways along the gap."""
    g = _unit_mean(x) - _unit_mean(y)
    return [
        (None, None),
        (_unit_mean(x), _unit_mean(y)),
        (0.5 * g, -0.5 * g),
        (-0.5 * g, 0.5 * g),
    ]


def _same_retrieval(a, b) -> None:
    assert a.recall == b.recall
    np.testing.assert_array_equal(a.query_rows, b.query_rows)
    np.testing.assert_array_equal(a.first_rank, b.first_rank)
    assert (a.n_queries, a.n_skipped, a.se) == (b.n_queries, b.n_skipped, b.se)
    if a.average_precision is not None:
        np.testing.assert_array_equal(a.average_precision, b.average_precision)
        np.testing.assert_array_equal(a.r_precision_per_query, b.r_precision_per_query)


def test_offset_rows_are_the_rows_unit_rows_hold_bit_for_bit():
    x, _, _ = _data(n=50)
    p = _unit_mean(x)
    moved = OffsetRows(UnitRows(x), p)
    own = UnitRows(x, offset=p)
    picked = np.array([7, 0, 49, 7])
    assert torch.equal(moved.take(picked), own.take(picked))
    assert torch.equal(moved.take(np.arange(50)), own.block(0, 50))
    assert torch.equal(OffsetRows(UnitRows(x), None).take(picked), UnitRows(x).take(picked))


@pytest.mark.parametrize("make", [_data, _ties], ids=["gaussian", "ties"])
@pytest.mark.parametrize("sampled", [False, True])
def test_modality_versions_equal_passes_over_their_own_rows(make, sampled):
    x, y, labels = make()
    base = UnitRows(x)
    versions = [OffsetRows(base, p) for p, _ in _offsets(x, y)]
    query = np.arange(3, x.shape[0], 4) if sampled else None
    got = offset_modality_passes(base, versions, labels, k=KS, query_index=query, block_size=16)
    for (p, _), result in zip(_offsets(x, y), got, strict=True):
        own = modality_pass(UnitRows(x, offset=p), labels, k=KS, query_index=query)
        _same_retrieval(result.retrieval, own.retrieval)
        assert result.uniformity == pytest.approx(own.uniformity, rel=1e-6)
        if p is None:
            # Not moved: the pass's own numbers, bit for bit.
            assert result.uniformity == own.uniformity
            np.testing.assert_array_equal(result.uniformity_row_terms, own.uniformity_row_terms)


@pytest.mark.parametrize("make", [_data, _ties], ids=["gaussian", "ties"])
@pytest.mark.parametrize("sampled", [False, True])
def test_cross_versions_equal_passes_over_their_own_rows(make, sampled):
    x, y, _ = make()
    base_x, base_y = UnitRows(x), UnitRows(y)
    pairs = _offsets(x, y)
    versions = [(OffsetRows(base_x, p), OffsetRows(base_y, q)) for p, q in pairs]
    qx = np.arange(0, x.shape[0], 3) if sampled else None
    qy = np.arange(1, y.shape[0], 5) if sampled else None
    got = offset_cross_passes(
        base_x, base_y, versions, k=KS, query_index_x=qx, query_index_y=qy, block_size=8
    )
    for (p, q), (x_to_y, y_to_x) in zip(pairs, got, strict=True):
        own = cross_pass(
            UnitRows(x, offset=p), UnitRows(y, offset=q), k=KS, query_index_x=qx, query_index_y=qy
        )
        _same_retrieval(x_to_y, own[0])
        _same_retrieval(y_to_x, own[1])


def test_versions_match_float64_oracles_of_the_moved_rows():
    x, y, labels = _data(n=120, seed=5)
    p, q = _unit_mean(x), _unit_mean(y)
    base_x, base_y = UnitRows(x), UnitRows(y)
    moved_x = ref.unit(x) - p.astype(np.float32)
    moved_y = ref.unit(y) - q.astype(np.float32)
    pairs = np.arange(x.shape[0])
    ((x_to_y, y_to_x),) = offset_cross_passes(
        base_x, base_y, [(OffsetRows(base_x, p), OffsetRows(base_y, q))], k=KS
    )
    assert x_to_y.recall == pytest.approx(ref.cross_recall(moved_x, moved_y, pairs, pairs, KS))
    assert y_to_x.recall == pytest.approx(ref.cross_recall(moved_y, moved_x, pairs, pairs, KS))
    (own,) = offset_modality_passes(base_x, [OffsetRows(base_x, p)], labels, k=KS)
    intra = ref.intra_retrieval(moved_x, labels, KS)
    assert own.retrieval.mean_average_precision == pytest.approx(intra["mAP"], rel=1e-12)
    assert own.uniformity == pytest.approx(ref.uniformity(moved_x), rel=1e-6)


def test_versions_with_rows_close_to_their_offset_get_passes_of_their_own():
    # Every row within about 0.05 of the offset (1 / ||u - p|| up to about 20, above
    # DERIVED_MAX_FACTOR): derived scores would need a margin 400 times a product's, so the
    # version is measured over its own rows: the pass's numbers, bit for bit.
    rng = np.random.default_rng(8)
    centre = rng.normal(size=12)
    x = (centre / np.linalg.norm(centre) + 0.03 * rng.normal(size=(80, 12))).astype(np.float32)
    y = (centre / np.linalg.norm(centre) + 0.03 * rng.normal(size=(80, 12))).astype(np.float32)
    labels = rng.integers(0, 3, 80)
    p = 0.98 * _unit_mean(x)
    base, base_y = UnitRows(x), UnitRows(y)
    moved = OffsetRows(base, p)
    assert moved.max_factor > DERIVED_MAX_FACTOR
    near, far = offset_modality_passes(base, [moved, OffsetRows(base, 0.1 * p)], labels, k=KS)
    own = modality_pass(UnitRows(x, offset=p), labels, k=KS)
    _same_retrieval(near.retrieval, own.retrieval)
    assert near.uniformity == own.uniformity
    # The other version is still derived: its ranks are exact all the same.
    other = modality_pass(UnitRows(x, offset=0.1 * p), labels, k=KS)
    _same_retrieval(far.retrieval, other.retrieval)
    ((x_to_y, y_to_x),) = offset_cross_passes(base, base_y, [(moved, OffsetRows(base_y, None))])
    both = cross_pass(UnitRows(x, offset=p), UnitRows(y), k=(1, 5, 10))
    _same_retrieval(x_to_y, both[0])
    _same_retrieval(y_to_x, both[1])


def test_ranks_stay_exact_with_rows_up_to_the_limit_of_derived_scores():
    # Rows 1/3.5 to 1 from the offset (factors up to 3.5, just within DERIVED_MAX_FACTOR):
    # derived, with a margin 3.5 times wider, and the same ranks as passes over the rows.
    rng = np.random.default_rng(12)
    d = 8
    direction = np.eye(d)[0]
    spread = rng.uniform(1.0 / 3.5, 1.0, size=120)
    noise = rng.normal(size=(120, d))
    noise -= noise @ np.outer(direction, direction)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    # Unit rows at distance s from p = 0.9 e_0 ... approximately: u = p + s n, normalised.
    x = (0.9 * direction + spread[:, None] * noise).astype(np.float32)
    labels = rng.integers(0, 4, 120)
    p = 0.9 * direction
    base = UnitRows(x)
    view = OffsetRows(base, p)
    assert 1.5 < view.max_factor <= DERIVED_MAX_FACTOR
    (got,) = offset_modality_passes(base, [view], labels, k=KS, block_size=9)
    own = modality_pass(UnitRows(x, offset=p), labels, k=KS)
    _same_retrieval(got.retrieval, own.retrieval)
    assert got.uniformity == pytest.approx(own.uniformity, rel=1e-5)


def test_block_size_and_threads_leave_every_bit():
    # With more than one thread the blocks run in lanes (gapscope.engine.pipelining), each
    # with its own buffers, and are read in whatever order the lanes finish them.
    x, y, labels = _data(n=150, seed=2)
    base, base_y = UnitRows(x), UnitRows(y)
    versions = [OffsetRows(base, p) for p, _ in _offsets(x, y)]
    pairs = [(OffsetRows(base, p), OffsetRows(base_y, q)) for p, q in _offsets(x, y)]

    def run(block_size):
        results = offset_modality_passes(base, versions, labels, k=KS, block_size=block_size)
        cross = offset_cross_passes(base, base_y, pairs, k=KS, block_size=block_size)
        return [(r.uniformity_row_terms, r.retrieval.average_precision) for r in results] + [
            (a.first_rank, b.first_rank) for a, b in cross
        ]

    reference = run(None)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = [run(None), run(7)]
        torch.set_num_threads(3)
        lanes = [run(None), run(7)]
    finally:
        torch.set_num_threads(threads)
    for other in (run(7), run(64), *single, *lanes):
        for got, want in zip(other, reference, strict=True):
            for a, b in zip(got, want, strict=True):
                np.testing.assert_array_equal(a, b)


def test_a_row_sent_to_the_origin_is_named():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)
    with pytest.raises(EmbeddingError, match=r"image: row 1 lands on the origin"):
        OffsetRows(UnitRows(x), np.array([0.0, 1.0]), name="image", why="lands on the origin")


def test_big_blocks_are_made_into_versions_a_part_at_a_time_with_the_same_bits(monkeypatch):
    # Blocks above the part size are made into versions' scores a few rows at a time (here
    # one row): the same numbers as whole blocks.
    from gapscope.engine import offset_passes

    x, y, labels = _data(n=120, seed=6)
    base_x, base_y = UnitRows(x), UnitRows(y)
    pairs = _offsets(x, y)
    versions = [(OffsetRows(base_x, p), OffsetRows(base_y, q)) for p, q in pairs]

    def run():
        own = offset_modality_passes(base_x, [v[0] for v in versions], labels, k=KS, block_size=32)
        cross = offset_cross_passes(base_x, base_y, versions, k=KS, block_size=32)
        return [(r.uniformity_row_terms, r.retrieval.average_precision) for r in own], [
            (a.first_rank, b.first_rank) for a, b in cross
        ]

    whole = run()
    monkeypatch.setattr(offset_passes, "_PART_BYTES", 0)
    in_parts = run()
    for got, want in zip(in_parts[0] + in_parts[1], whole[0] + whole[1], strict=True):
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("make", [_data, _ties], ids=["gaussian", "ties"])
def test_streamed_rows_give_the_ranks_of_rows_held_in_memory(make):
    # Rows normalised block by block (chunks of 17 rows): the same exact ranks; uniformity to
    # float32 rounding (a chunk's product may round a score differently).
    x, y, labels = make()
    streamed_x = UnitRows(x, in_memory=False, chunk_rows=17)
    streamed_y = UnitRows(y, in_memory=False, chunk_rows=17)
    pairs = _offsets(x, y)
    versions = [(OffsetRows(streamed_x, p), OffsetRows(streamed_y, q)) for p, q in pairs]
    query = np.arange(2, x.shape[0], 3)
    own = offset_modality_passes(
        streamed_x, [v[0] for v in versions], labels, k=KS, query_index=query
    )
    cross = offset_cross_passes(streamed_x, streamed_y, versions, k=KS, query_index_x=query)
    for (p, q), result, (x_to_y, y_to_x) in zip(pairs, own, cross, strict=True):
        alone = modality_pass(UnitRows(x, offset=p), labels, k=KS, query_index=query)
        _same_retrieval(result.retrieval, alone.retrieval)
        assert result.uniformity == pytest.approx(alone.uniformity, rel=1e-6)
        both = cross_pass(UnitRows(x, offset=p), UnitRows(y, offset=q), k=KS, query_index_x=query)
        _same_retrieval(x_to_y, both[0])
        _same_retrieval(y_to_x, both[1])


def test_offset_rows_read_the_rows_once_for_every_version_and_pass(monkeypatch):
    # offset_rows: every version's norms and every dot product the passes need from one read
    # of rows normalised block by block; the passes then read the keys only for products.
    from gapscope.engine import offset_passes
    from gapscope.engine.offset_passes import offset_rows

    x, y, labels = _data(n=60, seed=9)
    base_x = UnitRows(x, in_memory=False, chunk_rows=16)
    base_y = UnitRows(y, in_memory=False, chunk_rows=16)
    pairs = _offsets(x, y)
    px, py = [p for p, _ in pairs], [q for _, q in pairs]
    read = []
    block = base_x.block

    def counted_block(start, stop):
        read.append((start, stop))
        return block(start, stop)

    scans = []
    scan = offset_passes._scans

    def counted_scan(reads):
        scans.extend(read[0] is base_x for read in reads)
        return scan(reads)

    monkeypatch.setattr(offset_passes, "_scans", counted_scan)
    monkeypatch.setattr(base_x, "block", counted_block)
    moved_x = offset_rows(base_x, px, name="x", dots_with=py)
    # One scan, each chunk read once.
    assert scans == [True]
    assert read == [(0, 16), (16, 32), (32, 48), (48, 60)]
    monkeypatch.setattr(base_x, "block", block)
    reads = {"x": 1}
    chunks = base_x.chunks

    def counted():
        reads["x"] += 1
        return chunks()

    monkeypatch.setattr(base_x, "chunks", counted)
    moved_y = offset_rows(base_y, py, name="y", dots_with=px)
    for view, p in zip(moved_x, px, strict=True):
        alone = OffsetRows(UnitRows(x), p)
        assert torch.equal(view.factors, alone.factors)
        assert torch.equal(view.take(np.arange(60)), alone.take(np.arange(60)))
    versions = list(zip(moved_x, moved_y, strict=True))
    # Each pass then reads x's rows once a block of queries it multiplies them with (one block
    # here): the intra-modal pass, and y -> x. No read for norms or dot products.
    offset_modality_passes(base_x, moved_x, labels, k=KS, query_index=np.arange(0, 60, 2))
    assert reads["x"] == 2
    offset_cross_passes(base_x, base_y, versions, k=KS, query_index_x=np.arange(0, 60, 2))
    assert reads["x"] == 3
    # No pass scanned the rows again for a dot product.
    assert scans.count(True) == 1
    with pytest.raises(EmbeddingError, match="row 0 lands"):
        offset_rows(UnitRows(x), [None, ref.unit(x[:1])[0]], whys=["", "lands"])


@pytest.mark.parametrize("threads", [1, 3])
def test_passes_of_both_modalities_as_one_list_of_blocks_give_each_ones_numbers(threads):
    # offset_modality_passes_of_each: x's 60 rows and y's 45 (two shapes of buffers), their
    # blocks of 16 query rows made as one list, in lanes (3 threads) or pipelined (1): every
    # number of a call a modality.
    from gapscope.engine.offset_passes import ModalityToPass, offset_modality_passes_of_each

    x, _, labels = _data(n=60, seed=12)
    y, _, labels_y = _data(n=45, seed=13)
    base_x, base_y = UnitRows(x), UnitRows(y)
    pairs = _offsets(x, y)
    views_x = [OffsetRows(base_x, p) for p, _ in pairs]
    views_y = [OffsetRows(base_y, q) for _, q in pairs]
    alone_x = offset_modality_passes(base_x, views_x, labels, k=KS, block_size=16)
    held = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        together = offset_modality_passes_of_each(
            [
                ModalityToPass(base_x, views_x, labels),
                ModalityToPass(base_y, views_y, labels_y, np.arange(0, 45, 2)),
            ],
            k=KS,
            block_size=16,
        )
        sampled_y = offset_modality_passes(
            base_y, views_y, labels_y, k=KS, block_size=16, query_index=np.arange(0, 45, 2)
        )
    finally:
        torch.set_num_threads(held)
    for got, want in zip(together, [alone_x, sampled_y], strict=True):
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a.uniformity_row_terms, b.uniformity_row_terms)
            np.testing.assert_array_equal(a.retrieval.first_rank, b.retrieval.first_rank)
            np.testing.assert_array_equal(
                a.retrieval.average_precision, b.retrieval.average_precision
            )


def test_both_modalities_in_one_scan_give_the_values_of_a_scan_each():
    # offset_rows_of_each: chunks of 16 and of 7 rows, a different number of vectors a
    # modality (y's offsets without the shared None), the same factors and dot products as
    # offset_rows one modality at a time, and a row sent to the origin named in its request.
    from gapscope.engine.offset_passes import RowsToMove, offset_rows, offset_rows_of_each

    x, y, _ = _data(n=60, seed=11)
    pairs = _offsets(x, y)
    px, py = [p for p, _ in pairs], [q for _, q in pairs][1:]
    base_x = UnitRows(x, in_memory=False, chunk_rows=16)
    base_y = UnitRows(y, in_memory=False, chunk_rows=7)
    joint = offset_rows_of_each(
        [RowsToMove(base_x, px, "x", None, py), RowsToMove(base_y, py, "y", None, px)]
    )
    alone = [offset_rows(base_x, px, dots_with=py), offset_rows(base_y, py, dots_with=px)]
    for together, own in zip(joint, alone, strict=True):
        assert len(together) == len(own)
        for a, b in zip(together, own, strict=True):
            assert torch.equal(a.factors, b.factors)
        assert together[0].dots.known.keys() == own[0].dots.known.keys()
        for key, values in own[0].dots.known.items():
            np.testing.assert_array_equal(together[0].dots.known[key], values)
    lands = ref.unit(y[5:6])[0]
    with pytest.raises(EmbeddingError, match="y: row 5 lands"):
        offset_rows_of_each(
            [RowsToMove(base_x, px, "x"), RowsToMove(base_y, [None, lands], "y", ["", "lands"])]
        )


def test_versions_are_checked():
    x, y, _ = _data(n=30)
    base = UnitRows(x)
    with pytest.raises(GapscopeError, match="other unit rows"):
        offset_modality_passes(base, [OffsetRows(UnitRows(x), None)], k=KS)
    with pytest.raises(GapscopeError, match="finite"):
        OffsetRows(base, np.full(x.shape[1], np.nan))
    with pytest.raises(GapscopeError, match="float32"):
        OffsetRows(UnitRows(x, dtype=torch.bfloat16), None)
    with pytest.raises(EmbeddingError, match="same embedding space"):
        offset_cross_passes(base, UnitRows(y[:, :5]), [])
    # A row sent to the origin: raised at once, or kept for check().
    row = ref.unit(x[:1])[0]
    kept = OffsetRows(base, row, name="image", why="lands", check=False)
    with pytest.raises(EmbeddingError, match="image: row 0 lands"):
        kept.check()


@pytest.mark.parametrize("make", [_data, _ties], ids=["gaussian", "ties"])
@pytest.mark.parametrize("relevance", ["pairs", None, "labels"])
def test_sampled_queries_meet_streamed_keys_a_chunk_at_a_time(monkeypatch, make, relevance):
    # Keys normalised on the fly and sampled queries: every version's kernel is summed over
    # chunks of 16 keys, and its ranks counted down the same chunks when the relevant rows
    # are few (groups of two; one read of the keys a pass), else ranked by blocks (labels).
    # The exact ranks of rows held in memory; uniformity to float32 rounding, the same bits
    # whatever the relevance, and a version without offset gives modality_pass's sampled
    # kernel bit for bit.
    from gapscope.engine import passes

    monkeypatch.setattr(passes, "key_chunk_columns", lambda n_queries: 16)
    x, y, labels = make()
    n = x.shape[0]
    groups = {"pairs": np.arange(n) // 2, None: None, "labels": labels}[relevance]
    streamed_x = UnitRows(x, in_memory=False, chunk_rows=17)
    streamed_y = UnitRows(y, in_memory=False, chunk_rows=17)
    # Reads of a chunk of keys (gathers of single rows for exact scores aside).
    reads = {"x": 0, "y": 0}
    for name, unit in (("x", streamed_x), ("y", streamed_y)):
        block = unit.block

        def counted(start, stop, name=name, block=block):
            reads[name] += start % 16 == 0 and stop == min(n, start + 16)
            return block(start, stop)

        monkeypatch.setattr(unit, "block", counted)
    pairs = _offsets(x, y)
    versions = [(OffsetRows(streamed_x, p), OffsetRows(streamed_y, q)) for p, q in pairs]
    qx, qy = np.arange(1, n, 3), np.arange(0, n, 4)
    own = offset_modality_passes(streamed_x, [v[0] for v in versions], groups, k=KS, query_index=qx)
    if relevance != "labels":
        assert reads["x"] == -(-n // 16)  # one read of x's keys for every version
    reads["x"] = -(-n // 16)
    cross = offset_cross_passes(
        streamed_x, streamed_y, versions, k=KS, query_index_x=qx, query_index_y=qy
    )
    assert reads == {"x": 2 * -(-n // 16), "y": -(-n // 16)}
    for (p, q), result, (x_to_y, y_to_x) in zip(pairs, own, cross, strict=True):
        held = modality_pass(UnitRows(x, offset=p), groups, k=KS, query_index=qx)
        if groups is not None:
            _same_retrieval(result.retrieval, held.retrieval)
        assert result.uniformity == pytest.approx(held.uniformity, rel=1e-6)
        np.testing.assert_allclose(result.uniformity_row_terms, held.uniformity_row_terms, 1e-6)
        both = cross_pass(
            UnitRows(x, offset=p), UnitRows(y, offset=q), k=KS, query_index_x=qx, query_index_y=qy
        )
        _same_retrieval(x_to_y, both[0])
        _same_retrieval(y_to_x, both[1])
    alone = modality_pass(UnitRows(x, in_memory=False), groups, k=KS, query_index=qx)
    assert own[0].uniformity == alone.uniformity
    assert own[0].uniformity_row_terms.tobytes() == alone.uniformity_row_terms.tobytes()
    kernels_only = offset_modality_passes(streamed_x, [v[0] for v in versions], query_index=qx)
    for a, b in zip(own, kernels_only, strict=True):
        assert a.uniformity_row_terms.tobytes() == b.uniformity_row_terms.tobytes()


@pytest.mark.parametrize("t", [2.0, 100.0])
def test_sweeps_in_lanes_give_the_bits_of_one_thread(monkeypatch, t):
    # One process with several threads sweeps the chunks of streamed keys in lanes: chunks
    # multiplied, turned into the versions' scores and counted side by side and out of
    # order, the kernel's chunk sums still added in chunk order (at t = 100 in the log
    # domain, where their order moves the last bits). Every bit as on one thread: the
    # what-ifs' sweeps, the sampled kernel with its ranks counted down the chunks (more
    # queries than a block), and the sampled cross kernel.
    from gapscope.engine import passes

    monkeypatch.setattr(passes, "key_chunk_columns", lambda n_queries: 16)
    x, y, labels = _ties(n=150, seed=5)
    streamed_x = UnitRows(x, in_memory=False, chunk_rows=17)
    streamed_y = UnitRows(y, in_memory=False, chunk_rows=17)
    pairs = _offsets(x, y)
    versions = [(OffsetRows(streamed_x, p), OffsetRows(streamed_y, q)) for p, q in pairs]
    query = np.arange(1, 150, 3)

    def run():
        own = offset_modality_passes(
            streamed_x, [v[0] for v in versions], labels, k=KS, t=t, query_index=query
        )
        cross = offset_cross_passes(streamed_x, streamed_y, versions, k=KS, query_index_x=query)
        sampled = modality_pass(streamed_x, labels, k=KS, t=t, block_size=16, query_index=query)
        kernel = cross_pair_pass(
            x, y, k=KS, query_index_x=query, query_index_y=query, kernel_t=t
        ).kernel
        assert kernel is not None
        return (
            [(r.uniformity_row_terms.tobytes(), r.retrieval.first_rank.tobytes()) for r in own]
            + [(a.first_rank.tobytes(), b.first_rank.tobytes()) for a, b in cross]
            + [(sampled.uniformity_row_terms.tobytes(), sampled.retrieval.first_rank.tobytes())]
            + [(kernel.log_mean, kernel.se)]
        )

    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = run()
        torch.set_num_threads(3)
        lanes = run()
    finally:
        torch.set_num_threads(previous)
    assert lanes == alone
