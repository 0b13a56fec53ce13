"""Where command output goes: stdout or a file (atomically), plain text at a fixed width."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from gapscope.data.atomic import atomic_write_text

__all__ = ["analyse_with_status", "write_output", "write_rendered"]

# Rendered tables written to a file or a non-terminal: wide enough for a CI log.
_FILE_WIDTH = 140


def write_output(text: str, path: Path | None) -> None:
    """``text`` to stdout (``path`` None or ``-``), else to ``path`` atomically."""
    if path is None or str(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        atomic_write_text(path, text)


def write_rendered(render: Callable[[Console], None], path: Path | None) -> None:
    """Render rich output to stdout, or to a file (plain text, 140 columns, atomically)."""
    if path is None or str(path) == "-":
        console = Console()
        if not console.is_terminal and "COLUMNS" not in os.environ:
            # CI logs are not terminals; rich would wrap them at 80 columns.
            console.width = _FILE_WIDTH
        render(console)
        return
    buffer = io.StringIO()
    render(Console(file=buffer, width=_FILE_WIDTH))
    write_output(buffer.getvalue(), path)


def analyse_with_status(source: Any, quiet: bool, **options: Any) -> Any:
    """:func:`gapscope.api.analyze` with a spinner on stderr (none when quiet)."""
    from gapscope.api import analyze

    if quiet:
        return analyze(source, **options)
    with Console(stderr=True).status("analysing") as status:
        return analyze(source, progress=lambda msg: status.update(f"analysing: {msg}"), **options)
