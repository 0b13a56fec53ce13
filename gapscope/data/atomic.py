"""Atomic file writes: a temporary file beside the target, fsync, then a rename over it.

A crash or a kill never leaves a half-written file under a final name: readers see the old
file or the new one, whole. Used for every file gapscope writes (stores, reports, pages).
Only regular files are replaced that way: a target that exists and is not one (a device such
as ``/dev/null``, a FIFO, a socket) is written through, never renamed over. A path that names
one of this process's open descriptors (``/dev/stdout``, ``/dev/stderr``, ``/dev/fd/N``,
``/proc/self/fd/N``, or a link to one) is written through that descriptor, at its offset, so
``-o /dev/stdout > file`` and ``>> file`` behave as the shell's redirection says. A symbolic
link to a regular file keeps its link: the file it points at is the one replaced.

An :class:`OSError` of a write names the target, never the temporary file (whose name means
nothing to the user); its ``errno`` and ``strerror`` are kept.

A kill can still leave the temporary file, ``.<name>.<8 random characters>.tmp``. The writer
holds an OS lock (``flock``) on its temporary file while it writes, so a dead writer's file is
told from a live one's by trying that lock: :func:`remove_dead_temps` removes only files of
exactly that name pattern whose lock is free, and every atomic write first removes the dead
temporary files of its own target.

:func:`kill_point` marks the instants between two writes where a kill must leave a state the
next run recovers from; tests set ``GAPSCOPE_KILL_AT`` to kill the process at one of them.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import os
import re
import signal
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from gapscope.errors import GapscopeError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock; writes are still atomic
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "KILL_VARIABLE",
    "AtomicFile",
    "atomic_save_npy",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_writable_folder",
    "fsync_dir",
    "is_gapscope_temp",
    "is_special_file",
    "open_descriptor",
    "writable_descriptor",
    "kill_point",
    "remove_dead_temps",
    "same_file",
    "try_lock",
]

#: ``PATTERN`` or ``PATTERN@K``: SIGKILL this process at the K-th (default first) kill point
#: whose name matches the shell pattern (``*@7``: the seventh kill point, whichever it is).
KILL_VARIABLE = "GAPSCOPE_KILL_AT"
_kill_hits = 0

# mkstemp's names: ".<target>." + 8 characters of its alphabet + ".tmp".
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp$", re.DOTALL)


def kill_point(name: str) -> None:
    """A boundary between two steps of a write: a kill here must leave a state that the same
    command, run again, finishes exactly (docs/architecture.md, section 4.3).

    Does nothing unless ``GAPSCOPE_KILL_AT`` is set; then the process kills itself with
    SIGKILL (no cleanup runs, as with ``kill -9``) at the matching kill point, after writing
    ``killed at <name>`` to stderr. Only tests set it.
    """
    spec = os.environ.get(KILL_VARIABLE)
    if not spec:
        return
    pattern, _, nth = spec.rpartition("@") if "@" in spec else (spec, "", "1")
    if not fnmatch.fnmatchcase(name, pattern):
        return
    global _kill_hits
    _kill_hits += 1
    if _kill_hits == int(nth):
        os.write(2, f"killed at {name}\n".encode())
        os.kill(os.getpid(), signal.SIGKILL)


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename in it) to disk, where the OS allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening folders; the rename still happened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp makes files private (0600); a store is ordinary data, readable as the umask allows.
_FILE_MODE = 0o666 & ~_current_umask()


def is_special_file(path: Path) -> bool:
    """Whether ``path`` exists and is neither a regular file nor a folder (a device, a FIFO,
    a socket; links are followed, so ``/dev/stdout`` counts)."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def check_writable_folder(path: str | os.PathLike[str], flag: str) -> None:
    """Refuse, before any work, a ``path`` whose file an atomic write could not make: the
    folder that holds it (or, when missing, the nearest folder above it that exists, where
    the write would create the rest) is a file, or may not be written in.

    A replacement needs both W (to add the temporary file and rename it) and X (to reach it)
    on the folder, whatever the mode of the file it replaces. A link is followed: the file it
    points at is the one replaced. Devices and FIFOs, written through, are not checked here.

    Args:
        path: the file to be written.
        flag: how messages name it (``--output``).

    Raises:
        GapscopeError: naming ``flag``, ``path`` and the folder.
    """
    for above in Path(path).absolute().parents:
        if above.is_symlink() and not above.exists():  # the write could not make the folder
            raise GapscopeError(f"{flag} {path}: {above} is a link to a path that does not exist")
    target = Path(os.path.realpath(path))
    folder = next((p for p in target.parents if p.exists()), None)
    if folder is None:
        return
    if not folder.is_dir():
        raise GapscopeError(f"{flag} {path}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise GapscopeError(f"{flag} {path}: the folder {folder} is not writable")


# The names of a process's open descriptors: /dev/fd/N and /proc/<self|pid>/fd/N.
_DESCRIPTOR_PATH = re.compile(
    r"^/(?:dev|proc/(?:self|thread-self|(?P<pid>\d+))(?:/task/\d+)?)/fd/(?P<fd>\d+)$"
)


def open_descriptor(path: Path) -> int | None:
    """The descriptor of this process that ``path`` names, following links (``/dev/stdout``
    is a link to ``/proc/self/fd/1``), or ``None`` when it names a file (or another
    process's descriptor).

    >>> open_descriptor(Path("/dev/fd/1")), open_descriptor(Path("report.json"))
    (1, None)
    """
    return _descriptor_of(path)[1]


def _descriptor_of(path: Path) -> tuple[bool, int | None]:
    """Whether ``path`` leads, through links, to a process's descriptor (``/proc/PID/fd/N``,
    ``/dev/fd/N``), and the descriptor when the process is this one. Each step's folder is
    resolved first (``~/fds -> /proc/self/fd`` makes ``~/fds/1`` a descriptor), and the
    descriptor's own link is never followed: it points at a file, or at ``pipe:[...]``."""
    current = os.path.abspath(path)
    for _ in range(40):  # the kernel's own limit on links followed
        current = os.path.join(
            os.path.realpath(os.path.dirname(current)), os.path.basename(current)
        )
        match = _DESCRIPTOR_PATH.match(current)
        if match is not None:
            pid = match.group("pid")
            own = pid is None or int(pid) == os.getpid()
            return True, int(match.group("fd")) if own else None
        try:
            target = os.readlink(current)
        except OSError:  # not a link (or not there): a name, not a descriptor
            return False, None
        current = os.path.join(os.path.dirname(current), target)
    return False, None


def writable_descriptor(fd: int) -> bool:
    """Whether ``fd`` is open in this process for writing."""
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL) if fcntl is not None else os.O_WRONLY
    except OSError:  # not open
        return False
    return flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)


