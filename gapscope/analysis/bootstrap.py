"""Bootstrap intervals (BCa or percentile) for the scalar metrics of a report, resampling groups.

The resampling unit is the *group* (an image with its captions, a clip with its descriptions;
with plain arrays each row is its own group), so rows that belong together stay together. A
resample draws ``G`` groups with replacement out of ``G``; group ``g`` drawn ``w_g`` times
brings ``w_g`` copies of all its rows, of every modality. A resample is thus a weight vector
``w`` over groups, and every metric here is a smooth function of *weighted group totals*
``sum_g w_g T_g`` of per-group quantities ``T_g`` computed once on the full data:

- gap, centroid cosine: per-group sums of the unit rows of each modality and their counts;
- cone: the same sums; pairs of a row with its own copies are left out, as the metric leaves
  out a row with itself, so a resampled cone is
  ``(||sum w x||^2 - sum w^2 ||x||^2) / ((sum w)^2 - sum w^2)`` (row weights ``w_i = w_g``);
- paired / unpaired cosine: per-group ``<X_g, Y_g>`` and pair counts ``n_x,g n_y,g``; a copy of
  a group pairs with itself only, and pairs between copies of one group are left out of the
  unpaired mean;
- alignment: per-group sums of the pair terms ``||x_i - y_j||^alpha``;
- recall@K, mAP, R-precision: per-query hit indicators / AP values. The ranks are computed once
  on the full data and resampled, i.e. the gallery is held fixed and only the queries are
  resampled (the usual practice for retrieval intervals);
- zero-shot top-K accuracy: per-row hit indicators, resampled with the rows' groups (the
  class prompts are held fixed, as a retrieval gallery is); balanced accuracy: per group and
  class the rows and the right top-1 predictions (a sparse ``G x C`` table, one entry a
  group and class that occur together), whose resampled totals give each class's recall;
- uniformity: a first-order (Hajek / delta-method) approximation. With ``a_i`` the mean kernel
  value of row ``i`` against all other rows, the uniformity kernel mean ``U`` is a U-statistic
  of order 2 whose resampled value is, to first order, ``2 abar_w - U`` (``abar_w`` the
  weighted mean of the ``a_i``). The factor 2 matters: resampling the ``a_i`` alone would give
  intervals about half as wide as they should be. Not available with ``--sample``.
- MIR gets no interval: every resample would need two ``d x d`` covariances over all rows
  (``O(n d^2)``) and two eigendecompositions. At 20,000 pairs and d = 512 one MIR takes about
  1.2 s on 2 CPU cores, so 200 resamples would add some 240 s to an analysis of about 95 s.

Cost: ``O(B G d)`` for the weighted sums (a matrix product a chunk of resamples) and
``O(G d)`` float64 memory for the per-group sums (``G`` groups); nothing quadratic in ``n`` is
recomputed (uniformity's row terms come from one more reduction of the similarity blocks the
analysis computes anyway). Measured (``benchmarks/bench_bootstrap.py``, README) at 4,000
pairs and d = 512 on 2 CPU cores: the intervals of ``--bootstrap 200`` take 0.05 s
(percentile) and 0.11 s (BCa) of an analysis of about 61 s.

Two kinds of interval (Efron & Tibshirani 1993, ch. 13 and 14), over the same resamples:

- ``"bca"`` (the default), bias-corrected and accelerated: the quantiles
  ``alpha_j = Phi(z0 + (z0 + z_j) / (1 - a (z0 + z_j)))`` of the resampled values, for
  ``z_j = Phi^-1((1 -+ c) / 2)``, where the bias correction ``z0 = Phi^-1(p)`` comes from the
  share ``p`` of resampled values below the full-data estimate (ties count half, as in
  ``scipy.stats.bootstrap``) and the acceleration
  ``a = sum (m - v_g)^3 / (6 (sum (m - v_g)^2)^(3/2))`` from the leave-one-group-out
  (jackknife) values ``v_g``, ``m`` their mean. The jackknife totals are the full totals
  minus one group's, so it costs ``O(G d)`` more, nothing quadratic. Where every resampled
  value lies on one side of the estimate, ``z0`` is infinite and the interval is null.
- ``"percentile"``: the ``(1 - c) / 2`` and ``(1 + c) / 2`` quantiles of the resampled
  values.

Quantiles use numpy's default linear interpolation. A fixed seed gives identical
intervals. Every statistic keeps its ``B`` resampled values (8 bytes each) for the exact
quantiles: ``B`` is at most :data:`MAX_RESAMPLES` and the values of all statistics together at
most :data:`MAX_VALUE_BYTES`; the weights and the resampled totals are made a bounded chunk of
resamples at a time.

A resample where a statistic is undefined (a zero denominator: no pair of distinct rows for
the cone, no unpaired pair, no row of a modality) gives NaN and is left out of that
statistic's interval; the interval is null when fewer than half the resamples define it.
Undefined jackknife values are left out of the acceleration likewise.

The level is nominal. The gap and the centroid cosine are functions of means (a norm, a
cosine), biased upward on a small set, and a percentile interval inherits that bias twice
(the estimate's and each resample's): at 50 pairs in 16 dimensions, 95% percentile intervals
covered the population gap in 50-91% of 400 draws depending on its size and the centroid
cosine in 1-74%; BCa corrects part of the bias, 72-93% and 17-88%
(``benchmarks/bench_bootstrap_coverage.py``; architecture section 6.10).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import numpy as np

from gapscope.analysis.keys import ci_key
from gapscope.engine.normalization import unit_rows
from gapscope.engine.ranking import RetrievalResult
from gapscope.engine.sampling import Stream, generator
from gapscope.errors import GapscopeError

if TYPE_CHECKING:
    from gapscope.analysis.context import AnalysisContext

__all__ = [
    "GroupTotals",
    "IntervalPlan",
    "INTERVALS",
    "attach_intervals",
    "bca_interval",
    "bootstrap_intervals",
    "check_bootstrap_params",
    "interval_note",
    "mean_of",
    "percentile_interval",
    "resample_weights",
]

# Weights of one chunk of resamples, and each total resampled from them (a ``(b, d)`` array a
# per-group vector quantity): at most this many entries (about 32 MiB as float64).
_CHUNK_ENTRIES = 2**22
#: Most resamples accepted. Every statistic keeps all its resampled values (8 bytes each) for
#: the exact quantiles, so memory grows with B; 100,000 is 500 times the usual 200.
MAX_RESAMPLES = 100_000
#: Most memory (bytes) the resampled values of all statistics may take together.
MAX_VALUE_BYTES = 2 * 2**30
#: Floats are stored with this many significant digits (``gapscope.report.model``); a
#: confidence that rounds to 1 there would make the report fail its own schema.
_STORED_DIGITS = 8
# Rows normalised at a time when building the per-group sums.
_ROWS = 65536

#: A statistic maps the weighted totals of one chunk of resamples to one value a resample.
Statistic = Callable[[Mapping[str, np.ndarray]], np.ndarray]
#: The kinds of interval: bias-corrected and accelerated (the default), and percentile.
INTERVALS = ("bca", "percentile")


def check_bootstrap_params(
    n_resamples: int | None, confidence: float, interval: str = "bca"
) -> None:
    """Check the number of resamples, the confidence level and the kind of the bootstrap
    intervals.

    Parameters
    ----------
    n_resamples : int or None
        The number of resamples B: None (no intervals) or an integer from 10 to
        :data:`MAX_RESAMPLES` (every statistic keeps its B resampled values in memory).
    confidence : float
        The level of the intervals: strictly between 0 and 1, also once rounded to the 8
        significant digits the report stores (so at most 0.99999999).
    interval : str
        One of :data:`INTERVALS`.

    Raises
    ------
    GapscopeError
        Naming the bad parameter and the allowed range.

    Examples
    --------
    >>> check_bootstrap_params(200, 0.95)
    >>> check_bootstrap_params(5, 0.95)
    Traceback (most recent call last):
    ...
    gapscope.errors.GapscopeError: bootstrap: expected at least 10 resamples (200 is usual), got 5
    """
    if n_resamples is not None and (
        isinstance(n_resamples, bool)
        or not isinstance(n_resamples, int | np.integer)
        or n_resamples < 10
    ):
        raise GapscopeError(
            f"bootstrap: expected at least 10 resamples (200 is usual), got {n_resamples!r}"
        )
    if n_resamples is not None and n_resamples > MAX_RESAMPLES:
        raise GapscopeError(
            f"bootstrap: expected at most {MAX_RESAMPLES} resamples (200 is usual), got "
            f"{n_resamples}: each interval keeps its B resampled values in memory (8 bytes "
            "each, for every metric and direction), and a few hundred already place the "
            "bounds; lower --bootstrap"
        )
    if not (isinstance(confidence, int | float) and 0.0 < float(confidence) < 1.0):
        raise GapscopeError(f"confidence: expected a number between 0 and 1, got {confidence!r}")
    # The report stores 8 significant digits: 0.999999999 would be written as 1, which its
    # schema refuses.
    if float(f"{float(confidence):.{_STORED_DIGITS}g}") >= 1.0:
        raise GapscopeError(
            f"confidence: expected a number between 0 and 1, got {confidence!r}, which the "
            f"report ({_STORED_DIGITS} significant digits) would store as 1; use at most "
            "0.99999999"
        )
    if interval not in INTERVALS:
        raise GapscopeError(f"interval: expected one of {', '.join(INTERVALS)}, got {interval!r}")


def _gib(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:.3g} GiB"


def resample_weights(n_groups: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Yield the resamples' group weights in chunks of shape ``(b, n_groups)`` (float64).

    Resample ``r`` draws ``n_groups`` group indices uniformly with replacement from the
    seed stream ``BOOTSTRAP`` (:mod:`gapscope.engine.sampling`), one resample after the
    other, and ``w[r, g]`` counts how often group ``g`` was drawn (so each row of weights sums to
    ``n_groups``). The draws do not depend on the chunking.

    >>> w = np.concatenate(list(resample_weights(5, 3, seed=0)))
    >>> w.shape, w.sum(axis=1).tolist()
    ((3, 5), [5.0, 5.0, 5.0])
    """
    rng = generator(seed, Stream.BOOTSTRAP)
    chunk = max(1, min(n_resamples, _CHUNK_ENTRIES // max(n_groups, 1)))
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        weights = np.empty((b, n_groups), dtype=np.float64)
        for r in range(b):
            weights[r] = np.bincount(rng.integers(0, n_groups, size=n_groups), minlength=n_groups)
        yield weights


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float] | None:
    """The central ``confidence`` percentile interval of bootstrap ``values``.

    Undefined values (NaN, e.g. a resample that drew no eligible query) are left out; when
    fewer than half of the values are defined the interval is ``None``.

    >>> percentile_interval(np.arange(101.0), 0.9)
    (5.0, 95.0)
    >>> percentile_interval(np.array([1.0, np.nan, np.nan]), 0.9) is None
    True
    """
    finite = values[np.isfinite(values)]
    if finite.size == 0 or 2 * finite.size < values.size:
        return None
    low, high = np.quantile(finite, [(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0])
    return float(low), float(high)


def bca_interval(
    values: np.ndarray, estimate: float, jackknife: np.ndarray, confidence: float
) -> tuple[float, float] | None:
    """The bias-corrected and accelerated (BCa) ``confidence`` interval of bootstrap
    ``values`` (Efron 1987; Efron & Tibshirani 1993, ch. 14.3).

    With ``p`` the share of defined values below ``estimate`` (a value equal to it counts
    half), ``z0 = Phi^-1(p)``; with ``v_g`` the defined ``jackknife`` (leave-one-out) values
    and ``m`` their mean, ``a = sum (m - v_g)^3 / (6 (sum (m - v_g)^2)^(3/2))`` (0 when they
    are all equal). The bounds are the quantiles
    ``Phi(z0 + (z0 + z) / (1 - a (z0 + z)))`` of the values for ``z = Phi^-1((1 -+ c) / 2)``;
    with ``z0 = a = 0`` that is the percentile interval.

    ``None`` when fewer than half of ``values`` are defined (as
    :func:`percentile_interval`), when ``estimate`` is undefined, when every defined value
    lies on one side of it (``z0`` infinite: the bias is beyond what the resamples can
    correct), or when an adjusted level leaves ``(0, 1)``.

    >>> values = np.arange(101.0)
    >>> bca_interval(values, 50.0, np.array([1.0, 2.0, 3.0]), 0.9)
    (5.0, 95.0)
    >>> bca_interval(values, -1.0, np.array([1.0, 2.0]), 0.9) is None
    True
    """
    finite = values[np.isfinite(values)]
    if finite.size == 0 or 2 * finite.size < values.size or not np.isfinite(estimate):
        return None
    below = np.count_nonzero(finite < estimate) + np.count_nonzero(finite <= estimate)
    if below == 0 or below == 2 * finite.size:
        return None
    normal = NormalDist()
    z0 = normal.inv_cdf(below / (2.0 * finite.size))
    spread = jackknife[np.isfinite(jackknife)]
    spread = spread.mean() - spread if spread.size else spread
    squares = float(np.sum(spread**2))
    accel = float(np.sum(spread**3)) / (6.0 * squares**1.5) if squares > 0 else 0.0
    levels = []
    for tail in ((1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0):
        z = z0 + normal.inv_cdf(tail)
        scale = 1.0 - accel * z
        if scale <= 0:
            return None
        levels.append(normal.cdf(z0 + z / scale))
    if not all(0.0 < level < 1.0 for level in levels):
        return None
    low, high = np.quantile(finite, levels)
    return float(low), float(high)


@dataclass
class GroupTotals:
    """Per-group quantities ``T_g`` whose resampled totals ``sum_g w_g T_g`` the statistics use.

    ``add(name, values)`` registers a ``(G,)`` or ``(G, d)`` array; with ``squared=True`` the
    totals ``sum_g w_g^2 T_g`` are also given, as ``name + "^2"`` (they count the pairs between
    copies of one group).
    """

    n_groups: int
    _arrays: dict[str, np.ndarray] = field(default_factory=dict)
    _squared: set[str] = field(default_factory=set)
    _sparse: dict[str, tuple[np.ndarray, ...]] = field(default_factory=dict)
    _whole: dict[str, np.ndarray] | None = field(default=None, repr=False)

    def add(self, name: str, values: np.ndarray, *, squared: bool = False) -> None:
        self._whole = None
        values = np.asarray(values, dtype=np.float64)
        if values.shape[0] != self.n_groups:
            raise ValueError(f"{name}: expected {self.n_groups} groups, got {values.shape[0]}")
        self._arrays[name] = values
        if squared:
            self._squared.add(name)

    def add_by_column(
        self, name: str, groups: np.ndarray, columns: np.ndarray, values: np.ndarray, n: int
    ) -> None:
        """Register the ``(G, n)`` table ``T[g, c] = sum of values of the rows of group g and
        column c`` without making it dense: its resampled totals are ``(b, n)`` arrays."""
        self._whole = None
        groups = np.asarray(groups, dtype=np.int64)
        columns = np.asarray(columns, dtype=np.int64)
        cell = columns * self.n_groups + groups
        keys, inverse = np.unique(cell, return_inverse=True)
        sums = np.bincount(inverse, weights=np.asarray(values, dtype=np.float64))
        key_columns = keys // self.n_groups
        starts = np.flatnonzero(np.concatenate([[True], key_columns[1:] != key_columns[:-1]]))
        self._sparse[name] = (
            keys % self.n_groups,
            sums,
            starts,
            key_columns[starts],
            key_columns,
            np.array(n),
        )

    @property
    def width(self) -> int:
        """The most columns one resampled total (or the stacked per-group scalars) has."""
        scalars = sum(1 for a in self._arrays.values() if a.ndim == 1)
        vectors = [a.shape[1] for a in self._arrays.values() if a.ndim == 2]
        tables = [int(entry[-1]) for entry in self._sparse.values()]
        return max([1, scalars, *vectors, *tables])

    def __contains__(self, name: str) -> bool:
        return name in self._arrays or name in self._sparse

    def __getitem__(self, name: str) -> np.ndarray:
        """The per-group array registered as ``name``."""
        return self._arrays[name]

    def left_out(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Totals with each group of ``start..stop-1`` left out in turn (the jackknife):
        ``(b,)`` or ``(b, d)`` arrays, ``b = stop - start``; the same as
        :meth:`resampled` for the weights ``1 - e_g`` (a weight 1 squares to itself), made
        as the full totals minus one group's."""
        whole = self.whole()
        out: dict[str, np.ndarray] = {}
        for name, values in self._arrays.items():
            out[name] = whole[name] - values[start:stop]
            if name in self._squared:
                out[f"{name}^2"] = out[name]
        for name, (groups, sums, _, _, entry_columns, _) in self._sparse.items():
            left = np.repeat(whole[name], stop - start, axis=0)
            inside = (groups >= start) & (groups < stop)
            # One entry a group and column: each is subtracted once.
            left[groups[inside] - start, entry_columns[inside]] -= sums[inside]
            out[name] = left
        return out

    def whole(self) -> dict[str, np.ndarray]:
        """The totals of the data itself (every weight 1), as a chunk of one: ``(1,)`` or
        ``(1, d)`` arrays."""
        if self._whole is None:
            out: dict[str, np.ndarray] = {}
            for name, values in self._arrays.items():
                out[name] = values.sum(axis=0, keepdims=True)
                if name in self._squared:
                    out[f"{name}^2"] = out[name]
            for name, (_, sums, starts, columns, _, n) in self._sparse.items():
                table = np.zeros((1, int(n)))
                table[0, columns] = np.add.reduceat(sums, starts) if sums.size else 0.0
                out[name] = table
            self._whole = out
        return self._whole

    def resampled(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Totals for a chunk of weights ``(b, G)``: ``(b,)`` or ``(b, d)`` arrays."""
        out: dict[str, np.ndarray] = {}
        # One matrix product for all per-group scalars, one a per-group vector quantity.
        scalars = [n for n, a in self._arrays.items() if a.ndim == 1]
        if scalars:
            stacked = np.stack([self._arrays[n] for n in scalars], axis=1)
            products = weights @ stacked
            out.update({n: products[:, k] for k, n in enumerate(scalars)})
            squared = [n for n in scalars if n in self._squared]
            if squared:
                products = (weights * weights) @ np.stack(
                    [self._arrays[n] for n in squared], axis=1
                )
                out.update({f"{n}^2": products[:, k] for k, n in enumerate(squared)})
        for name, values in self._arrays.items():
            if values.ndim == 2:
                out[name] = weights @ values
        for name, (groups, sums, starts, columns, _, n) in self._sparse.items():
            table = np.zeros((weights.shape[0], int(n)))
            if groups.size:
                table[:, columns] = np.add.reduceat(weights[:, groups] * sums, starts, axis=1)
            out[name] = table
        return out


def bootstrap_intervals(
    totals: GroupTotals,
    statistics: Mapping[Any, Statistic],
    *,
    n_resamples: int,
    seed: int,
    confidence: float = 0.95,
    interval: str = "bca",
) -> dict[Any, tuple[float, float] | None]:
    """Intervals of each statistic over ``n_resamples`` group resamples.

    Args:
        totals: the per-group quantities.
        statistics: key -> function of the weighted totals (see :class:`GroupTotals`).
        n_resamples: number of resamples B.
        seed: seeds the draws (:func:`resample_weights`).
        confidence: the level of the intervals, e.g. 0.95.
        interval: ``"bca"`` (:func:`bca_interval`, with the estimate from the data's own
            totals and the jackknife from :meth:`GroupTotals.left_out`) or ``"percentile"``
            (:func:`percentile_interval`).

    Returns:
        key -> ``(low, high)``, or ``None`` where the statistic was undefined in most
        resamples (or, for BCa, where the interval is undefined: see :func:`bca_interval`).
        A resample where a statistic is undefined (NaN, e.g. a zero denominator) is left out of
        that statistic's interval.

    Raises:
        GapscopeError: bad ``n_resamples``, ``confidence`` or ``interval``
            (:func:`check_bootstrap_params`), or resampled values of all statistics over
            :data:`MAX_VALUE_BYTES`.

    Example:
        >>> totals = GroupTotals(4)
        >>> totals.add("x", np.array([1.0, 2.0, 3.0, 4.0]))
        >>> totals.add("n", np.ones(4))
        >>> ci = bootstrap_intervals(totals, {"mean": lambda t: t["x"] / t["n"]},
        ...                          n_resamples=50, seed=0)
        >>> 1.0 <= ci["mean"][0] <= 2.5 <= ci["mean"][1] <= 4.0
        True
    """
    check_bootstrap_params(n_resamples, confidence, interval)
    # The exact quantiles need every resampled value, so this is the one allocation that grows
    # with B; refuse it up front rather than run out of memory at the end of the draws.
    needed = 8 * n_resamples * len(statistics)
    if needed > MAX_VALUE_BYTES:
        raise GapscopeError(
            f"bootstrap: {n_resamples} resamples of {len(statistics)} metrics need about "
            f"{_gib(needed)} of memory (at most {_gib(MAX_VALUE_BYTES)}); lower --bootstrap "
            "or select fewer metrics"
        )
    values = {key: np.full(n_resamples, np.nan) for key in statistics}
    # A chunk's totals are (b, width) arrays: bound them as the weights are bounded, so a wide
    # embedding over few groups does not make chunks of B x d. Splitting a chunk of weights
    # changes no draw (see resample_weights).
    rows = max(1, _CHUNK_ENTRIES // totals.width)
    done = 0
    with np.errstate(divide="ignore", invalid="ignore"):
        for chunk in resample_weights(totals.n_groups, n_resamples, seed):
            for start in range(0, chunk.shape[0], rows):
                weights = chunk[start : start + rows]
                resampled = totals.resampled(weights)
                end = done + weights.shape[0]
                for key, statistic in statistics.items():
                    values[key][done:end] = statistic(resampled)
                done = end
        if interval == "percentile":
            return {key: percentile_interval(v, confidence) for key, v in values.items()}
        whole = totals.whole()
        estimates = {key: float(statistic(whole)[0]) for key, statistic in statistics.items()}
        jackknife = {key: np.empty(totals.n_groups) for key in statistics}
        for start in range(0, totals.n_groups, rows):
            stop = min(totals.n_groups, start + rows)
            left = totals.left_out(start, stop)
            for key, statistic in statistics.items():
                jackknife[key][start:stop] = statistic(left)
    return {
        key: bca_interval(v, estimates[key], jackknife[key], confidence)
        for key, v in values.items()
    }


# --------------------------------------------------------------------------- report metrics


class IntervalPlan:
    """The per-group totals of an analysis's metrics, each built once when first needed, and
    the statistics of those metrics over them (one a metric; the families of
    :mod:`gapscope.analysis.families` ask for theirs).

    Groups of all modalities share one dense code ``0..G-1``; ``group_of[m][i]`` is the code of
    row ``i`` of modality ``m``.
    """

    def __init__(self, ctx: AnalysisContext) -> None:
        self.ctx = ctx
        names = ctx.modalities
        all_groups = np.concatenate([ctx.groups(m) for m in names])
        _, codes = np.unique(all_groups, return_inverse=True)
        offsets = np.cumsum([0] + [ctx.groups(m).shape[0] for m in names])
        self.group_of = {m: codes[offsets[k] : offsets[k + 1]] for k, m in enumerate(names)}
        self.n_groups = int(codes.max()) + 1
        self.totals = GroupTotals(self.n_groups)

    def _counts(self, m: str) -> str:
        """Rows of modality ``m`` a group (also weighted by ``w^2``)."""
        name = f"n:{m}"
        if name not in self.totals:
            self.totals.add(
                name, np.bincount(self.group_of[m], minlength=self.n_groups), squared=True
            )
        return name

    def _unit_sums(self, m: str) -> str:
        """Sums of the unit rows ``(G, d)``; ``sq:m`` holds their squared norms."""
        name = f"sum:{m}"
        if name not in self.totals:
            sums, squares = _group_unit_sums(self.ctx.raw[m], self.group_of[m], self.n_groups)
            self.totals.add(name, sums)
            self.totals.add(f"sq:{m}", squares, squared=True)
        return name

    def _pair_counts(self, a: str, b: str) -> str:
        """Positive pairs a group: ``n_a,g * n_b,g``."""
        name = f"pairs:{a}-{b}"
        if name not in self.totals:
            self.totals.add(
                name, self.totals[self._counts(a)] * self.totals[self._counts(b)], squared=True
            )
        return name

    def cone(self, m: str) -> Statistic:
        """The cone of ``m``; a row's pairs with its own copies are left out."""
        return _cone_statistic(self._unit_sums(m), f"sq:{m}", self._counts(m))

    def uniformity(self, m: str, log_a: np.ndarray) -> Statistic:
        """The (first-order) uniformity of ``m`` from its row terms ``log a_i``."""
        return _uniformity_statistic(self.totals, m, log_a, self.group_of[m], self._counts(m))

    def gap(self, a: str, b: str) -> tuple[Statistic, Statistic]:
        """The gap and the centroid cosine of a pair."""
        return _gap_statistics(
            self._unit_sums(a), self._counts(a), self._unit_sums(b), self._counts(b)
        )

    def cosines(self, a: str, b: str) -> tuple[Statistic, Statistic]:
        """The paired and unpaired cosines of a pair."""
        dot = f"dot:{a}-{b}"
        if dot not in self.totals:
            self.totals.add(
                dot,
                np.einsum(
                    "gd,gd->g", self.totals[self._unit_sums(a)], self.totals[self._unit_sums(b)]
                ),
                squared=True,
            )
        return _cosine_statistics(
            dot,
            self._pair_counts(a, b),
            self._unit_sums(a),
            self._unit_sums(b),
            self._counts(a),
            self._counts(b),
        )

    def alignment(self, a: str, b: str) -> Statistic:
        """The alignment of a pair, from each row's sum of pair terms."""
        from gapscope.metrics.alignment import alignment_row_terms

        ctx = self.ctx
        name = f"align:{a}-{b}"
        if name not in self.totals:
            row_sums, _ = alignment_row_terms(
                ctx.raw[a],
                ctx.raw[b],
                ctx.groups(a),
                ctx.groups(b),
                alpha=ctx.options.alignment_alpha,
            )
            self.totals.add(
                name, np.bincount(self.group_of[a], weights=row_sums, minlength=self.n_groups)
            )
        return _ratio(name, self._pair_counts(a, b))

    def recall(self, query_modality: str, result: RetrievalResult) -> dict[str, Statistic]:
        """Every per-query mean of one retrieval direction (R@K, mAP, R-precision), keyed as
        :attr:`~gapscope.engine.ranking.RetrievalResult.per_query`; the gallery is held fixed
        and the queries resampled by group."""
        query_groups = self.group_of[query_modality][result.query_rows]
        tag = f"rq:{id(result)}"
        count = f"{tag}:n"
        self.totals.add(count, np.bincount(query_groups, minlength=self.n_groups))
        stats: dict[str, Statistic] = {}
        for metric, values in result.per_query.items():
            name = f"{tag}:{metric}"
            self.totals.add(
                name, np.bincount(query_groups, weights=values, minlength=self.n_groups)
            )
            stats[metric] = _ratio(name, count)
        return stats

    def zero_shot(
        self, query_modality: str, targets: np.ndarray, rank: np.ndarray, n_classes: int
    ) -> dict[int | str, Statistic]:
        """Top-K accuracy (keyed K, for K = 1 and 5) and balanced accuracy (keyed
        ``"balanced"``) of the zero-shot classification of every row of ``query_modality``
        (true classes ``targets``, their ranks ``rank``); the class prompts are held fixed."""
        groups = self.group_of[query_modality]
        tag = f"zs:{query_modality}"
        count = f"{tag}:n"
        self.totals.add(count, np.bincount(groups, minlength=self.n_groups))
        stats: dict[int | str, Statistic] = {}
        for k in (1, 5):
            name = f"{tag}:top{k}"
            hits = (rank < k).astype(np.float64)
            self.totals.add(name, np.bincount(groups, weights=hits, minlength=self.n_groups))
            stats[k] = _ratio(name, count)
        rows, right = f"{tag}:class_rows", f"{tag}:class_right"
        self.totals.add_by_column(rows, groups, targets, np.ones(targets.shape[0]), n_classes)
        self.totals.add_by_column(right, groups, targets, (rank == 0).astype(float), n_classes)
        stats["balanced"] = _balanced_statistic(rows, right)
        return stats


def _balanced_statistic(rows: str, right: str) -> Statistic:
    def balanced(t: Mapping[str, np.ndarray]) -> np.ndarray:
        counts = t[rows]
        present = counts > 0
        recall = np.where(present, t[right] / np.where(present, counts, 1.0), 0.0)
        n_present = present.sum(axis=1)
        return np.where(n_present > 0, recall.sum(axis=1) / np.maximum(n_present, 1), np.nan)

    return balanced


def attach_intervals(
    sections: dict[str, dict[str, Any]],
    plan: IntervalPlan,
    statistics: Mapping[tuple[str, ...], Statistic],
    *,
    n_resamples: int,
    seed: int,
    confidence: float = 0.95,
    interval: str = "bca",
) -> None:
    """Compute every statistic over the same resamples and put its interval beside its value:
    the statistic at ``(section, name, key, ..., leaf)`` gets ``leaf_ci = [low, high]`` (or
    ``None`` when it was undefined in most resamples) in the same mapping.

    Raises:
        GapscopeError: bad ``n_resamples``, ``confidence`` or ``interval``
            (:func:`check_bootstrap_params`).
    """
    intervals = bootstrap_intervals(
        plan.totals,
        statistics,
        n_resamples=n_resamples,
        seed=seed,
        confidence=confidence,
        interval=interval,
    )
    for path, bounds in intervals.items():
        node: Any = sections
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        # A value the analysis left out (a pair without positive pairs) gets no interval.
        if isinstance(node, dict) and path[-1] in node:
            node[ci_key(path[-1])] = None if bounds is None else list(bounds)


def _group_unit_sums(raw: Any, group_of: np.ndarray, n_groups: int) -> tuple[np.ndarray, ...]:
    """Per group: the sum of the L2-normalised rows ``(G, d)`` and of their squared norms."""
    sums = np.zeros((n_groups, raw.shape[1]), dtype=np.float64)
    squares = np.zeros(n_groups, dtype=np.float64)
    for start in range(0, raw.shape[0], _ROWS):
        rows = unit_rows(raw[start : start + _ROWS])
        codes = group_of[start : start + rows.shape[0]]
        # Sorting by group and reducing runs is much faster than np.add.at.
        order = np.argsort(codes, kind="stable")
        sorted_codes = codes[order]
        starts = np.flatnonzero(np.concatenate([[True], sorted_codes[1:] != sorted_codes[:-1]]))
        sums[sorted_codes[starts]] += np.add.reduceat(rows[order], starts, axis=0)
        squares += np.bincount(codes, weights=np.einsum("ij,ij->i", rows, rows), minlength=n_groups)
    return sums, squares


def _rowdot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("bd,bd->b", a, b)


def _ratio(numerator: str, denominator: str) -> Statistic:
    return lambda t: _divide(t[numerator], t[denominator])


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator``, NaN (undefined) where the denominator is not positive.

    The denominators here count rows or pairs, whole numbers held exactly in float64, so a
    resample without any (e.g. one that drew a single distinct row) gets exactly 0; its
    numerator is then 0 only up to rounding, and a plain division would give +-inf, which a
    clip turns into a spurious +-1.
    """
    positive = denominator > 0
    return np.where(positive, numerator / np.where(positive, denominator, 1.0), np.nan)


def mean_of(statistics: list[Statistic]) -> Statistic:
    """The mean of several statistics (e.g. a pair's uniformity from its two modalities)."""
    return lambda t: np.asarray(sum(s(t) for s in statistics) / len(statistics))


def _cone_statistic(sums: str, squares: str, counts: str) -> Statistic:
    def cone(t: Mapping[str, np.ndarray]) -> np.ndarray:
        s = t[sums]
        pairs = t[counts] ** 2 - t[f"{counts}^2"]
        return np.minimum(1.0, _divide(_rowdot(s, s) - t[f"{squares}^2"], pairs))

    return cone


def _gap_statistics(sum_a: str, n_a: str, sum_b: str, n_b: str) -> tuple[Statistic, Statistic]:
    def means(t: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        # A resample without rows of a modality has no centroid: NaN rows (undefined).
        return _divide(t[sum_a], t[n_a][:, None]), _divide(t[sum_b], t[n_b][:, None])

    def gap(t: Mapping[str, np.ndarray]) -> np.ndarray:
        mean_a, mean_b = means(t)
        return np.linalg.norm(mean_a - mean_b, axis=1)

    def centroid_cosine(t: Mapping[str, np.ndarray]) -> np.ndarray:
        mean_a, mean_b = means(t)
        norms = np.linalg.norm(mean_a, axis=1) * np.linalg.norm(mean_b, axis=1)
        # A zero centroid has cosine 0, as in the metric; a missing one (NaN) stays undefined.
        cosine = np.where(norms > 0, _rowdot(mean_a, mean_b) / np.where(norms > 0, norms, 1), 0)
        return np.where(np.isnan(norms), np.nan, np.clip(cosine, -1.0, 1.0))

    return gap, centroid_cosine


def _cosine_statistics(
    dot: str, n_pairs: str, sum_a: str, sum_b: str, n_a: str, n_b: str
) -> tuple[Statistic, Statistic]:
    def paired(t: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.clip(_divide(t[dot], t[n_pairs]), -1.0, 1.0)

    def unpaired(t: Mapping[str, np.ndarray]) -> np.ndarray:
        # All cross pairs minus those within one copy of a group (the positives) and those
        # between two copies of one group (copies of positives, neither paired nor unpaired).
        # A resample of one distinct group has no unpaired pair: undefined, not +-1.
        rest = _rowdot(t[sum_a], t[sum_b]) - t[f"{dot}^2"]
        return np.clip(_divide(rest, t[n_a] * t[n_b] - t[f"{n_pairs}^2"]), -1.0, 1.0)

    return paired, unpaired


def _uniformity_statistic(
    totals: GroupTotals, m: str, log_a: np.ndarray, group_of: np.ndarray, counts: str
) -> Statistic:
    # a_i are shifted by their maximum in the log domain so that nothing underflows for a
    # large t; the shift comes back in the log.
    top = float(log_a.max())
    shifted = np.exp(log_a - top)
    mean = float(shifted.mean())
    name = f"uni:{m}"
    totals.add(name, np.bincount(group_of, weights=shifted, minlength=totals.n_groups))

    def uniformity(t: Mapping[str, np.ndarray]) -> np.ndarray:
        linear = 2.0 * t[name] / t[counts] - mean
        # At most 0, as the point estimate is kept (engine/passes.py): a mean kernel value
        # is at most 1, though float32 rounding may lift identical rows a hair above.
        return np.minimum(top + np.log(np.where(linear > 0, linear, np.nan)), 0.0)

    return uniformity


def interval_note(
    n_resamples: int, confidence: float, seed: int, *, sampled: bool, interval: str = "bca"
) -> str:
    """The report note that says how the ``*_ci`` intervals were made."""
    kind = "BCa (bias-corrected and accelerated)" if interval == "bca" else "percentile"
    note = (
        f"*_ci are {100 * confidence:.8g}% {kind} bootstrap intervals from {n_resamples} "
        f"resamples of groups (seed {seed}); retrieval intervals hold the gallery fixed and "
        "resample queries; uniformity intervals are first-order (per-row kernel means); "
        "MIR has no interval"
    )
    if sampled:
        note += "; a sampled uniformity (--sample) has its standard error instead of an interval"
    return note
