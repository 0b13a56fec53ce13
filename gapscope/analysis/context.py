"""The analysis context: what every metric of one analysis shares, computed once.

:class:`AnalysisOptions` holds the checked parameters. :class:`AnalysisContext` validates the
embeddings once at the boundary (the later stages take the validated
:class:`~gapscope.engine.validation.Embeddings` without scanning them again) and then hands
out, each computed on first use and kept:

* the unit rows each O(n^2) pass multiplies (:meth:`AnalysisContext.unit`);
* each modality's sum of unit rows (:meth:`~AnalysisContext.unit_sums`: the gap, the cone,
  the what-ifs and the spectral diagnostics all start from it) and centred scatter;
* the sampled query rows (:meth:`~AnalysisContext.queries`, one seed stream a modality);
* the passes (:meth:`~AnalysisContext.modality_pass`, :meth:`~AnalysisContext.cross_pass`):
  the report's uniformity and retrieval, the what-ifs' "original" scenario, the bootstrap's
  per-query values and the plots' recall curves all read the same ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import torch

from gapscope.analysis import keys as K
from gapscope.analysis.families import FAMILIES, MMD, RETRIEVAL, families_for
from gapscope.data.embedding_set import EmbeddingSet
from gapscope.data.weights import random_init_seed
from gapscope.engine.blocks import resolve_scan_rows, shares_a_code
from gapscope.engine.column_medians import PatternCounts
from gapscope.engine.devices import resolve_device
from gapscope.engine.moments import UnitSums, UnitSumsScan, unit_scatter, unit_sums
from gapscope.engine.passes import (
    CROSS_DIRECTIONS,
    CrossKernel,
    CrossQueries,
    ModalityPassResult,
    cross_pair_pass,
    modality_pass,
)
from gapscope.engine.ranking import RetrievalResult
from gapscope.engine.sampling import Stream, check_seed, sample_rows
from gapscope.engine.unit_rows import PRECISIONS, UnitRows, fits_in_memory
from gapscope.engine.validation import (
    Embeddings,
    check_block_size,
    check_embeddings,
    check_k,
    check_positive,
    check_temperature,
)
from gapscope.errors import EmbeddingError, GapscopeError
from gapscope.metrics.cosine import PairCosine, paired_cosine
from gapscope.metrics.mir import (
    RawMoments,
    RawMomentsScan,
    RawNorms,
    RawNormsScan,
    norms_may_vary,
    raw_norms,
)

__all__ = ["METRICS", "AnalysisContext", "AnalysisOptions", "Progress", "parse_k", "parse_metrics"]

#: What ``--metrics`` selects, in report order: the selectors of the registry's families
#: (``diagnostics`` turns on effective rank, separability, CKA, similarity statistics, gap
#: direction and GRAM volume; ``whatif`` the gap-closing what-ifs).
METRICS = tuple(dict.fromkeys(f.selector for f in FAMILIES))

#: The first rows of a modality whose norms tell whether it may have MIR's norm outliers
#: (:func:`~gapscope.metrics.mir.norms_may_vary`), and so whether its validating read counts
#: the medians too.
_HEAD_ROWS = 256
DEFAULT_K = (1, 5, 10)
#: Query rows a modality for the what-ifs (and rows for the separability probe) at most.
DEFAULT_MAX_ROWS = 5000

Progress = Callable[[str], None]


def parse_metrics(metrics: str | Iterable[str] | None) -> list[str]:
    """Normalise a metric selection ('all', a comma list, or names) into ``METRICS`` order.

    >>> parse_metrics("retrieval,gap")
    ['gap', 'retrieval']
    >>> parse_metrics(None) == list(METRICS)
    True
    """
    if metrics is None:
        return list(METRICS)
    names = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    names = [n.strip().lower() for n in names]
    if not names or "" in names:
        raise GapscopeError(
            f"metrics: an empty name in {metrics!r}: give names separated by commas, like "
            "gap,retrieval, or 'all'"
        )
    if "all" in names:
        return list(METRICS)
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise GapscopeError(
            f"unknown metric {unknown[0]!r}: choose from {', '.join(METRICS)} (or 'all')"
        )
    return [m for m in METRICS if m in names]


def parse_k(k: str | int | Iterable[int]) -> list[int]:
    """Parse the K of recall@K ('1,5,10' or ints) into a sorted list of distinct positive ints.

    >>> parse_k("10,1,5")
    [1, 5, 10]
    """
    if isinstance(k, str):
        values: list[Any] = k.split(",")
    elif isinstance(k, int | np.integer) and not isinstance(k, bool):
        values = [k]  # one cut-off, as the metric functions take it
    elif isinstance(k, Iterable):
        values = list(k)
    else:
        raise GapscopeError(f"k must be positive integers like 1,5,10, got {k!r}")
    try:
        ks = sorted({int(str(v).strip()) for v in values})
    except ValueError:
        raise GapscopeError(f"k must be positive integers like 1,5,10, got {k!r}") from None
    if not ks or ks[0] < 1:
        raise GapscopeError(f"k must be positive integers like 1,5,10, got {k!r}")
    return list(check_k(ks))


@dataclass(frozen=True)
class AnalysisOptions:
    """The checked parameters of one analysis (see :func:`gapscope.analyze` for each)."""

    metrics: tuple[str, ...] = METRICS
    k: tuple[int, ...] = DEFAULT_K
    seed: int = 0
    device: torch.device = torch.device("cpu")
    sample: int | None = None
    block_size: int | None = None
    precision: str = "fp32"
    uniformity_t: float = 2.0
    alignment_alpha: float = 2.0
    bootstrap: int | None = None
    confidence: float = 0.95
    interval: str = "bca"

    @classmethod
    def parse(
        cls,
        *,
        metrics: str | Sequence[str] | None = None,
        k: str | Sequence[int] = DEFAULT_K,
        seed: int = 0,
        device: str | torch.device | None = "auto",
        sample: int | None = None,
        block_size: int | None = None,
        precision: str = "fp32",
        uniformity_t: float = 2.0,
        alignment_alpha: float = 2.0,
        bootstrap: int | None = None,
        confidence: float = 0.95,
        interval: str = "bca",
    ) -> AnalysisOptions:
        """Check every parameter; raises :class:`~gapscope.errors.GapscopeError` naming the
        first bad one."""
        from gapscope.analysis.bootstrap import check_bootstrap_params

        if sample is not None and (isinstance(sample, bool) or sample < 2):
            raise GapscopeError(f"sample must be at least 2 queries, got {sample}")
        check_bootstrap_params(bootstrap, confidence, interval)
        if precision not in PRECISIONS:
            raise GapscopeError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"
            )
        return cls(
            metrics=tuple(parse_metrics(metrics)),
            k=tuple(parse_k(k)),
            seed=check_seed(seed),
            device=resolve_device(device),
            sample=None if sample is None else int(sample),
            block_size=check_block_size(block_size),
            precision=precision,
            uniformity_t=check_temperature(uniformity_t, "uniformity_t"),
            alignment_alpha=check_positive(alignment_alpha, "alignment_alpha"),
            bootstrap=bootstrap,
            confidence=float(confidence),
            interval=interval,
        )

    def params(self) -> dict[str, Any]:
        """The report's ``params`` section: what shaped the numbers."""
        params: dict[str, Any] = {
            K.P_METRICS: list(self.metrics),
            K.P_K: list(self.k),
            K.P_SEED: self.seed,
            K.P_SAMPLE: self.sample,
            K.P_UNIFORMITY_T: self.uniformity_t,
            K.P_ALIGNMENT_ALPHA: self.alignment_alpha,
            K.P_DEVICE: self.device.type,
            K.P_PRECISION: self.precision,
            K.P_BOOTSTRAP: self.bootstrap,
            # Near-ties within float32 rounding can resolve differently for another block size.
            K.P_BLOCK_SIZE: self.block_size,
        }
        if self.bootstrap is not None:
            params[K.P_CONFIDENCE] = self.confidence
            params[K.P_INTERVAL] = self.interval
        return params


