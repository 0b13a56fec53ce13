"""The registry of metric families: what each computes, which keys it writes, how it reads.

A :class:`Family` is one metric (or a few that come from one computation) as the report
carries it: its name, the ``--metrics`` selector that turns it on, the keys it writes (from
:mod:`gapscope.analysis.keys`, with their directions), how it is computed per modality, per
pair and per tuple from the :class:`~gapscope.analysis.context.AnalysisContext`, which of its
values get a bootstrap interval, and the rows it contributes to the summary tables of the
terminal and HTML views. :data:`FAMILIES` lists them in report order; the orchestrator, the
bootstrap, the views and the common tests all iterate it, so adding a metric is a metric
function in :mod:`gapscope.metrics`, its keys, and one entry here.

The compute functions import their metrics when they run, so the registry itself (what the
views read) loads no heavy dependency.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gapscope.analysis import keys as K
from gapscope.analysis.readings import (
    read_alignment,
    read_cone,
    read_cosines,
    read_cross_uniformity,
    read_gap,
    read_intra_vs_cross,
    read_mmd,
    read_separability,
    read_uniformity,
)
from gapscope.engine.ranking import RetrievalResult
from gapscope.errors import EmbeddingError, MissingDependencyError

if TYPE_CHECKING:
    from gapscope.analysis.bootstrap import IntervalPlan, Statistic
    from gapscope.analysis.context import AnalysisContext
    from gapscope.metrics.mir import MIRResult

__all__ = [
    "FAMILIES",
    "Family",
    "Row",
    "RowScope",
    "families_for",
    "recall_entry",
    "similarity_of",
]

#: ``(section, name, key, ...)``: where a value sits in the report.
Path = tuple[str, ...]
ModalityCompute = Callable[["AnalysisContext", str], dict[str, Any]]
PairCompute = Callable[["AnalysisContext", str, str], dict[str, Any]]
TupleCompute = Callable[["AnalysisContext", tuple[str, ...]], dict[str, Any]]
Intervals = Callable[["IntervalPlan", "AnalysisContext"], dict[Path, "Statistic"]]

# Caps of the sampled diagnostics: pairs for CKA, negative pairs for the similarity
# statistics, tuples for the GRAM volume; rows a modality for separability.
MAX_CKA_PAIRS = 50_000
MAX_NEGATIVES = 200_000
MAX_TUPLES = 100_000
SEPARABILITY_FOLDS = 5
#: The K of the top-K variance and gap shares.
TOP = (1, 10)
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclass(frozen=True)
class RowScope:
    """What a summary-table row sees: the entry it reads (a pair's, or one modality's for a
    per-modality row), the pair's entry and its modalities' entries, the report's params."""

    entry: Mapping[str, Any]
    pair: Mapping[str, Any]
    modalities: Mapping[str, Mapping[str, Any]]
    params: Mapping[str, Any]
    modality: str | None = None


@dataclass(frozen=True)
class Row:
    """One line a family adds to a pair's summary table (terminal and HTML).

    Attributes:
        label: the words in the first column; ``{m}`` becomes the modality.
        path: the keys of the number shown, inside the entry (its ``_se`` and ``_ci`` are
            shown with it); empty for a row of words only.
        reading: plain words about the value (a function of the scope, or fixed text).
        text: the value as text instead of the number at ``path`` (e.g. two percentages).
        per_modality: one row for each modality of the pair, reading its own entry.
        plain: show the number without its standard error or interval.
    """

    label: str
    path: tuple[str, ...] = ()
    reading: Callable[[RowScope], str | None] | str | None = None
    text: Callable[[RowScope], str] | None = None
    per_modality: bool = False
    plain: bool = False


@dataclass(frozen=True)
class Family:
    """One metric family of the report (see the module docstring).

    Attributes:
        name: the family's name.
        selector: the ``--metrics`` name that turns it on.
        keys: the keys it writes.
        modality, pair, tuple: how it computes the entry of one modality, pair or tuple.
        intervals: the bootstrap statistics of its values, by report path.
        rows: its lines in the summary tables.
        needs_positives: skipped (with a note) for a pair without positive pairs.
        scale_free: unchanged when each raw row is multiplied by its own positive factor
            (every metric on unit rows; not MIR, which reads the raw norms).
        order_free: unchanged when the rows come in another order (not separability, whose
            row sample and cross-validation folds are drawn by position).
        table: a view of its own besides the rows (``"retrieval"``, ``"whatif"``).
        reads_unit_sums: reads each modality's unit-row sums (``ctx.unit_sums``, or its
            scatter, which starts from their mean): the analysis then makes them in the
            read that validates the rows.
        reads_raw_moments: reads each modality's raw mean and scatter (``ctx.raw_moments``):
            the analysis then makes them in the read that validates the rows too.
    """

    name: str
    selector: str
    keys: tuple[K.Key, ...]
    modality: ModalityCompute | None = None
    pair: PairCompute | None = None
    tuple: TupleCompute | None = None
    intervals: Intervals | None = None
    # builtins.tuple: the field above is named ``tuple``.
    rows: builtins.tuple[Row, ...] = ()
    needs_positives: bool = False
    scale_free: bool = True
    order_free: bool = True
    table: str | None = None
    reads_unit_sums: bool = False
    reads_raw_moments: bool = False
    description: str = field(default="", compare=False)


# --------------------------------------------------------------------------- gap


def _gap(ctx: AnalysisContext, a: str, b: str) -> dict[str, Any]:
    from gapscope.metrics.gap import gap_from_means

    g = gap_from_means(ctx.unit_sums(a).mean, ctx.unit_sums(b).mean)
    return {
        K.GAP.name: g.gap,
        K.CENTROID_COSINE.name: g.centroid_cosine,
        K.CENTROID_NORMS.name: {a: g.centroid_norm_x, b: g.centroid_norm_y},
        K.GAP_CONCENTRATION.name: {K.TOP1.name: g.top1_share, K.TOP10.name: g.top10_share},
    }


