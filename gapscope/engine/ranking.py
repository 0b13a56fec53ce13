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

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "ExactScores",
    "GroupMembers",
    "float32_margin",
    "RetrievalResult",
    "near_keys",
    "near_window",
    "outranking_best_positive",
    "outranking_items",
    "relevant_ranks",
    "row_ranks",
    "score_error_bound",
    "summarize",
    "true_counts_along",
    "window_counts",
]

# Up to this many relevant rows a query's ranks are counted with passes over its row each;
# beyond it the keys that can outrank a relevant row are sorted (see relevant_ranks).
_COUNT_MAX_ITEMS = 4
# Queries with up to this many positives find their best one in one padded gather per block.
_VECTOR_MAX_POSITIVES = 64


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
        se: standard error of each mean, keyed ``"R@K"``, ``"mAP"``, ``"R-precision"`` and
            ``"mean_rank"``; only when the metrics were estimated on a sample of queries.
        query_rows: the rows of the evaluated queries (ascending, int64, ``(n_queries,)``).
        first_rank: 0-based rank of each evaluated query's first relevant key (int64,
            aligned with ``query_rows``): the query is a hit at K when it is below K.
        average_precision, r_precision_per_query: each evaluated query's AP and R-precision
            (float64, aligned with ``query_rows``; intra-modal only, else ``None``).
        mean_rank, median_rank: the rank of each query's best positive (first relevant key),
            counted from 1, averaged and as ``floor(median) + 1`` (open_clip's evaluation:
            ``preds.mean() + 1`` and ``np.floor(np.median(preds)) + 1`` with ``preds`` the
            0-based ranks); ``None`` without queries.
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
    mean_rank: float | None = None
    median_rank: float | None = None

    @property
    def per_query(self) -> dict[str, np.ndarray]:
        """Each query's own value, keyed ``"R@K"`` (hit indicators 0.0/1.0), ``"mean_rank"``
        (the rank from 1), ``"mAP"`` and ``"R-precision"`` (intra-modal), float64 arrays
        aligned with ``query_rows``; every reported mean is the mean of its array. What a
        bootstrap over queries resamples."""
        values: dict[str, np.ndarray] = {
            f"R@{c}": (self.first_rank < c).astype(np.float64) for c in self.recall
        }
        values["mean_rank"] = self.first_rank.astype(np.float64) + 1.0
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
        self._row_codes = codes
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

    def contains(self, codes: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Whether each ``rows[p]`` is a member of ``codes[p]``'s group."""
        return self.codes_of(rows) == codes

    def codes_of(self, rows: np.ndarray) -> np.ndarray:
        """The group code of each row."""
        return self._row_codes[rows]

    def of(self, code: int) -> np.ndarray:
        """Ascending row indices with group ``code`` (which must exist)."""
        pos = int(np.searchsorted(self._codes, code))
        start = self._starts[pos]
        return self._order[start : start + self._counts[pos]]


#: Exact scores of pairs of rows: ``exact(rows, keys)[p]`` is the float64 score of
#: ``rows[p]`` against ``keys[p]`` (see :func:`gapscope.engine.unit_rows.exact_scores`).
ExactScores = Callable[[np.ndarray, np.ndarray], np.ndarray]

_FLOAT32_UNIT_ROUNDOFF = 2.0**-24


def score_error_bound(dim: int) -> float:
    """The largest ``|s - S|`` between a float32 score ``s`` of two unit rows of dimension
    ``dim``, however a product sums it, and their exact dot product ``S``.

    ``gamma_d = d u / (1 - d u)`` with ``u = 2^-24`` bounds the error of a float32 dot
    product summed in any order, relative to ``sum |a_i b_i| <= ||a|| ||b|| = 1`` (Higham,
    *Accuracy and Stability of Numerical Algorithms*, 2002, eq. 3.5); 1% more covers rows whose
    norm is 1 only to float32 rounding.

    >>> f"{score_error_bound(512):.3g}"
    '3.08e-05'
    """
    du = dim * _FLOAT32_UNIT_ROUNDOFF
    return 1.01 * du / (1.0 - du)


@functools.lru_cache(maxsize=256)
def float32_margin(margin: float) -> np.float32:
    """The smallest float32 no smaller than ``margin``: each float32 sum ``s +- m`` is then
    rounded to nearest (within half a step of the exact bound), and one step outwards (as
    :func:`near_window` takes) covers that.

    >>> float(float32_margin(0.1)) >= 0.1
    True
    """
    m = np.float32(margin)
    if float(m) < margin:
        m = np.nextafter(m, np.float32(np.inf))
    return m


def near_window(scores: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """float32 bounds ``(lo, hi)`` with ``lo <= s - margin`` and ``hi >= s + margin``
    (``margin`` already in the scores' units): rounded to float32, then one step outwards.

    >>> lo, hi = near_window(np.array([0.5], np.float32), 1e-3)
    >>> bool(lo[0] <= 0.499 and hi[0] >= 0.501)
    True
    """
    s = np.asarray(scores, dtype=np.float32)
    m = float32_margin(margin)
    with np.errstate(over="ignore"):
        lo = np.nextafter(s - m, np.float32(-np.inf))
        hi = np.nextafter(s + m, np.float32(np.inf))
    return lo, hi


def row_ranks(
    scores: np.ndarray,
    queries: np.ndarray,
    query_rows: np.ndarray,
    codes: np.ndarray,
    members: GroupMembers,
    margin: float,
    exact: ExactScores,
    mask: np.ndarray,
) -> np.ndarray:
    """0-based rank of each query row's best positive (``members`` of its code) by the
    ranking rule of this module applied to exact scores: how many non-positive keys outrank
    it.

    ``scores`` is a float32 block of rows; ``queries`` the block rows to rank, ``query_rows``
    their row numbers (for ``exact``) and ``codes`` their group codes. ``margin`` is twice
    the largest error of a float32 score (:func:`score_error_bound`, in the scores' units).
    With ``v`` a query's best float32 positive score, a key above ``v + margin`` outranks
    every positive and one below ``v - margin`` none, whatever the rounding; non-positive
    keys in between are ranked by their exact scores against the exact best positive. Ranks
    therefore do not depend on how the product was blocked.
    """
    counts = members.count(codes)
    width = int(counts.max())
    if width <= _VECTOR_MAX_POSITIVES:
        cols = members.padded(codes, width)
        valid = np.arange(width)[None, :] < counts[:, None]
        values = np.where(valid, scores[queries[:, None], cols], -np.inf)
    else:
        values = _ragged_positive_scores(scores, queries, codes, members)
    lo, hi = near_window(values.max(axis=1), margin)
    near_positives = np.count_nonzero((values >= lo[:, None]) & (values <= hi[:, None]), axis=1)
    sub = scores if queries.size == scores.shape[0] else scores[queries]
    m = mask[: sub.shape[0]]
    ranks = true_counts_along(np.greater(sub, hi[:, None], out=m), 1)
    near = true_counts_along(np.greater_equal(sub, lo[:, None], out=m), 1) - ranks
    need = np.flatnonzero(near > near_positives)
    if need.size:
        rows, keys = np.nonzero((sub[need] >= lo[need, None]) & (sub[need] <= hi[need, None]))
        ranks[need] += outranking_best_positive(
            rows, keys, query_rows[need], codes[need], members, exact
        )
    return ranks


def true_counts_along(mask: np.ndarray, axis: int) -> np.ndarray:
    """The ``True`` entries of a 2-D boolean array along ``axis`` (int64), summed as bytes in
    runs of fewer than 65,536 (uint16 sums): about four times as fast as ``count_nonzero``
    along an axis, which widens every flag first.

    >>> true_counts_along(np.array([[True, False, True], [False, False, True]]), 1).tolist()
    [2, 1]
    """
    flags = mask.view(np.uint8)
    counts = np.zeros(mask.shape[1 - axis], dtype=np.int64)
    for a in range(0, mask.shape[axis], _UINT16_RUN):
        run = flags[a : a + _UINT16_RUN] if axis == 0 else flags[:, a : a + _UINT16_RUN]
        counts += np.add.reduce(run, axis=axis, dtype=np.uint16)
    return counts


#: Booleans a uint16 sum adds at most.
_UINT16_RUN = (1 << 16) - 1


def _ragged_positive_scores(
    scores: np.ndarray, queries: np.ndarray, codes: np.ndarray, members: GroupMembers
) -> np.ndarray:
    """Each query's positives' scores, padded with -inf (for groups too wide to gather)."""
    groups = [members.of(c) for c in codes.tolist()]
    out = np.full((queries.size, max(g.size for g in groups)), -np.inf, dtype=scores.dtype)
    for q, (r, g) in enumerate(zip(queries.tolist(), groups, strict=True)):
        out[q, : g.size] = scores[r, g]
    return out


def outranking_best_positive(
    owner: np.ndarray,
    keys: np.ndarray,
    query_rows: np.ndarray,
    codes: np.ndarray,
    members: GroupMembers,
    exact: ExactScores,
) -> np.ndarray:
    """For each query ``q`` (row ``query_rows[q]``, group ``codes[q]``), how many of its keys
    ``keys[owner == q]`` are non-positives that outrank its exact best positive: a higher
    exact score, or an equal one and a lower key. The exact best positive is the positive
    (``members`` of the code) with the highest exact score, then the lowest key.
    """
    n = query_rows.size
    count = members.count(codes)
    width = int(count.max())
    positives = members.padded(codes, width)
    pos_rows = np.repeat(np.arange(n), width)
    pos_s = exact(query_rows[pos_rows], positives.reshape(-1)).reshape(n, width)
    pos_s[np.arange(width)[None, :] >= count[:, None]] = -np.inf
    # Members come ascending, so argmax finds the lowest key among equal best scores.
    pick = np.argmax(pos_s, axis=1)
    best_s, best_key = pos_s[np.arange(n), pick], positives[np.arange(n), pick]
    other = ~members.contains(codes[owner], keys)
    owner, keys = owner[other], keys[other]
    s = exact(query_rows[owner], keys)
    above = (s > best_s[owner]) | ((s == best_s[owner]) & (keys < best_key[owner]))
    return np.bincount(owner[above], minlength=n)


def relevant_ranks(
    row: np.ndarray,
    items: np.ndarray,
    is_relevant: Callable[[np.ndarray], np.ndarray],
    margin: float,
    exact_keys: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """The 0-based ranks of the relevant ``items`` in ``row`` (descending by exact score, ties
    to the lower index), ascending.

    With ``S`` the exact scores (``exact_keys(keys)``, float64), the relevant item that comes
    t-th (from 0) by ``S`` has rank ``t + #{non-relevant k : S_k > S_j or (S_k = S_j and
    k < j)}``; these counts are all that AP, R-precision and the first rank need, so the order
    among relevant items never has to be resolved. ``is_relevant(keys)`` tells the relevant
    keys (the ``items``) apart; keys with score ``-inf`` (the query itself) never count. A
    non-relevant key more than ``margin`` (twice the largest rounding error, in the row's
    units) above or below an item's float32 score is counted from the float32 scores; near
    ones by ``S``. Few items:
    counting passes each; many: only keys scoring at least the lowest item's ``score -
    margin`` can count, so only those are sorted and each count is a binary search.

    >>> row = np.array([0.5, 0.9, 0.5, 0.1], np.float32)
    >>> relevant_ranks(row, np.array([0, 2]), lambda keys: keys % 2 == 0, 1e-6,
    ...                lambda keys: row.astype(np.float64)[keys]).tolist()
    [1, 2]
    """
    # Item scores in ascending order: the windows then ascend too, and ascending needles
    # make the binary searches walk the keys forwards (about twice as fast).
    values = np.sort(row[items])
    lo, hi = near_window(values, margin)
    m = items.size
    above_relevant = m - np.searchsorted(values, hi, side="right")
    near_relevant = m - above_relevant - np.searchsorted(values, lo, side="left")
    above, upto = window_counts(row, lo, hi)
    near = upto - above
    counts = above - above_relevant
    need = np.flatnonzero(near > near_relevant)
    if not need.size:
        # The non-relevant keys above each window: fewer for each higher item, so ascending
        # is the reverse order.
        return counts[::-1] + np.arange(m)
    # The items in the order of their scores (ties by index) name the windows' owners.
    items = items[np.argsort(row[items], kind="stable")]
    close, owner = near_keys(row, lo[need], hi[need], is_relevant)
    counts[need] += outranking_items(close, owner, items[need], exact_keys)
    return np.sort(counts) + np.arange(m)


def window_counts(
    scores: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For windows ``[lo[w], hi[w]]`` ascending by ``lo``: how many ``scores`` lie above each
    window, and how many at or above its lower end (int64, one a window). Up to
    ``_COUNT_MAX_ITEMS`` windows by a pass over the scores each; more by one sort of the scores
    that can count (those at or above ``lo[0]``).

    >>> above, upto = window_counts(np.array([0.1, 0.5, 0.9]), np.array([0.4]), np.array([0.6]))
    >>> above.tolist(), upto.tolist()
    ([1], [2])
    """
    if lo.size <= _COUNT_MAX_ITEMS:
        above = np.array([np.count_nonzero(scores > h) for h in hi.tolist()], dtype=np.int64)
        upto = np.array([np.count_nonzero(scores >= g) for g in lo.tolist()], dtype=np.int64)
        return above, upto
    ordered = np.sort(scores[scores >= lo[0]])
    above = ordered.size - np.searchsorted(ordered, hi, side="right")
    upto = ordered.size - np.searchsorted(ordered, lo, side="left")
    return above, upto


def near_keys(
    row: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    is_relevant: Callable[[np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """The non-relevant keys with a score in ``[lo[i], hi[i]]``, and for each the window
    ``i`` it lies in (a key near two items is listed twice)."""
    candidates = np.flatnonzero((row >= lo.min()) & (row <= hi.max()))
    candidates = candidates[~is_relevant(candidates)]
    order = np.argsort(row[candidates], kind="stable")
    keys, values = candidates[order], row[candidates][order]
    start = np.searchsorted(values, lo, side="left")
    lengths = np.searchsorted(values, hi, side="right") - start
    owner = np.repeat(np.arange(lo.size), lengths)
    offsets = np.arange(owner.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return keys[start[owner] + offsets], owner


def outranking_items(
    near: np.ndarray,
    owner: np.ndarray,
    items: np.ndarray,
    exact_keys: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """For each item, how many of its near keys (``near[p]`` belongs to ``items[owner[p]]``)
    outrank it by exact score, ties to the lower index."""
    wanted = np.union1d(near, items)
    exact = exact_keys(wanted)
    s_near = exact[np.searchsorted(wanted, near)]
    s_item = exact[np.searchsorted(wanted, items)][owner]
    above = (s_near > s_item) | ((s_near == s_item) & (near < items[owner]))
    return np.bincount(owner[above], minlength=items.size)


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
    ranks = np.asarray(first_rank, dtype=np.int64)
    # Integer ranks: the sum is exact, so the mean does not depend on the order either.
    means["mean_rank"] = float(int(ranks.sum()) + q) / q if q else None
    means["median_rank"] = float(math.floor(float(np.median(ranks)))) + 1.0 if q else None
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
        mean_rank=means["mean_rank"],
        median_rank=means["median_rank"],
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
        mean_rank=result.mean_rank,
        median_rank=result.median_rank,
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
