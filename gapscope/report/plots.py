"""PNG plots of an embedding space (matplotlib, the optional ``gapscope[plot]`` extra).

Each function draws one figure of a fixed size (:data:`FIGSIZE` inches at :data:`DPI`, so
every PNG is :data:`PIXELS` wide and high), returns a :class:`Plot` holding the PNG bytes and
the numbers it drew (so tests and callers can check the content), and writes the PNG
atomically when given a path. Figures are built with matplotlib's object API on the Agg canvas:
no pyplot, no global state, no display needed, and the same input gives the same bytes.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from gapscope.analysis import keys as K
from gapscope.data.atomic import atomic_write_bytes, check_writable_folder
from gapscope.engine.normalization import unit_rows
from gapscope.engine.sampling import Stream, sample_rows
from gapscope.errors import GapscopeError
from gapscope.extras import require

if TYPE_CHECKING:
    from gapscope.analysis.context import AnalysisContext
    from gapscope.report.model import Report

__all__ = [
    "DPI",
    "FIGSIZE",
    "PIXELS",
    "Plot",
    "PlotSet",
    "check_plot_folder",
    "plot_all",
    "plot_gap_dimensions",
    "plot_projection",
    "plot_recall_curves",
    "plot_similarity_histogram",
    "plot_whatif_sweep",
    "require_matplotlib",
    "umap_available",
]

FIGSIZE = (8.0, 5.0)
DPI = 100
#: (width, height) of every PNG in pixels.
PIXELS = (int(FIGSIZE[0] * DPI), int(FIGSIZE[1] * DPI))
COLORS = {"image": "#1f77b4", "text": "#d95f02", "audio": "#2ca02c"}
RECALL_KS = (1, 2, 5, 10, 20, 50, 100)


@dataclass
class Plot:
    """One rendered figure.

    Attributes:
        name: file stem, e.g. ``"similarity-image-text"``.
        title: the figure's title.
        png: the PNG bytes.
        data: the numbers drawn (arrays and floats), for checks and captions.
        path: where it was written, or ``None``.
    """

    name: str
    title: str
    png: bytes = field(repr=False)
    data: dict[str, Any] = field(repr=False)
    path: Path | None = None


@dataclass
class PlotSet:
    """The plots :func:`plot_all` drew, and why any expected plot was left out."""

    plots: list[Plot]
    skipped: list[str] = field(default_factory=list)


def require_matplotlib() -> Any:
    """Import matplotlib or raise a one-line error naming the ``plot`` extra."""
    return require("matplotlib", "plots")


def check_plot_folder(out: str | os.PathLike[str], flag: str = "--out") -> Path:
    """Refuse, before any work, a folder the plots could not be written to.

    The folder itself may be missing (it is created when the first plot is written); what
    must hold is that it is a folder, or would be created under one, that can be written to.
    Checking costs a few ``stat`` calls, whereas finding out at the first write comes after
    the whole analysis.

    Parameters
    ----------
    out : str or os.PathLike
        The folder the PNGs are to be written to.
    flag : str, default="--out"
        The option named in the error message.

    Returns
    -------
    path : Path
        ``out`` as a :class:`~pathlib.Path`.

    Raises
    ------
    GapscopeError
        ``out`` exists and is not a folder, is a link to nothing, lies under a file, or it
        (or, when missing, the nearest folder above it that exists) is not writable.
    """
    path = Path(out)
    if path.is_symlink() and not path.exists():
        raise GapscopeError(f"{flag} {path} is a link to a path that does not exist")
    if not path.exists():
        check_writable_folder(path, flag)  # made under the nearest folder that exists
    elif not path.is_dir():
        raise GapscopeError(f"{flag} {path} exists and is not a folder")
    # Writing a file in a folder needs both: W to add the entry, X to reach it.
    elif not os.access(path, os.W_OK | os.X_OK):
        raise GapscopeError(f"{flag} {path}: the folder {path} is not writable")
    return path


def umap_available() -> bool:
    """Whether umap-learn can be imported (the UMAP projection is drawn only then)."""
    try:
        import umap  # noqa: F401
    except ImportError:
        return False
    return True


def _figure() -> Any:
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _finish(
    fig: Any, name: str, title: str, data: dict[str, Any], path: str | os.PathLike[str] | None
) -> Plot:
    buf = io.BytesIO()
    # No "Software" metadata: the bytes then depend only on what is drawn.
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    png = buf.getvalue()
    out = None
    if path is not None:
        out = Path(path)
        atomic_write_bytes(out, png)
    return Plot(name=name, title=title, png=png, data=data, path=out)


def _color(modality: str, index: int) -> str:
    return COLORS.get(modality, f"C{index}")


# --------------------------------------------------------------------------- projection


def _pca_2d(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates on the top two principal axes and their explained-variance ratios.

    Each axis's sign is fixed so its largest-magnitude loading is positive, so the picture
    does not flip between LAPACK builds.
    """
    centred = points - points.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    axes = vt[:2].copy()
    for a in range(axes.shape[0]):
        if axes[a, np.argmax(np.abs(axes[a]))] < 0:
            axes[a] = -axes[a]
    coords = centred @ axes.T
    if coords.shape[1] < 2:  # d == 1: draw on a line
        coords = np.column_stack([coords[:, 0], np.zeros(coords.shape[0])])
    var = s * s
    ratio = var[:2] / var.sum() if var.sum() > 0 else np.zeros(2)
    return coords, np.pad(ratio, (0, 2 - ratio.size))


