"""What closing the modality gap after training would change: post-hoc fixes, re-measured.

Two fixes from the literature, applied to the L2-normalised rows of a pair of modalities:

- **mean-centring**: subtract each modality's own mean (as in Gu, Clark & Kembhavi 2023, "I
  Can't Believe There's No Images! Learning Visual Tasks Using only Language Supervision",
  which removes the gap of Liang et al. 2022, "Mind the Gap", this way before re-normalising).
  The transformed rows of each modality have mean exactly 0, so the gap between the
  transformed rows is 0 (before re-normalising).
- **shifting along the gap** by a fraction ``f`` (Liang et al. 2022, Sec. 4.2, who shift image
  and text embeddings in opposite directions along the gap and re-normalise):
  ``x' = x - (f / 2) g``, ``y' = y + (f / 2) g`` with ``g = mean x - mean y``. ``f = 0``
  changes nothing; ``f = 1`` puts both centroids at their midpoint (gap 0 before
  re-normalising); ``f`` is the share of the gap removed.

With class prompts (:mod:`gapscope.data.class_prompts`) the zero-shot classification of the
pair is measured in every scenario too: the class prompts are rows of their modality (text)
and move with it (the same offset: minus that modality's mean when centring, ``+ (f / 2) g``
for the text side of a shift), then are re-normalised; the classified rows move with theirs.
The fractions run both ways (Liang et al. 2022 shift towards and away from each other): a
negative ``f`` widens the gap.

Every metric gapscope reports re-normalises rows, so a fixed pair is measured as the unit rows
``x' / ||x'||``. The gap, retrieval recall (inter- and intra-modal) and uniformity are measured
on the original and on each fixed version with the same queries, so the differences come from
the fix alone. Both fixes move every unit row of a modality by one vector, so every scenario's
scores follow from one product of the rows as they are (:mod:`gapscope.engine.offset_passes`):
no transformed copy of a modality is made, one product a direction serves every scenario, and a
store too big for memory streams. The means come from the analysis context (computed once),
and the "original" scenario reads the analysis's own passes when it has them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gapscope.analysis.context import DEFAULT_MAX_ROWS, AnalysisContext, AnalysisOptions
from gapscope.data.class_prompts import ClassPrompts
from gapscope.data.embedding_set import EmbeddingSet
from gapscope.engine.blocks import row_blocks
from gapscope.engine.distributed import current_share
from gapscope.engine.moments import unit_sums
from gapscope.engine.normalization import unit_rows
from gapscope.engine.numerics import log_mean_exp
from gapscope.engine.offset_passes import (
    ModalityToPass,
    RowsToMove,
    offset_cross_passes,
    offset_modality_passes_of_each,
    offset_rows_of_each,
)
from gapscope.engine.passes import ModalityPassResult
from gapscope.engine.ranking import RetrievalResult, summarize
from gapscope.engine.sampling import Stream, generator
from gapscope.engine.unit_rows import MIN_NORM, STREAM_CHUNK_ROWS, UnitRows, fits_in_memory
from gapscope.engine.validation import (
    ArrayLike,
    check_count,
    check_embeddings,
    check_finite,
    check_groups,
    check_same_dim,
    pair_groups,
)
from gapscope.engine.widening import WideningBuffer
from gapscope.errors import EmbeddingError, GapscopeError
from gapscope.metrics.zeroshot import ZeroShotResult, class_ranks, summarize_ranks

__all__ = [
    "DEFAULT_SHIFT_FRACTIONS",
    "Scenario",
    "center_modality",
    "gap_closing_whatif",
    "measure_scenarios",
    "shift_along_gap",
]

#: The gap fractions of the shift scenarios an analysis reports: towards each other (positive)
#: and apart (negative).
DEFAULT_SHIFT_FRACTIONS = (-1.0, -0.5, 0.5, 1.0)


@dataclass(frozen=True)
class Scenario:
    """One pair of modalities as measured after a fix (or as it is).

    Attributes:
        fraction: ``None`` for the original and for mean-centring (see ``centered``), else
            the shift's share of the gap.
        centered: whether this is the mean-centring scenario.
        gap: the gap of the re-normalised rows (what ``analyze`` would report for them).
        gap_before_renormalization: ``||mean x' - mean y'||`` of the moved rows themselves.
        recall: ``(query modality, key modality)`` -> retrieval; the intra-modal directions
            have mAP.
        uniformity: modality -> uniformity (estimated from the queries when they are sampled).
        zeroshot: the zero-shot classification of the pair (every labelled row of the
            classified modality against the moved class prompts), or ``None`` without class
            prompts.
    """

    fraction: float | None
    centered: bool
    gap: float
    gap_before_renormalization: float
    recall: dict[tuple[str, str], RetrievalResult]
    uniformity: dict[str, float | None]
    zeroshot: ZeroShotResult | None = None


def _check_nonzero(rows: np.ndarray, name: str, why: str) -> np.ndarray:
    """The rows' norms; raises on a row that has lost its direction."""
    norms, short = _norms_and_first_short(rows)
    if short >= 0:
        raise _no_direction(name, short, why)
    return norms


