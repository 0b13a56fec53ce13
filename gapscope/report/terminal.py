"""Render a :class:`Report` in the terminal with rich: one table a modality pair.

Each row has the metric, its value and a one-line reading in plain words; the rows, their
labels and readings come from the families of :mod:`gapscope.analysis.families`, and the
numbers from the one formatter of :mod:`gapscope.report.numbers`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from gapscope.analysis import keys as K
from gapscope.analysis.families import FAMILIES, Row, RowScope
from gapscope.report.model import Report
from gapscope.report.numbers import format_number, format_percent

__all__ = ["pair_rows", "pair_table", "render_report", "retrieval_table", "whatif_table"]


def _lookup(entry: Mapping[str, Any], path: tuple[str, ...]) -> tuple[Any, Mapping[str, Any]]:
    """The value at ``path`` inside ``entry``, and the mapping that holds it."""
    parent: Any = entry
    for key in path[:-1]:
        parent = parent.get(key, {}) if isinstance(parent, Mapping) else {}
    value = parent.get(path[-1]) if isinstance(parent, Mapping) else None
    return value, parent if isinstance(parent, Mapping) else {}


def value_text(
    value: Any,
    holder: Mapping[str, Any],
    leaf: str,
    *,
    percent: bool = False,
    plain: bool = False,
    stacked: bool = False,
) -> str:
    """A value with its standard error and bootstrap interval when ``holder`` has them."""
    fmt = format_percent if percent else format_number
    text = fmt(value)
    if value is None or plain:
        return text
    se = holder.get(K.se_key(leaf))
    if se is not None:
        text += f" ± {fmt(se)}"
    ci = holder.get(K.ci_key(leaf))
    if ci is not None:
        low, high = ci
        # Retrieval tables have a column per K: the interval goes on a line of its own.
        text += f"{chr(10) if stacked else ' '}[{fmt(low)}, {fmt(high)}]"
    return text


def pair_rows(report: Report, pair: str) -> list[tuple[str, str, str]]:
    """``(label, value, reading)`` of every summary row of one pair, in family order."""
    data = report.to_dict()
    entry = data[K.PAIRS_SECTION][pair]
    names = pair.split("-")
    modalities = {m: data[K.MODALITIES_SECTION].get(m, {}) for m in names}
    selected = set(data[K.PARAMS_SECTION].get(K.P_METRICS, []))
    rows: list[tuple[str, str, str]] = []
    for family in FAMILIES:
        if family.selector not in selected:
            continue
        for row in family.rows:
            targets = [(m, modalities[m]) for m in names] if row.per_modality else [(None, entry)]
            for m, target in targets:
                scope = RowScope(target, entry, modalities, data[K.PARAMS_SECTION], m)
                line = _row_line(row, scope)
                if line is not None:
                    rows.append(line)
    return rows


def _row_line(row: Row, scope: RowScope) -> tuple[str, str, str] | None:
    """A row's cells, or ``None`` when the report lacks what it shows."""
    try:
        if row.path:
            value, holder = _lookup(scope.entry, row.path)
            if value is None:
                return None
            text = (
                row.text(scope)
                if row.text
                else value_text(value, holder, row.path[-1], plain=row.plain)
            )
        else:
            text = row.text(scope) if row.text else ""
        reading = row.reading(scope) if callable(row.reading) else (row.reading or "")
    except (KeyError, TypeError):
        return None
    if not text and not reading:
        return None
    return row.label.format(m=scope.modality), text, reading or ""


