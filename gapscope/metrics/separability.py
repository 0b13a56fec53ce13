"""Linear separability of two modalities: can a linear classifier tell their rows apart?"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gapscope.engine.normalization import unit_rows
from gapscope.engine.sampling import Stream, sample_rows, stratified_folds
from gapscope.engine.validation import ArrayLike, check_embeddings, check_same_dim
from gapscope.errors import EmbeddingError, GapscopeError
from gapscope.extras import require

__all__ = ["Separability", "modality_separability"]


@dataclass(frozen=True)
class Separability:
    """Cross-validated accuracy of a linear modality classifier (plain Python numbers).

    Attributes:
        accuracy: mean test accuracy over the folds, in [0, 1]; chance is 0.5.
        accuracy_se: standard error of that mean across folds (fold std, ddof=1, over
            sqrt(folds)); a rough spread, since folds share training rows.
        fold_accuracies: the accuracy of each fold, in fold order.
        n_per_modality: rows used from each modality (the classes are balanced).
        folds: number of folds.
    """

    accuracy: float
    accuracy_se: float
    fold_accuracies: tuple[float, ...]
    n_per_modality: int
    folds: int


def modality_separability(
    x: ArrayLike,
    y: ArrayLike,
    *,
    folds: int = 5,
    max_rows: int | None = 5000,
    c: float = 1.0,
    seed: int = 0,
) -> Separability:
    """Linear separability of two modalities: the cross-validated accuracy of a logistic
    regression that tells rows of ``x`` from rows of ``y``.

    A linear probe (Alain & Bengio 2017, "Understanding intermediate layers using linear
    classifier probes") asked which modality a row comes from: a test of the modality gap of
    Liang et al. (2022), "Mind the Gap", that does not depend on the centroids. ~1.0 means the
    modalities occupy linearly separable regions (they never mix); ~0.5 (chance) means a
    linear model cannot tell which encoder produced a row. The classes are balanced by taking
    ``r = min(n, m, max_rows)`` rows of each modality (a seeded uniform sample without
    replacement where a modality has more), so chance is exactly 0.5 whatever the row counts.
    Rows are L2-normalised; a logistic regression with an intercept is fitted on the
    training rows of each of ``StratifiedKFold(folds, shuffle=True, random_state=seed)``'s
    splits (:func:`~gapscope.engine.sampling.stratified_folds`) and scored on its test rows:

        minimise  (1 / N) sum_i [log(1 + exp(z_i)) - t_i z_i] + ||w||^2 / (2 c N),
        z_i = w . x_i + b,  t_i = 1 for rows of y, 0 for rows of x,

        accuracy = (1 / folds) * sum_f (correct test rows in fold f) / (test rows in fold f),

    a test row predicted as y where ``z > 0``. This is scikit-learn's
    ``LogisticRegression(C=c, max_iter=1000)`` (its objective, scaled by ``N`` training rows,
    solved by SciPy's L-BFGS-B from zero with its options: ``gtol`` 1e-4, ``ftol`` 64 eps, at
    most 50 line-search steps): the tests check the fold accuracies equal scikit-learn's,
    without importing scikit-learn here, which takes seconds.

    Cost O(folds * iterations * r * d); deterministic for a given ``seed``. Non-converged
    fits (perfectly separable data drives the weights up) are still scored.

    Args:
        x: first modality, shape ``(n, d)``, float16/32/64 numpy array or torch tensor.
        y: second modality, shape ``(m, d)``, same ``d``.
        folds: number of cross-validation folds, at least 2.
        max_rows: most rows used a modality (``None``: ``min(n, m)``).
        c: inverse L2 regularisation strength of the logistic regression, > 0.
        seed: seeds the row sample and the fold shuffle.

    Returns:
        A :class:`Separability`.

    Raises:
        EmbeddingError: bad arrays, different ``d``, or fewer than ``folds`` rows in a
            modality.
        GapscopeError: ``folds < 2``, ``c <= 0`` or ``max_rows < 1``.
        MissingDependencyError: SciPy is not installed (``gapscope[diagnostics]``).

    Example:
        >>> x = np.array([[1.0, 0.1 * i] for i in range(10)])
        >>> y = np.array([[-1.0, 0.1 * i] for i in range(10)])
        >>> modality_separability(x, y, folds=2).accuracy
        1.0
    """
    require("scipy", "the separability diagnostic", extra="diagnostics")
    xa = check_embeddings(x, "x")
    ya = check_embeddings(y, "y")
    check_same_dim(xa, ya)
    if isinstance(folds, bool) or not isinstance(folds, int | np.integer) or folds < 2:
        raise GapscopeError(f"folds: expected an integer >= 2, got {folds!r}")
    if not (math.isfinite(float(c)) and float(c) > 0.0):
        raise GapscopeError(f"c: expected a finite positive number, got {c!r}")
    if max_rows is not None and (isinstance(max_rows, bool) or max_rows < 1):
        raise GapscopeError(f"max_rows: expected a positive integer or None, got {max_rows!r}")
    r = min(xa.shape[0], ya.shape[0], max_rows if max_rows is not None else xa.shape[0])
    if r < folds:
        raise EmbeddingError(
            f"separability needs at least {folds} rows a modality for {folds} folds, got {r}"
        )
    # Independent streams so that the x sample does not depend on the size of y.
    ix = sample_rows(xa.shape[0], r, seed, Stream.SEPARABILITY_ROWS_X)
    iy = sample_rows(ya.shape[0], r, seed, Stream.SEPARABILITY_ROWS_Y)
    rows_x = unit_rows(xa if ix is None else xa[ix])
    rows_y = unit_rows(ya if iy is None else ya[iy])
    features = np.concatenate([rows_x, rows_y])
    target = np.concatenate([np.zeros(r, dtype=np.int64), np.ones(r, dtype=np.int64)])

    scores = []
    for train, test in stratified_folds(target, int(folds), seed):
        w = _fit_logistic(features[train], target[train], float(c))
        predicted = features[test] @ w[:-1] + w[-1] > 0
        scores.append(float(np.mean(predicted == target[test].astype(bool))))
    acc = np.asarray(scores)
    return Separability(
        accuracy=float(acc.mean()),
        accuracy_se=float(acc.std(ddof=1) / math.sqrt(acc.size)),
        fold_accuracies=tuple(scores),
        n_per_modality=int(r),
        folds=int(folds),
    )


#: scikit-learn's ``LogisticRegression`` defaults that the probe keeps: most iterations, the
#: gradient tolerance (``tol``), and L-BFGS-B's relative loss decrease and line-search steps.
_MAX_ITER = 1000
_GTOL = 1e-4
_FTOL = 64 * np.finfo(np.float64).eps
_MAX_LINE_SEARCH = 50


def _fit_logistic(features: np.ndarray, target: np.ndarray, c: float) -> np.ndarray:
    """``[w, b]`` minimising the documented objective (float64 ``features``, 0/1 ``target``),
    as scikit-learn's lbfgs solver finds it: from zero, by SciPy's L-BFGS-B with its
    options."""
    from scipy import optimize
    from scipy.special import expit

    n = features.shape[0]
    t = target.astype(np.float64)
    l2 = 1.0 / (c * n)

    def loss_gradient(w: np.ndarray) -> tuple[float, np.ndarray]:
        coef = w[:-1]
        z = features @ coef + w[-1]
        pointwise = (expit(z) - t) / n
        gradient = np.empty_like(w)
        gradient[:-1] = features.T @ pointwise + l2 * coef
        gradient[-1] = pointwise.sum()
        loss = float((np.logaddexp(0.0, z) - t * z).sum() / n) + float(0.5 * l2 * (coef @ coef))
        return loss, gradient

    # Perfectly separable rows may end at the iteration cap: still scored, as documented.
    result = optimize.minimize(
        loss_gradient,
        np.zeros(features.shape[1] + 1),
        method="L-BFGS-B",
        jac=True,
        options={"maxiter": _MAX_ITER, "maxls": _MAX_LINE_SEARCH, "gtol": _GTOL, "ftol": _FTOL},
    )
    return np.asarray(result.x, dtype=np.float64)
