"""Settings of the whole test run, the doctests in gapscope/ included: how many workers
``python -m pytest -n auto`` starts, and where temporary files go."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

# `python -m pytest -n auto` (pytest-xdist) runs this many workers at most: every worker imports
# torch and many tests start processes of their own (torchrun ranks, Chromium), so more workers
# than this buy little and cost memory on a large machine.
MAX_WORKERS = 4


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """Workers of ``-n auto``: one a core this process may run on, at most :data:`MAX_WORKERS`."""
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    cores = len(usable) if usable is not None else (os.cpu_count() or 1)
    return max(1, min(MAX_WORKERS, cores))


@pytest.fixture(autouse=True, scope="session")
def _temporary_files_under_pytest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Send the temporary files of the tests, and of every process they start, into pytest's
    own folder, which it prunes, instead of the system's: crash reports from the tests that make
    gapscope crash on purpose, multiprocessing's sockets and the like would otherwise pile up in
    /tmp, one set every run."""
    folder = tmp_path_factory.mktemp("tmp")
    patch = pytest.MonkeyPatch()
    patch.setenv("TMPDIR", str(folder))
    patch.setattr(tempfile, "tempdir", str(folder))
    yield
    patch.undo()
