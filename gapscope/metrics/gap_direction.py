"""Where the modality gap points: in the directions the content varies along, or apart from them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from gapscope.engine.moments import spectrum, unit_scatter
from gapscope.engine.validation import (
    ArrayLike,
    check_counts,
    check_embeddings,
    check_same_dim,
)

__all__ = ["direction_from_moments", "GapDirection", "gap_direction"]


@dataclass(frozen=True)
class GapDirection:
    """The gap vector's direction relative to the principal axes (plain Python floats).

    Attributes:
        gap: ``||g||_2`` with ``g = mean_i x_i - mean_j y_j`` on unit rows.
        pc_share: K -> share of ``||g||^2`` in the top K principal directions of the pooled
            within-modality covariance, ``||V_K^T g||^2 / ||g||^2``, counting only directions
            with spread (below 1.0 for every K when the covariance is singular and ``g``
            leaves its span); 0.0 when ``g == 0``.
        pc_share_chance: K -> ``K / d``, the expected share of a random direction.
        coordinate_share: K -> share of ``||g||^2`` in its K largest coordinates.
        axis_cosine_x: ``|cos(g, v_x)|`` with ``v_x`` the first principal axis of ``x``
            alone; NaN when ``g == 0`` or ``x`` has no spread.
        axis_cosine_y: the same for ``y``.
        vector: ``g``, float64, read-only.
    """

    gap: float
    pc_share: dict[int, float]
    pc_share_chance: dict[int, float]
    coordinate_share: dict[int, float]
    axis_cosine_x: float
    axis_cosine_y: float
    vector: np.ndarray = field(compare=False, repr=False)


def _check_top(top: int | Sequence[int]) -> tuple[int, ...]:
    return check_counts(top, "top", "numbers of directions")


def _first_axis_cosine(values: np.ndarray, vectors: np.ndarray, unit_gap: np.ndarray) -> float:
    if values[0] <= 0.0:
        return math.nan
    # Eigenvectors have no sign, so only the absolute cosine is meaningful.
    return float(min(1.0, abs(float(vectors[:, 0] @ unit_gap))))


def gap_direction(
    x: ArrayLike,
    y: ArrayLike,
    top: int | Sequence[int] = (1, 10),
    *,
    block_size: int | None = None,
) -> GapDirection:
    """How the modality gap vector lies relative to the directions the data varies along.

    With ``x_i``, ``y_j`` the L2-normalised rows, ``g = mean_i x_i - mean_j y_j`` (the gap of
    Liang et al. 2022, "Mind the Gap"), ``S_x``, ``S_y`` each modality's covariance about its
    own mean (ddof = 0) and ``S_w = (S_x + S_y) / 2`` the pooled within-modality covariance
    (each modality weighted equally, whatever its row count), with eigenvectors
    ``v_1, v_2, ...`` by descending eigenvalue:

        pc_share[K]         = sum_{k<=K} <v_k, g>^2 / ||g||^2,
        coordinate_share[K] = (sum of the K largest g_k^2) / ||g||^2,
        axis_cosine_x       = |<v_x, g>| / ||g||,  v_x the first eigenvector of S_x.

    A gap confined to directions the content does not vary along (small ``pc_share``, near its
    chance value ``K / d``) can be removed without touching what the embeddings encode; a gap
    along the top content directions cannot. Schrodi et al. (2025), "Two Effects, One
    Trigger", report that CLIP's gap is carried by a few embedding dimensions, which
    ``coordinate_share`` measures. Exact, in float64, O((n + m) d^2 + d^3) time, O(d^2) memory.

    Args:
        x: first modality, shape ``(n, d)``; numpy array (memmaps welcome) or torch tensor.
        y: second modality, shape ``(m, d)``.
        top: the K values (positive integers). ``K >= d`` gives a ``coordinate_share`` of
            1.0, and a ``pc_share`` of 1.0 only when the pooled covariance has full rank:
            directions without spread are not principal, so with fewer rows than
            dimensions (``n + m - 2 < d``) or collapsed directions, the part of ``g`` outside
            the spread stays out of every ``pc_share`` (``pc_share_chance`` is still ``K /
            d``).
        block_size: rows read at a time; ``None`` picks one from ``d``.

    Returns:
        A :class:`GapDirection`. When ``g == 0`` every share is 0.0 and both cosines NaN; when
        a modality has no spread its cosine is NaN (its first axis is undefined). When the top
        eigenvalue is tied, any axis of the tied space is "first"; the reported cosine is for
        the one ``numpy.linalg.eigh`` returns.

    Raises:
        EmbeddingError: bad arrays or different ``d``.
        GapscopeError: a bad ``top`` or ``block_size``.

    Example:
        >>> c, s = 0.6, 0.8
        >>> x = np.array([[c, s, 0.0], [c, -s, 0.0]])
        >>> y = np.array([[-c, 0.0, s], [-c, 0.0, -s]])
        >>> r = gap_direction(x, y, top=(1, 2))
        >>> round(r.gap, 6), r.pc_share, r.coordinate_share[1]
        (1.2, {1: 0.0, 2: 0.0}, 1.0)
        >>> r.axis_cosine_x, r.axis_cosine_y
        (0.0, 0.0)
    """
    xa = check_embeddings(x, "x")
    ya = check_embeddings(y, "y")
    check_same_dim(xa, ya)
    ks = _check_top(top)
    mu_x, scatter_x = unit_scatter(xa, block_size=block_size)
    mu_y, scatter_y = unit_scatter(ya, block_size=block_size)
    return direction_from_moments(
        (mu_x, scatter_x, xa.shape[0]), (mu_y, scatter_y, ya.shape[0]), ks
    )


def direction_from_moments(
    moments_x: tuple[np.ndarray, np.ndarray, int],
    moments_y: tuple[np.ndarray, np.ndarray, int],
    top: int | Sequence[int] = (1, 10),
) -> GapDirection:
    """:func:`gap_direction` from each modality's ``(mean, centred scatter, rows)`` of its unit
    rows (see :func:`gapscope.engine.moments.unit_scatter`), for callers that have them."""
    ks = _check_top(top)
    mu_x, scatter_x, n = moments_x
    mu_y, scatter_y, m = moments_y
    d = mu_x.shape[0]
    g = mu_x - mu_y
    g.flags.writeable = False
    total = float(g @ g)
    chance = {k: min(1.0, k / d) for k in ks}
    if total <= 0.0:
        zero = {k: 0.0 for k in ks}
        return GapDirection(0.0, zero, chance, dict(zero), math.nan, math.nan, g)

    pooled = (scatter_x / n + scatter_y / m) / 2.0
    values_w, vectors_w = spectrum(pooled, scale=1.0)
    projections = (vectors_w.T @ g) ** 2
    # Directions with no spread are not "principal"; the ranking only counts spread ones.
    projections[values_w <= 0.0] = 0.0
    cumulative = np.cumsum(projections) / total
    pc_share = {k: float(min(1.0, cumulative[min(k, d) - 1])) for k in ks}

    squares = np.sort(g * g)[::-1]
    coord = np.cumsum(squares) / total
    coordinate_share = {k: float(min(1.0, coord[min(k, d) - 1])) for k in ks}

    unit_gap = g / math.sqrt(total)
    values_x, vectors_x = spectrum(scatter_x, scale=float(n))
    values_y, vectors_y = spectrum(scatter_y, scale=float(m))
    return GapDirection(
        gap=math.sqrt(total),
        pc_share=pc_share,
        pc_share_chance=chance,
        coordinate_share=coordinate_share,
        axis_cosine_x=_first_axis_cosine(values_x, vectors_x, unit_gap),
        axis_cosine_y=_first_axis_cosine(values_y, vectors_y, unit_gap),
        vector=g,
    )
