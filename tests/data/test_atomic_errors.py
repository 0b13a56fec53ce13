"""A failed atomic write names the file the caller asked for, never its temporary file, and
leaves no temporary file behind: through the library's writers and through the commands."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gapscope.cli import app
from gapscope.data import atomic
from gapscope.data.atomic import (
    AtomicFile,
    atomic_save_npy,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    is_gapscope_temp,
)
from gapscope.errors import GapscopeError

runner = CliRunner()

WRITERS = {
    "bytes": lambda path: atomic_write_bytes(path, b"payload" * 1000),
    "text": lambda path: atomic_write_text(path, "text\n" * 1000),
    "json": lambda path: atomic_write_json(path, {"a": [1, 2, 3]}),
    "npy": lambda path: atomic_save_npy(path, np.arange(1000, dtype=np.float32)),
}


def no_space(fd: int) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def temps(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if is_gapscope_temp(p.name)]


def assert_names_target(exc: OSError, target: Path, code: int) -> None:
    assert exc.errno == code
    assert exc.strerror == os.strerror(code)
    assert exc.filename == str(target)
    assert exc.filename2 is None
    assert ".tmp" not in str(exc), str(exc)


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_a_full_disk_names_the_target(tmp_path, monkeypatch, writer):
    target = tmp_path / "out" / "result.bin"
    monkeypatch.setattr(atomic.os, "fsync", no_space)
    with pytest.raises(OSError) as caught:
        WRITERS[writer](target)
    assert_names_target(caught.value, target, errno.ENOSPC)
    assert not target.exists()
    assert temps(tmp_path) == []


def test_the_old_file_stays_whole_when_the_write_fails(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    target.write_text("old\n")
    monkeypatch.setattr(atomic.os, "fsync", no_space)
    with pytest.raises(OSError) as caught:
        atomic_write_text(target, "new\n")
    assert_names_target(caught.value, target, errno.ENOSPC)
    assert target.read_text() == "old\n"
    assert temps(tmp_path) == []


def test_a_write_that_fails_half_way_names_the_target(tmp_path):
    # A real failed write(2): past the file-size limit the kernel answers EFBIG (SIGXFSZ is
    # ignored), after the first bytes went to the temporary file.
    target = tmp_path / "page.html"
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        from pathlib import Path
        from gapscope.data.atomic import atomic_write_bytes, atomic_write_text
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
        for write, payload in ((atomic_write_bytes, b"x" * 100_000),
                               (atomic_write_text, "x" * 100_000)):
            try:
                write(Path({str(target)!r}), payload)
            except OSError as exc:
                print(exc.errno, exc.filename, str(exc))
            else:
                print("written")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2, done.stdout
    for line in lines:
        code, name, message = line.split(" ", 2)
        assert int(code) == errno.EFBIG and name == str(target), line
        assert ".tmp" not in message, line
    assert not target.exists()
    assert temps(tmp_path) == []


def test_a_folder_in_the_way_names_the_target(tmp_path):
    target = tmp_path / "report.html"
    target.mkdir()
    with pytest.raises(IsADirectoryError) as caught:
        atomic_write_text(target, "page")
    assert_names_target(caught.value, target, errno.EISDIR)
    assert temps(tmp_path) == []


def test_a_link_s_failure_names_the_link_as_given(tmp_path, monkeypatch):
    real = tmp_path / "real.txt"
    real.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    monkeypatch.setattr(atomic.os, "fsync", no_space)
    with pytest.raises(OSError) as caught:
        atomic_write_text(link, "new")
    assert_names_target(caught.value, link, errno.ENOSPC)
    assert real.read_text() == "old" and link.is_symlink()


def test_errors_that_name_another_file_are_left_as_they_are(tmp_path):
    # The folder that cannot be made is the useful name here, not the target.
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError) as caught:
        atomic_write_text(blocker / "sub" / "out.txt", "x")
    assert caught.value.filename == str(blocker / "sub")


def test_a_block_s_own_write_error_names_the_target(tmp_path):
    target = tmp_path / "items.jsonl"
    with pytest.raises(OSError) as caught, AtomicFile(target, "w"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert_names_target(caught.value, target, errno.ENOSPC)
    assert temps(tmp_path) == []


def _temporary_file_fails(monkeypatch, kind: type[OSError], code: int, folder: Path) -> None:
    """``mkstemp`` raises ``kind`` (``code``) naming the temporary file of ``out.txt``."""

    def fail(*args, **kwargs):
        raise kind(code, os.strerror(code), str(folder / ".out.txt.k3_x9a0b.tmp"))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", fail)


def test_a_failed_temporary_file_creation_names_the_target(tmp_path, monkeypatch):
    target = tmp_path / "out.txt"
    _temporary_file_fails(monkeypatch, PermissionError, errno.EACCES, tmp_path)
    with pytest.raises(PermissionError) as caught:
        atomic_write_text(target, "x")
    assert_names_target(caught.value, target, errno.EACCES)


def test_a_folder_that_makes_no_new_file_is_named_as_such(tmp_path, monkeypatch):
    # procfs answers "No such file or directory" to a new file in /proc, even to root: the
    # target exists, so saying it does not would send the user looking for the wrong thing.
    target = tmp_path / "out.txt"
    _temporary_file_fails(monkeypatch, FileNotFoundError, errno.ENOENT, tmp_path)
    with pytest.raises(OSError) as caught:
        atomic_write_text(target, "x")
    assert caught.value.errno == errno.ENOENT and caught.value.filename == str(target)
    assert caught.value.strerror == (
        f"the folder {tmp_path} takes no new files (No such file or directory)"
    )


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0 or not Path("/proc/version").exists(),
    reason="root with a /proc: a new file in /proc fails with ENOENT only there",
)
def test_an_output_in_proc_as_root_says_the_folder_takes_no_new_files(example_store, tmp_path):
    report = tmp_path / "r.json"
    run("analyze", example_store, "--metrics", "gap", "--json", report)
    line = one_line_error(run("diff", report, report, "-o", "/proc/version"))
    assert "the folder /proc takes no new files" in line, line


# ----------------------------------------------------------------- through the commands


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_analyze_html_on_a_full_disk_names_the_page(example_store, tmp_path, monkeypatch):
    page = tmp_path / "report.html"
    monkeypatch.setattr(atomic.os, "fsync", no_space)
    line = one_line_error(run("analyze", example_store, "-q", "--metrics", "gap", "--html", page))
    assert line == f"Error: {os.strerror(errno.ENOSPC)}: {page}"
    assert temps(tmp_path) == []


def test_trend_html_on_a_full_disk_names_the_page(example_store, tmp_path, monkeypatch):
    reports = []
    for step in (1, 2):
        path = tmp_path / f"step-{step}.json"
        done = run(
            "analyze", example_store, "-q", "--metrics", "gap", "--step", step, "--json", path
        )
        assert done.exit_code == 0, done.output
        reports.append(path)
    page = tmp_path / "trend.html"
    monkeypatch.setattr(atomic.os, "fsync", no_space)
    monkeypatch.chdir(tmp_path)  # trend reads check's settings from the current folder
    line = one_line_error(run("trend", *reports, "--html", page))
    assert line == f"Error: {os.strerror(errno.ENOSPC)}: {page}"
    assert temps(tmp_path) == []


def test_plot_on_a_full_disk_names_the_png(example_store, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    out = tmp_path / "plots"
    monkeypatch.setattr(atomic.os, "fsync", no_space)
    line = one_line_error(
        run("plot", example_store, "--out", out, "--points", 50, "--sample", 50, "--no-umap", "-q")
    )
    assert line.startswith(f"Error: {os.strerror(errno.ENOSPC)}: {out}{os.sep}"), line
    assert line.endswith(".png") and ".tmp" not in line, line
    assert temps(tmp_path) == []


@pytest.mark.parametrize("option", ["-o", "--json", "--html"])
@pytest.mark.parametrize("exists", [True, False], ids=["replaced", "new"])
def test_an_output_in_a_folder_that_may_not_be_written_is_refused_before_the_work(
    example_store, tmp_path, monkeypatch, option, exists
):
    from helpers import read_only_folder

    import gapscope.cli.analyze as analyze_cli

    locked = tmp_path / "locked"
    locked.mkdir()
    target = locked / "out.txt" if exists else locked / "new" / "out.txt"
    if exists:
        target.write_text("old")
    # The analysis is never reached: the refusal comes from the check of the outputs.
    monkeypatch.setattr(analyze_cli, "embedding_source", lambda *a, **k: pytest.fail("ran"))
    with read_only_folder(locked, monkeypatch):
        line = one_line_error(run("analyze", example_store, "-q", option, target))
    assert line == f"Error: {option_flag(option)} {target}: the folder {locked} is not writable"
    assert not exists or target.read_text() == "old"


def option_flag(option: str) -> str:
    return {"-o": "--output"}.get(option, option)


def test_check_writable_folder_follows_a_link_to_the_file_it_replaces(tmp_path, monkeypatch):
    from helpers import read_only_folder

    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "real.json").write_text("{}")
    link = tmp_path / "link.json"
    link.symlink_to(locked / "real.json")
    atomic.check_writable_folder(link, "--json")  # the link's folder and the file's: writable
    with read_only_folder(locked, monkeypatch), pytest.raises(GapscopeError) as caught:
        atomic.check_writable_folder(link, "--json")
    assert str(caught.value) == f"--json {link}: the folder {locked} is not writable"


def test_check_writable_folder_refuses_a_dangling_link_above_the_file(tmp_path):
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    target = tmp_path / "dangling" / "sub" / "out.json"
    with pytest.raises(GapscopeError) as caught:
        atomic.check_writable_folder(target, "--json")
    assert str(caught.value) == (
        f"--json {target}: {tmp_path / 'dangling'} is a link to a path that does not exist"
    )
