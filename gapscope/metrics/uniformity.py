"""Uniformity of embeddings on the unit sphere (Wang & Isola 2020), exact or estimated.

Thin over :func:`gapscope.engine.passes.modality_pass`, the pass an analysis runs: the same
input gives the same numbers here and in ``gapscope analyze``.
"""

from __future__ import annotations

import numpy as np
import torch

from gapscope.engine.passes import modality_pass
from gapscope.engine.sampling import Stream, sample_rows
from gapscope.engine.unit_rows import UnitRows
from gapscope.engine.validation import ArrayLike, check_embeddings
from gapscope.errors import GapscopeError

__all__ = ["uniformity", "uniformity_sampled", "uniformity_with_row_terms"]


def uniformity(
    x: ArrayLike | UnitRows,
    t: float = 2.0,
    *,
    block_size: int | None = None,
    device: str | torch.device | None = None,
) -> float:
    """Uniformity loss of one modality (Wang & Isola 2020, "Understanding Contrastive
    Representation Learning through Alignment and Uniformity on the Hypersphere").

    With ``x_i`` the L2-normalised rows,

        uniformity = log( (2 / (n (n - 1))) sum_{i<j} exp(-t ||x_i - x_j||^2) ),

    the value of their ``torch.pdist(x).pow(2).mul(-t).exp().mean().log()``. Lower means more
    uniform; it lies in ``[-4t, 0]`` (0: all rows equal; -2t: e.g. an orthonormal set), up to
    the rounding below, and is never above 0.

    Exact and blocked: each row's mean kernel value ``a_i`` against every other row is summed
    from a float32 block of similarities (``||x_i - x_j||^2 = 2 - 2 s_ij``), the logs are
    combined by a float64 log-sum-exp, and ``uniformity = log(mean_i a_i)`` (the mean over
    ordered pairs equals the mean over unordered pairs). Memory O(n d + block_size * n);
    never ``-inf``, even for large ``t``. Accuracy: the similarities are float32, so every
    kernel exponent, and the value, is within ``2 t e_S`` of the exact one (``e_S``,
    :func:`~gapscope.engine.ranking.score_error_bound`: 3.1e-5 at ``d = 512``); in practice
    about ``1e-7 t``. That is ~1e-6 relative for spread rows; rows within ~1e-3 of one
    another have a value near 0, which the rounding can dominate: a value the rounding would
    lift above 0 is reported as 0 (all rows equal: 0, or a hair below).

    Args:
        x: embeddings, shape ``(n, d)`` with ``n >= 2``; numpy array (memmaps welcome) or torch
            tensor; rows need not be normalised.
        t: kernel temperature, finite and > 0 (2 in the paper).
        block_size: rows a block; ``None`` lets the shapes decide.
        device: torch device for the products (``None``/``"auto"``: CUDA when available).

    Returns:
        The log mean Gaussian potential, a finite float.

    Raises:
        EmbeddingError: fewer than 2 rows, non-2-D, non-float, NaN/Inf or zero rows.
        GapscopeError: ``t`` or ``block_size`` not positive.

    Example:
        >>> round(uniformity(np.eye(3), t=2.0), 4)
        -4.0
        >>> round(uniformity(np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])), 4)
        -4.3963
    """
    value, _ = uniformity_with_row_terms(x, t, block_size=block_size, device=device)
    return value


def uniformity_with_row_terms(
    x: ArrayLike | UnitRows,
    t: float = 2.0,
    *,
    block_size: int | None = None,
    device: str | torch.device | None = None,
) -> tuple[float, np.ndarray]:
    """:func:`uniformity` and each row's share of it, for a bootstrap over rows.

    The row term is the log of the row's mean kernel value against every other row,

        log a_i = log( (1 / (n - 1)) sum_{j != i} exp(-t ||x_i - x_j||^2) ),

    and the pair mean that :func:`uniformity` takes the log of is the mean of the ``a_i``.

    Returns:
        ``(uniformity, log_a)`` with ``log_a`` float64 of shape ``(n,)``.

    Example:
        >>> value, log_a = uniformity_with_row_terms(np.eye(3))
        >>> round(value, 4), np.round(log_a, 4).tolist()
        (-4.0, [-4.0, -4.0, -4.0])
    """
    r = modality_pass(x, None, t=t, block_size=block_size, device=device)
    assert r.uniformity is not None and r.uniformity_row_terms is not None
    return r.uniformity, r.uniformity_row_terms