def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        if isinstance(value, bool) or value < 0:
            raise GapscopeError(f"{name}: expected 0 or more, got {value!r}")


def _umap_2d(points: np.ndarray, seed: int) -> np.ndarray:
    umap = require("umap", "the UMAP projection")
    reducer = umap.UMAP(n_components=2, random_state=seed, metric="cosine")
    return np.asarray(reducer.fit_transform(points), dtype=np.float64)


def plot_projection(
    ctx: AnalysisContext,
    path: str | os.PathLike[str] | None = None,
    *,
    method: str = "pca",
    points: int = 1000,
    links: int = 50,
) -> Plot:
    """2-D projection of every modality's unit rows, with true pairs linked for a sample.

    Up to ``points`` rows a modality are drawn (seeded sample), and ``links`` groups present in
    at least two modalities are drawn as line segments joining the first row of the group in
    each modality (image -> text -> audio); the linked rows are drawn whether sampled or not,
    so ``points=0`` draws the linked pairs alone. The projection is fitted on all drawn rows: PCA
    (top two principal axes of the pooled, centred unit rows), or UMAP (cosine metric,
    ``random_state`` the analysis's seed) when ``method="umap"`` and umap-learn is
    installed. With a modality gap, PCA's first axis usually separates the modalities and the links
    all cross it.

    Returns:
        A :class:`Plot` whose ``data`` holds ``"method"``, ``"rows"`` (modality -> drawn row
        indices), ``"coordinates"`` (modality -> ``(len(rows), 2)`` array), ``"links"`` (a list
        of ``{modality: row}`` dicts), ``"link_coordinates"`` (a list of ``(k, 2)`` arrays) and,
        for PCA, ``"explained_variance_ratio"`` (two floats).

    Raises:
        GapscopeError: matplotlib (or umap-learn for UMAP) missing, an unknown ``method``, a
            negative ``points`` or ``links``, or no row to draw (``points=0`` and no pair
            linked).
    """
    if method not in ("pca", "umap"):
        raise GapscopeError(f"unknown projection {method!r}: choose pca or umap")
    _check_counts(points=points, links=links)
    require_matplotlib()
    names = ctx.modalities
    raw = ctx.raw
    seed = ctx.options.seed

    rows: dict[str, np.ndarray] = {}
    for m in names:
        sample = sample_rows(raw[m].shape[0], points, seed, Stream.PROJECTION_POINTS, m)
        rows[m] = np.arange(raw[m].shape[0]) if sample is None else sample

    # Groups with rows in two or more modalities; each links the group's first row in each.
    firsts: dict[str, dict[int, int]] = {}
    for m in names:
        g = ctx.groups(m)
        uniq, first = np.unique(g, return_index=True)
        firsts[m] = dict(zip(uniq.tolist(), first.tolist(), strict=True))
    counts: dict[int, int] = {}
    for m in names:
        for code in firsts[m]:
            counts[code] = counts.get(code, 0) + 1
    linkable = np.array(sorted(c for c, k in counts.items() if k >= 2), dtype=np.int64)
    chosen = sample_rows(linkable.size, links, seed, Stream.PROJECTION_LINKS)
    link_groups = linkable if chosen is None else linkable[chosen]
    link_rows = [{m: firsts[m][int(c)] for m in names if int(c) in firsts[m]} for c in link_groups]
    for m in names:
        extra = [link[m] for link in link_rows if m in link]
        rows[m] = np.unique(np.concatenate([rows[m], np.asarray(extra, dtype=np.int64)]))

    if not any(rows[m].size for m in names):
        raise GapscopeError(f"projection: {_nothing_to_project(ctx, points, links)}")
    blocks = [unit_rows(raw[m][rows[m]]) for m in names]
    pooled = np.concatenate(blocks)
    ratio = None
    if method == "pca":
        coords, ratio = _pca_2d(pooled)
    else:
        coords = _umap_2d(pooled, seed)
    coordinates: dict[str, np.ndarray] = {}
    start = 0
    for m, block in zip(names, blocks, strict=True):
        coordinates[m] = coords[start : start + block.shape[0]]
        start += block.shape[0]

    link_coords = []
    for link in link_rows:
        pts = [coordinates[m][np.searchsorted(rows[m], link[m])] for m in names if m in link]
        link_coords.append(np.asarray(pts))

    fig = _figure()
    ax = fig.add_subplot()
    for segment in link_coords:
        ax.plot(segment[:, 0], segment[:, 1], color="0.55", linewidth=0.6, alpha=0.7, zorder=1)
    for i, m in enumerate(names):
        c = coordinates[m]
        ax.scatter(
            c[:, 0], c[:, 1], s=9, alpha=0.6, color=_color(m, i), label=m, linewidths=0, zorder=2
        )
    title = f"{method.upper()} projection of unit embeddings ({len(link_rows)} pairs linked)"
    ax.set_title(title)
    if ratio is not None:
        ax.set_xlabel(f"PC1 ({100 * ratio[0]:.1f}% of variance)")
        ax.set_ylabel(f"PC2 ({100 * ratio[1]:.1f}% of variance)")
    else:
        ax.set_xlabel("UMAP 1")
        ax.set_ylabel("UMAP 2")
    ax.legend(loc="best", markerscale=2)
    result: dict[str, Any] = {
        "method": method,
        "rows": rows,
        "coordinates": coordinates,
        "links": link_rows,
        "link_coordinates": link_coords,
    }
    if ratio is not None:
        result["explained_variance_ratio"] = [float(ratio[0]), float(ratio[1])]
    return _finish(fig, f"projection-{method}", title, result, path)


