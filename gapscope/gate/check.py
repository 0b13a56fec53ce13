"""Compare a report with a baseline report and with absolute thresholds: the CI gate.

Every metric with a good direction (the gap is better lower, recall higher, ...; each report
carries its keys' directions, see :mod:`gapscope.analysis.keys`) is compared with the
baseline. How it is judged depends on the settings:

- **The default gate** (no tolerance configured, :data:`~gapscope.gate.rules.DEFAULT_GATE`):
  the gap, the cosines, alignment, uniformity and retrieval are gated; each *regresses* when
  it moves in its bad direction and, if both reports have its bootstrap interval
  (``--bootstrap``), the two intervals do not overlap (rule ``significant``), else when it
  moves by more than its family's default tolerance (rule ``default``). Every other metric
  with a direction (the cone, MIR, ranks, the diagnostics) is *tracked*: compared and shown,
  never failing the check. ``significant=False`` uses the default tolerances everywhere;
  ``significant=True`` requires intervals.
- **Configured tolerances** (any tolerance given: rule ``config``): every metric is gated; it
  regresses when it moves in its bad direction by more than its tolerance (see
  :mod:`gapscope.gate.rules`; a metric no pattern selects has tolerance 0, i.e. it must not
  get worse at all), and is *improved* when it moves in its good direction by more. With
  ``significant=True`` a change counts only when, in addition, the two reports' intervals
  do not overlap; metrics without an interval (MIR) are then judged by their tolerance alone.

A *threshold* (``image-text/gap<=0.9``) is an absolute gate on the current report that needs
no baseline; a metric that violates one has *failed* (rule ``threshold`` for a metric that
only a threshold gates). Keys without a direction (counts, ``*_se``, ``scale``, interval
bounds, ...) are not compared with the baseline, though a threshold may name them. An
interval bound or a standard error is selected only by a pattern that names one
(``image-text/gap_ci/high<=0.9``, ``*/R@1_ci/low>=0.5``, ``uniformity_se<=0.01``), so that
``R@1`` or ``*`` select the metrics alone; what-if values are never gated.

"More than the tolerance" is judged on the values as reports store them, rounded to
:data:`~gapscope.report.model.SIGNIFICANT_DIGITS` significant digits: a change equal to the
tolerance in those digits (0.85 to 0.83 with tolerance 0.02) passes, though the float
subtraction gives 0.020000000000000018.

Verdicts: ``pass``, ``improved``, ``regressed``, ``failed`` (a threshold), ``skipped`` (the
metric is undefined, ``null``, on one side) and ``tracked`` (shown, not gated). The check
fails, exit code 1, when any metric regressed or failed. Bad input raises
:class:`~gapscope.errors.GapscopeError` (exit code 2): a report of another schema version, a
metric missing from one side, reports that give a metric opposite directions, nothing to
compare (no metric in either report), a malformed tolerance or threshold, a threshold that
selects no metric, ``significant=True`` without intervals.

Reports of different checkpoints (different ``input.fingerprint``) are what the gate is for;
reports of different probe sets (other row counts), other metric parameters or intervals at
another confidence level are compared with a warning (messages then name both levels).

Schema version policy (:mod:`gapscope.report.model`): a breaking change bumps the report
schema, and ``check`` still reads the previous version by upgrading it, so a committed baseline
keeps working across one upgrade. This module loads no heavy dependency: gating two JSON
reports never imports torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gapscope._version import __version__
from gapscope.analysis import keys as K
from gapscope.analysis.keys import direction_of, is_detail_key, metric_leaf
from gapscope.errors import GapscopeError
from gapscope.gate.reports import (
    comparability_warnings,
    interval_kind,
    merged_directions,
    report_identity,
)
from gapscope.gate.rules import (
    DEFAULT_GATE,
    MetricPattern,
    Threshold,
    Tolerance,
    default_family,
    parse_threshold,
    parse_tolerance,
)
from gapscope.report.model import (
    SIGNIFICANT_DIGITS,
    Report,
    flatten_report,
    interval_of,
    json_ready,
    json_text,
)
from gapscope.report.numbers import format_change, format_number

__all__ = [
    "CHECK_SCHEMA",
    "GATES",
    "RULES",
    "VERDICTS",
    "CheckResult",
    "MetricCheck",
    "baseline_analysis_params",
    "check_report",
    "first_baseline_result",
    "gated_keys",
]

CHECK_SCHEMA = "gapscope.check/1"
#: The field of a check or diff document that holds one entry a metric (by flat key).
METRICS_FIELD = "metrics"
VERDICTS = ("regressed", "failed", "improved", "pass", "skipped", "tracked")
#: How the baseline comparison was set up: the default gate, or configured tolerances.
GATE_DEFAULT = "default"
GATE_CONFIG = "config"
GATES = (GATE_DEFAULT, GATE_CONFIG)
#: Why a metric was judged as it was (``MetricCheck.rule``): the default gate by intervals
#: (``significant``) or by its family's tolerance (``default``), a configured tolerance
#: (``config``), thresholds alone (``threshold``), or not at all (``tracked``).
RULE_SIGNIFICANT = "significant"
RULE_DEFAULT = "default"
RULE_CONFIG = "config"
RULE_THRESHOLD = "threshold"
RULE_TRACKED = "tracked"
RULES = (RULE_SIGNIFICANT, RULE_DEFAULT, RULE_CONFIG, RULE_THRESHOLD, RULE_TRACKED)
#: How far, as a share of the values compared, a change may pass its tolerance and still be
#: "within" it. Reports store floats to SIGNIFICANT_DIGITS significant digits, so a stored
#: value is known only to half a unit of its last digit (5e-9 of it or more): a change that
#: passes its tolerance by less than 1e-9 of the larger value is within that rounding, which
#: the stored digits cannot tell from the tolerance itself. Float error in the subtraction and
#: in a percentage (about 1e-16 of the values: 0.85 - 0.83 = 0.020000000000000018) is far
#: below it, and a change one unit of the last digit beyond (0.85 to 0.82999999) still counts.
_MARGIN = 10.0 ** -(SIGNIFICANT_DIGITS + 1)
#: Why nothing is compared in the check of a first baseline (:func:`first_baseline_result`).
_FIRST_BASELINE = "no baseline yet: this report becomes the first baseline, nothing compared"


@dataclass
class MetricCheck:
    """The comparison of one metric.

    Attributes:
        metric: the flat report key.
        direction: ``"lower"``/``"higher"`` is better, or None (threshold-only keys).
        baseline, current: the values (None: undefined or no baseline).
        change: ``current - baseline``; relative_change: ``change / |baseline|``.
        tolerance: the tolerance as written (``"0.02"``, ``"5%"``), and the pattern that chose
            it (``tolerance_pattern``; None for a tolerance no pattern chose: the default gate's,
            or 0 when tolerances are configured). None for a metric judged by its intervals
            alone or tracked.
        allowed_change: the tolerance as an absolute amount for this baseline.
        limit: the worst value that still passes the baseline comparison.
        baseline_ci, current_ci: bootstrap intervals when the reports have them.
        significant: whether the intervals do not overlap (None without intervals).
        thresholds: ``[(threshold, passed)]`` for the thresholds that select this metric.
        verdict: one of :data:`VERDICTS`.
        messages: one readable line a finding (empty for a plain pass).
        rule: how it was judged, one of :data:`RULES`; reason: the same in words.
    """

    metric: str
    direction: str | None
    baseline: float | None = None
    current: float | None = None
    change: float | None = None
    relative_change: float | None = None
    tolerance: str | None = None
    tolerance_pattern: str | None = None
    allowed_change: float | None = None
    limit: float | None = None
    baseline_ci: tuple[float, float] | None = None
    current_ci: tuple[float, float] | None = None
    significant: bool | None = None
    thresholds: list[tuple[Threshold, bool | None]] = field(default_factory=list)
    verdict: str = "pass"
    messages: list[str] = field(default_factory=list)
    rule: str = RULE_CONFIG
    reason: str = ""

    @property
    def gated(self) -> bool:
        """Whether this metric can fail the check (every rule but ``tracked``)."""
        return self.rule != RULE_TRACKED

    @property
    def message(self) -> str:
        """All findings in one line."""
        return "; ".join(self.messages)

    def to_dict(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "baseline": self.baseline,
            "current": self.current,
            "change": self.change,
            "relative_change": self.relative_change,
            "tolerance": self.tolerance,
            "tolerance_pattern": self.tolerance_pattern,
            "allowed_change": self.allowed_change,
            "limit": self.limit,
            "baseline_ci": None if self.baseline_ci is None else list(self.baseline_ci),
            "current_ci": None if self.current_ci is None else list(self.current_ci),
            "significant": self.significant,
            "thresholds": [{"threshold": str(t), "passed": ok} for t, ok in self.thresholds],
            "verdict": self.verdict,
            "message": self.message,
            "gated": self.gated,
            "rule": self.rule,
            "reason": self.reason,
        }


@dataclass
class CheckResult:
    """Everything ``gapscope check`` found; ``to_json()`` is schema ``gapscope.check/1``.

    Attributes:
        metrics: flat key -> :class:`MetricCheck`, sorted by key.
        report, baseline: ``{"source", "fingerprint", "checkpoint", "step"}`` of each
            (baseline None without one).
        settings: the gate (``default`` or ``config``), the tolerances, thresholds and
            ``significant`` that were applied.
        warnings: comparable-but-suspicious findings (other probe set, other params, unused
            tolerance patterns).
    """

    metrics: dict[str, MetricCheck]
    report: dict[str, Any]
    baseline: dict[str, Any] | None
    settings: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, int]:
        counts = dict.fromkeys(VERDICTS, 0)
        for m in self.metrics.values():
            counts[m.verdict] += 1
        return counts

    @property
    def passed(self) -> bool:
        return not any(m.verdict in ("regressed", "failed") for m in self.metrics.values())

    @property
    def exit_code(self) -> int:
        """0 when every metric passed, 1 on a regression or a failed threshold."""
        return 0 if self.passed else 1

    @property
    def failures(self) -> list[MetricCheck]:
        return [m for m in self.metrics.values() if m.verdict in ("regressed", "failed")]

    def to_dict(self) -> dict[str, Any]:
        return json_ready(
            {
                K.SCHEMA_FIELD: CHECK_SCHEMA,
                K.VERSION_FIELD: __version__,
                "status": "pass" if self.passed else "fail",
                "exit_code": self.exit_code,
                "report": self.report,
                "baseline": self.baseline,
                "settings": self.settings,
                "summary": self.summary,
                METRICS_FIELD: {key: m.to_dict() for key, m in self.metrics.items()},
                "warnings": self.warnings,
            }
        )

    def to_json(self) -> str:
        """Deterministic JSON text (sorted keys, rounded floats)."""
        return json_text(self.to_dict())

    def gate_lines(self) -> list[str]:
        """What was gated and why, in a few lines for people (the table's footer)."""
        lines = []
        if self.baseline is not None:
            lines.append(
                f"checkpoints: report {_run_text(self.report)}, baseline {_run_text(self.baseline)}"
            )
        by_rule = {rule: [m for m in self.metrics.values() if m.rule == rule] for rule in RULES}
        if self.baseline is None and not self.settings.get("thresholds"):
            lines.append(f"gate: none: {_FIRST_BASELINE}")
        elif self.baseline is None:
            lines.append("gate: thresholds only (no baseline)")
        elif self.settings.get("gate") == GATE_DEFAULT:
            lines.append(_default_gate_line(by_rule, self.settings))
        else:
            source = self.settings.get("config")
            where = f"{source} and the options" if source else "the options"
            line = f"gate: tolerances from {where}; a metric no pattern selects has tolerance 0"
            if self.settings.get("significant"):
                line += "; a change counts only when the bootstrap intervals do not overlap"
            lines.append(line)
        if by_rule[RULE_TRACKED] and (self.baseline is not None or self.settings["thresholds"]):
            leaves = sorted({metric_leaf(m.metric) for m in by_rule[RULE_TRACKED]})
            lines.append(
                f"tracked, not gated ({len(by_rule[RULE_TRACKED])}): {', '.join(leaves)}; "
                "a tolerance or threshold in the settings gates them"
            )
        return lines


def check_report(
    report: Report,
    baseline: Report | None = None,
    *,
    tolerances: Iterable[tuple[MetricPattern | str, Tolerance | float | str]] = (),
    thresholds: Sequence[Threshold | str] = (),
    significant: bool | None = None,
    config: str | None = None,
) -> CheckResult:
    """Gate ``report`` on ``baseline`` and on absolute ``thresholds``.

    Args:
        report: the current report.
        baseline: the last good report; ``None`` to gate on thresholds only.
        tolerances: ``(pattern, tolerance)`` in order of precedence on ties (later wins);
            tolerances may be given as ``0.02`` or ``"5%"``. None given: the default gate.
        thresholds: absolute gates like ``"image-text/gap<=0.9"``.
        significant: count a change only when the bootstrap intervals do not overlap
            (``True`` requires intervals); ``None``: the default gate uses the intervals of
            the metrics both reports have them for, configured tolerances do not.
        config: where the settings came from (a config file), for the outputs.

    Returns:
        A :class:`CheckResult`; its ``exit_code`` is 0 or 1.

    Raises:
        GapscopeError: nothing to check (no baseline and no threshold), no metric to compare,
            a metric missing from one side, a metric the two reports' ``directions`` give
            opposite directions, a threshold that selects no metric, ``significant`` without
            intervals.

    Example:
        >>> base = Report(input={}, params={}, pairs={"image-text": {"gap": 0.61, "cka": 0.5}})
        >>> new = Report(input={}, params={}, pairs={"image-text": {"gap": 0.66, "cka": 0.4}})
        >>> result = check_report(new, base, tolerances=[("gap", 0.02)])
        >>> result.exit_code, result.metrics["image-text/gap"].message
        (1, 'image-text/gap rose from 0.6100 to 0.6600 (+0.0500), more than the tolerance 0.02')
        >>> result.metrics["image-text/cka"].verdict  # configured: no pattern, tolerance 0
        'regressed'
        >>> default = check_report(new, base)  # nothing configured: the default gate
        >>> gap, cka = default.metrics["image-text/gap"], default.metrics["image-text/cka"]
        >>> gap.verdict, gap.rule, gap.tolerance, cka.verdict, cka.gated
        ('regressed', 'default', '0.02', 'tracked', False)
    """
    rules = [(_pattern(p), _tolerance(t)) for p, t in tolerances]
    gates = [t if isinstance(t, Threshold) else parse_threshold(t) for t in thresholds]
    if baseline is None and not gates:
        raise GapscopeError(
            "nothing to check: give --baseline REPORT.json, or a --threshold like "
            "'image-text/gap<=0.9' (or [check] threshold in gapscope.toml)"
        )
    gate_mode = GATE_CONFIG if rules else GATE_DEFAULT
    current_data = report.to_dict()
    current = flatten_report(current_data, keep_null=True)
    # A baseline of an older version may know fewer keys; one direction two ways is refused.
    directions = merged_directions(
        baseline.directions if baseline is not None else {},
        report.directions,
        ("the baseline", "the report"),
    )
    warnings: list[str] = []
    metrics: dict[str, MetricCheck] = {}
    base_data = None
    base: dict[str, Any] = {}
    by_intervals = bool(significant)
    newer: list[str] = []
    if baseline is not None:
        base_data = baseline.to_dict()
        base = flatten_report(base_data, keep_null=True)
        keys, newer = _directional_keys(current, base, directions, baseline.directions)
        if newer:
            warnings.append(
                f"{len(newer)} metrics (e.g. {newer[0]}) are new in this version of gapscope "
                "and missing from the baseline: not compared; promote a new baseline to "
                "gate them"
            )
        if significant:
            _require_intervals(keys, current, base)
        levels = _levels(
            base_data[K.PARAMS_SECTION].get(K.P_CONFIDENCE),
            current_data[K.PARAMS_SECTION].get(K.P_CONFIDENCE),
        )
        if gate_mode == GATE_DEFAULT:
            by_intervals = significant is not False and _have_intervals(keys, current, base)
        for key in keys:
            direction = direction_of(metric_leaf(key), directions)
            if gate_mode == GATE_DEFAULT:
                metrics[key] = _default_compare(key, base, current, by_intervals, levels, direction)
                continue
            rule = _most_specific(key, rules)
            entry = _compare(key, base, current, rule, by_intervals, levels, direction)
            entry.reason = _config_reason(entry, by_intervals, levels)
            metrics[key] = entry
        warnings += comparability_warnings(base_data, current_data)
        used = {str(p) for p, _ in rules if any(p.matches(k) for k in keys)}
        warnings += [
            f"tolerance pattern {str(p)!r} selects no metric of the reports"
            for p, _ in rules
            if str(p) not in used
        ]
    for gate in gates:
        selected = [k for k in current if _selects(gate, k)]
        if not selected:
            raise GapscopeError(
                f"threshold {str(gate)!r} selects no metric of the report; metric names are "
                "flat keys like image-text/gap or image-text/recall/text->image/R@5 (or "
                "text_to_image/R5), leaf names like R@5 (or R5), or an interval bound like "
                "image-text/gap_ci/high (gap_ci/high: every pair's)"
            )
        for key in selected:
            entry = metrics.setdefault(
                key,
                MetricCheck(
                    key,
                    direction_of(metric_leaf(key), directions),
                    baseline=base.get(key),  # shown beside it (a bound, a standard error)
                    current=current[key],
                    rule=RULE_THRESHOLD,
                ),
            )
            _apply_threshold(entry, gate, current[key])
    if not metrics:
        raise GapscopeError(_nothing_compared(newer))
    return CheckResult(
        metrics=dict(sorted(metrics.items())),
        report=report_identity(current_data),
        baseline=None if base_data is None else report_identity(base_data),
        settings=_settings(rules, gates, by_intervals, config),
        warnings=list(dict.fromkeys(warnings)),
    )


def first_baseline_result(
    report: Report,
    *,
    tolerances: Iterable[tuple[MetricPattern | str, Tolerance | float | str]] = (),
    significant: bool | None = None,
    config: str | None = None,
) -> CheckResult:
    """The check of a report that becomes the first baseline, with no threshold to apply.

    Nothing is compared (there is no baseline yet) and nothing gated, so the result passes;
    it lists every metric with a direction at its current value, verdict ``skipped`` (rule
    ``tracked``), so that the table, the JSON document and the JUnit file of a first run
    say what was recorded rather than being left unwritten. The settings are those given
    (later checks apply them, with the intervals' rule decided by the reports they compare).

    Args:
        report: the report written as the first baseline.
        tolerances, significant, config: the settings, as for :func:`check_report`.

    Example:
        >>> first = Report(input={}, params={}, pairs={"image-text": {"gap": 0.61}})
        >>> result = first_baseline_result(first)
        >>> result.exit_code, result.metrics["image-text/gap"].verdict, result.baseline
        (0, 'skipped', None)
    """
    rules = [(_pattern(p), _tolerance(t)) for p, t in tolerances]
    data = report.to_dict()
    current = flatten_report(data, keep_null=True)
    metrics = {
        key: MetricCheck(
            metric=key,
            direction=direction_of(metric_leaf(key), report.directions),
            current=current[key],
            verdict="skipped",
            messages=[f"{key} is {format_number(current[key])}: {_FIRST_BASELINE}"],
            rule=RULE_TRACKED,
            reason=_FIRST_BASELINE,
        )
        for key in sorted(gated_keys(current, report.directions))
    }
    return CheckResult(
        metrics=metrics,
        report=report_identity(data),
        baseline=None,
        settings=_settings(rules, [], bool(significant), config),
    )


def _settings(
    rules: Sequence[tuple[MetricPattern | None, Tolerance]],
    gates: Sequence[Threshold],
    by_intervals: bool,
    config: str | None,
) -> dict[str, Any]:
    """The ``settings`` of a check document: the gate, what it applied, and where from."""
    gate_mode = GATE_CONFIG if rules else GATE_DEFAULT
    settings: dict[str, Any] = {
        "gate": gate_mode,
        "significant": by_intervals,
        "tolerances": {str(p): str(t) for p, t in rules},
        "thresholds": [str(g) for g in gates],
        "config": config,
    }
    if gate_mode == GATE_CONFIG:
        settings["default_tolerance"] = "0"
    else:
        settings["default_gate"] = [
            {
                "family": family.name,
                METRICS_FIELD: [str(p) for p in family.patterns],
                "tolerance": str(family.tolerance),
                "why": family.why,
            }
            for family in DEFAULT_GATE
        ]
    return settings


def baseline_analysis_params(baseline: Report | None, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments of :func:`gapscope.analyze` that repeat the baseline's analysis.

    ``check`` on a store (or arrays) analyses it first; to be comparable the analysis uses the
    baseline's metrics, k, seed, sample, bootstrap, confidence, interval, t and alpha.
    ``overrides`` that are not ``None`` replace them; without a baseline the defaults of
    ``analyze`` apply. A baseline with intervals but no ``interval`` parameter was made
    before BCa intervals: its intervals are percentile intervals.

    >>> base = Report(input={}, params={"k": [1, 5], "seed": 3, "bootstrap": 200})
    >>> params = baseline_analysis_params(base, seed=None, bootstrap=50)
    >>> params["k"], params["seed"], params["bootstrap"]
    ([1, 5], 3, 50)
    """
    params = {} if baseline is None else baseline.params
    chosen = {
        K.P_METRICS: params.get(K.P_METRICS),
        K.P_K: params.get(K.P_K, [1, 5, 10]),
        K.P_SEED: params.get(K.P_SEED, 0),
        K.P_SAMPLE: params.get(K.P_SAMPLE),
        K.P_BOOTSTRAP: params.get(K.P_BOOTSTRAP),
        K.P_CONFIDENCE: params.get(K.P_CONFIDENCE, 0.95),
        K.P_INTERVAL: interval_kind(params),
        K.P_UNIFORMITY_T: params.get(K.P_UNIFORMITY_T, 2.0),
        K.P_ALIGNMENT_ALPHA: params.get(K.P_ALIGNMENT_ALPHA, 2.0),
    }
    chosen.update({key: value for key, value in overrides.items() if value is not None})
    return chosen


# --------------------------------------------------------------------------- comparison


def _pattern(p: MetricPattern | str) -> MetricPattern:
    return p if isinstance(p, MetricPattern) else MetricPattern(str(p))


def _tolerance(t: Tolerance | float | str) -> Tolerance:
    return t if isinstance(t, Tolerance) else parse_tolerance(t)


def _directional_keys(
    current: Mapping[str, Any],
    base: Mapping[str, Any],
    directions: Mapping[str, str],
    base_directions: Mapping[str, str],
) -> tuple[list[str], list[str]]:
    """The directional metrics both reports hold, and those of the report whose kind the
    baseline's version did not know (its ``directions`` lack the leaf: new in this version,
    so the baseline cannot have them). Any other difference means the two were analysed
    with different options."""
    now, before = gated_keys(current, directions), gated_keys(base, directions)
    newer = sorted(
        k for k in now - before if direction_of(metric_leaf(k), dict(base_directions)) is None
    )
    for missing, has, lacks in (
        (sorted(before - now), "baseline", "report"),
        (sorted(now - before - set(newer)), "report", "baseline"),
    ):
        if missing:
            raise GapscopeError(
                f"metric {missing[0]} is in the {has} but missing from the {lacks}"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                + "; analyse both with the same --metrics and --k"
            )
    return sorted(now & before), newer


def gated_keys(flat: Mapping[str, Any], directions: Mapping[str, str]) -> set[str]:
    """The keys of a flat report that the gate compares: those whose leaf has a good
    direction by ``directions``, less the detail keys (interval bounds, ``*_se``, what-ifs).

    >>> flat = {"image-text/gap": 0.6, "image-text/gap_ci": [0.5, 0.7], "image/rows": 9}
    >>> sorted(gated_keys(flat, {"gap": "lower"}))
    ['image-text/gap']
    """
    return {
        k
        for k in flat
        if not is_detail_key(k) and direction_of(metric_leaf(k), dict(directions)) is not None
    }


def _nothing_compared(newer: Sequence[str]) -> str:
    """Why a check with a baseline compared no metric (and no threshold selected one)."""
    if newer:
        return (
            f"no metric to compare: every metric of the report ({len(newer)}, e.g. "
            f"{newer[0]}) is new in this version of gapscope and missing from the baseline; "
            "analyse the baseline again with this version"
        )
    return (
        "no metric to compare: neither the report nor the baseline holds a metric with a "
        "direction (their modalities, pairs and tuples hold none), so a pass would say nothing"
    )


def _selects(gate: Threshold, key: str) -> bool:
    """Whether threshold ``gate`` selects the flat key ``key``: a metric its pattern matches,
    or an interval bound or a standard error when the pattern names one (its last component
    ``*_se``, or ``*_ci/low``...), never a what-if value."""
    if not gate.pattern.matches(key):
        return False
    return not is_detail_key(key) or (_is_bound_or_se(key) and _is_bound_or_se(str(gate.pattern)))


def _is_bound_or_se(text: str) -> bool:
    return K.WHATIF.name not in text.split("/") and is_detail_key(text)


def _have_intervals(keys: list[str], current: Mapping[str, Any], base: Mapping[str, Any]) -> bool:
    """Whether both reports have intervals (were analysed with ``--bootstrap``)."""
    return all(any(interval_of(flat, k) is not None for k in keys) for flat in (base, current))


def _require_intervals(
    keys: list[str], current: Mapping[str, Any], base: Mapping[str, Any]
) -> None:
    for flat, role in ((base, "baseline"), (current, "report")):
        if not any(interval_of(flat, k) is not None for k in keys):
            raise GapscopeError(
                f"--significant needs confidence intervals, but the {role} has none: "
                "analyse it with --bootstrap 200"
            )


def _most_specific(
    key: str, rules: Sequence[tuple[MetricPattern, Tolerance]]
) -> tuple[MetricPattern, Tolerance] | None:
    matching = [
        (p.specificity(), -order, p, t) for order, (p, t) in enumerate(rules) if p.matches(key)
    ]
    if not matching:
        return None
    _, _, pattern, tolerance = min(matching, key=lambda m: (m[0], m[1]))
    return pattern, tolerance


def _compare(
    key: str,
    base: Mapping[str, Any],
    current: Mapping[str, Any],
    rule: tuple[MetricPattern | None, Tolerance] | None,
    significant: bool,
    levels: str,
    direction: str | None,
) -> MetricCheck:
    pattern, tolerance = rule if rule is not None else (None, Tolerance(0.0))
    entry = MetricCheck(
        key,
        direction,
        baseline=base[key],
        current=current[key],
        tolerance=str(tolerance),
        tolerance_pattern=None if pattern is None else str(pattern),
        baseline_ci=interval_of(base, key),
        current_ci=interval_of(current, key),
    )
    if entry.baseline is None or entry.current is None:
        side = "baseline" if entry.baseline is None else "report"
        entry.verdict = "skipped"
        entry.messages.append(f"{key} is not defined in the {side} (null); not compared")
        return entry
    b, c = float(entry.baseline), float(entry.current)
    entry.change = c - b
    entry.relative_change = entry.change / abs(b) if b != 0 else None
    entry.allowed_change = tolerance.allowed(b)
    sign = 1.0 if direction == "lower" else -1.0
    entry.limit = b + sign * entry.allowed_change
    # Positive `worse` is a move in the bad direction.
    worse = sign * entry.change
    if entry.baseline_ci is not None and entry.current_ci is not None:
        (bl, bh), (cl, ch) = entry.baseline_ci, entry.current_ci
        entry.significant = cl > bh or ch < bl
    moved = "rose" if entry.change > 0 else "fell"
    change = format_change(entry.change)
    text = f"{key} {moved} from {format_number(b)} to {format_number(c)} ({change})"
    beyond = _beyond(entry.change, entry.allowed_change, b, c)
    if not beyond or worse == 0:
        return entry
    if significant and entry.significant is False:
        entry.messages.append(
            f"{text}, beyond the tolerance {_tolerance_text(tolerance, entry)} but within "
            f"noise: the {levels} intervals overlap"
        )
        return entry
    if worse > 0:
        entry.verdict = "regressed"
        text += f", more than the tolerance {_tolerance_text(tolerance, entry)}"
    else:
        entry.verdict = "improved"
    if significant and entry.significant:
        text += f"; the {levels} intervals do not overlap"
    elif significant:
        text += " (no interval for this metric: judged by its tolerance alone)"
    entry.messages.append(text)
    return entry


def _beyond(change: float, allowed: float, baseline: float, current: float) -> bool:
    """Whether ``change`` passes the ``allowed`` amount by more than the digits reports store
    can tell (:data:`_MARGIN`), so that a change of exactly the tolerance passes."""
    margin = _MARGIN * max(abs(baseline), abs(current), allowed)
    return abs(change) > allowed + margin


def _tolerance_text(tolerance: Tolerance, entry: MetricCheck) -> str:
    if tolerance.relative:
        return f"{tolerance} ({format_number(entry.allowed_change)})"
    return str(tolerance)


def _percent(confidence: float | None) -> str:
    return f"{100 * confidence:g}%" if confidence else "confidence"


def _levels(baseline: float | None, current: float | None) -> str:
    """How messages name the intervals compared: by their level (``95%``), or by both levels
    when the two reports' differ (``95% (baseline) and 50% (report)``)."""
    if baseline == current or baseline is None or current is None:
        return _percent(baseline if baseline is not None else current)
    return f"{_percent(baseline)} (baseline) and {_percent(current)} (report)"


def _apply_threshold(entry: MetricCheck, gate: Threshold, value: float | None) -> None:
    if entry.rule == RULE_TRACKED:
        # A threshold gates a metric the default gate only tracks; the comparison stays shown.
        entry.rule, entry.verdict = RULE_THRESHOLD, "pass"
        entry.reason = f"the threshold {gate} (the default gate only tracks it)"
    elif entry.rule == RULE_THRESHOLD:
        entry.reason = "; ".join(filter(None, [entry.reason, f"the threshold {gate}"]))
    else:
        entry.reason += f"; and the threshold {gate}"
    if value is None:
        entry.thresholds.append((gate, None))
        if entry.verdict == "pass":
            entry.verdict = "skipped"
        entry.messages.append(
            f"{entry.metric} is not defined (null); threshold {gate} not evaluated"
        )
        return
    ok = gate.holds(float(value))
    entry.thresholds.append((gate, ok))
    if not ok:
        entry.messages.append(gate.describe_violation(entry.metric, float(value)))
        if entry.verdict != "regressed":
            entry.verdict = "failed"


# --------------------------------------------------------------------------- the default gate


def _default_compare(
    key: str,
    base: Mapping[str, Any],
    current: Mapping[str, Any],
    by_intervals: bool,
    levels: str,
    direction: str | None,
) -> MetricCheck:
    """One metric under the default gate: by its intervals, its family's tolerance, or
    tracked."""
    family = default_family(key)
    if family is None:
        entry = _compare(key, base, current, None, False, levels, direction)
        entry.verdict, entry.messages = RULE_TRACKED, []
        entry.tolerance = entry.allowed_change = entry.limit = None
        entry.rule = RULE_TRACKED
        entry.reason = (
            "tracked, not gated: the default gate gates the gap, the cosines, alignment, "
            "uniformity, retrieval and zero-shot accuracy"
        )
        return entry
    both = interval_of(base, key) is not None and interval_of(current, key) is not None
    if by_intervals and both:
        entry = _compare(key, base, current, None, True, levels, direction)
        entry.tolerance = entry.allowed_change = entry.limit = None
        entry.rule = RULE_SIGNIFICANT
        entry.reason = (
            f"default gate ({family.name}): both reports have its {levels} interval; a "
            "change counts when the intervals do not overlap"
        )
        if entry.verdict != "skipped" and entry.messages:
            entry.messages = [_significance_message(entry, levels)]
        return entry
    entry = _compare(key, base, current, (None, family.tolerance), False, levels, direction)
    entry.tolerance_pattern = None
    entry.rule = RULE_DEFAULT
    missing = " (the two reports do not both have its interval)" if by_intervals else ""
    entry.reason = (
        f"default gate ({family.name}): tolerance {family.tolerance}, {family.why}{missing}"
    )
    return entry


def _significance_message(entry: MetricCheck, levels: str) -> str:
    """The finding of a metric judged by its intervals alone (no tolerance to cite)."""
    assert entry.change is not None and entry.baseline is not None and entry.current is not None
    moved = "rose" if entry.change > 0 else "fell"
    text = (
        f"{entry.metric} {moved} from {format_number(entry.baseline)} to "
        f"{format_number(entry.current)} ({format_change(entry.change)})"
    )
    if not entry.significant:
        return f"{text}, within noise: the {levels} intervals overlap"
    return f"{text}; the {levels} intervals do not overlap"


def _config_reason(entry: MetricCheck, by_intervals: bool, levels: str) -> str:
    if entry.tolerance_pattern is None:
        text = "no tolerance pattern selects it: tolerance 0"
    else:
        text = f"tolerance {entry.tolerance} from the pattern {entry.tolerance_pattern!r}"
    if by_intervals:
        if entry.baseline_ci is not None and entry.current_ci is not None:
            text += f", counted only when the {levels} intervals do not overlap"
        else:
            text += " (no interval: judged by its tolerance alone)"
    return text


def _run_text(identity: Mapping[str, Any]) -> str:
    text = str(identity.get(K.CHECKPOINT) or "unknown")
    step = identity.get(K.STEP)
    return f"{text} (step {step})" if step is not None else text


def _default_gate_line(
    by_rule: Mapping[str, list[MetricCheck]], settings: Mapping[str, Any]
) -> str:
    tolerances = ", ".join(f"{f['family']} {f['tolerance']}" for f in settings["default_gate"])
    parts = []
    if by_rule[RULE_SIGNIFICANT]:
        parts.append(f"{len(by_rule[RULE_SIGNIFICANT])} metrics by their bootstrap intervals")
    if by_rule[RULE_DEFAULT]:
        parts.append(
            f"{len(by_rule[RULE_DEFAULT])} metrics by the default tolerances ({tolerances})"
        )
    judged = ", ".join(parts) if parts else "none in these reports"
    return (
        "gate: the default gate (no tolerances configured) gates the gap, the cosines, "
        f"alignment, uniformity, retrieval and zero-shot accuracy: {judged}"
    )