def is_gapscope_temp(name: str, target: str | None = None) -> bool:
    """Whether a file name is an atomic write's temporary name (of ``target``, if given).

    >>> is_gapscope_temp(".manifest.json.k3_x9a0b.tmp"), is_gapscope_temp("manifest.json")
    (True, False)
    >>> is_gapscope_temp(".report.json.k3_x9a0b.tmp", "other.json")
    False
    """
    match = _TEMP_NAME.match(name)
    return match is not None and (target is None or match.group("target") == target)


def try_lock(fd: int, *, shared: bool = False) -> bool:
    """Take an OS lock (flock) on an open file without waiting; ``False`` if another open file
    holds a conflicting one. The lock goes when the file is closed or its process dies."""
    if fcntl is None:  # pragma: no cover - no flock: nothing can be told apart, claim it
        return True
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):
        return False
    return True


def same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` (not followed if a link) is the file open as ``fd``."""
    try:
        here, there = os.fstat(fd), os.lstat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def remove_dead_temps(folder: Path, target: str | None = None) -> list[Path]:
    """Remove the temporary files that killed atomic writes left in ``folder`` (of ``target``
    only, if given); return them.

    Only names of exactly the pattern :class:`AtomicFile` makes are considered, and only
    files whose writer is gone (their lock is free) are removed.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        if not is_gapscope_temp(entry.name, target) or not entry.is_file(follow_symlinks=False):
            continue
        path = Path(entry.path)
        try:
            fd = os.open(path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
        except OSError:  # gone already, or not ours to open
            continue
        try:
            # Locked: a live writer. Free: its writer died; the name is still this file.
            if try_lock(fd) and same_file(fd, path):
                path.unlink()
                removed.append(path)
        except OSError:  # removed meanwhile, or not ours to remove: leave it
            pass
        finally:
            os.close(fd)
    return removed


def _claim_temp(path: Path) -> tuple[int, Path]:
    """Make and lock a temporary file beside ``path``.

    A cleaner may lock and remove a file between its creation and our lock; then the name no
    longer points at our file and we start over.
    """
    while True:
        try:
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        except FileNotFoundError as exc:
            if not path.parent.is_dir():
                raise
            # The folder is there but makes no new file (procfs answers ENOENT, even to
            # root): "No such file or directory" with the target's name would be untrue.
            raise OSError(
                exc.errno,
                f"the folder {path.parent} takes no new files ({exc.strerror})",
                str(path),
            ) from None
        tmp = Path(name)
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        if same_file(fd, tmp):
            return fd, tmp
        os.close(fd)


def _take_over_mode(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the mode (and, where this process may, the owner) of the file it will
    replace, as an editor's save keeps them: a baseline kept private (0600) stays private. A
    new file gets the umask's mode, as ``open`` would give it (mkstemp's is 0600)."""
    try:
        old = os.stat(path)
    except OSError:
        old = None
    if old is None or not stat.S_ISREG(old.st_mode):
        os.chmod(tmp, _FILE_MODE)
        return
    with contextlib.suppress(OSError):  # only root may give a file to another user
        os.chown(tmp, old.st_uid, old.st_gid)
    os.chmod(tmp, stat.S_IMODE(old.st_mode))


def _names_temp(exc: OSError) -> bool:
    """Whether ``exc`` names no file, or an atomic write's temporary file."""
    name = exc.filename
    if name is None:
        return True
    return isinstance(name, str | bytes | os.PathLike) and is_gapscope_temp(
        os.path.basename(os.fsdecode(name))
    )


def _naming_target(exc: OSError, path: Path) -> OSError:
    """``exc`` with ``path`` as its file when it named the temporary file (or nothing), its
    ``errno`` and ``strerror`` kept (``OSError(ENOSPC, ...)`` is made a plain ``OSError``,
    ``OSError(EACCES, ...)`` a ``PermissionError``, as Python makes them)."""
    if isinstance(exc, BrokenPipeError) or not _names_temp(exc):
        # A closed reader is not about the file (the command line ends quietly on it).
        return exc
    named = OSError(exc.errno, exc.strerror or str(exc) or type(exc).__name__, str(path))
    return named.with_traceback(exc.__traceback__)


@contextlib.contextmanager
def _target_in_errors(path: Path) -> Iterator[None]:
    """Raise the OSErrors of the block naming ``path`` instead of the temporary file."""
    try:
        yield
    except OSError as exc:
        named = _naming_target(exc, path)
        if named is exc:
            raise
        raise named from None


class AtomicFile:
    """Open a temporary file beside ``path``; on success fsync and rename it over ``path``.

    When ``path`` is a device, a FIFO or a socket, it is opened and written directly instead
    (renaming a file over ``/dev/null`` as root would replace the device); when it names an
    open descriptor of this process (``/dev/stdout``), that descriptor is written through;
    when it is a link to a regular file, that file is replaced and the link stays. Dead temporary
    files of ``path`` (from killed writes) are removed first.

    An :class:`OSError` raised while opening, writing (in the ``with`` block) or replacing
    names ``path`` as given when it named the temporary file or no file at all (a full disk:
    ``[Errno 28] No space left on device: 'report.html'``); its ``errno`` and ``strerror``
    are kept, and the temporary file is removed."""

    def __init__(self, path: Path, mode: str = "wb") -> None:
        self.path = Path(path)
        # The name errors give: the user's, even when a link makes self.path another.
        self.given = self.path
        self.mode = mode
        self.tmp: Path | None = None

    def __enter__(self):
        with _target_in_errors(self.given):
            return self._open()

    def _open(self):
        encoding = None if "b" in self.mode else "utf-8"
        through, descriptor = _descriptor_of(self.path)
        if descriptor is not None:
            # Through a copy of the descriptor: reopening the name would truncate a file the
            # shell opened for appending, and renaming over it would replace the link.
            for stream in (sys.stdout, sys.stderr):
                if stream is not None:  # None: the process started with it closed
                    stream.flush()
            self.handle = os.fdopen(os.dup(descriptor), self.mode, encoding=encoding)
            return self.handle
        if through or is_special_file(self.path):
            # Another process's descriptor is opened by its name, as the shell would.
            self.handle = open(self.path, self.mode, encoding=encoding)  # noqa: SIM115
            return self.handle
        if self.path.is_symlink():
            # The link stays; the file it points at is replaced, in a folder that must be
            # there already (a link is not a promise to make folders wherever it points).
            target = Path(os.path.realpath(self.path))
            if not target.parent.is_dir():
                raise FileNotFoundError(
                    errno.ENOENT, f"{self.path} is a link to {target}, whose folder is missing"
                )
            self.path = target
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_dead_temps(self.path.parent, self.path.name)
        fd, self.tmp = _claim_temp(self.path)
        try:
            _take_over_mode(self.tmp, self.path)
            self.handle = os.fdopen(fd, self.mode, encoding=encoding)
        except BaseException:
            # __exit__ does not run when __enter__ fails: the temporary file goes here.
            os.close(fd)
            self.tmp.unlink(missing_ok=True)
            raise
        return self.handle

    def __exit__(self, exc_type, exc, tb) -> None:
        with _target_in_errors(self.given):
            self._close(replace=exc_type is None)
        if isinstance(exc, OSError):
            # The block's own write failed (a full disk): name the target, not the temporary.
            named = _naming_target(exc, self.given)
            if named is not exc:
                raise named from None

    def _close(self, *, replace: bool) -> None:
        if self.tmp is None:  # written through
            self.handle.close()
            return
        try:
            if replace:
                self.handle.flush()
                os.fsync(self.handle.fileno())
                kill_point(f"atomic:written:{self.path.name}")
                os.replace(self.tmp, self.path)
                fsync_dir(self.path.parent)
        finally:
            try:
                self.handle.close()  # releases the temporary file's lock
            finally:
                self.tmp.unlink(missing_ok=True)  # renamed already, unless the write failed
        if replace:
            kill_point(f"atomic:replaced:{self.path.name}")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file, fsync, rename).

    Raises:
        OSError: the file cannot be written; it names ``path``, not the temporary file.
    """
    with AtomicFile(path, "w") as fh:
        fh.write(text)


def atomic_write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented, key-sorted JSON to ``path`` atomically.

    Raises:
        OSError: the file cannot be written; it names ``path``, not the temporary file.
    """
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """Save ``array`` as ``.npy`` to ``path`` atomically.

    Raises:
        OSError: the file cannot be written; it names ``path``, not the temporary file.
    """
    with AtomicFile(path, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` atomically.

    Raises:
        OSError: the file cannot be written; it names ``path``, not the temporary file.
    """
    with AtomicFile(path, "wb") as fh:
        fh.write(payload)