# --------------------------------------------------------------------------- histograms


def plot_similarity_histogram(
    ctx: AnalysisContext,
    a: str,
    b: str,
    path: str | os.PathLike[str] | None = None,
) -> Plot:
    """Histograms of positive-pair against negative-pair cosines (each normalised to density).

    The counts are those of the report's similarity statistics
    (:func:`gapscope.analysis.families.similarity_of`: fixed bins of width 0.01 on [-1, 1];
    every positive, and every negative or a seeded sample). The axis is cut to the bins that
    hold data.

    Returns:
        A :class:`Plot` whose ``data`` holds ``"bin_edges"``, ``"positive_counts"``,
        ``"negative_counts"`` (int64 arrays over all bins), ``"overlap"``, ``"auc"`` and
        ``"negatives_sampled"``.
    """
    from gapscope.analysis.families import similarity_of

    require_matplotlib()
    st = similarity_of(ctx, a, b)
    edges, pos, neg = st.bin_edges, st.positive_counts, st.negative_counts
    widths = np.diff(edges)
    used = np.flatnonzero((pos > 0) | (neg > 0))
    lo, hi = edges[used[0]], edges[used[-1] + 1]

    fig = _figure()
    ax = fig.add_subplot()
    pair = f"{a}-{b}"
    ax.stairs(
        pos / (pos.sum() * widths),
        edges,
        fill=True,
        alpha=0.55,
        color="#1b9e77",
        label=f"positive pairs (n={st.n_positive})",
    )
    if st.n_negative:
        sampled = " sampled" if st.negatives_sampled else ""
        ax.stairs(
            neg / (neg.sum() * widths),
            edges,
            fill=True,
            alpha=0.45,
            color="#7570b3",
            label=f"negative pairs (n={st.n_negative}{sampled})",
        )
    margin = 0.05 * (hi - lo)
    ax.set_xlim(max(-1.0, lo - margin), min(1.0, hi + margin))
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("density")
    detail = "" if st.overlap is None else f": overlap {st.overlap:.3f}, AUC {st.auc:.3f}"
    title = f"{pair} cosines, positive vs negative pairs{detail}"
    ax.set_title(title)
    ax.legend(loc="upper left")
    data = {
        "bin_edges": edges,
        "positive_counts": pos,
        "negative_counts": neg,
        K.OVERLAP.name: st.overlap,
        K.AUC.name: st.auc,
        K.NEGATIVES_SAMPLED.name: st.negatives_sampled,
    }
    return _finish(fig, f"similarity-{pair}", title, data, path)


