"""What one analysis returns: the report's sections and the context they came from.

Kept free of heavy imports, so that :mod:`gapscope.report.model` can turn an
:class:`Analysis` into a :class:`~gapscope.report.model.Report` without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gapscope.analysis.context import AnalysisContext

__all__ = ["Analysis"]


@dataclass
class Analysis:
    """The outcome of :func:`gapscope.analysis.orchestrator.run_analysis`.

    Attributes:
        input: what was analysed (source, fingerprint, model, per-modality shapes).
        params: the parameters that shaped the numbers.
        modalities, pairs, tuples: the report's metric sections.
        notes: plain-words remarks (skipped steps, samples, estimates).
        directions: the good direction of every leaf key that has one.
        context: the :class:`~gapscope.analysis.context.AnalysisContext` (validated rows,
            unit sums, passes), for views that draw from the same computations.
    """

    input: dict[str, Any]
    params: dict[str, Any]
    modalities: dict[str, dict[str, Any]]
    pairs: dict[str, dict[str, Any]]
    tuples: dict[str, dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    directions: dict[str, str] = field(default_factory=dict)
    context: AnalysisContext | None = field(default=None, repr=False, compare=False)
