"""Where the gate's commands read reports from and write their outputs: files, standard input
(``-``, ``/dev/stdin``, a pipe), and the paths that must not name the same thing twice."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from gapscope.data.atomic import is_special_file, open_descriptor
from gapscope.errors import GapscopeError

__all__ = ["STDIN", "check_distinct_paths", "check_one_stdin", "read_report", "writes_to_stdout"]

#: The report argument that reads the report from standard input.
STDIN = "-"


def _stream(path: Path) -> tuple[int, int] | None:
    """The (device, inode) of the stream ``path`` reads or writes: standard input for ``-``,
    a device, FIFO or descriptor (``/dev/stdin``) by its own; ``None`` for a file."""
    try:
        if str(path) == STDIN:
            found = os.fstat(0)
        elif open_descriptor(path) is not None or is_special_file(path):
            found = os.stat(path)
        else:
            return None
    except OSError:  # not open, or not there: the read itself says so
        return None
    return found.st_dev, found.st_ino


def check_one_stdin(**paths: Path | None) -> None:
    """Refuse two report arguments that read one stream (``-`` and ``/dev/stdin``, one FIFO
    named twice): the second would read nothing, or compare the report with itself.

    Raises:
        GapscopeError: two of ``paths`` (``role=path``) name the same stream.
    """
    seen: dict[tuple[int, int], str] = {}
    for role, path in paths.items():
        stream = None if path is None else _stream(path)
        if stream is None:
            continue
        if stream in seen:
            where = "standard input" if stream == _stream(Path(STDIN)) else f"one stream ({path})"
            raise GapscopeError(
                f"the {seen[stream]} and {role.replace('_', ' ')} cannot both be read from "
                f"{where}; give one of them as a file"
            )
        seen[stream] = role.replace("_", " ")


def read_report(path: Path, role: str) -> Any:
    """A report from a file, or from standard input when ``path`` is ``-``."""
    from gapscope.gate.reports import STDIN_NAME, load_report, parse_report

    if str(path) != STDIN:
        return load_report(path, role)
    stream = sys.stdin
    if stream is None:
        raise GapscopeError(f"{role} -: there is no standard input to read the report from")
    if stream.isatty():
        raise GapscopeError(
            f"{role} -: standard input is a terminal; pipe a report into it, e.g. gapscope "
            "analyze STORE -f json | gapscope check - --baseline BASELINE.json"
        )
    buffer = getattr(stream, "buffer", None)
    return parse_report(buffer.read() if buffer is not None else stream.read(), STDIN_NAME, role)


def writes_to_stdout(path: Path | None) -> bool:
    """Whether output to ``path`` lands on this process's standard output: ``None``, ``-``,
    ``/dev/stdout`` (or another name of descriptor 1), or the device or pipe it is open on."""
    if path is None or str(path) == STDIN:
        return True
    if open_descriptor(path) == 1:
        return True
    try:
        if not is_special_file(path):
            return False
        here, there = os.fstat(1), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _identity(path: Path) -> tuple[str, Any]:
    """What ``path`` names: an existing file by (device, inode), else its absolute path with
    links resolved (a file the command is about to make)."""
    try:
        found = os.stat(path)
        return "inode", (found.st_dev, found.st_ino)
    except OSError:
        return "path", os.path.realpath(path)


def _not_a_file(path: Path) -> bool:
    """Whether ``path`` is no file to compare: ``-`` (standard input as a report, standard
    output as an output: never a file named ``-``, even with the descriptor closed), or a
    stream or device."""
    return str(path) == STDIN or _stream(path) is not None


def check_distinct_paths(inputs: dict[str, Path | None], outputs: dict[str, Path | None]) -> None:
    """Refuse, before any work, an output that would replace an input, or two outputs that
    name one file (the second would replace the first). Streams and devices (``-``,
    ``/dev/null``, a FIFO) are written through, never replaced, and are left out.

    ``inputs`` and ``outputs`` map a description (``report``, ``--json``) to a path.

    Raises:
        GapscopeError: naming the two arguments and the path.
    """
    read: dict[tuple[str, Any], str] = {}
    for role, path in inputs.items():
        if path is not None and not _not_a_file(path):
            read.setdefault(_identity(path), role)
    written: dict[tuple[str, Any], str] = {}
    for option, path in outputs.items():
        if path is None or _not_a_file(path):
            continue
        identity = _identity(path)
        if identity in read:
            raise GapscopeError(
                f"{option} {path} is the {read[identity]}, which it would replace; write to "
                "another file"
            )
        if identity in written:
            raise GapscopeError(
                f"{written[identity]} and {option} both name {path}, and the second would "
                "replace the first; give each a file of its own"
            )
        written[identity] = option
