"""The library's entry point: :func:`analyze` a store or arrays into a :class:`Report`.

``from gapscope import analyze`` gives this function. It runs the one orchestrator
(:func:`gapscope.analysis.orchestrator.run_analysis`) and wraps its outcome in the report
model (:class:`gapscope.report.model.Report`), which keeps the analysis context so that the
plots and the HTML page read the same computations as the tables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from gapscope.analysis.context import DEFAULT_K, AnalysisOptions, Progress
from gapscope.analysis.orchestrator import run_analysis
from gapscope.data.embedding_set import EmbeddingSet
from gapscope.data.store import EmbeddingStore
from gapscope.engine.distributed import process_group_share, sharing
from gapscope.report.model import Report
from gapscope.report.run import check_step, check_tags

__all__ = ["analyze"]


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
    interval: str = "bca",
    progress: Progress | None = None,
    distributed: bool = False,
    step: int | None = None,
    tags: Mapping[str, Any] | None = None,
) -> Report:
    """Analyse the embedding space of every pair of modalities in ``source``.

    Args:
        source: an :class:`~gapscope.data.store.EmbeddingStore` or its path; an
            :class:`~gapscope.data.embedding_set.EmbeddingSet`; or a mapping
            ``{"image": array, "text": array}`` of raw embeddings paired row by row: numpy
            arrays, or torch tensors (float16/32/64 or bfloat16, on any device; a GPU tensor
            is multiplied on its GPU when ``device`` is that GPU).
        metrics: families to compute (``gap, cosine, alignment, cone, uniformity, mir, mmd,
            retrieval, diagnostics, zeroshot, whatif``); default all. ``zeroshot`` needs
            class prompts (an :class:`~gapscope.data.embedding_set.EmbeddingSet` with
            ``classes``, or a store with ``classes.npy``).
        k: the K of recall@K.
        seed: seeds every random choice (``sample``, ``bootstrap`` and the sampled
            diagnostics draw at random, each from its own stream), so reruns agree.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when available) for the
            similarity blocks.
        sample: estimate the O(n^2) metrics (uniformity, retrieval) from this many random
            queries a modality, ranked against every row; the report carries standard errors
            (``*_se`` keys). The O(n d) metrics stay exact.
        block_size: rows a similarity block (default: chosen from the shapes).
        precision: ``"fp32"``, or ``"bf16"`` to round the unit rows to bfloat16 for
            uniformity and retrieval (float32 products and sums; on CUDA the bfloat16 tensor
            cores and half the memory, on a CPU the same numbers at float32 speed; scores
            within ~0.4% of each other can swap ranks: see docs/performance.md). The
            what-ifs stay float32.
        uniformity_t: ``t`` of Wang & Isola's uniformity.
        alignment_alpha: ``alpha`` of Wang & Isola's alignment.
        bootstrap: add a bootstrap interval ``"<metric>_ci": [low, high]`` beside every
            scalar metric (except MIR) from this many resamples of groups (see
            :mod:`gapscope.analysis.bootstrap`); ``None`` for none. 200 is usual.
        confidence: the intervals' nominal level (they can cover less on small sets, see
            :mod:`gapscope.analysis.bootstrap`).
        interval: ``"bca"`` (bias-corrected and accelerated, the default) or
            ``"percentile"`` bootstrap intervals.
        progress: called with a short description before each step.
        distributed: share the similarity passes among the processes of the initialised
            default ``torch.distributed`` process group (each process takes every
            world-size-th block; see :mod:`gapscope.engine.distributed`). Every process must
            call ``analyze`` with the same source and options, and every process gets the
            report a single process would give, byte for byte.
        step: the training step the embeddings were taken at (an integer >= 0), recorded in
            the report's ``run`` section and in every flat output (``step``).
        tags: ``key -> value`` labels (``{"lr": "3e-4"}``), recorded the same way
            (``tag.<key>``); see :mod:`gapscope.report.run`.

    Returns:
        The :class:`~gapscope.report.model.Report`.

    Raises:
        GapscopeError: bad input (its subclasses name the problem), e.g. NaN rows, fewer than
            two modalities, dims that differ.
    """
    step, tags = check_step(step), check_tags(tags)  # refused before the analysis, not after

    def report() -> Report:
        options = AnalysisOptions.parse(
            metrics=metrics,
            k=k,
            seed=seed,
            device=device,
            sample=sample,
            block_size=block_size,
            precision=precision,
            uniformity_t=uniformity_t,
            alignment_alpha=alignment_alpha,
            bootstrap=bootstrap,
            confidence=confidence,
            interval=interval,
        )
        analysis = run_analysis(source, options, progress=progress)
        return Report.from_analysis(analysis, step=step, tags=tags)

    if not distributed:
        return report()
    # The options too: the device they resolve is this process's own (a node without CUDA
    # fails there, and the others hear of it).
    with sharing(process_group_share()):
        return report()
