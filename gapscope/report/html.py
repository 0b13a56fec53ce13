"""One self-contained HTML file for a :class:`Report`: tables, diagnostics and plots, to share.

Everything is inline: the CSS in a ``<style>`` element, every plot a ``data:image/png;base64``
URI, no script, font, stylesheet or image fetched from anywhere, so the file opens the same
offline, from a mail attachment or a CI artifact. Every string from the data is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gapscope.analysis.diagnostics import DIRECTIONS as DIAGNOSTIC_DIRECTIONS
from gapscope.analysis.diagnostics import pair_matrix
from gapscope.errors import GapscopeError
from gapscope.report.model import Report, direction_of
from gapscope.data.embedding_set import EmbeddingSet

__all__ = ["render_html", "write_html_report"]

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

_ARROWS = {"higher": "&#8593; higher is better", "lower": "&#8595; lower is better"}
_RECALL_EXTRA = ("mAP", "R-precision")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.3g}"
        return f"{value:.4f}"
    return _e(value)


def _direction(key: str) -> str | None:
    return direction_of(key) or DIAGNOSTIC_DIRECTIONS.get(key)


def _better(key: str) -> str:
    d = _direction(key)
    return f'<span class="better">{_ARROWS[d]}</span>' if d else ""


def _flatten(
    prefix: str, value: Any, out: list[tuple[str, str, Any]], skip: Sequence[str] = ()
) -> None:
    """(path, leaf key, value) for every number/bool/None leaf, in insertion order."""
    if isinstance(value, Mapping):
        for key, sub in value.items():
            if key in skip:
                continue
            _flatten(f"{prefix}/{key}" if prefix else str(key), sub, out)
    elif value is None or isinstance(value, int | float | bool):
        out.append((prefix, prefix.rsplit("/", 1)[-1], value))


def _metric_table(entry: Mapping[str, Any], skip: Sequence[str] = ()) -> str:
    rows: list[tuple[str, str, Any]] = []
    _flatten("", entry, rows, skip)
    if not rows:
        return ""
    body = "".join(
        f'<tr><td>{_e(path)}</td><td class="num">{_fmt(v)}</td><td>{_better(leaf)}</td></tr>'
        for path, leaf, v in rows
    )
    return (
        "<table><thead><tr><th>metric</th><th>value</th><th>better</th></tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


def _recall_table(recall: Mapping[str, Any]) -> str:
    columns: list[str] = []
    for entry in recall.values():
        for key in entry:
            if key.startswith("R@") and not key.endswith("_se") and key not in columns:
                columns.append(key)
    columns.sort(key=lambda c: int(c[2:]) if c[2:].isdigit() else 0)
    columns += [c for c in _RECALL_EXTRA if any(c in e for e in recall.values())]
    head = "".join(f"<th>{_e(c)}</th>" for c in ["direction", *columns, "queries", "relevance"])
    body = []
    for direction, entry in recall.items():
        cells = "".join(f'<td class="num">{_fmt(entry.get(c))}</td>' for c in columns)
        relevance = entry.get("relevance", "groups (positives)")
        body.append(
            f"<tr><td>{_e(direction)}</td>{cells}"
            f'<td class="num">{_fmt(entry.get("n_queries"))}</td>'
            f"<td>{_e(relevance)}</td></tr>"
        )
    return (
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        '<p class="muted">R@K is the share of queries with a relevant item in their top K; '
        "higher is better.</p>"
    )


def _modality_table(modalities: Sequence[str], *sections: Mapping[str, Any]) -> str:
    keys: list[str] = []
    for section in sections:
        for m in modalities:
            for key, value in section.get(m, {}).items():
                number = value is None or isinstance(value, int | float)
                if number and key not in keys:
                    keys.append(key)
    if not keys:
        return ""
    head = "".join(f"<th>{_e(m)}</th>" for m in modalities)
    body = []
    for key in keys:
        values = []
        for m in modalities:
            merged: dict[str, Any] = {}
            for section in sections:
                merged.update(section.get(m, {}))
            values.append(f'<td class="num">{_fmt(merged.get(key))}</td>')
        body.append(f"<tr><td>{_e(key)}</td>{''.join(values)}<td>{_better(key)}</td></tr>")
    return (
        f"<table><thead><tr><th>metric</th>{head}<th>better</th></tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _whatif_table(whatif: Mapping[str, Any]) -> str:
    directions: list[str] = []
    modalities: list[str] = []
    for scenario in whatif.values():
        for d in scenario.get("recall", {}):
            if d not in directions:
                directions.append(d)
        for m in scenario.get("uniformity", {}):
            if m not in modalities:
                modalities.append(m)
    head = [
        "scenario",
        "gap",
        *[f"{d} R@K" for d in directions],
        *[f"uniformity {m}" for m in modalities],
    ]
    body = []
    for name, scenario in whatif.items():
        cells = [f"<td>{_e(name)}</td>", f'<td class="num">{_fmt(scenario.get("gap"))}</td>']
        for d in directions:
            entry = scenario.get("recall", {}).get(d, {})
            ks = [k for k in entry if k.startswith("R@")]
            cells.append('<td class="num">' + " / ".join(_fmt(entry[k]) for k in ks) + "</td>")
        for m in modalities:
            cells.append(f'<td class="num">{_fmt(scenario.get("uniformity", {}).get(m))}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    first = next(iter(whatif.values()), {})
    ks = next((list(e) for e in first.get("recall", {}).values()), [])
    k_text = " / ".join(k for k in ks if k.startswith("R@"))
    return (
        "<table><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
        f'<p class="muted">Recall columns give {_e(k_text)}. "centered": each modality '
        'mean-centred; "shift_f": both modalities moved towards each other by a fraction f '
        "of the gap vector; all re-normalised. Gap and uniformity: lower is better; recall: "
        "higher is better.</p>"
    )


def _matrix_table(
    title: str, modalities: Sequence[str], matrix: list[list[float | None]], key: str
) -> str:
    head = "".join(f"<th>{_e(m)}</th>" for m in modalities)
    body = "".join(
        f"<tr><th>{_e(m)}</th>"
        + "".join(
            f'<td class="num">{"&#8212;" if i == j else _fmt(v)}</td>' for j, v in enumerate(row)
        )
        + "</tr>"
        for i, (m, row) in enumerate(zip(modalities, matrix, strict=True))
    )
    return (
        f"<h3>{_e(title)} {_better(key)}</h3>"
        f"<table><thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


_SUMMARY = (
    ("gap", ("gap",)),
    ("paired cosine", ("paired_cosine",)),
    ("alignment", ("alignment",)),
    ("MIR", ("mir",)),
    ("separability", ("separability",)),
    ("CKA", ("cka",)),
    ("AUC", ("similarity", "auc")),
)


def _summary_table(
    pair_names: Sequence[str], pairs: Mapping[str, Any], diag_pairs: Mapping[str, Any]
) -> str:
    """One row a pair with the headline numbers, and R@1 both ways."""
    columns = []
    for label, path in _SUMMARY:
        present = any(
            _get(pairs.get(p, {}), path) is not None
            or _get(diag_pairs.get(p, {}), path) is not None
            for p in pair_names
        )
        if present:
            columns.append((label, path))
    if not columns and not any(pairs.get(p, {}).get("recall") for p in pair_names):
        return ""
    head = "".join(f"<th>{_e(label)}<br>{_better(path[-1])}</th>" for label, path in columns)
    body = []
    for pair in pair_names:
        entry, extra = pairs.get(pair, {}), diag_pairs.get(pair, {})
        cells = []
        for _, path in columns:
            value = _get(entry, path)
            if value is None:
                value = _get(extra, path)
            cells.append(f'<td class="num">{_fmt(value)}</td>')
        recall = entry.get("recall", {})
        a, _, b = pair.partition("-")
        for direction in (f"{a}->{b}", f"{b}->{a}"):
            first = next((k for k in recall.get(direction, {}) if k.startswith("R@")), None)
            value = recall[direction][first] if first else None
            cells.append(f'<td class="num">{_fmt(value)}</td>')
        body.append(f"<tr><td>{_e(pair)}</td>{''.join(cells)}</tr>")
    k_first = next(
        (
            k
            for p in pair_names
            for e in pairs.get(p, {}).get("recall", {}).values()
            for k in e
            if k.startswith("R@")
        ),
        "R@K",
    )
    return (
        f"<table><thead><tr><th>pair</th>{head}<th>{_e(k_first)} a&#8594;b<br>"
        f"{_better('R@1')}</th><th>{_e(k_first)} b&#8594;a<br>{_better('R@1')}</th>"
        f"</tr></thead><tbody>{''.join(body)}</tbody></table>"
        '<p class="muted">a and b are the first and second modality of the pair '
        "(e.g. image-text: a&#8594;b is image&#8594;text).</p>"
    )


def _get(entry: Any, path: Sequence[str]) -> Any:
    for key in path:
        if not isinstance(entry, Mapping) or key not in entry:
            return None
        entry = entry[key]
    return entry


def _plots_section(plots: Sequence[Any]) -> str:
    figures = []
    for plot in plots:
        uri = "data:image/png;base64," + base64.b64encode(plot.png).decode("ascii")
        figures.append(
            f'<figure><img src="{uri}" alt="{_e(plot.title)}">'
            f"<figcaption>{_e(plot.title)}</figcaption></figure>"
        )
    return f'<div class="plots">{"".join(figures)}</div>'


#: Pair keys that :func:`gapscope.analysis.orchestrator.analyze` merges in from :mod:`gapscope.analysis.diagnostics`.
_PAIR_DIAGNOSTICS = (
    "separability",
    "separability_se",
    "separability_rows",
    "cka",
    "gap_direction",
    "similarity",
    "whatif",
)


def _split_diagnostics(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate the extra diagnostics that analyze merged into a report's pair sections, so the
    page shows them in their own tables (modality values stay in one table either way)."""
    pairs, diag_pairs = {}, {}
    for pair, entry in doc.get("pairs", {}).items():
        pairs[pair] = {k: v for k, v in entry.items() if k not in _PAIR_DIAGNOSTICS}
        diag_pairs[pair] = {k: v for k, v in entry.items() if k in _PAIR_DIAGNOSTICS}
    return {**doc, "pairs": pairs}, {"pairs": diag_pairs, "tuples": doc.get("tuples", {})}


