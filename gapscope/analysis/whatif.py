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

Every metric gapscope reports re-normalises rows, so a fixed pair is measured as the unit rows
``x' / ||x'||``. :func:`gap_closing_whatif` recomputes the gap, retrieval recall (inter- and
intra-modal) and uniformity on the original and on each fixed version, with the same queries,
so the differences come from the fix alone. Both fixes move every unit row of a modality by
one vector, so they are measured with the same fused passes as ``analyze``
(:mod:`gapscope.engine.passes`) on :class:`~gapscope.engine.unit_rows.UnitRows` with an offset:
no transformed copy of a modality is made, and a store too big for memory streams.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from gapscope.errors import EmbeddingError, GapscopeError
from gapscope.engine import unit_rows as _rows
from gapscope.engine.blocks import row_blocks, unit_rows
from gapscope.engine.validation import (
    ArrayLike,
    check_embeddings,
    check_groups,
    check_same_dim,
    pair_groups,
    resolve_device,
)
from gapscope.engine.moments import sample_rows, unit_mean
from gapscope.engine.unit_rows import _MIN_NORM, UnitRows, fits_in_memory
from gapscope.engine.passes import cross_pass, modality_pass
from gapscope.metrics.retrieval import RetrievalResult, intra_modal_retrieval
from gapscope.metrics.uniformity import uniformity_sampled

__all__ = ["center_modality", "gap_closing_whatif", "scenario_name", "shift_along_gap"]


def _check_nonzero(rows: np.ndarray, name: str, why: str, start: int = 0) -> np.ndarray:
    """The rows' norms; raises on a row (numbered from ``start``) that has lost its direction."""
    norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))
    bad = np.flatnonzero(norms < _MIN_NORM)
    if bad.size:
        raise EmbeddingError(
            f"{name}: row {start + int(bad[0])} {why}, so it has no direction left"
        )
    return norms


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
    if not math.isfinite(float(fraction)):
        raise GapscopeError(f"fraction: expected a finite number, got {fraction!r}")
    xa = check_embeddings(x, names[0])
    ya = check_embeddings(y, names[1])
    check_same_dim(xa, ya, names)
    g = unit_mean(xa) - unit_mean(ya)
    half = 0.5 * float(fraction) * g
    xs = unit_rows(xa) - half
    ys = unit_rows(ya) + half
    _check_nonzero(xs, names[0], "lands on the origin after the shift")
    _check_nonzero(ys, names[1], "lands on the origin after the shift")
    return xs, ys


def scenario_name(fraction: float) -> str:
    """Key of a shift scenario in :func:`gap_closing_whatif`'s result.

    >>> scenario_name(0.5), scenario_name(1.0), scenario_name(0.25)
    ('shift_0.5', 'shift_1.0', 'shift_0.25')
    """
    return f"shift_{float(fraction)!r}"