def uniformity_sampled(
    x: ArrayLike | UnitRows,
    t: float = 2.0,
    *,
    n_queries: int | None = None,
    seed: int = 0,
    query_index: ArrayLike | None = None,
    block_size: int | None = None,
    device: str | torch.device | None = None,
) -> tuple[float, float]:
    """Estimate :func:`uniformity` from a random subset of query rows, with a standard error.

    For each query row q, the exact mean over all other rows
    ``a_q = (1/(n-1)) sum_{j != q} exp(-t ||x_q - x_j||^2)`` is computed; since the pair mean
    equals the mean of ``a_q`` over all n rows, the sample mean ``abar`` is unbiased for it.
    The estimate is ``log(abar)``, and its standard error by the delta method is
    ``se(abar) / abar`` with ``se(abar)^2 = (1 - k/n) s^2 / k`` (``s^2``: sample variance of
    the ``a_q``, ddof = 1; ``1 - k/n``: the finite-population correction for sampling without
    replacement). Computed with the ``a_q`` shifted in the log domain, so nothing underflows.

    The ``k = n_queries`` rows are drawn without replacement from the seed stream ``QUERIES``
    of :mod:`gapscope.engine.sampling` (what ``analyze --sample`` draws for a modality without
    a name), or given as ``query_index``. Cost O(k n d) time and 128 MiB of scores: the k query
    rows meet the rows a chunk at a time, so a memory map is read once, chunk by chunk.

    Args:
        x: embeddings, shape ``(n, d)`` with ``n >= 2``; numpy array, torch tensor or
            :class:`~gapscope.engine.unit_rows.UnitRows`.
        t: kernel temperature, finite and > 0.
        n_queries: number of query rows, at least 2 (a variance needs two); at least ``n``
            gives the exact value and a standard error of 0.
        seed: seed of the draw; the same seed gives bit-identical results.
        query_index: the query rows themselves, instead of ``n_queries`` and ``seed``.
        block_size: accepted for symmetry with :func:`uniformity`; the chunks of rows depend
            on ``k`` alone, so the estimate never depends on it.
        device: torch device for the products (``None``/``"auto"``: CUDA when available).

    Returns:
        ``(estimate, standard_error)`` as floats.

    Raises:
        EmbeddingError: bad embeddings (see :func:`uniformity`).
        GapscopeError: ``t`` or ``block_size`` not positive, ``n_queries < 2``, or neither
            or both of ``n_queries`` and ``query_index``.

    Example:
        >>> est, se = uniformity_sampled(np.eye(4), n_queries=2, seed=0)
        >>> round(est, 4), round(se, 4)
        (-4.0, 0.0)
    """
    if (n_queries is None) == (query_index is None):
        raise GapscopeError("give either n_queries or query_index")
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) != 2:
        # A list, or no matrix: refused (and named) here; arrays are checked by the pass.
        check_embeddings(x, "x", min_rows=2)  # type: ignore[arg-type]
    n = int(x.shape[0])
    if query_index is None:
        if isinstance(n_queries, bool) or not isinstance(n_queries, int | np.integer):
            raise GapscopeError(f"n_queries: expected an integer >= 2, got {n_queries!r}")
        if n_queries < 2:
            raise GapscopeError(f"n_queries: expected an integer >= 2, got {n_queries!r}")
        query_index = sample_rows(n, int(n_queries), seed, Stream.QUERIES)
    r = modality_pass(x, None, t=t, block_size=block_size, device=device, query_index=query_index)
    assert r.uniformity is not None
    return r.uniformity, 0.0 if r.uniformity_se is None else r.uniformity_se
