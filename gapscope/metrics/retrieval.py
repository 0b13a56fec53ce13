"""Retrieval metrics: recall@K across modalities, recall@K, mAP and R-precision within one.

Queries are ranked against keys by cosine similarity on L2-normalised rows. The similarity
matrix is computed one block of query rows at a time (``block x n_keys`` float32 scores), so
memory stays ``O((n + m) d + block * m)`` and the full ``n x m`` matrix is never held.

Ranking is exact and deterministic: keys are ordered by descending score, and a key with an equal
score and a lower index ranks higher. The 0-based rank of key ``j`` for a query is therefore

    rank(j) = #{k : s_k > s_j} + #{k < j : s_k = s_j},

which is what every metric here is computed from; no top-K list is kept. Identical key rows are
scored once and share that score, so duplicates tie exactly whatever the block size. Counts are
integers and sums float64, so the same input and block size give bit-identical results.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from gapscope.errors import EmbeddingError
from gapscope.engine.validation import (
    ArrayLike,
    check_embeddings,
    check_groups,
    check_same_dim,
    normalize_rows,
    pair_groups,
    resolve_device,
)

__all__ = ["RetrievalResult", "cross_modal_retrieval", "intra_modal_retrieval"]

# Scores in one block: 2**23 float32 values = 32 MiB, so a block and its sorted copy stay small
# next to the embeddings while the matrix products are still large enough to run at full speed.
_BLOCK_ELEMENTS = 2**23
# Up to this many relevant items a query's ranks are counted with one pass over its row per
# item; beyond it one sort of the row is cheaper (a sort costs about 30 counting passes).
_COUNT_MAX_ITEMS = 32
# A sorted row where more than this many relevant items share their score with another key is
# ranked by one stable argsort instead of one scan per tied item (duplicate-heavy data stays
# O(m log m) a query).
_TIE_SCAN_MAX_ITEMS = 8


@dataclass(frozen=True)
class RetrievalResult:
    """Retrieval metrics for one direction (e.g. image->text), means over eligible queries.

    Attributes:
        recall: K -> hit rate at K in [0, 1]; ``None`` when no query is eligible.
        n_queries: number of queries evaluated (those with at least one positive / relevant item).
        n_skipped: number of queries left out because they had no positive / relevant item.
        mean_average_precision: mAP in [0, 1] (intra-modal only, else ``None``).
        r_precision: mean R-precision in [0, 1] (intra-modal only, else ``None``).
        se: standard error of each mean, keyed ``"R@K"``, ``"mAP"``, ``"R-precision"``; only
            when the metrics were estimated on a sample of queries (``query_index``).
        query_rows: with ``per_query=True``, the rows of the evaluated queries (ascending,
            int64, shape ``(n_queries,)``); else ``None``.
        per_query: with ``per_query=True``, each query's own value, keyed like ``se``
            (hit indicators 0.0/1.0 for ``"R@K"``, AP and R-precision values), float64 arrays
            aligned with ``query_rows``; every reported mean is the mean of its array. These
            are what a bootstrap over queries resamples. Else ``None``.
    """

    recall: dict[int, float | None]
    n_queries: int
    n_skipped: int
    mean_average_precision: float | None = None
    r_precision: float | None = None
    se: dict[str, float] | None = None
    query_rows: np.ndarray | None = field(default=None, compare=False, repr=False)
    per_query: dict[str, np.ndarray] | None = field(default=None, compare=False, repr=False)


def cross_modal_retrieval(
    queries: ArrayLike,
    keys: ArrayLike,
    query_groups: ArrayLike | Sequence[int] | None = None,
    key_groups: ArrayLike | Sequence[int] | None = None,
    *,
    k: int | Sequence[int] = (1, 5, 10),
    block_size: int | None = None,
    device: str | torch.device | None = None,
    query_index: ArrayLike | Sequence[int] | None = None,
    per_query: bool = False,
) -> RetrievalResult:
    """Recall@K of cross-modal retrieval (e.g. image->text): the share of queries with a positive
    among their top K keys.

    This is the COCO-style retrieval recall of Karpathy & Fei-Fei (2015), "Deep Visual-Semantic
    Alignments for Generating Image Descriptions", as reported for CLIP (Radford et al. 2021): a
    *hit rate*. A query is a hit at K when any of its positives (keys of the same group) ranks
    among its top K keys by cosine similarity; with 1:1 rows this is the paired R@K. With ``Q``
    the queries that have at least one positive and ``P(i)`` the positives of query ``i``,

        R@K = (1 / |Q|) * sum_{i in Q} 1[min_{j in P(i)} rank_i(j) < K].

    (Some papers call "recall@K" the fraction of a query's relevant items that are retrieved;
    that is a different quantity and not what is computed here.) Ties are broken by the lower
    key index. K larger than the number of keys is allowed: every key is then retrieved.

    Args:
        queries: ``(n, d)`` float16/32/64 numpy array or torch tensor (not necessarily
            normalised; rows are L2-normalised here). Memory maps are read block by block.
        keys: ``(m, d)`` array of the other modality, same ``d``.
        query_groups: ``(n,)`` integer group codes of the queries; ``None`` together with
            ``key_groups=None`` pairs row i with row i (then ``n == m``).
        key_groups: ``(m,)`` integer group codes of the keys.
        k: the cut-offs K, positive integers.
        block_size: query rows per similarity block; ``None`` picks one from ``m``.
        device: ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available) for the matrix products.
        query_index: optional 1-D array of distinct query row indices: evaluate only these
            queries (still against all keys) and report standard errors (see ``se`` below).
        per_query: also return each evaluated query's hit indicators (``query_rows`` and
            ``per_query`` of the result); the aggregates are the same either way.

    Returns:
        :class:`RetrievalResult` with ``recall`` (``None`` values when no query has a
        positive), ``n_queries`` (queries with a positive) and ``n_skipped`` (queries without).
        With ``query_index``, ``se["R@K"]`` is the standard error of each mean: the per-query
        hit indicators' standard deviation (ddof=1) over ``sqrt(q)``, times the finite
        population correction ``sqrt((N - q) / (N - 1))``, where ``q`` sampled queries and
        ``N`` queries in all are eligible. It is 0 when ``q == N`` and NaN when ``q < 2 < N``.

    Raises:
        EmbeddingError: NaN/Inf or zero rows, a dimension mismatch, group vectors of the wrong
            length or dtype, a non-positive or non-integer K, a bad ``block_size`` or
            ``query_index``.

    Example:
        >>> images = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
        >>> texts = np.array([[1.0, 0.0], [1.0, -0.2]], dtype=np.float32)
        >>> result = cross_modal_retrieval(images, texts, k=(1, 5))
        >>> result.recall
        {1: 0.5, 5: 1.0}
        >>> result.n_queries, result.n_skipped
        (2, 0)
    """
    q_arr = check_embeddings(queries, "queries")
    k_arr = check_embeddings(keys, "keys")
    check_same_dim(q_arr, k_arr, ("queries", "keys"))
    q_groups, k_groups = pair_groups(q_arr, k_arr, query_groups, key_groups, ("queries", "keys"))
    cutoffs = _check_k(k)
    block = _check_block_size(block_size)
    sample = _check_query_index(query_index, q_arr.shape[0])
    dev = resolve_device(device)

    members = _GroupMembers(k_groups)
    eligible = members.count(q_groups) > 0
    rows = np.arange(q_arr.shape[0]) if sample is None else sample
    evaluated = rows[eligible[rows]]
    n_skipped = int(rows.size - evaluated.size)

    first_rank = np.empty(evaluated.size, dtype=np.int64)
    if evaluated.size:
        q_norm = normalize_rows(q_arr, device=dev)
        k_norm = normalize_rows(k_arr, device=dev)
        block = block or _auto_block_size(k_arr.shape[0])
        for start, scores, _ in _score_blocks(q_norm, k_norm, evaluated, block, exclude_self=False):
            for r, i in enumerate(evaluated[start : start + scores.shape[0]]):
                row = scores[r]
                positives = members.of(q_groups[i])
                # argmax takes the first maximum and positives are ascending: the best positive
                # with the lowest index, which is the positive that ranks first.
                best = positives[np.argmax(row[positives])]
                first_rank[start + r] = _ranks_in_row(row, None, np.array([best]))[0]

    return _summarize(
        cutoffs,
        first_rank,
        n_skipped=n_skipped,
        n_eligible_total=int(np.count_nonzero(eligible)) if sample is not None else None,
        query_rows=evaluated if per_query else None,
    )


def intra_modal_retrieval(
    x: ArrayLike,
    relevance: ArrayLike | Sequence[int],
    *,
    k: int | Sequence[int] = (1, 5, 10),
    block_size: int | None = None,
    device: str | torch.device | None = None,
    query_index: ArrayLike | Sequence[int] | None = None,
    per_query: bool = False,
) -> RetrievalResult:
    """Retrieval within one modality (e.g. image->image): recall@K, mAP and R-precision, each
    query ranking all *other* rows by cosine similarity.

    Intra-modal retrieval as evaluated in Mistretta et al. (2025), "Cross the Gap: Exposing the
    Intra-modal Misalignment in CLIP via Modality Inversion". Rows with equal ``relevance``
    codes (class labels, or groups when there are no labels) are relevant to each other; the
    query itself is excluded from its own ranking by index (never by its score, so duplicate
    rows are handled), leaving ``n - 1`` ranked rows. For a query with ``R >= 1`` relevant rows
    at 0-based ranks ``r_1 < ... < r_R``:

        hit@K = 1[r_1 < K]                                  (recall@K is its mean: a hit rate)
        AP    = (1 / R) * sum_{t=1..R} t / (r_t + 1)        (precision at each relevant row)
        R-precision = #{t : r_t < R} / R                    (precision among the top R)

    and the reported values are their means over queries with ``R >= 1``; queries with no
    relevant row are left out and counted in ``n_skipped``. Ties are broken by the lower row
    index, so tied rows are not averaged.

    Args:
        x: ``(n, d)`` float16/32/64 numpy array or torch tensor (rows are L2-normalised here).
        relevance: ``(n,)`` integer codes; rows with equal codes are relevant to each other.
        k: the cut-offs K, positive integers (K >= n - 1 retrieves everything).
        block_size: query rows per similarity block; ``None`` picks one from ``n``.
        device: ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available) for the matrix products.
        query_index: optional 1-D array of distinct row indices: evaluate only these queries
            (still against all rows) and report standard errors.
        per_query: also return each evaluated query's hit indicators, AP and R-precision
            (``query_rows`` and ``per_query`` of the result).

    Returns:
        :class:`RetrievalResult` with ``recall``, ``mean_average_precision`` and
        ``r_precision`` (``None`` when no query has a relevant row), ``n_queries`` and
        ``n_skipped``. With ``query_index``, ``se`` holds the standard error of each mean
        (``"R@K"``, ``"mAP"``, ``"R-precision"``): the per-query values' standard deviation
        (ddof=1) over ``sqrt(q)`` times ``sqrt((N - q) / (N - 1))``, with ``q`` sampled and
        ``N`` total eligible queries; 0 when ``q == N``, NaN when ``q < 2 < N``.

    Raises:
        EmbeddingError: NaN/Inf or zero rows, ``relevance`` of the wrong length or dtype, a
            non-positive or non-integer K, a bad ``block_size`` or ``query_index``.

    Example:
        >>> x = np.array([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6], [0.0, 1.0]], dtype=np.float32)
        >>> result = intra_modal_retrieval(x, [0, 0, 1, 1], k=(1, 2))
        >>> result.recall
        {1: 0.0, 2: 0.5}
        >>> round(result.mean_average_precision, 4), result.r_precision
        (0.4167, 0.0)
    """
    arr = check_embeddings(x, "x")
    codes = check_groups(relevance, arr.shape[0], "relevance")
    if codes is None:
        raise EmbeddingError("relevance: expected integer codes, got None")
    cutoffs = _check_k(k)
    block = _check_block_size(block_size)
    sample = _check_query_index(query_index, arr.shape[0])
    dev = resolve_device(device)

    members = _GroupMembers(codes)
    # The query is one of its own group's members, so it has a relevant row when the group has two.
    eligible = members.count(codes) > 1
    rows = np.arange(arr.shape[0]) if sample is None else sample
    evaluated = rows[eligible[rows]]
    n_skipped = int(rows.size - evaluated.size)

    first_rank = np.empty(evaluated.size, dtype=np.int64)
    average_precision = np.empty(evaluated.size, dtype=np.float64)
    r_precision = np.empty(evaluated.size, dtype=np.float64)
    if evaluated.size:
        x_norm = normalize_rows(arr, device=dev)
        block = block or _auto_block_size(arr.shape[0])
        n_relevant = members.count(codes) - 1
        for start, scores, sorted_scores in _score_blocks(
            x_norm,
            x_norm,
            evaluated,
            block,
            exclude_self=True,
            needs_sort=lambda idx: n_relevant[idx].max() > _COUNT_MAX_ITEMS,
        ):
            for r, i in enumerate(evaluated[start : start + scores.shape[0]]):
                group = members.of(codes[i])
                relevant = np.delete(group, np.searchsorted(group, i))
                sorted_row = None if sorted_scores is None else sorted_scores[r]
                ranks = np.sort(_ranks_in_row(scores[r], sorted_row, relevant))
                n_rel = ranks.size
                first_rank[start + r] = ranks[0]
                average_precision[start + r] = (
                    np.sum(np.arange(1, n_rel + 1) / (ranks + 1.0)) / n_rel
                )
                r_precision[start + r] = np.count_nonzero(ranks < n_rel) / n_rel

    return _summarize(
        cutoffs,
        first_rank,
        average_precision=average_precision,
        r_precision=r_precision,
        n_skipped=n_skipped,
        n_eligible_total=int(np.count_nonzero(eligible)) if sample is not None else None,
        query_rows=evaluated if per_query else None,
    )


class _GroupMembers:
    """Rows of each group code, ascending, found by binary search (no per-group dict)."""

    def __init__(self, codes: np.ndarray) -> None:
        self._order = np.argsort(codes, kind="stable")
        self._codes, self._starts, self._counts = np.unique(
            codes[self._order], return_index=True, return_counts=True
        )

    def count(self, codes: np.ndarray) -> np.ndarray:
        """Number of member rows for each code in ``codes`` (0 for an unknown code)."""
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


def _score_blocks(
    q_norm: torch.Tensor,
    k_norm: torch.Tensor,
    rows: np.ndarray,
    block: int,
    *,
    exclude_self: bool,
    needs_sort: Callable[[np.ndarray], bool] | None = None,
) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
    """Yield ``(start, scores, sorted_scores)`` for blocks of ``rows``, as numpy float32.

    ``scores[r]`` holds the cosines of query ``rows[start + r]`` with every key; identical key
    rows share one computed score, so they tie exactly (a matrix product can round the same dot
    product differently in different columns, which would order duplicates at random). With
    ``exclude_self`` the query's own column is set to -inf: chosen by index, whatever the
    query's score with itself, and ranked below every finite score, so it never counts as a key
    ranked above another. ``sorted_scores`` (each row ascending) is given only for blocks where
    ``needs_sort(block_rows)`` is true.
    """
    k_distinct, k_inverse = _distinct_rows(k_norm)
    for start in range(0, rows.size, block):
        idx = rows[start : start + block]
        idx_t = torch.from_numpy(idx).to(q_norm.device)
        scores_t = q_norm.index_select(0, idx_t) @ k_distinct.T
        if k_inverse is not None:
            scores_t = scores_t.index_select(1, k_inverse)
        if exclude_self:
            scores_t[torch.arange(idx.size, device=scores_t.device), idx_t] = -torch.inf
        # +0.0 turns -0.0 into +0.0, so that equal scores are also equal bit patterns.
        scores_t += 0.0
        scores = scores_t.cpu().numpy()
        sorted_scores = None
        if needs_sort is not None and needs_sort(idx):
            if scores_t.device.type == "cpu":
                sorted_scores = np.sort(scores, axis=1)
            else:
                sorted_scores = torch.sort(scores_t, dim=1).values.cpu().numpy()
        yield start, scores, sorted_scores


def _distinct_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The distinct rows of ``x`` and, when some repeat, each row's index among them."""
    distinct, inverse = torch.unique(x, dim=0, return_inverse=True)
    if distinct.shape[0] == x.shape[0]:
        return x, None
    return distinct, inverse


