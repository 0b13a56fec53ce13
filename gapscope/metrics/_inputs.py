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


def normalize_rows(x: ArrayLike, *, dtype: torch.dtype = torch.float32,
                   device: str | torch.device | None = None) -> torch.Tensor:
    """L2-normalise rows into a new torch tensor (float32 by default).

    Norms are computed in float64, one slice of rows at a time, so a memory-mapped float16
    store costs only the output tensor in memory.
    """
    n, d = x.shape
    out = torch.empty((n, d), dtype=dtype, device=device or "cpu")
    for start in range(0, n, _CHECK_ROWS):
        block = x[start : start + _CHECK_ROWS]
        # np.array copies, so read-only memory maps never reach torch (which warns on them).
        t = block if isinstance(block, torch.Tensor) else torch.from_numpy(
            np.array(block, dtype=np.float64)
        )
        t = t.to(device=out.device, dtype=torch.float64)
        unit = t / torch.linalg.vector_norm(t, dim=1, keepdim=True)
        out[start : start + t.shape[0]] = unit.to(dtype)
    return out


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
