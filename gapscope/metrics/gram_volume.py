"""GRAM volume: how far apart the modalities of one item are, for any number of modalities."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from gapscope.engine.blocks import row_blocks
from gapscope.engine.normalization import unit_rows
from gapscope.engine.sampling import Stream, generator
from gapscope.engine.validation import (
    ArrayLike,
    Embeddings,
    check_count,
    check_embeddings,
    check_groups,
)
from gapscope.errors import EmbeddingError

__all__ = ["GramVolume", "gram_volume", "gram_volumes"]

# Tuples handled a chunk at a time: a (chunk, k, d) float64 block stays a few MiB.
_TUPLE_CHUNK = 4096


def gram_volumes(vectors: ArrayLike) -> np.ndarray:
    """Volume of the parallelotope spanned by k unit vectors, for a batch of tuples.

    With ``V`` the ``k x d`` matrix of one tuple's L2-normalised vectors and ``G = V V^T`` its
    Gram matrix (``G_ab = <v_a, v_b>``), the volume is ``sqrt(det G)`` (Cicchetti et al. 2025,
    "Gramian Multimodal Representation Learning and Alignment", ICLR). It lies in [0, 1]: 0
    when the vectors are linearly dependent (e.g. all equal: perfect alignment), 1 when they
    are orthonormal. For k = 2 it is ``|sin theta|`` of the angle between the two. A ``det G``
    slightly below 0 from rounding counts as 0.

    Args:
        vectors: shape ``(t, k, d)`` with ``k >= 2``; rows need not be normalised (non-zero).

    Returns:
        float64 array of shape ``(t,)``.

    Raises:
        EmbeddingError: wrong shape, ``k < 2``, a non-finite value or a zero vector.

    Example:
        >>> v = np.array([[[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 2.0]]])
        >>> gram_volumes(v).round(6).tolist()
        [0.707107]
    """
    arr = np.asarray(vectors, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[1] < 2 or arr.shape[2] < 1:
        raise EmbeddingError(f"vectors: expected shape (tuples, k >= 2, dim), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise EmbeddingError("vectors: contains NaN or Inf")
    if (arr == 0.0).all(axis=2).any():
        raise EmbeddingError("vectors: a zero vector has no direction")
    # Normalised as every metric normalises rows: vectors of 1e200 or 1e-170, whose squares
    # leave float64, keep their directions.
    unit = unit_rows(arr.reshape(-1, arr.shape[2])).reshape(arr.shape)
    gram = np.einsum("tkd,tld->tkl", unit, unit)
    det = np.linalg.det(gram)
    return np.sqrt(np.clip(det, 0.0, None))


@dataclass(frozen=True)
class GramVolume:
    """GRAM volumes over the tuples of k modalities (plain Python numbers).

    Attributes:
        mean: mean volume over the evaluated tuples, in [0, 1]; lower is better aligned.
        median: median volume.
        std: standard deviation of the volumes (ddof = 0).
        se: standard error of the mean (0.0 when every tuple was evaluated).
        n_tuples: tuples there are (one row per modality, all of one group).
        n_evaluated: tuples evaluated (``n_tuples`` unless sampled).
        volumes: the evaluated volumes, float64, in tuple order.
    """

    mean: float
    median: float
    std: float
    se: float
    n_tuples: int
    n_evaluated: int
    volumes: np.ndarray = field(compare=False, repr=False)


def gram_volume(
    embeddings: Sequence[ArrayLike],
    groups: Sequence[ArrayLike | Sequence[int]] | None = None,
    *,
    max_tuples: int | None = 100_000,
    seed: int = 0,
) -> GramVolume:
    """Mean GRAM volume over tuples of k >= 2 modalities (Cicchetti et al. 2025).

    A tuple takes one row from each modality, all with the same group code: with group g
    holding ``c_1, ..., c_k`` rows in the k modalities it contributes ``c_1 * ... * c_k``
    tuples (every combination, so each is weighted equally as the pair metrics weight pairs).
    Without groups, row i of every modality forms tuple i. Each tuple's volume is
    :func:`gram_volumes` of its unit vectors, and

        mean = (1 / T) * sum_tuples sqrt(det G_tuple).

    With ``max_tuples`` and more tuples than that, ``max_tuples`` tuple numbers are drawn
    uniformly without replacement (seed stream ``GRAM_TUPLES`` of
    :mod:`gapscope.engine.sampling`) and decoded into rows without listing every tuple; ``se`` is
    then the standard error of the sample mean with the
    finite-population correction. Memory O(chunk * k * d).

    Args:
        embeddings: the k modalities, each ``(n_a, d)`` with the same ``d``; numpy arrays or
            torch tensors, rows need not be normalised.
        groups: one integer group vector per modality, or ``None`` (then all row counts must
            agree).
        max_tuples: most tuples evaluated (``None``: all).
        seed: seed of the tuple sample (used only when sampling).

    Returns:
        A :class:`GramVolume`.

    Raises:
        EmbeddingError: fewer than 2 modalities, bad arrays, different ``d``, mismatched row
            counts without groups, or no group present in every modality.
        GapscopeError: ``max_tuples < 1``.

    Example:
        >>> e = np.eye(3)
        >>> r = gram_volume([e, e[[1, 2, 0]], e[[2, 0, 1]]])
        >>> r.mean, r.n_tuples
        (1.0, 3)
        >>> gram_volume([e, e]).mean
        0.0
    """
    if not hasattr(embeddings, "__len__"):
        if not isinstance(embeddings, Iterable):
            raise EmbeddingError(
                f"embeddings: expected a sequence of modalities, got {type(embeddings).__name__}"
            )
        embeddings = list(embeddings)  # a generator of modalities, read once
    if len(embeddings) < 2:
        raise EmbeddingError(f"GRAM volume needs at least 2 modalities, got {len(embeddings)}")
    arrays = [check_embeddings(e, f"modality {a}") for a, e in enumerate(embeddings)]
    dims = {a.shape[1] for a in arrays}
    if len(dims) > 1:
        raise EmbeddingError(f"modalities have different dims {sorted(dims)}: need one space")
    if max_tuples is not None:
        max_tuples = check_count(max_tuples, "max_tuples")

    codes = _tuple_codes(arrays, groups)

    # Per modality: rows sorted by group, and where each shared group's rows start.
    shared = codes[0]
    for c in codes[1:]:
        shared = np.intersect1d(shared, c)
    shared = np.unique(shared)
    if shared.size == 0:
        raise EmbeddingError("no group has rows in every modality, so there is no tuple")
    orders, starts, counts = [], [], []
    for c in codes:
        order = np.argsort(c, kind="stable")
        sorted_c = c[order]
        lo = np.searchsorted(sorted_c, shared, side="left")
        hi = np.searchsorted(sorted_c, shared, side="right")
        orders.append(order)
        starts.append(lo)
        counts.append((hi - lo).astype(np.int64))
    per_group = np.prod(np.stack(counts), axis=0)
    offsets = np.concatenate([[0], np.cumsum(per_group)])
    total = int(offsets[-1])

    if max_tuples is not None and total > max_tuples:
        rng = generator(seed, Stream.GRAM_TUPLES)
        numbers = np.sort(rng.choice(total, size=max_tuples, replace=False))
    else:
        numbers = np.arange(total, dtype=np.int64)

    volumes = np.empty(numbers.size)
    for start, stop in row_blocks(numbers.size, _TUPLE_CHUNK):
        num = numbers[start:stop]
        group = np.searchsorted(offsets, num, side="right") - 1
        rest = num - offsets[group]
        block = []
        # Mixed radix: the last modality's row varies fastest within a group.
        for m in range(len(arrays) - 1, -1, -1):
            c = counts[m][group]
            within = rest % c
            rest = rest // c
            row = orders[m][starts[m][group] + within]
            block.append(unit_rows(arrays[m][row]))
        block.reverse()
        volumes[start:stop] = gram_volumes(np.stack(block, axis=1))

    sampled = numbers.size < total
    q = volumes.size
    if sampled and q > 1:
        fpc = np.sqrt((total - q) / (total - 1))
        se = float(volumes.std(ddof=1) / np.sqrt(q) * fpc)
    else:
        se = 0.0
    return GramVolume(
        mean=float(volumes.mean()),
        median=float(np.median(volumes)),
        std=float(volumes.std()),
        se=se,
        n_tuples=total,
        n_evaluated=int(q),
        volumes=volumes,
    )


def _tuple_codes(
    arrays: list[Embeddings], groups: Sequence[ArrayLike | Sequence[int]] | None
) -> list[np.ndarray]:
    """Each modality's group codes (row numbers when there are no groups)."""
    if groups is None:
        rows = {a.shape[0] for a in arrays}
        if len(rows) > 1:
            raise EmbeddingError(
                f"row counts differ {sorted(rows)}: without groups, row i of every modality "
                "forms tuple i"
            )
        return [np.arange(arrays[0].shape[0], dtype=np.int64) for _ in arrays]
    if len(groups) != len(arrays):
        raise EmbeddingError(f"groups: expected {len(arrays)} vectors, got {len(groups)}")
    codes = []
    for i, (g, a) in enumerate(zip(groups, arrays, strict=True)):
        code = check_groups(g, a.shape[0], f"groups of modality {i}")
        if code is None:
            raise EmbeddingError(f"groups of modality {i}: expected a vector, got None")
        codes.append(code)
    return codes