class _ReadStats:
    """What the validating read of a modality makes (a
    :class:`~gapscope.engine.validation.SliceStats`): its raw norms, with ``sums`` its
    unit-row sums (in the slices :func:`raw_norms` and :func:`unit_sums` read: the same
    bits), with ``moments`` the mean and scatter of its raw rows (MIR's covariance) and with
    ``medians`` the counts of their float16 patterns (MIR's coordinate-wise medians, with no
    read of their own); shared among processes like the slices themselves."""

    def __init__(
        self,
        n: int,
        d: int,
        slice_rows: int,
        *,
        sums: bool,
        moments: bool = False,
        medians: bool = False,
    ) -> None:
        self.d = d
        self.norms = RawNormsScan(n)
        self.unit = UnitSumsScan(d) if sums else None
        self.moments = RawMomentsScan(d) if moments else None
        self.medians = PatternCounts(n, d) if medians else None
        self.slice_rows = slice_rows
        self.split = RawNormsScan.size(slice_rows)
        self.split_moments = self.split + (0 if self.unit is None else self.unit.size)
        self.size = self.split_moments + (0 if self.moments is None else self.moments.size)

    def lane_bytes(self, rows: int) -> int:
        """The scratch a thread holds for slices of ``rows`` rows: the unit rows' and the
        scaled rows' float64 buffers (each scan's own, a thread's own), and the chunk of
        transposed rows the medians' counts are made from; ``make`` may be called from several
        threads at once (the counts are shared: integers, added under a lock)."""
        buffers = (self.unit is not None) + (self.moments is not None)
        counting = 0 if self.medians is None else self.medians.lane_bytes()
        return buffers * rows * self.d * 8 + 8 * self.size + counting

    def make(self, start: int, raw: np.ndarray, wide: np.ndarray) -> np.ndarray:
        parts = [self.norms.make(raw, wide, self.slice_rows)]
        if self.unit is not None:
            parts.append(self.unit.make(wide))
        if self.moments is not None:
            top = float(RawNormsScan.slice_norms(parts[0], raw.shape[0]).max())
            parts.append(self.moments.make(wide, top))
        if self.medians is not None:
            self.medians.add(raw)
        return np.concatenate(parts)

    def fold(self, start: int, stop: int, stats: np.ndarray) -> None:
        self.norms.fold(start, stop, stats[: self.split])
        if self.unit is not None:
            self.unit.fold(stop - start, stats[self.split : self.split_moments])
        if self.moments is not None:
            self.moments.fold(stop - start, stats[self.split_moments :])


