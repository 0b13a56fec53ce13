"""The exact modality pass from the tiles on and above the diagonal of ``X X^T``, against the
blocks of whole rows and full-matrix oracles.

Tiles of 1 to 64 rows put every kind of tile in a small problem: diagonal tiles, tiles read
down their columns, a last tile shorter than the others. The ranks must equal the blocks'
bit for bit (both are exact) and the ranks of the exact scores; the uniformity row terms
must equal the float64 oracle to float32 rounding and keep their bits whatever the block
size or thread count.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import reference as ref
import torch

from gapscope.engine import passes, self_tiles, window_ranks
from gapscope.engine.passes import modality_pass
from gapscope.engine.unit_rows import UnitRows, exact_scores

KS = (1, 3, 10)


def _gaussian(n: int = 150, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 24)).astype(np.float32)


def _ties(n: int = 150, seed: int = 1):
    # Entries +-1 in d = 4: every score a multiple of 0.25, exact ties everywhere.
    rng = np.random.default_rng(seed)
    return rng.choice([-1.0, 1.0], size=(n, 4)).astype(np.float32)


def _near_ties(n: int = 150, seed: int = 2):
    # Small integers, some rows permutations of others: equal cosines a product rounds
    # differently in tiles of different shapes.
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, size=(n, 8)).astype(np.float32)
    x[np.abs(x).sum(axis=1) == 0, 0] = 1.0
    x[1::5] = x[0::5][:, rng.permutation(8)][: x[1::5].shape[0]]
    return x


def _duplicates(n: int = 150, seed: int = 3):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n // 2, 16)).astype(np.float32)
    return np.concatenate([base, 2.0 * base])  # 2x normalises to the same unit row


DATA = {"gaussian": _gaussian, "ties": _ties, "near-ties": _near_ties, "duplicates": _duplicates}


def _codes(kind: str, n: int, seed: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "labels":  # ~20 relevant rows a query: counted by sorting tile rows
        return rng.integers(0, 6, size=n)
    if kind == "groups":  # 1 to 3 relevant rows: counted by comparisons
        return np.arange(n) // 3
    return rng.integers(0, n // 2, size=n)  # ragged: groups of 1 (no relevant row) to several


def _exact_first_ranks_and_ap(x: np.ndarray, codes: np.ndarray):
    """Ranks of every relevant row by exact scores, ties to the lower index (the oracle)."""
    n = x.shape[0]
    unit = UnitRows(x)
    rows, keys = np.divmod(np.arange(n * n), n)
    s = exact_scores(unit, rows, unit, keys).reshape(n, n)
    first, ap = [], []
    for q in range(n):
        others = np.flatnonzero(np.arange(n) != q)
        relevant = others[codes[others] == codes[q]]
        if not relevant.size:
            continue
        order = others[np.lexsort((others, -s[q, others]))]
        position = np.flatnonzero(np.isin(order, relevant))
        first.append(int(position[0]))
        ap.append(float(np.mean(np.arange(1, position.size + 1) / (position + 1))))
    return first, ap


@pytest.mark.parametrize("tile", [1, 3, 7, 64])
@pytest.mark.parametrize("data", list(DATA))
@pytest.mark.parametrize("relevance", ["labels", "groups", "ragged"])
def test_tiles_ranked_as_blocks_and_oracle(monkeypatch, tile, data, relevance):
    # Tiles of one row: a few dozen rows already make a thousand tiles.
    x = DATA[data](40 if tile == 1 else 150)
    codes = _codes(relevance, x.shape[0])
    monkeypatch.setattr(self_tiles, "_TILE_ROWS", tile)
    tiles = modality_pass(x, codes, k=KS)
    # No window slot to spare: the ranks come from blocks of whole rows instead.
    monkeypatch.setattr(passes, "TILE_SLOTS_MAX", 0)
    blocks = modality_pass(x, codes, k=KS, block_size=5)
    a, b = tiles.retrieval, blocks.retrieval
    np.testing.assert_array_equal(a.query_rows, b.query_rows)
    np.testing.assert_array_equal(a.first_rank, b.first_rank)
    assert a.average_precision.tobytes() == b.average_precision.tobytes()
    assert a.r_precision_per_query.tobytes() == b.r_precision_per_query.tobytes()
    # The kernel comes from the tiles either way.
    assert tiles.uniformity_row_terms.tobytes() == blocks.uniformity_row_terms.tobytes()
    first, ap = _exact_first_ranks_and_ap(x, codes)
    assert a.first_rank.tolist() == first
    np.testing.assert_allclose(a.average_precision, ap, rtol=1e-12)


@pytest.mark.parametrize("tile", [1, 4, 16, 2048])
@pytest.mark.parametrize("t", [2.0, 1.5, 30.0, 32.0])
def test_tile_kernel_matches_the_full_matrix(monkeypatch, tile, t):
    # t = 2 and 32: rows prescaled by 2t (a power of two); 1.5 and 30 not. 30 and 32 sum in
    # the log domain (4t > 80).
    x = _gaussian(97, seed=5)
    monkeypatch.setattr(self_tiles, "_TILE_ROWS", tile)
    r = modality_pass(x, None, t=t)
    np.testing.assert_allclose(r.uniformity_row_terms, _ref_terms(x, t), atol=1e-5, rtol=1e-6)
    assert r.uniformity == pytest.approx(ref.uniformity(x, t=t), abs=1e-5)


def _ref_terms(x: np.ndarray, t: float) -> np.ndarray:
    u = ref.unit(x)
    log_k = -t * np.clip(2.0 - 2.0 * (u @ u.T), 0.0, None)
    np.fill_diagonal(log_k, -np.inf)
    top = log_k.max(axis=1, keepdims=True)
    return (top[:, 0] + np.log(np.exp(log_k - top).sum(axis=1))) - math.log(len(x) - 1)


def test_tile_kernel_keeps_its_bits_whatever_the_blocks_and_threads(monkeypatch):
    x = _gaussian(300, seed=6)
    codes = _codes("labels", 300)
    monkeypatch.setattr(self_tiles, "_TILE_ROWS", 64)
    previous = torch.get_num_threads()
    runs = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            for block in (None, 7, 100):
                for relevance in (None, codes):
                    r = modality_pass(x, relevance, k=KS, block_size=block)
                    runs.append((r.uniformity, r.uniformity_row_terms.tobytes()))
    finally:
        torch.set_num_threads(previous)
    assert all(run == runs[0] for run in runs[1:])


def test_each_pair_of_rows_is_multiplied_once(monkeypatch):
    # The tiles on and above the diagonal: n (n + tile) / 2 scores for whole tiles, not n^2.
    n, tile = 100, 16
    monkeypatch.setattr(self_tiles, "_TILE_ROWS", tile)
    made = []
    real = self_tiles.matmul_into

    def counting(queries, keys, out):
        made.append(queries.shape[0] * keys.shape[0])
        return real(queries, keys, out)

    monkeypatch.setattr(self_tiles, "matmul_into", counting)
    r = modality_pass(_gaussian(n, seed=7), _codes("groups", n), k=KS)
    sizes = [min(tile, n - s) for s in range(0, n, tile)]
    expected = sum(a * b for i, a in enumerate(sizes) for b in sizes[i:])
    assert sum(made) == expected and expected < n * (n + tile) / 2 + 1
    assert r.retrieval is not None


def test_retrieval_alone_skips_tiles_without_queries(monkeypatch):
    # Only retrieval: a tile whose two sides hold no row with a relevant row is not made.
    n, tile = 96, 16
    codes = np.arange(n)  # every row alone ...
    codes[:4] = 0  # ... but four in the first tile
    monkeypatch.setattr(self_tiles, "_TILE_ROWS", tile)
    made = []
    real = self_tiles.matmul_into

    def counting(queries, keys, out):
        made.append(out.shape)
        return real(queries, keys, out)

    monkeypatch.setattr(self_tiles, "matmul_into", counting)
    r = modality_pass(_gaussian(n, seed=8), codes, k=KS, uniformity=False)
    assert len(made) == n // tile  # the first row of tiles
    assert r.retrieval.n_queries == 4
    expected = ref.intra_retrieval(_gaussian(n, seed=8), codes, KS)
    assert r.retrieval.recall == {k: expected[f"R@{k}"] for k in KS}


def test_tile_slots_pad_each_tile_to_its_widest_row():
    counts = np.array([5, 0, 1, 1, 0, 0, 2])
    assert self_tiles.tile_slots(counts, 3) == 3 * 5 + 3 * 1 + 1 * 2
    assert self_tiles.tile_slots(np.zeros(4, np.int64), 2) == 0


@pytest.mark.parametrize("data", ["ties", "near-ties"])
def test_the_device_sums_and_counts_give_the_same_ranks(monkeypatch, data):
    # On a GPU the tiles are summed and counted by torch on the device (run here on CPU
    # tensors): the same ranks bit for bit, the kernel (float64 sums there) to float32
    # rounding.
    x = DATA[data](150)
    codes = _codes("labels", 150)
    groups = _codes("groups", 150)
    monkeypatch.setattr(self_tiles, "_TILE_ROWS", 16)
    host = [modality_pass(x, c, k=KS) for c in (codes, groups)]
    monkeypatch.setattr(window_ranks, "HOST_SUMS", set())
    device = [modality_pass(x, c, k=KS) for c in (codes, groups)]
    for a, b in zip(host, device, strict=True):
        np.testing.assert_array_equal(a.retrieval.first_rank, b.retrieval.first_rank)
        assert a.retrieval.average_precision.tobytes() == b.retrieval.average_precision.tobytes()
        np.testing.assert_allclose(a.uniformity_row_terms, b.uniformity_row_terms, rtol=1e-6)


@pytest.mark.parametrize("t", [2.0**-140, 2.0**-20, 2.0**70])
def test_rows_are_prescaled_only_where_the_scores_keep_their_precision(monkeypatch, t):
    # 2t a power of two far below 1 would scale the rows out of the normal float32 range (the
    # scores would lose the precision the windows count on); far above, overflow.
    x = _gaussian(60, seed=9)
    codes = _codes("groups", 60)
    monkeypatch.setattr(self_tiles, "_TILE_ROWS", 16)
    r = modality_pass(x, codes, k=KS, t=t)
    first, ap = _exact_first_ranks_and_ap(x, codes)
    assert r.retrieval.first_rank.tolist() == first
    np.testing.assert_allclose(r.retrieval.average_precision, ap, rtol=1e-12)
    assert np.isfinite(r.uniformity_row_terms).all()


def test_keys_inside_windows_are_resolved_a_few_at_a_time(monkeypatch):
    # Rows that tie with many others put most keys inside most windows: they are compared by
    # exact score in batches of NEAR_ENTRIES entries, with the ranks the blocks give.
    x = _ties(150)
    codes = _codes("labels", 150)
    monkeypatch.setattr(self_tiles, "_TILE_ROWS", 16)
    monkeypatch.setattr(window_ranks, "NEAR_ENTRIES", 5)
    tiles = modality_pass(x, codes, k=KS, uniformity=False)
    _ranked_as_blocks_and_oracle(monkeypatch, tiles, x, codes)


@pytest.mark.parametrize("seed", range(6))
def test_outranking_in_groups_matches_comparing_every_pair(seed):
    # Scores from a few values (ties everywhere, -0.0 among them), keys and items distinct.
    rng = np.random.default_rng(seed)
    entries, wanted = int(rng.integers(1, 400)), int(rng.integers(1, 60))
    pool = np.array([-1.0, -0.25, -0.0, 0.0, 0.25, 0.5, 1.0])
    labels = rng.permutation(1000)
    keys, items = labels[:entries], labels[entries : entries + wanted]
    groups = rng.integers(0, 7, size=entries) * 1_000_003  # sparse ids
    scores = rng.choice(pool, size=entries)
    # Items of groups with no entry too (5, and one below and one above every group).
    item_groups = rng.choice(np.append(groups, [5, -1, 7_000_021]), size=wanted)
    item_groups[0] = 5
    item_scores = rng.choice(np.append(pool, 0.75), size=wanted)  # a score no key has
    got = window_ranks.outranking_in_groups(groups, scores, keys, item_groups, item_scores, items)
    expected = [
        int(np.count_nonzero((groups == g) & ((scores > s) | ((scores == s) & (keys < i)))))
        for g, s, i in zip(item_groups, item_scores, items, strict=True)
    ]
    assert got.tolist() == expected


def _few_distinct(n: int = 150, seed: int = 5):
    # Ten distinct rows, each repeated (and rescaled) about fifteen times.
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(10, 16)).astype(np.float32)
    return base[rng.integers(0, 10, size=n)] * rng.choice([1.0, 2.0, 0.5], size=(n, 1))


@pytest.mark.parametrize("near_entries", [5, 1 << 22])
@pytest.mark.parametrize("data", ["ties", "few distinct"])
def test_windows_that_hold_the_same_keys_are_resolved_once(monkeypatch, near_entries, data):
    # Rows that tie have equal estimates and so equal windows: the keys inside are listed
    # once a query for all of them, in batches or not, and the ranks stay the blocks'.
    x = _ties(150) if data == "ties" else _few_distinct(150).astype(np.float32)
    codes = _codes("labels", 150)
    monkeypatch.setattr(self_tiles, "_TILE_ROWS", 16)
    monkeypatch.setattr(window_ranks, "NEAR_ENTRIES", near_entries)
    calls = []
    shared = window_ranks._outranking_shared

    def spy(unit, queries, items, rows, windows, keys, members):  # type: ignore[no-untyped-def]
        calls.append((keys.size, members[0].size))
        return shared(unit, queries, items, rows, windows, keys, members)

    monkeypatch.setattr(window_ranks, "_outranking_shared", spy)
    tiles = modality_pass(x, codes, k=KS, uniformity=False)
    assert calls and sum(m for _, m in calls) > len(calls)  # windows did share their keys
    _ranked_as_blocks_and_oracle(monkeypatch, tiles, x, codes)


def test_an_item_of_a_group_without_entries_is_outranked_by_nothing():
    groups, scores, keys = np.array([0, 10]), np.array([0.5, 0.5]), np.array([1, 2])
    got = window_ranks.outranking_in_groups(
        groups, scores, keys, np.array([5, 10, 11, -1]), np.full(4, 0.1), np.full(4, 3)
    )
    assert got.tolist() == [0, 1, 0, 0]
    empty = np.empty(0, dtype=np.int64)
    got = window_ranks.outranking_in_groups(
        empty, np.empty(0), empty, np.array([5]), np.array([0.1]), np.array([3])
    )
    assert got.tolist() == [0]


@pytest.mark.parametrize("pending", ["every tile", "last tile"])
def test_candidates_gathered_over_tiles_of_keys_count_alike(monkeypatch, pending):
    # A tile of rows gathers its candidates over its tiles of keys and counts them together:
    # counted at every tile (the smallest batch) or only when its last tile came in, the
    # ranks are the blocks' and the exact scores'.
    x = _near_ties(150)
    codes = _codes("labels", 150)
    monkeypatch.setattr(self_tiles, "_TILE_ROWS", 16)
    if pending == "every tile":
        monkeypatch.setattr(self_tiles, "PENDING_MIN", 1)
        monkeypatch.setattr(self_tiles, "PENDING_BYTES", 0)
    else:
        monkeypatch.setattr(self_tiles, "PENDING_MIN", 1 << 40)
    batches = []
    counted = self_tiles.candidate_counts

    def spy(queries, *args):  # type: ignore[no-untyped-def]
        batches.append(queries.size)
        return counted(queries, *args)

    monkeypatch.setattr(self_tiles, "candidate_counts", spy)
    tiles = modality_pass(x, codes, k=KS, uniformity=False)
    tile_rows = -(-150 // 16)
    if pending == "last tile":
        assert len(batches) == tile_rows  # one count a tile of rows, all its keys at once
    else:
        assert len(batches) > 4 * tile_rows
    _ranked_as_blocks_and_oracle(monkeypatch, tiles, x, codes)


@pytest.mark.parametrize("relevance", ["labels", "ragged"])
def test_group_estimates_hold_each_rows_items_and_their_scores(relevance):
    # Each row's items are the other rows of its group, ascending, and their estimates the
    # float32 scores of the pairs, within the error bound of the exact ones.
    x = _gaussian(120, seed=10)
    unit = UnitRows(x)
    _, codes = np.unique(_codes(relevance, 120), return_inverse=True)
    estimates = self_tiles._GroupEstimates(unit, codes.astype(np.int32))
    rows = np.arange(120)[::-1]  # any rows, in any order
    sizes = np.bincount(codes)[codes[rows]]
    width = int(sizes.max()) - 1
    items, values = estimates.padded(rows, width)
    for r, row_items, row_values, size in zip(rows, items, values, sizes, strict=True):
        others = np.flatnonzero((codes == codes[r]) & (np.arange(120) != r))
        assert row_items[: size - 1].tolist() == others.tolist()
        exact = exact_scores(unit, np.full(others.size, r), unit, others)
        np.testing.assert_allclose(row_values[: size - 1], exact, rtol=0, atol=1e-5)


def test_each_tiles_windows_are_made_once_and_the_products_then_dropped(monkeypatch):
    x = _gaussian(150, seed=11)
    codes = _codes("labels", 150)
    monkeypatch.setattr(self_tiles, "_TILE_ROWS", 16)
    made = []
    real = self_tiles._GroupEstimates.padded

    def spy(self, rows, width):  # type: ignore[no-untyped-def]
        made.append(int(rows[0]))
        return real(self, rows, width)

    monkeypatch.setattr(self_tiles._GroupEstimates, "padded", spy)
    kept = []
    finish = self_tiles.TileRanks.finish

    def finishing(self, store):  # type: ignore[no-untyped-def]
        kept.append(self._estimates)
        return finish(self, store)

    monkeypatch.setattr(self_tiles.TileRanks, "finish", finishing)
    r = modality_pass(x, codes, k=KS, uniformity=False)
    assert sorted(made) == list(range(0, 150, 16))
    assert kept == [None]
    first, _ = _exact_first_ranks_and_ap(x, codes)
    assert r.retrieval.first_rank.tolist() == first


def _ranked_as_blocks_and_oracle(monkeypatch, tiles, x, codes) -> None:  # type: ignore[no-untyped-def]
    """The tiles' ranks equal the blocks of whole rows' bit for bit, and the exact scores'."""
    monkeypatch.setattr(passes, "TILE_SLOTS_MAX", 0)
    blocks = modality_pass(x, codes, k=KS, uniformity=False)
    np.testing.assert_array_equal(tiles.retrieval.first_rank, blocks.retrieval.first_rank)
    assert (
        tiles.retrieval.average_precision.tobytes() == blocks.retrieval.average_precision.tobytes()
    )
    # Both count with window_ranks: the exact-score oracle is the independent check.
    first, ap = _exact_first_ranks_and_ap(x, codes)
    assert tiles.retrieval.first_rank.tolist() == first
    np.testing.assert_allclose(tiles.retrieval.average_precision, ap, rtol=1e-12)
