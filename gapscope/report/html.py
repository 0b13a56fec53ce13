"""One self-contained HTML file for a :class:`Report`: tables, readings and plots, to share.

Everything is inline: the CSS in a ``<style>`` element, the table sorting in one
``<script>`` element, every plot a ``data:image/png;base64`` URI; no script, font,
stylesheet or image is fetched from anywhere (a Content-Security-Policy forbids it), so the
file opens the same offline, from a mail attachment or a CI artifact. Every string from the
data is HTML-escaped. The rows and their readings are the terminal's
(:mod:`gapscope.report.terminal`, from the families of :mod:`gapscope.analysis.families`),
the numbers come from the one formatter, and the plots from the report's own analysis
context, never from a second computation.

The page reads like the terminal report: a summary in words (what looks good, what is worth
a look, from the bands of :func:`gapscope.analysis.readings.tone_of`), the plain-words
reading beside each value, values coloured by their band (what-if values by whether they
beat the embeddings as they are), a banner when the encoder had random weights. Tables sort
by a click on a heading; a value's exact number (and its reading) shows on hover. The layout
fits the window down to phone widths: cells wrap, names break only after ``/``, grids become
one column, and below 640 px the wide tables stack into label/value lines.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gapscope.analysis import keys as K
from gapscope.analysis.readings import GOOD, WORRYING, read_value, tone_of
from gapscope.data.atomic import atomic_write_text
from gapscope.data.weights import encoder_name, random_init_seed
from gapscope.errors import GapscopeError
from gapscope.report.model import Report
from gapscope.report.numbers import format_number, format_percent
from gapscope.report.run import has_random_weights
from gapscope.report.terminal import (
    RowLine,
    pair_lines,
    retrieval_directions,
    scenario_label,
    value_text,
    whatif_change,
    whatif_scenarios,
)

__all__ = ["html_page", "html_table", "pair_matrix", "render_html", "write_html_report"]

_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       margin: 0; background: #f6f7f9; color: #1d2330; line-height: 1.45; }
header { background: #1d3557; color: #fff; padding: 22px 32px; }
header h1 { margin: 0 0 6px 0; font-size: 26px; overflow-wrap: anywhere; }
header p { margin: 2px 0; color: #d8e2f0; font-size: 14px; overflow-wrap: anywhere; }
main { padding: 8px 32px 40px 32px; max-width: 1180px; }
section { background: #fff; border: 1px solid #dde2ea; border-radius: 8px;
          padding: 14px 20px; margin: 18px 0; min-width: 0; }
h2 { font-size: 20px; margin: 4px 0 10px 0; color: #1d3557; }
h3 { font-size: 16px; margin: 16px 0 8px 0; color: #2b4a75; }
table { border-collapse: collapse; margin: 6px 0 12px 0; font-size: 13.5px; max-width: 100%; }
th, td { border-bottom: 1px solid #e4e8ef; padding: 4px 12px 4px 6px; text-align: left;
         vertical-align: top; overflow-wrap: break-word; }
th { background: #eef2f8; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num span.v { white-space: nowrap; }
.reading { color: #5b6678; font-size: 12.5px; }
td .reading { display: block; text-align: left; color: #5b6678; font-weight: 400; }
.better { color: #5b6678; font-size: 12px; }
th .better { display: block; font-weight: 400; }
td .better { white-space: nowrap; }
.muted { color: #6b7585; font-size: 13px; }
.good { color: #1e7b34; font-weight: 600; }
.worrying { color: #b3261e; font-weight: 600; }
.up { color: #1e7b34; }
.down { color: #b3261e; }
.banner { background: #fdecea; border: 2px solid #b3261e; color: #6b1410; border-radius: 8px;
          padding: 12px 18px; margin: 18px 0; font-size: 15px; }
.banner strong { color: #b3261e; }
.verdicts { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(320px, 100%), 1fr));
            gap: 6px 28px; }
.verdicts h3 { margin-top: 4px; }
.verdicts ul { margin: 0 0 8px 0; padding-left: 20px; }
.verdicts li { margin: 4px 0; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(440px, 100%), 1fr));
         gap: 16px; }
figure { margin: 0; background: #fff; border: 1px solid #e4e8ef; border-radius: 6px;
         padding: 6px; min-width: 0; }
figure img { display: block; width: 100%; height: auto; }
figcaption { font-size: 12.5px; color: #4a5466; margin-top: 4px; }
ul.notes li { margin: 3px 0; overflow-wrap: anywhere; }
.matrices { display: grid;
            grid-template-columns: repeat(auto-fill, minmax(min(300px, 100%), 1fr));
            column-gap: 20px; }
.cols { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(420px, 100%), 1fr));
        column-gap: 28px; align-items: start; }
.cols > div, .matrices > div { min-width: 0; }
.cols > .span { grid-column: 1 / -1; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th:hover, table.sortable th:focus { background: #dde6f3; }
table.sortable th[aria-sort="ascending"]::after { content: " \\25B2"; font-size: 10px; }
table.sortable th[aria-sort="descending"]::after { content: " \\25BC"; font-size: 10px; }
td[title] { cursor: help; }
details summary { cursor: pointer; }
@media (max-width: 900px) {
  header { padding: 16px 18px; }
  main { padding: 4px 14px 30px 14px; }
  section { padding: 12px 12px; }
  th, td { padding: 4px 6px 4px 4px; }
}
@media (max-width: 640px) {
  table.stack, table.stack tbody, table.stack tr, table.stack td { display: block; width: 100%; }
  table.stack thead { display: none; }
  table.stack tr { border-bottom: 1px solid #c9d1dd; padding: 4px 0; }
  table.stack td { border: 0; text-align: left; padding: 1px 4px 1px 40%; position: relative; }
  table.stack td::before { content: attr(data-label); position: absolute; left: 4px;
                           width: calc(40% - 12px); font-weight: 600; color: #2b4a75; }
  table.stack td:first-child { padding-left: 4px; font-weight: 600; }
  table.stack td:first-child::before { content: none; }
  table.stack td:empty { display: none; }
  table.stack td.num { text-align: left; }
}
"""

