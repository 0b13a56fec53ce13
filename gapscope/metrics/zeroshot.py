"""Zero-shot classification: labelled rows against one embedding a class.

Radford et al. 2021 ("Learning Transferable Visual Models From Natural Language Supervision",
Sec. 3.1.2) classify an image by the cosine between its embedding and each class's text
embedding (the class prompts, :mod:`gapscope.data.class_prompts`); the predicted class is the
most similar one. With unit rows ``x_i`` and unit class rows ``w_c``, the score of class ``c``
for row ``i`` is ``s_ic = <x_i, w_c>`` (CLIP's logits up to the temperature, which does not
change an order), and the 0-based rank of the row's true class ``t`` is

    rank_i = #{c : s_ic > s_it} + #{c < t : s_ic = s_it},

the tie rule of retrieval (:mod:`gapscope.engine.ranking`: among equal scores the lower
index ranks higher). Then

- top-K accuracy = ``(1/n) sum_i 1[rank_i < K]`` (CLIP_benchmark's ``accuracy(output,
  target, topk)``, whose ``torch.topk`` leaves the order of equal scores unspecified; here it
  is fixed by the rule above). As CLIP_benchmark does, top-K is reported only when there are
  at least K classes (``None`` otherwise: with fewer classes every row would be a hit);
- balanced accuracy = the mean over the classes that have rows of the share of their rows
  predicted right (top-1), sklearn's ``balanced_accuracy_score`` on the top-1 predictions
  (CLIP_benchmark's ``mean_per_class_recall``); classes with no row are left out.

Scores are float64 products of float64 unit rows; the scores within the float64 rounding
bound of the true class's score are computed again one pair at a time, so ranks do not depend
on how the matrix product was blocked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gapscope.engine.normalization import unit_rows
from gapscope.engine.validation import ArrayLike, check_embeddings, check_k
from gapscope.errors import EmbeddingError

__all__ = [
    "ZeroShotResult",
    "balanced_accuracy",
    "class_ranks",
    "summarize_ranks",
    "zero_shot_classification",
]

#: Rows scored at a time: a block of scores is ``rows x classes`` float64.
_BLOCK_ROWS = 4096
_FLOAT64_UNIT_ROUNDOFF = 2.0**-53


@dataclass(frozen=True)
class ZeroShotResult:
    """Zero-shot classification of labelled rows.

    Attributes:
        accuracy: K -> top-K accuracy in [0, 1]; ``None`` for a K above the number of classes.
        balanced_accuracy: mean per-class top-1 recall over the classes that have rows.
        n_queries: rows classified.
        n_classes: classes they were classified among.
        n_classes_present: classes with at least one row.
        rank: each row's 0-based rank of its true class (int64, ``(n_queries,)``).
        targets: each row's true class (int64).
    """

    accuracy: dict[int, float | None]
    balanced_accuracy: float
    n_queries: int
    n_classes: int
    n_classes_present: int
    rank: np.ndarray = field(compare=False, repr=False)
    targets: np.ndarray = field(compare=False, repr=False)

    def hits(self, k: int) -> np.ndarray:
        """Per row: 1.0 when the true class is in the top ``k``, else 0.0."""
        return (self.rank < int(k)).astype(np.float64)


def _exact(rows: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """``<rows[i], classes[i]>`` pair by pair, summed along one row: the score of a pair
    depends on its two rows only."""
    return np.einsum("ij,ij->i", rows, classes)


def class_ranks(
    x: Any, w: np.ndarray, targets: np.ndarray, *, offset: np.ndarray | None = None
) -> np.ndarray:
    """The 0-based rank of each row's true class among the classes (tie rule in the module
    docstring), from rows ``x (n, d)`` (any norm, read a block at a time) and float64 unit
    class rows ``w (C, d)``.

    The rows are L2-normalised; with ``offset`` (a what-if's move, :mod:`gapscope.analysis.whatif`)
    the unit rows minus ``offset`` are L2-normalised again.

    Example:
        >>> w = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
        >>> class_ranks(np.array([[1.0, 0.0], [1.0, 0.0]]), w, np.array([0, 2])).tolist()
        [0, 1]
    """
    n, d = x.shape
    du = d * _FLOAT64_UNIT_ROUNDOFF
    # |blas - exact| <= gamma_d for unit rows (Higham 2002, eq. 3.5), 1% more for rows whose
    # norm is 1 only to rounding; twice that separates two scores safely.
    window = 2.0 * 1.01 * du / (1.0 - du) + 1e-15
    ranks = np.empty(n, dtype=np.int64)
    columns = np.arange(w.shape[0])
    for start in range(0, n, _BLOCK_ROWS):
        stop = min(n, start + _BLOCK_ROWS)
        block, t = unit_rows(x[start:stop]), targets[start:stop]
        if offset is not None:
            block = unit_rows(block - offset)
        scores = block @ w.T
        true = _exact(block, w[t])
        above = scores > (true + window)[:, None]
        near = (np.abs(scores - true[:, None]) <= window) & (columns[None, :] != t[:, None])
        counted = above.sum(axis=1)
        rows, cols = np.nonzero(near)
        if rows.size:
            exact = _exact(block[rows], w[cols])
            outranks = (exact > true[rows]) | ((exact == true[rows]) & (cols < t[rows]))
            counted += np.bincount(rows[outranks], minlength=stop - start)
        ranks[start:stop] = counted
    return ranks


def balanced_accuracy(targets: np.ndarray, correct: np.ndarray) -> tuple[float, int]:
    """Mean per-class recall and the number of classes it averages over: for each class with
    rows, the share of them with ``correct`` true.

    >>> balanced_accuracy(np.array([0, 0, 1]), np.array([True, False, True]))
    (0.75, 2)
    """
    counts = np.bincount(targets)
    right = np.bincount(targets, weights=correct.astype(np.float64), minlength=counts.size)
    present = counts > 0
    return float(np.mean(right[present] / counts[present])), int(present.sum())


def zero_shot_classification(
    x: ArrayLike,
    classes: ArrayLike,
    labels: ArrayLike | Sequence[int],
    *,
    k: int | Sequence[int] = (1, 5),
    name: str = "x",
) -> ZeroShotResult:
    """Top-K and balanced accuracy of zero-shot classification (Radford et al. 2021).

    Each row of ``x`` is classified by cosine similarity against the class rows; see the
    module docstring for the ranks, ties, top-K (``None`` with fewer than K classes) and
    balanced accuracy (CLIP_benchmark's ``acc1``, ``acc5`` and ``mean_per_class_recall``).

    Args:
        x: ``(n, d)`` rows to classify (any norm; rows are L2-normalised).
        classes: ``(C, d)`` class embeddings, ``C >= 2`` (e.g. ensembled prompts).
        labels: ``(n,)`` each row's true class index, ``0 .. C-1``.
        k: the K of top-K accuracy.
        name: the rows' name in error messages.

    Returns:
        A :class:`ZeroShotResult`.

    Raises:
        EmbeddingError: bad rows, dims that differ, labels that are not one class index a row.

    Example:
        >>> w = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
        >>> x = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
        >>> r = zero_shot_classification(x, w, [0, 1, 1], k=(1, 2))
        >>> r.accuracy, r.balanced_accuracy
        ({1: 0.6666666666666666, 2: 1.0}, 0.75)
    """
    ks = check_k(k)
    xa = check_embeddings(x, name)
    wa = check_embeddings(classes, "classes", min_rows=2)
    if xa.shape[1] != wa.shape[1]:
        raise EmbeddingError(
            f"classes: dim {wa.shape[1]} differs from {name}'s {xa.shape[1]}: the class "
            "prompts must come from the same model"
        )
    targets = _check_targets(labels, xa.shape[0], wa.shape[0], name)
    rank = class_ranks(xa, unit_rows(wa), targets)
    return summarize_ranks(rank, targets, int(wa.shape[0]), ks)


def summarize_ranks(
    rank: np.ndarray, targets: np.ndarray, n_classes: int, ks: Sequence[int]
) -> ZeroShotResult:
    """The :class:`ZeroShotResult` of the true classes' ranks (:func:`class_ranks`)."""
    accuracy: dict[int, float | None] = {
        int(kk): (float(np.mean(rank < kk)) if kk <= n_classes else None) for kk in ks
    }
    balanced, present = balanced_accuracy(targets, rank == 0)
    return ZeroShotResult(
        accuracy=accuracy,
        balanced_accuracy=balanced,
        n_queries=int(rank.shape[0]),
        n_classes=int(n_classes),
        n_classes_present=present,
        rank=rank,
        targets=targets,
    )


def _check_targets(labels: Any, n: int, n_classes: int, name: str) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise EmbeddingError(f"{name} labels: expected {n} class indices, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise EmbeddingError(f"{name} labels: expected integer class indices, got {arr.dtype}")
    bad = np.flatnonzero((arr < 0) | (arr >= n_classes))
    if bad.size:
        row = int(bad[0])
        raise EmbeddingError(
            f"{name} labels: row {row} is class {arr[row]}, outside 0..{n_classes - 1}"
        )
    return arr.astype(np.int64)
