"""The metrics of many reports over training: each metric against the step, regressions
against the first report marked (``gapscope trend``).

The reports are put in the order of their recorded steps (``analyze --step``); reports with
equal steps keep the order they were given in. When no report records a step they keep the
order they were given in, and the axis is their position (1, 2, ...); some reports with a
step and some without are refused, as ``gapscope log`` refuses them.

Every later report is compared with the first by :func:`~gapscope.gate.check.check_report`,
the comparison of ``gapscope check`` with the first report as the baseline: without
tolerances the default gate (:data:`~gapscope.gate.rules.DEFAULT_GATE`: the gap, the
cosines, alignment, uniformity and retrieval by their bootstrap intervals when both reports
have them, else by the family's tolerance; every other metric tracked, never regressing),
with ``tolerances`` the configured gate, with ``significant`` its interval rule, and
``thresholds`` as absolute gates on every later report; ``gapscope trend`` takes these
settings from the config file ``gapscope check`` reads (:mod:`gapscope.gate.config`), so the
two judge alike. A point is *regressed* when that comparison's verdict is ``regressed``, and
*failed* when it fails a threshold. A trend describes and never fails: there is no exit code
1 (gate with ``check``).

The metrics are taken from every report, so a metric that the first report's version of
gapscope did not know is shown from the report where it appears, its points ``skipped`` (not
compared: the first report has nothing to compare them with). A metric undefined (``null``)
in every report is left out, and named in :attr:`TrendResult.undefined`.

This module loads no heavy dependency; :mod:`gapscope.gate.trend_outputs` renders the result
as a terminal table and as one HTML page.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from gapscope._version import __version__
from gapscope.analysis import keys as K
from gapscope.analysis.keys import direction_of, metric_leaf
from gapscope.errors import GapscopeError
from gapscope.gate.check import METRICS_FIELD, CheckResult, check_report, gated_keys
from gapscope.gate.reports import merged_directions, report_identity
from gapscope.gate.rules import MetricPattern, Threshold, Tolerance
from gapscope.report.model import Report, flatten_report, interval_of, json_ready, json_text

__all__ = [
    "AXIS_POSITION",
    "AXIS_STEP",
    "TREND_SCHEMA",
    "TrendMetric",
    "TrendPoint",
    "TrendResult",
    "order_reports",
    "trend_reports",
    "trend_schema",
]

TREND_SCHEMA = "gapscope.trend/1"
#: What the x axis of a trend is: the reports' recorded steps, or their positions.
AXIS_STEP = "step"
AXIS_POSITION = "position"
#: The verdict of the first report's points: what the others are compared with.
VERDICT_FIRST = "first"
#: The verdict of a point ``check`` did not compare: the metric is missing from its report
#: or from the first (made by a version of gapscope that did not know it).
VERDICT_SKIPPED = "skipped"
#: The verdicts a trend marks: ``check`` fails them (against the first report, or a threshold).
MARKED_VERDICTS = ("regressed", "failed")
_NOT_IN_REPORT = "{} is not in this report: its version of gapscope did not know it"


@dataclass
class TrendPoint:
    """One metric in one report.

    Attributes:
        value: the metric (None: undefined in this report, or missing from it).
        ci: its bootstrap interval, when the report has one.
        verdict: ``"first"`` for the first report; else the verdict of ``check`` against it
            (``regressed``, ``failed``, ``improved``, ``pass``, ``skipped``, ``tracked``);
            ``skipped`` too where the metric is missing from the report or the first one.
        rule: how ``check`` judged it (``significant``, ``default``, ``config``,
            ``threshold``, ``tracked``); None for the first report and a point not compared.
        message: ``check``'s finding in words (empty for a plain pass).
    """

    value: float | None
    ci: tuple[float, float] | None = None
    verdict: str = VERDICT_FIRST
    rule: str | None = None
    message: str = ""

    @property
    def regressed(self) -> bool:
        """Whether ``check`` fails this point: it regressed against the first report, or it
        fails a threshold of the settings (marked alike in every output)."""
        return self.verdict in MARKED_VERDICTS

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "ci": None if self.ci is None else list(self.ci),
            "verdict": self.verdict,
            "rule": self.rule,
            "message": self.message,
        }


@dataclass
class TrendMetric:
    """One metric over the reports: a :class:`TrendPoint` a report, in trend order.

    Attributes:
        metric: the flat report key (``image-text/recall/text->image/R@5``).
        direction: ``"lower"`` or ``"higher"`` is better.
        points: one a report.
    """

    metric: str
    direction: str | None
    points: list[TrendPoint]

    @property
    def gated(self) -> bool:
        """Whether any comparison could count a regression (not every point tracked)."""
        return any(p.rule not in (None, "tracked") for p in self.points)

    @property
    def regressed(self) -> list[int]:
        """The positions of the points that regressed against the first."""
        return [i for i, p in enumerate(self.points) if p.regressed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "gated": self.gated,
            "points": [p.to_dict() for p in self.points],
        }


@dataclass
class TrendResult:
    """The metrics of many reports over training; ``to_json()`` is schema
    ``gapscope.trend/1``.

    Attributes:
        reports: a mapping a report, in trend order: ``name`` (the file), ``source``,
            ``fingerprint``, ``checkpoint``, ``step`` and ``x`` (its place on the axis).
        axis: ``"step"`` (the recorded steps) or ``"position"`` (1, 2, ...: no report
            records a step).
        metrics: flat key -> :class:`TrendMetric`, sorted by key.
        settings: how the points were judged against the first report (``check``'s
            settings: the gate, tolerances, ``significant``).
        gate_lines: the same in words (as ``check`` prints them).
        warnings: comparable-but-suspicious findings, each naming its report.
        order: the trend order as positions in the list of reports given.
        undefined: the metrics selected but left out of ``metrics`` because they are
            undefined (``null``) in every report, sorted.
    """

    reports: list[dict[str, Any]]
    axis: str
    metrics: dict[str, TrendMetric]
    settings: dict[str, Any]
    gate_lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    order: list[int] = field(default_factory=list)
    undefined: list[str] = field(default_factory=list)

    @property
    def xs(self) -> list[int]:
        """The place of each report on the axis: its step, or its position from 1."""
        return [r["x"] for r in self.reports]

    def label(self, index: int) -> str:
        """How tables name report ``index``: ``step 1000``, or ``#2`` by position."""
        x = self.reports[index]["x"]
        return f"step {x}" if self.axis == AXIS_STEP else f"#{x}"

    @property
    def regressions(self) -> list[tuple[str, int]]:
        """``(metric, report position)`` of every regressed point, by metric then report."""
        return [(key, i) for key, m in self.metrics.items() for i in m.regressed]

    def to_dict(self) -> dict[str, Any]:
        return json_ready(
            {
                K.SCHEMA_FIELD: TREND_SCHEMA,
                K.VERSION_FIELD: __version__,
                "axis": self.axis,
                "reports": self.reports,
                "settings": self.settings,
                METRICS_FIELD: {key: m.to_dict() for key, m in self.metrics.items()},
                "regressions": [
                    {
                        "metric": key,
                        "report": self.reports[i]["name"],
                        "x": self.reports[i]["x"],
                        "message": self.metrics[key].points[i].message,
                    }
                    for key, i in self.regressions
                ],
                "warnings": self.warnings,
                "undefined": self.undefined,
            }
        )

    def to_json(self) -> str:
        """Deterministic JSON text (sorted keys, rounded floats)."""
        return json_text(self.to_dict())


