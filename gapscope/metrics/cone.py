"""Cone effect: how narrow a cone the rows of one modality occupy on the unit sphere."""

from __future__ import annotations

from gapscope.engine.moments import UnitSums, unit_sums
from gapscope.engine.validation import ArrayLike, check_embeddings

__all__ = ["cone_effect", "cone_from_sums"]


def cone_effect(x: ArrayLike, *, block_size: int | None = None) -> float:
    """Mean cosine similarity between distinct rows of one modality (Liang et al. 2022, Fig. 2a).

    With ``x_i`` the L2-normalised rows, the sum over ordered pairs ``i != j`` of
    ``<x_i, x_j>`` is ``||sum_i x_i||^2 - sum_i ||x_i||^2``, so

        cone = (||sum_i x_i||^2 - sum_i ||x_i||^2) / (n (n - 1)),

    exact in O(n d) time and O(block_size * d) memory (float64 sums). The diagonal is left out
    (the paper's Fig. 2b keeps it): 1 means all rows point the same way, 0 is e.g. an
    orthonormal set, and the minimum is ``-1 / (n - 1)`` (rows summing to zero).

    Args:
        x: embeddings, shape ``(n, d)`` with ``n >= 2``, float16/32/64 numpy array or torch
            tensor; rows need not be normalised.
        block_size: rows normalised at a time; ``None`` picks one from ``d``.

    Returns:
        The mean pairwise cosine, a float in ``[-1/(n-1), 1]``.

    Raises:
        EmbeddingError: fewer than 2 rows, non-2-D, non-float, NaN/Inf or zero rows.

    Example:
        >>> import numpy as np
        >>> round(cone_effect(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])), 4)
        0.4714
    """
    xa = check_embeddings(x, "x", min_rows=2)
    return cone_from_sums(unit_sums(xa, block_size))


def cone_from_sums(sums: UnitSums) -> float:
    """:func:`cone_effect` from a modality's :class:`~gapscope.engine.moments.UnitSums`."""
    n = sums.n
    value = (float(sums.total @ sums.total) - sums.squares) / (n * (n - 1))
    return min(1.0, value)
