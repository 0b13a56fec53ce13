"""Exact, deterministic ranking of keys by score, and the retrieval summary built from ranks.

Keys are ordered by descending score, and a key with an equal score and a lower index ranks
higher. The 0-based rank of key ``j`` for a query is therefore

    rank(j) = #{k : s_k > s_j} + #{k < j : s_k = s_j},

which is what every retrieval metric is computed from; no top-K list is kept. Counts are
integers and sums exactly rounded (``math.fsum``), so the same scores give bit-identical
results. A query's result is kept per query (the 0-based rank of its first relevant key, its
AP and R-precision), so a recall at any K, a bootstrap over queries or a subset of queries is
read from one pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "GroupMembers",
    "RetrievalResult",
    "ranks_of_items",
    "row_ranks",
    "summarize",
]

# Up to this many relevant rows a query's ranks are counted with one pass over its row each;
# beyond it the keys that can outrank a relevant row are sorted (see ranks_of_items).
_COUNT_MAX_ITEMS = 4
# Queries with up to this many positives find their best one in one padded gather per block.
_VECTOR_MAX_POSITIVES = 64
# A row where more than this many relevant items share their score with another key is ranked
# by one stable argsort instead of one scan per tied item (duplicate-heavy data stays
# O(m log m) a query).
_TIE_SCAN_MAX_ITEMS = 8


@dataclass(frozen=True)
class RetrievalResult:
    """Retrieval metrics for one direction (e.g. image->text), means over eligible queries.

    Attributes:
        recall: K -> hit rate at K in [0, 1]; ``None`` when no query is eligible.
        n_queries: number of queries evaluated (those with at least one positive / relevant
            item).
        n_skipped: number of queries left out because they had no positive / relevant item.
        mean_average_precision: mAP in [0, 1] (intra-modal only, else ``None``).
        r_precision: mean R-precision in [0, 1] (intra-modal only, else ``None``).
        se: standard error of each mean, keyed ``"R@K"``, ``"mAP"``, ``"R-precision"``; only
            when the metrics were estimated on a sample of queries.
        query_rows: the rows of the evaluated queries (ascending, int64, ``(n_queries,)``).
        first_rank: 0-based rank of each evaluated query's first relevant key (int64,
            aligned with ``query_rows``): the query is a hit at K when it is below K.
        average_precision, r_precision_per_query: each evaluated query's AP and R-precision
            (float64, aligned with ``query_rows``; intra-modal only, else ``None``).
    """

    recall: dict[int, float | None]
    n_queries: int
    n_skipped: int
    mean_average_precision: float | None = None
    r_precision: float | None = None
    se: dict[str, float] | None = None
    query_rows: np.ndarray = field(
        default_factory=lambda: np.empty(0, np.int64), compare=False, repr=False
    )
    first_rank: np.ndarray = field(
        default_factory=lambda: np.empty(0, np.int64), compare=False, repr=False
    )
    average_precision: np.ndarray | None = field(default=None, compare=False, repr=False)
    r_precision_per_query: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def per_query(self) -> dict[str, np.ndarray]:
        """Each query's own value, keyed ``"R@K"`` (hit indicators 0.0/1.0), ``"mAP"`` and
        ``"R-precision"`` (intra-modal), float64 arrays aligned with ``query_rows``; every
        reported mean is the mean of its array. What a bootstrap over queries resamples."""
        values: dict[str, np.ndarray] = {
            f"R@{c}": (self.first_rank < c).astype(np.float64) for c in self.recall
        }
        if self.average_precision is not None and self.r_precision_per_query is not None:
            values["mAP"] = self.average_precision
            values["R-precision"] = self.r_precision_per_query
        return values

    def recall_at(self, cutoffs: Iterable[int]) -> dict[int, float | None]:
        """Hit rate at any K, from the same ranks (e.g. a recall curve).

        >>> r = summarize((1,), np.array([0, 3]), n_skipped=0, n_eligible_total=None,
        ...               query_rows=np.array([0, 1]))
        >>> r.recall_at((1, 4))
        {1: 0.5, 4: 1.0}
        """
        q = self.first_rank.size
        return {
            int(c): (int(np.count_nonzero(self.first_rank < c)) / q if q else None) for c in cutoffs
        }


class GroupMembers:
    """Rows of each group code, ascending, found by binary search (no per-group dict)."""

    def __init__(self, codes: np.ndarray) -> None:
        self._order = np.argsort(codes, kind="stable")
        self._codes, self._starts, self._counts = np.unique(
            codes[self._order], return_index=True, return_counts=True
        )

    def count(self, codes: np.ndarray) -> np.ndarray:
        """Number of member rows for each code in ``codes`` (0 for an unknown code)."""
        if not self._codes.size:
            return np.zeros(np.shape(codes), dtype=np.int64)
        pos = np.minimum(np.searchsorted(self._codes, codes), self._codes.size - 1)
        return np.where(self._codes[pos] == codes, self._counts[pos], 0)

    def padded(self, codes: np.ndarray, width: int) -> np.ndarray:
        """``(len(codes), width)`` member rows of each code (which must exist), ascending,
        padded with repeats of the group's last row beyond its count."""
        pos = np.searchsorted(self._codes, codes)
        start, count = self._starts[pos], self._counts[pos]
        offsets = np.minimum(np.arange(width)[None, :], count[:, None] - 1)
        return self._order[start[:, None] + offsets]

    def of(self, code: int) -> np.ndarray:
        """Ascending row indices with group ``code`` (which must exist)."""
        pos = int(np.searchsorted(self._codes, code))
        start = self._starts[pos]
        return self._order[start : start + self._counts[pos]]


