"""Run the extra diagnostics and the gap-closing what-ifs on an :class:`EmbeddingSet`.

:func:`diagnostics` returns one nested, JSON-ready mapping, shaped like the Report's sections so
its ``modalities``, ``pairs`` and ``tuples`` parts merge into a Report as additional keys:

```
{
  "params": {...},
  "modalities": {"image": {"effective_rank": ..., "effective_rank_ratio": ...,
                           "variance_top1": ..., "variance_top10": ...}, ...},
  "pairs": {"image-text": {
      "separability": ..., "separability_se": ..., "separability_rows": ...,
      "cka": ...,
      "gap_direction": {"pc_top1_share": ..., "pc_top10_share": ..., "pc_top1_chance": ...,
                        "pc_top10_chance": ..., "coord_top1_share": ...,
                        "coord_top10_share": ..., "axis_cosine_image": ...,
                        "axis_cosine_text": ...},
      "similarity": {"positive_mean": ..., "positive_q05": ..., ..., "positive_q95": ...,
                     "negative_mean": ..., "negative_q05": ..., ..., "overlap": ...,
                     "negatives_above_median_positive": ..., "auc": ...,
                     "n_positive": ..., "n_negative": ..., "negatives_sampled": ...},
      "whatif": {"original": {"gap": ..., "gap_before_renormalization": ...,
                              "recall": {"image->text": {"R@1": ...}, ...,
                                         "image->image": {"R@1": ..., "mAP": ...}, ...},
                              "uniformity": {"image": ..., "text": ...}},
                 "centered": {...}, "shift_0.5": {...}, "shift_1.0": {...}}}},
  "tuples": {"image-text-audio": {"gram_volume_mean": ..., "gram_volume_median": ...,
                                  "gram_volume_std": ..., "gram_volume_se": ...,
                                  "n_tuples": ..., "n_evaluated": ...}},
  "notes": ["..."]
}
```

:data:`DIRECTIONS` gives the good direction of each leaf key that has one; the others describe
rather than judge. :func:`pair_matrix` arranges any per-pair value as a modality x modality
matrix, for three or more modalities.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np
import torch

from gapscope.errors import EmbeddingError, GapscopeError
from gapscope.engine.validation import check_embeddings, resolve_device
from gapscope.metrics.cka import linear_cka
from gapscope.metrics.effective_rank import dimensional_collapse
from gapscope.metrics.gap_direction import gap_direction
from gapscope.metrics.gram_volume import gram_volume
from gapscope.metrics.separability import modality_separability
from gapscope.metrics.similarity_stats import DEFAULT_QUANTILES, similarity_stats
from gapscope.report.model import DIAGNOSTIC_DIRECTIONS
from gapscope.data.embedding_set import EmbeddingSet
from gapscope.analysis.whatif import gap_closing_whatif

__all__ = ["DIRECTIONS", "diagnostics", "pair_matrix"]

#: Good direction of each diagnostics leaf key ("higher" or "lower"); keys not listed are
#: descriptive. The what-if leaves reuse the Report's names (gap, R@K, mAP, uniformity).
DIRECTIONS: dict[str, str] = DIAGNOSTIC_DIRECTIONS

Progress = Callable[[str], None]


#: Rows a modality for separability, and query rows a modality for the what-ifs.
DEFAULT_MAX_ROWS = 5000


def _quantile_key(level: float) -> str:
    """``0.05 -> "q05"``, ``0.5 -> "q50"``, ``0.975 -> "q97.5"``."""
    pct = 100.0 * level
    return f"q{int(round(pct)):02d}" if abs(pct - round(pct)) < 1e-9 else f"q{pct:g}"


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def diagnostics(
    data: EmbeddingSet,
    *,
    seed: int = 0,
    k: Sequence[int] = (1, 5, 10),
    shift_fractions: Sequence[float] = (0.5, 1.0),
    device: str | torch.device | None = None,
    max_rows: int | None = DEFAULT_MAX_ROWS,
    max_pairs: int | None = 50_000,
    max_negatives: int = 200_000,
    max_tuples: int | None = 100_000,
    top: Sequence[int] = (1, 10),
    folds: int = 5,
    whatif: bool = True,
    measures: bool = True,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Every extra diagnostic for every modality, pair and tuple of ``data``.

    Per modality: :func:`~gapscope.metrics.effective_rank.dimensional_collapse` (centred).
    Per pair (``"<a>-<b>"`` in the order image, text, audio):
    :func:`~gapscope.metrics.separability.modality_separability`,
    :func:`~gapscope.metrics.cka.linear_cka` over the positive pairs,
    :func:`~gapscope.metrics.gap_direction.gap_direction`,
    :func:`~gapscope.metrics.similarity_stats.similarity_stats` and
    :func:`~gapscope.analysis.whatif.gap_closing_whatif`. Per combination of three or more modalities:
    :func:`~gapscope.metrics.gram_volume.gram_volume` over the tuples their groups form.

    Sampling, all seeded by ``seed`` so that reruns are identical: separability uses at most
    ``max_rows`` rows a modality; the what-ifs rank at most ``max_rows`` queries a modality;
    CKA uses at most ``max_pairs`` positive pairs; the negative cosines at most
    ``max_negatives`` pairs; the GRAM volume at most ``max_tuples`` tuples. Effective rank and
    the gap direction are exact.

    Args:
        data: the embeddings (see :class:`~gapscope.data.embedding_set.EmbeddingSet`).
        seed: seeds every sample.
        k: the K of recall@K in the what-ifs.
        shift_fractions: the gap fractions of the shift what-ifs.
        device: torch device for the what-ifs' similarity blocks (``None``: CUDA if present).
        max_rows, max_pairs, max_negatives, max_tuples: sample caps (``None``: no cap, except
            ``max_negatives``).
        top: the K of the top-K variance and gap shares.
        folds: cross-validation folds of the separability probe.
        whatif: also run the what-ifs (the costliest part: O(n^2 d) a scenario).
        measures: compute the diagnostics themselves; ``False`` with ``whatif`` runs
            only the what-ifs.
        progress: called with a short description before each step.

    Returns:
        The nested mapping described in the module docstring: floats (``None`` where a value
        is undefined, e.g. intra-modal recall without labels), ints for counts, a bool for
        ``negatives_sampled``, and a ``notes`` list of plain-words remarks.

    Raises:
        GapscopeError: fewer than two modalities, dims that differ, bad rows.
    """
    if not isinstance(data, EmbeddingSet):
        raise GapscopeError(f"diagnostics takes an EmbeddingSet, got {type(data).__name__}")
    names = data.modalities
    if len(names) < 2:
        raise GapscopeError("need at least two modalities to compare")
    say = progress or (lambda _msg: None)
    dev = resolve_device(device)
    raw = {m: check_embeddings(data.embeddings[m], m, min_rows=2) for m in names}
    dims = {m: a.shape[1] for m, a in raw.items()}
    if len(set(dims.values())) > 1:
        listed = ", ".join(f"{m} {d}" for m, d in dims.items())
        raise EmbeddingError(f"embedding dims differ ({listed}): modalities must share a space")
    tops = tuple(int(t) for t in top)
    notes: list[str] = []

    out: dict[str, Any] = {
        "params": {
            "seed": seed,
            "k": [int(v) for v in k],
            "shift_fractions": [float(f) for f in shift_fractions],
            "max_rows": max_rows,
            "max_pairs": max_pairs,
            "max_negatives": max_negatives,
            "max_tuples": max_tuples,
            "top": list(tops),
            "folds": folds,
            "quantiles": list(DEFAULT_QUANTILES),
        },
        "modalities": {},
        "pairs": {},
        "tuples": {},
        "notes": notes,
    }

    if measures:
        for m in names:
            say(f"{m}: effective rank")
            c = dimensional_collapse(raw[m], tops)
            entry: dict[str, Any] = {
                "effective_rank": c.effective_rank,
                "effective_rank_ratio": c.effective_rank / raw[m].shape[1],
            }
            for t in tops:
                entry[f"variance_top{t}"] = c.variance_share[t]
            out["modalities"][m] = entry

    for a, b in combinations(names, 2):
        pair = f"{a}-{b}"
        x, y = raw[a], raw[b]
        gx, gy = data.groups[a], data.groups[b]
        entry = {}

        if measures:
            say(f"{pair}: separability")
            folds_used = min(folds, x.shape[0], y.shape[0])
            if folds_used >= 2:
                sep = modality_separability(x, y, folds=folds_used, max_rows=max_rows, seed=seed)
                entry["separability"] = sep.accuracy
                entry["separability_se"] = sep.accuracy_se
                entry["separability_rows"] = sep.n_per_modality
                if sep.n_per_modality < min(x.shape[0], y.shape[0]) or x.shape[0] != y.shape[0]:
                    notes.append(
                        f"{pair} separability: a logistic regression on {sep.n_per_modality} rows "
                        f"of each modality (balanced, seeded), {sep.folds}-fold cross-validated"
                    )

        if not np.intersect1d(gx, gy).size:
            notes.append(
                f"{pair}: no {a} row shares a group with a {b} row (no positive "
                "pairs), so CKA, similarity statistics and what-ifs were skipped"
            )
            if measures:
                entry["cka"] = None
                entry["gap_direction"] = _gap_direction_entry(x, y, a, b, tops)
            out["pairs"][pair] = entry
            continue

        if measures:
            say(f"{pair}: CKA")
            try:
                ck = linear_cka(x, y, gx, gy, max_pairs=max_pairs, seed=seed)
                entry["cka"] = _finite(ck.cka)
                if ck.n_used < ck.n_pairs:
                    notes.append(
                        f"{pair} CKA: from {ck.n_used} of {ck.n_pairs} positive pairs "
                        "(seeded sample)"
                    )
            except EmbeddingError as exc:
                entry["cka"] = None
                notes.append(f"{pair} CKA: not computed ({exc})")

            say(f"{pair}: gap direction")
            entry["gap_direction"] = _gap_direction_entry(x, y, a, b, tops)

            say(f"{pair}: similarity statistics")
            try:
                st = similarity_stats(x, y, gx, gy, max_negatives=max_negatives, seed=seed)
                sim: dict[str, Any] = {"positive_mean": st.positive_mean}
                sim.update(
                    {f"positive_{_quantile_key(q)}": v for q, v in st.positive_quantiles.items()}
                )
                sim["negative_mean"] = st.negative_mean
                if st.negative_quantiles is not None:
                    sim.update(
                        {
                            f"negative_{_quantile_key(q)}": v
                            for q, v in st.negative_quantiles.items()
                        }
                    )
                sim["overlap"] = st.overlap
                sim["negatives_above_median_positive"] = st.negatives_above_median_positive
                sim["auc"] = st.auc
                sim["n_positive"] = st.n_positive
                sim["n_negative"] = st.n_negative
                sim["negatives_sampled"] = st.negatives_sampled
                entry["similarity"] = sim
                if st.negatives_sampled:
                    notes.append(
                        f"{pair} similarity: negative-pair statistics from {st.n_negative} of "
                        f"{st.n_negative_total} negative pairs (seeded uniform sample)"
                    )
            except EmbeddingError as exc:
                notes.append(f"{pair} similarity: not computed ({exc})")

        if whatif:
            say(f"{pair}: gap-closing what-ifs")
            try:
                entry["whatif"] = gap_closing_whatif(
                    x,
                    y,
                    gx,
                    gy,
                    relevance_x=data.labels.get(a),
                    relevance_y=data.labels.get(b),
                    names=(a, b),
                    k=k,
                    shift_fractions=shift_fractions,
                    max_queries=max_rows,
                    seed=seed,
                    device=dev,
                )
            except EmbeddingError as exc:
                notes.append(f"{pair} what-ifs: not computed ({exc})")
        out["pairs"][pair] = entry

    if whatif and any(m not in data.labels for m in names):
        notes.append("what-ifs: intra-modal recall uses groups where a modality has no labels")

    if measures:
        for size in range(3, len(names) + 1):
            for combo in combinations(names, size):
                key = "-".join(combo)
                say(f"{key}: GRAM volume")
                try:
                    gv = gram_volume(
                        [raw[m] for m in combo],
                        [data.groups[m] for m in combo],
                        max_tuples=max_tuples,
                        seed=seed,
                    )
                except EmbeddingError as exc:
                    notes.append(f"{key} GRAM volume: not computed ({exc})")
                    continue
                out["tuples"][key] = {
                    "gram_volume_mean": gv.mean,
                    "gram_volume_median": gv.median,
                    "gram_volume_std": gv.std,
                    "gram_volume_se": gv.se,
                    "n_tuples": gv.n_tuples,
                    "n_evaluated": gv.n_evaluated,
                }
                if gv.n_evaluated < gv.n_tuples:
                    notes.append(
                        f"{key} GRAM volume: from {gv.n_evaluated} of {gv.n_tuples} "
                        "tuples (seeded sample)"
                    )
    return out