def _gap_intervals(plan: IntervalPlan, ctx: AnalysisContext) -> dict[Path, Statistic]:
    out: dict[Path, Statistic] = {}
    for a, b in ctx.pairs:
        gap, cosine = plan.gap(a, b)
        out[("pairs", f"{a}-{b}", K.GAP.name)] = gap
        out[("pairs", f"{a}-{b}", K.CENTROID_COSINE.name)] = cosine
    return out


def _gap_shares(scope: RowScope) -> str:
    conc = scope.entry[K.GAP_CONCENTRATION.name]
    return f"{100 * conc[K.TOP1.name]:.0f}%/{100 * conc[K.TOP10.name]:.0f}%"


GAP = Family(
    "gap",
    "gap",
    (K.GAP, K.CENTROID_COSINE, K.CENTROID_NORMS, K.GAP_CONCENTRATION, K.TOP1, K.TOP10),
    pair=_gap,
    intervals=_gap_intervals,
    rows=(
        Row("modality gap", (K.GAP.name,), lambda s: read_gap(s.entry[K.GAP.name])),
        Row(
            "centroid cosine",
            (K.CENTROID_COSINE.name,),
            "cosine between the two modalities' mean directions",
        ),
        Row(
            "gap in top 1/10 dims",
            reading="share of the gap carried by its largest coordinates",
            text=_gap_shares,
        ),
    ),
    reads_unit_sums=True,
    description="Liang et al. 2022: the distance between the modalities' centroids",
)

# --------------------------------------------------------------------------- cosines


def _cosine(ctx: AnalysisContext, a: str, b: str) -> dict[str, Any]:
    c = ctx.paired_cosine(a, b)
    return {
        K.PAIRED_COSINE.name: c.paired,
        K.UNPAIRED_COSINE.name: c.unpaired,
        K.N_PAIRS.name: c.n_pairs,
    }


def _with_positives(ctx: AnalysisContext) -> list[tuple[str, str]]:
    """The pairs that have positive pairs (the others get no pair-based metrics)."""
    return [(a, b) for a, b in ctx.pairs if ctx.has_positive_pairs(a, b)]


def _cosine_intervals(plan: IntervalPlan, ctx: AnalysisContext) -> dict[Path, Statistic]:
    out: dict[Path, Statistic] = {}
    for a, b in _with_positives(ctx):
        paired, unpaired = plan.cosines(a, b)
        out[("pairs", f"{a}-{b}", K.PAIRED_COSINE.name)] = paired
        out[("pairs", f"{a}-{b}", K.UNPAIRED_COSINE.name)] = unpaired
    return out


COSINE = Family(
    "cosine",
    "cosine",
    (K.PAIRED_COSINE, K.UNPAIRED_COSINE, K.N_PAIRS),
    pair=_cosine,
    intervals=_cosine_intervals,
    needs_positives=True,
    rows=(
        Row(
            "paired cosine",
            (K.PAIRED_COSINE.name,),
            lambda s: read_cosines(s.entry[K.PAIRED_COSINE.name], s.entry[K.UNPAIRED_COSINE.name]),
        ),
        Row(
            "unpaired cosine",
            (K.UNPAIRED_COSINE.name,),
            lambda s: f"mean over non-pairs ({s.entry[K.N_PAIRS.name]} true pairs)",
        ),
    ),
    description="mean cosine over positive pairs and over every other cross pair",
)

# --------------------------------------------------------------------------- alignment


def _alignment(ctx: AnalysisContext, a: str, b: str) -> dict[str, Any]:
    from gapscope.metrics.alignment import alignment, alignment_from_cosine_total

    # With alpha = 2 and the cosines already made (they come first in the report), alignment
    # is 2 - 2 times their mean: no read of the rows, unless the pairs are so close that the
    # difference would cancel digits.
    cosines = ctx.held_paired_cosine(a, b)
    if ctx.options.alignment_alpha == 2.0 and cosines is not None:
        value = alignment_from_cosine_total(cosines.paired_total, cosines.n_pairs)
        if value is not None:
            return {K.ALIGNMENT.name: value}
    value = alignment(
        ctx.raw[a], ctx.raw[b], ctx.groups(a), ctx.groups(b), alpha=ctx.options.alignment_alpha
    )
    return {K.ALIGNMENT.name: value}


def _alignment_intervals(plan: IntervalPlan, ctx: AnalysisContext) -> dict[Path, Statistic]:
    return {
        ("pairs", f"{a}-{b}", K.ALIGNMENT.name): plan.alignment(a, b)
        for a, b in _with_positives(ctx)
    }


ALIGNMENT = Family(
    "alignment",
    "alignment",
    (K.ALIGNMENT,),
    pair=_alignment,
    intervals=_alignment_intervals,
    needs_positives=True,
    rows=(
        Row("alignment", (K.ALIGNMENT.name,), lambda s: read_alignment(s.entry[K.ALIGNMENT.name])),
    ),
    description="Wang & Isola 2020: mean ||x_i - y_j||^alpha over positive pairs",
)

# --------------------------------------------------------------------------- cone


def _cone(ctx: AnalysisContext, m: str) -> dict[str, Any]:
    from gapscope.metrics.cone import cone_from_sums

    return {K.CONE.name: cone_from_sums(ctx.unit_sums(m))}


def _cone_intervals(plan: IntervalPlan, ctx: AnalysisContext) -> dict[Path, Statistic]:
    return {("modalities", m, K.CONE.name): plan.cone(m) for m in ctx.modalities}


