"""Uniformity and alignment of embeddings on the unit sphere (Wang & Isola 2020)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from gapscope.errors import EmbeddingError, GapscopeError
from gapscope.engine.blocks import (
    iter_positive_pairs,
    positive_pair_counts,
    resolve_block_size,
    row_blocks,
    unit_rows,
)
from gapscope.engine.validation import (
    ArrayLike,
    check_embeddings,
    check_same_dim,
    pair_groups,
    resolve_device,
)
from gapscope.engine.unit_rows import UnitRows, as_unit_rows, matmul

__all__ = [
    "alignment",
    "alignment_row_terms",
    "uniformity",
    "uniformity_sampled",
    "uniformity_with_row_terms",
]

# Per entry of a similarity block: the float32 product, its float64 copy and one float64
# temporary inside logsumexp, plus slack.
_BYTES_PER_ENTRY = 28


def _check_positive(value: float, name: str) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0.0):
        raise GapscopeError(f"{name}: expected a finite positive number, got {value!r}")
    return value


def _log_kernel(sims: torch.Tensor, t: float) -> torch.Tensor:
    """``-t ||a - b||^2`` from cosines of unit vectors, in float64.

    ``||a - b||^2 = 2 - 2 cos``; rounding can push it slightly below 0, which the clamp undoes.
    """
    return (2.0 - 2.0 * sims.to(torch.float64)).clamp_(min=0.0).mul_(-t)


def _logsumexp(values: np.ndarray) -> float:
    """Stable ``log(sum(exp(values)))`` over the finite entries (at least one is finite)."""
    finite = values[np.isfinite(values)]
    top = float(finite.max())
    return top + math.log(float(np.exp(finite - top).sum()))


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
    uniform; it lies in ``[-4t, 0]`` (0: all rows equal; -2t: e.g. an orthonormal set).

    Exact and blocked: a block of rows is multiplied (float32) with the rows after it, and each
    row's terms are reduced by a float64 log-sum-exp; the row results are combined by another
    log-sum-exp. So memory is O(n d + block_size * n) and the result never underflows to
    ``-inf``, even for large ``t`` where every ``exp`` term is below the float64 range.

    Args:
        x: embeddings, shape ``(n, d)`` with ``n >= 2``; numpy array (memmaps welcome) or torch
            tensor; rows need not be normalised.
        t: kernel temperature, finite and > 0 (2 in the paper).
        block_size: rows per block; ``None`` picks one from ``n`` (the result depends only on
            the inputs and ``block_size``).
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
        -4.3964
    """
    row_lse, _ = _upper_triangle_lse(x, t, block_size, device, columns=False)
    n = row_lse.shape[0]
    return _logsumexp(row_lse) - math.log(n * (n - 1) / 2)


def uniformity_with_row_terms(
    x: ArrayLike,
    t: float = 2.0,
    *,
    block_size: int | None = None,
    device: str | torch.device | None = None,
) -> tuple[float, np.ndarray]:
    """:func:`uniformity` and each row's share of it, for a bootstrap over rows.

    The row term is the log of the row's mean kernel value against every other row,

        log a_i = log( (1 / (n - 1)) sum_{j != i} exp(-t ||x_i - x_j||^2) ),

    and the pair mean that :func:`uniformity` takes the log of is the mean of the ``a_i``.
    The same upper-triangle blocks are computed as for :func:`uniformity` (so the value is
    bit-identical to it); each block is reduced once more along its columns to add the pairs
    ``j < i``, which costs one extra log-sum-exp a block rather than a second pass.

    Args:
        x: embeddings, shape ``(n, d)`` with ``n >= 2``; numpy array or torch tensor.
        t: kernel temperature, finite and > 0.
        block_size: rows per block; ``None`` picks one from ``n``.
        device: torch device for the products (``None``/``"auto"``: CUDA when available).

    Returns:
        ``(uniformity, log_a)`` with ``log_a`` float64 of shape ``(n,)``.

    Raises:
        EmbeddingError: bad embeddings (see :func:`uniformity`).
        GapscopeError: ``t`` or ``block_size`` not positive.

    Example:
        >>> value, log_a = uniformity_with_row_terms(np.eye(3))
        >>> round(value, 4), np.round(log_a, 4).tolist()
        (-4.0, [-4.0, -4.0, -4.0])
    """
    row_lse, col_lse = _upper_triangle_lse(x, t, block_size, device, columns=True)
    n = row_lse.shape[0]
    value = _logsumexp(row_lse) - math.log(n * (n - 1) / 2)
    return value, np.logaddexp(row_lse, col_lse) - math.log(n - 1)