# --------------------------------------------------------------------------- gap dimensions


def plot_gap_dimensions(
    ctx: AnalysisContext,
    a: str,
    b: str,
    path: str | os.PathLike[str] | None = None,
    *,
    top: int = 30,
) -> Plot:
    """Per-dimension contributions to the squared gap, ``g_k^2 / ||g||^2``, largest first.

    ``g`` is the report's gap vector (mean unit row of ``a`` minus that of ``b``, from the
    analysis's unit sums). Bars show the ``top`` largest contributions labelled by dimension
    index; the line is their running total (how few dimensions carry the gap).

    Returns:
        A :class:`Plot` whose ``data`` holds ``"shares"`` (all ``d`` contributions, summing to 1;
        zeros when ``g == 0``), ``"dimensions"`` (indices of the drawn bars, largest first),
        ``"drawn_shares"`` and ``"cumulative"``.
    """
    from gapscope.metrics.gap import gap_from_means

    require_matplotlib()
    if isinstance(top, bool) or top < 1:
        raise GapscopeError(f"top: expected a positive integer, got {top!r}")
    g = gap_from_means(ctx.unit_sums(a).mean, ctx.unit_sums(b).mean)
    squares = g.vector * g.vector
    total = float(squares.sum())
    shares = squares / total if total > 0 else np.zeros_like(squares)
    order = np.argsort(-shares, kind="stable")[:top]
    drawn = shares[order]
    cumulative = np.cumsum(drawn)

    fig = _figure()
    ax = fig.add_subplot()
    positions = np.arange(order.size)
    ax.bar(positions, drawn, color="#66a61e")
    ax.set_xticks(positions, [str(int(i)) for i in order], rotation=90, fontsize=7)
    ax.set_xlabel("embedding dimension (largest contribution first)")
    ax.set_ylabel("share of ||gap||^2")
    twin = ax.twinx()
    twin.plot(positions, cumulative, color="#e7298a", marker=".", label="cumulative share")
    twin.set_ylim(0, 1.05)
    twin.set_ylabel("cumulative share")
    pair = f"{a}-{b}"
    title = f"{pair} gap by dimension (||gap|| = {g.gap:.3f}, top {order.size} of {g.vector.size})"
    ax.set_title(title)
    data = {"shares": shares, "dimensions": order, "drawn_shares": drawn, "cumulative": cumulative}
    return _finish(fig, f"gap-dimensions-{pair}", title, data, path)


# --------------------------------------------------------------------------- recall curves


def plot_recall_curves(
    ctx: AnalysisContext,
    a: str,
    b: str,
    path: str | os.PathLike[str] | None = None,
    *,
    ks: Sequence[int] = RECALL_KS,
) -> Plot:
    """Recall@K against K, inter-modal (a->b, b->a) next to intra-modal (a->a, b->b).

    Read from the analysis's own passes (each query's first relevant rank), so the curve is
    exact wherever the report's table is, and covers the same (possibly sampled) queries. A
    direction with no eligible query (e.g. image->image without labels, where every image is
    its own group) is left out.

    Returns:
        A :class:`Plot` whose ``data`` holds ``"k"`` (the K values) and ``"curves"``
        (direction -> list of recall values, ``None`` where undefined).
    """
    require_matplotlib()
    cutoffs = sorted({int(k) for k in ks})
    a_to_b, b_to_a = ctx.cross_pass(a, b)
    intra = {m: ctx.modality_pass(m, uniformity=False).retrieval for m in (a, b)}
    results = {
        f"{a}->{b}": a_to_b,
        f"{b}->{a}": b_to_a,
        f"{a}->{a}": intra[a],
        f"{b}->{b}": intra[b],
    }
    curves = {d: list(r.recall_at(cutoffs).values()) for d, r in results.items() if r is not None}

    fig = _figure()
    ax = fig.add_subplot()
    styles = {f"{a}->{b}": "-", f"{b}->{a}": "-", f"{a}->{a}": "--", f"{b}->{b}": "--"}
    query_color = {f"{a}->{b}": a, f"{b}->{a}": b, f"{a}->{a}": a, f"{b}->{b}": b}
    for i, (direction, values) in enumerate(curves.items()):
        if any(v is None for v in values):
            continue
        kind = "inter" if direction in (f"{a}->{b}", f"{b}->{a}") else "intra"
        ax.plot(
            cutoffs,
            values,
            styles[direction],
            marker="o",
            color=_color(query_color[direction], i),
            label=f"{direction} ({kind})",
        )
    ax.set_xscale("log")
    ax.set_xticks(cutoffs, [str(k) for k in cutoffs])
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("K")
    ax.set_ylabel("recall@K (hit rate)")
    title = f"{a}-{b} retrieval: inter-modal (solid) vs intra-modal (dashed)"
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return _finish(fig, f"recall-{a}-{b}", title, {K.P_K: cutoffs, "curves": curves}, path)