CONE = Family(
    "cone",
    "cone",
    (K.CONE,),
    modality=_cone,
    intervals=_cone_intervals,
    rows=(
        Row(
            "cone ({m})",
            (K.CONE.name,),
            lambda s: read_cone(s.entry[K.CONE.name]),
            per_modality=True,
        ),
    ),
    reads_unit_sums=True,
    description="Liang et al. 2022: mean cosine between distinct rows of one modality",
)

# --------------------------------------------------------------------------- uniformity


def _uniformity(ctx: AnalysisContext, m: str) -> dict[str, Any]:
    result = ctx.modality_pass(m, retrieval=RETRIEVAL.selector in ctx.options.metrics)
    entry: dict[str, Any] = {K.UNIFORMITY.name: result.uniformity}
    if result.uniformity_se is not None:
        entry[K.se_key(K.UNIFORMITY)] = result.uniformity_se
    return entry


def _pair_uniformity(ctx: AnalysisContext, a: str, b: str) -> dict[str, Any]:
    sides = [ctx.modality_pass(m, retrieval=False) for m in (a, b)]
    value = (sides[0].uniformity + sides[1].uniformity) / 2  # type: ignore[operator]
    entry: dict[str, Any] = {K.UNIFORMITY.name: value}
    if any(s.uniformity_se is not None for s in sides):
        se = math.hypot(sides[0].uniformity_se or 0.0, sides[1].uniformity_se or 0.0) / 2
        entry[K.se_key(K.UNIFORMITY)] = se
    return entry


def _uniformity_intervals(plan: IntervalPlan, ctx: AnalysisContext) -> dict[Path, Statistic]:
    from gapscope.analysis.bootstrap import mean_of

    out: dict[Path, Statistic] = {}
    for m in ctx.modalities:
        result = ctx.modality_pass(m, retrieval=False)
        if result.uniformity_rows is None and result.uniformity_row_terms is not None:
            out[("modalities", m, K.UNIFORMITY.name)] = plan.uniformity(
                m, result.uniformity_row_terms
            )
    for a, b in ctx.pairs:
        sides = [out.get(("modalities", m, K.UNIFORMITY.name)) for m in (a, b)]
        if sides[0] is not None and sides[1] is not None:
            out[("pairs", f"{a}-{b}", K.UNIFORMITY.name)] = mean_of([sides[0], sides[1]])
    return out


UNIFORMITY = Family(
    "uniformity",
    "uniformity",
    (K.UNIFORMITY,),
    modality=_uniformity,
    pair=_pair_uniformity,
    intervals=_uniformity_intervals,
    rows=(
        Row(
            "uniformity ({m})",
            (K.UNIFORMITY.name,),
            lambda s: read_uniformity(s.entry[K.UNIFORMITY.name], s.params["uniformity_t"]),
            per_modality=True,
        ),
        Row("uniformity (mean)", (K.UNIFORMITY.name,), "mean of the two; lower is more uniform"),
    ),
    description="Wang & Isola 2020: log mean Gaussian potential of the rows of a modality",
)

# --------------------------------------------------------------------------- MIR


def _mir(ctx: AnalysisContext, a: str, b: str) -> dict[str, Any]:
    from gapscope.metrics.mir import modality_integration_rate, rounding_band

    # MIR scales by the text modality's norms ("text-centric"); with no text in the pair, by
    # the first modality's (image before audio, known names before others).
    y_name = "text" if "text" in (a, b) else a
    x_name = b if y_name == a else a
    r = modality_integration_rate(
        ctx.raw[x_name],
        ctx.raw[y_name],
        norms=(ctx.raw_norms(x_name), ctx.raw_norms(y_name)),
        moments=(ctx.raw_moments(x_name), ctx.raw_moments(y_name)),
        names=(x_name, y_name),
    )
    sides = (
        (x_name, r.outlier_step_skipped_x, r.norm_spread_x, r.rounding_x),
        (y_name, r.outlier_step_skipped_y, r.norm_spread_y, r.rounding_y),
    )
    skipped = {name: was_skipped for name, was_skipped, _, _ in sides}
    for name, was_skipped, spread, rounding in sides:
        if was_skipped:
            ctx.note(
                f"MIR: every {name} norm lies within {spread:.1e} of the median, inside "
                f"{rounding} rounding ({rounding_band(rounding):.1e}): the rows come "
                "normalised, so the outlier step was skipped for them"
            )
    _note_reference_outliers(ctx, r, f"{a}-{b}", y_name)
    if not r.full_rank:
        ctx.note(
            f"MIR ({a}-{b}): a covariance is singular (fewer rows than dimensions, or "
            "collapsed directions); FD uses an exact square root that stays finite"
        )
    return {
        K.MIR.name: r.mir,
        K.MIR_DETAIL.name: {
            K.FD.name: r.fd,
            K.SCALE.name: r.scale,
            K.SCALE_FROM.name: y_name,
            K.OUTLIERS.name: {x_name: r.outliers_x, y_name: r.outliers_y},
            K.OUTLIER_STEP_SKIPPED.name: skipped,
            K.FULL_RANK.name: r.full_rank,
        },
    }


# A reference outlier moves MIR by 2 log10 of the two scales' ratio; below this the note would
# be noise (0.01 is a 2.3% change of FD).
_SCALE_SHIFT_NOTED = 0.01


