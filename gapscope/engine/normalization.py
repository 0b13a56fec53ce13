"""L2 normalisation of rows: the one place that divides a row by its norm.

Two outputs share one rule (norms summed in float64; a row whose norm leaves the safe range
is first scaled by its largest entry, so entries of 1e200 or 1e-200 still give a unit row):

* :func:`unit_rows`: float64 numpy rows, for the O(n d) metrics (gap, cosines, cone,
  alignment, moments), which sum in float64;
* :func:`normalize_rows`: float32 torch rows on a device, for the similarity products.

Either way the unit vector of a row depends on that row alone, so any slicing of the same
rows gives bit-identical unit rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from gapscope.engine.widening import WideningBuffer, widen

__all__ = ["normalize_rows", "row_norms", "unit_rows"]

# Rows are normalised in slices of this many, so a memory-mapped store costs only the output.
_SLICE_ROWS = 65536
# Norms a float32 division handles without overflow or subnormal precision loss.
_FLOAT32_NORM_RANGE = (1e-30, 1e30)
# Norms whose squares stay inside the float64 range.
_FLOAT64_NORM_RANGE = (1e-150, 1e150)


def unit_rows(block: Any, buffer: WideningBuffer | None = None) -> np.ndarray:
    """Return the rows of ``block`` L2-normalised, as a new float64 array (or, with
    ``buffer``, in that buffer, which the caller's next slice overwrites).

    Rows must be non-zero (:func:`~gapscope.engine.validation.check_embeddings` guarantees it).

    >>> unit_rows(np.array([[3.0, 4.0]], dtype=np.float16)).tolist()
    [[0.6, 0.8]]
    """
    # Row-major whatever the input's layout: a row's sum of squares then runs along memory in
    # one order, so a row gives the same bits from a Fortran-ordered array as from a C one.
    out = widen(block, np.float64) if buffer is None else buffer(block)
    with np.errstate(over="ignore", under="ignore"):  # such rows are redone below
        norms = np.sqrt(np.einsum("ij,ij->i", out, out))
    low, high = _FLOAT64_NORM_RANGE
    odd = ~((norms > low) & (norms < high))
    if odd.any():
        out[odd] /= np.abs(out[odd]).max(axis=1, keepdims=True)
        norms[odd] = np.sqrt(np.einsum("ij,ij->i", out[odd], out[odd]))
    out /= norms[:, None]
    return out


def row_norms(block: Any) -> np.ndarray:
    """Return the float64 L2 norm of every row of ``block``, with the rule of
    :func:`unit_rows`: a row whose squares would overflow or underflow float64 is scaled by its
    largest entry first, so rows of 1e300 or 1e-300 keep finite, nonzero norms.

    >>> row_norms(np.array([[3.0, 4.0], [3e300, 4e300], [3e-300, 4e-300]])).tolist()
    [5.0, 5e+300, 5e-300]
    """
    rows = np.ascontiguousarray(block, dtype=np.float64)  # row-major, as in unit_rows
    with np.errstate(over="ignore", under="ignore"):  # such rows are redone below
        norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))
    low, high = _FLOAT64_NORM_RANGE
    odd = ~((norms > low) & (norms < high))
    if odd.any():
        top = np.abs(rows[odd]).max(axis=1, keepdims=True)
        scaled = rows[odd] / np.where(top > 0, top, 1.0)
        norms[odd] = top[:, 0] * np.sqrt(np.einsum("ij,ij->i", scaled, scaled))
    return norms


def normalize_rows(
    x: Any, *, dtype: torch.dtype = torch.float32, device: str | torch.device | None = None
) -> torch.Tensor:
    """L2-normalise rows into a new torch tensor (float32 by default) on ``device``.

    One slice of rows at a time, so a memory-mapped float16 store costs only the output tensor.
    float16/float32 rows are divided in float32 by their norms summed in float64 (at a fifth
    of the cost of a float64 copy; a unit row is off by at most ~2 float32 ulps, and a row
    of equal-magnitude entries, e.g. ``[s, -s, s, s]``, still gives exactly ``+-0.5``);
    float64 rows, and any row with a norm outside ``[1e-30, 1e30]``, in float64.
    """
    n, d = x.shape
    if n <= _SLICE_ROWS and dtype == torch.float32:
        # One slice (a block of keys, a gather): its unit rows are the result, not a copy.
        return _unit_block(x, torch.device(device or "cpu")).to(dtype).contiguous()
    out = torch.empty((n, d), dtype=dtype, device=device or "cpu")
    for start in range(0, n, _SLICE_ROWS):
        block = x[start : start + _SLICE_ROWS]
        out[start : start + block.shape[0]] = _unit_block(block, out.device).to(dtype)
    return out


def _unit_block(block: Any, device: torch.device) -> torch.Tensor:
    """Unit rows of one slice, as a new tensor (the caller's is never written)."""
    owned = not isinstance(block, torch.Tensor)
    if isinstance(block, torch.Tensor):
        t = block.to(device=device)
        wide = t.dtype == torch.float64
        if not wide:
            t = t.float()
            norms = torch.linalg.vector_norm(t, dim=1, keepdim=True, dtype=torch.float64)
    else:
        # A copy: the division below is in place, and read-only memory maps stay unwritten.
        wide = block.dtype == np.float64
        a = widen(block, np.float64 if wide else np.float32)
        t = torch.from_numpy(a)
        if not wide:
            # The squares summed in float64: exact for float16 and nearly so for float32.
            # (numpy's stubs type einsum's dtype= for boolean operands only)
            squares = np.einsum("ij,ij->i", a, a, dtype=np.float64)  # type: ignore[arg-type]
            norms = torch.from_numpy(np.sqrt(squares))
            norms = norms[:, None].to(device)
        t = t.to(device)
    if wide:
        return _unit_rows_float64(t)
    low, high = _FLOAT32_NORM_RANGE
    odd = ~((norms >= low) & (norms <= high))[:, 0]
    # Taken before the division below, which may be in place.
    fixed = _unit_rows_float64(t[odd].double()).float() if bool(odd.any()) else None
    out = t.div_(norms.float()) if owned else t / norms.float()
    if fixed is not None:
        out[odd] = fixed
    return out


def _unit_rows_float64(t: torch.Tensor) -> torch.Tensor:
    """Unit rows of float64 ``t`` (a new tensor), with the same rule as :func:`unit_rows`."""
    norms = torch.linalg.vector_norm(t, dim=1, keepdim=True)
    low, high = _FLOAT64_NORM_RANGE
    odd = ~((norms > low) & (norms < high))[:, 0]
    if bool(odd.any()):
        t = t.clone()
        t[odd] = t[odd] / t[odd].abs().amax(dim=1, keepdim=True)
        norms[odd] = torch.linalg.vector_norm(t[odd], dim=1, keepdim=True)
    return t / norms
