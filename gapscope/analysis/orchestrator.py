"""Run the selected metrics over a store (or plain arrays) and build the :class:`Report`.

This is the only place that knows which metric goes where in the report; the metrics
themselves are pure functions in :mod:`gapscope.metrics`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np
import torch

from gapscope.analysis.bootstrap import (
    IntervalInputs,
    add_report_intervals,
    check_bootstrap_params,
    interval_note,
)
from gapscope.errors import EmbeddingError, GapscopeError
from gapscope.engine.validation import check_embeddings, resolve_device
from gapscope.engine.unit_rows import PRECISIONS, UnitRows, fits_in_memory
from gapscope.metrics.cone import cone_effect
from gapscope.metrics.cosine import paired_cosine
from gapscope.engine.passes import ModalityPassResult, cross_pass, modality_pass
from gapscope.metrics.gap import modality_gap
from gapscope.metrics.mir import modality_integration_rate
from gapscope.metrics.retrieval import RetrievalResult
from gapscope.metrics.uniformity import alignment, uniformity_sampled
from gapscope.report.model import Report
from gapscope.data.embedding_set import EmbeddingSet
from gapscope.data.store import EmbeddingStore

#: Metric families that ``--metrics`` selects, in report order. ``diagnostics`` are the extra
#: diagnostics of :mod:`gapscope.analysis.diagnostics` (effective rank, separability, CKA, gap direction,
#: similarity statistics, GRAM volume); ``whatif`` the gap-closing what-ifs.
METRICS = (
    "gap",
    "cosine",
    "alignment",
    "cone",
    "uniformity",
    "mir",
    "retrieval",
    "diagnostics",
    "whatif",
)
DEFAULT_K = (1, 5, 10)

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
    names = [n.strip().lower() for n in names if n.strip()]
    if not names or "all" in names:
        return list(METRICS)
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise GapscopeError(
            f"unknown metric {unknown[0]!r}: choose from {', '.join(METRICS)} (or 'all')"
        )
    return [m for m in METRICS if m in names]


def parse_k(k: str | Iterable[int]) -> list[int]:
    """Parse the K of recall@K ('1,5,10' or ints) into a sorted list of distinct positive ints.

    >>> parse_k("10,1,5")
    [1, 5, 10]
    """
    values = k.split(",") if isinstance(k, str) else list(k)
    try:
        ks = sorted({int(str(v).strip()) for v in values if str(v).strip()})
    except ValueError:
        raise GapscopeError(f"k must be positive integers like 1,5,10, got {k!r}") from None
    if not ks or ks[0] < 1:
        raise GapscopeError(f"k must be positive integers like 1,5,10, got {k!r}")
    return ks


def _as_set(source: Any) -> EmbeddingSet:
    if isinstance(source, EmbeddingSet):
        return source
    if isinstance(source, EmbeddingStore | str | os.PathLike):
        return EmbeddingSet.from_store(source)
    if isinstance(source, Mapping):
        return EmbeddingSet.from_arrays(source)
    raise GapscopeError(
        f"cannot analyse a {type(source).__name__}: pass a store, its path, or a mapping "
        "like {'image': array, 'text': array}"
    )


def _sample_index(n: int, sample: int | None, seed: int, stream: int) -> np.ndarray | None:
    # One independent, reproducible stream a modality, so adding a modality to a store does
    # not change the queries drawn for the others.
    if sample is None or sample >= n:
        return None
    rng = np.random.default_rng([seed, stream])
    return np.sort(rng.choice(n, size=sample, replace=False))


def _raw_norm_mean(raw: Any, chunk: int = 65536) -> float:
    total = 0.0
    for start in range(0, raw.shape[0], chunk):
        block = np.asarray(raw[start : start + chunk], dtype=np.float64)
        total += float(np.linalg.norm(block, axis=1).sum())
    return total / raw.shape[0]


def _recall_entry(result: RetrievalResult, relevance: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {f"R@{k}": v for k, v in result.recall.items()}
    entry["n_queries"] = result.n_queries
    entry["n_skipped"] = result.n_skipped
    if relevance is not None:
        entry["mAP"] = result.mean_average_precision
        entry["R-precision"] = result.r_precision
        entry["relevance"] = relevance
    if result.se:
        for key, se in result.se.items():
            entry[f"{key}_se"] = se
    return entry


def analyze(
    source: EmbeddingStore | EmbeddingSet | str | os.PathLike[str] | Mapping[str, Any],
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
    progress: Progress | None = None,
) -> Report:
    """Analyse the embedding space of every pair of modalities in ``source``.

    Args:
        source: an :class:`~gapscope.data.store.EmbeddingStore` or its path; an
            :class:`~gapscope.data.embedding_set.EmbeddingSet`; or a mapping ``{"image": array, "text":
            array}`` of raw embeddings paired row by row.
        metrics: families to compute (see ``METRICS``); default all.
        k: the K of recall@K.
        seed: seeds every random choice (``sample`` and ``bootstrap`` draw at random), so
            reruns agree.
        device: ``"cpu"``, ``"cuda"``, ``"mps"`` or ``"auto"`` for the similarity blocks.
        sample: estimate the O(n^2) metrics (uniformity, retrieval) from this many random
            queries a modality, ranked against every row; the report carries standard errors
            (``*_se`` keys). The O(n d) metrics stay exact.
        block_size: rows a similarity block (default: chosen from the sizes).
        precision: ``"fp32"``, or ``"bf16"`` to round the unit rows to bfloat16 for
            uniformity and retrieval (float32 products and sums; on CUDA the bfloat16 tensor
            cores and half the memory, on a CPU the same numbers at float32 speed; scores
            within ~0.4% of each other can swap ranks: see docs/performance.md). The
            what-ifs stay float32.
        uniformity_t: ``t`` of Wang & Isola's uniformity.
        alignment_alpha: ``alpha`` of Wang & Isola's alignment.
        bootstrap: add a percentile interval ``"<metric>_ci": [low, high]`` beside every
            scalar metric (except MIR) from this many resamples of groups (see
            :mod:`gapscope.analysis.bootstrap`); ``None`` for none. 200 is usual.
        confidence: the intervals' nominal coverage.
        progress: called with a short description before each step.

    Returns:
        The :class:`~gapscope.report.model.Report`.

    Raises:
        GapscopeError: bad input (its subclasses name the problem), e.g. NaN rows, fewer than
            two modalities, dims that differ.
    """
    data = _as_set(source)
    selected = parse_metrics(metrics)
    ks = parse_k(k)
    if sample is not None and sample < 2:
        raise GapscopeError(f"sample must be at least 2 queries, got {sample}")
    check_bootstrap_params(bootstrap, confidence)
    if precision not in PRECISIONS:
        raise GapscopeError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if len(data.modalities) < 2:
        raise GapscopeError(
            f"{data.source}: has only {', '.join(data.modalities) or 'no'} embeddings; "
            "need at least two modalities to compare"
        )
    dev = resolve_device(device)
    say = progress or (lambda _msg: None)

    say("checking embeddings")
    raw: dict[str, Any] = {}
    for m in data.modalities:
        raw[m] = check_embeddings(data.embeddings[m], m, min_rows=2)
    dims = {m: a.shape[1] for m, a in raw.items()}
    if len(set(dims.values())) > 1:
        listed = ", ".join(f"{m} {d}" for m, d in dims.items())
        raise EmbeddingError(
            f"embedding dims differ ({listed}): modalities must share one embedding space"
        )

    input_section = {
        "source": data.source,
        "fingerprint": data.fingerprint(),
        "model": data.model,
        "modalities": {
            m: {
                "n": int(raw[m].shape[0]),
                "dim": int(raw[m].shape[1]),
                "dtype": raw[m].dtype.name,
                "raw_norm_mean": _raw_norm_mean(raw[m]),
                "normalized_by_encoder": data.normalized.get(m),
                "has_labels": m in data.labels,
            }
            for m in data.modalities
        },
    }
    params = {
        "metrics": selected,
        "k": ks,
        "seed": seed,
        "sample": sample,
        "uniformity_t": uniformity_t,
        "alignment_alpha": alignment_alpha,
        "device": dev.type,
        "precision": precision,
        "bootstrap": bootstrap,
    }
    if bootstrap is not None:
        params["confidence"] = confidence
    # Per-row and per-query terms that the bootstrap resamples, collected on the way.
    terms = IntervalInputs(raw=raw, groups=data.groups, alignment_alpha=alignment_alpha)
    report = Report(input=input_section, params=params)
    notes = report.notes

    streams = {m: i for i, m in enumerate(("image", "text", "audio"))}
    queries = {m: _sample_index(raw[m].shape[0], sample, seed, streams[m]) for m in data.modalities}
    if sample is not None and any(q is not None for q in queries.values()):
        notes.append(
            f"uniformity and retrieval are estimates from {sample} random queries a modality "
            "(seeded); their standard errors are the *_se values"
        )
    # The similarity products read float32 unit rows. One copy of them is kept in memory
    # unless a sampled modality's rows would not fit the budget together; then each pass
    # normalises its blocks of keys again from the (memory-mapped) rows (gapscope.engine.unit_rows).
    fits = fits_in_memory(sum(a.shape[0] for a in raw.values()), next(iter(dims.values())))
    unit = {
        m: UnitRows(
            raw[m],
            device=dev,
            in_memory=fits or queries[m] is None,
            name=m,
            dtype=PRECISIONS[precision],
        )
        for m in data.modalities
    }
    if precision == "bf16" and ("uniformity" in selected or "retrieval" in selected):
        notes.append(
            "uniformity and retrieval: similarity products in bfloat16 (--precision bf16), "
            "summed in float32; scores closer than ~0.4% can swap ranks"
        )

    # ---------------------------------------------------------------- O(n^2), one X X^T each
    # One pass over each modality's similarity blocks gives its exact uniformity (and row
    # terms) and its intra-modal retrieval; the pairs below reuse it (gapscope.engine.passes).
    passes: dict[str, ModalityPassResult] = {}
    for m in data.modalities:
        exact_uni = "uniformity" in selected and queries[m] is None
        if exact_uni or "retrieval" in selected:
            say(f"{m}: similarity blocks ({m} uniformity, {m}->{m} retrieval)")
            codes = data.labels[m] if m in data.labels else data.groups[m]
            passes[m] = modality_pass(
                unit[m],
                codes if "retrieval" in selected else None,
                k=ks,
                t=uniformity_t,
                uniformity=exact_uni,
                row_terms=bootstrap is not None,
                block_size=block_size,
                device=dev,
                query_index=queries[m],
                per_query=bootstrap is not None,
            )

    # ---------------------------------------------------------------- per modality
    uni: dict[str, tuple[float, float | None]] = {}
    for m in data.modalities:
        entry: dict[str, Any] = {}
        if "cone" in selected:
            say(f"{m}: cone effect")
            entry["cone"] = cone_effect(raw[m])
        if "uniformity" in selected:
            if queries[m] is None:
                uni[m] = (passes[m].uniformity, None)
                if bootstrap is not None:
                    terms.uniformity_rows[m] = passes[m].uniformity_row_terms
            else:
                say(f"{m}: uniformity")
                uni[m] = uniformity_sampled(
                    unit[m],
                    uniformity_t,
                    n_queries=sample,
                    seed=seed + streams[m],
                    block_size=block_size,
                    device=dev,
                )
            entry["uniformity"] = uni[m][0]
            if uni[m][1] is not None:
                entry["uniformity_se"] = uni[m][1]
        report.modalities[m] = entry

    # ---------------------------------------------------------------- intra-modal retrieval
    intra: dict[str, dict[str, Any]] = {}
    if "retrieval" in selected:
        for m in data.modalities:
            relevance = "labels" if m in data.labels else "groups"
            result = passes[m].retrieval
            terms.retrieval[f"{m}->{m}"] = result
            intra[m] = _recall_entry(result, relevance)
            if result.n_queries == 0:
                notes.append(
                    f"{m}->{m} retrieval: no {m} row has another with the same "
                    f"{'label' if relevance == 'labels' else 'group'}; give labels to measure it"
                )
            elif result.n_skipped:
                notes.append(
                    f"{m}->{m} retrieval: {result.n_skipped} queries with no relevant row "
                    "were left out"
                )

    # ---------------------------------------------------------------- per pair
    for a, b in combinations(data.modalities, 2):
        pair = f"{a}-{b}"
        entry = {}
        ga, gb = data.groups[a], data.groups[b]
        if "gap" in selected:
            say(f"{pair}: modality gap")
            g = modality_gap(raw[a], raw[b])
            entry["gap"] = g.gap
            entry["centroid_cosine"] = g.centroid_cosine
            entry["centroid_norms"] = {a: g.centroid_norm_x, b: g.centroid_norm_y}
            entry["gap_concentration"] = {"top1": g.top1_share, "top10": g.top10_share}
        if "cosine" in selected:
            say(f"{pair}: paired cosine")
            c = paired_cosine(raw[a], raw[b], ga, gb)
            entry["paired_cosine"] = c.paired
            entry["unpaired_cosine"] = c.unpaired
            entry["n_pairs"] = c.n_pairs
        if "alignment" in selected:
            say(f"{pair}: alignment")
            entry["alignment"] = alignment(raw[a], raw[b], ga, gb, alpha=alignment_alpha)
        if "uniformity" in selected:
            entry["uniformity"] = (uni[a][0] + uni[b][0]) / 2
            if uni[a][1] is not None or uni[b][1] is not None:
                entry["uniformity_se"] = math.hypot(uni[a][1] or 0.0, uni[b][1] or 0.0) / 2
        if "mir" in selected:
            say(f"{pair}: MIR")
            entry.update(_mir_entry(a, b, raw, notes))
        if "retrieval" in selected:
            recall = {}
            say(f"{a}->{b}, {b}->{a}: retrieval")
            # One X Y^T pass serves both directions.
            both = cross_pass(
                unit[a],
                unit[b],
                ga,
                gb,
                k=ks,
                block_size=block_size,
                device=dev,
                query_index_x=queries[a],
                query_index_y=queries[b],
                per_query=bootstrap is not None,
            )
            for (q, key), result in zip(((a, b), (b, a)), both, strict=True):
                terms.retrieval[f"{q}->{key}"] = result
                recall[f"{q}->{key}"] = _recall_entry(result)
                if result.n_skipped:
                    notes.append(
                        f"{q}->{key} retrieval: {result.n_skipped} {q} rows have no {key} "
                        "partner and were left out"
                    )
            recall[f"{a}->{a}"] = intra[a]
            recall[f"{b}->{b}"] = intra[b]
            entry["recall"] = recall
        report.pairs[pair] = entry
    if "diagnostics" in selected or "whatif" in selected:
        _merge_diagnostics(
            report, data, selected, seed=seed, k=ks, device=dev, progress=say, sample=sample
        )
    if bootstrap is not None:
        say(f"bootstrap: {bootstrap} resamples")
        add_report_intervals(
            report.modalities,
            report.pairs,
            terms,
            n_resamples=bootstrap,
            seed=seed,
            confidence=confidence,
        )
        sampled = "uniformity" in selected and any(q is not None for q in queries.values())
        notes.append(interval_note(bootstrap, confidence, seed, sampled=sampled))
    # The same note can arise from two pairs (a modality's intra-modal retrieval); keep one.
    report.notes[:] = list(dict.fromkeys(notes))
    return report


def _merge_diagnostics(
    report: Report,
    data: EmbeddingSet,
    selected: Sequence[str],
    *,
    seed: int,
    k: Sequence[int],
    device: torch.device,
    progress: Progress,
    sample: int | None,
) -> None:
    # Additive keys beside the core metrics: the same modality and pair sections, plus
    # "tuples" for three or more modalities.
    from gapscope.analysis.diagnostics import DEFAULT_MAX_ROWS, diagnostics

    # --sample bounds the what-ifs' queries (and the separability rows) too: at a million
    # rows their 5,000 queries a modality and scenario would dominate the run.
    max_rows = DEFAULT_MAX_ROWS if sample is None else max(2, min(sample, DEFAULT_MAX_ROWS))
    diag = diagnostics(
        data,
        seed=seed,
        k=k,
        device=device,
        whatif="whatif" in selected,
        measures="diagnostics" in selected,
        progress=progress,
        max_rows=max_rows,
    )
    for m, values in diag["modalities"].items():
        report.modalities.setdefault(m, {}).update(values)
    for pair, values in diag["pairs"].items():
        report.pairs.setdefault(pair, {}).update(values)
    report.tuples.update(diag["tuples"])
    report.notes.extend(diag["notes"])


def _mir_entry(a: str, b: str, raw: Mapping[str, Any], notes: list[str]) -> dict[str, Any]:
    # MIR scales by the text modality's norms ("text-centric"); with no text in the pair, by
    # the second modality's.
    x_name, y_name = (b, a) if a == "text" else (a, b)
    r = modality_integration_rate(raw[x_name], raw[y_name])
    skipped = {x_name: r.outlier_step_skipped_x, y_name: r.outlier_step_skipped_y}
    for name, was_skipped in skipped.items():
        if was_skipped:
            notes.append(
                f"MIR: {name} rows all have the same norm (an already-normalised encoder), "
                "so the outlier step was skipped for it"
            )
    if not r.full_rank:
        notes.append(
            f"MIR ({a}-{b}): a covariance is singular (fewer rows than dimensions, or "
            "collapsed directions); FD uses an exact square root that stays finite"
        )
    return {
        "mir": r.mir,
        "mir_detail": {
            "fd": r.fd,
            "scale": r.scale,
            "scale_from": y_name,
            "outliers": {x_name: r.outliers_x, y_name: r.outliers_y},
            "outlier_step_skipped": skipped,
            "full_rank": r.full_rank,
        },
    }
