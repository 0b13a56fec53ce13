"""Dimensional collapse of one modality: effective rank and the variance in the top components."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from gapscope.engine.moments import spectrum, unit_scatter
from gapscope.engine.validation import ArrayLike, check_counts, check_embeddings

__all__ = ["collapse_from_scatter", "DimensionalCollapse", "dimensional_collapse", "effective_rank"]


@dataclass(frozen=True)
class DimensionalCollapse:
    """How many directions one modality really uses (plain Python floats).

    Attributes:
        effective_rank: ``exp(H(p))`` of the normalised singular values (Roy & Vetterli 2007),
            in ``[1, rank]``; 0.0 when the (centred) rows have no spread at all.
        rank: number of non-zero singular values (rounding-level ones excluded).
        variance_share: K -> share of the total variance in the top K principal components,
            ``sum_{k<=K} s_k^2 / sum_k s_k^2``; 0.0 for every K when there is no spread.
        singular_values: the singular values, descending, float64, read-only.
    """

    effective_rank: float
    rank: int
    variance_share: dict[int, float]
    singular_values: np.ndarray = field(compare=False, repr=False)


def _check_top(top: int | Sequence[int]) -> tuple[int, ...]:
    return check_counts(top, "top", "numbers of components")


def dimensional_collapse(
    x: ArrayLike,
    top: int | Sequence[int] = (1, 10),
    *,
    center: bool = True,
    block_size: int | None = None,
) -> DimensionalCollapse:
    """Effective rank and top-component variance shares of one modality's unit rows.

    The effective rank of Roy & Vetterli (2007), "The effective rank: a measure of effective
    dimensionality" (EUSIPCO): with ``s_1 >= ... >= s_r > 0`` the singular values of the
    (centred, by default) matrix of L2-normalised rows and ``p_k = s_k / sum_j s_j``,

        erank = exp(-sum_k p_k log p_k),

    which lies in ``[1, r]``: 1 when one direction carries everything, ``r`` when the ``r``
    directions are used equally. Data confined to ``k`` dimensions has ``erank <= k``. This is
    the quantity RankMe (Garrido et al. 2023) tracks for dimensional collapse. The variance
    share of the top K components is ``sum_{k<=K} s_k^2 / sum_k s_k^2`` (the PCA explained
    variance ratio).

    Centring (the default) measures the spread *around* the modality's mean, so the cone
    effect (a shared mean direction, see ``cone_effect``) does not count as a used dimension;
    ``center=False`` gives the uncentred (RankMe) form. Computed from the ``d x d`` scatter
    matrix in float64, one block of rows at a time (two passes, O(n d^2) time, O(d^2) memory);
    the singular values are the square roots of its eigenvalues, and eigenvalues at rounding
    level count as 0 (see ``_moments.spectrum``).

    Args:
        x: one modality, shape ``(n, d)``, float16/32/64 numpy array (memmaps welcome) or torch
            tensor; rows need not be normalised.
        top: the K of the variance shares (positive integers; K above the rank gives 1.0).
        center: subtract the mean of the unit rows first (default True).
        block_size: rows read at a time; ``None`` picks one from ``d``.

    Returns:
        A :class:`DimensionalCollapse`. With no spread (e.g. every row points the same way,
        centred) the effective rank and rank are 0 and every share is 0.0.

    Raises:
        EmbeddingError: non-2-D, non-float, NaN/Inf or zero rows.
        GapscopeError: a bad ``top`` or ``block_size``.

    Example:
        >>> x = np.array([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, -1.0, 0.0]])
        >>> c = dimensional_collapse(x, top=(1, 2))
        >>> round(c.effective_rank, 6), c.rank, c.variance_share
        (2.0, 2, {1: 0.5, 2: 1.0})
    """
    xa = check_embeddings(x, "x")
    ks = _check_top(top)
    _, scatter = unit_scatter(xa, center=center, block_size=block_size)
    return collapse_from_scatter(scatter, xa.shape[0], ks)


def collapse_from_scatter(
    scatter: np.ndarray, n: int, top: int | Sequence[int] = (1, 10)
) -> DimensionalCollapse:
    """:func:`dimensional_collapse` from the ``d x d`` scatter matrix of ``n`` unit rows (see
    :func:`gapscope.engine.moments.unit_scatter`), for callers that already have it."""
    ks = _check_top(top)
    values, _ = spectrum(scatter, scale=float(n))
    singular = np.sqrt(values)
    singular.flags.writeable = False
    positive = singular[singular > 0.0]
    if positive.size == 0:
        return DimensionalCollapse(0.0, 0, {k: 0.0 for k in ks}, singular)
    p = positive / positive.sum()
    entropy = -float(np.sum(p * np.log(p)))
    variance = positive * positive
    cumulative = np.cumsum(variance) / variance.sum()
    shares = {k: float(min(1.0, cumulative[min(k, positive.size) - 1])) for k in ks}
    # exp of a rounded entropy can overshoot the rank by an ulp; the bound is exact in theory.
    erank = min(float(positive.size), math.exp(entropy))
    return DimensionalCollapse(erank, int(positive.size), shares, singular)


def effective_rank(x: ArrayLike, *, center: bool = True, block_size: int | None = None) -> float:
    """Effective rank of one modality's unit rows (Roy & Vetterli 2007); see
    :func:`dimensional_collapse` for the definition, arguments and edge cases.

    Example:
        >>> round(effective_rank(np.eye(4), center=False), 6)
        4.0
    """
    return dimensional_collapse(x, 1, center=center, block_size=block_size).effective_rank
