"""Input checks, called once at the boundary so that the engine and the metrics stay short.

Every metric accepts numpy arrays (read-only memory maps included) or torch tensors of shape
``(n, d)`` in float16, float32, float64 or bfloat16. :func:`check_embeddings` scans the rows
once and returns an :class:`Embeddings`, the validated type: every later stage that receives
one takes it as it is, without scanning the rows again. Bad data raises
:class:`~gapscope.errors.EmbeddingError` naming the argument; a bad parameter (``k``,
``block_size``, ``t``, ``query_index``, ...) raises :class:`~gapscope.errors.GapscopeError`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, TypeAlias

import numpy as np
import torch

from gapscope.engine.distributed import Share, current_share
from gapscope.engine.widening import WideningBuffer
from gapscope.errors import EmbeddingError, GapscopeError

__all__ = [
    "ArrayLike",
    "Embeddings",
    "SliceStats",
    "check_block_size",
    "check_count",
    "check_counts",
    "check_embeddings",
    "check_finite",
    "check_groups",
    "check_k",
    "check_positive",
    "check_query_index",
    "check_same_dim",
    "check_temperature",
    "pair_groups",
]

_FLOAT_DTYPES = (np.float16, np.float32, np.float64)
# Rows are checked in slices of this many so that a memory-mapped store is never read whole.
_CHECK_ROWS = 65536


class Embeddings:
    """An ``(n, d)`` embedding matrix that passed :func:`check_embeddings`: 2-D, float, every
    value finite, no zero row.

    It behaves like the numpy array it wraps (``shape``, ``dtype``, ``len``, slicing and
    integer-array indexing read the rows; ``np.asarray`` gives the array), and never copies
    it, so a memory map stays on disk.

    Rows given as a torch tensor keep it in ``tensor``: the similarity products read it on
    its own device (:class:`~gapscope.engine.unit_rows.UnitRows`), so CUDA rows reach them
    without a trip through the host. ``array`` is then the rows on the host for the O(n d)
    statistics: a view of a CPU tensor, a copy of a CUDA one, and float32 for bfloat16
    (which numpy lacks; the widening is exact, so a bfloat16 tensor and its float32 copy give
    the same report).

    Attributes:
        array: the raw rows (not normalised), on the host.
        name: the argument or modality name used in error messages.
        tensor: the caller's tensor (detached, its device and dtype), or ``None`` for arrays.
    """

    __slots__ = ("array", "name", "tensor")

    def __init__(self, array: np.ndarray, name: str, tensor: torch.Tensor | None = None) -> None:
        self.array = array
        self.name = name
        self.tensor = tensor

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.array.shape[0]), int(self.array.shape[1]))

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.array.dtype

    @property
    def ndim(self) -> int:
        return 2

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def __getitem__(self, index: Any) -> np.ndarray:
        return self.array[index]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.array if dtype is None else self.array.astype(dtype)

    def __repr__(self) -> str:
        return f"Embeddings({self.name!r}, shape={self.shape}, dtype={self.dtype})"


#: What every metric accepts as embeddings.
ArrayLike: TypeAlias = np.ndarray | torch.Tensor | Embeddings

#: Rows that a scan reads block by block: a numpy array or validated embeddings.
Rows: TypeAlias = np.ndarray | Embeddings


def _as_numpy_view(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        # numpy has no bfloat16; widen it (exactly) to float32 first.
        x = x.detach().cpu()
        x = (x.float() if x.dtype == torch.bfloat16 else x).numpy()
    if not isinstance(x, np.ndarray):
        kind = type(x).__name__
        raise EmbeddingError(f"{name}: expected a numpy array or torch tensor, got {kind}")
    return x


class SliceStats(Protocol):
    """Statistics that :func:`check_embeddings` makes from each checked slice of rows and
    combines in row order; processes sharing the passes (:mod:`~gapscope.engine.distributed`)
    then share the slices (each made by one process, every one combined by all). Not called
    for an :class:`Embeddings`, which was checked when it was made."""

    #: How many float64 values :meth:`make` returns.
    size: int

    def make(self, start: int, raw: np.ndarray, wide: np.ndarray) -> np.ndarray:
        """The statistics of rows ``start, ...``: ``raw`` as read, ``wide`` in float64."""
        ...

    def fold(self, start: int, stop: int, stats: np.ndarray) -> None:
        """Combine the statistics of rows ``start:stop`` (called in row order)."""
        ...


def _lane_bytes(stats: SliceStats | None, rows: int) -> int | None:
    """The scratch ``stats`` holds a thread for slices of ``rows`` rows, when its ``make``
    may be called from several threads at once (a ``lane_bytes(rows)`` method), else
    ``None``: its slices are then made one after another."""
    if stats is None:
        return 0
    lane_bytes = getattr(stats, "lane_bytes", None)
    return None if lane_bytes is None else int(lane_bytes(rows))


def check_embeddings(
    x: ArrayLike,
    name: str = "x",
    *,
    min_rows: int = 1,
    slice_rows: int | None = None,
    stats: SliceStats | None = None,
) -> Embeddings:
    """Validate an embedding matrix once; return it as :class:`Embeddings` (no copy).

    Checks: 2-D, at least ``min_rows`` rows and one column, a float dtype, every value finite,
    no all-zero row (a zero row has no direction, so cosine metrics are undefined on it). An
    :class:`Embeddings` is returned as it is (only ``min_rows`` is checked): it was scanned
    when it was made.

    The rows are read in slices of ``slice_rows`` (``None``: 65,536). With ``stats``
    (:class:`SliceStats`), each slice, once checked, is measured in the same read
    (``stats.make(start, raw, wide)``: the rows as read and the same rows in float64, in a
    buffer the next slice overwrites) and the measures are folded in row order
    (:class:`~gapscope.analysis.context.AnalysisContext` makes the raw norms and the
    unit-row sums there); no slice is measured for an :class:`Embeddings`, nor from a bad
    row on. Processes sharing the passes then share the slices too (each checked and
    measured by one process), and the first bad row raises on every process alike. One
    process alone checks the slices in lanes on the CPU (each slice checked and measured by one
    thread, the statistics folded in row order: the same bits), when ``stats`` is ``None`` or
    says what scratch a thread holds (``stats.lane_bytes(rows)``; its ``make`` is then called
    from several threads at once).

    >>> check_embeddings(np.eye(2, dtype=np.float32), "image").shape
    (2, 2)
    >>> check_embeddings(np.zeros((2, 3)), "text")
    Traceback (most recent call last):
    ...
    gapscope.errors.EmbeddingError: text: row 0 is a zero vector (no direction to compare)
    """
    if isinstance(x, Embeddings):
        if x.shape[0] < min_rows:
            raise EmbeddingError(f"{name}: needs at least {min_rows} rows, got {x.shape[0]}")
        return x
    arr = _checked_layout(x, name, min_rows)
    checked = check_block_size(slice_rows, "slice_rows")
    step = _CHECK_ROWS if checked is None else checked
    # float16 and float32 in either byte order; float64 (in either) keeps the elementwise tests.
    narrow = arr.dtype.itemsize < 8
    # One float64 buffer for every slice (a thread's own): a fresh slice of tens of MiB would
    # be fresh pages.
    wide = WideningBuffer(np.float64)
    starts = list(range(0, arr.shape[0], step))
    size = 2 + (0 if stats is None else stats.size)

    def check(b: int) -> np.ndarray:
        """Slice ``b``'s first bad row and whether it is non-finite (row -1: none), then its
        statistics."""
        start = starts[b]
        raw = np.asarray(arr[start : start + step])
        block = wide(raw) if narrow else raw
        out = np.zeros(size)
        out[0], out[1] = _first_bad_row(block, narrow)
        if out[0] < 0 and stats is not None:
            out[2:] = stats.make(start, raw, block)
        return out

    def fold(b: int, checked_slice: np.ndarray) -> None:
        start = starts[b]
        if checked_slice[0] >= 0:
            row = start + int(checked_slice[0])
            if checked_slice[1]:
                raise EmbeddingError(f"{name}: row {row} contains NaN or Inf")
            raise EmbeddingError(f"{name}: row {row} is a zero vector (no direction to compare)")
        if stats is not None:
            stats.fold(start, min(arr.shape[0], start + step), checked_slice[2:])

    # The first bad slice in row order raises, on every process alike. Only a read that makes
    # statistics is shared: any other check reads every row in each process, so a check that
    # one process makes alone never waits for the others.
    share = current_share() if stats is not None else Share()
    rows = min(step, arr.shape[0])
    held = _lane_bytes(stats, rows)
    if held is not None:
        # The slice in float64, or float64 rows' two flags an entry.
        held += rows * arr.shape[1] * (8 if narrow else 2)
    share.in_order(len(starts), check, fold, size, lane_bytes=held)
    return Embeddings(arr, name, x.detach() if isinstance(x, torch.Tensor) else None)


def _checked_layout(x: Any, name: str, min_rows: int) -> np.ndarray:
    """``x`` as a numpy array (a view where it can be), once its shape and dtype are right."""
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
    return arr


def _first_bad_row(block: np.ndarray, narrow: bool) -> tuple[int, bool]:
    """The first row of a slice that is non-finite or zero, and whether it is non-finite;
    ``(-1, False)`` when every row is fine."""
    if narrow:
        # A float16/32 row's squares can neither overflow nor underflow float64, so its sum
        # of squares is finite exactly when every value is, and zero exactly when every value
        # is: one pass instead of two elementwise tests.
        squares = np.einsum("ij,ij->i", block, block)
        finite = np.isfinite(squares)
        nonzero = squares > 0
    else:
        finite = np.asarray(np.isfinite(block).all(axis=1))
        nonzero = np.asarray((block != 0).any(axis=1))
    # The first bad row, whichever its fault, so the slices never change which is named.
    bad = ~(finite & nonzero)
    if not bad.any():
        return -1, False
    row = int(np.argmax(bad))
    return row, not bool(finite[row])


def check_same_dim(x: Any, y: Any, names: tuple[str, str] = ("x", "y")) -> None:
    """Raise when two modalities do not share an embedding dimension."""
    if x.shape[1] != y.shape[1]:
        raise EmbeddingError(
            f"{names[0]} has dim {x.shape[1]} but {names[1]} has dim {y.shape[1]}: "
            "both modalities must live in the same embedding space"
        )


def check_groups(groups: Any, n: int, name: str = "groups") -> np.ndarray | None:
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
    x: Any,
    y: Any,
    groups_x: Any,
    groups_y: Any,
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


def check_k(k: int | Sequence[int]) -> tuple[int, ...]:
    """The recall cut-offs as a tuple of distinct positive ints, in the order given.

    >>> check_k(5), check_k([10, 1, 5, 1])
    ((5,), (10, 1, 5))
    """
    values = [k] if isinstance(k, int | np.integer) else k
    try:
        values = list(values)
    except TypeError:
        raise GapscopeError(
            f"k: expected a positive integer or a list of them, got {k!r}"
        ) from None
    if not values:
        raise GapscopeError("k: expected at least one cut-off, got an empty list")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise GapscopeError(f"k: cut-offs must be positive integers, got {value!r}")
    return tuple(dict.fromkeys(int(value) for value in values))


def check_block_size(block_size: int | None, name: str = "block_size") -> int | None:
    """Validate an explicit block size (a positive int); ``None`` means "pick one".

    >>> check_block_size(16)
    16
    >>> check_block_size(0)
    Traceback (most recent call last):
    ...
    gapscope.errors.GapscopeError: block_size: expected a positive integer, got 0
    """
    if block_size is None:
        return None
    return check_count(block_size, name)


def check_count(value: Any, name: str, minimum: int = 1) -> int:
    """An integer of at least ``minimum`` (a number of rows, pairs or queries); ``bool``,
    floats and strings are refused, not rounded.

    >>> check_count(3, "max_pairs", minimum=2)
    3
    >>> check_count(2.5, "max_pairs", minimum=2)
    Traceback (most recent call last):
    ...
    gapscope.errors.GapscopeError: max_pairs: expected an integer >= 2, got 2.5
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        wanted = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise GapscopeError(f"{name}: expected {wanted}, got {value!r}")
    return int(value)


