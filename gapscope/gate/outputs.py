"""Render ``gapscope check`` and ``gapscope diff`` results for people and for CI systems.

- a rich table (metric, baseline, current, change, limit, verdict) and one line a finding;
  the table is a :class:`~gapscope.report.tables.FittedTable`: one line a metric when the
  console is wide enough to show every metric name whole, a block a metric when not (an
  80-column terminal), so a name is never cut;
- JUnit XML, one ``<testcase>`` a metric, which CI systems (GitHub, GitLab, Jenkins) display;
- GitHub Actions workflow commands (``::error title=gapscope check::...``), which put the
  findings on the run's summary page;
- the JSON Schemas of the check and diff documents, shipped in the package.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from importlib import resources
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.text import Text

from gapscope.analysis import keys as K
from gapscope.report.numbers import format_change, format_number
from gapscope.report.tables import Cell, Column, FittedTable
from gapscope.report.text import printable

if TYPE_CHECKING:
    from gapscope.gate.check import CheckResult, MetricCheck
    from gapscope.gate.diff import DiffResult

__all__ = [
    "check_schema",
    "diff_schema",
    "github_annotations",
    "render_check",
    "render_diff",
    "to_junit_xml",
]

_VERDICT_STYLE = {
    "pass": "green",
    "improved": "bold green",
    "regressed": "bold red",
    "failed": "bold red",
    "skipped": "dim",
    "tracked": "dim",
}
_ANNOTATION_TITLE = "gapscope check"


def check_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``gapscope.check/1``, shipped in the package."""
    return _schema("check-1.json")