def _ranks_in_row(row: np.ndarray, sorted_row: np.ndarray | None, items: np.ndarray) -> np.ndarray:
    """0-based ranks of the key columns ``items`` in one query's ``row`` of scores, as a set.

    ``rank(j) = #{k : row[k] > row[j]} + #{k < j : row[k] == row[j]}``. The ranks come back in
    no particular order. Without ``sorted_row`` each item costs one pass over the row
    (:func:`_ranks_by_counting`); with it (ascending), a binary search each
    (:func:`_ranks_by_search`).
    """
    if sorted_row is None:
        return _ranks_by_counting(row, items)
    return _ranks_by_search(row, sorted_row, items)


def _ranks_by_counting(row: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Ranks of ``items`` (see :func:`_ranks_in_row`), one pass over the row each, counted as
    ``#{k < j : row[k] >= row[j]} + #{k > j : row[k] > row[j]}`` (no special case for ties)."""
    return np.array(
        [
            np.count_nonzero(row[:j] >= v) + np.count_nonzero(row[j + 1 :] > v)
            for j, v in zip(items.tolist(), row[items].tolist(), strict=True)
        ],
        dtype=np.int64,
    )


def _ranks_by_search(row: np.ndarray, sorted_keys: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Ranks of ``items`` (see :func:`_ranks_in_row`), in no particular order, from
    ``sorted_keys``: the ascending scores of every key that scores at least the lowest item
    (the whole row, or only those: no other key can outrank an item).

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


def _summarize(
    cutoffs: tuple[int, ...],
    first_rank: np.ndarray,
    *,
    n_skipped: int,
    n_eligible_total: int | None,
    average_precision: np.ndarray | None = None,
    r_precision: np.ndarray | None = None,
    query_rows: np.ndarray | None = None,
) -> RetrievalResult:
    """Means of the per-query values (and their standard errors for a sample); the values
    themselves too when ``query_rows`` (the evaluated rows) is given."""
    q = first_rank.size
    per_query: dict[str, np.ndarray] = {
        f"R@{c}": (first_rank < c).astype(np.float64) for c in cutoffs
    }
    recall: dict[int, float | None] = {
        c: (int(np.count_nonzero(first_rank < c)) / q if q else None) for c in cutoffs
    }
    means: dict[str, float | None] = {}
    if average_precision is not None and r_precision is not None:
        per_query["mAP"] = average_precision
        per_query["R-precision"] = r_precision
        # fsum is exactly rounded, so the mean does not depend on the order of the queries.
        means["mAP"] = math.fsum(average_precision) / q if q else None
        means["R-precision"] = math.fsum(r_precision) / q if q else None
    se = None
    if n_eligible_total is not None:
        se = {name: _standard_error(v, n_eligible_total) for name, v in per_query.items()}
    return RetrievalResult(
        recall=recall,
        n_queries=q,
        n_skipped=n_skipped,
        mean_average_precision=means.get("mAP"),
        r_precision=means.get("R-precision"),
        se=se,
        query_rows=None if query_rows is None else query_rows.astype(np.int64, copy=True),
        per_query=None if query_rows is None else per_query,
    )


def _standard_error(values: np.ndarray, population: int) -> float:
    """Standard error of the mean of a sample without replacement from ``population`` items."""
    q = values.size
    if q == population:
        return 0.0
    if q < 2:
        return math.nan
    fpc = math.sqrt((population - q) / (population - 1))
    return float(np.std(values, ddof=1)) / math.sqrt(q) * fpc


def _auto_block_size(n_keys: int) -> int:
    return max(1, _BLOCK_ELEMENTS // max(n_keys, 1))


def _check_k(k: int | Sequence[int]) -> tuple[int, ...]:
    values = [k] if isinstance(k, int | np.integer) else k
    try:
        values = list(values)
    except TypeError:
        raise EmbeddingError(
            f"k: expected a positive integer or a list of them, got {k!r}"
        ) from None
    if not values:
        raise EmbeddingError("k: expected at least one cut-off, got an empty list")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise EmbeddingError(f"k: cut-offs must be positive integers, got {value!r}")
    return tuple(dict.fromkeys(int(value) for value in values))


def _check_block_size(block_size: int | None) -> int | None:
    if block_size is None:
        return None
    if (
        isinstance(block_size, bool)
        or not isinstance(block_size, int | np.integer)
        or block_size < 1
    ):
        raise EmbeddingError(f"block_size: expected a positive integer, got {block_size!r}")
    return int(block_size)


def _check_query_index(query_index: ArrayLike | Sequence[int] | None, n: int) -> np.ndarray | None:
    """Validate sampled query rows; returned ascending so results do not depend on their order."""
    if query_index is None:
        return None
    if isinstance(query_index, torch.Tensor):
        query_index = query_index.detach().cpu().numpy()
    idx = np.asarray(query_index)
    if idx.ndim != 1 or idx.size == 0:
        raise EmbeddingError(f"query_index: expected a non-empty 1-D array, got shape {idx.shape}")
    if not np.issubdtype(idx.dtype, np.integer):
        raise EmbeddingError(f"query_index: expected integer row indices, got dtype {idx.dtype}")
    idx = np.sort(idx.astype(np.int64))
    if idx[0] < 0 or idx[-1] >= n:
        bad = idx[0] if idx[0] < 0 else idx[-1]
        raise EmbeddingError(f"query_index: row {bad} is out of range for {n} queries")
    repeated = idx[1:][idx[1:] == idx[:-1]]
    if repeated.size:
        raise EmbeddingError(f"query_index: row {repeated[0]} is given more than once")
    return idx
