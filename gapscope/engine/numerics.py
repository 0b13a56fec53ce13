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


def times_power_of_two(x: np.ndarray, k: int, out: np.ndarray) -> np.ndarray:
    """``numpy.ldexp(x, k, out=out)`` for float64 ``x``, bit for bit, by multiplication.

    numpy's ``ldexp`` calls the C function once an element (about 4.6 ns an element here,
    against 0.8 ns for a product). A product with ``2^k`` is the same number: it is rounded
    once, correctly, as ``ldexp`` is, whenever ``2^k`` is a float64 (down to the subnormal
    ``2^-1074``). Above ``2^1023`` it takes two products, each exact while the result stays
    within range, as a scaling up of small rows does; beyond that, ``ldexp`` itself.

    >>> x = np.array([3.0, 5e-324, -1.5e300])
    >>> bool(np.array_equal(times_power_of_two(x, -1074, np.empty(3)), np.ldexp(x, -1074)))
    True
    """
    if -1074 <= k <= 1023:
        return np.multiply(x, 2.0**k, out=out)
    if 1023 < k <= 2046:
        np.multiply(x, 2.0**1023, out=out)
        return np.multiply(out, 2.0 ** (k - 1023), out=out)
    return np.ldexp(x, k, out=out)