def _norms_and_first_short(rows: np.ndarray) -> tuple[np.ndarray, int]:
    """The rows' norms, and the first row that has lost its direction (``-1``: none)."""
    norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))
    short = np.flatnonzero(norms < MIN_NORM)
    return norms, int(short[0]) if short.size else -1


def _no_direction(name: str, row: int, why: str) -> EmbeddingError:
    return EmbeddingError(f"{name}: row {row} {why}, so it has no direction left")


def center_modality(x: ArrayLike, name: str = "x") -> np.ndarray:
    """The L2-normalised rows of ``x`` minus their mean (float64, not re-normalised).

    ``c_i = x_i / ||x_i|| - (1/n) sum_j x_j / ||x_j||``; the mean of the ``c_i`` is 0 up to
    rounding, so centring every modality this way closes the gap between them exactly (before
    the re-normalisation that cosine metrics apply).

    Raises:
        EmbeddingError: bad rows, or a row equal to the mean (all rows the same direction).

    Example:
        >>> center_modality(np.array([[2.0, 0.0], [0.0, 1.0]])).tolist()
        [[0.5, -0.5], [-0.5, 0.5]]
    """
    xa = check_embeddings(x, name)
    rows = unit_rows(xa)
    rows -= rows.mean(axis=0)
    _check_nonzero(rows, name, "equals its modality's mean direction")
    return rows


def shift_along_gap(
    x: ArrayLike, y: ArrayLike, fraction: float, names: tuple[str, str] = ("x", "y")
) -> tuple[np.ndarray, np.ndarray]:
    """Move two modalities towards each other by ``fraction`` of their gap vector.

    With unit rows and ``g = mean_i x_i - mean_j y_j``: ``x' = x - (fraction / 2) g`` and
    ``y' = y + (fraction / 2) g`` (float64, not re-normalised), so the centroids' distance
    becomes ``(1 - fraction) ||g||`` before re-normalising (Liang et al. 2022 shift both
    modalities this way, by half the distance each).

    Raises:
        EmbeddingError: bad rows, different ``d``, or a row the shift moves to the origin.
        GapscopeError: a non-finite ``fraction``.

    Example:
        >>> a, b = shift_along_gap(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]), 1.0)
        >>> a.tolist(), b.tolist()
        ([[0.5, 0.5]], [[0.5, 0.5]])
    """
    fraction = check_finite(fraction, "fraction")
    xa = check_embeddings(x, names[0])
    ya = check_embeddings(y, names[1])
    check_same_dim(xa, ya, names)
    g = unit_sums(xa).mean - unit_sums(ya).mean
    half = 0.5 * float(fraction) * g
    xs = unit_rows(xa) - half
    ys = unit_rows(ya) + half
    _check_nonzero(xs, names[0], "lands on the origin after the shift")
    _check_nonzero(ys, names[1], "lands on the origin after the shift")
    return xs, ys