def _note_reference_outliers(ctx: AnalysisContext, r: MIRResult, pair: str, y_name: str) -> None:
    """Say when outlying rows of the reference modality set MIR's scale: the paper takes the
    scale from every row before it replaces outliers, so one huge row shrinks the scale and
    MIR with it (to its floor, -12, for a row of norm 1e150 among unit-scale rows)."""
    if not r.outliers_y or r.scale_without_outliers is None:
        return
    shift = 2.0 * math.log10(r.scale_without_outliers / r.scale)
    if not math.isfinite(shift) or abs(shift) < _SCALE_SHIFT_NOTED:
        return
    without = r.mir_without_reference_outliers()
    rows = "row" if r.outliers_y == 1 else "rows"
    effect = (
        f"with the scale from the other rows MIR would read {without:.4g}"
        if without is not None
        else "MIR reads its floor (-12) because of them"
    )
    ctx.note(
        f"MIR ({pair}): {r.outliers_y} {y_name} {rows} of outlying norm set its scale "
        f"(1 / mean {y_name} norm, taken before outliers are replaced, as in the paper's "
        f"code): {effect}; check those rows"
    )


def _mir_reading(scope: RowScope) -> str:
    fd = scope.entry[K.MIR_DETAIL.name][K.FD.name]
    return f"log10 of the Fréchet distance {fd:.4g}; lower integrates better"


MIR = Family(
    "mir",
    "mir",
    (
        K.MIR,
        K.MIR_DETAIL,
        K.FD,
        K.SCALE,
        K.SCALE_FROM,
        K.OUTLIERS,
        K.OUTLIER_STEP_SKIPPED,
        K.FULL_RANK,
    ),
    pair=_mir,
    rows=(Row("MIR", (K.MIR.name,), _mir_reading, plain=True),),
    scale_free=False,
    reads_raw_moments=True,
    description="Huang et al. 2024: log10 Frechet distance of the raw rows, text-centric",
)

# --------------------------------------------------------------------------- MMD


def _mmd(ctx: AnalysisContext, a: str, b: str) -> dict[str, Any]:
    from gapscope.metrics.kernel_distance import mmd2_from_uniformities

    own = [ctx.modality_pass(m, retrieval=False) for m in (a, b)]
    cross = ctx.cross_kernel(a, b)
    assert own[0].uniformity is not None and own[1].uniformity is not None
    entry: dict[str, Any] = {K.CROSS_UNIFORMITY.name: cross.log_mean}
    if cross.se is not None:
        entry[K.se_key(K.CROSS_UNIFORMITY)] = cross.se
    entry[K.MMD2.name] = mmd2_from_uniformities(
        own[0].uniformity, own[1].uniformity, cross.log_mean
    )
    return entry


def _mmd_reading(scope: RowScope) -> str:
    return read_mmd(scope.entry[K.MMD2.name])


MMD = Family(
    "mmd",
    "mmd",
    (K.CROSS_UNIFORMITY, K.MMD2),
    pair=_mmd,
    rows=(
        Row(
            "cross-modal uniformity",
            (K.CROSS_UNIFORMITY.name,),
            lambda s: read_cross_uniformity(
                s.entry[K.CROSS_UNIFORMITY.name], s.params["uniformity_t"]
            ),
        ),
        Row("MMD²", (K.MMD2.name,), _mmd_reading, plain=True),
    ),
    description=(
        "Fahim et al. 2024 and Gretton et al. 2012: the uniformity kernel across the "
        "modalities, and the unbiased kernel MMD² between them"
    ),
)

# --------------------------------------------------------------------------- retrieval


def recall_entry(result: RetrievalResult, relevance: str | None = None) -> dict[str, Any]:
    """The report entry of one retrieval direction; intra-modal ones (``relevance`` given)
    also carry mAP, R-precision and what relevance was."""
    entry: dict[str, Any] = {K.recall_key(k): v for k, v in result.recall.items()}
    entry[K.MEAN_RANK.name] = result.mean_rank
    entry[K.MEDIAN_RANK.name] = result.median_rank
    entry[K.N_QUERIES.name] = result.n_queries
    entry[K.N_SKIPPED.name] = result.n_skipped
    if relevance is not None:
        entry[K.MAP.name] = result.mean_average_precision
        entry[K.R_PRECISION.name] = result.r_precision
        entry[K.RELEVANCE.name] = relevance
    for name, se in (result.se or {}).items():
        entry[K.se_key(name)] = se
    return entry


def _intra(ctx: AnalysisContext, m: str) -> dict[str, Any]:
    result = ctx.modality_pass(m, uniformity=UNIFORMITY.selector in ctx.options.metrics).retrieval
    assert result is not None
    _, relevance = ctx.relevance(m)
    if result.n_queries == 0:
        # With --sample only the sampled rows were asked: other rows may share a code.
        who = f"no {m} row" if ctx.queries(m) is None else f"no sampled {m} query"
        if relevance == K.LABELS:
            # Labels were given: asking for them would be wrong; each class is a single row.
            ctx.note(
                f"{m}->{m} retrieval: {who} shares its label with another {m} row, so there "
                "is nothing to retrieve (a class needs two rows or more)"
            )
        else:
            ctx.note(
                f"{m}->{m} retrieval: {who} shares its group with another {m} row and no "
                "labels were given: give labels to measure it"
            )
    elif result.n_skipped:
        ctx.note(
            f"{m}->{m} retrieval: {result.n_skipped} queries with no relevant row were left out"
        )
    return {K.RECALL.name: {K.direction_key(m, m): recall_entry(result, relevance)}}


def _cross(ctx: AnalysisContext, a: str, b: str) -> dict[str, Any]:
    recall = {}
    for (q, key), result in zip(((a, b), (b, a)), ctx.cross_pass(a, b), strict=True):
        recall[K.direction_key(q, key)] = recall_entry(result)
        if result.n_skipped:
            ctx.note(
                f"{q}->{key} retrieval: {result.n_skipped} {q} rows have no {key} "
                "partner and were left out"
            )
    return {K.RECALL.name: recall}