def _recall(result: RetrievalResult, intra: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {f"R@{k}": v for k, v in result.recall.items()}
    if intra:
        entry["mAP"] = result.mean_average_precision
    return entry


def _transformed_sums(
    x: np.ndarray, offset: np.ndarray | None, name: str, why: str
) -> tuple[np.ndarray, np.ndarray]:
    """Float64 sums of ``w_i = u_i - offset`` and of ``w_i / ||w_i||`` over the rows (``u_i``
    the unit rows), a chunk at a time; raises on a row the offset leaves without direction."""
    sum_w = np.zeros(x.shape[1])
    sum_unit = np.zeros(x.shape[1])
    for start, stop in row_blocks(x.shape[0], _rows.STREAM_CHUNK_ROWS):
        w = unit_rows(x[start:stop])
        if offset is not None:
            w -= offset
        norms = _check_nonzero(w, name, why, start)
        sum_w += w.sum(axis=0)
        sum_unit += (w / norms[:, None]).sum(axis=0)
    return sum_w, sum_unit


def _measure(
    x: np.ndarray,
    y: np.ndarray,
    offsets: tuple[np.ndarray | None, np.ndarray | None],
    why: str,
    names: tuple[str, str],
    groups: tuple[np.ndarray, np.ndarray],
    relevance: tuple[np.ndarray, np.ndarray],
    queries: tuple[np.ndarray | None, np.ndarray | None],
    ks: Sequence[int],
    seed: int,
    device: torch.device,
) -> dict[str, Any]:
    a, b = names
    # The gaps in float64 from the raw rows; the O(n^2) metrics from float32 unit rows of the
    # transformed modality, normalised block by block when a copy would not fit in memory.
    (wx, gap_x), (wy, gap_y) = (
        _transformed_sums(rows, off, name, why)
        for rows, off, name in zip((x, y), offsets, names, strict=True)
    )
    # As analyze: streamed only for a sampled modality (unsampled, every block reads all).
    fits = fits_in_memory(x.shape[0] + y.shape[0], x.shape[1])
    ux, uy = (
        UnitRows(rows, device=device, in_memory=fits or q is None, offset=off, name=name, why=why)
        for rows, off, name, q in zip((x, y), offsets, names, queries, strict=True)
    )
    x_to_y, y_to_x = cross_pass(
        ux,
        uy,
        groups[0],
        groups[1],
        k=ks,
        device=device,
        query_index_x=queries[0],
        query_index_y=queries[1],
    )
    recall = {f"{a}->{b}": _recall(x_to_y, False), f"{b}->{a}": _recall(y_to_x, False)}
    uni = {}
    for name, rows, rel, q, stream in (
        (a, ux, relevance[0], queries[0], 0),
        (b, uy, relevance[1], queries[1], 1),
    ):
        if rows.shape[0] < 2:
            recall[f"{name}->{name}"] = _recall(
                intra_modal_retrieval(rows.block(0, rows.shape[0]), rel, k=ks), True
            )
            uni[name] = None
            continue
        # One X X^T pass: intra-modal retrieval, and the exact uniformity when not sampled.
        own = modality_pass(rows, rel, k=ks, uniformity=q is None, query_index=q, device=device)
        assert own.retrieval is not None
        recall[f"{name}->{name}"] = _recall(own.retrieval, True)
        uni[name] = (
            own.uniformity
            if q is None
            else uniformity_sampled(
                rows, n_queries=max(2, q.size), seed=seed + stream, device=device
            )[0]
        )
    recall = {key: recall[key] for key in (f"{a}->{b}", f"{b}->{a}", f"{a}->{a}", f"{b}->{b}")}
    gap = float(np.linalg.norm(gap_x / x.shape[0] - gap_y / y.shape[0]))
    raw_gap = float(np.linalg.norm(wx / x.shape[0] - wy / y.shape[0]))
    return {"gap": gap, "gap_before_renormalization": raw_gap, "recall": recall, "uniformity": uni}


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
    shift_fractions: Sequence[float] = (0.5, 1.0),
    max_queries: int | None = 5000,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> dict[str, dict[str, Any]]:
    """Gap, retrieval recall and uniformity before and after each post-hoc gap-closing fix.

    Scenarios: ``"original"`` (the unit rows as they are), ``"centered"`` (each modality
    mean-centred, :func:`center_modality`) and ``"shift_<f>"`` for each ``f`` in
    ``shift_fractions`` (:func:`shift_along_gap`). For each, on the transformed rows:

    - ``gap``: :func:`~gapscope.metrics.gap.modality_gap` of the re-normalised rows, what
      ``analyze`` would report for the fixed embeddings (after centring it is not exactly 0:
      re-normalising moves the means again; in high dimensions it is usually small);
    - ``gap_before_renormalization``: ``||mean x' - mean y'||`` of the transformed rows
      themselves: 0 (to rounding) after centring or a full shift, ``(1 - f) ||g||`` after a
      shift by ``f``;
    - ``recall``: ``"a->b"``, ``"b->a"`` (:func:`~gapscope.metrics.retrieval.
      cross_modal_retrieval`, positives from the groups) and ``"a->a"``, ``"b->b"``
      (:func:`~gapscope.metrics.retrieval.intra_modal_retrieval` with ``R@K`` and ``mAP``,
      relevance from ``relevance_*``, else the groups); ``None`` where no query is eligible;
    - ``uniformity``: per modality, :func:`~gapscope.metrics.uniformity.uniformity` (t = 2).

    A modality with more than ``max_queries`` rows is evaluated on a seeded sample of that
    many query rows (the same rows in every scenario, ranked against all rows), and its
    uniformity with :func:`~gapscope.metrics.uniformity.uniformity_sampled` on as many
    queries; so every scenario is measured the same way and the differences come from the fix.
    The fixes apply to every row (the keys stay complete). Each scenario holds one float32
    copy of the transformed unit rows when both modalities fit 1 GiB together, and otherwise
    normalises them block by block from ``x`` and ``y`` (memory-mapped stores stay on disk).

    Args:
        x: first modality ``(n, d)``; y: second ``(m, d)`` (numpy arrays or torch tensors).
        groups_x, groups_y: group codes defining positives (both ``None``: row i with row i).
        relevance_x, relevance_y: intra-modal relevance codes (e.g. labels); default groups.
        names: the two modalities' names, used in the direction keys.
        k: the K of recall@K.
        shift_fractions: the fractions ``f`` of the shift scenarios.
        max_queries: most query rows a modality (``None``: all).
        seed: seeds the query samples.
        device: torch device for the retrieval and uniformity blocks.

    Returns:
        ``{scenario: {"gap": float, "gap_before_renormalization": float, "recall":
        {direction: {"R@K": ..., ["mAP": ...]}}, "uniformity": {name: float}}}``, scenarios
        in the order above.

    Raises:
        EmbeddingError: bad arrays or groups, or a fix that sends a row to the origin.
        GapscopeError: a non-finite shift fraction.

    Example:
        >>> content = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
        >>> x, y = content + [2.0, 0.0, 0.0], content - [2.0, 0.0, 0.0]
        >>> r = gap_closing_whatif(x, y, names=("image", "text"), k=(1,), shift_fractions=(1.0,))
        >>> list(r)
        ['original', 'centered', 'shift_1.0']
        >>> [round(r[s]["gap_before_renormalization"], 4) for s in r]
        [1.7889, 0.0, 0.0]
        >>> r["original"]["recall"]["image->text"], r["centered"]["recall"]["image->text"]
        ({'R@1': 1.0}, {'R@1': 1.0})
    """
    xa = check_embeddings(x, names[0])
    ya = check_embeddings(y, names[1])
    check_same_dim(xa, ya, names)
    gx, gy = pair_groups(xa, ya, groups_x, groups_y, names)
    rx = check_groups(relevance_x, xa.shape[0], f"{names[0]} relevance")
    ry = check_groups(relevance_y, ya.shape[0], f"{names[1]} relevance")
    relevance = (gx if rx is None else rx, gy if ry is None else ry)
    fractions = [float(f) for f in shift_fractions]
    if any(not math.isfinite(f) for f in fractions):
        raise GapscopeError(f"shift_fractions: expected finite numbers, got {fractions!r}")
    if max_queries is not None and (isinstance(max_queries, bool) or max_queries < 2):
        raise GapscopeError(f"max_queries: expected an integer >= 2 or None, got {max_queries!r}")
    queries = (
        sample_rows(xa.shape[0], max_queries, seed, stream=10),
        sample_rows(ya.shape[0], max_queries, seed, stream=11),
    )

    dev = resolve_device(device)

    def measure(
        offsets: tuple[np.ndarray | None, np.ndarray | None], why: str = ""
    ) -> dict[str, Any]:
        return _measure(xa, ya, offsets, why, names, (gx, gy), relevance, queries, k, seed, dev)

    # Every fix moves each unit row by one vector of its modality (an offset), then the
    # metrics re-normalise: measured without a transformed copy of either modality.
    mean_x, mean_y = unit_mean(xa), unit_mean(ya)
    out = {"original": measure((None, None))}
    out["centered"] = measure((mean_x, mean_y), "equals its modality's mean direction")
    for f in fractions:
        half = 0.5 * f * (mean_x - mean_y)
        shift = (half, -half) if f != 0.0 else (None, None)
        out[scenario_name(f)] = measure(shift, "lands on the origin after the shift")
    return out
