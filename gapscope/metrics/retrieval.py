"""Retrieval metrics: recall@K across modalities, recall@K, mAP and R-precision within one.

Queries are ranked against keys by cosine similarity on L2-normalised rows, exactly and
deterministically (ties to the lower index; see :mod:`gapscope.engine.ranking`). "Exactly"
is the exact order of the dot products of the rows as normalised in float32 (or bfloat16
with ``--precision bf16``): float64 inputs whose cosines differ by less than that rounding
(~1e-7) tie there, and go to the lower index. Both
functions are thin over the passes an analysis runs (:mod:`gapscope.engine.passes`): the same
input gives the same numbers here and in ``gapscope analyze``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from gapscope.engine.passes import cross_pass, modality_pass
from gapscope.engine.ranking import RetrievalResult
from gapscope.engine.unit_rows import UnitRows
from gapscope.engine.validation import ArrayLike, check_embeddings, check_groups
from gapscope.errors import EmbeddingError

__all__ = ["RetrievalResult", "cross_modal_retrieval", "intra_modal_retrieval"]


def cross_modal_retrieval(
    queries: ArrayLike | UnitRows,
    keys: ArrayLike | UnitRows,
    query_groups: ArrayLike | Sequence[int] | None = None,
    key_groups: ArrayLike | Sequence[int] | None = None,
    *,
    k: int | Sequence[int] = (1, 5, 10),
    block_size: int | None = None,
    device: str | torch.device | None = None,
    query_index: ArrayLike | Sequence[int] | None = None,
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
        block_size: rows per similarity block; ``None`` lets the shapes decide.
        device: ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available) for the matrix products.
        query_index: optional 1-D array of distinct query row indices: evaluate only these
            queries (still against all keys) and report standard errors (see ``se`` below).

    Returns:
        :class:`~gapscope.engine.ranking.RetrievalResult` with ``recall`` (``None`` values
        when no query has a positive), ``n_queries`` (queries with a positive), ``n_skipped``
        (queries without) and each query's first-positive rank (``first_rank``). With
        ``query_index``, ``se["R@K"]`` is the standard error of each mean: the per-query hit
        indicators' standard deviation (ddof=1) over ``sqrt(q)``, times the finite population
        correction ``sqrt((N - q) / (N - 1))``, where ``q`` sampled queries and ``N`` queries
        in all are eligible. It is 0 when ``q == N`` and NaN when ``q < 2 < N``.

    Raises:
        EmbeddingError: NaN/Inf or zero rows, a dimension mismatch, group vectors of the wrong
            length or dtype.
        GapscopeError: a non-positive or non-integer K, a bad ``block_size`` or
            ``query_index``.

    Example:
        >>> import numpy as np
        >>> images = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
        >>> texts = np.array([[1.0, 0.0], [1.0, -0.2]], dtype=np.float32)
        >>> result = cross_modal_retrieval(images, texts, k=(1, 5))
        >>> result.recall
        {1: 0.5, 5: 1.0}
        >>> result.n_queries, result.n_skipped
        (2, 0)
    """
    q_arr = queries if isinstance(queries, UnitRows) else check_embeddings(queries, "queries")
    k_arr = keys if isinstance(keys, UnitRows) else check_embeddings(keys, "keys")
    result, _ = cross_pass(
        q_arr,
        k_arr,
        query_groups,
        key_groups,
        k=k,
        block_size=block_size,
        device=device,
        query_index_x=query_index,
        directions=("x_to_y",),
    )
    assert result is not None
    return result


def intra_modal_retrieval(
    x: ArrayLike | UnitRows,
    relevance: ArrayLike | Sequence[int],
    *,
    k: int | Sequence[int] = (1, 5, 10),
    block_size: int | None = None,
    device: str | torch.device | None = None,
    query_index: ArrayLike | Sequence[int] | None = None,
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
        block_size: rows per similarity block; ``None`` lets the shapes decide.
        device: ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available) for the matrix products.
        query_index: optional 1-D array of distinct row indices: evaluate only these queries
            (still against all rows) and report standard errors.

    Returns:
        :class:`~gapscope.engine.ranking.RetrievalResult` with ``recall``,
        ``mean_average_precision`` and ``r_precision`` (``None`` when no query has a relevant
        row), ``n_queries`` and ``n_skipped``. With ``query_index``, ``se`` holds the
        standard error of each mean (``"R@K"``, ``"mAP"``, ``"R-precision"``): the per-query
        values' standard deviation (ddof=1) over ``sqrt(q)`` times ``sqrt((N - q) / (N - 1))``,
        with ``q`` sampled and ``N`` total eligible queries; 0 when ``q == N``, NaN when
        ``q < 2 < N``.

    Raises:
        EmbeddingError: NaN/Inf or zero rows, ``relevance`` of the wrong length or dtype.
        GapscopeError: a non-positive or non-integer K, a bad ``block_size`` or
            ``query_index``.

    Example:
        >>> import numpy as np
        >>> x = np.array([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6], [0.0, 1.0]], dtype=np.float32)
        >>> result = intra_modal_retrieval(x, [0, 0, 1, 1], k=(1, 2))
        >>> result.recall
        {1: 0.0, 2: 0.5}
        >>> round(result.mean_average_precision, 4), result.r_precision
        (0.4167, 0.0)
    """
    arr = x if isinstance(x, UnitRows) else check_embeddings(x, "x")
    if check_groups(relevance, arr.shape[0], "relevance") is None:
        raise EmbeddingError("relevance: expected integer codes, got None")
    r = modality_pass(
        arr,
        relevance,
        k=k,
        uniformity=False,
        block_size=block_size,
        device=device,
        query_index=query_index,
    )
    assert r.retrieval is not None
    return r.retrieval
