"""Rows converted to a wider float type: the first step of every read of the rows.

Two costs dominate a read of float16 rows (how large stores keep them), and both are avoided
here without changing a bit (the conversions are exact):

* numpy casts float16 to float32 about ten times slower than torch's vectorised copy, so
  float32 rows (the similarity products' input) are converted by torch. Float64 rows (the
  O(n d) metrics' input) stay with numpy: its cast to float64 is within 2x of torch's, and
  torch's worker threads, still spinning after a copy, slow numpy's own BLAS that follows;
* a fresh slice of tens of MiB is fresh pages, zeroed by the kernel every time: a reader that
  converts one slice after another reuses one buffer (:class:`WideningBuffer`).

The figures are in ``docs/performance.md``, "Reading float16 rows".
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

import numpy as np
import torch

__all__ = ["WideningBuffer", "widen"]

# torch warns, once a process, that an array it is handed is not writable: a read-only memory
# map, which widen only reads. The one warning is spent here, on a probe, once at import
# (a ``catch_warnings`` around every copy would not be safe across threads).
with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    _probe = np.zeros(1, dtype=np.float16)
    _probe.flags.writeable = False
    torch.from_numpy(_probe)
    del _probe


def widen(rows: Any, dtype: type[np.floating], out: np.ndarray | None = None) -> np.ndarray:
    """``rows`` as a C-ordered ``dtype`` array, exactly (a new array, or the first rows of
    ``out``, which must be C-ordered ``dtype`` with at least as many rows and the same
    columns).

    ``rows`` may be a numpy array (memory maps welcome) or a float16/32/64 tensor.
    float16 numpy rows widened to float32 are converted by torch (about ten times faster
    than numpy's cast); everything else by numpy. The values are the same either way.

    >>> widen(np.array([[1.5, -2.0]], dtype=np.float16), np.float64).tolist()
    [[1.5, -2.0]]
    """
    if isinstance(rows, torch.Tensor):
        rows = rows.detach().cpu().numpy()
    source = np.asarray(rows)
    if out is None:
        target = np.empty(source.shape, dtype=dtype)
    else:
        target = out[: source.shape[0]]
        if target.shape != source.shape or target.dtype != np.dtype(dtype):
            raise ValueError(f"widen: out holds {out.shape} {out.dtype}, rows are {source.shape}")
    if np.dtype(dtype) == np.float32 and _torch_converts(source):
        torch.from_numpy(target).copy_(torch.from_numpy(source))
    else:
        np.copyto(target, source, casting="unsafe")
    return target


def _torch_converts(source: np.ndarray) -> bool:
    """float16 rows in native byte order with strides torch can take (non-negative, whole
    elements)."""
    return (
        source.dtype == np.float16
        and source.dtype.isnative
        and source.ndim == 2
        and all(s >= 0 and s % source.itemsize == 0 for s in source.strides)
    )


class WideningBuffer:
    """:func:`widen` into one buffer, kept from one slice of rows to the next.

    Each call's result is a view of the buffer, overwritten by the next call: a reader uses
    it before it asks for the next slice. The buffer grows to the largest slice seen. Each
    thread that calls it has a buffer of its own (freed with the thread), so a scan whose
    slices are made in lanes (:meth:`~gapscope.engine.distributed.Share.in_order`) shares one
    :class:`WideningBuffer` among them.

    >>> buffer = WideningBuffer(np.float64)
    >>> first = buffer(np.ones((2, 3), dtype=np.float16))
    >>> second = buffer(np.zeros((1, 3), dtype=np.float16))
    >>> second.shape, bool(np.shares_memory(first, second))
    ((1, 3), True)
    """

    def __init__(self, dtype: type[np.floating]) -> None:
        self.dtype = dtype
        self._local = threading.local()

    def __call__(self, rows: Any) -> np.ndarray:
        return widen(rows, self.dtype, self._held(tuple(rows.shape)))

    def empty(self, shape: tuple[int, ...]) -> np.ndarray:
        """The buffer's first ``shape[0]`` rows, as they are: scratch of a slice's shape.

        >>> WideningBuffer(np.float64).empty((2, 3)).shape
        (2, 3)
        """
        return self._held(tuple(shape))[: shape[0]]

    def _held(self, shape: tuple[int, ...]) -> np.ndarray:
        buffer: np.ndarray | None = getattr(self._local, "buffer", None)
        if buffer is None or buffer.shape[1:] != shape[1:] or buffer.shape[0] < shape[0]:
            buffer = self._local.buffer = np.empty(shape, dtype=self.dtype)
        return buffer
