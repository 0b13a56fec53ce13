"""Tables that fit the width they are printed at: columns when they fit, blocks when not.

A :class:`FittedTable` is a rich renderable. On a console wide enough to show every name
whole on one line, it prints as an ordinary rich table whose name column never wraps; on a
narrower one it stacks: each row becomes a block, its name on a line of its own (with the
row's inline cells, such as a verdict, at the right) and its other cells as ``header value``
fields on the indented lines below. A name (a metric, a direction, a scenario) is never cut,
folded into pieces or ellipsized: a table that cannot show it whole stacks instead.

The choice is made when the table is printed, from the width rich gives it, so the same
table reads well in an 80-column terminal, a 200-column one and a CI log. Used by the
terminal report (:mod:`gapscope.report.terminal`) and the gate's tables
(:mod:`gapscope.gate.outputs`); imports rich only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

__all__ = ["Cell", "Column", "FittedTable"]

Cell = str | Text
Kind = Literal["name", "value", "wrap", "prose"]
Justify = Literal["left", "center", "right"]

#: The narrowest a prose column (a reading) may become before the table stacks instead.
PROSE_MIN_WIDTH = 30
#: Indentation of a stacked row's fields under its name.
STACK_INDENT = 4
_FIELD_GAP = "   "


@dataclass(frozen=True)
class Column:
    """One column of a :class:`FittedTable`.

    Attributes:
        header: the heading; ``\\n`` breaks it over lines in the table form (joined by a
            space in the stacked form).
        kind: ``name`` (the first column: one line a cell, never wrapped or cut), ``value``
            (numbers and short words, never wrapped), ``wrap`` (short text that may wrap at
            its spaces, e.g. ``+0.1722 (+15.6%)``) or ``prose`` (words that wrap, e.g. a
            reading; it takes the width left over).
        justify: alignment in the table form.
        style: rich style of the column's cells.
        inline: stacked form: shown on the name's line, at the right (a verdict).
        labelled: stacked form: the field is ``header value`` (else the value alone).
    """

    header: str
    kind: Kind = "value"
    justify: Justify = "left"
    style: str = ""
    inline: bool = False
    labelled: bool = True


class FittedTable:
    """A table printed as columns when every name fits whole, and stacked when not.

    Example:
        >>> from rich.console import Console
        >>> table = FittedTable([Column("metric", "name"), Column("value", justify="right")])
        >>> table.add_row("image-text/recall/image->text/R@10", "0.6033")
        >>> Console(width=60).print(table)
        ┏━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━┓
        ┃ metric                             ┃  value ┃
        ┡━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━┩
        │ image-text/recall/image->text/R@10 │ 0.6033 │
        └────────────────────────────────────┴────────┘
        >>> Console(width=40).print(table)
        image-text/recall/image->text/R@10
            value 0.6033
    """

    def __init__(
        self, columns: Sequence[Column], *, title: Cell | None = None, title_style: str = ""
    ) -> None:
        if not columns or columns[0].kind != "name":
            raise ValueError("the first column of a FittedTable is its name column")
        self.columns = list(columns)
        self.title = title
        self.title_style = title_style
        self.rows: list[list[Text]] = []

    def add_row(self, *cells: Cell) -> None:
        """Add a row: one cell a column (``""`` for an empty one)."""
        if len(cells) != len(self.columns):
            raise ValueError(f"expected {len(self.columns)} cells, got {len(cells)}")
        # Text, not str: a cell is never read as rich markup ("[low, high]" stays as it is).
        self.rows.append([_as_text(cell) for cell in cells])

    # ------------------------------------------------------------------ the two forms

    def min_widths(self) -> list[int]:
        """The narrowest each column may be in the table form: every name and value (and
        every line of its header) whole, a wrapping cell's longest word, prose at least
        :data:`PROSE_MIN_WIDTH`."""
        out = []
        for i, column in enumerate(self.columns):
            cells = [row[i] for row in self.rows]
            header_words = _longest_word(column.header)
            if column.kind == "prose":
                out.append(max(PROSE_MIN_WIDTH, header_words))
            elif column.kind == "wrap":
                out.append(max([header_words, *(_longest_word(c) for c in cells)]))
            else:
                out.append(max([_longest_line(column.header), *(_longest_line(c) for c in cells)]))
        return out

    def min_width(self) -> int:
        """The narrowest the table form can be: the columns, their padding (one space each
        side) and the rules between and around them."""
        widths = self.min_widths()
        return sum(widths) + 2 * len(widths) + len(widths) + 1

    def table(self) -> Table:
        """The table form: names and values on one line each, prose wrapped."""
        table = Table(title=self.title, title_justify="left", title_style=self.title_style)
        for column, width in zip(self.columns, self.min_widths(), strict=True):
            if column.kind == "prose":
                table.add_column(
                    column.header,
                    justify=column.justify,
                    style=column.style,
                    ratio=1,
                    min_width=width,
                )
            else:
                table.add_column(
                    column.header,
                    justify=column.justify,
                    style=column.style,
                    # name, value: one unbroken line a cell; wrap: at its spaces only.
                    no_wrap=column.kind != "wrap",
                    min_width=width,
                )
        for row in self.rows:
            table.add_row(*row)
        return table

    def stacked(self, width: int) -> list[Text | Padding]:
        """The stacked form at ``width`` columns: a block a row (see the module docstring)."""
        out: list[Text | Padding] = []
        if self.title is not None:
            title = _as_text(self.title).copy()
            title.stylize(self.title_style)
            out.append(title)
        for row in self.rows:
            out.append(self._head_line(row, width))
            fields: list[Text] = []
            for column, cell in zip(self.columns[1:], row[1:], strict=True):
                text = _as_text(cell)
                if column.inline or not text.plain.strip():
                    continue
                if column.kind == "prose":
                    out += _field_lines(fields, width)
                    fields = []
                    prose = text.copy()
                    prose.stylize(column.style)
                    out.append(Padding(prose, (0, 0, 0, STACK_INDENT), expand=False))
                    continue
                value = _one_line(text)
                value.stylize(column.style)
                if column.labelled:
                    label = " ".join(column.header.split())
                    value = Text.assemble((label, "dim"), " ", value)
                fields.append(value)
            out += _field_lines(fields, width)
        return out

    def _head_line(self, row: Sequence[Cell], width: int) -> Text:
        name = _as_text(row[0]).copy()
        name.stylize(self.columns[0].style or "bold")
        inline = [
            _one_line(_as_text(cell))
            for column, cell in zip(self.columns, row, strict=True)
            if column.inline and _as_text(cell).plain.strip()
        ]
        head = name
        if inline:
            tail = Text("  ").join(inline)
            gap = width - cell_len(name.plain) - cell_len(tail.plain)
            head = Text.assemble(name, " " * max(2, gap), tail)
        # A name longer than the line stays whole: the terminal wraps it, rich does not cut it.
        head.no_wrap = True
        head.overflow = "ignore"
        return head

    # ------------------------------------------------------------------ rich protocol

    def fits(self, width: int) -> bool:
        """Whether the table form shows every name and value whole at ``width`` columns."""
        return self.min_width() <= width

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        if self.fits(width):
            yield self.table()
        else:
            yield from self.stacked(width)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(min(self.min_width(), options.max_width), options.max_width)


def _as_text(cell: Cell) -> Text:
    return cell if isinstance(cell, Text) else Text(str(cell))


def _one_line(text: Text) -> Text:
    """A cell's lines joined by spaces (a value with its interval on a second line)."""
    lines = text.split("\n")
    return Text(" ").join(lines) if len(lines) > 1 else text.copy()


def _longest_line(cell: Cell) -> int:
    return max((cell_len(line) for line in _as_text(cell).plain.split("\n")), default=0)


def _longest_word(cell: Cell) -> int:
    return max((cell_len(word) for word in _as_text(cell).plain.split()), default=0)


def _field_lines(fields: Iterable[Text], width: int) -> list[Text]:
    """``header value`` fields packed into indented lines of at most ``width`` columns; a
    field is never split over two lines."""
    room = max(1, width - STACK_INDENT)
    lines: list[Text] = []
    line: Text | None = None
    for field in fields:
        needed = cell_len(field.plain) + len(_FIELD_GAP)
        if line is not None and cell_len(line.plain) + needed <= room:
            line.append(_FIELD_GAP)
            line.append_text(field)
            continue
        if line is not None:
            lines.append(line)
        line = field.copy()
    if line is not None:
        lines.append(line)
    out = []
    for text in lines:
        indented = Text(" " * STACK_INDENT)
        indented.append_text(text)
        indented.no_wrap = True
        indented.overflow = "ignore"
        out.append(indented)
    return out
