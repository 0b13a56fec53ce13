"""Numerical building blocks shared by the passes and the metrics."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["MAX_UNSHIFTED_EXPONENT", "log_mean_exp", "log_sum_exp"]

#: The uniformity kernel is summed unshifted while ``4t`` is at most this: ``exp(+-2t)`` then
#: stays well inside float32 (2t <= 40: terms within [4e-18, 2.4e17], a sum of a billion of
#: them far below the float32 maximum 3.4e38); beyond, in the log domain.
MAX_UNSHIFTED_EXPONENT = 80.0


def log_sum_exp(values: np.ndarray) -> float:
    """Stable ``log(sum(exp(values)))`` over the finite entries (at least one must be
    finite; ``-inf`` entries are zero terms).

    >>> round(log_sum_exp(np.array([0.0, 0.0, -np.inf])), 6) == round(math.log(2), 6)
    True
    """
    finite = values[np.isfinite(values)]
    top = float(finite.max())
    return top + math.log(float(np.exp(finite - top).sum()))


def log_mean_exp(values: np.ndarray) -> tuple[float, float, np.ndarray]:
    """``log(mean(exp(values)))`` computed shifted by the maximum, with the shift and the
    shifted terms ``exp(values - max)``, so callers can form variances without underflow.

    >>> value, top, shifted = log_mean_exp(np.log(np.array([1.0, 3.0])))
    >>> round(value, 6) == round(math.log(2.0), 6), top == math.log(3.0), shifted.tolist()
    (True, True, [0.3333333333333333, 1.0])
    """
    top = float(values.max())
    shifted = np.exp(values - top)
    return top + math.log(float(shifted.mean())), top, shifted
