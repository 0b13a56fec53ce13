"""Render a :class:`Report` in the terminal with rich: one table a modality pair.

Each row has the metric, its value and a one-line reading in plain words; the rows, their
labels and readings come from the families of :mod:`gapscope.analysis.families`, and the
numbers from the one formatter of :mod:`gapscope.report.numbers`.

Every table is a :class:`~gapscope.report.tables.FittedTable`: columns when the console is
wide enough to show every name whole, a block a row when not, so nothing is cut at 80
columns. Values are coloured by the band of their reading
(:func:`gapscope.analysis.readings.tone_of`: green good, red worrying, no colour in between
or without bands), and each what-if scenario's values by whether they are better or worse
than the embeddings as they are (by the report's ``directions``). rich prints no colour when
``NO_COLOR`` is set or the output is not a terminal.

Words that come from a store or a report rather than from gapscope (the source, model and
modality names, tags, notes) pass through :func:`printable` first: a crafted manifest must not
move the cursor, clear the screen or retitle the terminal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.text import Text

from gapscope.analysis import keys as K
from gapscope.analysis.families import FAMILIES, Row, RowScope
from gapscope.analysis.readings import GOOD, WORRYING, tone_of
from gapscope.data.weights import random_init_seed
from gapscope.report.model import Report
from gapscope.report.numbers import format_number, format_percent
from gapscope.report.run import has_random_weights
from gapscope.report.tables import Column, FittedTable
from gapscope.report.text import printable

__all__ = [
    "TONE_STYLES",
    "RowLine",
    "pair_lines",
    "pair_rows",
    "pair_table",
    "render_report",
    "retrieval_table",
    "whatif_change",
    "whatif_scenarios",
    "whatif_table",
]

#: rich styles of the tones of :func:`~gapscope.analysis.readings.tone_of`.
TONE_STYLES = {GOOD: "green", WORRYING: "red"}
# What-ifs: a scenario's value against the embeddings as they are.
_CHANGE_STYLES = {"better": "green", "worse": "red"}


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


@dataclass(frozen=True)
class RowLine:
    """One row of a pair's summary table, as the terminal and the HTML page show it.

    Attributes:
        label: the metric in words (``modality gap``, ``cone (image)``).
        text: the value as shown (with its standard error and interval).
        reading: the plain-words reading (may be empty).
        tone: :data:`~gapscope.analysis.readings.GOOD`, ``WORRYING`` or ``None``.
        value: the number behind ``text`` (``None`` for a row of words or a composite).
        modality: the modality of a per-modality row (``cone (image)``), else ``None``.
    """

    label: str
    text: str
    reading: str
    tone: str | None = None
    value: float | None = None
    modality: str | None = None


def pair_lines(report: Report, pair: str) -> list[RowLine]:
    """Every summary row of one pair, in family order, with its tone and number."""
    data = report.to_dict()
    entry = data[K.PAIRS_SECTION][pair]
    names = pair.split("-")
    modalities = {m: data[K.MODALITIES_SECTION].get(m, {}) for m in names}
    selected = set(data[K.PARAMS_SECTION].get(K.P_METRICS, []))
    rows: list[RowLine] = []
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


def pair_rows(report: Report, pair: str) -> list[tuple[str, str, str]]:
    """``(label, value, reading)`` of every summary row of one pair, in family order."""
    return [(line.label, line.text, line.reading) for line in pair_lines(report, pair)]


def _row_line(row: Row, scope: RowScope) -> RowLine | None:
    """A row's cells, or ``None`` when the report lacks what it shows."""
    tone = None
    number = None
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
            t = scope.params.get(K.P_UNIFORMITY_T, 2.0)
            tone = tone_of(row.path[-1], value, entry=holder, uniformity_t=t)
            if isinstance(value, int | float) and not isinstance(value, bool):
                number = float(value)
        else:
            text = row.text(scope) if row.text else ""
        reading = row.reading(scope) if callable(row.reading) else (row.reading or "")
    except (KeyError, TypeError):
        return None
    if not text and not reading:
        return None
    label = row.label.format(m=scope.modality)
    return RowLine(label, text, reading or "", tone, number, scope.modality)


