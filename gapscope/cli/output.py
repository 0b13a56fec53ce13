"""Where command output goes: stdout or a file (atomically), plain text at a fixed width."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from gapscope.data.atomic import (
    atomic_write_text,
    check_writable_folder,
    is_special_file,
    open_descriptor,
    writable_descriptor,
)
from gapscope.errors import GapscopeError

__all__ = [
    "FILE_WIDTH",
    "analyse_with_status",
    "check_output_paths",
    "check_parquet_format",
    "check_stdout_once",
    "require_parquet_writer",
    "rendered_width",
    "write_output",
    "write_rendered",
]

# Rendered tables written to a file or a non-terminal (a CI log) when COLUMNS is not set:
# wide enough for a check table on one line a metric.
FILE_WIDTH = 140


def check_output_paths(**paths: Path | None) -> None:
    """Refuse, before any work, an output option that cannot be a file: ``option=path``
    pairs, e.g. ``check_output_paths(output=path)`` for ``--output``.

    A folder, or a path under a file, would otherwise fail only at the end, after the
    analysis. Missing folders are fine: the write creates them.

    Raises:
        GapscopeError: ``--<option> <path>`` is a folder, lies under a file, lies in a folder
            that may not be written in (:func:`~gapscope.data.atomic.check_writable_folder`),
            is a device that may not be written, or names a descriptor of this process that is
            not open for writing (``/dev/fd/9``, ``/dev/stdin``).
    """
    for option, path in paths.items():
        if path is None or str(path) == "-":
            continue
        flag = "--" + option.replace("_", "-")
        descriptor = open_descriptor(path)
        if descriptor is not None:
            if not writable_descriptor(descriptor):
                raise GapscopeError(
                    f"{flag} {path}: descriptor {descriptor} is not open for writing"
                )
            continue
        if path.is_dir():
            raise GapscopeError(f"{flag} {path} is a folder; give the path of a file to write")
        if is_special_file(path):  # written through: the device's own mode decides
            if not os.access(path, os.W_OK):
                raise GapscopeError(f"{flag} {path} may not be written")
            continue
        check_writable_folder(path, flag)


def check_stdout_once(**outputs: Path | None) -> None:
    """Refuse, before any work, two outputs that would both go to standard output (``-``,
    ``/dev/stdout``, the pipe it is open on): a page and a table, or two documents, in one
    stream are neither.

    ``outputs`` maps an option to its path, e.g. ``output=output, json=json_path,
    html=html``. ``None`` is standard output for ``output`` (the ``--format`` output goes
    there when ``--output`` is not given) and no output at all for any other option.

    Raises:
        GapscopeError: naming the two outputs.
    """
    from gapscope.cli.report_input import writes_to_stdout

    on_stdout = []
    for option, path in outputs.items():
        flag = "--" + option.replace("_", "-")
        if path is None and option != "output":
            continue
        if writes_to_stdout(path):
            given = f"{flag} {path}" if path is not None else f"the --format output (no {flag})"
            on_stdout.append(given)
    if len(on_stdout) > 1:
        raise GapscopeError(
            f"{on_stdout[0]} and {on_stdout[1]} would both go to standard output; give all but "
            "one of them a file"
        )


def check_parquet_format(output: Path | None, fmt: str) -> None:
    """Refuse an ``--output`` ending in ``.parquet`` unless ``--format long`` writes it: an
    argument check, the same on every machine.

    Raises:
        GapscopeError: a Parquet path with another format.
    """
    from gapscope.report.long import is_parquet_path

    if is_parquet_path(output) and fmt != "long":
        raise GapscopeError(
            f"--output {output}: Parquet is written by --format long only; give --format "
            "long, or a file name without .parquet"
        )


def require_parquet_writer(output: Path | None) -> None:
    """Make sure pyarrow is there when ``--output`` is a Parquet file: what this machine has.

    Raises:
        MissingDependencyError: pyarrow is not installed.
    """
    from gapscope.report.long import is_parquet_path

    if is_parquet_path(output):
        from gapscope.extras import require

        require("pyarrow", "writing the long table as Parquet")


def write_output(text: str, path: Path | None) -> None:
    """``text`` to stdout (``path`` None or ``-``), else to ``path`` atomically.

    Raises:
        OSError: the file cannot be written; it names ``path``, not the temporary file.
    """
    if path is None or str(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    atomic_write_text(path, text)


def write_rendered(render: Callable[[Console], object], path: Path | None) -> None:
    """Render rich output to stdout, or to a file (plain text, atomically).

    Width: a terminal's own; otherwise (a pipe, a CI log, a file) ``COLUMNS`` when it is set,
    else :data:`FILE_WIDTH`. Colour only on a terminal, and never when ``NO_COLOR`` is set
    (rich's rules).
    """
    if path is None or str(path) == "-":
        console = Console()
        if not console.is_terminal:
            # Not a terminal: rich would fall back to 80 columns; COLUMNS wins when set.
            console.width = rendered_width()
        render(console)
        return
    buffer = io.StringIO()
    render(Console(file=buffer, width=rendered_width()))
    write_output(buffer.getvalue(), path)


def rendered_width() -> int:
    """The width of rendered tables that go to no terminal: ``COLUMNS`` when it is a
    positive number, else :data:`FILE_WIDTH`."""
    columns = os.environ.get("COLUMNS", "").strip()
    return int(columns) if columns.isdigit() and int(columns) > 0 else FILE_WIDTH


def analyse_with_status(source: Any, quiet: bool, **options: Any) -> Any:
    """:func:`gapscope.api.analyze` with a spinner on stderr (none when quiet)."""
    from gapscope.api import analyze

    if quiet:
        return analyze(source, **options)
    with Console(stderr=True).status("analysing") as status:
        return analyze(source, progress=lambda msg: status.update(f"analysing: {msg}"), **options)
