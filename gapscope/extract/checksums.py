"""sha256 of checkpoint and config files, so stores record exactly which weights made them."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

_BLOCK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def sha256_files(paths: Iterable[str | os.PathLike[str]]) -> str:
    """One sha256 over several files (e.g. a sharded checkpoint), by name and content, in order.

    A single file gives the same digest as :func:`sha256_file`, so a checkpoint's digest does
    not depend on how it was passed.
    """
    files = [Path(p) for p in paths]
    if len(files) == 1:
        return sha256_file(files[0])
    h = hashlib.sha256()
    for path in files:
        h.update(f"{path.name}:{sha256_file(path)}\n".encode())
    return h.hexdigest()
