"""Input checks shared by every metric, called first so the metric bodies stay a few lines.

Every metric accepts numpy arrays (including read-only memory maps) or torch tensors of shape
``(n, d)``; float16, float32 and float64 are accepted. Bad input raises
:class:`gapscope.errors.EmbeddingError` with a message that names the argument.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from gapscope.errors import EmbeddingError

ArrayLike = np.ndarray | torch.Tensor

_FLOAT_DTYPES = (np.float16, np.float32, np.float64)
# Rows are checked in slices of this many so that a memory-mapped store is never read whole.
_CHECK_ROWS = 65536
# Norms a float32 division handles without overflow or subnormal precision loss.
_FLOAT32_NORM_RANGE = (1e-30, 1e30)


def _as_numpy_view(x: ArrayLike, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        # numpy has no bfloat16; widen it (exactly) to float32 first.
        x = x.detach().cpu()
        x = (x.float() if x.dtype == torch.bfloat16 else x).numpy()
    if not isinstance(x, np.ndarray):
        kind = type(x).__name__
        raise EmbeddingError(f"{name}: expected a numpy array or torch tensor, got {kind}")
    return x


def check_embeddings(x: ArrayLike, name: str = "x", *, min_rows: int = 1) -> np.ndarray:
    """Validate an embedding matrix and return it as a numpy array (no copy when possible).

    Checks: 2-D, at least ``min_rows`` rows and one column, a float dtype, every value finite,
    no all-zero row (a zero row has no direction, so cosine metrics are undefined on it).

    >>> check_embeddings(np.eye(2, dtype=np.float32), "image").shape
    (2, 2)
    >>> check_embeddings(np.zeros((2, 3)), "text")
    Traceback (most recent call last):
    ...
    gapscope.errors.EmbeddingError: text: row 0 is a zero vector (no direction to compare)
    """
    arr = _as_numpy_view(x, name)
    if arr.ndim != 2:
        raise EmbeddingError(f"{name}: expected a 2-D array (rows, dim), got shape {arr.shape}")
    if arr.shape[0] < min_rows:
        raise EmbeddingError(f"{name}: needs at least {min_rows} rows, got {arr.shape[0]}")
    if arr.shape[1] < 1:
        raise EmbeddingError(f"{name}: has zero columns")
    if arr.dtype.type not in _FLOAT_DTYPES:
        raise EmbeddingError(
            f"{name}: expected float16, float32 or float64 values, got dtype {arr.dtype}"
        )
    for start in range(0, arr.shape[0], _CHECK_ROWS):
        block = np.asarray(arr[start : start + _CHECK_ROWS], dtype=np.float64)
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            row = start + int(np.argmin(finite))
            raise EmbeddingError(f"{name}: row {row} contains NaN or Inf")
        nonzero = (block != 0).any(axis=1)
        if not nonzero.all():
            row = start + int(np.argmin(nonzero))
            raise EmbeddingError(f"{name}: row {row} is a zero vector (no direction to compare)")
    return arr


def check_same_dim(x: np.ndarray, y: np.ndarray, names: tuple[str, str] = ("x", "y")) -> None:
    """Raise when two modalities do not share an embedding dimension."""
    if x.shape[1] != y.shape[1]:
        raise EmbeddingError(
            f"{names[0]} has dim {x.shape[1]} but {names[1]} has dim {y.shape[1]}: "
            "both modalities must live in the same embedding space"
        )


def check_groups(
    groups: ArrayLike | Sequence[int] | None, n: int, name: str = "groups"
) -> np.ndarray | None:
    """Validate a per-row group (or label) vector of length ``n``; ``None`` passes through.

    Groups are compared for equality only; any integer dtype is accepted and returned as int64.
    """
    if groups is None:
        return None
    if isinstance(groups, torch.Tensor):
        groups = groups.detach().cpu().numpy()
    arr = np.asarray(groups)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise EmbeddingError(f"{name}: expected shape ({n},), got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise EmbeddingError(f"{name}: expected integer codes, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def pair_groups(
    x: np.ndarray,
    y: np.ndarray,
    groups_x: ArrayLike | Sequence[int] | None,
    groups_y: ArrayLike | Sequence[int] | None,
    names: tuple[str, str] = ("x", "y"),
) -> tuple[np.ndarray, np.ndarray]:
    """Return the group vectors that define positive pairs between ``x`` and ``y``.

    With both ``None``, row i of ``x`` pairs with row i of ``y`` (the row counts must agree).
    Otherwise both must be given; rows with equal group codes are positives (many-to-one is fine).

    >>> pair_groups(np.ones((3, 2)), np.ones((3, 2)), None, None)
    (array([0, 1, 2]), array([0, 1, 2]))
    """
    if groups_x is None and groups_y is None:
        if x.shape[0] != y.shape[0]:
            raise EmbeddingError(
                f"{names[0]} has {x.shape[0]} rows but {names[1]} has {y.shape[0]}: "
                "without groups, row i of one modality pairs with row i of the other"
            )
        idx = np.arange(x.shape[0], dtype=np.int64)
        return idx, idx.copy()
    if groups_x is None or groups_y is None:
        raise EmbeddingError("give groups for both modalities, or for neither")
    gx = check_groups(groups_x, x.shape[0], f"{names[0]} groups")
    gy = check_groups(groups_y, y.shape[0], f"{names[1]} groups")
    assert gx is not None and gy is not None
    return gx, gy


def normalize_rows(
    x: ArrayLike, *, dtype: torch.dtype = torch.float32, device: str | torch.device | None = None
) -> torch.Tensor:
    """L2-normalise rows into a new torch tensor (float32 by default).

    One slice of rows at a time, so a memory-mapped float16 store costs only the output tensor.
    float16/float32 rows are divided in float32 by their norms summed in float64 (at a fifth
    of the cost of a float64 copy; a unit row is off by at most ~2 float32 ulps, and a row
    of equal-magnitude entries, e.g. ``[s, -s, s, s]``, still gives exactly ``+-0.5``);
    float64 rows, and any row with a norm outside ``[1e-30, 1e30]``, in float64. The result of
    a row depends on that row alone, so any slicing of the same rows gives bit-identical unit
    rows.
    """
    n, d = x.shape
    out = torch.empty((n, d), dtype=dtype, device=device or "cpu")
    for start in range(0, n, _CHECK_ROWS):
        block = x[start : start + _CHECK_ROWS]
        out[start : start + block.shape[0]] = _unit_block(block, out.device).to(dtype)
    return out


def _unit_block(block: ArrayLike, device: torch.device) -> torch.Tensor:
    """Unit rows of one slice, as a new tensor (the caller's is never written): float32
    division by norms summed in float64; float64 rows, and any row whose norm leaves
    ``[1e-30, 1e30]``, in float64 (row by row, so the other rows of the slice keep their bits)."""
    owned = not isinstance(block, torch.Tensor)
    if isinstance(block, torch.Tensor):
        t = block.to(device=device)
        wide = t.dtype == torch.float64
        if not wide:
            t = t.float()
            norms = torch.linalg.vector_norm(t, dim=1, keepdim=True, dtype=torch.float64)
    else:
        # np.array copies, so read-only memory maps never reach torch (which warns on them).
        wide = block.dtype == np.float64
        a = np.array(block, dtype=np.float64 if wide else np.float32)
        t = torch.from_numpy(a)
        if not wide:
            # The squares summed in float64: exact for float16 and nearly so for float32.
            norms = torch.from_numpy(np.sqrt(np.einsum("ij,ij->i", a, a, dtype=np.float64)))
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
    """Unit rows of float64 ``t`` (a new tensor); rows whose squares leave the float64 range
    (e.g. entries of 1e200) are scaled by their largest entry first."""
    norms = torch.linalg.vector_norm(t, dim=1, keepdim=True)
    odd = ~((norms > 1e-150) & (norms < 1e150))[:, 0]
    if bool(odd.any()):
        t = t.clone()
        t[odd] = t[odd] / t[odd].abs().amax(dim=1, keepdim=True)
        norms[odd] = torch.linalg.vector_norm(t[odd], dim=1, keepdim=True)
    return t / norms


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Map ``None``/``"auto"`` to CUDA when available else CPU; check an explicit device exists."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EmbeddingError("device 'cuda' was asked for but no CUDA GPU is available")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise EmbeddingError("device 'mps' was asked for but MPS is not available")
    return dev
