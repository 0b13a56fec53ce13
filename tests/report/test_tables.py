"""Tables that fit: every table of the terminal report is readable at 80 and 120 columns, no
name is ever cut, and values are coloured by the band of their reading (none with NO_COLOR or
off a terminal)."""

from __future__ import annotations

import io
import re
from typing import Any

import numpy as np
import pytest
from rich.console import Console
from rich.text import Text

from gapscope import analyze
from gapscope.analysis import keys as K
from gapscope.data.embedding_set import EmbeddingSet
from gapscope.report.model import Report
from gapscope.report.numbers import format_number
from gapscope.report.tables import Column, FittedTable
from gapscope.report.terminal import (
    pair_lines,
    render_report,
    retrieval_directions,
    scenario_label,
)

WIDTHS = (80, 120)
# An SGR sequence that sets a foreground colour (30-37, 90-97, or 38;...).
COLOUR = re.compile(r"\x1b\[(?:\d+;)*(?:3[0-8]|9[0-7])(?:;\d+)*m")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def three_modalities(bootstrap: int | None = 20) -> Report:
    """Image, text and audio with labels and every section: diagnostics, what-ifs, GRAM
    volume, bootstrap intervals."""
    rng = np.random.default_rng(0)
    n, d = 60, 12
    labels = rng.integers(0, 4, size=n)
    content = rng.normal(size=(4, d))[labels] + 0.6 * rng.normal(size=(n, d))
    arrays = {
        m: (content + 1.2 * rng.normal(size=d) + 0.5 * rng.normal(size=(n, d))).astype(np.float32)
        for m in ("image", "text", "audio")
    }
    data = EmbeddingSet.from_arrays(arrays, labels=labels)
    return analyze(data, device="cpu", bootstrap=bootstrap)


@pytest.fixture(scope="module")
def report() -> Report:
    return three_modalities()


def rendered(report: Report, width: int, **options: Any) -> str:
    """What ``render_report`` writes on a console of ``width`` columns (with ANSI codes when
    ``force_terminal``, as a terminal would receive them)."""
    buffer = io.StringIO()
    render_report(report, Console(width=width, file=buffer, **options))
    return buffer.getvalue()


def metric_names(report: Report) -> list[str]:
    """Every name a table of the report shows: the rows of each pair, the retrieval
    directions and K headers, the what-if scenarios and their column headers."""
    names: list[str] = []
    ks = [K.recall_key(k) for k in report.params[K.P_K]]
    for pair in report.pairs:
        names += [line.label for line in pair_lines(report, pair)]
        names += [direction for direction, _ in retrieval_directions(report, pair)]
        whatif = report.pairs[pair].get(K.WHATIF.name, {})
        names += [scenario_label(s) for s in whatif]
        a, b = pair.split("-")
        if whatif:
            names += [K.direction_key(q, t) for q, t in ((a, b), (b, a), (a, a), (b, b))]
            names += [f"{a}/{b}", "uniformity"]
    return sorted(set(names + ks + [K.MAP.name]), key=len, reverse=True)


@pytest.mark.parametrize("width", WIDTHS)
def test_every_name_of_the_report_appears_whole(report, width):
    assert len(report.pairs) == 3 and report.tuples
    assert all(K.WHATIF.name in entry for entry in report.pairs.values())
    text = rendered(report, width)
    for name in metric_names(report):
        assert name in text, (width, name)
    assert "…" not in text
    assert all(len(line) <= width for line in text.splitlines()), width
    # The what-if headers, which rich used to cut to "image-…": each direction whole.
    assert "image->audio" in text and "audio->audio" in text


def test_narrow_tables_stack_and_wide_ones_do_not(report):
    narrow, wide = rendered(report, 80), rendered(report, 200)
    # At 80 columns the retrieval and what-if tables (a column a K, four directions) stack:
    # a block a row, the fields labelled; at 200 they are tables with rules.
    assert re.search(r"^image->text\s*$", narrow, re.M)
    assert re.search(r"^ {4}R@1 \d", narrow, re.M)
    assert re.search(r"^ {4}gap \d", narrow, re.M)
    assert "┃ direction" in wide and "┃ scenario" in wide
    assert not re.search(r"^ {4}R@1 \d", wide, re.M)


def test_values_are_coloured_by_the_band_of_their_reading(report):
    entry = report.pairs["image-text"]
    text = rendered(report, 200, force_terminal=True, color_system="standard")
    gap = format_number(entry[K.GAP.name])
    assert entry[K.GAP.name] >= 0.4  # "large: modalities occupy separate cones"
    assert re.search(r"\x1b\[31m\s*" + re.escape(gap), text), "a large gap is red"
    # MIR has no bands: never coloured.
    mir = format_number(entry[K.MIR.name])
    assert not re.search(r"\x1b\[3[12]m\s*" + re.escape(mir), text)
    # What-ifs: a closed gap is better than the gap as is, so green.
    closed = format_number(entry[K.WHATIF.name][K.CENTERED][K.GAP.name])
    assert re.search(r"\x1b\[32m\s*" + re.escape(closed), text)


def test_no_colour_with_no_color_or_off_a_terminal(report, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    text = rendered(report, 120, force_terminal=True, color_system="standard")
    assert ANSI.search(text), "bold and dim stay"
    assert not COLOUR.search(text)
    monkeypatch.delenv("NO_COLOR")
    assert COLOUR.search(rendered(report, 120, force_terminal=True, color_system="standard"))
    # A file or a pipe is no terminal: plain text.
    assert not ANSI.search(rendered(report, 120))


def test_a_name_longer_than_the_line_stays_whole():
    table = FittedTable([Column("metric", "name"), Column("value", justify="right")])
    name = "image-text/similarity/negatives_above_median_positive"
    table.add_row(name, "0.1234")
    buffer = io.StringIO()
    Console(width=30, file=buffer).print(table, crop=False)
    text = buffer.getvalue()
    assert name in text and "value 0.1234" in text


def test_fitted_table_fits_at_its_minimum_and_stacks_one_column_below():
    table = FittedTable(
        [
            Column("metric", "name"),
            Column("value", justify="right", inline=True, labelled=False),
            Column("reading", "prose"),
        ],
        title=Text("pair"),
    )
    table.add_row("modality gap", "0.6674", "large: modalities occupy separate cones")
    table.add_row("[bold]not markup[/bold]", "[0.1, 0.2]", "")
    need = table.min_width()
    for width, stacked in ((need, False), (need - 1, True)):
        buffer = io.StringIO()
        Console(width=width, file=buffer).print(table)
        text = buffer.getvalue()
        assert ("┃ metric" not in text) is stacked, width
        assert "[bold]not markup[/bold]" in text and "[0.1, 0.2]" in text
        assert all(len(line) <= width for line in text.splitlines())
    with pytest.raises(ValueError, match="name column"):
        FittedTable([Column("value")])


def test_the_example_report_at_80_columns(example_store):
    report = analyze(example_store, device="cpu", metrics="gap,cosine,retrieval,whatif")
    text = rendered(report, 80)
    for name in metric_names(report):
        assert name in text, name
    assert "…" not in text
