"""Linear centred kernel alignment (CKA) between paired rows of two modalities."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gapscope.engine.blocks import (
    positive_pair_counts,
    positive_pairs_at,
    resolve_scan_rows,
    row_blocks,
)
from gapscope.engine.normalization import unit_rows
from gapscope.engine.sampling import Stream, generator
from gapscope.engine.validation import (
    ArrayLike,
    check_count,
    check_embeddings,
    check_same_dim,
    pair_groups,
)
from gapscope.errors import EmbeddingError

__all__ = ["CKAResult", "linear_cka"]


@dataclass(frozen=True)
class CKAResult:
    """Linear CKA over the positive pairs (plain Python numbers).

    Attributes:
        cka: the similarity in [0, 1]; NaN when either side has no spread over the pairs.
        n_pairs: positive pairs in all.
        n_used: pairs the value was computed from (``n_pairs`` unless sampled).
    """

    cka: float
    n_pairs: int
    n_used: int


def linear_cka(
    x: ArrayLike,
    y: ArrayLike,
    groups_x: ArrayLike | Sequence[int] | None = None,
    groups_y: ArrayLike | Sequence[int] | None = None,
    *,
    max_pairs: int | None = None,
    seed: int = 0,
    block_size: int | None = None,
) -> CKAResult:
    """Linear centred kernel alignment between paired rows of two modalities (Kornblith et al.
    2019, "Similarity of Neural Network Representations Revisited", eq. for linear CKA).

    Each positive pair (equal group codes; without groups row i with row i) contributes one
    row ``x_i`` to ``A`` and its partner ``y_j`` to ``B`` (L2-normalised rows, so a many-to-one
    group repeats the shared row, weighting pairs equally as alignment does). With ``A_c``,
    ``B_c`` the column-centred ``p x d`` matrices,

        CKA = ||B_c^T A_c||_F^2 / (||A_c^T A_c||_F * ||B_c^T B_c||_F),

    in [0, 1]: 1 when the paired rows have the same geometry up to a rotation and isotropic
    scaling (e.g. ``B = A Q`` with ``Q`` orthogonal); near 0 for unrelated rows (for
    independent random rows its expected value is about ``d / p``, a small-sample bias).
    Unlike the paired cosine it ignores where each modality sits (the gap) and asks whether
    the two modalities arrange the same items the same way.

    Computed from ``d x d`` cross-products in float64, pair blocks at a time (two passes over
    the pairs: means, then centred products; O(p d^2) time, O(d^2) memory). With
    ``max_pairs`` and more positive pairs than that, ``max_pairs`` pair numbers are drawn
    uniformly without replacement (seed stream ``CKA_PAIRS`` of
    :mod:`gapscope.engine.sampling`) and CKA is computed on those pairs.

    Args:
        x: first modality, shape ``(n, d)``; numpy array (memmaps welcome) or torch tensor.
        y: second modality, shape ``(m, d)``.
        groups_x: integer group code per row of ``x`` (or ``None``, with ``groups_y`` ``None``).
        groups_y: integer group code per row of ``y``.
        max_pairs: most pairs used (``None``: all).
        seed: seed of the pair sample.
        block_size: pairs per block; ``None`` picks one from ``d``.

    Returns:
        A :class:`CKAResult`; ``cka`` is NaN when all paired rows of a side are equal.

    Raises:
        EmbeddingError: bad arrays or groups, different ``d``, or fewer than 2 positive pairs.
        GapscopeError: ``max_pairs < 2``.

    Example:
        >>> x = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
        >>> round(linear_cka(x, x[:, ::-1]).cka, 6)
        1.0
        >>> round(linear_cka(x, np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])).cka, 4)
        0.7906
    """
    xa = check_embeddings(x, "x")
    ya = check_embeddings(y, "y")
    check_same_dim(xa, ya)
    gx, gy = pair_groups(xa, ya, groups_x, groups_y)
    if max_pairs is not None:
        max_pairs = check_count(max_pairs, "max_pairs", minimum=2)
    n_pairs = int(positive_pair_counts(gx, gy).sum())
    if n_pairs < 2:
        raise EmbeddingError(f"CKA needs at least 2 positive pairs, got {n_pairs}")
    if max_pairs is not None and n_pairs > max_pairs:
        rng = generator(seed, Stream.CKA_PAIRS)
        numbers = np.sort(rng.choice(n_pairs, size=max_pairs, replace=False))
    else:
        numbers = np.arange(n_pairs, dtype=np.int64)
    pi, pj = positive_pairs_at(gx, gy, numbers)

    d = xa.shape[1]
    chunk = resolve_scan_rows(block_size, d, bytes_per_entry=48)
    mean_a = np.zeros(d)
    mean_b = np.zeros(d)
    for start, stop in row_blocks(pi.size, chunk):
        mean_a += unit_rows(xa[pi[start:stop]]).sum(axis=0)
        mean_b += unit_rows(ya[pj[start:stop]]).sum(axis=0)
    mean_a /= pi.size
    mean_b /= pi.size
    aa = np.zeros((d, d))
    bb = np.zeros((d, d))
    ba = np.zeros((d, d))
    for start, stop in row_blocks(pi.size, chunk):
        a = unit_rows(xa[pi[start:stop]]) - mean_a
        b = unit_rows(ya[pj[start:stop]]) - mean_b
        aa += a.T @ a
        bb += b.T @ b
        ba += b.T @ a
    norm_a = float(np.linalg.norm(aa))
    norm_b = float(np.linalg.norm(bb))
    # Spread at rounding level (all paired rows equal) leaves CKA undefined.
    tiny = pi.size * d * np.finfo(np.float64).eps
    if norm_a <= tiny or norm_b <= tiny:
        value = math.nan
    else:
        value = float(min(1.0, max(0.0, float(np.sum(ba * ba)) / (norm_a * norm_b))))
    return CKAResult(cka=value, n_pairs=n_pairs, n_used=int(pi.size))
