"""Render a :class:`~gapscope.gate.trend.TrendResult` for people: a terminal table and one
self-contained HTML page with a plot a metric.

The terminal table is a :class:`~gapscope.report.tables.FittedTable`: a row a metric, a
column a report (``step 1000``), on one line a metric when the console is wide enough to show
every name whole, a block a metric when not, so a name is never cut. A point that regressed
against the first report (or fails a threshold of the settings) carries the marker ``!``
after its value, and is red on a terminal (improvements green); there is no colour off a
terminal or with ``NO_COLOR``, the marker stays.

The page (:func:`render_trend_html`) is built like the report page (its stylesheet, its
Content-Security-Policy that forbids fetching anything, its sorting script; see
:func:`gapscope.report.html.html_page`): a summary, the table, then a plot a metric against
the step, drawn here as inline SVG (no plotting library: the page needs only the core
install). Each plot joins the reports' values with a line, draws a bootstrap interval as a
whisker where a report has one, shows the first report as a hollow point, a regressed point
in red with a ring, and names every point's value and verdict on hover.
"""

from __future__ import annotations

import html
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from gapscope._version import __version__
from gapscope.analysis import keys as K
from gapscope.analysis.keys import metric_leaf
from gapscope.data.atomic import atomic_write_text
from gapscope.gate.trend import (
    AXIS_STEP,
    MARKED_VERDICTS,
    TREND_SCHEMA,
    TrendMetric,
    TrendResult,
)
from gapscope.report.html import html_page, html_table
from gapscope.report.numbers import format_number
from gapscope.report.tables import Cell, Column, FittedTable
from gapscope.report.text import printable

__all__ = [
    "REGRESSED_MARK",
    "render_trend",
    "render_trend_html",
    "trend_svg",
    "write_trend_html",
]

#: Follows the value of a point that regressed against the first report, in every output.
REGRESSED_MARK = "!"
_ARROWS = {K.LOWER: "↓", K.HIGHER: "↑"}
# A value that fails a threshold of the settings is marked as a regressed one is.
_POINT_STYLE = {
    "regressed": "bold red",
    "failed": "bold red",
    "improved": "green",
    "skipped": "dim",
}

# The page's colours: the header's navy, its "worrying" red and "good" green.
_NAVY, _RED, _GREEN, _GREY = "#1d3557", "#b3261e", "#1e7b34", "#8a94a6"
_W, _H = 400, 240
_LEFT, _RIGHT, _TOP, _BOTTOM = 58, 16, 14, 40
#: Report columns a table of values holds; more reports make more tables.
_TABLE_REPORTS = 5

_CSS = """
.trend { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(340px, 100%), 1fr));
         gap: 16px; }
figure svg { display: block; width: 100%; height: auto; }
figure svg text { font-family: inherit; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 22px; margin: 6px 0 10px 0; }
.legend span { display: inline-flex; align-items: center; gap: 6px; font-size: 13px; }
.legend svg { width: 26px; height: 16px; flex: none; }
ul.regressions li { margin: 3px 0; overflow-wrap: anywhere; }
main p, .id { overflow-wrap: anywhere; }
"""


# --------------------------------------------------------------------------- terminal


