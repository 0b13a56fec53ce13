"""Run a function in a forked child process, optionally killed (SIGKILL) at a kill point.

A fork costs milliseconds where a fresh interpreter costs seconds (torch, open_clip), so a
test can kill an extract at every one of its kill points. The child runs torch on one thread:
the parent's OpenMP pool does not survive a fork (a multi-threaded child would hang), and one
thread count for every run keeps the stores byte-identical (:func:`one_thread` gives the
parent's own runs the same).
"""

from __future__ import annotations

import contextlib
import os
import signal
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gapscope.data.atomic import KILL_VARIABLE

if not hasattr(os, "fork"):  # pragma: no cover - Windows
    pytest.skip("these tests fork", allow_module_level=True)


def start_forked(
    function: Callable[[], object], *, kill_at: str | None = None, log: Path | None = None
) -> int:
    """Start ``function()`` in a child and return its pid (see :func:`run_forked`)."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            import torch

            torch.set_num_threads(1)
            if log is not None:
                fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
            if kill_at is not None:
                os.environ[KILL_VARIABLE] = kill_at
            else:
                os.environ.pop(KILL_VARIABLE, None)
            function()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def wait_forked(pid: int) -> int:
    """The child's exit code, or minus the signal that ended it."""
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def run_forked(
    function: Callable[[], object], *, kill_at: str | None = None, log: Path | None = None
) -> int:
    """Run ``function()`` in a child; its exit code, or minus the signal that ended it.

    ``kill_at`` is a ``GAPSCOPE_KILL_AT`` value (``"*@3"``: the third kill point). The
    child's stdout and stderr go to ``log`` (a traceback on failure, ``killed at <name>``).
    """
    return wait_forked(start_forked(function, kill_at=kill_at, log=log))


def killed_at(log: Path) -> str:
    """The kill point a child died at, from its log."""
    lines = [line for line in log.read_text().splitlines() if line.startswith("killed at ")]
    return lines[-1].removeprefix("killed at ") if lines else "?"


KILLED = -signal.SIGKILL


@contextlib.contextmanager
def one_thread(*, fsync: bool = True) -> Iterator[None]:
    """torch on one thread here too, and (``fsync=False``) no fsync: a killed process, unlike
    a machine that loses power, loses nothing the OS already has, so tests may skip it."""
    import torch

    threads, real_fsync = torch.get_num_threads(), os.fsync
    torch.set_num_threads(1)
    if not fsync:
        os.fsync = lambda fd: None
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        os.fsync = real_fsync