def trend_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``gapscope.trend/1``, shipped in the package."""
    text = resources.files("gapscope.gate").joinpath("schemas/trend-1.json").read_text("utf-8")
    return json.loads(text)


def order_reports(reports: Sequence[Report], names: Sequence[str]) -> tuple[list[int], str]:
    """The trend order of ``reports`` (indices) and the axis: by recorded step (a stable
    sort: equal steps keep their order), or as given when no report records a step.

    Raises:
        GapscopeError: some reports record a step and some do not.

    >>> def at(step):
    ...     return Report(input={}, params={}, run={"step": step, "tags": {}, "checkpoint": "c"})
    >>> order_reports([at(300), at(100), at(200), at(100)], ["a", "b", "c", "d"])
    ([1, 3, 2, 0], 'step')
    >>> order_reports([at(None), at(None)], ["a", "b"])
    ([0, 1], 'position')
    """
    steps = [r.run_info.step for r in reports]
    if all(s is None for s in steps):
        return list(range(len(reports))), AXIS_POSITION
    if any(s is None for s in steps):
        without = names[steps.index(None)]
        i, step = next((i, s) for i, s in enumerate(steps) if s is not None)
        raise GapscopeError(
            f"{without} records no step while {names[i]} records step {step}: record every "
            "report's step (analyze --step N) or none (then they keep the order given)"
        )
    known = [s for s in steps if s is not None]  # every report records one here
    return sorted(range(len(reports)), key=lambda i: known[i]), AXIS_STEP


def trend_reports(
    reports: Sequence[Report],
    names: Sequence[str] | None = None,
    *,
    metrics: Iterable[MetricPattern | str] = (),
    tolerances: Iterable[tuple[MetricPattern | str, Tolerance | float | str]] = (),
    thresholds: Sequence[Threshold | str] = (),
    significant: bool | None = None,
    config: str | None = None,
) -> TrendResult:
    """The metrics of ``reports`` in step order, each later report compared with the first.

    Args:
        reports: two or more reports of the same modalities, analysed with the same options.
        names: how messages name each report (its file); default ``report 1``, ...
        metrics: patterns that select the metrics to show (``gap``, ``R@1``,
            ``image-text/recall/*/R@5``; see :class:`~gapscope.gate.rules.MetricPattern`);
            none: every metric with a good direction, from every report (a metric undefined
            in every report, ``null``, is left out and named in ``undefined``).
        tolerances: as for :func:`~gapscope.gate.check.check_report`; none: the default gate.
        thresholds: as for :func:`~gapscope.gate.check.check_report`, applied to every
            report after the first.
        significant: as for :func:`~gapscope.gate.check.check_report`.
        config: where the settings came from (a config file), for the outputs.

    Returns:
        A :class:`TrendResult`.

    Raises:
        GapscopeError: fewer than two reports, some with a step and some without, reports
            of different modalities or pairs, a metric in one report and not another (but
            one new in a later version), a pattern or threshold that selects no metric,
            ``significant`` without intervals.

    Example:
        >>> def at(step, gap):
        ...     return Report(input={}, params={}, pairs={"image-text": {"gap": gap}},
        ...                   run={"step": step, "tags": {}, "checkpoint": "c"})
        >>> result = trend_reports([at(200, 0.70), at(100, 0.61), at(300, 0.62)])
        >>> gap = result.metrics["image-text/gap"]
        >>> result.xs, [p.value for p in gap.points], [p.verdict for p in gap.points]
        ([100, 200, 300], [0.61, 0.7, 0.62], ['first', 'regressed', 'pass'])
    """
    if len(reports) < 2:
        raise GapscopeError(
            f"a trend needs two reports or more, got {len(reports)}: give the reports of "
            "several checkpoints (analyze --step N --json step-N.json)"
        )
    names = list(names) if names is not None else [f"report {i + 1}" for i in range(len(reports))]
    order, axis = order_reports(reports, names)
    ordered = [reports[i] for i in order]
    ordered_names = [names[i] for i in order]
    _require_same_modalities(ordered, ordered_names)
    rules = list(tolerances)
    gates = list(thresholds)
    first = ordered[0]
    results: list[CheckResult] = []
    for report, name in zip(ordered[1:], ordered_names[1:], strict=True):
        try:
            results.append(
                check_report(
                    report,
                    first,
                    tolerances=rules,
                    thresholds=gates,
                    significant=significant,
                    config=config,
                )
            )
        except GapscopeError as exc:
            raise GapscopeError(f"{name} against {ordered_names[0]}: {exc}") from None
    flats = [flatten_report(r.to_dict(), keep_null=True) for r in ordered]
    directions: dict[str, str] = {}
    for report, name in zip(ordered, ordered_names, strict=True):
        # A later version knows more metrics' directions; one key two ways is refused.
        roles = (f"the reports before {name}", name)
        directions = merged_directions(directions, report.directions, roles)
    keys = _selected(flats, results, directions, [_pattern(p) for p in metrics])
    trend: dict[str, TrendMetric] = {}
    undefined = []
    for key in keys:
        points = [_first_point(flats[0], key)]
        points += [_point(flat, key, r) for flat, r in zip(flats[1:], results, strict=True)]
        if all(p.value is None for p in points):
            undefined.append(key)  # e.g. intra-modal mAP without labels
            continue
        trend[key] = TrendMetric(key, direction_of(metric_leaf(key), directions), points)
    identities = []
    for position, (report, name) in enumerate(zip(ordered, ordered_names, strict=True)):
        identity = report_identity(report.to_dict())
        x = identity[K.STEP] if axis == AXIS_STEP else position + 1
        identities.append({"name": name, **identity, "x": x})
    warnings = [
        f"{name}: {warning}"
        for name, result in zip(ordered_names[1:], results, strict=True)
        for warning in result.warnings
    ]
    last = results[-1]
    return TrendResult(
        reports=identities,
        axis=axis,
        metrics=trend,
        settings=last.settings,
        gate_lines=_gate_lines(last, list(trend)),
        warnings=list(dict.fromkeys(warnings)),
        order=order,
        undefined=undefined,
    )


def _first_point(flat: dict[str, Any], key: str) -> TrendPoint:
    """The first report's point: the reference, or ``skipped`` when its version of gapscope
    did not know the metric (nothing to compare the others with)."""
    if key not in flat:
        return TrendPoint(None, verdict=VERDICT_SKIPPED, message=_NOT_IN_REPORT.format(key))
    return TrendPoint(flat[key], interval_of(flat, key))


def _point(flat: dict[str, Any], key: str, result: CheckResult) -> TrendPoint:
    """A later report's point: ``check``'s verdict on it, or ``skipped`` when ``check`` did
    not compare it (the metric is missing from this report or from the first)."""
    check = result.metrics.get(key)
    if check is not None:
        return TrendPoint(
            check.current,
            check.current_ci,
            verdict=check.verdict,
            rule=check.rule,
            message=check.message,
        )
    if key not in flat:
        return TrendPoint(None, verdict=VERDICT_SKIPPED, message=_NOT_IN_REPORT.format(key))
    return TrendPoint(
        flat[key],
        interval_of(flat, key),
        verdict=VERDICT_SKIPPED,
        message=f"{key} not compared: the first report's version of gapscope did not know it",
    )


def _gate_lines(result: CheckResult, keys: Sequence[str]) -> list[str]:
    """How the metrics shown were judged, in ``check``'s words (the last comparison's), so
    that the footer names no metric the table leaves out."""
    shown = CheckResult(
        metrics={k: result.metrics[k] for k in keys if k in result.metrics},
        report=result.report,
        baseline=result.baseline,
        settings=result.settings,
    )
    lines = [line for line in shown.gate_lines() if not line.startswith("checkpoints:")]
    thresholds = result.settings.get("thresholds")
    if thresholds:  # check's footer leaves them to its table; a trend marks their failures
        lines.append(
            f"thresholds on every report but the first: {', '.join(thresholds)}; a value "
            "that fails one is marked too"
        )
    return lines


def _pattern(p: MetricPattern | str) -> MetricPattern:
    return p if isinstance(p, MetricPattern) else MetricPattern(str(p))


def _require_same_modalities(reports: Sequence[Report], names: Sequence[str]) -> None:
    """Reports of other modalities or pairs have no metrics in common to follow."""
    for section in (K.MODALITIES_SECTION, K.PAIRS_SECTION):
        seen = [sorted(r.to_dict().get(section, {})) for r in reports]
        for name, found in zip(names[1:], seen[1:], strict=True):
            if found != seen[0]:
                raise GapscopeError(
                    f"{name} has the {section} {', '.join(found) or 'none'} and {names[0]} has "
                    f"{', '.join(seen[0]) or 'none'}: a trend follows reports of the same "
                    f"{section}"
                )


def _selected(
    flats: Sequence[dict[str, Any]],
    results: Sequence[CheckResult],
    directions: dict[str, str],
    patterns: Sequence[MetricPattern],
) -> list[str]:
    """The metrics with a good direction of every report (``flats``: a metric new in a later
    version is shown from where it appears) and those ``check`` judged (a threshold gates
    others too: a tracked metric, an interval bound, a standard error), filtered by
    ``patterns``."""
    found = {k for flat in flats for k in gated_keys(flat, directions)}
    # Every key check judged, an interval bound or a standard error a threshold names too.
    keys = sorted(found | {key for result in results for key in result.metrics})
    if not patterns:
        return keys
    chosen = [k for k in keys if any(p.matches(k) for p in patterns)]
    for pattern in patterns:
        if not any(pattern.matches(k) for k in keys):
            raise GapscopeError(
                f"--metrics {str(pattern)!r} selects no metric of the reports; metric names "
                "are flat keys like image-text/gap or image-text/recall/text->image/R@5 (or "
                "text_to_image/R5), leaf names like gap or R@5, or globs like R@*"
            )
    return chosen
