"""Modality Integration Rate: a Fréchet distance between two modalities' raw embeddings."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from gapscope.engine.blocks import resolve_scan_rows, row_blocks
from gapscope.engine.column_medians import column_medians
from gapscope.engine.distributed import current_share
from gapscope.engine.normalization import row_norms
from gapscope.engine.numerics import times_power_of_two
from gapscope.engine.pipelining import PerThread, one_blas_thread
from gapscope.engine.validation import ArrayLike, Rows, check_embeddings, check_same_dim
from gapscope.engine.widening import WideningBuffer, widen
from gapscope.errors import EmbeddingError, GapscopeError

__all__ = [
    "FD_FLOOR",
    "MIRResult",
    "RawMoments",
    "RawMomentsScan",
    "RawNorms",
    "RawNormsScan",
    "frechet_distance",
    "modality_integration_rate",
    "norms_may_vary",
    "raw_norms",
    "rounding_band",
]

# log10 needs FD > 0; FD is exactly 0 for identical distributions. After text-centric scaling
# the mean text norm is 1, so FD is on a unit scale and 1e-12 is far below any real distance
# while above float64 rounding of the traces for moderate d: such a FD reports MIR = -12.
FD_FLOOR = 1e-12

# The norm-outlier step is skipped when every row's norm lies within rounding of the median
# norm: the rows were normalised and then rounded (or normalised in low-precision arithmetic).
# "Rounding" is that of the narrowest format that holds every value exactly (bfloat16,
# float16, float32 or float64: a float32 array of bfloat16-rounded values was rounded to 8
# bits). Measured maximum relative deviations of the norms of unit rows from their median
# (100,000 rows, d = 64..1024): normalised in float32 1.4e-7..2.0e-7 (unit roundoff 6.0e-8),
# in float16 arithmetic 3.9e-4..6.2e-4 (u = 4.9e-4), in bfloat16 3.2e-3..4.8e-3
# (u = 3.9e-3). So the band is 2 u of that format, and at least 1e-6 (float32 rounding of the
# norm itself, 3.3 u, would otherwise count as spread). Raw encoder outputs spread their norms
# by percents; a raw float32 modality whose norms genuinely vary by 0.5% is tested, so a row 38
# standard deviations out is found.
_ROUNDING_UNITS = 2.0
_MIN_NORM_BAND = 1e-6
# (name, unit roundoff) from the coarsest format to the finest.
_FORMATS = (
    ("bfloat16", 2.0**-8),
    ("float16", 2.0**-11),
    ("float32", 2.0**-24),
    ("float64", 2.0**-53),
)
_OUTLIER_SIGMAS = 3.0


@dataclass(frozen=True)
class MIRResult:
    """Modality Integration Rate and how it was obtained (plain Python numbers).

    Attributes:
        mir: ``log10(max(fd, FD_FLOOR))``; lower means better integrated modalities.
        fd: the Fréchet distance after scaling and outlier replacement (>= 0).
        scale: ``s = 1 / mean_j ||Y_j||`` applied to both modalities.
        outliers_x: rows of ``x`` replaced by the coordinate-wise median row.
        outliers_y: rows of ``y`` replaced likewise.
        outlier_step_skipped_x: every norm of ``x`` lies within rounding of the median norm
            (an already normalised encoder), so no row was tested.
        outlier_step_skipped_y: the same for ``y``.
        norm_spread_x: the largest ``|norm - median| / median`` of ``x``'s rows (raw, before
            scaling).
        norm_spread_y: the same for ``y``.
        rounding_x: the narrowest floating-point format that holds every value of ``x``
            exactly (``"bfloat16"``, ``"float16"``, ``"float32"`` or ``"float64"``): the
            rounding the skip rule allows for.
        rounding_y: the same for ``y``.
        full_rank: both covariances are full rank (more rows than dimensions and numerically
            nonsingular); when False, FD is still exact but only sees the spanned subspace.
        scale_without_outliers: ``1 / mean ||Y_j||`` over the rows of ``y`` that are not
            outliers (``scale`` when none is; ``None`` when not computed): the scale the
            paper's order (scale first, replace outliers after) does not use. FD scales as
            ``s^2``, so MIR with it would read
            ``log10(max(fd * (scale_without_outliers / scale)^2, FD_FLOOR))``.
    """

    mir: float
    fd: float
    scale: float
    outliers_x: int
    outliers_y: int
    outlier_step_skipped_x: bool
    outlier_step_skipped_y: bool
    full_rank: bool
    norm_spread_x: float = 0.0
    norm_spread_y: float = 0.0
    rounding_x: str = "float64"
    rounding_y: str = "float64"
    scale_without_outliers: float | None = None

    def mir_without_reference_outliers(self) -> float | None:
        """MIR with the scale taken from ``y``'s rows that are not outliers (the FD scaled by
        the square of the two scales' ratio), or ``None`` when FD is at the floor (FD would
        have to be known below it) or ``y`` has no outlier.

        >>> r = MIRResult(-2.0, 0.01, 0.5, 0, 1, False, False, True, scale_without_outliers=5.0)
        >>> r.mir_without_reference_outliers()
        0.0
        """
        if not self.outliers_y or self.fd <= FD_FLOOR or self.scale_without_outliers is None:
            return None
        ratio = self.scale_without_outliers / self.scale
        return math.log10(max(self.fd * ratio * ratio, FD_FLOOR))


def frechet_distance(
    mean_x: np.ndarray, cov_x: np.ndarray, mean_y: np.ndarray, cov_y: np.ndarray
) -> float:
    """Fréchet distance between Gaussians N(mean_x, cov_x) and N(mean_y, cov_y).

        FD = ||mu_x - mu_y||^2 + Tr(S_x) + Tr(S_y) - 2 Tr((S_x S_y)^{1/2})

    computed in float64 with an exact real square-root trace:
    ``Tr((S_x S_y)^{1/2}) = sum_k sqrt(lambda_k(A S_y A))`` with ``A = S_x^{1/2}`` from a
    symmetric eigendecomposition (``S_x S_y`` is similar to the positive semi-definite
    ``A S_y A``). Eigenvalues at rounding level (at most ``max * d * eps``, which includes
    every negative one) are set to 0 before their square roots are taken, so singular
    covariances (fewer samples than dimensions) stay exact to rounding instead of picking up
    ``sqrt(1e-16)``-sized noise; the result is clipped to >= 0 for the same reason. Gaussians
    far from unit scale (a covariance entry or a squared mean beyond ``2^+-64``) are measured
    scaled by a power of two and FD scaled back, so the products of three covariances
    neither overflow nor underflow.

    Args:
        mean_x: shape ``(d,)``.
        cov_x: symmetric positive semi-definite, shape ``(d, d)``.
        mean_y: shape ``(d,)``.
        cov_y: shape ``(d, d)``.

    Returns:
        FD as a float >= 0.

    Raises:
        EmbeddingError: means or covariances that are not finite, or an FD beyond float64.

    Example:
        >>> round(frechet_distance(np.zeros(2), 4 * np.eye(2), np.ones(2), np.eye(2)), 4)
        4.0
    """
    mean_x, mean_y = np.asarray(mean_x, np.float64), np.asarray(mean_y, np.float64)
    cov_x, cov_y = _symmetric(cov_x), _symmetric(cov_y)
    if not all(np.isfinite(a).all() for a in (mean_x, mean_y, cov_x, cov_y)):
        raise EmbeddingError("Fréchet distance: means and covariances must be finite")
    # The square-root trace multiplies three covariances: far from 1 (beyond 2^+-64) their
    # products would overflow or underflow, so the Gaussians are measured at a power-of-two
    # scale (exact) and FD scaled back: FD(2^-k x, 2^-k y) = 2^-2k FD(x, y).
    exponent = max(2 * _exponent(mean_x), 2 * _exponent(mean_y), _exponent(cov_x), _exponent(cov_y))
    k = 0
    if abs(exponent) > 64 and exponent != _ZERO_EXPONENT:
        k = (exponent + 1) // 2
        mean_x, mean_y = np.ldexp(mean_x, -k), np.ldexp(mean_y, -k)
        cov_x, cov_y = np.ldexp(cov_x, -2 * k), np.ldexp(cov_y, -2 * k)
    w, v = np.linalg.eigh(cov_x)
    root_x = (v * np.sqrt(_null_to_zero(w))) @ v.T
    inner = _symmetric(root_x @ cov_y @ root_x)
    trace_root = float(np.sqrt(_null_to_zero(np.linalg.eigvalsh(inner))).sum())
    diff = mean_x - mean_y
    fd = float(diff @ diff) + float(np.trace(cov_x)) + float(np.trace(cov_y)) - 2.0 * trace_root
    with np.errstate(over="ignore"):
        fd = float(np.ldexp(max(fd, 0.0), 2 * k))
    if not math.isfinite(fd):
        raise EmbeddingError("Fréchet distance: beyond float64 (the Gaussians are too far apart)")
    return fd


def modality_integration_rate(
    x: ArrayLike,
    y: ArrayLike,
    *,
    block_size: int | None = None,
    norms: tuple[RawNorms, RawNorms] | None = None,
    moments: tuple[RawMoments | None, RawMoments | None] | None = None,
    names: tuple[str, str] = ("x", "y"),
) -> MIRResult:
    """Modality Integration Rate of two modalities (Huang et al. 2024, "Deciphering Cross-Modal
    Alignment in Large Vision-Language Models with Modality Integration Rate", arXiv 2410.07167).

    On the *raw* rows (no L2 normalisation; ``y`` is the reference, text, modality):

    1. text-centric scaling: ``s = 1 / mean_j ||Y_j||``; ``X <- s X``, ``Y <- s Y``;
    2. per modality, rows whose norm differs from the median norm by more than 3 standard
       deviations of the norms (ddof = 1) are replaced by the coordinate-wise median row
       (medians of all rows, ``numpy.median``: the mean of the two middle values for an even
       count). Skipped when every norm lies within rounding of the median:
       ``max |norm - median| <= max(2 u, 1e-6) * median``, with ``u`` the unit roundoff of the
       narrowest format (bfloat16, float16, float32, float64) that holds every value exactly:
       rows an encoder normalised, in any of those precisions (measured deviations at most
       1.3 u, and 2e-7 for float32). Raw encoder outputs spread their norms by percents and are
       always tested;
    3. ``FD`` = :func:`frechet_distance` of the means and covariances (ddof = 1, float64);
    4. ``MIR = log10(max(FD, FD_FLOOR))`` with ``FD_FLOOR = 1e-12`` so identical distributions
       give a finite -12 rather than ``-inf``.

    Means and covariances are accumulated over row blocks (Chan et al.'s pairwise update), so
    memory is O(block_size * d + d^2), plus, when a modality has outliers, 256 MiB for the
    coordinate-wise median (:func:`~gapscope.engine.column_medians.column_medians`: one read
    of float16 rows, two of float32, whatever their number; none when ``moments`` carry the
    medians). Not invariant to per-row
    scaling; invariant to one global scale of both modalities and, when no row is replaced,
    to a shared rotation.

    Differences from the reference code (``shikiw/Modality-Integration-Rate``): its default
    "fast" mode approximates the matrix square root by 5 Newton-Schulz steps, and its
    ``torch.median`` takes the lower middle value for even counts; here the square root is
    exact and medians are the usual ones. One layer gives one MIR (the paper sums FD over
    layers).

    Args:
        x: first modality (e.g. image), raw encoder outputs, shape ``(n, d)``, ``n >= 2``.
        y: reference modality (text), shape ``(m, d)``, ``m >= 2``.
        block_size: rows accumulated at a time; ``None`` picks one from ``d``.
        norms: the :func:`raw_norms` of ``x`` and ``y``, when the caller has them already
            (an analysis reads them once for the report's mean raw norm too); ``None``
            computes them here.
        moments: the :class:`RawMoments` of ``x`` and of ``y`` (either may be ``None``), when
            the caller made them in a read of its own (an analysis, in its validating read):
            that modality's covariance is then scaled from them instead of read again. Its
            outlier rows, if any, are taken out of them and the median row put in (Chan's
            update run backwards, then forwards: a gather of the outlier rows and the
            medians' read, or the moments' own ``medians`` where that read counted them too);
            when the outliers hold more than half of some coordinate's
            scatter, where taking them out would cancel its digits, the rows are read again
            as without ``moments``. The result agrees with a read to rounding, not to the
            bit.
        names: the two modalities' names (e.g. ``("image", "text")``), for the messages.

    Returns:
        A :class:`MIRResult`.

    Raises:
        EmbeddingError: fewer than 2 rows, non-2-D, non-float, NaN/Inf or zero rows,
            different ``d``; ``y``'s mean norm so small that ``1 / norm`` overflows, or
            modalities so far apart in scale that a covariance overflows float64.

    Example:
        >>> x = np.array([[1.0], [3.0]])
        >>> y = np.array([[2.0], [2.0]])
        >>> r = modality_integration_rate(x, y)
        >>> round(r.fd, 4), round(r.mir, 4), r.scale, r.outlier_step_skipped_y, r.full_rank
        (0.5, -0.301, 0.5, True, False)
    """
    name_x, name_y = names
    xa = check_embeddings(x, name_x, min_rows=2)
    ya = check_embeddings(y, name_y, min_rows=2)
    check_same_dim(xa, ya, names)
    d = xa.shape[1]
    rows = resolve_scan_rows(block_size, d, bytes_per_entry=24)

    if norms is None:
        norms = (raw_norms(xa, rows), raw_norms(ya, rows))
    for given, a, name in ((norms[0], xa, name_x), (norms[1], ya, name_y)):
        if given.norms.shape != (a.shape[0],):
            raise GapscopeError(
                f"norms: {name} has {a.shape[0]} rows but {given.norms.shape[0]} norms were given"
            )
    (norms_x, rounding_x), (norms_y, rounding_y) = norms
    mean_norm_y = float(norms_y.mean())
    with np.errstate(over="ignore", divide="ignore"):
        scale = 1.0 / mean_norm_y
    if not math.isfinite(scale):
        raise EmbeddingError(
            f"{name_y}: the mean row norm {mean_norm_y:.3g} is too small for MIR's scale 1 / norm "
            "(beyond float64)"
        )
    spread_x, spread_y = _norm_spread(norms_x), _norm_spread(norms_y)
    # The test is the same at any common scale of a modality's norms: made on the norms as
    # they are, since times ``scale`` a huge norm could overflow.
    outliers_x, skipped_x = _norm_outliers(norms_x, spread_x, rounding_x)
    outliers_y, skipped_y = _norm_outliers(norms_y, spread_y, rounding_y)
    made = moments if moments is not None else (None, None)
    for raw, a, name in ((made[0], xa, name_x), (made[1], ya, name_y)):
        if raw is not None and (raw.rows != a.shape[0] or raw.mean.shape != (d,)):
            raise GapscopeError(
                f"moments: {name} has {a.shape[0]} rows of {d} values, the moments are of "
                f"{raw.rows} rows of {raw.mean.shape[0]}"
            )
    # Modalities some 1e150 apart in scale overflow the covariances: refused just below.
    with np.errstate(over="ignore", invalid="ignore"):
        mean_x, cov_x = _scaled_mean_cov(xa, scale, outliers_x, rows, made[0])
        mean_y, cov_y = _scaled_mean_cov(ya, scale, outliers_y, rows, made[1])
    for name, moments_of in ((name_x, (mean_x, cov_x)), (name_y, (mean_y, cov_y))):
        if not all(np.isfinite(a).all() for a in moments_of):
            raise EmbeddingError(
                f"{name}: its covariance, in units of {name_y}'s mean norm {mean_norm_y:.3g}, "
                "overflows float64 (the modalities differ in scale by some 1e150 or more)"
            )

    fd = frechet_distance(mean_x, cov_x, mean_y, cov_y)
    with np.errstate(over="ignore", divide="ignore"):
        scale_kept = 1.0 / float(norms_y[~outliers_y].mean()) if outliers_y.any() else scale
    full_rank = bool(
        xa.shape[0] > d and ya.shape[0] > d and _nonsingular(cov_x) and _nonsingular(cov_y)
    )
    return MIRResult(
        mir=math.log10(max(fd, FD_FLOOR)),
        fd=fd,
        scale=scale,
        outliers_x=int(outliers_x.sum()),
        outliers_y=int(outliers_y.sum()),
        outlier_step_skipped_x=skipped_x,
        outlier_step_skipped_y=skipped_y,
        full_rank=full_rank,
        norm_spread_x=spread_x,
        norm_spread_y=spread_y,
        rounding_x=rounding_x,
        rounding_y=rounding_y,
        scale_without_outliers=scale_kept,
    )


_ZERO_EXPONENT = -(2**20)


def _exponent(a: np.ndarray) -> int:
    """The power of two of ``a``'s largest magnitude (``frexp``), very negative for zeros."""
    top = float(np.abs(a).max(initial=0.0))
    return math.frexp(top)[1] if top > 0.0 else _ZERO_EXPONENT


def _symmetric(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return (a + a.T) / 2.0


def _null_to_zero(w: np.ndarray) -> np.ndarray:
    """Eigenvalues at rounding level (<= max * d * eps, as numpy.linalg.matrix_rank) set to 0.

    A singular covariance has eigenvalues that are 0 only up to rounding, +-1e-16 relative;
    their square roots (1e-8) would otherwise add up to a visible error in the trace.
    """
    top = float(w.max()) if w.size else 0.0
    return np.where(w > top * w.shape[0] * np.finfo(np.float64).eps, w, 0.0)


class RawNorms(NamedTuple):
    """Every raw row's float64 norm (:func:`~gapscope.engine.normalization.row_norms`, which
    depends on the row alone), and the narrowest format (a name of :class:`MIRResult`'s
    ``rounding_x``) that holds every value exactly."""

    norms: np.ndarray
    rounding: str


def raw_norms(a: Rows, block_size: int | None = None) -> RawNorms:
    """:class:`RawNorms` of the rows of ``a``, read once, ``block_size`` rows at a time
    (``None``: the scan policy of :mod:`gapscope.engine.blocks`).

    >>> r = raw_norms(np.array([[3.0, 4.0], [0.5, 0.0]], dtype=np.float32))
    >>> r.norms.tolist(), r.rounding
    ([5.0, 0.5], 'bfloat16')
    """
    scan = RawNormsScan(a.shape[0])
    for start, stop in row_blocks(a.shape[0], resolve_scan_rows(block_size, a.shape[1])):
        scan.add(start, np.asarray(a[start:stop]))
    return scan.result()


class RawNormsScan:
    """:class:`RawNorms` made one slice of rows at a time (each row's norm depends on that
    row alone, so any slicing gives the same bits)."""

    def __init__(self, n_rows: int) -> None:
        self.norms = np.empty(n_rows, dtype=np.float64)
        self.candidates = [name for name, _ in _FORMATS]
        self.filled = 0
        # The formats the slices this thread made hold (the others need no more testing): a
        # thread's own, as the slices may be made in lanes.
        self._held = PerThread(lambda: [name for name, _ in _FORMATS])

    def add(self, start: int, raw: np.ndarray, wide: np.ndarray | None = None) -> None:
        """Add rows ``start, start + 1, ...``: ``raw`` in their own dtype, ``wide`` the same
        rows in float64 when the caller has them (``None``: converted here)."""
        self.fold(start, start + raw.shape[0], self.make(raw, wide, raw.shape[0]))

    @staticmethod
    def size(slice_rows: int) -> int:
        """Values :meth:`make` returns for slices of up to ``slice_rows`` rows."""
        return len(_FORMATS) + slice_rows

    def make(self, raw: np.ndarray, wide: np.ndarray | None, slice_rows: int) -> np.ndarray:
        """The slice's statistics: whether each format holds its values, then its norms
        (padded to ``slice_rows``)."""
        held = self._held()
        held[:] = [c for c in held if _holds(raw, c)]
        out = np.zeros(self.size(slice_rows))
        out[: len(_FORMATS)] = [name in held for name, _ in _FORMATS]
        out[len(_FORMATS) : len(_FORMATS) + raw.shape[0]] = row_norms(raw if wide is None else wide)
        return out

    @staticmethod
    def slice_norms(stats: np.ndarray, rows: int) -> np.ndarray:
        """The norms in a :meth:`make` of ``rows`` rows."""
        return stats[len(_FORMATS) : len(_FORMATS) + rows]

    def fold(self, start: int, stop: int, stats: np.ndarray) -> None:
        """Add the statistics of rows ``start:stop`` (:meth:`make`), in row order."""
        held = {name for (name, _), flag in zip(_FORMATS, stats, strict=False) if flag}
        self.candidates = [c for c in self.candidates if c in held]
        self.norms[start:stop] = self.slice_norms(stats, stop - start)
        self.filled += stop - start

    @property
    def complete(self) -> bool:
        """Whether every row was added."""
        return self.filled == self.norms.shape[0]

    def result(self) -> RawNorms:
        return RawNorms(self.norms, self.candidates[0])


class RawMoments(NamedTuple):
    """The moments of raw rows, in float64, of the rows times ``2**-exponent`` (a power of two,
    so that the squares of the largest rows neither overflow nor leave the normal range,
    whatever their magnitude: 1e300, 1e-300, subnormal): their number, mean and scatter about
    the mean (``d x d``), merged a slice at a time in row order (:class:`RawMomentsScan`);
    ``medians``: the coordinate-wise medians of the raw rows (float64, not scaled), when the
    read that made the moments counted them too (:class:`~gapscope.engine.column_medians.
    PatternCounts`), else ``None``."""

    rows: int
    exponent: int
    mean: np.ndarray
    scatter: np.ndarray
    medians: np.ndarray | None = None


class RawMomentsScan:
    """:class:`RawMoments` of the raw rows, made one slice of float64 rows at a time: what
    MIR's covariance needs, made in a read of the rows that happens anyway (an analysis makes
    it in its validating read, so MIR reads no row for its moments).

    Each slice is scaled by the power of two that brings its largest row norm into
    ``[0.5, 1)`` (exact; where that norm overflows, the power that brings its largest entry
    under ``1 / sqrt(d)``), and its mean and centred scatter are merged by Chan's update in row
    order, in the units of the largest power so far (the others scaled down to it, exactly but
    for digits far below the merged values' rounding)."""

    def __init__(self, d: int) -> None:
        self.size = 1 + d + d * d
        self._merged = _Moments(d)
        self._exponent: int | None = None
        # The scaled, centred rows of a slice, kept for the next (``wide`` is the caller's;
        # a thread's own, as the slices may be made in lanes).
        self._centred = WideningBuffer(np.float64)

    def make(self, wide: np.ndarray, top_norm: float) -> np.ndarray:
        """The slice's power of two, then its scaled mean and scatter (``wide``: its rows in
        float64, left as they are; ``top_norm``: their largest norm, > 0, ``inf`` where it
        overflows)."""
        if np.isfinite(top_norm):
            exponent = int(np.frexp(top_norm)[1])
        else:
            # A norm beyond float64: from the largest entry, with room for sqrt(d) of them.
            top = float(np.abs(wide).max())
            exponent = int(np.frexp(top)[1]) + math.ceil(math.log2(math.sqrt(wide.shape[1])))
        # ldexp's numbers (exact but where the result is subnormal), made by products.
        scaled = times_power_of_two(wide, -exponent, self._centred.empty(wide.shape))
        out = np.empty(self.size)
        out[0] = exponent
        _block_moments(scaled, scaled, out[1:])
        return out

    def fold(self, rows: int, stats: np.ndarray) -> None:
        """Merge the :meth:`make` of the next slice of ``rows`` rows."""
        exponent, packed = int(stats[0]), stats[1:]
        merged = self._merged
        if self._exponent is None:
            self._exponent = exponent
        elif exponent > self._exponent:
            shift = self._exponent - exponent
            merged.mean[...] = np.ldexp(merged.mean, shift)
            merged.scatter[...] = np.ldexp(merged.scatter, 2 * shift)
            self._exponent = exponent
        elif exponent < self._exponent:
            shift = exponent - self._exponent
            d = merged.mean.shape[0]
            packed = np.concatenate([np.ldexp(packed[:d], shift), np.ldexp(packed[d:], 2 * shift)])
        merged.add(rows, packed)

    def result(self) -> RawMoments:
        m = self._merged
        return RawMoments(m.count, self._exponent or 0, m.mean, m.scatter)


def rounding_band(rounding: str) -> float:
    """The relative band of norms that counts as rounding for values held exactly in
    ``rounding`` (a format name of :class:`MIRResult`): ``max(2 u, 1e-6)``.

    >>> rounding_band("bfloat16"), rounding_band("float64")
    (0.0078125, 1e-06)
    """
    u = dict(_FORMATS)[rounding]
    return max(_ROUNDING_UNITS * u, _MIN_NORM_BAND)


def _holds(values: np.ndarray, fmt: str) -> bool:
    """Whether every value is exactly representable in the format ``fmt``."""
    if fmt == "float64" or (fmt == "float32" and values.dtype.itemsize <= 4):
        return True
    if fmt == "float16" and values.dtype == np.float16:
        return True
    if fmt == "bfloat16" and values.dtype.itemsize <= 4:
        # float16 and float32 values are float32s exactly (float16 widened by torch, about
        # ten times faster than numpy's cast): only their low bits to test.
        return not _low_bits_set(
            widen(values, np.float32) if values.dtype != np.float32 else values
        )
    # Values beyond the format's range become inf, or 0 below it: not held (and no error
    # under a caller's np.seterr).
    with np.errstate(over="ignore", under="ignore"):
        if fmt == "float16":
            return bool(np.array_equal(values.astype(np.float16).astype(values.dtype), values))
        as32 = values.astype(np.float32)
        if not np.array_equal(as32.astype(values.dtype), values):
            return False
    return fmt == "float32" or not _low_bits_set(as32)


def _low_bits_set(as32: np.ndarray) -> bool:
    """Whether some float32 value needs more than bfloat16's significand (bfloat16 is float32
    with the low 16 bits of the significand zero)."""
    return bool((as32.view(np.uint32) & np.uint32(0xFFFF)).any())


def norms_may_vary(head: np.ndarray) -> bool:
    """Whether rows that start with ``head`` may have norm outliers for MIR to replace, from
    their first rows alone: ``False`` when the float64 norms of ``head`` lie within
    bfloat16's rounding band of their median (the widest of :func:`rounding_band`), as rows an
    encoder normalised do, whatever their format. A guess, not the test itself: an analysis
    counts the coordinate-wise medians in its validating read only when it holds
    (:class:`~gapscope.engine.column_medians.PatternCounts`); MIR's test is made on every
    row, and reads the medians itself where they were not counted.

    >>> norms_may_vary(np.eye(3)), norms_may_vary(np.diag([1.0, 2.0, 3.0]))
    (False, True)
    """
    if not head.shape[0]:
        return False
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        spread = _norm_spread(row_norms(np.asarray(head, dtype=np.float64)))
    return not spread <= rounding_band("bfloat16")


def _norm_spread(norms: np.ndarray) -> float:
    """The largest relative deviation of a norm from the median norm."""
    median = float(np.median(norms))
    return float(np.abs(norms - median).max() / median)


def _norm_outliers(norms: np.ndarray, spread: float, rounding: str) -> tuple[np.ndarray, bool]:
    """Rows whose norm is more than 3 std from the median norm, and whether the test was
    skipped (``spread`` within :func:`rounding_band` of ``rounding``)."""
    if spread <= rounding_band(rounding):
        return np.zeros(norms.shape[0], dtype=bool), True
    # Norms brought to at most 1 by the power of two of the largest (exact, so the same test
    # wherever the norms are normal numbers): the squares in the standard deviation neither
    # overflow (a row of norm 1e300 among unit rows would make it inf, and find no outlier)
    # nor, for the norms that matter, vanish (subnormal norms would make every row off the
    # median an outlier). Norms far below the largest may underflow: their deviations are
    # then negligible against its own.
    top_exponent = int(np.frexp(norms.max())[1])
    with np.errstate(under="ignore", over="ignore", invalid="ignore"):
        if top_exponent:
            norms = np.ldexp(norms, -top_exponent)
        median = float(np.median(norms))
        std = float(norms.std(ddof=1))
        return np.abs(norms - median) > _OUTLIER_SIGMAS * std, False


def _scaled_mean_cov(
    a: Rows, scale: float, outliers: np.ndarray, rows: int, raw: RawMoments | None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_mean_cov`, from ``raw`` (the moments of ``a``'s raw rows) when given."""
    # Moments that are not finite (none are expected: every slice is scaled into range) are
    # not trusted: the rows are read.
    medians = None if raw is None else raw.medians
    if raw is None or not (np.isfinite(raw.mean).all() and np.isfinite(raw.scatter).all()):
        return _mean_cov(a, scale, outliers, rows, medians)
    mean, scatter = raw.mean, raw.scatter
    if outliers.any():
        replaced = _outliers_replaced(a, raw, outliers)
        if replaced is None:
            return _mean_cov(a, scale, outliers, rows, medians)
        mean, scatter = replaced
    # The moments are of the rows times 2^-exponent: scale by scale * 2^exponent, a number near
    # the ratio of the two modalities' norms (no overflow where the rows are huge).
    factor = float(np.ldexp(scale, raw.exponent))
    return factor * mean, _symmetric(scatter * (factor * factor) / (raw.rows - 1))


# Outliers holding more than this share of any coordinate's scatter are not taken out of the
# moments. An entry of the scatter computed from the rows is accurate relative to the square
# root of its two diagonal entries; taking out at most half of each diagonal entry keeps the
# remaining entries as accurate relative to theirs, within a factor of two.
_MAX_OUTLIER_SHARE = 0.5


def _outliers_replaced(
    a: Rows, raw: RawMoments, outliers: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """The mean and scatter (in ``raw``'s units) of ``a``'s raw rows with the ``outliers``
    replaced by the coordinate-wise median row, from their moments ``raw``: Chan's update
    backwards (the outlier rows, gathered, taken out) and forwards (as many median rows put
    in). ``None`` when the outliers hold more than :data:`_MAX_OUTLIER_SHARE` of the scatter
    of some coordinate (a diagonal entry), where taking them out would cancel its digits."""
    index = np.flatnonzero(outliers)
    n, k = raw.rows, index.size
    rest = n - k
    if rest < 1:
        return None
    taken = np.ldexp(np.asarray(a[index], dtype=np.float64), -raw.exponent)
    mean_out = taken.mean(axis=0)
    centred = taken - mean_out
    mean_rest = (n * raw.mean - k * mean_out) / rest
    delta = mean_rest - mean_out
    with one_blas_thread():  # the bits of the scans' products, whatever the thread count
        removed = centred.T @ centred + np.outer(delta, delta) * (rest * k / n)
    if (np.diagonal(removed) > _MAX_OUTLIER_SHARE * np.diagonal(raw.scatter)).any():
        return None
    medians = column_medians(a) if raw.medians is None else raw.medians
    step = np.ldexp(medians, -raw.exponent) - mean_rest
    mean = mean_rest + step * (k / n)
    scatter = raw.scatter - removed + np.outer(step, step) * (rest * k / n)
    return mean, scatter


def _mean_cov(
    a: Rows, scale: float, outliers: np.ndarray, rows: int, medians: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (ddof = 1) of ``scale * a`` with outlier rows replaced by the
    coordinate-wise median row (``medians``, when counted already), in float64.

    Processes sharing the passes (:mod:`~gapscope.engine.distributed`) take the blocks of
    rows in turn and each merges every block's moments in block order
    (:meth:`~gapscope.engine.distributed.Share.in_order`): the same bits as one process."""
    median_row = None
    if outliers.any():
        median_row = scale * (column_medians(a) if medians is None else medians)
    d = a.shape[1]
    blocks = list(row_blocks(a.shape[0], rows))
    merged = _Moments(d)
    buffer = WideningBuffer(np.float64)

    def moments(b: int) -> np.ndarray:
        start, stop = blocks[b]
        # One float64 buffer for every block, scaled and centred in place (the same values as
        # scaling a float64 copy and centring into another).
        block = buffer(a[start:stop])
        np.multiply(block, scale, out=block)
        if median_row is not None:
            block[outliers[start:stop]] = median_row
        packed = np.empty(d + d * d)
        _block_moments(block, block, packed)
        return packed

    def merge(b: int, packed: np.ndarray) -> None:
        merged.add(blocks[b][1] - blocks[b][0], packed)

    # A thread holds its float64 slice (the buffer is a thread's own).
    current_share().in_order(
        len(blocks), moments, merge, d + d * d, lane_bytes=(rows + d + 1) * d * 8
    )
    return merged.mean, _symmetric(merged.scatter / (merged.count - 1))


def _block_moments(block: np.ndarray, scratch: np.ndarray, out: np.ndarray) -> None:
    """``out[:d]`` = the mean of the float64 ``block``'s rows, ``out[d:]`` = their scatter
    about it (``d x d``, flat); the centred rows are written to ``scratch`` (which may be
    ``block`` itself)."""
    d = block.shape[1]
    out[:d] = block.mean(axis=0)
    centred = np.subtract(block, out[:d], out=scratch)
    out[d:] = (centred.T @ centred).reshape(-1)


class _Moments:
    """A running count, mean and scatter (float64), merged a block at a time."""

    def __init__(self, d: int) -> None:
        self.count = 0
        self.mean = np.zeros(d, dtype=np.float64)
        self.scatter = np.zeros((d, d), dtype=np.float64)

    def add(self, size: int, packed: np.ndarray) -> None:
        """Merge a block of ``size`` rows (its :func:`_block_moments`)."""
        # Chan et al.'s update merges centred blocks without the cancellation of
        # E[x^2] - E[x]^2.
        d = self.mean.shape[0]
        delta = packed[:d] - self.mean
        total = self.count + size
        self.scatter += packed[d:].reshape(d, d) + np.outer(delta, delta) * (
            self.count * size / total
        )
        self.mean += delta * (size / total)
        self.count = total


def _nonsingular(cov: np.ndarray) -> bool:
    """Full numerical rank by numpy.linalg.matrix_rank's default tolerance."""
    w = np.linalg.eigvalsh(cov)
    top = float(w.max())
    return bool(top > 0.0 and float(w.min()) > top * cov.shape[0] * np.finfo(np.float64).eps)