def pair_table(report: Report, pair: str) -> FittedTable:
    """The scalar metrics of one modality pair (and its two modalities), with readings."""
    table = FittedTable(
        [
            Column("metric", "name", style="cyan"),
            Column("value", justify="right", inline=True, labelled=False),
            Column("reading", "prose", style="dim"),
        ],
        title=Text(printable(pair), style="bold"),
    )
    for line in pair_lines(report, pair):
        table.add_row(
            printable(line.label),
            Text(line.text, style=TONE_STYLES.get(line.tone or "", "")),
            printable(line.reading),
        )
    return table


def retrieval_directions(report: Report, pair: str) -> list[tuple[str, Mapping[str, Any]]]:
    """The pair's retrieval entries: both cross-modal directions, then each modality's own."""
    data = report.to_dict()
    out = list(data[K.PAIRS_SECTION][pair].get(K.RECALL.name, {}).items())
    for m in pair.split("-"):
        out += list(data[K.MODALITIES_SECTION].get(m, {}).get(K.RECALL.name, {}).items())
    return out


def retrieval_table(report: Report, pair: str) -> FittedTable | None:
    """Recall@K (as percentages), mAP and the query counts, one row a direction."""
    directions = retrieval_directions(report, pair)
    if not directions:
        return None
    ks = report.params[K.P_K]
    table = FittedTable(
        [
            Column("direction", "name", style="cyan"),
            *[Column(K.recall_key(k), justify="right") for k in ks],
            Column(K.MAP.name, justify="right"),
            Column("queries", "wrap", justify="right"),
            Column("relevance", style="dim"),
        ],
        title=Text.assemble(
            (printable(pair), "bold"), " retrieval (hit rate: any positive in the top K)"
        ),
    )
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
        table.add_row(printable(direction), *cells, queries, printable(relevance))
    return table


def whatif_table(report: Report, pair: str) -> FittedTable | None:
    """What closing the gap after training would change: one row a scenario, its values
    green where better and red where worse than the embeddings as they are."""
    whatif = report.pairs.get(pair, {}).get(K.WHATIF.name)
    if not whatif:
        return None
    a, b = pair.split("-")
    key = K.recall_key(report.params[K.P_K][0])
    directions = [K.direction_key(q, r) for q, r in ((a, b), (b, a), (a, a), (b, b))]
    zeroshot = any(K.ZEROSHOT.name in values for values in whatif.values())
    table = FittedTable(
        [
            Column("scenario", "name", style="cyan"),
            Column(K.GAP.name, justify="right"),
            *[
                Column(f"{printable(direction)}\n{key}", justify="right")
                for direction in directions
            ],
            Column(f"uniformity\n{printable(a)}/{printable(b)}", justify="right"),
            *([Column("zero-shot\ntop-1", justify="right")] if zeroshot else []),
        ],
        title=Text.assemble((printable(pair), "bold"), " what-ifs: close the gap after training"),
    )
    original = whatif.get(K.ORIGINAL, {})

    def cell(leaf: str, value: Any, before: Any, fmt: Any = format_number) -> Text:
        change = whatif_change(report.directions, leaf, value, before, fmt)
        return Text(fmt(value), style=_CHANGE_STYLES.get(change or "", ""))

    for scenario, values in whatif_scenarios(whatif):
        recall = values.get(K.RECALL.name, {})
        uni = values.get(K.UNIFORMITY.name, {})
        recall0 = original.get(K.RECALL.name, {})
        uni0 = original.get(K.UNIFORMITY.name, {})
        table.add_row(
            printable(scenario_label(scenario)),
            cell(K.GAP.name, values.get(K.GAP.name), original.get(K.GAP.name)),
            *[
                cell(key, recall.get(d, {}).get(key), recall0.get(d, {}).get(key), format_percent)
                for d in directions
            ],
            Text("/").join(cell(K.UNIFORMITY.name, uni.get(m), uni0.get(m)) for m in (a, b)),
            *(
                [
                    cell(
                        K.TOP1_ACCURACY.name,
                        values.get(K.ZEROSHOT.name, {}).get(K.TOP1_ACCURACY.name),
                        original.get(K.ZEROSHOT.name, {}).get(K.TOP1_ACCURACY.name),
                        format_percent,
                    )
                ]
                if zeroshot
                else []
            ),
        )
    return table


