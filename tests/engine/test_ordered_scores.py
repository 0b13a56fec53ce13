"""Scores that order as the exact scores do (:func:`~gapscope.engine.ordered_scores.
ordered_scores`), against :func:`~gapscope.engine.unit_rows.exact_scores` of the same pairs.

The reference is the exact scores themselves: within each query, every two values must
compare (``<``, ``==``, ``>``) as the exact scores do. Rows that tie exactly, rows whose
coordinates are permutations of each other (the same real score summed in another order,
so float64 sums can differ in the last bit), rows one float32 step apart and repeated pairs
are where a float64 product and the exact sums could disagree.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from gapscope import EmbeddingSet, analyze
from gapscope.engine import ordered_scores as ordered
from gapscope.engine.offset_passes import OffsetRows
from gapscope.engine.unit_rows import UnitRows, exact_scores


def _force_products(monkeypatch: pytest.MonkeyPatch, tile_keys: int, tile_entries: int) -> None:
    """Every pair of every tile scored by the float64 products."""
    monkeypatch.setattr(ordered, "DENSE_MIN_PAIRS", 0)
    monkeypatch.setattr(ordered, "DENSE_SHARE", 0.0)
    monkeypatch.setattr(ordered, "TILE_KEYS", tile_keys)
    monkeypatch.setattr(ordered, "TILE_ENTRIES", tile_entries)


def _tie_heavy_rows(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n // 4, d)).astype(np.float32)
    permuted = base[:, rng.permutation(d)]
    # One float32 step apart in one coordinate: scores a few 1e-8 apart at most.
    nudged = base.copy()
    nudged[:, 0] = np.nextafter(nudged[:, 0], np.float32(np.inf))
    signs = rng.choice([-1.0, 1.0], size=(n - 3 * (n // 4), d)).astype(np.float32)
    return np.concatenate([base, permuted, nudged, signs])


def _assert_compare_as_exact(values: np.ndarray, exact: np.ndarray, queries: np.ndarray) -> None:
    """Within each query, ``values`` is ordered and tied exactly where ``exact`` is."""
    order = np.lexsort((exact, queries))
    same_query = queries[order[1:]] == queries[order[:-1]]
    step_exact = np.sign(np.diff(exact[order]))[same_query]
    step_values = np.sign(np.diff(values[order]))[same_query]
    np.testing.assert_array_equal(step_values, step_exact)


@pytest.mark.parametrize(("tile_keys", "tile_entries"), [(8192, 1 << 22), (7, 20), (64, 1)])
@pytest.mark.parametrize("seed", [0, 1])
def test_values_compare_within_a_query_as_the_exact_scores(
    monkeypatch, tile_keys, tile_entries, seed
):
    # Tiles of every shape: one tile, tiles of a few rows and keys, tiles of one query row.
    _force_products(monkeypatch, tile_keys, tile_entries)
    rng = np.random.default_rng(seed)
    unit = UnitRows(_tie_heavy_rows(80, 32, seed))
    queries = rng.integers(0, 80, size=6000)
    keys = rng.integers(0, 80, size=6000)
    # Whole queries against every key, so each query has many ties to tell apart.
    queries = np.concatenate([queries, np.repeat([0, 20, 40, 79], 80)])
    keys = np.concatenate([keys, np.tile(np.arange(80), 4)])
    rescored: list[int] = []

    def spy(a, rows_a, b, rows_b):  # type: ignore[no-untyped-def]
        rescored.append(rows_a.size)
        return exact_scores(a, rows_a, b, rows_b)

    monkeypatch.setattr(ordered, "exact_scores", spy)
    values = ordered.ordered_scores(unit, queries, unit, keys)
    exact = exact_scores(unit, queries, unit, keys)
    _assert_compare_as_exact(values, exact, queries)
    assert np.abs(values - exact).max() <= 1e-12
    # The ties and near-ties were there to resolve, and only they were scored exactly.
    distinct_pairs = np.unique((queries << 32) | keys).size
    assert 0 < sum(rescored) < distinct_pairs


def test_pairs_that_repeat_get_one_value(monkeypatch):
    _force_products(monkeypatch, 8192, 1 << 22)
    unit = UnitRows(_tie_heavy_rows(40, 16, 3))
    queries = np.repeat(np.arange(40), 40)
    keys = np.tile(np.arange(40), 40)
    twice_q, twice_k = np.concatenate([queries, queries]), np.concatenate([keys, keys])
    values = ordered.ordered_scores(unit, twice_q, unit, twice_k)
    np.testing.assert_array_equal(values[: queries.size], values[queries.size :])
    _assert_compare_as_exact(values, exact_scores(unit, twice_q, unit, twice_k), twice_q)


@pytest.mark.parametrize("products", [True, False])
def test_rows_that_repeat_are_scored_once_by_their_contents(monkeypatch, products):
    # 12 distinct rows repeated over 300: whatever the pairs, at most 144 exact scores.
    if products:
        _force_products(monkeypatch, 8192, 1 << 22)
    rng = np.random.default_rng(8)
    distinct = rng.normal(size=(12, 32)).astype(np.float32)
    unit = UnitRows(distinct[rng.integers(0, 12, size=300)])
    queries, keys = rng.integers(0, 300, size=20000), rng.integers(0, 300, size=20000)
    scored: list[np.ndarray] = []

    def spy(a, rows_a, b, rows_b):  # type: ignore[no-untyped-def]
        scored.append((rows_a << 32) | rows_b)
        return exact_scores(a, rows_a, b, rows_b)

    monkeypatch.setattr(ordered, "exact_scores", spy)
    values = ordered.ordered_scores(unit, queries, unit, keys)
    assert sum(p.size for p in scored) <= 144
    exact = exact_scores(unit, queries, unit, keys)
    if products:
        _assert_compare_as_exact(values, exact, queries)
    else:
        np.testing.assert_array_equal(values, exact)


def test_sparse_pairs_are_the_exact_scores_bit_for_bit():
    # A handful of pairs among many rows: no product pays, every value is exact.
    rng = np.random.default_rng(4)
    unit = UnitRows(rng.normal(size=(3000, 24)).astype(np.float32))
    queries, keys = rng.integers(0, 3000, size=5000), rng.integers(0, 3000, size=5000)
    np.testing.assert_array_equal(
        ordered.ordered_scores(unit, queries, unit, keys),
        exact_scores(unit, queries, unit, keys),
    )


def test_moved_rows_compare_as_their_exact_scores(monkeypatch):
    # The what-ifs' rows (moved by an offset and re-normalised) as both sides.
    _force_products(monkeypatch, 16, 256)
    base = UnitRows(_tie_heavy_rows(60, 24, 5))
    moved = OffsetRows(base, np.full(24, 0.1))
    rng = np.random.default_rng(6)
    queries, keys = rng.integers(0, 60, size=5000), rng.integers(0, 60, size=5000)
    values = ordered.ordered_scores(moved, queries, moved, keys)
    exact = exact_scores(moved, queries, moved, keys)
    _assert_compare_as_exact(values, exact, queries)
    assert np.abs(values - exact).max() <= 1e-12


def _dense_scores_set(n: int, d: int, seed: int) -> EmbeddingSet:
    """All cosines of a modality near one value and labels that do not follow the rows:
    windows hold many keys, in the dense middle of the scores."""
    rng = np.random.default_rng(seed)
    content = rng.normal(size=(n, d))
    image = content + 2.0 * rng.normal(size=d) + 0.8 * rng.normal(size=(n, d))
    text = content - 2.0 * rng.normal(size=d) + 0.8 * rng.normal(size=(n, d))
    # A few repeated rows, so windows share keys and the exact ties are resolved too.
    image[-20:] = image[:20]
    return EmbeddingSet.from_arrays(
        {"image": image.astype(np.float32), "text": text.astype(np.float32)},
        labels=rng.integers(0, 5, size=n),
    )


def test_an_analysis_is_byte_identical_with_and_without_the_products(monkeypatch):
    data = _dense_scores_set(300, 16, 7)
    reports = []
    for share in (float("inf"), 0.0):
        # inf: every pair scored exactly, as before; 0: every batch through the products.
        monkeypatch.setattr(ordered, "DENSE_SHARE", share)
        monkeypatch.setattr(ordered, "DENSE_MIN_PAIRS", 0)
        report = analyze(data, device="cpu", metrics="retrieval,whatif").to_dict()
        reports.append(json.dumps(report, sort_keys=True))
    assert reports[0] == reports[1]