class AnalysisContext:
    """The validated embeddings of one analysis and everything computed from them once.

    Args:
        data: the embeddings (two or more modalities of one dimension).
        options: the checked parameters.
        progress: called with a short description before each costly step.

    Raises:
        GapscopeError: fewer than two modalities, dims that differ, bad rows (the message
            names the modality and the row).
    """

    def __init__(
        self, data: EmbeddingSet, options: AnalysisOptions, progress: Progress | None = None
    ) -> None:
        self.data = data
        self.options = options
        self.say: Progress = progress or (lambda _msg: None)
        if len(data.modalities) < 2:
            raise GapscopeError(
                f"{data.source}: has "
                + (f"only {', '.join(data.modalities)}" if data.modalities else "no")
                + " embeddings; "
                "need at least two modalities to compare"
            )
        K.check_direction_spellings(data.modalities)
        self.say("checking embeddings")
        self._norms: dict[str, RawNorms] = {}
        self._sums: dict[str, UnitSums] = {}
        self._moments: dict[str, RawMoments] = {}
        selected = families_for(options.metrics)
        sums = any(f.reads_unit_sums for f in selected)
        moments = any(f.reads_raw_moments for f in selected)
        self.raw: dict[str, Embeddings] = {
            m: self._check(m, sums=sums, moments=moments) for m in data.modalities
        }
        dims = {m: a.shape[1] for m, a in self.raw.items()}
        if len(set(dims.values())) > 1:
            listed = ", ".join(f"{m} {d}" for m, d in dims.items())
            raise EmbeddingError(
                f"embedding dims differ ({listed}): modalities must share one embedding space"
            )
        self.modalities: list[str] = list(data.modalities)
        self.pairs: list[tuple[str, str]] = list(combinations(self.modalities, 2))
        self.tuples: list[tuple[str, ...]] = [
            combo
            for size in range(3, len(self.modalities) + 1)
            for combo in combinations(self.modalities, size)
        ]
        self.notes: list[str] = list(dict.fromkeys(data.notes))  # the input's own remarks first
        self._unit: dict[str, UnitRows] = {}
        self._scatter: dict[str, np.ndarray] = {}
        self._uniformity: dict[str, ModalityPassResult] = {}
        self._intra: dict[str, RetrievalResult | None] = {}
        self._cross: dict[tuple[str, str], tuple[RetrievalResult, RetrievalResult]] = {}
        # Cross-modal directions (queries, keys) counted in the keys' modality pass.
        self._cross_half: dict[tuple[str, str], RetrievalResult] = {}
        self._cross_kernel: dict[tuple[str, str], CrossKernel] = {}
        self._cosines: dict[tuple[str, str], PairCosine] = {}
        self._positive: dict[tuple[str, str], bool] = {}
        self._queries: dict[str, np.ndarray | None] = {
            m: sample_rows(self.raw[m].shape[0], options.sample, options.seed, Stream.QUERIES, m)
            for m in self.modalities
        }
        # The similarity products read float32 unit rows. One copy of them is kept in memory
        # unless a sampled modality's rows would not fit the budget together; then each pass
        # normalises its blocks of keys again from the (memory-mapped) rows.
        self._fits = fits_in_memory(sum(a.shape[0] for a in self.raw.values()), self.dim)
        self.extras: dict[str, Any] = {}

    def _check(self, m: str, *, sums: bool, moments: bool) -> Embeddings:
        """Validate the rows of ``m``; the same read makes their raw norms (the report's
        mean raw norm, MIR), with ``sums`` their unit-row sums, in the slices
        :func:`raw_norms` and :func:`unit_sums` read (the same bits), and with ``moments``
        the mean and scatter of the raw rows (MIR's covariance) and, for float16 rows whose
        first norms vary (:func:`~gapscope.metrics.mir.norms_may_vary`: rows that may have
        outliers to replace), their coordinate-wise medians, from the counts of their
        patterns (:class:`~gapscope.engine.column_medians.PatternCounts`, where the medians
        would take one read of their own)."""
        rows = self.data.embeddings[m]
        shape: tuple[int, ...] = tuple(getattr(rows, "shape", ()))
        if isinstance(rows, Embeddings) or len(shape) != 2 or shape[1] < 1:
            return check_embeddings(rows, m, min_rows=2)
        n, d = int(shape[0]), int(shape[1])
        slice_rows = resolve_scan_rows(None, d)
        medians = (
            moments
            and isinstance(rows, np.ndarray)
            and PatternCounts.applies(n, d, rows.dtype)
            and norms_may_vary(np.asarray(rows[:_HEAD_ROWS]))
        )
        # Each slice's statistics hold up to min(slice_rows, n) norms: a slice of a narrow
        # modality can be millions of rows long.
        stats = _ReadStats(n, d, min(slice_rows, n), sums=sums, moments=moments, medians=medians)
        checked = check_embeddings(rows, m, min_rows=2, slice_rows=slice_rows, stats=stats)
        if stats.norms.complete:
            self._norms[m] = stats.norms.result()
            if stats.unit is not None:
                self._sums[m] = stats.unit.result()
            if stats.moments is not None:
                made = stats.moments.result()
                if stats.medians is not None:
                    made = made._replace(medians=stats.medians.medians())
                self._moments[m] = made
        return checked

    # ------------------------------------------------------------------ inputs

    @property
    def dim(self) -> int:
        return next(iter(self.raw.values())).shape[1]

    @property
    def sampled(self) -> bool:
        """Whether any modality's queries are a sample (``--sample`` below its rows)."""
        return any(q is not None for q in self._queries.values())

    def groups(self, m: str) -> np.ndarray:
        return self.data.groups[m]

    def relevance(self, m: str) -> tuple[np.ndarray, str]:
        """Intra-modal ground truth of ``m``: its labels, else its groups, and which."""
        if m in self.data.labels:
            return self.data.labels[m], "labels"
        return self.data.groups[m], "groups"

    def queries(self, m: str) -> np.ndarray | None:
        """The sampled query rows of ``m`` (``--sample``), or ``None`` for every row."""
        return self._queries[m]

    def note(self, text: str) -> None:
        """Add a plain-words remark to the report (once)."""
        if text not in self.notes:
            self.notes.append(text)

    def has_positive_pairs(self, a: str, b: str) -> bool:
        """Whether some group code occurs in both modalities (asked by every family of the
        pair: kept, since at a million rows a modality the test sorts for seconds)."""
        if (a, b) not in self._positive:
            self._positive[(a, b)] = shares_a_code(self.groups(a), self.groups(b))
        return self._positive[(a, b)]

    def input_section(self) -> dict[str, Any]:
        """The report's ``input`` section: what was analysed."""
        data = self.data
        return {
            K.SOURCE: data.source,
            K.FINGERPRINT: data.fingerprint(),
            K.MODEL: _model_section(data.model),
            K.MODALITIES_SECTION: {
                m: {
                    K.ROWS: int(self.raw[m].shape[0]),
                    K.DIM: int(self.raw[m].shape[1]),
                    K.DTYPE: self.raw[m].dtype.name,
                    K.RAW_NORM_MEAN: _mean_in_slices(self.raw_norms(m).norms),
                    K.NORMALIZED_BY_ENCODER: data.normalized.get(m),
                    K.HAS_LABELS: m in data.labels,
                }
                for m in self.modalities
            },
        }

    # ------------------------------------------------------------------ shared computations

    def unit(self, m: str) -> UnitRows:
        """The unit rows of ``m`` that the similarity products read (in the precision asked
        for): held in memory, or normalised block by block for a sampled modality whose rows
        would not fit."""
        if m not in self._unit:
            opts = self.options
            self._unit[m] = UnitRows(
                self.raw[m],
                device=opts.device,
                name=m,
                dtype=PRECISIONS[opts.precision],
                in_memory=self._fits or self._queries[m] is None,
            )
        return self._unit[m]

    def paired_cosine(self, a: str, b: str) -> PairCosine:
        """The paired and unpaired cosines of the pair ``a``-``b`` (one read of both)."""
        if (a, b) not in self._cosines:
            self._cosines[(a, b)] = paired_cosine(
                self.raw[a], self.raw[b], self.groups(a), self.groups(b)
            )
        return self._cosines[(a, b)]

    def held_paired_cosine(self, a: str, b: str) -> PairCosine | None:
        """The cosines of ``a``-``b`` when the cosine family has made them (none made here)."""
        return self._cosines.get((a, b))

    def held_unit(self, m: str) -> UnitRows | None:
        """``m``'s unit rows when a pass has made them already (none are made here)."""
        return self._unit.get(m)

    def raw_norms(self, m: str) -> RawNorms:
        """Every raw row's norm of ``m`` and the narrowest format holding its values: read
        once for the report's mean raw norm and for MIR."""
        if m not in self._norms:
            self.say(f"{m}: raw row norms")
            self._norms[m] = raw_norms(self.raw[m])
        return self._norms[m]

    def raw_moments(self, m: str) -> RawMoments | None:
        """The mean and scatter of ``m``'s raw rows when the validating read made them (MIR
        then reads no row for its covariance); ``None`` otherwise (MIR reads them)."""
        return self._moments.get(m)

    def unit_sums(self, m: str) -> UnitSums:
        """The float64 sum (and mean) of ``m``'s unit rows."""
        if m not in self._sums:
            self.say(f"{m}: unit-row sums")
            self._sums[m] = unit_sums(self.raw[m])
        return self._sums[m]

    def scatter(self, m: str) -> np.ndarray:
        """The float64 scatter of ``m``'s unit rows about their mean (``d x d``)."""
        if m not in self._scatter:
            self.say(f"{m}: scatter of the unit rows")
            _, self._scatter[m] = unit_scatter(self.raw[m], mean=self.unit_sums(m).mean)
        return self._scatter[m]

    def modality_pass(
        self, m: str, *, uniformity: bool = True, retrieval: bool = True
    ) -> ModalityPassResult:
        """The ``X X^T`` pass of ``m``: uniformity and intra-modal retrieval, on the sampled
        queries when ``--sample`` applies. Each part is computed once, when first asked for;
        the blocks do not depend on which parts a pass computes, so a part computed later
        equals the same part computed together with the other. Where the pass reads its keys
        a chunk at a time, the cross-modal directions that rank other modalities' sampled
        queries against ``m`` are counted from the same chunks (:meth:`_riders`), and
        :meth:`cross_pass` takes them from there."""
        need_u = uniformity and m not in self._uniformity
        need_r = retrieval and m not in self._intra
        if need_u or need_r:
            opts = self.options
            riders = self._riders(m)
            parts = [(f"{m} uniformity", need_u), (f"{m}->{m} retrieval", need_r)]
            parts += [(f"{o}->{m} retrieval", True) for o in riders]
            what = " and ".join(w for w, on in parts if on)
            self.say(f"{m}: similarity blocks ({what})")
            codes, _ = self.relevance(m)
            r = modality_pass(
                self.unit(m),
                codes if need_r else None,
                k=opts.k,
                t=opts.uniformity_t,
                uniformity=need_u,
                block_size=opts.block_size,
                device=opts.device,
                query_index=self._queries[m],
                cross=[self._cross_queries(o, m) for o in riders],
            )
            if need_u:
                self._uniformity[m] = r
            if need_r:
                self._intra[m] = r.retrieval
            for o, result in zip(riders, r.cross, strict=True):
                self._cross_half[(o, m)] = result
        u = self._uniformity.get(m)
        return ModalityPassResult(
            uniformity=None if u is None else u.uniformity,
            uniformity_se=None if u is None else u.uniformity_se,
            uniformity_rows=None if u is None else u.uniformity_rows,
            uniformity_row_terms=None if u is None else u.uniformity_row_terms,
            retrieval=self._intra.get(m),
        )

    def has_modality_pass(self, m: str, *, uniformity: bool = True, retrieval: bool = True) -> bool:
        """Whether the parts asked for are computed already."""
        return (not uniformity or m in self._uniformity) and (not retrieval or m in self._intra)

    def _riders(self, m: str) -> list[str]:
        """The modalities whose sampled queries' cross-modal ranks against ``m`` its pass
        counts too: when retrieval is asked for and ``m``'s pass reads its keys a chunk at a
        time (sampled queries, keys normalised on the fly), each pair's direction into ``m``
        whose queries are sampled as well (both sides sampled: :func:`cross_pair_pass` then
        ranks each direction apart, with a read of its keys of its own) and not computed yet.
        The first ranks are exact, so the same numbers either way."""
        if (
            RETRIEVAL.selector not in self.options.metrics
            or self._queries[m] is None
            or self.unit(m).in_memory
        ):
            return []
        riders = []
        for a, b in self.pairs:
            if m not in (a, b) or (a, b) in self._cross:
                continue
            o = b if m == a else a
            if self._queries[o] is not None and (o, m) not in self._cross_half:
                riders.append(o)
        return riders

    def cross_pass(self, a: str, b: str) -> tuple[RetrievalResult, RetrievalResult]:
        """The ``A B^T`` pass of a pair: ``a->b`` and ``b->a`` retrieval (and the cross
        kernel with them when ``mmd`` is asked for), or the two directions counted in the
        modality passes of ``b`` and ``a`` (:meth:`modality_pass`)."""
        if (a, b) not in self._cross and self._counted_halves(a, b):
            self._cross[(a, b)] = (self._cross_half[(a, b)], self._cross_half[(b, a)])
        if (a, b) not in self._cross:
            self._run_cross(a, b, retrieval=True, kernel=MMD.selector in self.options.metrics)
        return self._cross[(a, b)]

    def _cross_queries(self, q: str, keys: str) -> CrossQueries:
        """The sampled queries of ``q`` against the rows of ``keys``, as
        :func:`cross_pair_pass` ranks them (the pair's groups, every key)."""
        sample = self._queries[q]
        assert sample is not None  # riders are sampled
        return CrossQueries(self.unit(q), self.groups(q), self.groups(keys), sample)

    def _counted_halves(self, a: str, b: str) -> bool:
        """Whether both directions of ``(a, b)`` were counted in modality passes (which run
        first: the report's families ask for them before the pair's retrieval)."""
        return (a, b) in self._cross_half and (b, a) in self._cross_half

    def cross_kernel(self, a: str, b: str) -> CrossKernel:
        """The uniformity kernel over every cross pair of ``a`` and ``b``, from the ``A B^T``
        pass (with retrieval when that is asked for too: one product for both, unless the
        modality passes count the directions)."""
        if (a, b) not in self._cross_kernel:
            retrieval = (
                (a, b) not in self._cross
                and RETRIEVAL.selector in self.options.metrics
                and not self._counted_halves(a, b)
            )
            self._run_cross(a, b, retrieval=retrieval, kernel=True)
        return self._cross_kernel[(a, b)]

    def _run_cross(self, a: str, b: str, *, retrieval: bool, kernel: bool) -> None:
        opts = self.options
        what = [w for w, on in (("retrieval", retrieval), ("cross kernel", kernel)) if on]
        self.say(f"{a}->{b}, {b}->{a}: {' and '.join(what)}")
        r = cross_pair_pass(
            self.unit(a),
            self.unit(b),
            self.groups(a),
            self.groups(b),
            k=opts.k,
            block_size=opts.block_size,
            device=opts.device,
            query_index_x=self._queries[a],
            query_index_y=self._queries[b],
            directions=CROSS_DIRECTIONS if retrieval else (),
            kernel_t=opts.uniformity_t if kernel else None,
        )
        if retrieval:
            assert r.x_to_y is not None and r.y_to_x is not None
            self._cross[(a, b)] = (r.x_to_y, r.y_to_x)
        if r.kernel is not None:
            self._cross_kernel[(a, b)] = r.kernel

    def has_cross_pass(self, a: str, b: str) -> bool:
        """Whether :meth:`cross_pass` has its directions already (made, or counted in the
        modality passes)."""
        return (a, b) in self._cross or self._counted_halves(a, b)


def _model_section(encoder: dict[str, Any] | None) -> dict[str, Any] | None:
    """The store's encoder description, with whether its weights were random (never silent:
    every view of the report says so)."""
    if encoder is None:
        return None
    return {**encoder, K.RANDOM_WEIGHTS: random_init_seed(encoder) is not None}


def _mean_in_slices(values: np.ndarray, chunk: int = 65536) -> float:
    """The mean of ``values``, summed a slice of ``chunk`` at a time (the report's mean raw
    norm has always been summed this way, so its bits do not change)."""
    total = 0.0
    for start in range(0, values.shape[0], chunk):
        total += float(values[start : start + chunk].sum())
    return total / values.shape[0]
