"""The one orchestrator: validate once, build the context, run the selected families.

:func:`run_analysis` turns a store, an :class:`~gapscope.data.embedding_set.EmbeddingSet` or
arrays into an :class:`~gapscope.analysis.result.Analysis`: the report's sections (filled by
the families of :mod:`gapscope.analysis.families`, in report order), its notes, and the
:class:`~gapscope.analysis.context.AnalysisContext` the plots and the HTML page read.
:func:`gapscope.analyze` wraps it into a :class:`~gapscope.report.model.Report`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from gapscope.analysis import keys as K
from gapscope.analysis.bootstrap import IntervalPlan, attach_intervals, interval_note
from gapscope.analysis.context import AnalysisContext, AnalysisOptions, Progress
from gapscope.analysis.families import FAMILIES, RETRIEVAL, UNIFORMITY, Family, families_for
from gapscope.analysis.keys import DIRECTIONS
from gapscope.analysis.readings import read_random_weights
from gapscope.analysis.result import Analysis
from gapscope.data.embedding_set import EmbeddingSet
from gapscope.data.store import EmbeddingStore
from gapscope.errors import GapscopeError

__all__ = ["as_embedding_set", "run_analysis"]


def as_embedding_set(source: Any) -> EmbeddingSet:
    """The :class:`EmbeddingSet` of a store, its path, an EmbeddingSet, or a mapping of arrays."""
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


def run_analysis(
    source: EmbeddingStore | EmbeddingSet | str | os.PathLike[str] | Mapping[str, Any],
    options: AnalysisOptions | None = None,
    *,
    progress: Progress | None = None,
) -> Analysis:
    """Analyse every modality, pair and tuple of ``source`` with ``options`` (checked by
    :meth:`AnalysisOptions.parse`; ``None``: the defaults); returns the
    :class:`~gapscope.analysis.result.Analysis`. :func:`gapscope.analyze` documents every
    option and is the entry point most callers want.

    Raises:
        GapscopeError: bad input (its subclasses name the problem).
    """
    options = options if options is not None else AnalysisOptions.parse()
    # One labelled modality with class prompts is analysed against the prompts themselves.
    ctx = AnalysisContext(as_embedding_set(source).with_class_rows(), options, progress)
    families = families_for(options.metrics)
    random_weights = read_random_weights(ctx.data.model)
    if random_weights is not None:
        ctx.note(random_weights)
    if ctx.sampled:
        ctx.note(
            f"uniformity and retrieval are estimates from {options.sample} random queries a "
            "modality (seeded); their standard errors are the *_se values"
        )
    if options.precision == "bf16" and {UNIFORMITY.selector, RETRIEVAL.selector} & set(
        options.metrics
    ):
        ctx.note(
            "uniformity and retrieval: similarity products in bfloat16 (--precision bf16), "
            "summed in float32; scores closer than ~0.4% can swap ranks"
        )
    sections: dict[str, dict[str, Any]] = {
        K.MODALITIES_SECTION: {m: {} for m in ctx.modalities},
        K.PAIRS_SECTION: {f"{a}-{b}": {} for a, b in ctx.pairs},
        K.TUPLES_SECTION: {},
    }
    for family in families:
        _run_family(ctx, family, sections)
    if options.bootstrap is not None:
        ctx.say(f"bootstrap: {options.bootstrap} resamples")
        plan = IntervalPlan(ctx)
        statistics = {}
        for family in families:
            if family.intervals is not None:
                statistics.update(family.intervals(plan, ctx))
        attach_intervals(
            sections,
            plan,
            statistics,
            n_resamples=options.bootstrap,
            seed=options.seed,
            confidence=options.confidence,
            interval=options.interval,
        )
        sampled_uniformity = UNIFORMITY.selector in options.metrics and ctx.sampled
        ctx.note(
            interval_note(
                options.bootstrap,
                options.confidence,
                options.seed,
                sampled=sampled_uniformity,
                interval=options.interval,
            )
        )
    return Analysis(
        input=ctx.input_section(),
        params=options.params(),
        modalities=sections[K.MODALITIES_SECTION],
        pairs=sections[K.PAIRS_SECTION],
        tuples=sections[K.TUPLES_SECTION],
        notes=list(ctx.notes),
        directions=dict(DIRECTIONS),
        context=ctx,
    )


def _run_family(ctx: AnalysisContext, family: Family, sections: dict[str, dict[str, Any]]) -> None:
    if family.modality is not None:
        for m in ctx.modalities:
            ctx.say(f"{m}: {family.name}")
            sections[K.MODALITIES_SECTION][m].update(family.modality(ctx, m))
    if family.pair is not None:
        for a, b in ctx.pairs:
            if family.needs_positives and not ctx.has_positive_pairs(a, b):
                skipped = [
                    f.name
                    for f in FAMILIES
                    if f.needs_positives and f.selector in ctx.options.metrics
                ]
                ctx.note(
                    f"{a}-{b}: no {a} row shares a group with a {b} row (no positive "
                    f"pairs), so {', '.join(skipped)} were skipped"
                )
                continue
            ctx.say(f"{a}-{b}: {family.name}")
            sections[K.PAIRS_SECTION][f"{a}-{b}"].update(family.pair(ctx, a, b))
    if family.tuple is not None:
        for combo in ctx.tuples:
            ctx.say(f"{'-'.join(combo)}: {family.name}")
            entry = family.tuple(ctx, combo)
            if entry:
                sections[K.TUPLES_SECTION].setdefault("-".join(combo), {}).update(entry)