def check_counts(values: Any, name: str, what: str) -> tuple[int, ...]:
    """One positive integer or several (the K of top-K shares), distinct, in the order given.

    >>> check_counts([10, 1, 10], "top", "numbers of components")
    (10, 1)
    >>> check_counts(2.5, "top", "numbers of components")
    Traceback (most recent call last):
    ...
    gapscope.errors.GapscopeError: top: numbers of components must be positive integers, got 2.5
    """
    one = isinstance(values, str | bytes) or not isinstance(values, Iterable)
    items: list[Any] = [values] if one else list(values)  # one: a count, or refused below
    if not items:
        raise GapscopeError(f"{name}: expected at least one of the {what}, got none")
    for v in items:
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
            raise GapscopeError(f"{name}: {what} must be positive integers, got {v!r}")
    return tuple(dict.fromkeys(int(v) for v in items))


def check_finite(value: Any, name: str) -> float:
    """A finite real number (a fraction, a shift), as a float; ``bool`` and strings refused.

    >>> check_finite(-0.5, "fraction")
    -0.5
    """
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise GapscopeError(f"{name}: expected a finite number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise GapscopeError(f"{name}: expected a finite number, got {value!r}")
    return number


def check_positive(value: float, name: str) -> float:
    """A finite, strictly positive float (a temperature, an exponent).

    >>> check_positive(2, "t")
    2.0
    """
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise GapscopeError(f"{name}: expected a finite positive number, got {value!r}")
    number = float(value)
    if not (math.isfinite(number) and number > 0.0):
        raise GapscopeError(f"{name}: expected a finite positive number, got {value!r}")
    return number


#: The smallest kernel temperature, the smallest positive float32 (2^-149, about 1.4e-45):
#: the kernels' exponents ``2 t s`` are float32, where a smaller ``t`` rounds to 0.
MIN_TEMPERATURE = 2.0**-149


def check_temperature(value: float, name: str = "t") -> float:
    """A kernel temperature: finite, and at least :data:`MIN_TEMPERATURE`.

    >>> check_temperature(2)
    2.0
    >>> check_temperature(1e-46)
    Traceback (most recent call last):
    ...
    gapscope.errors.GapscopeError: t: expected a temperature of at least 1.4013e-45 (the kernel \
is computed in float32), got 1e-46
    """
    number = check_positive(value, name)
    if number < MIN_TEMPERATURE:
        raise GapscopeError(
            f"{name}: expected a temperature of at least {MIN_TEMPERATURE:g} (the kernel is "
            f"computed in float32), got {value!r}"
        )
    return number


def check_query_index(query_index: Any, n: int) -> np.ndarray | None:
    """Validate sampled query rows: distinct integers in ``[0, n)``, at least one, returned
    ascending (so results do not depend on their order); ``None`` (every row) passes through.

    >>> check_query_index([4, 1], 5).tolist()
    [1, 4]
    """
    if query_index is None:
        return None
    if isinstance(query_index, torch.Tensor):
        query_index = query_index.detach().cpu().numpy()
    idx = np.asarray(query_index)
    if idx.ndim != 1 or idx.size == 0:
        raise GapscopeError(f"query_index: expected a non-empty 1-D array, got shape {idx.shape}")
    if not np.issubdtype(idx.dtype, np.integer):
        raise GapscopeError(f"query_index: expected integer row indices, got dtype {idx.dtype}")
    idx = np.sort(idx.astype(np.int64))
    if idx[0] < 0 or idx[-1] >= n:
        bad = idx[0] if idx[0] < 0 else idx[-1]
        raise GapscopeError(f"query_index: row {bad} is out of range for {n} queries")
    repeated = idx[1:][idx[1:] == idx[:-1]]
    if repeated.size:
        raise GapscopeError(f"query_index: row {repeated[0]} is given more than once")
    return idx