def row_ranks(
    scores: np.ndarray,
    queries: np.ndarray,
    codes: np.ndarray,
    members: GroupMembers,
    mask: np.ndarray,
) -> np.ndarray:
    """0-based rank of each query row's best positive (``members`` of its code), ties to the
    lower index: ``#{k : s_k > v} + #{k < j : s_k == v}`` with ``j`` the lowest-index best
    positive and ``v`` its score.

    ``scores`` is a block of rows; ``queries`` the rows of the block to rank and ``codes``
    their group codes. The counts run over the whole block at once (``mask``: a boolean
    buffer of at least its shape); only rows where another key scores exactly ``v`` get a tie
    scan of their own.
    """
    counts = members.count(codes)
    width = int(counts.max())
    if width <= _VECTOR_MAX_POSITIVES:
        # Every query's positives as a padded row of columns (ascending within a group, so
        # argmax finds the lowest-index best one).
        offsets = np.arange(width)
        valid = offsets[None, :] < counts[:, None]
        cols = members.padded(codes, width)
        values = np.where(valid, scores[queries[:, None], cols], -np.inf)
        pick = np.argmax(values, axis=1)
        best_col = cols[np.arange(queries.size), pick]
    else:
        best_col = np.array(
            [
                positives[np.argmax(scores[r, positives])]
                for r, positives in (
                    (r, members.of(c)) for r, c in zip(queries, codes, strict=True)
                )
            ],
            dtype=np.int64,
        )
    v = scores[queries, best_col]
    # numpy's SIMD compare and count beat torch's reductions over bools several times here.
    sub = scores if queries.size == scores.shape[0] else scores[queries]
    ranks = np.count_nonzero(np.greater(sub, v[:, None], out=mask[: sub.shape[0]]), axis=1)
    equal = np.count_nonzero(np.equal(sub, v[:, None], out=mask[: sub.shape[0]]), axis=1)
    for q in np.flatnonzero(equal > 1):
        r, j = queries[q], best_col[q]
        ranks[q] += np.count_nonzero(scores[r, :j] == v[q])
    return ranks


def ranks_of_items(row: np.ndarray, items: np.ndarray) -> np.ndarray:
    """0-based ranks of the columns ``items`` in ``row`` (descending, ties to the lower index).

    ``rank(j) = #{k : row[k] > row[j]} + #{k < j : row[k] == row[j]}``, returned in no
    particular order. Few items: one counting pass each. Many: only the keys scoring at least
    the lowest item can outrank any item, so only those are sorted (often a small part of the
    row when relevant rows score high) and each rank is a binary search.

    >>> ranks_of_items(np.array([0.5, 0.9, 0.5, 0.1]), np.array([2, 0])).tolist()
    [2, 1]
    """
    if items.size <= _COUNT_MAX_ITEMS:
        return _ranks_by_counting(row, items)
    return _ranks_by_search(row, np.sort(row[row >= row[items].min()]), items)