def diff_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``gapscope.diff/1``, shipped in the package."""
    return _schema("diff-1.json")


def _schema(name: str) -> dict[str, Any]:
    text = resources.files("gapscope.gate").joinpath(f"schemas/{name}").read_text("utf-8")
    return json.loads(text)


def _with_interval(value: float | None, interval: tuple[float, float] | None) -> str:
    text = format_number(value)
    if interval is not None:
        text += f" [{format_number(interval[0])}, {format_number(interval[1])}]"
    return text


def _limits(m: MetricCheck) -> str:
    parts = []
    if m.limit is not None:
        parts.append(("≤ " if m.direction == "lower" else "≥ ") + format_number(m.limit))
    elif m.rule == "significant":  # judged by its intervals: it passes while they overlap
        parts.append("CI overlap")
    symbols = {"<=": "≤", ">=": "≥", "<": "<", ">": ">"}
    parts += [f"{symbols[t.op]} {t.value:g}" for t, _ in m.thresholds]
    return "; ".join(parts)


def render_check(result: CheckResult, console: Console | None = None) -> None:
    """Print the check table, one line a finding, the warnings and a summary line.

    Columns: metric, baseline, current, change (absolute and relative), limit (the worst
    value that passes: from the tolerance, ``<=``/``>=``; and the thresholds), significant
    (when the reports have intervals) and verdict.
    """
    console = console or Console()
    with_ci = any(m.baseline_ci or m.current_ci for m in result.metrics.values())
    title = Text("gapscope check", style="bold")
    if result.baseline is not None:
        title.append(printable(f": {result.report[K.SOURCE]} against {result.baseline[K.SOURCE]}"))
    columns = [
        Column("metric", "name", style="cyan"),
        Column("baseline", justify="right"),
        Column("current", justify="right"),
        Column("change", "wrap", justify="right"),
        Column("limit", justify="right"),
    ]
    if with_ci:
        columns.append(Column("significant", justify="center"))
    columns.append(Column("verdict", inline=True, labelled=False))
    table = FittedTable(columns, title=title)
    for key, m in result.metrics.items():
        # Intervals stay out of the cells (they would double the width); they are in the
        # JSON and JUnit output, and the significance column says what they imply.
        cells: list[Cell] = [
            key,
            format_number(m.baseline) if result.baseline is not None else "",
            format_number(m.current),
            format_change(m.change, m.relative_change),
            _limits(m),
        ]
        if with_ci:
            cells.append("" if m.significant is None else "yes" if m.significant else "no")
        cells.append(Text(m.verdict, style=_VERDICT_STYLE[m.verdict]))
        table.add_row(*cells)
    # crop=False: a metric name longer than the line stays whole (the terminal wraps it).
    console.print(table, crop=False)
    for m in result.metrics.values():
        if m.verdict in ("regressed", "failed", "improved") and m.messages:
            style = "green" if m.verdict == "improved" else "red"
            console.print(Text(printable(f"{m.verdict}: {m.message}"), style=style))
    for warning in result.warnings:
        console.print(Text(printable(f"warning: {warning}"), style="yellow"))
    for line in result.gate_lines():  # what was gated, and why
        console.print(Text(printable(line), style="dim"))
    counts = ", ".join(f"{n} {v}" for v, n in result.summary.items() if n)
    verdict = "PASS" if result.passed else "FAIL"
    console.print(
        Text(
            f"{verdict}: {counts or 'no metrics'}",
            style="bold green" if result.passed else "bold red",
        )
    )


def to_junit_xml(result: CheckResult) -> str:
    """JUnit XML of a check: one ``<testcase>`` a metric, ``<failure>`` for a regression or a
    failed threshold, ``<skipped>`` for a metric that could not be compared or that is
    tracked, not gated (its message says which); each case's text names its rule.

    Test cases are named by the flat key and classed by the pair or modality
    (``gapscope.image-text``). No timestamps or host names, so the same check gives the same
    file.
    """
    summary = result.summary
    failures = summary["regressed"] + summary["failed"]
    attrs = {
        "name": _ANNOTATION_TITLE,
        "tests": str(len(result.metrics)),
        "failures": str(failures),
        "errors": "0",
        "skipped": str(summary["skipped"] + summary["tracked"]),
    }
    root = ET.Element("testsuites", attrs)
    suite = ET.SubElement(root, "testsuite", attrs)
    properties = ET.SubElement(suite, "properties")
    for name, value in (
        ("report", result.report.get(K.SOURCE)),
        ("baseline", (result.baseline or {}).get(K.SOURCE)),
        ("significant", str(result.settings["significant"]).lower()),
        ("gate", result.settings.get("gate")),
    ):
        if value is not None:
            ET.SubElement(properties, "property", {"name": name, "value": str(value)})
    for key, m in result.metrics.items():
        case = ET.SubElement(
            suite,
            "testcase",
            {"classname": f"gapscope.{key.split('/', 1)[0]}", "name": key, "time": "0"},
        )
        detail = _case_detail(m)
        if m.verdict in ("regressed", "failed"):
            failure = ET.SubElement(case, "failure", {"message": m.message, "type": m.verdict})
            failure.text = detail
        elif m.verdict == "skipped":
            ET.SubElement(case, "skipped", {"message": m.message})
        elif m.verdict == "tracked":
            ET.SubElement(case, "skipped", {"message": m.reason}).text = detail
        else:
            ET.SubElement(case, "system-out").text = detail
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _case_detail(m: MetricCheck) -> str:
    lines = [
        f"baseline {_with_interval(m.baseline, m.baseline_ci)}",
        f"current {_with_interval(m.current, m.current_ci)}",
    ]
    if m.change is not None:
        limit = f", tolerance {m.tolerance}" if m.tolerance is not None else ""
        limit += f" (limit {_limits(m)})" if _limits(m) else ""
        lines.append(f"change {format_change(m.change, m.relative_change)}{limit}")
    lines += [
        f"threshold {t}: {'n/a' if ok is None else 'pass' if ok else 'fail'}"
        for t, ok in m.thresholds
    ]
    lines.append(f"verdict {m.verdict}" + (f": {m.message}" if m.message else ""))
    lines.append(f"rule {m.rule}: {m.reason}")
    return "\n".join(lines)


def github_annotations(result: CheckResult) -> list[str]:
    """GitHub Actions workflow commands: an ``::error`` a failing metric, a ``::warning`` a
    warning, and a ``::notice`` with the summary.

    >>> from gapscope.gate.check import CheckResult
    >>> github_annotations(CheckResult({}, {}, None, {}, ["sizes: 5% -> 6%"]))
    ['::warning title=gapscope check::sizes: 5%25 -> 6%25', '::notice title=gapscope check::pass']
    """
    lines = [f"::error title={_ANNOTATION_TITLE}::{_escape(m.message)}" for m in result.failures]
    lines += [f"::warning title={_ANNOTATION_TITLE}::{_escape(w)}" for w in result.warnings]
    counts = ", ".join(f"{n} {v}" for v, n in result.summary.items() if n)
    status = ("pass" if result.passed else "FAIL") + (f": {counts}" if counts else "")
    lines.append(f"::notice title={_ANNOTATION_TITLE}::{_escape(status)}")
    return lines


def _escape(message: str) -> str:
    # The workflow-command encoding of a message: %, CR and LF are percent-encoded.
    return message.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def render_diff(result: DiffResult, console: Console | None = None) -> None:
    """Print the side-by-side table of two reports (metric, A, B, change, B better or worse
    than A, significant when both have intervals) and the warnings."""
    console = console or Console()
    with_ci = any(m.a_ci or m.b_ci for m in result.metrics.values())
    title = Text.assemble(
        ("gapscope diff", "bold"),
        printable(f": A = {result.a[K.SOURCE]}, B = {result.b[K.SOURCE]}"),
    )
    columns = [
        Column("metric", "name", style="cyan"),
        Column("A", justify="right"),
        Column("B", justify="right"),
        Column("change", "wrap", justify="right"),
        Column("B vs A", inline=True, labelled=False),
    ]
    if with_ci:
        columns.append(Column("significant", justify="center"))
    table = FittedTable(columns, title=title)
    styles = {"better": "green", "worse": "red", "unchanged": "dim"}
    for key, m in result.metrics.items():
        cells: list[Cell] = [
            key,
            format_number(m.a),
            format_number(m.b),
            format_change(m.change, m.relative_change),
            Text(m.assessment or "", style=styles.get(m.assessment or "", "")),
        ]
        if with_ci:
            cells.append("" if m.significant is None else "yes" if m.significant else "no")
        table.add_row(*cells)
    console.print(table, crop=False)
    for warning in result.warnings:
        console.print(Text(printable(f"warning: {warning}"), style="yellow"))
