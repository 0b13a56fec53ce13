"""Atomic file writes: a temporary file beside the target, fsync, then a rename over it.

A crash or a kill never leaves a half-written file under a final name: readers see the old
file or the new one, whole. Used for every file gapscope writes (stores, reports, pages).
Only regular files are replaced that way: a target that exists and is not one (a device such
as ``/dev/null``, a FIFO, ``/dev/stdout``, a socket) is written through, never renamed over.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "AtomicFile",
    "atomic_save_npy",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "fsync_dir",
    "is_special_file",
]


def fsync_dir(path: Path) -> None:
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


class AtomicFile:
    """Open a temporary file beside ``path``; on success fsync and rename it over ``path``.

    When ``path`` is a device, a FIFO or a socket, it is opened and written directly instead
    (renaming a file over ``/dev/null`` as root would replace the device)."""

    def __init__(self, path: Path, mode: str = "wb") -> None:
        self.path = Path(path)
        self.mode = mode
        self.tmp: Path | None = None

    def __enter__(self):
        encoding = None if "b" in self.mode else "utf-8"
        if is_special_file(self.path):
            self.handle = open(self.path, self.mode, encoding=encoding)  # noqa: SIM115
            return self.handle
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
        )
        self.tmp = Path(tmp)
        os.chmod(self.tmp, _FILE_MODE)
        self.handle = os.fdopen(fd, self.mode, encoding=encoding)
        return self.handle

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.tmp is None:  # written through
            self.handle.close()
            return
        try:
            if exc_type is None:
                self.handle.flush()
                os.fsync(self.handle.fileno())
            self.handle.close()
            if exc_type is None:
                os.replace(self.tmp, self.path)
                fsync_dir(self.path.parent)
        finally:
            if self.tmp.exists():
                self.tmp.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file, fsync, rename)."""
    with AtomicFile(path, "w") as fh:
        fh.write(text)


def atomic_write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented, key-sorted JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """Save ``array`` as ``.npy`` to ``path`` atomically."""
    with AtomicFile(path, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` atomically."""
    with AtomicFile(path, "wb") as fh:
        fh.write(payload)