# Sorting: a click (or Enter) on a heading sorts the rows by that column, numbers by their
# exact value (data-value), text alphabetically; again reverses. No library, no network.
_SCRIPT = """
(function () {
  function key(cell) {
    var v = cell ? cell.getAttribute("data-value") : null;
    if (v !== null && v !== "" && !isNaN(parseFloat(v))) { return [0, parseFloat(v)]; }
    var t = cell ? cell.textContent.trim().toLowerCase() : "";
    return t === "" || t === "n/a" ? [2, ""] : [1, t];
  }
  function compare(a, b) {
    if (a[0] !== b[0]) { return a[0] - b[0]; }
    return a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0;
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var head = table.tHead, body = table.tBodies[0];
    if (!head || !body) { return; }
    var heads = head.rows[head.rows.length - 1].cells;
    Array.prototype.forEach.call(heads, function (th, column) {
      th.tabIndex = 0;
      th.setAttribute("aria-sort", "none");
      th.title = "sort by this column";
      function sort() {
        var order = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (r, s) {
          var a = key(r.cells[column]), b = key(s.cells[column]);
          var c = compare(a, b);
          return a[0] === 2 || b[0] === 2 ? c : order * c;
        });
        Array.prototype.forEach.call(heads, function (h) { h.setAttribute("aria-sort", "none"); });
        th.setAttribute("aria-sort", order === 1 ? "ascending" : "descending");
        rows.forEach(function (row) { body.appendChild(row); });
      }
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sort(); }
      });
    });
  });
})();
"""

# Nothing may be fetched: images are data: URIs, style and script inline.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

_ARROWS = {K.HIGHER: "&#8593; higher is better", K.LOWER: "&#8595; lower is better"}
_TONE_CLASSES = {GOOD: "good", WORRYING: "worrying"}
_CHANGE_CLASSES = {"better": "up", "worse": "down"}

#: Headline columns of the summary table, and the matrices drawn for three or more
#: modalities: (label, key path inside a pair entry).
_HEADLINES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("gap", (K.GAP.name,)),
    ("paired cosine", (K.PAIRED_COSINE.name,)),
    ("alignment", (K.ALIGNMENT.name,)),
    ("MIR", (K.MIR.name,)),
    ("separability", (K.SEPARABILITY.name,)),
    ("CKA", (K.CKA.name,)),
    ("AUC", (K.SIMILARITY.name, K.AUC.name)),
)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any) -> str:
    return _e(format_number(value))


def _key(text: str) -> str:
    """A key path, escaped, that may break after each ``/`` (and nowhere else)."""
    return "/<wbr>".join(_e(part) for part in str(text).split("/"))


