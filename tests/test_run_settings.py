"""The settings of the whole test run in the root conftest.py: the worker cap and TMPDIR."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from helpers import REPO


def _root_conftest():
    spec = importlib.util.spec_from_file_location("root_conftest", REPO / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("cores", "workers"), [(1, 1), (2, 2), (4, 4), (64, 4)])
def test_auto_starts_a_worker_a_core_and_at_most_four(monkeypatch, cores, workers):
    conftest = _root_conftest()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert conftest.pytest_xdist_auto_num_workers(None) == workers


def test_temporary_files_go_under_pytests_folder(tmp_path_factory):
    base = tmp_path_factory.getbasetemp().resolve()
    assert Path(tempfile.gettempdir()).resolve().is_relative_to(base)
    assert Path(os.environ["TMPDIR"]).resolve().is_relative_to(base)
    # and a process a test starts inherits it
    child = subprocess.run(
        [sys.executable, "-c", "import tempfile; print(tempfile.gettempdir())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(child.stdout.strip()).resolve().is_relative_to(base)


def test_workers_draw_ports_from_bands_of_their_own(monkeypatch):
    from process_group import PORT_BASE, PORTS_A_WORKER, free_port

    for k in (0, 1, 3):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{k}")
        port = free_port()
        assert PORT_BASE + k * PORTS_A_WORKER <= port < PORT_BASE + (k + 1) * PORTS_A_WORKER
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # free, as promised