def render_html(
    report: Report,
    data: EmbeddingSet | None = None,
    diagnostics: Mapping[str, Any] | None = None,
    *,
    plots: Sequence[Any] | None = None,
    seed: int = 0,
    title: str | None = None,
) -> str:
    """The report as one self-contained HTML page (inline CSS, plots as base64 PNG data URIs).

    Sections: input, per-modality metrics, per-pair metrics and retrieval (from
    ``report.to_dict()``), the extra diagnostics and what-ifs (from ``diagnostics``, the mapping
    :func:`gapscope.analysis.diagnostics.diagnostics` returns; when it is ``None``, from the report, into
    which :func:`gapscope.analysis.orchestrator.analyze` merges them), modality x modality matrices when there are
    three or more modalities, GRAM volumes, plots and notes.

    Plots: ``plots`` (a list of :class:`~gapscope.report.plots.Plot` or a
    :class:`~gapscope.report.plots.PlotSet`) when given; otherwise, with ``data`` given, they are
    drawn by :func:`gapscope.report.plots.plot_all` (seeded by ``seed``) when matplotlib is
    installed, and the page says how to get them when it is not.

    Returns:
        The HTML text (UTF-8; no external URL anywhere).
    """
    doc = report.to_dict()
    if diagnostics is None:
        doc, diag = _split_diagnostics(doc)
    else:
        diag = diagnostics
    names = list(doc.get("input", {}).get("modalities", {})) or list(doc.get("modalities", {}))
    notes: list[str] = [*doc.get("notes", []), *diag.get("notes", [])]

    plot_list: list[Any] = []
    plot_message = ""
    if plots is not None:
        plot_list = list(getattr(plots, "plots", plots))
        notes += list(getattr(plots, "skipped", []))
    elif data is not None:
        try:
            from gapscope.report.plots import plot_all

            drawn = plot_all(data, None, seed=seed)
            plot_list = drawn.plots
            notes += drawn.skipped
        except GapscopeError as exc:
            plot_message = str(exc)

    inp = doc.get("input", {})
    source = inp.get("source", "")
    heading = title or f"gapscope report: {source}"
    model = inp.get("model") or {}
    model_text = ", ".join(
        f"{k}={v}"
        for k, v in sorted(model.items())
        if v is not None and not isinstance(v, dict | list)
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(heading)}</title><style>{_CSS}</style></head><body>",
        f"<header><h1>{_e(heading)}</h1>",
        f"<p>schema {_e(doc.get('schema', ''))} &#183; gapscope "
        f"{_e(doc.get('gapscope_version', ''))} &#183; fingerprint "
        f"{_e(str(inp.get('fingerprint', ''))[:16])}</p>",
    ]
    if model_text:
        parts.append(f"<p>model: {_e(model_text)}</p>")
    parts.append("</header><main>")

    # Input
    rows = []
    for m, info in inp.get("modalities", {}).items():
        rows.append(
            f'<tr><td>{_e(m)}</td><td class="num">{_fmt(info.get("n"))}</td>'
            f'<td class="num">{_fmt(info.get("dim"))}</td><td>{_e(info.get("dtype", ""))}</td>'
            f'<td class="num">{_fmt(info.get("raw_norm_mean"))}</td>'
            f"<td>{_fmt(info.get('has_labels'))}</td></tr>"
        )
    diag_pairs = diag.get("pairs", {})
    pair_names = list(dict.fromkeys([*doc.get("pairs", {}), *diag_pairs]))
    summary = _summary_table(pair_names, doc.get("pairs", {}), diag_pairs)
    if summary:
        parts.append(f"<section><h2>Summary</h2>{summary}</section>")

    input_table = (
        "<h2>Input</h2><table><thead><tr><th>modality</th><th>rows</th><th>dim</th>"
        "<th>dtype</th><th>mean raw norm</th><th>labels</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    table = _modality_table(names, doc.get("modalities", {}), diag.get("modalities", {}))
    modality_part = f"<div><h2>Each modality</h2>{table}</div>" if table else ""
    parts.append(f'<section class="cols"><div>{input_table}</div>{modality_part}</section>')

    # Matrices for three or more modalities
    if len(names) >= 3:
        merged = {
            p: {**doc.get("pairs", {}).get(p, {}), **diag_pairs.get(p, {})} for p in pair_names
        }
        blocks = []
        for label, path, key in (
            ("Modality gap", "gap", "gap"),
            ("Paired cosine", "paired_cosine", "paired_cosine"),
            ("Alignment", "alignment", "alignment"),
            ("MIR", "mir", "mir"),
            ("Separability", "separability", "separability"),
            ("CKA", "cka", "cka"),
            ("Positive-vs-negative AUC", "similarity/auc", "auc"),
        ):
            matrix = pair_matrix(merged, path, names)
            if any(v is not None for row in matrix for v in row):
                blocks.append(f"<div>{_matrix_table(label, names, matrix, key)}</div>")
        if blocks:
            parts.append(
                '<section><h2>Every pair of modalities</h2><div class="matrices">'
                + "".join(blocks)
                + "</div></section>"
            )

    tuples = diag.get("tuples", {})
    if tuples:
        body = "".join(
            f"<tr><td>{_e(t)}</td>"
            + "".join(
                f'<td class="num">{_fmt(v.get(k))}</td>'
                for k in (
                    "gram_volume_mean",
                    "gram_volume_median",
                    "gram_volume_std",
                    "n_tuples",
                    "n_evaluated",
                )
            )
            + "</tr>"
            for t, v in tuples.items()
        )
        parts.append(
            "<section><h2>GRAM volume of modality tuples</h2><table><thead><tr><th>tuple</th>"
            "<th>mean</th><th>median</th><th>std</th><th>tuples</th><th>evaluated</th></tr>"
            f'</thead><tbody>{body}</tbody></table><p class="muted">Volume of the '
            "parallelotope the unit vectors of one item's modalities span (0: perfectly "
            "aligned, 1: orthogonal); lower is better.</p></section>"
        )

    if plot_list:
        parts.append(f"<section><h2>Plots</h2>{_plots_section(plot_list)}</section>")
    elif plot_message:
        parts.append(f'<section><h2>Plots</h2><p class="muted">{_e(plot_message)}</p></section>')

    # Per pair
    for pair in pair_names:
        entry = doc.get("pairs", {}).get(pair, {})
        extra = diag_pairs.get(pair, {})
        parts.append(f"<section><h2>{_e(pair)}</h2>")
        left, right = [], []
        geometry = _metric_table(entry, skip=("recall",))
        if geometry:
            left.append(f"<h3>Geometry</h3>{geometry}")
        diag_table = _metric_table(extra, skip=("whatif",))
        if diag_table:
            right.append(f"<h3>Diagnostics</h3>{diag_table}")
        parts.append(
            f'<div class="cols"><div>{"".join(left)}</div><div>{"".join(right)}</div></div>'
        )
        if entry.get("recall"):
            parts.append(f"<h3>Retrieval</h3>{_recall_table(entry['recall'])}")
        if extra.get("whatif"):
            parts.append("<h3>What if the gap were closed?</h3>" + _whatif_table(extra["whatif"]))
        parts.append("</section>")

    if notes:
        items = "".join(f"<li>{_e(n)}</li>" for n in dict.fromkeys(notes))
        parts.append(f'<section><h2>Notes</h2><ul class="notes">{items}</ul></section>')
    parts.append(
        '<p class="muted">Generated by gapscope; this file is self-contained. '
        "See docs/reading-the-report.md for what each value means.</p>"
    )
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


def write_html_report(
    path: str | os.PathLike[str],
    report: Report,
    data: EmbeddingSet | None = None,
    diagnostics: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> Path:
    """Render with :func:`render_html` and write the page atomically; returns the path."""
    from gapscope.data.store import atomic_write_text

    out = Path(path)
    atomic_write_text(out, render_html(report, data, diagnostics, **kwargs))
    return out