def pair_table(report: Report, pair: str) -> Table:
    """The scalar metrics of one modality pair (and its two modalities), with readings."""
    table = Table(title=f"[bold]{pair}[/bold]", title_justify="left")
    table.add_column("metric", style="cyan", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("reading", style="dim", ratio=1)
    for label, value, reading in pair_rows(report, pair):
        table.add_row(label, value, reading)
    return table


def retrieval_directions(report: Report, pair: str) -> list[tuple[str, Mapping[str, Any]]]:
    """The pair's retrieval entries: both cross-modal directions, then each modality's own."""
    data = report.to_dict()
    out = list(data[K.PAIRS_SECTION][pair].get(K.RECALL.name, {}).items())
    for m in pair.split("-"):
        out += list(data[K.MODALITIES_SECTION].get(m, {}).get(K.RECALL.name, {}).items())
    return out


def retrieval_table(report: Report, pair: str) -> Table | None:
    """Recall@K (as percentages), mAP and the query counts, one row a direction."""
    directions = retrieval_directions(report, pair)
    if not directions:
        return None
    ks = report.params[K.P_K]
    table = Table(
        title=f"[bold]{pair}[/bold] retrieval (hit rate: any positive in the top K)",
        title_justify="left",
    )
    table.add_column("direction", style="cyan", no_wrap=True)
    for k in ks:
        table.add_column(K.recall_key(k), justify="right", no_wrap=True)
    table.add_column(K.MAP.name, justify="right", no_wrap=True)
    table.add_column("queries", justify="right", no_wrap=True)
    table.add_column("relevance", style="dim")
    for direction, r in directions:
        src, dst = direction.split("->")
        cells = [
            value_text(r.get(K.recall_key(k)), r, K.recall_key(k), percent=True, stacked=True)
            for k in ks
        ]
        intra = src == dst
        cells.append(
            value_text(r.get(K.MAP.name), r, K.MAP.name, percent=True, stacked=True)
            if intra
            else ""
        )
        queries = str(r.get(K.N_QUERIES.name, 0))
        if r.get(K.N_SKIPPED.name):
            queries += f" (+{r[K.N_SKIPPED.name]} left out)"
        relevance = r.get(K.RELEVANCE.name, K.GROUPS) if intra else "true pairs"
        table.add_row(direction, *cells, queries, relevance)
    return table


def whatif_table(report: Report, pair: str) -> Table | None:
    """What closing the gap after training would change: one row a scenario."""
    whatif = report.pairs.get(pair, {}).get(K.WHATIF.name)
    if not whatif:
        return None
    a, b = pair.split("-")
    key = K.recall_key(report.params[K.P_K][0])
    table = Table(
        title=f"[bold]{pair}[/bold] what-ifs: close the gap after training", title_justify="left"
    )
    table.add_column("scenario", style="cyan", no_wrap=True)
    table.add_column(K.GAP.name, justify="right")
    directions = [K.direction_key(q, r) for q, r in ((a, b), (b, a), (a, a), (b, b))]
    for direction in directions:
        table.add_column(f"{direction}\n{key}", justify="right")
    table.add_column(f"uniformity\n{a}/{b}", justify="right")
    for scenario, values in whatif.items():
        recall = values.get(K.RECALL.name, {})
        uni = values.get(K.UNIFORMITY.name, {})
        table.add_row(
            scenario_label(scenario),
            format_number(values.get(K.GAP.name)),
            *[format_percent(recall.get(d, {}).get(key)) for d in directions],
            "/".join(format_number(uni.get(m)) for m in (a, b)),
        )
    return table


def scenario_label(scenario: str) -> str:
    """Words for a what-if scenario key.

    >>> scenario_label("original"), scenario_label("shift_0.5")
    ('as is', 'shifted 0.5 x gap')
    """
    if scenario == K.ORIGINAL:
        return "as is"
    if scenario == K.CENTERED:
        return "mean-centred"
    return scenario.replace(K.SHIFT.split("{")[0], "shifted ") + " x gap"


def render_report(report: Report, console: Console | None = None) -> None:
    """Print the report: a header, one table a modality pair, then the notes."""
    console = console or Console()
    data = report.to_dict()
    inp = data[K.INPUT_SECTION]
    sizes = ", ".join(f"{m} {v[K.ROWS]}x{v[K.DIM]}" for m, v in inp[K.MODALITIES_SECTION].items())
    header = Text.assemble(
        ("gapscope ", "bold"),
        (data[K.VERSION_FIELD], "dim"),
        "  ",
        (inp[K.SOURCE], "bold"),
        f"  ({sizes})",
    )
    console.print(header)
    model = inp.get(K.MODEL)
    if model:
        name = model.get(K.MODEL) or model.get("name") or model.get("family") or "encoder"
        weights = model.get("pretrained") or model.get("checkpoint")
        family = model.get("family")
        detail = ", ".join(str(v) for v in (family, weights) if v and v != name)
        console.print(Text(f"model: {name}" + (f" ({detail})" if detail else ""), style="dim"))
    for pair in data[K.PAIRS_SECTION]:
        console.print(pair_table(report, pair))
        for view in (retrieval_table(report, pair), whatif_table(report, pair)):
            if view is not None:
                console.print(view)
    for name, values in data.get(K.TUPLES_SECTION, {}).items():
        mean = values.get(K.GRAM_VOLUME_MEAN.name)
        if mean is not None:
            console.print(
                Text.assemble(
                    (f"{name} GRAM volume ", "cyan"),
                    format_number(mean),
                    (
                        " (mean over tuples; 0 = the modalities of a tuple coincide, lower is "
                        "better)",
                        "dim",
                    ),
                )
            )
    for note in data[K.NOTES_SECTION]:
        console.print(Text(f"note: {note}", style="yellow"))