def _exact(value: Any) -> str | None:
    """The number as the JSON report stores it (8 significant digits), for hover and sort."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return str(value) if isinstance(value, int) else f"{value:.8g}"


class _Cell:
    """A table cell: its HTML, and for a number its exact value (sorting, hover), a
    reading shown under it, and a class (a tone, or a what-if's better/worse)."""

    def __init__(
        self,
        content: str,
        *,
        number: Any = None,
        reading: str | None = None,
        cls: str | None = None,
        hover: str | None = None,
    ) -> None:
        self.content = content
        self.exact = _exact(number)
        self.reading = reading
        self.cls = cls
        self.hover = hover


def _value_cell(
    value: Any,
    text: str | None = None,
    *,
    reading: str | None = None,
    tone: str | None = None,
    show_reading: bool = False,
) -> _Cell:
    """A number: shown as ``text`` (default: the formatter's), coloured by its tone, its
    exact value and reading on hover, the reading under it when ``show_reading``."""
    lines = (format_number(value) if text is None else text).split("\n")
    shown = "<br>".join(f'<span class="v">{_e(line)}</span>' for line in lines)
    cls = _TONE_CLASSES.get(tone or "")
    return _Cell(
        shown,
        number=value,
        reading=reading if show_reading else None,
        cls=cls,
        hover=reading,
    )


def _better(report: Report, leaf: str) -> str:
    d = K.direction_of(leaf, report.directions)
    return f'<span class="better">{_ARROWS[d]}</span>' if d else ""


def _get(entry: Any, path: Sequence[str]) -> Any:
    for key in path:
        if not isinstance(entry, Mapping) or key not in entry:
            return None
        entry = entry[key]
    return entry


def pair_matrix(
    pairs: Mapping[str, Mapping[str, Any]],
    path: Sequence[str],
    modalities: Sequence[str],
    *,
    diagonal: float | None = None,
) -> list[list[float | None]]:
    """A per-pair value as a symmetric modality x modality matrix (for display).

    ``pairs`` is a report's ``pairs`` section; ``path`` the keys of the value inside each pair
    entry (e.g. ``("gap",)`` or ``("similarity", "auc")``). Cell ``[i][j]`` holds the value of
    pair ``"<m_i>-<m_j>"`` or ``"<m_j>-<m_i>"``; the diagonal holds ``diagonal``; a missing
    pair or value is ``None``.

    Example:
        >>> pairs = {"image-text": {"gap": 0.8}, "image-audio": {"gap": 0.5},
        ...          "text-audio": {"gap": 0.3}}
        >>> pair_matrix(pairs, ("gap",), ["image", "text", "audio"])
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
            value = None if entry is None else _get(entry, path)
            row.append(
                None
                if isinstance(value, bool) or not isinstance(value, int | float)
                else float(value)
            )
        matrix.append(row)
    return matrix


def _table(
    head: Sequence[str],
    rows: Sequence[Sequence[str | _Cell]],
    numeric: Sequence[bool],
    *,
    sortable: bool = True,
    stack: bool = True,
) -> str:
    """An HTML table; ``head`` is HTML, string cells are HTML, :class:`_Cell` cells carry
    their exact value (``data-value``, sorting), hover text and class. Each cell repeats
    its column's heading (``data-label``) for the stacked layout of narrow windows."""
    classes = " ".join(c for c, on in (("sortable", sortable), ("stack", stack)) if on)
    labels = [_e(html.unescape(_strip_tags(h))) for h in head]
    header = "".join(f"<th>{h}</th>" for h in head)
    body = []
    for row in rows:
        cells = []
        for cell, num, label in zip(row, numeric, labels, strict=True):
            attrs = [f'data-label="{label}"']
            classes_ = ["num"] if num else []
            content = cell
            if isinstance(cell, _Cell):
                content = cell.content
                if cell.cls:
                    classes_.append(cell.cls)
                if cell.exact is not None:
                    attrs.append(f'data-value="{cell.exact}"')
                hover = " ".join(p for p in (cell.exact, cell.hover and f"({cell.hover})") if p)
                if hover:
                    attrs.append(f'title="{_e(hover)}"')
                if cell.reading:
                    content += f'<span class="reading">{_e(cell.reading)}</span>'
            if classes_:
                attrs.append(f'class="{" ".join(classes_)}"')
            cells.append(f"<td {' '.join(attrs)}>{content}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<table class="{classes}"><thead><tr>{header}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _strip_tags(text: str) -> str:
    """The words of a heading's HTML (``gap<br><span>...</span>`` -> ``gap ...``)."""
    out, inside = [], False
    for ch in text.replace("<br>", " "):
        if ch == "<":
            inside = True
        elif ch == ">":
            inside = False
        elif not inside:
            out.append(ch)
    return " ".join("".join(out).split())


def _leaves(prefix: str, value: Any, skip: Sequence[str] = ()) -> list[tuple[str, str, Any]]:
    """(path, leaf key, value) for every number/bool/None leaf, in insertion order."""
    if isinstance(value, Mapping):
        out: list[tuple[str, str, Any]] = []
        for key, sub in value.items():
            if key not in skip and not str(key).endswith(K.ci_key("")):
                out += _leaves(f"{prefix}/{key}" if prefix else str(key), sub)
        return out
    if value is None or isinstance(value, int | float | bool):
        return [(prefix, prefix.rsplit("/", 1)[-1], value)]
    return []


def _uniformity_t(report: Report) -> float:
    t = report.params.get(K.P_UNIFORMITY_T, 2.0)
    return float(t) if isinstance(t, int | float) else 2.0


def _summary_table(report: Report) -> str:
    """One row a pair with the headline numbers (coloured by band, reading on hover), and
    R@1 both ways."""
    pairs = report.pairs
    columns = [
        (label, path)
        for label, path in _HEADLINES
        if any(_get(entry, path) is not None for entry in pairs.values())
    ]
    k = K.recall_key(report.params[K.P_K][0])
    if not columns and not any(entry.get(K.RECALL.name) for entry in pairs.values()):
        return ""
    t = _uniformity_t(report)
    rows: list[list[str | _Cell]] = []
    for pair, entry in pairs.items():
        a, _, b = pair.partition("-")
        recall = entry.get(K.RECALL.name, {})
        cells: list[str | _Cell] = [_e(pair)]
        for _, path in columns:
            value = _get(entry, path)
            holder = _get(entry, path[:-1]) if len(path) > 1 else entry
            cells.append(
                _value_cell(
                    value,
                    reading=read_value(path[-1], value, uniformity_t=t),
                    tone=tone_of(path[-1], value, entry=holder, uniformity_t=t),
                )
            )
        for q, key in ((a, b), (b, a)):
            value = recall.get(K.direction_key(q, key), {}).get(k)
            cells.append(_value_cell(value, format_percent(value)))
        rows.append(cells)
    head = ["pair"] + [f"{_e(label)}<br>{_better(report, path[-1])}" for label, path in columns]
    head += [
        f"{_e(k)} a&#8594;b<br>{_better(report, k)}",
        f"{_e(k)} b&#8594;a<br>{_better(report, k)}",
    ]
    return (
        _table(head, rows, [False] + [True] * (len(head) - 1))
        + '<p class="muted">a and b are the first and second modality of the pair '
        "(e.g. image-text: a&#8594;b is image&#8594;text). Green: in the band the reading "
        "calls good; red: in the band it calls worrying; hover a value for its exact number "
        "and reading; click a heading to sort.</p>"
    )


def _verdicts(report: Report) -> str:
    """The summary in words: what looks good and what is worth a look, from the tones of
    every pair's rows (a per-modality row once), random weights first."""
    good: list[str] = []
    worrying: list[str] = []
    seen: set[tuple[str, str]] = set()
    between = 0
    for pair in report.pairs:
        for line in pair_lines(report, pair):
            if (line.label, line.text) in seen or line.value is None:
                continue
            seen.add((line.label, line.text))
            if line.tone is None:
                between += 1
                continue
            item = _verdict_item(pair, line)
            (good if line.tone == GOOD else worrying).append(item)
    inp = report.to_dict().get(K.INPUT_SECTION, {})
    if has_random_weights(inp):
        worrying.insert(
            0,
            "<li><strong>random weights</strong>: the encoder was not pretrained, so every "
            "value describes an untrained network</li>",
        )
    if not good and not worrying:
        return (
            '<p class="muted">No value falls in a band the readings call good or worrying; '
            "each pair&#8217;s table below reads every value.</p>"
        )
    blocks = []
    for title, items, cls in (
        ("Looks good", good, "good"),
        ("Worth a look", worrying, "worrying"),
    ):
        body = "".join(items) if items else '<li class="muted">nothing</li>'
        blocks.append(f'<div><h3 class="{cls}">{title}</h3><ul>{body}</ul></div>')
    rest = (
        f'<p class="muted">{between} other values lie between the bands or have none '
        "(MIR, CKA, recall, effective rank); the tables below read each of them. The bands "
        "are rough guides from the literature: compare checkpoints with gapscope diff.</p>"
    )
    return f'<div class="verdicts">{"".join(blocks)}</div>{rest}'


def _verdict_item(pair: str, line: RowLine) -> str:
    cls = _TONE_CLASSES[line.tone or ""]
    reading = f": {_e(line.reading)}" if line.reading else ""
    # A modality's own row (cone (image)) names its modality already, not the pair.
    where = "" if line.modality else f"<strong>{_e(pair)}</strong> "
    return (
        f"<li>{where}{_e(line.label)} "
        f'<span class="{cls}" title="{_e(_exact(line.value) or "")}">{_e(line.text)}</span>'
        f"{reading}</li>"
    )


def _modality_table(report: Report, names: Sequence[str]) -> str:
    keys: list[str] = []
    for m in names:
        for key, value in report.modalities.get(m, {}).items():
            if (value is None or isinstance(value, int | float)) and key not in keys:
                keys.append(key)
    if not keys:
        return ""
    t = _uniformity_t(report)
    rows: list[list[str | _Cell]] = []
    for key in keys:
        cells: list[str | _Cell] = [_key(key)]
        for m in names:
            entry = report.modalities.get(m, {})
            value = entry.get(key)
            cells.append(
                _value_cell(
                    value,
                    reading=read_value(key, value, uniformity_t=t),
                    tone=tone_of(key, value, entry=entry, uniformity_t=t),
                    show_reading=True,
                )
            )
        cells.append(_better(report, key))
        rows.append(cells)
    return _table(
        ["metric", *(_e(m) for m in names), "better"], rows, [False] + [True] * len(names) + [False]
    )


def _retrieval_table(report: Report, pair: str) -> str:
    directions = retrieval_directions(report, pair)
    ks = [K.recall_key(k) for k in report.params[K.P_K]]
    rows: list[list[str | _Cell]] = []
    for direction, entry in directions:
        src, dst = direction.split("->")
        cells: list[str | _Cell] = [_e(direction)]
        # The interval (with --bootstrap) on a line of its own, as in the terminal.
        cells += [
            _value_cell(
                entry.get(k), value_text(entry.get(k), entry, k, percent=True, stacked=True)
            )
            for k in ks
        ]
        cells.append(
            _value_cell(
                entry.get(K.MAP.name),
                value_text(entry.get(K.MAP.name), entry, K.MAP.name, percent=True, stacked=True),
            )
            if src == dst
            else ""
        )
        cells.append(_value_cell(entry.get(K.N_QUERIES.name)))
        cells.append(_e(entry.get(K.RELEVANCE.name, K.GROUPS) if src == dst else "true pairs"))
        rows.append(cells)
    head = ["direction", *ks, K.MAP.name, "queries", "relevance"]
    return (
        _table(head, rows, [False] + [True] * (len(ks) + 2) + [False])
        + '<p class="muted">R@K is the share of queries with a relevant item in their top '
        "K; higher is better.</p>"
    )


def _whatif_table(report: Report, pair: str, whatif: Mapping[str, Any]) -> str:
    a, b = pair.split("-")
    directions = [K.direction_key(q, t) for q, t in ((a, b), (b, a), (a, a), (b, b))]
    ks = [K.recall_key(k) for k in report.params[K.P_K]]
    original = whatif.get(K.ORIGINAL, {})
    zeroshot = any(K.ZEROSHOT.name in values for values in whatif.values())

    def cell(leaf: str, value: Any, before: Any, fmt: Any = format_number) -> str:
        change = whatif_change(report.directions, leaf, value, before, fmt)
        cls = _CHANGE_CLASSES.get(change or "")
        hover = _exact(value) or ""
        if change:
            hover += f" ({change} than as is: {fmt(before)})"
        attrs = f' class="{cls}"' if cls else ""
        return f'<span{attrs} title="{_e(hover)}">{_e(fmt(value))}</span>'

    rows: list[list[str | _Cell]] = []
    for name, scenario in whatif_scenarios(whatif):
        recall = scenario.get(K.RECALL.name, {})
        recall0 = original.get(K.RECALL.name, {})
        uni = scenario.get(K.UNIFORMITY.name, {})
        uni0 = original.get(K.UNIFORMITY.name, {})
        gap = scenario.get(K.GAP.name)
        cells: list[str | _Cell] = [
            f'{_e(scenario_label(name))} <span class="muted">({_e(name)})</span>',
            _Cell(cell(K.GAP.name, gap, original.get(K.GAP.name)), number=gap),
        ]
        for d in directions:
            parts = [
                cell(k, recall.get(d, {}).get(k), recall0.get(d, {}).get(k), format_percent)
                for k in ks
            ]
            cells.append(_Cell(" / ".join(parts), number=recall.get(d, {}).get(ks[0])))
        cells += [
            _Cell(cell(K.UNIFORMITY.name, uni.get(m), uni0.get(m)), number=uni.get(m))
            for m in (a, b)
        ]
        if zeroshot:
            zs = scenario.get(K.ZEROSHOT.name, {})
            zs0 = original.get(K.ZEROSHOT.name, {})
            parts = [
                cell(leaf, zs.get(leaf), zs0.get(leaf), format_percent)
                for leaf in (K.TOP1_ACCURACY.name, K.BALANCED_ACCURACY.name)
            ]
            cells.append(_Cell(" / ".join(parts), number=zs.get(K.TOP1_ACCURACY.name)))
        rows.append(cells)
    head = [
        "scenario",
        "gap",
        *[f"{_key(d)} {_e('/'.join(ks))}" for d in directions],
        *[f"uniformity {_e(m)}" for m in (a, b)],
        *(["zero-shot top-1 / balanced"] if zeroshot else []),
    ]
    return (
        _table(head, rows, [False] + [True] * (len(head) - 1))
        + '<p class="muted">"mean-centred": each modality mean-centred; "shifted f x gap": '
        "both modalities moved towards each other by a fraction f of the gap vector (apart "
        "for a negative f; class prompts move with their modality); all re-normalised. Gap "
        "and uniformity: lower is better; recall and zero-shot accuracy: higher is better. "
        "Green: better than as is; red: worse.</p>"
    )


def _pair_section(report: Report, pair: str) -> str:
    entry = report.pairs.get(pair, {})
    parts = [f'<section id="pair-{_e(pair)}"><h2>{_e(pair)}</h2>']
    lines = pair_lines(report, pair)
    if lines:
        rows: list[list[str | _Cell]] = [
            [
                _e(line.label),
                _value_cell(line.value, line.text, reading=line.reading, tone=line.tone)
                if line.value is not None or line.text
                else "",
                _e(line.reading),
            ]
            for line in lines
        ]
        parts.append(_table(["metric", "value", "reading"], rows, [False, True, False]))
    if retrieval_directions(report, pair):
        parts.append(f"<h3>Retrieval</h3>{_retrieval_table(report, pair)}")
    whatif = entry.get(K.WHATIF.name)
    if whatif:
        parts.append("<h3>What if the gap were closed?</h3>" + _whatif_table(report, pair, whatif))
    leaves = _leaves("", entry, skip=(K.RECALL.name, K.WHATIF.name))
    if leaves:
        table = _table(
            ["key", "value", "better"],
            [[_key(path), _value_cell(v), _better(report, leaf)] for path, leaf, v in leaves],
            [False, True, False],
        )
        parts.append(f"<details><summary>Every value of {_e(pair)}</summary>{table}</details>")
    parts.append("</section>")
    return "".join(parts)


def _matrices(report: Report, names: Sequence[str]) -> str:
    blocks = []
    for label, path in _HEADLINES:
        matrix = pair_matrix(report.pairs, path, names)
        if not any(v is not None for row in matrix for v in row):
            continue
        head = "".join(f"<th>{_e(m)}</th>" for m in names)
        body = "".join(
            f"<tr><th>{_e(m)}</th>"
            + "".join(
                '<td class="num">&#8212;</td>'
                if i == j
                else _matrix_cell(v, path[-1], _uniformity_t(report))
                for j, v in enumerate(row)
            )
            + "</tr>"
            for i, (m, row) in enumerate(zip(names, matrix, strict=True))
        )
        blocks.append(
            f"<div><h3>{_e(label)} {_better(report, path[-1])}</h3><table><thead>"
            f"<tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table></div>"
        )
    if not blocks:
        return ""
    return (
        '<section><h2>Every pair of modalities</h2><div class="matrices">'
        + "".join(blocks)
        + "</div></section>"
    )


def _matrix_cell(value: float | None, leaf: str, uniformity_t: float) -> str:
    tone = tone_of(leaf, value, uniformity_t=uniformity_t)
    classes = " ".join(["num", *([_TONE_CLASSES[tone]] if tone else [])])
    return f'<td class="{classes}" title="{_e(_exact(value) or "")}">{_num(value)}</td>'


def _tuples(report: Report) -> str:
    if not report.tuples:
        return ""
    columns = (
        K.GRAM_VOLUME_MEAN,
        K.GRAM_VOLUME_MEDIAN,
        K.GRAM_VOLUME_STD,
        K.N_TUPLES,
        K.N_EVALUATED,
    )
    rows: list[list[str | _Cell]] = [
        [_e(t)] + [_value_cell(v.get(c.name)) for c in columns] for t, v in report.tuples.items()
    ]
    table = _table(
        ["tuple", "mean", "median", "std", "tuples", "evaluated"],
        rows,
        [False] + [True] * len(columns),
    )
    return (
        "<section><h2>GRAM volume of modality tuples</h2>"
        + table
        + '<p class="muted">Volume of the parallelotope the unit vectors of one item&#8217;s '
        "modalities span (0: perfectly aligned, 1: orthogonal); lower is better.</p>"
        "</section>"
    )


def _plots(report: Report, plots: Sequence[Any] | None) -> tuple[str, list[str]]:
    """The plots section and the plots' notes: the given plots, else those of the report's
    own analysis (when it has one and matplotlib is installed)."""
    notes: list[str] = []
    message = ""
    plot_list: list[Any] = []
    if plots is not None:
        plot_list = list(getattr(plots, "plots", plots))
        notes += list(getattr(plots, "skipped", []))
    elif report.context is not None:
        try:
            from gapscope.report.plots import plot_all

            drawn = plot_all(report)
            plot_list, notes = drawn.plots, list(drawn.skipped)
        except GapscopeError as exc:
            message = str(exc)
    if plot_list:
        figures = "".join(
            f'<figure><img src="data:image/png;base64,{base64.b64encode(p.png).decode("ascii")}"'
            f' alt="{_e(p.title)}"><figcaption>{_e(p.title)}</figcaption></figure>'
            for p in plot_list
        )
        return f'<section><h2>Plots</h2><div class="plots">{figures}</div></section>', notes
    if message:
        return f'<section><h2>Plots</h2><p class="muted">{_e(message)}</p></section>', notes
    return "", notes


def _banner(report: Report) -> str:
    """The random-weights banner: the numbers of an untrained network look like any other."""
    inp = report.to_dict().get(K.INPUT_SECTION, {})
    if not has_random_weights(inp):
        return ""
    model = inp.get(K.MODEL)
    seed = random_init_seed(model)
    name = encoder_name(model) or "the encoder"
    seed_text = f", seed {seed}" if seed is not None else ""
    return (
        '<div class="banner" role="alert"><strong>Random weights.</strong> '
        f"{_e(name)} was not pretrained (random initialisation{_e(seed_text)}; the store was "
        "extracted without --pretrained). Its embeddings carry no meaning: every number on "
        "this page describes an untrained network, however it looks.</div>"
    )


def render_html(
    report: Report, *, plots: Sequence[Any] | None = None, title: str | None = None
) -> str:
    """The report as one self-contained HTML page (inline CSS and script, plots as base64
    PNG data URIs).

    Sections: a random-weights banner when the encoder was not pretrained; a summary (what
    looks good, what is worth a look, in words; the headline numbers of every pair); the
    input and per-modality metrics; modality x modality matrices when there are three or
    more modalities; GRAM volumes; plots; then each pair (its rows with readings, retrieval,
    what-ifs and every value) and the notes.

    Plots: ``plots`` (a list of :class:`~gapscope.report.plots.Plot` or a
    :class:`~gapscope.report.plots.PlotSet`) when given; otherwise those of the report's own
    analysis (:func:`gapscope.report.plots.plot_all`) when the report came from one and
    matplotlib is installed (the page says how to get them when it is not). A report read from
    JSON has no analysis behind it, so no plots.

    Returns:
        The HTML text (UTF-8; no external URL anywhere).
    """
    doc = report.to_dict()
    inp = doc.get(K.INPUT_SECTION, {})
    names = list(inp.get(K.MODALITIES_SECTION, {})) or list(report.modalities)
    heading = title or f"gapscope report: {inp.get(K.SOURCE, '')}"
    model = inp.get(K.MODEL) or {}
    model_text = ", ".join(
        f"{k}={v}"
        for k, v in sorted(model.items())
        if v is not None and not isinstance(v, dict | list)
    )
    plots_html, plot_notes = _plots(report, plots)
    notes = list(dict.fromkeys([*doc.get(K.NOTES_SECTION, []), *plot_notes]))

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(heading)}</title><style>{_CSS}</style></head><body>",
        f"<header><h1>{_e(heading)}</h1>",
        f"<p>schema {_e(doc.get(K.SCHEMA_FIELD, ''))} &#183; gapscope "
        f"{_e(doc.get(K.VERSION_FIELD, ''))} &#183; fingerprint "
        f"{_e(str(inp.get(K.FINGERPRINT, ''))[:16])}</p>",
    ]
    if model_text:
        parts.append(f"<p>model: {_e(model_text)}</p>")
    parts.append("</header><main>")
    parts.append(_banner(report))
    summary = _summary_table(report)
    parts.append(f"<section><h2>Summary</h2>{_verdicts(report)}{summary}</section>")
    input_rows: list[list[str | _Cell]] = [
        [
            _e(m),
            _value_cell(info.get(K.ROWS)),
            _value_cell(info.get(K.DIM)),
            _e(info.get(K.DTYPE, "")),
            _value_cell(info.get(K.RAW_NORM_MEAN)),
            _num(info.get(K.HAS_LABELS)),
        ]
        for m, info in inp.get(K.MODALITIES_SECTION, {}).items()
    ]
    input_table = _table(
        ["modality", "rows", "dim", "dtype", "mean raw norm", "labels"],
        input_rows,
        [False, True, True, False, True, False],
    )
    modality_table = _modality_table(report, names)
    # Three or more modalities: the table (a reading under each value) takes the whole row.
    span = ' class="span"' if len(names) >= 3 else ""
    modality_part = (
        f"<div{span}><h2>Each modality</h2>{modality_table}</div>" if modality_table else ""
    )
    parts.append(
        f'<section class="cols"><div><h2>Input</h2>{input_table}</div>{modality_part}</section>'
    )
    if len(names) >= 3:
        parts.append(_matrices(report, names))
    parts.append(_tuples(report))
    parts.append(plots_html)
    for pair in report.pairs:
        parts.append(_pair_section(report, pair))
    if notes:
        items = "".join(f"<li>{_e(n)}</li>" for n in notes)
        parts.append(f'<section><h2>Notes</h2><ul class="notes">{items}</ul></section>')
    parts.append(
        '<p class="muted">Generated by gapscope; this file is self-contained. '
        "See docs/reading-the-report.md for what each value means.</p>"
    )
    parts.append(f"</main><script>{_SCRIPT}</script></body></html>\n")
    return "\n".join(p for p in parts if p)


