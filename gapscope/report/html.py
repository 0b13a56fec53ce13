"""One self-contained HTML file for a :class:`Report`: tables, readings and plots, to share.

Everything is inline: the CSS in a ``<style>`` element, every plot a ``data:image/png;base64``
URI, no script, font, stylesheet or image fetched from anywhere, so the file opens the same
offline, from a mail attachment or a CI artifact. Every string from the data is HTML-escaped.
The rows and their readings are the terminal's (:mod:`gapscope.report.terminal`, from the
families of :mod:`gapscope.analysis.families`), the numbers come from the one formatter, and
the plots from the report's own analysis context, never from a second computation.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gapscope.analysis import keys as K
from gapscope.data.atomic import atomic_write_text
from gapscope.errors import GapscopeError
from gapscope.report.model import Report
from gapscope.report.numbers import format_number
from gapscope.report.terminal import (
    pair_rows,
    retrieval_directions,
    scenario_label,
    value_text,
)

__all__ = ["pair_matrix", "render_html", "write_html_report"]

_CSS = """
:root { color-scheme: light; }
body { font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       margin: 0; background: #f6f7f9; color: #1d2330; line-height: 1.45; }
header { background: #1d3557; color: #fff; padding: 22px 32px; }
header h1 { margin: 0 0 6px 0; font-size: 26px; }
header p { margin: 2px 0; color: #d8e2f0; font-size: 14px; }
main { padding: 8px 32px 40px 32px; max-width: 1180px; }
section { background: #fff; border: 1px solid #dde2ea; border-radius: 8px;
          padding: 14px 20px; margin: 18px 0; }
h2 { font-size: 20px; margin: 4px 0 10px 0; color: #1d3557; }
h3 { font-size: 16px; margin: 16px 0 8px 0; color: #2b4a75; }
table { border-collapse: collapse; margin: 6px 0 12px 0; font-size: 13.5px; }
th, td { border-bottom: 1px solid #e4e8ef; padding: 4px 12px 4px 6px; text-align: left;
         vertical-align: top; }
th { background: #eef2f8; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.better { color: #5b6678; font-size: 12px; white-space: nowrap; }
.muted { color: #6b7585; font-size: 13px; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(440px, 1fr));
         gap: 16px; }
figure { margin: 0; background: #fff; border: 1px solid #e4e8ef; border-radius: 6px;
         padding: 6px; }
figure img { display: block; width: 100%; height: auto; }
figcaption { font-size: 12.5px; color: #4a5466; margin-top: 4px; }
ul.notes li { margin: 3px 0; }
.matrices { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr));
            column-gap: 20px; }
.cols { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr));
        column-gap: 28px; align-items: start; }
"""

_ARROWS = {K.HIGHER: "&#8593; higher is better", K.LOWER: "&#8595; lower is better"}

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


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool]) -> str:
    header = "".join(f"<th>{h}</th>" for h in head)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{c}</td>' if num else f"<td>{c}</td>"
            for c, num in zip(row, numeric, strict=True)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


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


def _summary_table(report: Report) -> str:
    """One row a pair with the headline numbers, and R@1 both ways."""
    pairs = report.pairs
    columns = [
        (label, path)
        for label, path in _HEADLINES
        if any(_get(entry, path) is not None for entry in pairs.values())
    ]
    k = K.recall_key(report.params[K.P_K][0])
    if not columns and not any(entry.get(K.RECALL.name) for entry in pairs.values()):
        return ""
    rows = []
    for pair, entry in pairs.items():
        a, _, b = pair.partition("-")
        recall = entry.get(K.RECALL.name, {})
        cells = [_e(pair)] + [_num(_get(entry, path)) for _, path in columns]
        cells += [_num(recall.get(K.direction_key(q, t), {}).get(k)) for q, t in ((a, b), (b, a))]
        rows.append(cells)
    head = ["pair"] + [f"{_e(label)}<br>{_better(report, path[-1])}" for label, path in columns]
    head += [
        f"{_e(k)} a&#8594;b<br>{_better(report, k)}",
        f"{_e(k)} b&#8594;a<br>{_better(report, k)}",
    ]
    return (
        _table(head, rows, [False] + [True] * (len(head) - 1))
        + '<p class="muted">a and b are the first and second modality of the pair '
        "(e.g. image-text: a&#8594;b is image&#8594;text).</p>"
    )


def _modality_table(report: Report, names: Sequence[str]) -> str:
    keys: list[str] = []
    for m in names:
        for key, value in report.modalities.get(m, {}).items():
            if (value is None or isinstance(value, int | float)) and key not in keys:
                keys.append(key)
    if not keys:
        return ""
    rows = [
        [_e(key)]
        + [_num(report.modalities.get(m, {}).get(key)) for m in names]
        + [_better(report, key)]
        for key in keys
    ]
    return _table(
        ["metric", *(_e(m) for m in names), "better"], rows, [False] + [True] * len(names) + [False]
    )


def _retrieval_table(report: Report, pair: str) -> str:
    directions = retrieval_directions(report, pair)
    ks = [K.recall_key(k) for k in report.params[K.P_K]]
    rows = []
    for direction, entry in directions:
        src, dst = direction.split("->")
        cells = [_e(direction)]
        cells += [_e(value_text(entry.get(k), entry, k, percent=True)) for k in ks]
        cells.append(
            _e(value_text(entry.get(K.MAP.name), entry, K.MAP.name, percent=True))
            if src == dst
            else ""
        )
        cells.append(_num(entry.get(K.N_QUERIES.name)))
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
    rows = []
    for name, scenario in whatif.items():
        recall = scenario.get(K.RECALL.name, {})
        uni = scenario.get(K.UNIFORMITY.name, {})
        cells = [
            f'{_e(scenario_label(name))} <span class="muted">({_e(name)})</span>',
            _num(scenario.get(K.GAP.name)),
        ]
        cells += [" / ".join(_num(recall.get(d, {}).get(k)) for k in ks) for d in directions]
        cells += [_num(uni.get(m)) for m in (a, b)]
        rows.append(cells)
    head = [
        "scenario",
        "gap",
        *[f"{_e(d)} {_e('/'.join(ks))}" for d in directions],
        *[f"uniformity {_e(m)}" for m in (a, b)],
    ]
    return (
        _table(head, rows, [False] + [True] * (len(head) - 1))
        + '<p class="muted">"mean-centred": each modality mean-centred; "shifted f x gap": '
        "both modalities moved towards each other by a fraction f of the gap vector; all "
        "re-normalised. Gap and uniformity: lower is better; recall: higher is better.</p>"
    )


def _pair_section(report: Report, pair: str) -> str:
    entry = report.pairs.get(pair, {})
    parts = [f"<section><h2>{_e(pair)}</h2>"]
    rows = pair_rows(report, pair)
    if rows:
        parts.append(
            _table(
                ["metric", "value", "reading"],
                [[_e(label), _e(value), _e(reading)] for label, value, reading in rows],
                [False, True, False],
            )
        )
    if retrieval_directions(report, pair):
        parts.append(f"<h3>Retrieval</h3>{_retrieval_table(report, pair)}")
    whatif = entry.get(K.WHATIF.name)
    if whatif:
        parts.append("<h3>What if the gap were closed?</h3>" + _whatif_table(report, pair, whatif))
    leaves = _leaves("", entry, skip=(K.RECALL.name, K.WHATIF.name))
    if leaves:
        table = _table(
            ["key", "value", "better"],
            [[_e(path), _num(v), _better(report, leaf)] for path, leaf, v in leaves],
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
                f'<td class="num">{"&#8212;" if i == j else _num(v)}</td>'
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
    rows = [[_e(t)] + [_num(v.get(c.name)) for c in columns] for t, v in report.tuples.items()]
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


def render_html(
    report: Report, *, plots: Sequence[Any] | None = None, title: str | None = None
) -> str:
    """The report as one self-contained HTML page (inline CSS, plots as base64 PNG data URIs).

    Sections: a summary of every pair, the input and per-modality metrics, modality x modality
    matrices when there are three or more modalities, GRAM volumes, plots, then each pair (its
    rows with readings, retrieval, what-ifs and every value) and the notes.

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
    summary = _summary_table(report)
    if summary:
        parts.append(f"<section><h2>Summary</h2>{summary}</section>")
    input_rows = [
        [
            _e(m),
            _num(info.get(K.ROWS)),
            _num(info.get(K.DIM)),
            _e(info.get(K.DTYPE, "")),
            _num(info.get(K.RAW_NORM_MEAN)),
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
    modality_part = f"<div><h2>Each modality</h2>{modality_table}</div>" if modality_table else ""
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
    parts.append("</main></body></html>\n")
    return "\n".join(p for p in parts if p)


def write_html_report(path: str | os.PathLike[str], report: Report, **kwargs: Any) -> Path:
    """Render with :func:`render_html` and write the page atomically; returns the path."""
    out = Path(path)
    atomic_write_text(out, render_html(report, **kwargs))
    return out