def render_trend(result: TrendResult, console: Console | None = None) -> None:
    """Print the trend table (a row a metric, a column a report), one line a regression, the
    warnings, how points were judged, and a summary line."""
    console = console or Console()
    steps = [printable(result.label(i)) for i in range(len(result.reports))]
    title = Text("gapscope trend", style="bold")
    title.append(f": {len(result.reports)} reports, {steps[0]} to {steps[-1]}")
    columns = [Column("metric", "name", style="cyan"), Column("better", justify="center")]
    columns += [Column(label.replace(" ", "\n"), justify="right") for label in steps]
    table = FittedTable(columns, title=title)
    for key, metric in result.metrics.items():
        cells: list[Cell] = [key, _ARROWS.get(metric.direction or "", "")]
        cells += [_point_cell(p.value, p.verdict) for p in metric.points]
        table.add_row(*cells)
    if result.metrics:
        # crop=False: a metric name longer than the line stays whole (the terminal wraps it).
        console.print(table, crop=False)
    else:
        # Every metric selected is undefined (null) in every report: a table without a row
        # would look like a rendering fault; the line below names what was left out.
        console.print(title)
        console.print("no metric has a value in any of these reports", highlight=False)
    for key, i in result.regressions:
        point = result.metrics[key].points[i]
        line = printable(f"{point.verdict} at {steps[i]}: {point.message or key}")
        console.print(Text(line, style="red"))
    for warning in result.warnings:
        console.print(Text(printable(f"warning: {warning}"), style="yellow"))
    first = result.reports[0]
    console.print(
        Text(
            f"{REGRESSED_MARK} marks a value that regressed against the first report "
            f"({printable(first['name'])}, {steps[0]}), judged as gapscope check judges it:",
            style="dim",
        )
    )
    for line in result.gate_lines:
        console.print(Text(printable(f"  {line}"), style="dim"))
    if result.undefined:
        console.print(Text(f"  {_undefined_line(result)}", style="dim"))
    regressed = result.regressions
    if regressed:
        metrics = len({key for key, _ in regressed})
        summary = Text(
            f"{len(regressed)} regressed points in {metrics} of {len(result.metrics)} metrics",
            style="bold red",
        )
    elif not result.metrics:
        summary = Text("nothing to follow: no metric has a value", style="bold yellow")
    else:
        summary = Text(
            f"no regression against the first report in {len(result.metrics)} metrics",
            style="bold green",
        )
    console.print(summary)


def _point_cell(value: float | None, verdict: str) -> Text:
    text = format_number(value) if value is not None else "n/a"
    if verdict in MARKED_VERDICTS:
        text += f" {REGRESSED_MARK}"
    return Text(text, style=_POINT_STYLE.get(verdict, ""))


def _undefined_line(result: TrendResult) -> str:
    """The metrics selected but left out of the table: undefined in every report."""
    leaves = sorted({metric_leaf(key) for key in result.undefined})
    return (
        f"left out, undefined (null) in every report ({len(result.undefined)}): {', '.join(leaves)}"
    )