def whatif_queries(ctx: AnalysisContext, m: str, cap: int = DEFAULT_MAX_ROWS) -> np.ndarray | None:
    """The query rows of ``m`` in every scenario: the analysis's own queries (every row, or
    its ``--sample``), cut to ``cap`` by a seeded draw among them when there are more."""
    base = ctx.queries(m)
    n = ctx.raw[m].shape[0] if base is None else base.size
    if n <= cap:
        return base
    rng = generator(ctx.options.seed, Stream.WHATIF_QUERIES, m)
    picked = np.sort(rng.choice(n, size=cap, replace=False))
    return picked if base is None else base[picked]


def measure_scenarios(
    ctx: AnalysisContext,
    a: str,
    b: str,
    shift_fractions: Sequence[float] = DEFAULT_SHIFT_FRACTIONS,
    cap: int = DEFAULT_MAX_ROWS,
) -> list[Scenario]:
    """The original pair ``(a, b)`` of ``ctx``, mean-centred, and shifted by each fraction.

    Every scenario ranks the same query rows (:func:`whatif_queries`) against every row, so
    the differences come from the fix alone. The original reads the analysis's passes where
    it has them (restricted to those queries), and is measured like the others otherwise.
    Every scenario is read from one product a direction of the rows as they are
    (:mod:`gapscope.engine.offset_passes`), held in memory when the pair fits and normalised
    block by block otherwise.

    Raises:
        EmbeddingError: a fix that sends a row to the origin.
        GapscopeError: a non-finite shift fraction.
    """
    fractions = [check_finite(f, "shift_fractions") for f in shift_fractions]
    queries = (whatif_queries(ctx, a, cap), whatif_queries(ctx, b, cap))
    mean_a, mean_b = ctx.unit_sums(a).mean, ctx.unit_sums(b).mean
    original = _reused_original(ctx, a, b, queries)
    fixes = [] if original is not None else [_Fix(None, False, (None, None), "")]
    fixes.append(_Fix(None, True, (mean_a, mean_b), "equals its modality's mean direction"))
    for f in fractions:
        half = 0.5 * f * (mean_a - mean_b)
        offsets = (half, -half) if f != 0.0 else (None, None)
        fixes.append(_Fix(f, False, offsets, "lands on the origin after the shift"))
    measured = _measure_together(ctx, (a, b), fixes, queries)
    return ([original] if original is not None else []) + measured


@dataclass(frozen=True)
class _Fix:
    """One scenario to measure: its fraction and kind, the offset of each modality's unit
    rows (``None``: left as they are), and what a row sent to the origin means."""

    fraction: float | None
    centered: bool
    offsets: tuple[np.ndarray | None, np.ndarray | None]
    why: str


class _TransformedSums:
    """Float64 sums of ``w_i = u_i - offset`` and of ``w_i / ||w_i||`` over the rows (``u_i``
    the unit rows), added a chunk at a time in row order; the first row the offset leaves
    without direction is kept as :attr:`error`, and the sums stop there. Fed (through
    :class:`_SumsOfEveryFix`) by the read that makes the unit rows, or by a read of their own
    (shared among processes, or when the unit rows are streamed)."""

    def __init__(self, dim: int, offset: np.ndarray | None, name: str, why: str) -> None:
        self.offset, self.name, self.why = offset, name, why
        self.sum_w = np.zeros(dim)
        self.sum_unit = np.zeros(dim)
        self.error: EmbeddingError | None = None

    @property
    def size(self) -> int:
        """The float64 values of a chunk's terms."""
        return 1 + 2 * self.sum_w.size

    def part_terms(self, unit: np.ndarray, first: bool, moved: np.ndarray, out: np.ndarray) -> int:
        """Add a part of a chunk to the chunk's terms ``out`` (the chunk's sums of ``w_i`` and
        of ``w_i / ||w_i||``, see :meth:`_SumsOfEveryFix.chunk_terms`). ``unit`` are the
        part's float64 unit rows (left as they are); ``moved`` is scratch of one row more,
        whose first row carries the sums so far, so each sum runs down the chunk's rows in
        order (numpy adds along the first axis row after row): the bits of one sum over the
        whole chunk. ``first``: the chunk's first part, whose sums start from its own first
        row. Returns the part's first row without direction (``-1``: none), and then adds
        nothing."""
        d, k = self.sum_w.size, unit.shape[0]
        w = moved[1 : k + 1]
        if self.offset is None:
            w[...] = unit
        else:
            np.subtract(unit, self.offset, out=w)
        norms, short = _norms_and_first_short(w)
        if short >= 0:
            return short
        _sum_down(moved, k, first, out[1 : d + 1])
        np.divide(w, norms[:, None], out=w)
        _sum_down(moved, k, first, out[d + 1 :])
        return -1

    def fold(self, start: int, terms: np.ndarray) -> None:
        """Add the terms of the chunk of rows from ``start``, in row order."""
        if self.error is not None:
            return
        if terms[0] >= 0:
            self.error = _no_direction(self.name, start + int(terms[0]), self.why)
            return
        d = self.sum_w.size
        self.sum_w += terms[1 : d + 1]
        self.sum_unit += terms[d + 1 :]