def _ranks_by_counting(row: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Ranks of ``items``, one pass over the row each, counted as
    ``#{k < j : row[k] >= row[j]} + #{k > j : row[k] > row[j]}`` (no special case for ties)."""
    return np.array(
        [
            np.count_nonzero(row[:j] >= v) + np.count_nonzero(row[j + 1 :] > v)
            for j, v in zip(items.tolist(), row[items].tolist(), strict=True)
        ],
        dtype=np.int64,
    )


def _ranks_by_search(row: np.ndarray, sorted_keys: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Ranks of ``items``, in no particular order, from ``sorted_keys``: the ascending scores
    of every key that scores at least the lowest item (no other key can outrank an item).

    ``#{k : row[k] > row[j]}`` is a binary search. An item's own score is the last of its
    equals in ``sorted_keys``; another key ties with it exactly when the one below is equal
    too, which is rare outside duplicated rows and then counted among the lower indices.
    """
    s = row[items]
    # Ascending needles make the binary searches walk the keys forwards: about twice as fast.
    order = np.argsort(s, kind="stable")
    s, items = s[order], items[order]
    hi = np.searchsorted(sorted_keys, s, side="right")
    ranks = (sorted_keys.size - hi).astype(np.int64)
    tied = np.flatnonzero((hi >= 2) & (sorted_keys[np.maximum(hi - 2, 0)] == s))
    if tied.size > _TIE_SCAN_MAX_ITEMS:
        order = np.argsort(-row, kind="stable")
        position = np.empty(row.size, dtype=np.int64)
        position[order] = np.arange(row.size)
        return position[items]
    for t in tied:
        ranks[t] += np.count_nonzero(row[: items[t]] == s[t])
    return ranks


def summarize(
    cutoffs: Sequence[int],
    first_rank: np.ndarray,
    *,
    n_skipped: int,
    n_eligible_total: int | None,
    query_rows: np.ndarray,
    average_precision: np.ndarray | None = None,
    r_precision: np.ndarray | None = None,
) -> RetrievalResult:
    """Means of the per-query values, and their standard errors when the queries are a
    sample of ``n_eligible_total`` eligible ones (``None``: every eligible query)."""
    q = first_rank.size
    recall: dict[int, float | None] = {
        int(c): (int(np.count_nonzero(first_rank < c)) / q if q else None) for c in cutoffs
    }
    means: dict[str, float | None] = {}
    if average_precision is not None and r_precision is not None:
        # fsum is exactly rounded, so the mean does not depend on the order of the queries.
        means["mAP"] = math.fsum(average_precision) / q if q else None
        means["R-precision"] = math.fsum(r_precision) / q if q else None
    result = RetrievalResult(
        recall=recall,
        n_queries=q,
        n_skipped=n_skipped,
        mean_average_precision=means.get("mAP"),
        r_precision=means.get("R-precision"),
        query_rows=np.asarray(query_rows, dtype=np.int64).copy(),
        first_rank=np.asarray(first_rank, dtype=np.int64),
        average_precision=average_precision,
        r_precision_per_query=r_precision,
    )
    if n_eligible_total is None:
        return result
    se = {name: standard_error(v, n_eligible_total) for name, v in result.per_query.items()}
    return RetrievalResult(
        recall=result.recall,
        n_queries=q,
        n_skipped=n_skipped,
        mean_average_precision=result.mean_average_precision,
        r_precision=result.r_precision,
        se=se,
        query_rows=result.query_rows,
        first_rank=result.first_rank,
        average_precision=average_precision,
        r_precision_per_query=r_precision,
    )


def standard_error(values: np.ndarray, population: int) -> float:
    """Standard error of the mean of a sample drawn without replacement from ``population``
    items: ``std(values, ddof=1) / sqrt(q) * sqrt((N - q) / (N - 1))``; 0 when the sample is
    the whole population, NaN when fewer than two values leave a variance undefined.

    >>> standard_error(np.array([0.0, 1.0]), 2), round(standard_error(np.array([0.0, 1.0]), 3), 4)
    (0.0, 0.3536)
    """
    q = values.size
    if q == population:
        return 0.0
    if q < 2:
        return math.nan
    fpc = math.sqrt((population - q) / (population - 1))
    return float(np.std(values, ddof=1)) / math.sqrt(q) * fpc
