"""Modality gap: the distance between the centroids of two modalities on the unit sphere."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gapscope.engine.moments import unit_sums
from gapscope.engine.validation import ArrayLike, check_embeddings, check_same_dim

__all__ = ["ModalityGap", "gap_from_means", "modality_gap"]


@dataclass(frozen=True)
class ModalityGap:
    """The modality gap vector and summaries of it (plain Python floats).

    Attributes:
        gap: ``||g||_2`` with ``g = mean_i x_i - mean_j y_j`` on L2-normalised rows.
        centroid_norm_x: ``||mean_i x_i||_2`` (1 when every row points the same way).
        centroid_norm_y: ``||mean_j y_j||_2``.
        centroid_cosine: cosine between the two centroids; 0.0 when either centroid is 0.
        top1_share: share of ``||g||^2`` in its largest coordinate (largest ``g_k^2``);
            0.0 when ``g == 0``.
        top10_share: share of ``||g||^2`` in its 10 largest coordinates (1.0 when
            ``d <= 10``); 0.0 when ``g == 0``.
        vector: ``g`` itself, float64, shape ``(d,)``, read-only.
    """

    gap: float
    centroid_norm_x: float
    centroid_norm_y: float
    centroid_cosine: float
    top1_share: float
    top10_share: float
    vector: np.ndarray = field(compare=False, repr=False)


def modality_gap(x: ArrayLike, y: ArrayLike, *, block_size: int | None = None) -> ModalityGap:
    """Modality gap between two sets of embeddings (Liang et al. 2022, "Mind the Gap").

    With ``x_i``, ``y_j`` the L2-normalised rows, the gap vector is
    ``g = (1/n) sum_i x_i - (1/m) sum_j y_j`` and the gap is ``||g||_2``. Each modality's mean
    is over its own rows, so ``n`` and ``m`` may differ (e.g. five captions an image).
    Concentration: ``top1_share = max_k g_k^2 / ||g||^2`` and ``top10_share`` sums the 10
    largest ``g_k^2``; a gap carried by a few coordinates gives shares near 1.

    Rows are normalised and summed in float64, one block of rows at a time (memory
    O(block_size * d)). Edge cases: when ``g`` is exactly 0 (e.g. ``x`` equal to ``y``) the
    gap and both shares are 0.0; when a centroid is exactly 0 the centroid cosine is 0.0.

    Args:
        x: first modality, shape ``(n, d)``, float16/32/64 numpy array (memmaps welcome) or
            torch tensor; rows need not be normalised.
        y: second modality, shape ``(m, d)``, same ``d``.
        block_size: rows normalised at a time; ``None`` picks one from ``d``.

    Returns:
        A :class:`ModalityGap` of plain floats plus the gap vector.

    Raises:
        EmbeddingError: non-2-D, non-float, NaN/Inf or zero rows, or different ``d``.

    Example:
        >>> x = np.array([[3.0, 4.0]])
        >>> y = np.array([[1.0, 0.0], [2.0, 0.0]])
        >>> g = modality_gap(x, y)
        >>> round(g.gap, 4), round(g.centroid_cosine, 4), round(g.top1_share, 4)
        (0.8944, 0.6, 0.8)
        >>> g.vector.round(4).tolist()
        [-0.4, 0.8]
    """
    xa = check_embeddings(x, "x")
    ya = check_embeddings(y, "y")
    check_same_dim(xa, ya)
    return gap_from_means(unit_sums(xa, block_size).mean, unit_sums(ya, block_size).mean)


def gap_from_means(mean_x: np.ndarray, mean_y: np.ndarray) -> ModalityGap:
    """:func:`modality_gap` from the two centroids (the means of the unit rows), for callers
    that already have them (an analysis computes each modality's once).

    >>> round(gap_from_means(np.array([0.6, 0.8]), np.array([1.0, 0.0])).gap, 4)
    0.8944
    """
    vector = np.asarray(mean_x, dtype=np.float64) - np.asarray(mean_y, dtype=np.float64)
    vector.flags.writeable = False
    norm_x = float(np.linalg.norm(mean_x))
    norm_y = float(np.linalg.norm(mean_y))
    if norm_x > 0.0 and norm_y > 0.0:
        cosine = float(np.clip(np.dot(mean_x, mean_y) / (norm_x * norm_y), -1.0, 1.0))
    else:
        cosine = 0.0
    squares = vector * vector
    total = float(squares.sum())
    if total > 0.0:
        largest = np.sort(squares)[::-1]
        top1 = float(largest[0] / total)
        top10 = float(min(1.0, largest[:10].sum() / total))
    else:
        top1 = top10 = 0.0
    return ModalityGap(
        gap=float(np.sqrt(total)),
        centroid_norm_x=norm_x,
        centroid_norm_y=norm_y,
        centroid_cosine=cosine,
        top1_share=top1,
        top10_share=top10,
        vector=vector,
    )