def _recall_intervals(plan: IntervalPlan, ctx: AnalysisContext) -> dict[Path, Statistic]:
    out: dict[Path, Statistic] = {}
    for m in ctx.modalities:
        result = ctx.modality_pass(m, uniformity=False).retrieval
        assert result is not None
        for name, stat in plan.recall(m, result).items():
            out[("modalities", m, K.RECALL.name, K.direction_key(m, m), name)] = stat
    for a, b in ctx.pairs:
        for (q, key), result in zip(((a, b), (b, a)), ctx.cross_pass(a, b), strict=True):
            for name, stat in plan.recall(q, result).items():
                out[("pairs", f"{a}-{b}", K.RECALL.name, K.direction_key(q, key), name)] = stat
    return out


def _intra_vs_cross(scope: RowScope) -> str | None:
    k = K.recall_key(scope.params["k"][0])
    cross = [e.get(k) for e in scope.pair.get(K.RECALL.name, {}).values()]
    intra = [
        e.get(k)
        for entry in scope.modalities.values()
        for e in entry.get(K.RECALL.name, {}).values()
    ]
    by_labels = any(
        e.get(K.RELEVANCE.name) == K.LABELS
        for entry in scope.modalities.values()
        for e in entry.get(K.RECALL.name, {}).values()
    )
    best_cross = max((v for v in cross if v is not None), default=None)
    best_intra = max((v for v in intra if v is not None), default=None)
    return read_intra_vs_cross(best_intra, best_cross, scope.params["k"][0], by_labels=by_labels)


RETRIEVAL = Family(
    "retrieval",
    "retrieval",
    (
        K.RECALL,
        K.RECALL_AT,
        K.MEAN_RANK,
        K.MEDIAN_RANK,
        K.MAP,
        K.R_PRECISION,
        K.N_QUERIES,
        K.N_SKIPPED,
        K.RELEVANCE,
    ),
    modality=_intra,
    pair=_cross,
    intervals=_recall_intervals,
    rows=(Row("intra vs cross", reading=_intra_vs_cross),),
    table="retrieval",
    description="recall@K across modalities (true pairs) and within one (labels or groups)",
)

# --------------------------------------------------------------------------- diagnostics


def _effective_rank(ctx: AnalysisContext, m: str) -> dict[str, Any]:
    from gapscope.metrics.effective_rank import collapse_from_scatter

    c = collapse_from_scatter(ctx.scatter(m), ctx.raw[m].shape[0], TOP)
    entry: dict[str, Any] = {
        K.EFFECTIVE_RANK.name: c.effective_rank,
        K.EFFECTIVE_RANK_RATIO.name: c.effective_rank / ctx.dim,
    }
    for key, t in ((K.VARIANCE_TOP1, 1), (K.VARIANCE_TOP10, 10)):
        entry[key.name] = c.variance_share[t]
    return entry


def _effective_rank_text(scope: RowScope) -> str:
    return f"{scope.entry[K.EFFECTIVE_RANK.name]:.1f}"


def _effective_rank_reading(scope: RowScope) -> str:
    e = scope.entry
    return (
        f"{100 * e[K.EFFECTIVE_RANK_RATIO.name]:.0f}% of the dimensions in use; top "
        f"component holds {100 * e[K.VARIANCE_TOP1.name]:.0f}% of variance"
    )


EFFECTIVE_RANK = Family(
    "effective_rank",
    "diagnostics",
    (K.EFFECTIVE_RANK, K.EFFECTIVE_RANK_RATIO, K.VARIANCE_TOP1, K.VARIANCE_TOP10),
    modality=_effective_rank,
    rows=(
        Row(
            "effective rank ({m})",
            (K.EFFECTIVE_RANK.name,),
            _effective_rank_reading,
            text=_effective_rank_text,
            per_modality=True,
        ),
    ),
    reads_unit_sums=True,
    description="Roy & Vetterli 2007: how many directions a modality uses (centred)",
)


def _separability(ctx: AnalysisContext, a: str, b: str) -> dict[str, Any]:
    from gapscope.analysis.context import DEFAULT_MAX_ROWS
    from gapscope.metrics.separability import modality_separability

    x, y = ctx.raw[a], ctx.raw[b]
    max_rows = (
        DEFAULT_MAX_ROWS
        if ctx.options.sample is None
        else max(2, min(ctx.options.sample, DEFAULT_MAX_ROWS))
    )
    # As many folds as the rows the probe uses allow (``--sample 3``: 3 rows, 3 folds).
    folds = min(SEPARABILITY_FOLDS, x.shape[0], y.shape[0], max_rows)
    if folds < 2:
        return {}
    try:
        sep = modality_separability(x, y, folds=folds, max_rows=max_rows, seed=ctx.options.seed)
    except MissingDependencyError as exc:
        ctx.note(f"{a}-{b} separability: not computed ({exc})")
        return {}
    if sep.n_per_modality < min(x.shape[0], y.shape[0]) or x.shape[0] != y.shape[0]:
        ctx.note(
            f"{a}-{b} separability: a logistic regression on {sep.n_per_modality} rows "
            f"of each modality (balanced, seeded), {sep.folds}-fold cross-validated"
        )
    return {
        K.SEPARABILITY.name: sep.accuracy,
        K.SEPARABILITY_SE.name: sep.accuracy_se,
        K.SEPARABILITY_ROWS.name: sep.n_per_modality,
    }


