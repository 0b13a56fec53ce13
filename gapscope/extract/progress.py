"""The extraction's progress bar (rich): rows done of total, items/s and time left."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class ItemsPerSecondColumn(ProgressColumn):
    """Throughput of a task, in items per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(
            "- items/s" if speed is None else f"{speed:,.1f} items/s", style="progress.data.speed"
        )


def make_progress(quiet: bool = False, console: Console | None = None) -> Progress:
    """A progress display on stderr; with ``quiet`` it shows nothing."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        ItemsPerSecondColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        disable=quiet,
    )