def _upper_triangle_lse(
    x: ArrayLike | UnitRows,
    t: float,
    block_size: int | None,
    device: str | torch.device | None,
    *,
    columns: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per row i, ``log sum_{j > i} exp(-t ||x_i - x_j||^2)``; with ``columns``, per column j
    also ``log sum_{i < j}`` of the same terms (so each pair is computed once)."""
    dev = resolve_device(device)
    source = as_unit_rows(x, "x", device=dev, min_rows=2)
    t = _check_positive(t, "t")
    n = source.shape[0]
    rows = resolve_block_size(block_size, n, bytes_per_entry=_BYTES_PER_ENTRY)
    unit = source.block(0, n)

    row_lse = np.full(n, -np.inf)
    col_lse = np.full(n, -np.inf) if columns else None
    for start, stop in row_blocks(n, rows):
        # Only pairs j > i: columns from `start` on, with the block's own lower triangle
        # and diagonal masked out.
        values = _log_kernel(matmul(unit[start:stop], unit[start:]), t)
        steps = torch.arange(stop - start, device=dev)
        values[:, : stop - start].masked_fill_(steps[None, :] <= steps[:, None], -math.inf)
        row_lse[start:stop] = torch.logsumexp(values, dim=1).cpu().numpy()
        if col_lse is not None:
            block_cols = torch.logsumexp(values, dim=0).cpu().numpy()
            col_lse[start:] = np.logaddexp(col_lse[start:], block_cols)
    return row_lse, col_lse


def uniformity_sampled(
    x: ArrayLike | UnitRows,
    t: float = 2.0,
    *,
    n_queries: int,
    seed: int = 0,
    block_size: int | None = None,
    device: str | torch.device | None = None,
) -> tuple[float, float]:
    """Estimate :func:`uniformity` from a random subset of query rows, with a standard error.

    ``k = n_queries`` distinct rows q are drawn uniformly without replacement
    (``numpy.random.Generator(PCG64(seed)).choice(n, k, replace=False)``, sorted). For each,
    the exact mean over all other rows ``a_q = (1/(n-1)) sum_{j != q} exp(-t ||x_q - x_j||^2)``
    is computed; since the pair mean equals the mean of ``a_q`` over all n rows, the sample
    mean ``abar`` is unbiased for it. The estimate is ``log(abar)``, and its standard error by
    the delta method is ``se(abar) / abar`` with
    ``se(abar)^2 = (1 - k/n) s^2 / k`` (``s^2``: sample variance of the ``a_q``, ddof = 1;
    ``1 - k/n``: the finite-population correction for sampling without replacement). All of it
    is computed with the ``a_q`` shifted in the log domain, so nothing underflows.

    Cost O(k n d) time and O(k d + block_size * k) memory beyond ``x`` (``x`` is read and
    normalised in chunks, so a memory map stays on disk and is never copied whole). With
    ``n_queries >= n`` this returns ``(uniformity(x, t, block_size=block_size,
    device=device), 0.0)``.

    Args:
        x: embeddings, shape ``(n, d)`` with ``n >= 2``; numpy array, torch tensor or
            :class:`~gapscope.engine.unit_rows.UnitRows`.
        t: kernel temperature, finite and > 0.
        n_queries: number of query rows, at least 2 (a variance needs two).
        seed: seed for the query draw; the same seed gives bit-identical results.
        block_size: rows of ``x`` a chunk (each compared with every query); ``None`` picks
            one from ``n_queries``.
        device: torch device for the products (``None``/``"auto"``: CUDA when available).

    Returns:
        ``(estimate, standard_error)`` as floats.

    Raises:
        EmbeddingError: bad embeddings (see :func:`uniformity`).
        GapscopeError: ``t``, ``block_size`` not positive or ``n_queries < 2``.

    Example:
        >>> est, se = uniformity_sampled(np.eye(4), n_queries=2, seed=0)
        >>> round(est, 4), round(se, 4)
        (-4.0, 0.0)
    """
    dev = resolve_device(device)
    if isinstance(x, UnitRows):
        xa = as_unit_rows(x, "x", device=dev, min_rows=2)
    else:
        # Read once, chunk by chunk: normalising on the fly costs nothing extra here.
        xa = UnitRows(check_embeddings(x, "x", min_rows=2), device=dev, in_memory=False)
    t = _check_positive(t, "t")
    if isinstance(n_queries, bool) or not isinstance(n_queries, int | np.integer):
        raise GapscopeError(f"n_queries: expected an integer >= 2, got {n_queries!r}")
    if n_queries < 2:
        raise GapscopeError(f"n_queries: expected an integer >= 2, got {n_queries!r}")
    n = xa.shape[0]
    if n_queries >= n:
        return uniformity(xa, t, block_size=block_size, device=device), 0.0
    k = int(n_queries)
    # The sampled queries are few and the rows many: stream the rows in chunks of key rows so
    # that a memory-mapped x is read once and never copied whole.
    rows = resolve_block_size(block_size, k, bytes_per_entry=_BYTES_PER_ENTRY)
    rng = np.random.Generator(np.random.PCG64(seed))
    queries = np.sort(rng.choice(n, size=k, replace=False))
    query_rows = xa.take(queries)

    log_a = torch.full((k,), -math.inf, dtype=torch.float64, device=dev)
    for start, stop in row_blocks(n, rows):
        values = _log_kernel(matmul(query_rows, xa.block(start, stop)), t)
        inside = np.nonzero((queries >= start) & (queries < stop))[0]
        if inside.size:
            at = torch.from_numpy(inside).to(dev)
            values[at, torch.from_numpy(queries[inside] - start).to(dev)] = -math.inf
        log_a = torch.logaddexp(log_a, torch.logsumexp(values, dim=1))
    log_a = log_a.cpu().numpy() - math.log(n - 1)

    top = float(log_a.max())
    shifted = np.exp(log_a - top)
    mean = float(shifted.mean())
    se_mean = math.sqrt((1.0 - k / n) * float(shifted.var(ddof=1)) / k)
    return top + math.log(mean), se_mean / mean


def alignment(
    x: ArrayLike,
    y: ArrayLike,
    groups_x: ArrayLike | Sequence[int] | None = None,
    groups_y: ArrayLike | Sequence[int] | None = None,
    alpha: float = 2.0,
    *,
    block_size: int | None = None,
) -> float:
    """Alignment of positive pairs (Wang & Isola 2020): mean ``||x_i - y_j||_2 ** alpha``.

    With ``x_i``, ``y_j`` the L2-normalised rows and P the positive pairs (equal group codes;
    without groups row i pairs with row i),

        alignment = (1 / |P|) sum_{(i,j) in P} ||x_i - y_j||_2^alpha,

    in ``[0, 2^alpha]``; lower is better. For ``alpha = 2`` it equals
    ``2 - 2 * paired cosine``. Pairs are enumerated in chunks (O(|P| d) time,
    O(block_size * d) memory, never an n x m matrix) and differences are taken directly in
    float64, which stays accurate for nearly equal pairs where ``2 - 2 cos`` would cancel.

    Args:
        x: first modality, shape ``(n, d)``; numpy array (memmaps welcome) or torch tensor.
        y: second modality, shape ``(m, d)``.
        groups_x: integer group code per row of ``x`` (or ``None``, with ``groups_y`` ``None``).
        groups_y: integer group code per row of ``y``.
        alpha: exponent, finite and > 0 (2 in the paper).
        block_size: pairs per chunk; ``None`` picks one from ``d``.

    Returns:
        The mean distance to the power ``alpha``, a float.

    Raises:
        EmbeddingError: bad arrays or groups, different ``d``, different row counts without
            groups, or no positive pair at all.
        GapscopeError: ``alpha`` or ``block_size`` not positive.

    Example:
        >>> x = np.array([[1.0, 0.0], [0.0, 1.0]])
        >>> y = np.array([[0.0, 3.0], [0.0, 1.0]])
        >>> alignment(x, y), round(alignment(x, y, alpha=1.0), 4)
        (1.0, 0.7071)
    """
    pairs = _PositivePairs(x, y, groups_x, groups_y, alpha, block_size)
    total = 0.0
    for _, powered in pairs.terms():
        total += float(powered.sum())
    return total / pairs.n_pairs


def alignment_row_terms(
    x: ArrayLike,
    y: ArrayLike,
    groups_x: ArrayLike | Sequence[int] | None = None,
    groups_y: ArrayLike | Sequence[int] | None = None,
    alpha: float = 2.0,
    *,
    block_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each row of ``x``'s share of :func:`alignment`: its sum of pair terms and pair count.

    ``sums[i] = sum_{j : (i, j) in P} ||x_i - y_j||_2^alpha`` and ``counts[i]`` the number of
    those ``j``, so ``alignment = sums.sum() / counts.sum()``. A bootstrap over groups adds them
    up per group instead of enumerating the pairs again for every resample.

    Args:
        x: first modality, shape ``(n, d)``.
        y: second modality, shape ``(m, d)``.
        groups_x: integer group code per row of ``x`` (or ``None``, with ``groups_y`` ``None``).
        groups_y: integer group code per row of ``y``.
        alpha: exponent, finite and > 0.
        block_size: pairs per chunk; ``None`` picks one from ``d``.

    Returns:
        ``(sums, counts)``: float64 and int64 arrays of shape ``(n,)``.

    Raises:
        EmbeddingError: as :func:`alignment` (bad arrays or groups, no positive pair).
        GapscopeError: ``alpha`` or ``block_size`` not positive.

    Example:
        >>> sums, counts = alignment_row_terms(np.eye(2), np.array([[0.0, 3.0], [0.0, 1.0]]))
        >>> sums.tolist(), counts.tolist()
        ([2.0, 0.0], [1, 1])
    """
    pairs = _PositivePairs(x, y, groups_x, groups_y, alpha, block_size)
    sums = np.zeros(pairs.counts.shape[0], dtype=np.float64)
    for i, powered in pairs.terms():
        sums += np.bincount(i, weights=powered, minlength=sums.shape[0])
    return sums, pairs.counts


class _PositivePairs:
    """The checked inputs of alignment and its pair terms ``||x_i - y_j||^alpha``, in chunks."""

    def __init__(
        self,
        x: ArrayLike,
        y: ArrayLike,
        groups_x: ArrayLike | Sequence[int] | None,
        groups_y: ArrayLike | Sequence[int] | None,
        alpha: float,
        block_size: int | None,
    ) -> None:
        self.x = check_embeddings(x, "x")
        self.y = check_embeddings(y, "y")
        check_same_dim(self.x, self.y)
        self.alpha = _check_positive(alpha, "alpha")
        self.gx, self.gy = pair_groups(self.x, self.y, groups_x, groups_y)
        self.chunk = resolve_block_size(block_size, self.x.shape[1], bytes_per_entry=40)
        self.counts = positive_pair_counts(self.gx, self.gy)
        self.n_pairs = int(self.counts.sum())
        if self.n_pairs == 0:
            raise EmbeddingError(
                "no positive pairs: no group code occurs in both x groups and y groups"
            )

    def terms(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(i, ||x_i - y_j||^alpha)`` for the positive pairs, ordered by i then j."""
        for i, j in iter_positive_pairs(self.gx, self.gy, self.chunk):
            diff = unit_rows(self.x[i]) - unit_rows(self.y[j])
            squared = np.einsum("ij,ij->i", diff, diff)
            # alpha = 2 skips the sqrt so that case matches 2 - 2 cos to the last bits.
            powered = squared if self.alpha == 2.0 else squared ** (self.alpha / 2.0)
            yield i, powered