def _gap_direction_entry(x: Any, y: Any, a: str, b: str, tops: Sequence[int]) -> dict[str, Any]:
    gd = gap_direction(x, y, tops)
    direction: dict[str, Any] = {}
    for t in tops:
        direction[f"pc_top{t}_share"] = gd.pc_share[t]
        direction[f"pc_top{t}_chance"] = gd.pc_share_chance[t]
    for t in tops:
        direction[f"coord_top{t}_share"] = gd.coordinate_share[t]
    direction[f"axis_cosine_{a}"] = _finite(gd.axis_cosine_x)
    direction[f"axis_cosine_{b}"] = _finite(gd.axis_cosine_y)
    return direction


def _lookup(entry: Mapping[str, Any], path: str | Sequence[str]) -> Any:
    keys = path.split("/") if isinstance(path, str) else list(path)
    value: Any = entry
    for key in keys:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def pair_matrix(
    pairs: Mapping[str, Mapping[str, Any]],
    metric: str | Sequence[str],
    modalities: Sequence[str],
    *,
    diagonal: float | None = None,
) -> list[list[float | None]]:
    """A per-pair value as a symmetric modality x modality matrix (for display).

    ``pairs`` is a Report's or :func:`diagnostics`' ``pairs`` section; ``metric`` a key or a
    ``/``-separated path inside each pair entry (e.g. ``"gap"`` or ``"similarity/auc"``).
    Cell ``[i][j]`` holds the value of pair ``"<m_i>-<m_j>"`` or ``"<m_j>-<m_i>"``; the diagonal
    holds ``diagonal``; a missing pair or value is ``None``.

    Example:
        >>> pairs = {"image-text": {"gap": 0.8}, "image-audio": {"gap": 0.5},
        ...          "text-audio": {"gap": 0.3}}
        >>> pair_matrix(pairs, "gap", ["image", "text", "audio"])
        [[None, 0.8, 0.5], [0.8, None, 0.3], [0.5, 0.3, None]]
    """
    matrix: list[list[float | None]] = []
    for i, a in enumerate(modalities):
        row: list[float | None] = []
        for j, b in enumerate(modalities):
            if i == j:
                row.append(diagonal)
                continue
            entry = pairs.get(f"{a}-{b}", pairs.get(f"{b}-{a}"))
            value = None if entry is None else _lookup(entry, metric)
            is_number = isinstance(value, int | float) and not isinstance(value, bool)
            row.append(float(value) if is_number else None)
        matrix.append(row)
    return matrix