SEPARABILITY = Family(
    "separability",
    "diagnostics",
    (K.SEPARABILITY, K.SEPARABILITY_SE, K.SEPARABILITY_ROWS),
    pair=_separability,
    order_free=False,
    rows=(
        Row(
            "separability",
            (K.SEPARABILITY.name,),
            lambda s: read_separability(s.entry[K.SEPARABILITY.name]),
        ),
    ),
    description="how well a linear probe tells the two modalities apart",
)


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _cka(ctx: AnalysisContext, a: str, b: str) -> dict[str, Any]:
    from gapscope.metrics.cka import linear_cka

    try:
        ck = linear_cka(
            ctx.raw[a],
            ctx.raw[b],
            ctx.groups(a),
            ctx.groups(b),
            max_pairs=MAX_CKA_PAIRS,
            seed=ctx.options.seed,
        )
    except EmbeddingError as exc:
        ctx.note(f"{a}-{b} CKA: not computed ({exc})")
        return {K.CKA.name: None}
    if ck.n_used < ck.n_pairs:
        ctx.note(f"{a}-{b} CKA: from {ck.n_used} of {ck.n_pairs} positive pairs (seeded sample)")
    return {K.CKA.name: _finite(ck.cka)}


CKA = Family(
    "cka",
    "diagnostics",
    (K.CKA,),
    pair=_cka,
    rows=(
        Row(
            "linear CKA",
            (K.CKA.name,),
            "similarity of the two modalities' geometry over true pairs (1 = same)",
            plain=True,
        ),
    ),
    needs_positives=True,
    description="Kornblith et al. 2019: linear CKA of the paired rows",
)


def _quantile_key(template: str, level: float) -> str:
    """``0.05 -> "q05"``, ``0.5 -> "q50"``, ``0.975 -> "q97.5"``, inside ``template``."""
    pct = 100.0 * level
    q = f"q{int(round(pct)):02d}" if abs(pct - round(pct)) < 1e-9 else f"q{pct:g}"
    return template.format(q=q)


def similarity_of(ctx: AnalysisContext, a: str, b: str) -> Any:
    """The similarity statistics of a pair (a
    :class:`~gapscope.metrics.similarity_stats.SimilarityStats`), computed once: the report's
    values and the plots' histograms read the same ones."""
    from gapscope.metrics.similarity_stats import similarity_stats

    key = f"similarity:{a}-{b}"
    if key not in ctx.extras:
        ctx.extras[key] = similarity_stats(
            ctx.raw[a],
            ctx.raw[b],
            ctx.groups(a),
            ctx.groups(b),
            max_negatives=MAX_NEGATIVES,
            seed=ctx.options.seed,
            quantiles=QUANTILES,
        )
    return ctx.extras[key]


def _similarity(ctx: AnalysisContext, a: str, b: str) -> dict[str, Any]:
    try:
        st = similarity_of(ctx, a, b)
    except EmbeddingError as exc:
        ctx.note(f"{a}-{b} similarity: not computed ({exc})")
        return {}
    sim: dict[str, Any] = {K.POSITIVE_MEAN.name: st.positive_mean}
    sim.update({_quantile_key(K.POSITIVE_QUANTILE, q): v for q, v in st.positive_quantiles.items()})
    sim[K.NEGATIVE_MEAN.name] = st.negative_mean
    if st.negative_quantiles is not None:
        sim.update(
            {_quantile_key(K.NEGATIVE_QUANTILE, q): v for q, v in st.negative_quantiles.items()}
        )
    sim[K.OVERLAP.name] = st.overlap
    sim[K.NEGATIVES_ABOVE.name] = st.negatives_above_median_positive
    sim[K.AUC.name] = st.auc
    sim[K.N_POSITIVE.name] = st.n_positive
    sim[K.N_NEGATIVE.name] = st.n_negative
    sim[K.NEGATIVES_SAMPLED.name] = st.negatives_sampled
    if st.negatives_sampled:
        ctx.note(
            f"{a}-{b} similarity: negative-pair statistics from {st.n_negative} of "
            f"{st.n_negative_total} negative pairs (seeded uniform sample)"
        )
    return {K.SIMILARITY.name: sim}


def _auc_reading(scope: RowScope) -> str:
    overlap = scope.entry[K.SIMILARITY.name][K.OVERLAP.name]
    return f"chance a true pair outscores a non-pair; histogram overlap {overlap:.3f}"


SIMILARITY = Family(
    "similarity",
    "diagnostics",
    (
        K.SIMILARITY,
        K.POSITIVE_MEAN,
        K.NEGATIVE_MEAN,
        K.OVERLAP,
        K.NEGATIVES_ABOVE,
        K.AUC,
        K.N_POSITIVE,
        K.N_NEGATIVE,
        K.NEGATIVES_SAMPLED,
    ),
    pair=_similarity,
    rows=(Row("pair AUC", (K.SIMILARITY.name, K.AUC.name), _auc_reading, plain=True),),
    needs_positives=True,
    description="positive against negative cross-modal cosines: quantiles, overlap, AUC",
)


def _gap_direction(ctx: AnalysisContext, a: str, b: str) -> dict[str, Any]:
    from gapscope.metrics.gap_direction import direction_from_moments

    moments = [(ctx.unit_sums(m).mean, ctx.scatter(m), ctx.raw[m].shape[0]) for m in (a, b)]
    gd = direction_from_moments(moments[0], moments[1], TOP)
    direction: dict[str, Any] = {}
    for t in TOP:
        direction[K.PC_SHARE.format(k=t)] = gd.pc_share[t]
        direction[K.PC_CHANCE.format(k=t)] = gd.pc_share_chance[t]
    direction[K.AXIS_COSINE.format(m=a)] = _finite(gd.axis_cosine_x)
    direction[K.AXIS_COSINE.format(m=b)] = _finite(gd.axis_cosine_y)
    return {K.GAP_DIRECTION.name: direction}


def _pc_text(scope: RowScope) -> str:
    share = scope.entry[K.GAP_DIRECTION.name][K.PC_SHARE.format(k=10)]
    return f"{100 * share:.0f}%"


