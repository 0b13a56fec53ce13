"""Distances between the two modalities' distributions with the uniformity kernel.

The Gaussian kernel of uniformity, ``k(u, v) = exp(-t ||u - v||^2)`` on unit rows (t = 2),
summed over every cross pair, gives the cross-modal uniformity of Fahim et al. 2024 and, with
each modality's own uniformity, the kernel MMD between the modalities (Gretton et al. 2012,
as CMMD uses it for CLIP embeddings, Jayasumana et al. 2024). The cross sum is read from the
``X Y^T`` pass that cross-modal retrieval runs (:func:`gapscope.engine.passes.cross_pair_pass`)
and the two own sums from the ``X X^T`` passes of uniformity, so in ``gapscope analyze``
these distances cost no product of their own. The gap compares the means, MIR the first two
moments; MMD sees the whole distributions.
"""

from __future__ import annotations

import math

import torch

from gapscope.engine.passes import cross_pair_pass, modality_pass
from gapscope.engine.unit_rows import UnitRows
from gapscope.engine.validation import ArrayLike

__all__ = ["cross_modal_uniformity", "mmd2", "mmd2_from_uniformities"]


def cross_modal_uniformity(
    x: ArrayLike | UnitRows,
    y: ArrayLike | UnitRows,
    t: float = 2.0,
    *,
    block_size: int | None = None,
    device: str | torch.device | None = None,
) -> float:
    """Cross-modal uniformity (Fahim et al. 2024, "It's Not a Modality Gap: Characterizing
    and Addressing the Contrastive Gap", their cross-modal term of the uniformity loss).

    With ``x_i`` and ``y_j`` the L2-normalised rows,

        cross_uniformity = log( (1 / (n m)) sum_{i,j} exp(-t ||x_i - y_j||^2) ),

    over every pair of rows, true pairs included. It lies in ``[-4t, 0]`` (never above 0:
    rounding that would lift it is capped): 0 when every row of both modalities is the same
    point, about ``-2t`` when the rows of the
    two modalities are orthogonal to each other (two cones apart), lower still when they
    point away. A modality gap lowers it (every cross distance grows); so does a well-spread
    joint distribution. It is a description, not a judgement: read it with the gap and MMD.

    Exact and blocked: each row's kernel sum over the other modality is a float32 sum of one
    row of a similarity block (``||x_i - y_j||^2 = 2 - 2 s_ij``), the rows combined in float64,
    independent of the block size. Within ``2 t e_S`` of the exact value, as
    :func:`~gapscope.metrics.uniformity.uniformity` (about ``1e-7 t`` in practice: ~1e-6
    relative unless every row is within ~1e-3 of every other, and the value near 0).

    Args:
        x: ``(n, d)`` embeddings of one modality; y: ``(m, d)`` of the other (numpy arrays,
            memory maps or torch tensors; rows need not be normalised).
        t: kernel temperature, finite and > 0 (2 in the paper).
        block_size: rows a block; ``None`` lets the shapes decide.
        device: torch device for the products (``None``/``"auto"``: CUDA when available).

    Returns:
        The log mean cross-modal Gaussian potential, a finite float.

    Raises:
        EmbeddingError: bad arrays (non-2-D, non-float, NaN/Inf or zero rows), different
            dimensions.
        GapscopeError: ``t`` or ``block_size`` not positive.

    Example:
        >>> import numpy as np
        >>> round(cross_modal_uniformity(np.eye(2), np.eye(2)), 6)  # log((2 + 2 e^-4) / 4)
        -0.674997
    """
    r = cross_pair_pass(x, y, directions=(), kernel_t=t, block_size=block_size, device=device)
    assert r.kernel is not None
    return r.kernel.log_mean


def mmd2_from_uniformities(uniformity_x: float, uniformity_y: float, cross: float) -> float:
    """The unbiased MMD² from the three log mean kernels:
    ``exp(uniformity_x) + exp(uniformity_y) - 2 exp(cross)``.

    ``uniformity_*`` are Wang & Isola's uniformity of each modality (the log mean kernel over
    distinct rows, :func:`gapscope.metrics.uniformity`) and ``cross`` the
    :func:`cross_modal_uniformity` with the same ``t``.

    >>> round(mmd2_from_uniformities(-4.0, -4.0, -4.0), 12)
    0.0
    """
    return math.exp(uniformity_x) + math.exp(uniformity_y) - 2.0 * math.exp(cross)


def mmd2(
    x: ArrayLike | UnitRows,
    y: ArrayLike | UnitRows,
    t: float = 2.0,
    *,
    block_size: int | None = None,
    device: str | torch.device | None = None,
) -> float:
    """Unbiased squared kernel MMD between two modalities (Gretton et al. 2012, "A Kernel
    Two-Sample Test", MMD²_u; the statistic of CMMD, Jayasumana et al. 2024, with
    uniformity's kernel in place of theirs).

    With the Gaussian kernel ``k(u, v) = exp(-t ||u - v||^2)`` on the L2-normalised rows,

        MMD² = 1/(n (n-1)) sum_{i != i'} k(x_i, x_i') + 1/(m (m-1)) sum_{j != j'} k(y_j, y_j')
               - 2/(n m) sum_{i,j} k(x_i, y_j)

    (the diagonals of the own terms left out: unbiased). 0 in expectation when both
    modalities are drawn from one distribution; it may then come out slightly negative. It is
    at most 2 (two point masses far apart). Lower means the two distributions are closer.
    Equal to ``exp(uniformity(x)) + exp(uniformity(y)) - 2 exp(cross_modal_uniformity(x,
    y))``, which is how it is computed (three products, as in ``gapscope analyze``, where
    they are the passes of uniformity and retrieval).

    Args:
        x: ``(n, d)`` embeddings, ``n >= 2``; y: ``(m, d)``, ``m >= 2`` (arrays, memory maps or
            tensors; rows need not be normalised).
        t: kernel temperature, finite and > 0 (2 by default, as uniformity).
        block_size: rows a block; ``None`` lets the shapes decide.
        device: torch device for the products.

    Returns:
        MMD², a float.

    Raises:
        EmbeddingError: bad arrays, fewer than 2 rows, different dimensions.
        GapscopeError: ``t`` or ``block_size`` not positive.

    Example:
        >>> import numpy as np
        >>> x = np.array([[1.0, 0.0], [0.0, 1.0]])
        >>> round(mmd2(x, x), 6)  # 2 e^-4 - 2 (2 + 2 e^-4) / 4 = e^-4 - 1
        -0.981684
        >>> round(mmd2(x, -x), 6)  # 2 e^-4 - 2 (2 e^-4 + 2 e^-8) / 4 = e^-4 - e^-8
        0.01798
    """
    own = [
        modality_pass(a, None, t=t, block_size=block_size, device=device).uniformity for a in (x, y)
    ]
    assert own[0] is not None and own[1] is not None
    return mmd2_from_uniformities(
        own[0], own[1], cross_modal_uniformity(x, y, t, block_size=block_size, device=device)
    )
