"""Temperature-free statistics of cross-modal cosines: positives against negatives."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from gapscope.engine.blocks import (
    NegativePairIndex,
    PairIndex,
    positive_pair_counts,
    resolve_scan_rows,
)
from gapscope.engine.distributed import current_share
from gapscope.engine.normalization import unit_rows
from gapscope.engine.sampling import Stream, generator
from gapscope.engine.validation import (
    ArrayLike,
    check_count,
    check_embeddings,
    check_same_dim,
    pair_groups,
)
from gapscope.errors import EmbeddingError, GapscopeError

__all__ = ["DEFAULT_QUANTILES", "HISTOGRAM_BINS", "SimilarityStats", "similarity_stats"]

#: Quantile levels reported for each distribution.
DEFAULT_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
#: Fixed histogram bins on [-1, 1] (width 0.01), so histograms of any two runs line up.
HISTOGRAM_BINS = 200


@dataclass(frozen=True)
class SimilarityStats:
    """Distributions of positive-pair and negative-pair cosines and how much they overlap.

    Attributes:
        positive_mean: mean cosine over every positive pair (exact).
        positive_quantiles: level -> quantile of the positive cosines (exact).
        negative_mean: mean over the negatives used; ``None`` when there are no negatives.
        negative_quantiles: level -> quantile of the negatives used, or ``None``.
        overlap: overlap coefficient of the two histograms, ``sum_b min(P_b, N_b)`` with
            ``P_b``, ``N_b`` the share of positives / negatives in bin b; in [0, 1], 0 when the
            distributions are apart, 1 when identical. ``None`` without negatives.
        negatives_above_median_positive: share of negatives whose cosine is above the median
            positive cosine; ``None`` without negatives.
        auc: probability that a random positive pair has a higher cosine than a random negative
            pair, ties counted one half (the ROC AUC of the cosine as a pair detector);
            ``None`` without negatives.
        n_positive: number of positive pairs.
        n_negative: number of negative pairs used (all, or the sample).
        n_negative_total: number of negative pairs there are.
        negatives_sampled: whether the negatives are a sample.
        bin_edges: the ``HISTOGRAM_BINS + 1`` edges on [-1, 1].
        positive_counts: positives per bin (int64).
        negative_counts: negatives used per bin (int64; zeros without negatives).
    """

    positive_mean: float
    positive_quantiles: dict[float, float]
    negative_mean: float | None
    negative_quantiles: dict[float, float] | None
    overlap: float | None
    negatives_above_median_positive: float | None
    auc: float | None
    n_positive: int
    n_negative: int
    n_negative_total: int
    negatives_sampled: bool
    bin_edges: np.ndarray = field(compare=False, repr=False)
    positive_counts: np.ndarray = field(compare=False, repr=False)
    negative_counts: np.ndarray = field(compare=False, repr=False)


def _indexed_cosines(xa, ya, index: PairIndex | NegativePairIndex, chunk: int) -> np.ndarray:
    """The cosine of every pair of ``index``, in pair order, ``chunk`` pairs at a time.
    Processes sharing the passes (:mod:`~gapscope.engine.distributed`) take the chunks in
    turn, and every process gets every cosine: each depends on its pair alone."""
    out = np.empty(index.total)

    def make(start: int, stop: int) -> np.ndarray:
        i, j = index.at(np.arange(start, stop, dtype=np.int64))
        return _cosines(xa, ya, i, j)

    # A thread holds both sides' rows of a chunk, as read and as unit rows.
    current_share().rows_in_order(out, chunk, make, lane_bytes=4 * chunk * xa.shape[1] * 8)
    return out


def _cosines(xa, ya, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """``<x_i, y_j>`` of the unit rows, pair by pair. Every cosine of the metric is made
    here, positive or negative, all or sampled: two pairs that are equal in exact arithmetic
    (a duplicated row) get equal cosines, so they tie as the AUC counts ties, whatever the
    block size (a product of blocks would round them apart)."""
    return np.einsum("ij,ij->i", unit_rows(xa[i]), unit_rows(ya[j]))


def _sampled_negative_cosines(xa, ya, gx, gy, count: int, seed: int, chunk: int) -> np.ndarray:
    # Uniform over all (i, j) cells with replacement, positives rejected: a uniform sample of
    # the negative pairs. Drawing in rounds keeps memory O(count) whatever the acceptance rate.
    rng = generator(seed, Stream.NEGATIVE_PAIRS)
    n, m = xa.shape[0], ya.shape[0]
    got_i: list[np.ndarray] = []
    got_j: list[np.ndarray] = []
    have = 0
    while have < count:
        draw = max(1024, 2 * (count - have))
        i = rng.integers(0, n, size=draw)
        j = rng.integers(0, m, size=draw)
        keep = gx[i] != gy[j]
        got_i.append(i[keep])
        got_j.append(j[keep])
        have += int(keep.sum())
    i = np.concatenate(got_i)[:count]
    j = np.concatenate(got_j)[:count]
    out = np.empty(count)
    # Shared among processes as the positives are.
    current_share().rows_in_order(
        out,
        chunk,
        lambda start, stop: _cosines(xa, ya, i[start:stop], j[start:stop]),
        lane_bytes=4 * chunk * xa.shape[1] * 8,
    )
    return out


def _auc(positives: np.ndarray, negatives_sorted: np.ndarray) -> float:
    below = np.searchsorted(negatives_sorted, positives, side="left")
    not_above = np.searchsorted(negatives_sorted, positives, side="right")
    wins = below.sum(dtype=np.float64) + 0.5 * (not_above - below).sum(dtype=np.float64)
    return float(wins / (positives.size * negatives_sorted.size))


def similarity_stats(
    x: ArrayLike,
    y: ArrayLike,
    groups_x: ArrayLike | Sequence[int] | None = None,
    groups_y: ArrayLike | Sequence[int] | None = None,
    *,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    max_negatives: int = 200_000,
    seed: int = 0,
    block_size: int | None = None,
) -> SimilarityStats:
    """Quantiles of positive-pair and negative-pair cosines, and how much the two overlap.

    Temperature-free: these are the raw cosines a contrastive loss turns into logits, so they
    compare across models with different learned temperatures. A positive pair is ``(i, j)``
    with equal group codes (without groups, row i with row i); every other cross pair is a
    negative. With ``x_i``, ``y_j`` L2-normalised, each pair's value is ``<x_i, y_j>``.

    - Positives are all used, exactly.
    - Negatives are all used when there are at most ``max_negatives`` of them; otherwise
      ``max_negatives`` negative pairs are drawn uniformly with replacement (seed stream
      ``NEGATIVE_PAIRS`` of :mod:`gapscope.engine.sampling`: uniform cells ``(i, j)``,
      positives rejected) and their statistics are estimates. The full ``n x m`` matrix is
      never held: every cosine, positive or negative, is made pair by pair the same way,
      so pairs equal in exact arithmetic (a duplicated row) tie whatever the block size.
    - Quantiles use numpy's default (linear) interpolation.
    - ``overlap = sum_b min(pos_b / |P|, neg_b / |N|)`` over ``HISTOGRAM_BINS`` equal bins on
      [-1, 1] (the overlap coefficient of the two histograms; lower is better).
    - ``negatives_above_median_positive = #{negatives > median positive} / |N|`` (lower is
      better; 0.5 when the two distributions coincide).
    - ``auc = P(s_pos > s_neg) + P(s_pos = s_neg) / 2`` over all (positive, negative) pairs of
      pairs, by sorting (Mann-Whitney U / (|P| |N|)); 1 means every positive beats every
      negative, 0.5 chance.

    Args:
        x: first modality, shape ``(n, d)``; numpy array (memmaps welcome) or torch tensor.
        y: second modality, shape ``(m, d)``.
        groups_x: integer group code per row of ``x`` (or ``None``, with ``groups_y`` ``None``).
        groups_y: integer group code per row of ``y``.
        quantiles: levels in [0, 1].
        max_negatives: negatives used at most (>= 1).
        seed: seed of the negative sample (used only when sampling).
        block_size: rows per block; ``None`` picks one from the sizes.

    Returns:
        A :class:`SimilarityStats`. When every cross pair is positive, the negative fields are
        ``None`` and ``n_negative`` is 0.

    Raises:
        EmbeddingError: bad arrays or groups, different ``d``, or no positive pair.
        GapscopeError: a quantile outside [0, 1] or ``max_negatives < 1``.

    Example:
        >>> x = np.array([[1.0, 0.0], [0.0, 1.0]])
        >>> s = similarity_stats(x, x, quantiles=(0.5,))
        >>> s.positive_quantiles, s.negative_quantiles, s.auc, s.overlap
        ({0.5: 1.0}, {0.5: 0.0}, 1.0, 0.0)
    """
    xa = check_embeddings(x, "x")
    ya = check_embeddings(y, "y")
    check_same_dim(xa, ya)
    gx, gy = pair_groups(xa, ya, groups_x, groups_y)
    levels = tuple(float(q) for q in quantiles)
    if not levels or any(not 0.0 <= q <= 1.0 for q in levels):
        raise GapscopeError(f"quantiles: expected levels in [0, 1], got {tuple(quantiles)!r}")
    max_negatives = check_count(max_negatives, "max_negatives")

    n, m, d = xa.shape[0], ya.shape[0], xa.shape[1]
    n_pos = int(positive_pair_counts(gx, gy).sum())
    if n_pos == 0:
        raise EmbeddingError(
            "no positive pairs: no group code occurs in both x groups and y groups"
        )
    n_neg_total = n * m - n_pos
    chunk = resolve_scan_rows(block_size, d, bytes_per_entry=40)
    positives = _indexed_cosines(xa, ya, PairIndex(gx, gy), chunk)
    sampled = n_neg_total > max_negatives
    if n_neg_total == 0:
        negatives = np.empty(0)
    elif sampled:
        negatives = _sampled_negative_cosines(xa, ya, gx, gy, int(max_negatives), seed, chunk)
    else:
        negatives = _indexed_cosines(xa, ya, NegativePairIndex(gx, gy), chunk)
    # Rounding can put a cosine of parallel unit vectors a hair outside [-1, 1].
    np.clip(positives, -1.0, 1.0, out=positives)
    np.clip(negatives, -1.0, 1.0, out=negatives)

    edges = np.linspace(-1.0, 1.0, HISTOGRAM_BINS + 1)
    pos_counts = np.histogram(positives, bins=edges)[0].astype(np.int64)
    neg_counts = np.histogram(negatives, bins=edges)[0].astype(np.int64)
    pos_q = {q: float(v) for q, v in zip(levels, np.quantile(positives, levels), strict=True)}
    if negatives.size == 0:
        neg_mean = neg_q = overlap = above = auc = None
    else:
        neg_q = {q: float(v) for q, v in zip(levels, np.quantile(negatives, levels), strict=True)}
        neg_mean = float(negatives.mean())
        overlap = float(np.minimum(pos_counts / positives.size, neg_counts / negatives.size).sum())
        median_pos = float(np.median(positives))
        above = float(np.count_nonzero(negatives > median_pos) / negatives.size)
        auc = _auc(positives, np.sort(negatives))
    return SimilarityStats(
        positive_mean=float(positives.mean()),
        positive_quantiles=pos_q,
        negative_mean=neg_mean,
        negative_quantiles=neg_q,
        overlap=overlap,
        negatives_above_median_positive=above,
        auc=auc,
        n_positive=n_pos,
        n_negative=int(negatives.size),
        n_negative_total=int(n_neg_total),
        negatives_sampled=bool(sampled),
        bin_edges=edges,
        positive_counts=pos_counts,
        negative_counts=neg_counts,
    )