def _pc_reading(scope: RowScope) -> str:
    chance = scope.entry[K.GAP_DIRECTION.name][K.PC_CHANCE.format(k=10)]
    return f"share of the gap along the main content directions (chance {100 * chance:.0f}%)"


GAP_DIRECTION = Family(
    "gap_direction",
    "diagnostics",
    (K.GAP_DIRECTION,),
    pair=_gap_direction,
    rows=(
        Row(
            "gap in top 10 PCs",
            (K.GAP_DIRECTION.name, K.PC_SHARE.format(k=10)),
            _pc_reading,
            text=_pc_text,
        ),
    ),
    reads_unit_sums=True,
    description="where the gap vector points: along the content's principal axes or not",
)


def _gram_volume(ctx: AnalysisContext, combo: tuple[str, ...]) -> dict[str, Any]:
    from gapscope.metrics.gram_volume import gram_volume

    name = "-".join(combo)
    try:
        gv = gram_volume(
            [ctx.raw[m] for m in combo],
            [ctx.groups(m) for m in combo],
            max_tuples=MAX_TUPLES,
            seed=ctx.options.seed,
        )
    except EmbeddingError as exc:
        ctx.note(f"{name} GRAM volume: not computed ({exc})")
        return {}
    if gv.n_evaluated < gv.n_tuples:
        ctx.note(
            f"{name} GRAM volume: from {gv.n_evaluated} of {gv.n_tuples} tuples (seeded sample)"
        )
    return {
        K.GRAM_VOLUME_MEAN.name: gv.mean,
        K.GRAM_VOLUME_MEDIAN.name: gv.median,
        K.GRAM_VOLUME_STD.name: gv.std,
        K.GRAM_VOLUME_SE.name: gv.se,
        K.N_TUPLES.name: gv.n_tuples,
        K.N_EVALUATED.name: gv.n_evaluated,
    }


GRAM_VOLUME = Family(
    "gram_volume",
    "diagnostics",
    (
        K.GRAM_VOLUME_MEAN,
        K.GRAM_VOLUME_MEDIAN,
        K.GRAM_VOLUME_STD,
        K.GRAM_VOLUME_SE,
        K.N_TUPLES,
        K.N_EVALUATED,
    ),
    tuple=_gram_volume,
    description="Cicchetti et al. 2025: volume spanned by one item's modalities (3 or more)",
)

# --------------------------------------------------------------------------- zero-shot

#: The K of zero-shot top-K accuracy (CLIP_benchmark's acc1 and acc5).
ZEROSHOT_K = (1, 5)


def zeroshot_side(ctx: AnalysisContext, a: str, b: str) -> str | None:
    """The modality of the pair ``(a, b)`` that is classified against the class prompts: the
    other one than the prompts' own, when it has class labels; ``None`` otherwise."""
    classes = ctx.data.classes
    if classes is None or classes.modality not in (a, b):
        return None
    other = b if classes.modality == a else a
    return other if other in ctx.data.class_labels else None


def zeroshot_of(ctx: AnalysisContext, a: str, b: str) -> Any:
    """The zero-shot classification (a :class:`~gapscope.metrics.zeroshot.ZeroShotResult`)
    of the pair's classified modality, computed once: the report, its intervals and the
    what-ifs' "as is" read the same one; ``None`` when the pair has none.

    Raises:
        EmbeddingError: class prompts of another dimension than the embeddings.
    """
    from gapscope.engine.normalization import unit_rows
    from gapscope.metrics.zeroshot import class_ranks, summarize_ranks

    m = zeroshot_side(ctx, a, b)
    if m is None:
        return None
    key = f"zeroshot:{m}"
    if key not in ctx.extras:
        classes = ctx.data.classes
        assert classes is not None
        if classes.dim != ctx.dim:
            raise EmbeddingError(
                f"classes: dim {classes.dim} differs from the embeddings' {ctx.dim}: the class "
                "prompts must come from the same model"
            )
        ctx.say(f"{m}: zero-shot classification ({classes.n_classes} classes)")
        targets = ctx.data.class_labels[m]
        rank = class_ranks(ctx.raw[m], unit_rows(classes.embeddings), targets)
        ctx.extras[key] = summarize_ranks(rank, targets, classes.n_classes, ZEROSHOT_K)
    return ctx.extras[key]


def zeroshot_values(result: Any) -> dict[str, Any]:
    """The accuracies of a zero-shot result under their report keys."""
    return {
        K.TOP1_ACCURACY.name: result.accuracy[1],
        K.TOP5_ACCURACY.name: result.accuracy[5],
        K.BALANCED_ACCURACY.name: result.balanced_accuracy,
    }


def _zeroshot(ctx: AnalysisContext, a: str, b: str) -> dict[str, Any]:
    classes = ctx.data.classes
    if classes is None:
        return {}
    if classes.modality not in ctx.modalities:
        ctx.note(
            f"zero-shot: the class prompts stand for {classes.modality}, which this input "
            "does not have, so nothing was classified"
        )
        return {}
    if classes.modality not in (a, b):
        return {}
    other = b if classes.modality == a else a
    if ctx.data.classes_as_rows:
        ctx.note(
            f"{classes.modality}: the {classes.n_classes} class prompts stand in for the "
            f"{classes.modality} rows (the input has {other} only): each {other} row pairs "
            f"with its class's prompt, so {other}->{classes.modality} R@1 is the zero-shot "
            "top-1 accuracy"
        )
    result = zeroshot_of(ctx, a, b)
    if result is None:
        ctx.note(f"zero-shot: {other} has no labels, so its rows were not classified")
        return {}
    if result.n_classes < max(ZEROSHOT_K):
        ctx.note(
            f"zero-shot: {result.n_classes} classes, fewer than 5, so top-5 accuracy is "
            "not defined (null), as in CLIP_benchmark"
        )
    if result.n_classes_present < result.n_classes:
        ctx.note(
            f"zero-shot: {result.n_classes - result.n_classes_present} of {result.n_classes} "
            f"classes have no {other} rows; balanced accuracy averages over the "
            f"{result.n_classes_present} that have"
        )
    return {
        K.ZEROSHOT.name: {
            K.CLASSIFIED.name: other,
            **zeroshot_values(result),
            K.N_QUERIES.name: result.n_queries,
            K.N_CLASSES.name: result.n_classes,
            K.N_CLASSES_PRESENT.name: result.n_classes_present,
        }
    }


