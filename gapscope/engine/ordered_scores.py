"""Scores of pairs of rows that order as the exact scores do, from one float64 product where
the pairs are dense.

The ranking compares the keys inside a window with the window's item by exact score
(:func:`~gapscope.engine.unit_rows.exact_scores`: each pair's float64 products summed by
numpy along its row). Gathering two rows a pair costs microseconds at d = 512; when the
rows' scores sit close together (all cosines of a modality near one value) and the relevant
rows lie in the middle of them, a window holds tens of keys and the pairs number about
``n^3 / classes``. Those pairs are then dense among their query and key rows: a float64
product of the distinct query rows and the distinct key rows gives every pair's score for
about 1/100 of a gather's cost an entry.

That product sums in another order, so its score ``G`` can differ from the exact score ``E``
in the last bits; both lie within ``gamma_d sum |a_i b_i|`` of the real dot product
(``gamma_d = d u / (1 - d u)``, ``u = 2^-53``: Higham, *Accuracy and Stability of Numerical
Algorithms*, 2002, eq. 3.5; the float32 or bfloat16 entries multiply exactly in float64), so
``|G - E| <= delta = 2 gamma_d ||a|| ||b||``. Sort a query's values by ``G``: two of them
more than ``tau = 2 delta`` apart in ``G`` are in the same order by ``E``, and neither ties.
Every value with a neighbour within ``tau`` (a run of close values: true ties, rows that
repeat, scores closer than about ``1e-13``) takes its exact score, the others keep ``G``.
Any two values of a query then compare (``<``, ``==``, ``>``) as their exact scores do:
within a run both are exact; across runs the ``G`` values are more than ``tau`` apart, so
the values are more than ``tau - 2 delta >= 0`` apart in the same direction. The ranks are
those of the exact scores, bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch

from gapscope.engine.unit_rows import RowSource, exact_scores

__all__ = ["DENSE_SHARE", "ordered_scores"]

#: A tile of query rows and key rows is multiplied whole when its pairs are at least this
#: share of its entries: an entry of the float64 product costs 1/80 to 1/160 of a pair
#: gathered and scored exactly (``python benchmarks/bench_dense_scores.py --compare``
#: prints both, and the whole analysis either way; docs/performance.md has the figures).
DENSE_SHARE = 1.0 / 64.0
#: Pairs below this many are scored exactly, pair by pair (the product's set-up dominates).
DENSE_MIN_PAIRS = 4096
#: Distinct pairs scored at once (whole queries; a query with more is scored alone): about
#: 100 MiB of work arrays.
CHUNK_PAIRS = 1 << 20
#: Key rows of a tile (float64, 32 MiB at d = 512) and the entries of a tile's product
#: (32 MiB of float64).
TILE_KEYS = 8192
TILE_ENTRIES = 1 << 22

_FLOAT64_UNIT_ROUNDOFF = 2.0**-53


def ordered_scores(
    a: RowSource, rows_a: np.ndarray, b: RowSource, rows_b: np.ndarray
) -> np.ndarray:
    """Float64 scores of the pairs ``(a[rows_a[p]], b[rows_b[p]])`` that compare within each
    query (the pairs with the same ``rows_a``) exactly as
    :func:`~gapscope.engine.unit_rows.exact_scores` of the same pairs do: the same order
    and the same ties (module notes). Each value is the exact score or within about
    ``1e-13`` of it; pairs of different queries are not comparable.

    Pairs that repeat, or whose rows repeat another's, are scored once. Where the pairs are
    dense among the distinct rows they name (:data:`DENSE_SHARE`), their scores come from
    float64 products of those rows, tile by tile, and only values closer than ``tau`` to
    another of their query are scored exactly; elsewhere every pair is scored exactly.
    """
    # Rows that repeat (duplicated items, rows that tie) have the bits, and so the scores,
    # of their first occurrence; and a key sits in many windows of a query whose items
    # score alike. Each distinct pair of rows' contents is scored once.
    rows_a = a.first_rows(np.asarray(rows_a, dtype=np.int64))
    rows_b = b.first_rows(np.asarray(rows_b, dtype=np.int64))
    if rows_a.size < 2:
        return exact_scores(a, rows_a, b, rows_b)
    distinct, inverse = np.unique((rows_a << 32) | rows_b, return_inverse=True)
    queries, keys = distinct >> 32, distinct & 0xFFFFFFFF
    values = np.empty(distinct.size, dtype=np.float64)
    # Values need only compare within a query, so a run of whole queries at a time keeps the
    # work arrays small whatever the batch.
    start = 0
    while start < distinct.size:
        stop = min(distinct.size, start + CHUNK_PAIRS)
        if stop < distinct.size:
            cut = int(np.searchsorted(queries, queries[stop], side="left"))
            stop = cut if cut > start else int(np.searchsorted(queries, queries[stop], "right"))
        values[start:stop] = _query_run_scores(a, queries[start:stop], b, keys[start:stop])
        start = stop
    return values[inverse.reshape(-1)]


def _query_run_scores(
    a: RowSource, rows_a: np.ndarray, b: RowSource, rows_b: np.ndarray
) -> np.ndarray:
    """:func:`ordered_scores` of distinct pairs, ascending by ``rows_a``, every pair of each
    query among them."""
    if rows_a.size < DENSE_MIN_PAIRS:
        return exact_scores(a, rows_a, b, rows_b)
    # The distinct rows of each side and each pair's place among them, without a sort:
    # rows_a ascends, and rows_b are row numbers below the rows' count.
    starts = np.flatnonzero(np.diff(rows_a, prepend=-1))
    queries = rows_a[starts]
    q_at = np.repeat(np.arange(starts.size), np.diff(starts, append=rows_a.size))
    held = np.zeros(int(rows_b.max()) + 1, dtype=np.int64)
    held[rows_b] = 1
    keys = np.flatnonzero(held)
    k_at = (np.cumsum(held) - 1)[rows_b]
    if rows_a.size < DENSE_SHARE * queries.size * keys.size:
        return exact_scores(a, rows_a, b, rows_b)
    values = np.empty(rows_a.size, dtype=np.float64)
    delta = _products(a, queries, q_at, b, keys, k_at, values)
    del q_at, k_at
    # A value within tau of a neighbour of its query (sorted by value) takes its exact score.
    order = np.lexsort((values, rows_a))
    ordered = values[order]
    # tau = 2 delta, and as much again for the rounding of the differences themselves.
    tau = 4.0 * delta
    close = (rows_a[order[1:]] == rows_a[order[:-1]]) & (ordered[1:] - ordered[:-1] <= tau)
    del ordered
    unsure = np.zeros(rows_a.size, dtype=bool)
    unsure[order[1:][close]] = True
    unsure[order[:-1][close]] = True
    if unsure.any():
        values[unsure] = exact_scores(a, rows_a[unsure], b, rows_b[unsure])
    return values


def _products(
    a: RowSource,
    queries: np.ndarray,
    q_at: np.ndarray,
    b: RowSource,
    keys: np.ndarray,
    k_at: np.ndarray,
    out: np.ndarray,
) -> float:
    """Each pair's score into ``out``: pair ``p`` is ``queries[q_at[p]]`` against
    ``keys[k_at[p]]``. Tiles of at most :data:`TILE_KEYS` keys and :data:`TILE_ENTRIES`
    entries; a tile that holds fewer pairs than :data:`DENSE_SHARE` of its entries scores
    them exactly instead. Returns ``delta``, the bound on ``|G - E|`` (module notes), for
    the rows the products took (an exact score is within it too)."""
    d = a.shape[1]
    du = d * _FLOAT64_UNIT_ROUNDOFF
    gamma = 1.01 * du / (1.0 - du)
    key_rows = min(keys.size, TILE_KEYS)
    query_rows = max(1, min(queries.size, TILE_ENTRIES // key_rows))
    n_q = -(-queries.size // query_rows)
    n_tiles = n_q * -(-keys.size // key_rows)
    if n_tiles == 1:
        by_tile, bounds = np.arange(q_at.size), np.array([0, q_at.size])
    else:
        tile = (k_at // key_rows) * n_q + q_at // query_rows
        by_tile = np.argsort(tile, kind="stable")
        bounds = np.searchsorted(tile[by_tile], np.arange(n_tiles + 1))
    norm_a = norm_b = 1.0
    for k0 in range(0, keys.size, key_rows):
        k1 = min(keys.size, k0 + key_rows)
        key_block: torch.Tensor | None = None
        for q0 in range(0, queries.size, query_rows):
            q1 = min(queries.size, q0 + query_rows)
            t = (k0 // key_rows) * n_q + q0 // query_rows
            pairs = by_tile[bounds[t] : bounds[t + 1]]
            if not pairs.size:
                continue
            if pairs.size < DENSE_SHARE * (q1 - q0) * (k1 - k0):
                out[pairs] = exact_scores(a, queries[q_at[pairs]], b, keys[k_at[pairs]])
                continue
            if key_block is None:
                key_block = b.take(keys[k0:k1]).double()
                norm_b = max(norm_b, float(torch.linalg.vector_norm(key_block, dim=1).max()))
            query_block = a.take(queries[q0:q1]).double()
            norm_a = max(norm_a, float(torch.linalg.vector_norm(query_block, dim=1).max()))
            product = query_block @ key_block.T
            at = (
                torch.from_numpy(q_at[pairs] - q0).to(product.device),
                torch.from_numpy(k_at[pairs] - k0).to(product.device),
            )
            out[pairs] = product[at].cpu().numpy()
    # The norms are those of the rows multiplied (float64 sums of exact squares, well
    # within 1% of the truth); 1% more again covers them.
    return 2.0 * gamma * 1.01 * norm_a * norm_b