def whatif_change(
    directions: dict[str, str],
    leaf: str,
    value: Any,
    before: Any,
    fmt: Callable[[Any], str] = format_number,
) -> str | None:
    """A what-if value against the same value as is: ``"better"`` or ``"worse"`` by the
    direction of ``leaf`` in ``directions`` (a report's); ``None`` when the two look the
    same (equal as ``fmt`` shows them), either is missing, or ``leaf`` has no direction.

    >>> whatif_change({"gap": "lower"}, "gap", 0.1, 0.6)
    'better'
    >>> whatif_change({"gap": "lower"}, "gap", 0.60001, 0.6), whatif_change({}, "gap", 0.1, 0.6)
    (None, None)
    """
    direction = K.direction_of(leaf, directions)
    if value is None or before is None or direction is None or fmt(value) == fmt(before):
        return None
    better = value < before if direction == K.LOWER else value > before
    return "better" if better else "worse"


def whatif_scenarios(whatif: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """The what-if scenarios of a pair, the embeddings as they are first."""
    return sorted(whatif.items(), key=lambda item: item[0] != K.ORIGINAL)


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


def model_line(report: Report) -> Text | None:
    """``model: <name> (<family>, <weights>)``, with random weights in red; ``None`` for
    plain arrays."""
    inp = report.to_dict()[K.INPUT_SECTION]
    model = inp.get(K.MODEL)
    if not model:
        return None
    name = model.get(K.MODEL) or model.get("name") or model.get("family") or "encoder"
    weights = model.get("pretrained") or model.get("checkpoint")
    family = model.get("family")
    detail = [printable(v) for v in (family, weights) if v and v != name]
    line = Text(f"model: {printable(name)}", style="dim")
    random = has_random_weights(inp)
    if not detail and not random:
        return line
    line.append(" (" + ", ".join(detail), style="dim")
    if random:
        seed = random_init_seed(model)
        line.append(", " if detail else "", style="dim")
        words = "random weights" + (f", seed {seed}" if seed is not None else "")
        line.append(words, style="bold red")
    line.append(")", style="dim")
    return line


def render_report(report: Report, console: Console | None = None) -> None:
    """Print the report: a header, one table a modality pair, then the notes."""
    console = console or Console()
    data = report.to_dict()
    inp = data[K.INPUT_SECTION]
    sizes = ", ".join(
        printable(f"{m} {v[K.ROWS]}x{v[K.DIM]}") for m, v in inp[K.MODALITIES_SECTION].items()
    )
    header = Text.assemble(
        ("gapscope ", "bold"),
        (printable(data[K.VERSION_FIELD]), "dim"),
        "  ",
        (printable(inp[K.SOURCE]), "bold"),
        f"  ({sizes})",
    )
    console.print(header)
    model = model_line(report)
    if model is not None:
        console.print(model)
    run = report.run_info
    labels = ([f"step {run.step}"] if run.step is not None else []) + [
        printable(f"{key}={value}") for key, value in run.tags.items()
    ]
    if labels:
        console.print(Text(f"run: {', '.join(labels)}", style="dim"))
    for pair in data[K.PAIRS_SECTION]:
        # crop=False: a name longer than the line stays whole (the terminal wraps it).
        console.print(pair_table(report, pair), crop=False)
        for view in (retrieval_table(report, pair), whatif_table(report, pair)):
            if view is not None:
                console.print(view, crop=False)
    for name, values in data.get(K.TUPLES_SECTION, {}).items():
        mean = values.get(K.GRAM_VOLUME_MEAN.name)
        if mean is not None:
            console.print(
                Text.assemble(
                    (f"{printable(name)} GRAM volume ", "cyan"),
                    format_number(mean),
                    (
                        " (mean over tuples; 0 = the modalities of a tuple coincide, lower is "
                        "better)",
                        "dim",
                    ),
                )
            )
    for note in data[K.NOTES_SECTION]:
        console.print(Text(f"note: {printable(note)}", style="yellow"))