def _sum_down(moved: np.ndarray, k: int, first: bool, sums: np.ndarray) -> None:
    """``sums`` plus the ``k`` rows below ``moved``'s first, added row after row (numpy adds
    along the first axis in order): the first row carries the sums so far, so a chunk's
    parts sum as the whole chunk would. ``first``: the chunk's first part, which starts from
    its own first row."""
    if first:
        np.add.reduce(moved[1 : k + 1], axis=0, out=sums)
    else:
        moved[0] = sums
        np.add.reduce(moved[: k + 1], axis=0, out=sums)


class _SumsOfEveryFix:
    """Feeds each chunk of a modality's rows to the sums of every scenario; a scenario whose
    offset sends a row to the origin keeps its error (the caller raises the errors in scenario
    order) and is fed no further."""

    def __init__(self, sums: list[_TransformedSums]) -> None:
        self.sums = sums
        # Each scenario's place in a chunk's terms, one after the other.
        ends = np.cumsum([s.size for s in sums]).tolist()
        self.spans = [slice(end - s.size, end) for s, end in zip(sums, ends, strict=True)]
        self.size = ends[-1] if ends else 0
        # A thread's part of unit rows, and its moved rows below the sums so far (lanes may
        # make chunks side by side).
        self._unit, self._moved = WideningBuffer(np.float64), WideningBuffer(np.float64)

    @property
    def errors(self) -> list[EmbeddingError | None]:
        return [s.error for s in self.sums]

    def chunk_terms(self, rows: ArrayLike) -> np.ndarray:
        """Every scenario's terms of a chunk of source rows, one after the other: the chunk's
        first row without direction (``-1``: none), then its sums of ``w_i`` and of ``w_i /
        ||w_i||``, each a sum down the chunk's rows in order.

        The chunk is worked on a part of :func:`_part_rows` rows at a time, each part
        normalised once and moved by every scenario's offset while it is in cache, so a
        thread holds two parts of float64 rows rather than two float64 copies of the chunk
        (512 MiB for a 65,536-row chunk at d = 512); the sums carry on from part to part, so
        the parts do not change a bit."""
        if isinstance(rows, torch.Tensor):
            # bfloat16 has no numpy type: widened to float32, exactly.
            wide = rows.float() if rows.dtype == torch.bfloat16 else rows
            rows = wide.detach().cpu().numpy()
        n, d = rows.shape
        part = _part_rows(d)
        moved = self._moved.empty((min(n, part) + 1, d))
        # Zeros: a failed scenario's sums are never set, and the chunk's bytes stay defined.
        out = np.zeros(self.size)
        out[[span.start for span in self.spans]] = -1.0
        failed = [False] * len(self.sums)
        for lo in range(0, n, part):
            hi = min(n, lo + part)
            unit = unit_rows(rows[lo:hi], self._unit)  # normalised once for every scenario
            for f, (sums, span) in enumerate(zip(self.sums, self.spans, strict=True)):
                if failed[f]:
                    continue
                short = sums.part_terms(unit, lo == 0, moved, out[span])
                if short >= 0:
                    failed[f] = True
                    out[span] = 0.0
                    out[span.start] = lo + short
        return out

    def fold(self, start: int, terms: np.ndarray) -> None:
        for sums, span in zip(self.sums, self.spans, strict=True):
            sums.fold(start, terms[span])

    def add(self, start: int, rows: ArrayLike) -> None:
        """Add the chunk of source rows from ``start`` (chunks in row order)."""
        self.fold(start, self.chunk_terms(rows))

    def read(self, x: Any, chunk_rows: int | None = None) -> None:
        """Feed every row of ``x``, a chunk at a time (``STREAM_CHUNK_ROWS`` rows by default,
        as :class:`~gapscope.engine.unit_rows.UnitRows` reads them): processes sharing the
        passes (:mod:`~gapscope.engine.distributed`) take the chunks in turn, and every
        process folds every chunk's terms in row order, as one process does."""
        read_sums([(self, x, chunk_rows or STREAM_CHUNK_ROWS)])