# --------------------------------------------------------------------------- what-if sweep


def plot_whatif_sweep(
    ctx: AnalysisContext, a: str, b: str, path: str | os.PathLike[str] | None = None
) -> Plot:
    """Zero-shot accuracy and cross-modal R@1 against the shift along the gap (Liang et al.
    2022's what-if: a fraction f of the gap closed, negative f widening it; f = 0 is the
    embeddings as they are), with the mean-centred values as dotted lines.

    Read from the what-ifs the analysis measured (the ``whatif`` metrics), so the points are
    the report's own numbers. Zero-shot accuracy is drawn when the pair has class prompts.

    Returns:
        A :class:`Plot` whose ``data`` holds ``"fraction"`` (the x values, ascending) and
        ``"curves"`` (name -> values, ``None`` where undefined), ``"centered"`` (name ->
        the mean-centred value) and ``"axes"`` (the axis labels, ``"x"`` and ``"y"``).

    Raises:
        GapscopeError: the analysis measured no what-ifs for this pair.
    """
    require_matplotlib()
    scenarios = ctx.extras.get(f"whatif:{a}-{b}")
    if not scenarios:
        raise GapscopeError(f"{a}-{b}: no what-ifs in this analysis (add whatif to --metrics)")
    swept = sorted(
        (0.0 if s.fraction is None else s.fraction, s) for s in scenarios if not s.centered
    )
    centered = next(s for s in scenarios if s.centered)

    def values(s: Any) -> dict[str, float | None]:
        out: dict[str, float | None] = {
            f"{a}->{b} R@1": s.recall[(a, b)].recall.get(1),
            f"{b}->{a} R@1": s.recall[(b, a)].recall.get(1),
        }
        if s.zeroshot is not None:
            out["zero-shot top-1"] = s.zeroshot.accuracy[1]
            out["zero-shot balanced"] = s.zeroshot.balanced_accuracy
        return out

    fractions = [f for f, _ in swept]
    curves: dict[str, list[float | None]] = {}
    for _, s in swept:
        for name, value in values(s).items():
            curves.setdefault(name, []).append(value)
    centred = values(centered)

    fig = _figure()
    ax = fig.add_subplot()
    for i, (name, ys) in enumerate(curves.items()):
        color = f"C{i}"
        drawn = [(f, y) for f, y in zip(fractions, ys, strict=True) if y is not None]
        if not drawn:
            continue
        style = "-" if name.startswith("zero-shot") else "--"
        ax.plot(*zip(*drawn, strict=True), style, marker="o", color=color, label=name)
        if centred.get(name) is not None:
            ax.axhline(centred[name], color=color, linestyle=":", linewidth=1)
    ax.axvline(0.0, color="grey", linewidth=0.8)
    ax.set_ylim(0, 1.02)
    axes = {
        "x": "shift along the gap (fraction of the gap closed; < 0 widens it)",
        "y": "accuracy / recall@1",
    }
    ax.set_xlabel(axes["x"])
    ax.set_ylabel(axes["y"])
    title = f"{a}-{b} what-if: shifting along the gap (dotted: mean-centred)"
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    data = {"fraction": fractions, "curves": curves, "centered": centred, "axes": axes}
    return _finish(fig, f"whatif-{a}-{b}", title, data, path)


# --------------------------------------------------------------------------- all of them


