"""Atomic writes replace regular files whole and write through everything else: a device node
or a FIFO is never renamed over (as root, that would replace /dev/null with a file)."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from gapscope.data.atomic import atomic_write_text, is_special_file


def test_regular_file_is_replaced_whole(tmp_path):
    target = tmp_path / "sub" / "report.json"
    atomic_write_text(target, "one")
    inode = target.stat().st_ino
    atomic_write_text(target, "two")
    assert target.read_text() == "two" and target.stat().st_ino != inode  # renamed over
    assert not [p for p in target.parent.iterdir() if p.name.endswith(".tmp")]


def test_fifo_is_written_through(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    atomic_write_text(fifo, "through the pipe")
    reader.join(timeout=10)
    assert got == ["through the pipe"]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and is_special_file(fifo)


@pytest.mark.skipif(os.geteuid() != 0, reason="making a device node needs root")
def test_device_node_is_written_through(tmp_path):
    null = tmp_path / "null"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a copy of /dev/null
    atomic_write_text(null, "discarded")
    assert stat.S_ISCHR(os.stat(null).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]


def test_what_counts_as_special(tmp_path):
    assert not is_special_file(tmp_path / "missing") and not is_special_file(tmp_path)
    (tmp_path / "file").write_text("x")
    assert not is_special_file(tmp_path / "file")
    assert is_special_file(Path("/dev/null"))


def test_dead_temporary_files_of_the_target_are_removed(tmp_path):
    """Killed atomic writes of a report left ``.report.json.*.tmp`` behind; the next write of
    that report removes them, and only them: not a live writer's, not another file's, not a
    name gapscope does not make."""
    import fcntl

    from gapscope.data.atomic import is_gapscope_temp, remove_dead_temps

    target = tmp_path / "report.json"
    dead = tmp_path / ".report.json.k3_x9a0b.tmp"
    live = tmp_path / ".report.json.live_001.tmp"
    other = tmp_path / ".other.json.k3_x9a0b.tmp"
    mine = [tmp_path / ".report.json.tmp", tmp_path / ".report.json.toolong123.tmp"]
    for path in (dead, live, other, *mine):
        path.write_text("x")
    assert is_gapscope_temp(dead.name, "report.json") and not is_gapscope_temp(mine[1].name)
    with open(live, "rb+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        atomic_write_text(target, "{}")
    assert target.read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (target, live, other, *mine)
    )
    # Once its writer is gone, any target's: the store folders are cleaned that way.
    assert sorted(remove_dead_temps(tmp_path)) == sorted([live, other])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (target, *mine))