def _part_rows(dim: int) -> int:
    """Rows of a part of :meth:`_SumsOfEveryFix.chunk_terms`: 1 MiB of float64 (256 rows at
    d = 512), so a part's unit rows and their moved copy stay near the core, in parts big
    enough that numpy's calls on them cost little beside their work."""
    return max(1, (1 << 20) // (8 * max(dim, 1)))


def read_sums(reads: list[tuple[_SumsOfEveryFix, Any, int]]) -> None:
    """:meth:`_SumsOfEveryFix.read` of several modalities (``(feed, rows, chunk_rows)``) in
    one scan: the chunks of the first, then of the next, each feed's folded in its row
    order, so every feed gets the bits of a read of its own. One scan lets lanes, or the
    processes sharing the passes, make two modalities' chunks side by side, where each
    modality alone may be one chunk (20,000 rows are one 65,536-row chunk)."""
    blocks = [
        (feed, x, start, stop)
        for feed, x, rows in reads
        for start, stop in row_blocks(x.shape[0], rows)
    ]
    if not blocks:
        return
    sizes = {feed.size for feed, _, _ in reads}
    if len(sizes) != 1:
        raise ValueError(f"read_sums: the feeds' terms differ in size ({sorted(sizes)})")
    # A thread holds a chunk's source rows as read (a streamed store's chunk is read whole;
    # counted as float64) and two parts of float64 rows.
    held = max(min(rows, x.shape[0]) * x.shape[1] * 8 for _, x, rows in reads) + 2 * (1 << 20)

    def make(b: int) -> np.ndarray:
        feed, x, start, stop = blocks[b]
        return feed.chunk_terms(x[start:stop])

    def fold(b: int, terms: np.ndarray) -> None:
        feed, _, start, _ = blocks[b]
        feed.fold(start, terms)

    current_share().in_order(len(blocks), make, fold, sizes.pop(), lane_bytes=held)


def _held_unit_rows(ctx: AnalysisContext, m: str) -> UnitRows | None:
    """The analysis's own unit rows of ``m`` when a pass has made them already and they are
    the float32 rows the what-ifs measure, held in memory: the same rows, bit for bit, not
    made twice. None are made here, so a run without such a pass holds no extra copy."""
    held = ctx.held_unit(m)
    if held is None or not held.in_memory or held.dtype != torch.float32:
        return None
    return held


def _measure_together(
    ctx: AnalysisContext,
    names: tuple[str, str],
    fixes: list[_Fix],
    queries: tuple[np.ndarray | None, np.ndarray | None],
) -> list[Scenario]:
    """Every fix of the pair from one product a direction and a modality
    (:mod:`gapscope.engine.offset_passes`), and the gaps' sums of every fix from one read of
    each modality."""
    opts = ctx.options
    sums = [
        {
            m: _TransformedSums(ctx.dim, off, m, fix.why)
            for m, off in zip(names, fix.offsets, strict=True)
        }
        for fix in fixes
    ]
    # The unit rows as they are: one float32 copy when the pair fits in memory, else
    # normalised block by block whenever a pass reads them.
    fits = fits_in_memory(sum(ctx.raw[m].shape[0] for m in names), ctx.dim)
    # One process makes the sums in the read that makes the unit rows; processes sharing the
    # passes take the chunks of a read of their own in turn (the same chunks, so the same bits).
    alone = current_share().world == 1
    base: dict[str, UnitRows] = {}
    feeds: dict[str, _SumsOfEveryFix] = {}
    reads: list[tuple[_SumsOfEveryFix, Any, int]] = []
    for m in names:
        feeds[m] = _SumsOfEveryFix([s[m] for s in sums])
        held = _held_unit_rows(ctx, m) if fits else None
        if held is not None:
            base[m] = held
        else:
            base[m] = UnitRows(
                ctx.raw[m],
                device=opts.device,
                in_memory=fits,
                name=m,
                on_rows=feeds[m].add if alone else None,
            )
        if base[m] is held or not base[m].rows_seen:
            # Rows not read here (made by the analysis, or streamed): the sums get a read of
            # their own, cut where the unit rows' read cuts them.
            reads.append((feeds[m], ctx.raw[m], base[m].chunk_rows))
    # Both modalities' reads in one scan, side by side.
    read_sums(reads)
    # Every fix's rows of a modality from one read: their norms, and each row's dot products
    # with every offset of both modalities (the passes' row and column terms).
    a, b = names
    whys = [fix.why for fix in fixes]
    offsets = {m: [fix.offsets[i] for fix in fixes] for i, m in enumerate(names)}
    # Both modalities' rows in one scan, side by side (as the sums above).
    requests = [
        RowsToMove(base[m], offsets[m], m, whys, offsets[other]) for m, other in ((a, b), (b, a))
    ]
    moved = dict(zip(names, offset_rows_of_each(requests, check=False), strict=True))
    # A fix that sends a row (or a class prompt) to the origin: the first one's error, in the
    # order measuring the fixes one by one would meet them.
    zeroshot = []
    for f, fix in enumerate(fixes):
        for m in names:
            error = feeds[m].errors[f]
            if error is not None:
                raise error
            moved[m][f].check()
        zeroshot.append(_zeroshot(ctx, names, fix.offsets, fix.why))
    versions = list(zip(moved[a], moved[b], strict=True))
    cross = offset_cross_passes(
        base[a],
        base[b],
        versions,
        ctx.groups(a),
        ctx.groups(b),
        k=opts.k,
        block_size=opts.block_size,
        query_index_x=queries[0],
        query_index_y=queries[1],
    )
    # Both modalities' passes, their blocks shared out together.
    passes = [
        ModalityToPass(base[m], [v[i] for v in versions], ctx.relevance(m)[0], q)
        for i, (m, q) in enumerate(zip(names, queries, strict=True))
    ]
    own = dict(
        zip(
            names,
            offset_modality_passes_of_each(
                passes, k=opts.k, t=opts.uniformity_t, block_size=opts.block_size
            ),
            strict=True,
        )
    )
    out = []
    for f, fix in enumerate(fixes):
        a_to_b, b_to_a = cross[f]
        recall = {(a, b): a_to_b, (b, a): b_to_a}
        uniformity: dict[str, float | None] = {}
        for m in names:
            result = own[m][f]
            assert result.retrieval is not None
            recall[(m, m)] = result.retrieval
            uniformity[m] = result.uniformity
        out.append(_scenario(ctx, names, fix, sums[f], recall, uniformity, zeroshot[f]))
    return out


def _scenario(
    ctx: AnalysisContext,
    names: tuple[str, str],
    fix: _Fix,
    sums: dict[str, _TransformedSums],
    recall: dict[tuple[str, str], RetrievalResult],
    uniformity: dict[str, float | None],
    zeroshot: ZeroShotResult | None,
) -> Scenario:
    """A measured fix: its gaps from the sums, with its recall, uniformity and zero-shot."""
    a, b = names
    na, nb = ctx.raw[a].shape[0], ctx.raw[b].shape[0]
    return Scenario(
        fraction=fix.fraction,
        centered=fix.centered,
        gap=float(np.linalg.norm(sums[a].sum_unit / na - sums[b].sum_unit / nb)),
        gap_before_renormalization=float(np.linalg.norm(sums[a].sum_w / na - sums[b].sum_w / nb)),
        recall=recall,
        uniformity=uniformity,
        zeroshot=zeroshot,
    )


def _zeroshot(
    ctx: AnalysisContext,
    names: tuple[str, str],
    offsets: tuple[np.ndarray | None, np.ndarray | None],
    why: str,
) -> ZeroShotResult | None:
    """Zero-shot classification after the fix: the classified rows and the class prompts
    each moved by their modality's offset, then re-normalised."""
    from gapscope.analysis.families import ZEROSHOT_K, zeroshot_of, zeroshot_side

    m = zeroshot_side(ctx, *names)
    if m is None or zeroshot_of(ctx, *names) is None:
        return None
    classes = ctx.data.classes
    assert classes is not None
    moved = dict(zip(names, offsets, strict=True))
    prompts = unit_rows(classes.embeddings)
    if moved[classes.modality] is not None:
        prompts = prompts - moved[classes.modality]
        _check_nonzero(prompts, "classes", why)
        prompts = unit_rows(prompts)
    targets = ctx.data.class_labels[m]
    rank = class_ranks(ctx.raw[m], prompts, targets, offset=moved[m])
    return summarize_ranks(rank, targets, classes.n_classes, ZEROSHOT_K)


def _reused_original(
    ctx: AnalysisContext, a: str, b: str, queries: tuple[np.ndarray | None, np.ndarray | None]
) -> Scenario | None:
    """The pair as it is, from the analysis's passes restricted to the what-if queries, when
    the analysis computed them (``None`` otherwise: it is then measured like a fix)."""
    # The fixes are measured on float32 unit rows; the analysis's passes are reused only when
    # they were float32 too.
    reuse = (
        ctx.options.precision == "fp32"
        and ctx.has_cross_pass(a, b)
        and all(ctx.has_modality_pass(m, uniformity=True, retrieval=True) for m in (a, b))
    )
    if not reuse:
        return None
    gap = float(np.linalg.norm(ctx.unit_sums(a).mean - ctx.unit_sums(b).mean))
    a_to_b, b_to_a = ctx.cross_pass(a, b)
    recall = {(a, b): _restrict(a_to_b, queries[0]), (b, a): _restrict(b_to_a, queries[1])}
    uniformity: dict[str, float | None] = {}
    for m, q in zip((a, b), queries, strict=True):
        own = ctx.modality_pass(m)
        assert own.retrieval is not None
        recall[(m, m)] = _restrict(own.retrieval, q)
        uniformity[m] = _restricted_uniformity(own, q, ctx.raw[m].shape[0])
    from gapscope.analysis.families import zeroshot_of

    return Scenario(None, False, gap, gap, recall, uniformity, zeroshot_of(ctx, a, b))


def _restrict(result: RetrievalResult, rows: np.ndarray | None) -> RetrievalResult:
    """``result`` over the queries among ``rows`` only (``None``: all of them)."""
    if rows is None:
        return result
    keep = np.isin(result.query_rows, rows)
    ap, rp = result.average_precision, result.r_precision_per_query
    return summarize(
        tuple(result.recall),
        result.first_rank[keep],
        n_skipped=0,
        n_eligible_total=None,
        query_rows=result.query_rows[keep],
        average_precision=None if ap is None else ap[keep],
        r_precision=None if rp is None else rp[keep],
    )


def _restricted_uniformity(
    own: ModalityPassResult, rows: np.ndarray | None, n: int
) -> float | None:
    """The uniformity estimate from the row terms of ``rows`` (all of them: the value as is)."""
    if own.uniformity_row_terms is None:
        return None
    if (
        rows is None
        or own.uniformity_rows is not None
        and np.array_equal(own.uniformity_rows, rows)
    ):
        return own.uniformity
    source = np.arange(n) if own.uniformity_rows is None else own.uniformity_rows
    terms = own.uniformity_row_terms[np.isin(source, rows)]
    value, _, _ = log_mean_exp(terms)
    return min(value, 0.0)  # at most 0, as the report's own value (engine/passes.py)


def gap_closing_whatif(
    x: ArrayLike,
    y: ArrayLike,
    groups_x: ArrayLike | Sequence[int] | None = None,
    groups_y: ArrayLike | Sequence[int] | None = None,
    *,
    relevance_x: ArrayLike | Sequence[int] | None = None,
    relevance_y: ArrayLike | Sequence[int] | None = None,
    names: tuple[str, str] = ("x", "y"),
    k: Sequence[int] = (1, 5, 10),
    shift_fractions: Sequence[float] = DEFAULT_SHIFT_FRACTIONS,
    max_queries: int | None = DEFAULT_MAX_ROWS,
    seed: int = 0,
    device: str | None = None,
    classes: ArrayLike | None = None,
    class_labels: ArrayLike | Sequence[int] | None = None,
) -> list[Scenario]:
    """Gap, retrieval recall, uniformity and (with class prompts) zero-shot accuracy before
    and after each post-hoc gap-closing fix.

    Scenarios, in this order: the original (the unit rows as they are), mean-centred
    (:func:`center_modality`) and shifted by each fraction of ``shift_fractions``
    (:func:`shift_along_gap`), each a :class:`Scenario`:

    - ``gap``: the gap of the re-normalised rows, what ``analyze`` would report for the fixed
      embeddings (after centring it is not exactly 0: re-normalising moves the means again;
      in high dimensions it is usually small);
    - ``gap_before_renormalization``: ``||mean x' - mean y'||`` of the moved rows themselves:
      0 (to rounding) after centring or a full shift, ``(1 - f) ||g||`` after a shift by f;
    - ``recall``: both cross-modal directions (positives from the groups) and both
      intra-modal ones (relevance from ``relevance_*``, else the groups; with mAP);
    - ``uniformity``: per modality (t = 2);
    - ``zeroshot``: with ``classes`` (``(C, d)`` class prompts on ``y``'s side, e.g. text)
      and ``class_labels`` (each ``x`` row's class index), the zero-shot classification of
      ``x`` against the prompts moved with ``y`` (:mod:`gapscope.metrics.zeroshot`).

    A modality with more than ``max_queries`` rows is evaluated on a seeded sample of that
    many query rows (the same rows in every scenario, ranked against all rows), and its
    uniformity estimated from them; the fixes apply to every row (the keys stay complete).
    This is what ``analyze`` reports under ``whatif`` for a pair.

    Raises:
        EmbeddingError: bad arrays or groups, or a fix that sends a row to the origin.
        GapscopeError: a non-finite shift fraction, a bad ``max_queries``.

    Example:
        >>> content = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
        >>> x, y = content + [2.0, 0.0, 0.0], content - [2.0, 0.0, 0.0]
        >>> r = gap_closing_whatif(x, y, names=("image", "text"), k=(1,), shift_fractions=(1.0,))
        >>> [round(s.gap_before_renormalization, 4) for s in r]
        [1.7889, 0.0, 0.0]
        >>> r[0].recall["image", "text"].recall, r[1].recall["image", "text"].recall
        ({1: 1.0}, {1: 1.0})
    """
    xa = check_embeddings(x, names[0], min_rows=2)
    ya = check_embeddings(y, names[1], min_rows=2)
    check_same_dim(xa, ya, names)
    gx, gy = pair_groups(xa, ya, groups_x, groups_y, names)
    labels = {}
    for m, rel, arr in ((names[0], relevance_x, xa), (names[1], relevance_y, ya)):
        codes = check_groups(rel, arr.shape[0], f"{m} relevance")
        if codes is not None:
            labels[m] = codes
    if max_queries is not None:
        max_queries = check_count(max_queries, "max_queries", minimum=2)
    data = EmbeddingSet({names[0]: xa, names[1]: ya}, {names[0]: gx, names[1]: gy}, labels)
    if (classes is None) != (class_labels is None):
        raise GapscopeError("classes and class_labels: give both or neither")
    if classes is not None:
        data.label_values[names[0]] = np.asarray(class_labels)
        data = data.with_classes(ClassPrompts(np.asarray(classes), modality=names[1]))
    ctx = AnalysisContext(data, AnalysisOptions.parse(k=k, seed=seed, device=device))
    cap = max(xa.shape[0], ya.shape[0]) if max_queries is None else int(max_queries)
    return measure_scenarios(ctx, names[0], names[1], shift_fractions, cap)