def _zeroshot_intervals(plan: IntervalPlan, ctx: AnalysisContext) -> dict[Path, Statistic]:
    out: dict[Path, Statistic] = {}
    for a, b in ctx.pairs:
        m = zeroshot_side(ctx, a, b)
        result = zeroshot_of(ctx, a, b)
        if m is None or result is None:
            continue
        stats = plan.zero_shot(m, result.targets, result.rank, result.n_classes)
        where = ("pairs", f"{a}-{b}", K.ZEROSHOT.name)
        out[(*where, K.TOP1_ACCURACY.name)] = stats[1]
        if result.accuracy[5] is not None:
            out[(*where, K.TOP5_ACCURACY.name)] = stats[5]
        out[(*where, K.BALANCED_ACCURACY.name)] = stats["balanced"]
    return out


def _zeroshot_reading(scope: RowScope) -> str:
    z = scope.entry[K.ZEROSHOT.name]
    return (
        f"{z[K.CLASSIFIED.name]} rows classified among {z[K.N_CLASSES.name]} class prompts "
        f"({z[K.N_QUERIES.name]} rows); higher is better"
    )


ZEROSHOT = Family(
    "zeroshot",
    "zeroshot",
    (
        K.ZEROSHOT,
        K.CLASSIFIED,
        K.TOP1_ACCURACY,
        K.TOP5_ACCURACY,
        K.BALANCED_ACCURACY,
        K.N_QUERIES,
        K.N_CLASSES,
        K.N_CLASSES_PRESENT,
    ),
    pair=_zeroshot,
    intervals=_zeroshot_intervals,
    rows=(
        Row(
            "zero-shot top-1",
            (K.ZEROSHOT.name, K.TOP1_ACCURACY.name),
            _zeroshot_reading,
        ),
        Row(
            "zero-shot top-5",
            (K.ZEROSHOT.name, K.TOP5_ACCURACY.name),
            "share of rows with their class among the 5 best-scoring",
        ),
        Row(
            "zero-shot balanced",
            (K.ZEROSHOT.name, K.BALANCED_ACCURACY.name),
            "mean over classes of the share of their rows classified right",
        ),
    ),
    description="Radford et al. 2021: labelled rows classified against the class prompts",
)

# --------------------------------------------------------------------------- what-ifs


def _whatif(ctx: AnalysisContext, a: str, b: str) -> dict[str, Any]:
    from gapscope.analysis.whatif import measure_scenarios

    try:
        scenarios = measure_scenarios(ctx, a, b)
    except EmbeddingError as exc:
        ctx.note(f"{a}-{b} what-ifs: not computed ({exc})")
        return {}
    out: dict[str, Any] = {}
    for s in scenarios:
        name = K.ORIGINAL if s.fraction is None and not s.centered else K.scenario_key(s.fraction)
        recall: dict[str, Any] = {}
        for q, key in ((a, b), (b, a), (a, a), (b, b)):
            result = s.recall[(q, key)]
            entry: dict[str, Any] = {K.recall_key(k): v for k, v in result.recall.items()}
            if q == key:
                entry[K.MAP.name] = result.mean_average_precision
            recall[K.direction_key(q, key)] = entry
        out[name] = {
            K.GAP.name: s.gap,
            K.WHATIF_GAP_BEFORE.name: s.gap_before_renormalization,
            K.RECALL.name: recall,
            K.UNIFORMITY.name: dict(s.uniformity),
        }
        if s.zeroshot is not None:
            out[name][K.ZEROSHOT.name] = zeroshot_values(s.zeroshot)
    ctx.extras[f"whatif:{a}-{b}"] = scenarios
    if any(m not in ctx.data.labels for m in (a, b)):
        ctx.note("what-ifs: intra-modal recall uses groups where a modality has no labels")
    return {K.WHATIF.name: out}


WHATIF = Family(
    "whatif",
    "whatif",
    (K.WHATIF, K.WHATIF_GAP_BEFORE),
    pair=_whatif,
    needs_positives=True,
    table="whatif",
    reads_unit_sums=True,
    description="retrieval, uniformity and zero-shot accuracy after closing the gap post hoc "
    "(centring, shifts both ways)",
)

#: Every family, in report order.
FAMILIES: tuple[Family, ...] = (
    GAP,
    COSINE,
    ALIGNMENT,
    CONE,
    UNIFORMITY,
    MIR,
    MMD,
    RETRIEVAL,
    EFFECTIVE_RANK,
    SEPARABILITY,
    CKA,
    SIMILARITY,
    GAP_DIRECTION,
    GRAM_VOLUME,
    ZEROSHOT,
    WHATIF,
)


def families_for(selectors: Sequence[str]) -> list[Family]:
    """The families the ``--metrics`` selectors turn on, in report order.

    >>> [f.name for f in families_for(["cone", "gap"])]
    ['gap', 'cone']
    """
    return [f for f in FAMILIES if f.selector in selectors]
