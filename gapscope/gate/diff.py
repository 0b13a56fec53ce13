"""Compare two reports side by side: each metric's change and whether it is significant.

``diff`` describes and never gates (that is ``gapscope check``): it lists every metric with a
good direction (with ``all_keys``, every number of the flat report), the values in A and B,
the change from A to B, whether the change is better or worse by the metric's direction, and,
when both reports carry bootstrap intervals (``--bootstrap``), whether the change is
*significant*: the two intervals do not overlap. (Non-overlap of two 95% intervals is a
conservative test: it corresponds to a level well below 5%.) A metric present on one side only
is listed with the other side empty. Reports that give one metric opposite directions are
refused (which change is better would be unknown); intervals at two confidence levels are
compared with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gapscope._version import __version__
from gapscope.analysis import keys as K
from gapscope.analysis.keys import direction_of, is_detail_key, metric_leaf
from gapscope.gate.check import METRICS_FIELD
from gapscope.gate.reports import comparability_warnings, merged_directions, report_identity
from gapscope.report.model import (
    Report,
    flatten_report,
    interval_of,
    json_ready,
    json_text,
)

__all__ = ["DIFF_SCHEMA", "DiffResult", "MetricDiff", "diff_reports"]

DIFF_SCHEMA = "gapscope.diff/1"


@dataclass
class MetricDiff:
    """One metric in both reports.

    Attributes:
        metric: the flat report key.
        direction: ``"lower"``/``"higher"`` is better, or None.
        a, b: the values (None: missing or undefined on that side).
        change: ``b - a``; relative_change: ``change / |a|``.
        assessment: B compared with A: ``"better"``, ``"worse"``, ``"unchanged"``, or None
            (no direction, or a side missing).
        a_ci, b_ci: bootstrap intervals when present.
        significant: whether the intervals do not overlap (None without both intervals).
    """

    metric: str
    direction: str | None
    a: float | None
    b: float | None
    change: float | None = None
    relative_change: float | None = None
    assessment: str | None = None
    a_ci: tuple[float, float] | None = None
    b_ci: tuple[float, float] | None = None
    significant: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "a": self.a,
            "b": self.b,
            "change": self.change,
            "relative_change": self.relative_change,
            "assessment": self.assessment,
            "a_ci": None if self.a_ci is None else list(self.a_ci),
            "b_ci": None if self.b_ci is None else list(self.b_ci),
            "significant": self.significant,
        }


@dataclass
class DiffResult:
    """Every metric of two reports; ``to_json()`` is schema ``gapscope.diff/1``."""

    metrics: dict[str, MetricDiff]
    a: dict[str, Any]
    b: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return json_ready(
            {
                K.SCHEMA_FIELD: DIFF_SCHEMA,
                K.VERSION_FIELD: __version__,
                "a": self.a,
                "b": self.b,
                METRICS_FIELD: {key: m.to_dict() for key, m in self.metrics.items()},
                "warnings": self.warnings,
            }
        )

    def to_json(self) -> str:
        """Deterministic JSON text (sorted keys, rounded floats)."""
        return json_text(self.to_dict())


def diff_reports(a: Report, b: Report, *, all_keys: bool = False) -> DiffResult:
    """Side-by-side comparison of report ``a`` (before) and report ``b`` (after).

    Args:
        a: the earlier report (e.g. the baseline).
        b: the later report.
        all_keys: list every number of the flat reports, not just metrics with a direction
            (interval bounds and standard errors stay beside their metric either way).

    Returns:
        A :class:`DiffResult` with one :class:`MetricDiff` a key, sorted by key.

    Raises:
        GapscopeError: the two reports' ``directions`` give one metric opposite directions.

    Example:
        >>> before = Report(input={}, params={}, pairs={"image-text": {"gap": 0.8}})
        >>> after = Report(input={}, params={}, pairs={"image-text": {"gap": 0.7}})
        >>> d = diff_reports(before, after).metrics["image-text/gap"]
        >>> round(d.change, 4), d.assessment, d.significant
        (-0.1, 'better', None)
    """
    data_a, data_b = a.to_dict(), b.to_dict()
    directions = merged_directions(a.directions, b.directions, ("report A", "report B"))
    flat_a = flatten_report(data_a, keep_null=True)
    flat_b = flatten_report(data_b, keep_null=True)
    keys = sorted(
        k
        for k in set(flat_a) | set(flat_b)
        if not is_detail_key(k)
        and (all_keys or direction_of(metric_leaf(k), directions) is not None)
    )
    metrics = {}
    for key in keys:
        entry = MetricDiff(
            key,
            direction_of(metric_leaf(key), directions),
            flat_a.get(key),
            flat_b.get(key),
            a_ci=interval_of(flat_a, key),
            b_ci=interval_of(flat_b, key),
        )
        if entry.a is not None and entry.b is not None:
            entry.change = float(entry.b) - float(entry.a)
            entry.relative_change = entry.change / abs(entry.a) if entry.a != 0 else None
            if entry.direction is not None:
                sign = 1.0 if entry.direction == "higher" else -1.0
                better = sign * entry.change
                entry.assessment = (
                    "unchanged" if better == 0 else "better" if better > 0 else "worse"
                )
        if entry.a_ci is not None and entry.b_ci is not None:
            entry.significant = entry.b_ci[0] > entry.a_ci[1] or entry.b_ci[1] < entry.a_ci[0]
        metrics[key] = entry
    return DiffResult(
        metrics,
        report_identity(data_a),
        report_identity(data_b),
        comparability_warnings(data_a, data_b, ("in report A", "in report B")),
    )