# --------------------------------------------------------------------------- SVG


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering ``[low, high]``, about ``count`` of them.

    >>> _nice_ticks(0.61, 0.74)
    [0.625, 0.65, 0.675, 0.7, 0.725]
    >>> _nice_ticks(0, 3000, 4)
    [0, 1000, 2000, 3000]
    >>> _nice_ticks(-1.7e308, 1.7e308, 3)  # the span is beyond the float range
    [-1e+308, 0.0, 1e+308]
    >>> _nice_ticks(1.0, 1.0000000000000004)  # a step below the values' precision
    [1.0]
    """
    half = high / 2 - low / 2  # not high - low: that overflows to inf near the float limits
    if not 0 < half < math.inf:
        return [low] if math.isfinite(low) else []
    raw = min(half / max(1, count - 1) * 2, sys.float_info.max)
    exponent = math.floor(math.log10(raw))
    # An int power keeps round ticks exact; past 1e300 a float one (10**309 has no float).
    magnitude = 10**exponent if exponent < 300 else 10.0**exponent
    candidates = [c for m in (1, 2, 2.5, 5, 10) if 0 < (c := m * magnitude) < math.inf]
    if not candidates:  # raw is subnormal: no round step to draw
        return [low]
    # The round step nearest the raw one (by ratio): 4 to 8 ticks rather than 2 or 3.
    step = min(candidates, key=lambda c: abs(math.log(c / raw)))
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    tick = first
    # A bounded count: ``tick += step`` never passes ``high`` when the step is below the
    # precision of the values (a plot of values one ulp apart).
    for _ in range(4 * count + 1):
        if not tick <= high + step * 1e-9:
            break
        ticks.append(round(tick, 12))
        tick += step
    return list(dict.fromkeys(ticks))


def _tick_text(value: float, ticks: Sequence[float]) -> str:
    """A tick label with as many decimals as the tick spacing needs.

    >>> [_tick_text(t, [0.6, 0.65, 0.7]) for t in (0.6, 0.65)], _tick_text(2000.0, [0, 2000])
    (['0.60', '0.65'], '2000')
    >>> _tick_text(1e308, [-1e308, 0.0, 1e308])
    '1e+308'
    """
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else abs(value) or 1.0
    if not (step < 1e15 and abs(value) < 1e15):  # decimals say nothing there: 1.7e+308
        return f"{value:.4g}"
    decimals = 0
    while decimals < 10 and abs(step * 10**decimals - round(step * 10**decimals)) > 1e-6:
        decimals += 1
    return f"{value:.{decimals}f}"


def trend_svg(result: TrendResult, metric: TrendMetric) -> str:
    """One metric against the axis (step or position) as an inline SVG element."""
    xs = [float(x) for x in result.xs]
    points = metric.points
    ys = [p.value for p in points]
    extent = [
        v
        for p in points
        for v in ([p.value] if p.value is not None else []) + list(p.ci or ())
        if math.isfinite(v)
    ]
    if not extent:
        return '<p class="muted">No finite value in any report.</p>'
    ylo, yhi = _padded_range(min(extent), max(extent))
    yticks = [t for t in _nice_ticks(ylo, yhi) if ylo <= t <= yhi]
    xlo, xhi = min(xs), max(xs)
    if xhi == xlo:
        xlo, xhi = xlo - 1, xhi + 1
    xpad = (xhi - xlo) * 0.04
    xlo, xhi = xlo - xpad, xhi + xpad
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM

    def px(x: float) -> float:
        return _LEFT + (x - xlo) / (xhi - xlo) * plot_w

    def py(y: float) -> float:
        # In halves, as the range may span more than the largest float; a value beyond the
        # range (an infinity) is drawn at its edge.
        y = min(max(y, ylo), yhi)
        return _TOP + (yhi / 2 - y / 2) / (yhi / 2 - ylo / 2) * plot_h

    distinct = sorted(set(xs))
    xticks = distinct if len(distinct) <= 6 else _nice_ticks(min(xs), max(xs), 5)
    parts = [
        f'<svg viewBox="0 0 {_W} {_H}" role="img" '
        f'aria-label="{_e(metric.metric)} against {_e(result.axis)}">',
        f'<rect x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" fill="#fbfcfe" '
        'stroke="#d5dbe5"/>',
    ]
    for t in yticks:
        y = py(t)
        parts.append(
            f'<line x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
            'stroke="#e4e8ef"/>'
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="12" '
            f'fill="#4a5466">{_e(_tick_text(t, yticks))}</text>'
        )
    for t in xticks:
        if not xlo <= t <= xhi:
            continue
        x = px(t)
        label = _tick_text(t, xticks) if len(distinct) > 6 else _axis_text(t)
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_TOP + plot_h}" y2="{_TOP + plot_h + 4}" '
            f'stroke="#8a94a6"/><text x="{x:.1f}" y="{_TOP + plot_h + 17}" '
            f'text-anchor="middle" font-size="12" fill="#4a5466">{_e(label)}</text>'
        )
    axis_name = "step" if result.axis == AXIS_STEP else "report (in the order given)"
    parts.append(
        f'<text x="{_LEFT + plot_w / 2:.1f}" y="{_H - 6}" text-anchor="middle" '
        f'font-size="13" fill="#2b4a75">{_e(axis_name)}</text>'
    )
    # The line joins consecutive defined values; an undefined one breaks it.
    run: list[str] = []
    for x, value in zip(xs, ys, strict=True):
        if value is None or math.isnan(value):
            parts.append(_polyline(run))
            run = []
            continue
        run.append(f"{px(x):.1f},{py(value):.1f}")
    parts.append(_polyline(run))
    for i, (x, point) in enumerate(zip(xs, points, strict=True)):
        if point.ci is not None:
            low, high = point.ci
            cx = px(x)
            colour = _RED if point.regressed else _NAVY
            parts.append(
                f'<g stroke="{colour}" stroke-width="1.4" opacity="0.8">'
                f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{py(high):.1f}" y2="{py(low):.1f}"/>'
                f'<line x1="{cx - 4:.1f}" x2="{cx + 4:.1f}" y1="{py(high):.1f}" '
                f'y2="{py(high):.1f}"/><line x1="{cx - 4:.1f}" x2="{cx + 4:.1f}" '
                f'y1="{py(low):.1f}" y2="{py(low):.1f}"/></g>'
            )
        if point.value is None or math.isnan(point.value):
            continue
        parts.append(_marker(px(x), py(point.value), point.verdict, _hover(result, i, point)))
    parts.append("</svg>")
    return "".join(p for p in parts if p)


def _padded_range(low: float, high: float) -> tuple[float, float]:
    """``[low, high]`` widened by 8% of its span on each side (by a little when it is one
    value) for a plot, kept within the float range: values near the float limits (1.7e308)
    have a span and a pad beyond it.

    >>> _padded_range(0.5, 1.5)
    (0.42, 1.58)
    >>> _padded_range(-1.7e308, 1.7e308) == (-sys.float_info.max, sys.float_info.max)
    True
    """
    half = high / 2 - low / 2  # not high - low: that overflows to inf near the float limits
    pad = half * 0.16 or (abs(low) * 0.05 or 0.05)
    return max(low - pad, -sys.float_info.max), min(high + pad, sys.float_info.max)


def _axis_text(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _polyline(run: list[str]) -> str:
    if len(run) < 2:
        return ""
    return (
        f'<polyline points="{" ".join(run)}" fill="none" stroke="{_NAVY}" '
        'stroke-width="1.6" stroke-linejoin="round"/>'
    )


def _marker(cx: float, cy: float, verdict: str, hover: str) -> str:
    title = f"<title>{_e(hover)}</title>"
    if verdict in MARKED_VERDICTS:
        return (
            f'<g><circle cx="{cx:.1f}" cy="{cy:.1f}" r="8.5" fill="none" stroke="{_RED}" '
            f'stroke-width="1.6"/><circle cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="{_RED}"/>'
            f"{title}</g>"
        )
    if verdict == "first":
        return (
            f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="4.5" fill="#fff" stroke="{_NAVY}" '
            f'stroke-width="2">{title}</circle>'
        )
    fill = {"improved": _GREEN, "skipped": _GREY}.get(verdict, _NAVY)
    return f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="4" fill="{fill}">{title}</circle>'


def _hover(result: TrendResult, i: int, point: Any) -> str:
    text = f"{result.label(i)} ({result.reports[i]['name']}): {format_number(point.value)}"
    if point.ci is not None:
        text += f" [{format_number(point.ci[0])}, {format_number(point.ci[1])}]"
    text += " - the first report" if point.verdict == "first" else f" - {point.verdict}"
    if point.message:
        text += f": {point.message}"
    return text


# --------------------------------------------------------------------------- HTML


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _legend() -> str:
    def icon(inner: str) -> str:
        return f'<svg viewBox="0 0 26 16" aria-hidden="true">{inner}</svg>'

    items = [
        (
            icon(
                f'<line x1="1" x2="25" y1="8" y2="8" stroke="{_NAVY}" stroke-width="1.6"/>'
                f'<circle cx="13" cy="8" r="4" fill="{_NAVY}"/>'
            ),
            "a report's value",
        ),
        (
            icon(f'<circle cx="13" cy="8" r="4.5" fill="#fff" stroke="{_NAVY}" stroke-width="2"/>'),
            "the first report, the reference",
        ),
        (
            icon(
                f'<g stroke="{_NAVY}" stroke-width="1.4"><line x1="13" x2="13" y1="1" y2="15"/>'
                '<line x1="9" x2="17" y1="1" y2="1"/><line x1="9" x2="17" y1="15" y2="15"/></g>'
            ),
            "bootstrap interval (analyze --bootstrap)",
        ),
        (
            icon(
                f'<circle cx="13" cy="8" r="7" fill="none" stroke="{_RED}" stroke-width="1.6"/>'
                f'<circle cx="13" cy="8" r="4" fill="{_RED}"/>'
            ),
            "regressed against the first report",
        ),
        (icon(f'<circle cx="13" cy="8" r="4" fill="{_GREEN}"/>'), "improved on it"),
    ]
    return (
        '<div class="legend">'
        + "".join(f"<span>{svg}{_e(text)}</span>" for svg, text in items)
        + "</div>"
    )


def _key(text: str) -> str:
    return "/<wbr>".join(_e(part) for part in text.split("/"))


def render_trend_html(result: TrendResult, *, title: str | None = None) -> str:
    """The trend as one self-contained HTML page: a summary, the table of values (sortable;
    regressed values red and marked ``!``), then a plot a metric against the step.

    Returns:
        The HTML text (UTF-8; no external URL anywhere).
    """
    labels = [result.label(i) for i in range(len(result.reports))]
    heading = title or f"gapscope trend: {len(result.reports)} reports"
    first = result.reports[0]
    header = [
        f"{labels[0]} to {labels[-1]}; checkpoints "
        + ", ".join(dict.fromkeys(str(r[K.CHECKPOINT]) for r in result.reports)),
        f"schema {TREND_SCHEMA} · gapscope {__version__}",
    ]
    regressions = result.regressions
    if regressions:
        items = "".join(
            f"<li><strong>{_e(labels[i])}</strong> "
            f"{_e(result.metrics[key].points[i].message or key)}</li>"
            for key, i in regressions
        )
        summary = (
            f'<p><span class="worrying">{len(regressions)} regressed points</span> in '
            f"{len({k for k, _ in regressions})} of {len(result.metrics)} metrics, against the "
            f"first report ({_e(first['name'])}, {_e(labels[0])}):</p>"
            f'<ul class="regressions">{items}</ul>'
        )
    else:
        summary = (
            f'<p><span class="good">No regression</span> against the first report '
            f"({_e(first['name'])}, {_e(labels[0])}) in {len(result.metrics)} metrics.</p>"
        )
    gate = "".join(f"<li>{_e(line)}</li>" for line in result.gate_lines)
    summary += (
        '<p class="muted">A point regresses when gapscope check, with the first report as '
        "its baseline, finds it regressed:</p>"
        f'<ul class="notes muted">{gate}</ul>'
    )
    if result.undefined:
        summary += f'<p class="muted">{_e(_undefined_line(result))}</p>'
    warnings = "".join(f"<li>{_e(w)}</li>" for w in result.warnings)
    if warnings:
        summary += f'<h3>Warnings</h3><ul class="notes">{warnings}</ul>'
    reports_table = html_table(
        ["report", "file", "checkpoint", "step"],
        [
            [
                _e(labels[i]),
                f'<span class="id">{_key(str(r["name"]))}</span>',
                f'<span class="id">{_e(r[K.CHECKPOINT])}</span>',
                (format_number(r[K.STEP]), r[K.STEP], None, None),
            ]
            for i, r in enumerate(result.reports)
        ],
        [False, False, False, True],
    )
    rows: list[list[str | tuple[str, Any, str | None, str | None]]] = []
    for key, metric in result.metrics.items():
        row: list[str | tuple[str, Any, str | None, str | None]] = [
            _key(key),
            _e(_ARROWS.get(metric.direction or "", "")),
        ]
        for point in metric.points:
            shown = format_number(point.value)
            cls = None
            if point.regressed:
                shown, cls = f"{shown} {REGRESSED_MARK}", "worrying"
            elif point.verdict == "improved":
                cls = "good"
            row.append((shown, point.value, cls, point.message or point.verdict))
        rows.append(row)
    # A table a few reports wide, so that many reports never push the page sideways.
    values_table = "".join(
        html_table(
            ["metric", "better", *(_e(label) for label in labels[start : start + _TABLE_REPORTS])],
            [row[:2] + row[2 + start : 2 + start + _TABLE_REPORTS] for row in rows],
            [False, False, *([True] * len(labels[start : start + _TABLE_REPORTS]))],
        )
        for start in range(0, len(labels), _TABLE_REPORTS)
    )
    figures = "".join(
        f'<figure id="plot-{_e(key)}">{trend_svg(result, metric)}<figcaption><strong>'
        f"{_key(key)}</strong> {_e(_better_text(metric))}"
        f"{'' if metric.gated else ' &#183; tracked, not gated'}</figcaption></figure>"
        for key, metric in result.metrics.items()
    )
    body = (
        f"<section><h2>Summary</h2>{summary}</section>"
        f"<section><h2>Reports</h2>{reports_table}</section>"
        f"<section><h2>Each metric against the {_e(result.axis)}</h2>{_legend()}"
        f'<div class="trend">{figures}</div></section>'
        f'<section><h2>Values</h2>{values_table}<p class="muted">{REGRESSED_MARK}: '
        "regressed against the first report. Hover a value for its verdict.</p></section>"
        '<p class="muted">Generated by gapscope; this file is self-contained.</p>'
    )
    return html_page(heading, header, body, css=_CSS)


def _better_text(metric: TrendMetric) -> str:
    return {K.LOWER: "(↓ lower is better)", K.HIGHER: "(↑ higher is better)"}.get(
        metric.direction or "", ""
    )


def write_trend_html(path: str | os.PathLike[str], result: TrendResult, **kwargs: Any) -> Path:
    """Render with :func:`render_trend_html` and write the page atomically; returns the path."""
    out = Path(path)
    atomic_write_text(out, render_trend_html(result, **kwargs))
    return out