def html_page(heading: str, header_lines: Sequence[str], body: str, *, css: str = "") -> str:
    """A self-contained page in the style of the report page, for other gapscope pages (the
    trend page): its stylesheet (plus ``css``), its Content-Security-Policy (nothing is
    fetched), its table-sorting script, a header with ``heading`` and ``header_lines``
    (text, escaped here) and ``body`` (HTML) as the main part."""
    lines = "".join(f"<p>{_e(line)}</p>" for line in header_lines)
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_e(heading)}</title><style>{_CSS}{css}</style></head><body>",
            f"<header><h1>{_e(heading)}</h1>{lines}</header><main>",
            body,
            f"</main><script>{_SCRIPT}</script></body></html>\n",
        ]
    )


def html_table(
    head: Sequence[str],
    rows: Sequence[Sequence[str | tuple[str, Any, str | None, str | None]]],
    numeric: Sequence[bool],
) -> str:
    """A sortable table in the style of the report page, stacking below 640 px. ``head``
    and string cells are HTML; a number cell is ``(shown text, exact value, CSS class,
    hover text)``: shown escaped, sorted by its exact value, its class one of the page's
    (``good``, ``worrying``, ``up``, ``down``)."""
    cells = [
        [
            cell
            if isinstance(cell, str)
            else _Cell(_e(cell[0]), number=cell[1], cls=cell[2], hover=cell[3])
            for cell in row
        ]
        for row in rows
    ]
    return _table(head, cells, numeric)


def write_html_report(path: str | os.PathLike[str], report: Report, **kwargs: Any) -> Path:
    """Render with :func:`render_html` and write the page atomically; returns the path."""
    out = Path(path)
    atomic_write_text(out, render_html(report, **kwargs))
    return out
