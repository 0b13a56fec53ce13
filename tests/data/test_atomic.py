"""Atomic writes replace regular files whole and write through everything else: a device node
or a FIFO is never renamed over (as root, that would replace /dev/null with a file)."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from gapscope.data.atomic import (
    _descriptor_of,
    atomic_write_text,
    is_special_file,
    open_descriptor,
    writable_descriptor,
)


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


def test_a_link_to_an_open_descriptor_is_written_through_it(tmp_path):
    """``-o /dev/stdout >> log``: the shell's file is written at its offset (appended to, not
    truncated), and neither the link nor the file is renamed over."""
    log = tmp_path / "log.txt"
    log.write_text("first\n")
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    try:
        link = tmp_path / "out"
        link.symlink_to(f"/proc/self/fd/{fd}")
        for path in (link, Path(f"/dev/fd/{fd}")):
            inode = log.stat().st_ino
            atomic_write_text(path, "report\n")
            assert log.stat().st_ino == inode  # the same file, written through
        assert link.is_symlink()
        assert log.read_text() == "first\nreport\nreport\n"
    finally:
        os.close(fd)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.txt", "out"]


def test_which_paths_name_a_descriptor(tmp_path):
    assert open_descriptor(Path("/dev/fd/7")) == 7
    assert open_descriptor(Path(f"/proc/{os.getpid()}/fd/2")) == 2
    assert open_descriptor(Path("/proc/self/task/1/fd/5")) == 5
    assert open_descriptor(Path("/proc/1/fd/1")) is None  # another process's: a name
    (tmp_path / "file").write_text("x")
    (tmp_path / "chain").symlink_to(tmp_path / "link")
    (tmp_path / "link").symlink_to("/dev/fd/3")
    assert open_descriptor(tmp_path / "chain") == 3
    assert open_descriptor(tmp_path / "file") is None
    assert open_descriptor(tmp_path / "missing") is None
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert open_descriptor(tmp_path / "loop") is None
    if os.path.islink("/dev/stdout"):
        assert open_descriptor(Path("/dev/stdout")) == 1


def test_a_folder_link_into_proc_and_another_process_s_descriptors(tmp_path):
    """``fds -> /proc/self/fd`` makes ``fds/1`` this process's descriptor 1; ``/proc/1/fd/1``
    is a descriptor, but not ours: written by its name, never renamed over."""
    (tmp_path / "fds").symlink_to("/proc/self/fd")
    assert _descriptor_of(tmp_path / "fds" / "1") == (True, 1)
    assert _descriptor_of(Path("/proc/1/fd/1")) == (True, None)
    assert _descriptor_of(tmp_path / "file") == (False, None)


def test_which_descriptors_can_be_written(tmp_path):
    path = tmp_path / "f"
    path.write_text("x")
    reading, writing = os.open(path, os.O_RDONLY), os.open(path, os.O_WRONLY)
    os.close(closed := os.open(path, os.O_RDONLY))
    try:
        assert writable_descriptor(writing) and not writable_descriptor(reading)
        assert not writable_descriptor(closed)
    finally:
        os.close(reading)
        os.close(writing)


def test_a_dangling_link_makes_no_folders(tmp_path):
    link = tmp_path / "report.json"
    link.symlink_to(tmp_path / "not" / "there" / "report.json")
    with pytest.raises(FileNotFoundError, match="whose folder is missing"):
        atomic_write_text(link, "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    assert link.is_symlink()


def test_a_link_to_a_regular_file_stays_a_link(tmp_path):
    real = tmp_path / "reports" / "baseline.json"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / "baseline.json"
    link.symlink_to(real)
    atomic_write_text(link, "new")
    assert link.is_symlink() and real.read_text() == "new"
    assert not [p for p in real.parent.iterdir() if p.name.endswith(".tmp")]


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


def test_a_replaced_file_keeps_its_mode(tmp_path):
    """A baseline kept private stays private (mkstemp's 0600 or the umask's mode would not
    be its own); a new file gets the umask's mode."""
    kept = tmp_path / "baseline.json"
    kept.write_text("old")
    os.chmod(kept, 0o640)
    atomic_write_text(kept, "new")
    assert kept.read_text() == "new" and stat.S_IMODE(os.stat(kept).st_mode) == 0o640
    fresh = tmp_path / "fresh.json"
    atomic_write_text(fresh, "new")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o666 & ~mask


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="root gives files")
def test_root_replacing_a_users_file_leaves_it_theirs(tmp_path):
    kept = tmp_path / "baseline.json"
    kept.write_text("old")
    os.chown(kept, 12345, 23456)
    atomic_write_text(kept, "new")
    found = os.stat(kept)
    assert (found.st_uid, found.st_gid) == (12345, 23456)