def plot_all(
    source: Report | AnalysisContext,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    points: int = 1000,
    links: int = 50,
    umap: bool | None = None,
) -> PlotSet:
    """Every plot of an analysis: the projection(s), then per pair the cosine histograms, the
    gap dimensions and the recall curves; written as ``<name>.png`` under ``out_dir`` when
    given. ``source`` is a report that came from an analysis (it keeps its context) or the
    context itself; the plots read the same unit sums and passes as the report's tables.

    ``umap``: draw the UMAP projection too (``None``: when umap-learn is installed).
    Files: ``projection-pca.png`` [``projection-umap.png``], and for each pair ``a-b``:
    ``similarity-a-b.png``, ``gap-dimensions-a-b.png``, ``recall-a-b.png``, and
    ``whatif-a-b.png`` when the analysis measured the what-ifs (:func:`plot_whatif_sweep`).
    Every one of these that is not drawn is listed, with the reason, in
    :attr:`PlotSet.skipped`: a pair whose modalities share no group (so no positive pair)
    gets only the gap plot; the what-if sweep needs the analysis to have measured the
    what-ifs (``whatif`` among its metrics, and defined for the pair); the projections need
    a row to draw (``points=0`` draws only the linked pairs).

    Raises:
        GapscopeError: matplotlib missing, a report read from JSON (no analysis behind it),
            an ``out_dir`` that could not be written to (:func:`check_plot_folder`).
    """
    ctx = cast(
        "AnalysisContext | None",
        source if _is_context(source) else getattr(source, "context", None),
    )
    if ctx is None:
        raise GapscopeError("plots need the analysis itself: analyse the store or arrays again")
    require_matplotlib()
    out = None if out_dir is None else check_plot_folder(out_dir)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)

    def target(name: str) -> Path | None:
        return None if out is None else out / f"{name}.png"

    methods = ["pca"]
    if umap or (umap is None and umap_available()):
        methods.append("umap")
    plots: list[Plot] = []
    skipped: list[str] = []
    empty = _nothing_to_project(ctx, points, links)
    for method in methods:
        if empty:
            skipped.append(f"projection-{method}: {empty}: projection skipped")
            continue
        plots.append(
            plot_projection(
                ctx, target(f"projection-{method}"), method=method, points=points, links=links
            )
        )
    for a, b in ctx.pairs:
        pair = f"{a}-{b}"
        plots.append(plot_gap_dimensions(ctx, a, b, target(f"gap-dimensions-{pair}")))
        if not ctx.has_positive_pairs(a, b):
            skipped.append(
                f"{pair}: no {a} row shares a group with a {b} row, so there are no "
                "positive pairs: cosine histograms, recall curves and what-if sweep skipped"
            )
            continue
        plots.append(plot_similarity_histogram(ctx, a, b, target(f"similarity-{pair}")))
        plots.append(plot_recall_curves(ctx, a, b, target(f"recall-{pair}")))
        if ctx.extras.get(f"whatif:{pair}"):
            plots.append(plot_whatif_sweep(ctx, a, b, target(f"whatif-{pair}")))
        else:
            skipped.append(f"{pair}: {_no_whatif_reason(ctx, a, b)}: what-if sweep skipped")
    return PlotSet(plots=plots, skipped=skipped)


def _nothing_to_project(ctx: AnalysisContext, points: int, links: int) -> str:
    """Why a projection would hold no row, or ``""`` when it holds some."""
    if points > 0:
        return ""
    if links == 0:
        return "points and links are both 0, so there is no row to draw"
    if not any(ctx.has_positive_pairs(a, b) for a, b in ctx.pairs):
        return "points is 0 and no two modalities share a group to link, so there is no row to draw"
    return ""


def _no_whatif_reason(ctx: AnalysisContext, a: str, b: str) -> str:
    """Why the analysis holds no what-ifs for a pair that has positive pairs."""
    from gapscope.analysis.families import WHATIF

    if WHATIF.selector not in ctx.options.metrics:
        return "the analysis did not measure the what-ifs (add whatif to its metrics)"
    # The what-if family notes why it gave up on a pair (families._whatif); its words say
    # which row made the shift undefined, so they are passed on rather than paraphrased.
    prefix = f"{a}-{b} what-ifs: not computed ("
    for note in ctx.notes:
        if note.startswith(prefix) and note.endswith(")"):
            return f"the what-ifs are undefined for this input ({note[len(prefix) : -1]})"
    return "the analysis holds no what-ifs for this pair"


def _is_context(source: Any) -> bool:
    return hasattr(source, "unit_sums") and hasattr(source, "cross_pass")
