"""The embedding store: one folder, format version 2 (see docs/architecture.md, section 4).

```
manifest.json          format, versions, encoder, dataset, per-modality file/rows/dim/dtype
image.npy              raw encoder outputs, (N_image, d), float32 or float16, not normalised
image.items.npz        the items as columns, memory-mapped: {"id", "source", "group", "label"?}
                       and int64 group/label codes (gapscope.data.item_columns)
text.npy, text.items.npz, audio.npy, audio.items.npz
```

Format 1 kept the items as JSON lines (``<modality>.items.jsonl``, one JSON object a row); such
stores stay readable, and :func:`gapscope.data.upgrade.upgrade_store` (``gapscope upgrade``)
rewrites them as format 2.

Every file is written atomically (temporary name in the same folder, fsync, rename), so a crash
never leaves a half-written file under a final name. Extraction appends rows in *parts*
(``parts/<modality>/<index>.npy`` and ``.items.jsonl``, a journal of JSON lines); a part exists
only once complete, so an interrupted extract resumes from the parts on disk, and
:meth:`EmbeddingStore.finalize` concatenates them into the documented files (the items into
columns). A store whose manifest says ``"complete": false``
is refused by :meth:`EmbeddingStore.open` unless asked for explicitly.

Writing takes :class:`StoreLock`, an OS lock on ``.<name>.gapscope-lock`` beside the store,
so two processes never write one store; the OS drops it when its process dies. Replacing a
store (``overwrite``) builds the new one in ``.<name>.gapscope-new`` beside it and swaps it in
only once it is complete; files in the folder that are not the store's own are carried over.
Whoever takes the lock first finishes or undoes what a killed writer left (:func:`recover`).
Readers never take the lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gapscope._version import __version__
from gapscope.data import item_columns
from gapscope.data.atomic import (
    AtomicFile,
    atomic_save_npy,
    atomic_write_json,
    fsync_dir,
    is_gapscope_temp,
    kill_point,
    remove_dead_temps,
    same_file,
    try_lock,
)
from gapscope.data.item_columns import ItemColumns
from gapscope.errors import GapscopeError, StoreError

FORMAT = "gapscope.store"
FORMAT_VERSION = 2
#: Format versions this gapscope reads: 1 (items as JSON lines) and 2 (items as columns).
READABLE_FORMAT_VERSIONS = (1, 2)
MODALITIES = ("image", "text", "audio")
MANIFEST = "manifest.json"
#: Size and mtime of each ``.npy`` file when the store was finalised: while they hold, the
#: manifest's fingerprint is trusted without hashing the embeddings again. Kept out of the
#: manifest, which stays byte-identical however often a store is written.
STAMPS = "fingerprint.stamps.json"
_DTYPES = ("float16", "float32")
_PARTS = "parts"


def _write_jsonl(fh, items: Iterable[Mapping[str, Any]]) -> None:
    for item in items:
        fh.write(json.dumps(item, sort_keys=True, ensure_ascii=False))
        fh.write("\n")


# --------------------------------------------------------------------------- helpers


def fingerprint_arrays(arrays: Mapping[str, np.ndarray], chunk_rows: int = 65536) -> str:
    """sha256 over the modality names, shapes, dtypes and raw bytes of the arrays, in order.

    Reads memory-mapped arrays one slice at a time, so it is cheap in memory.
    """
    h = hashlib.sha256()
    for name in sorted(arrays, key=_modality_order):
        arr = arrays[name]
        h.update(_fingerprint_header(name, arr.shape, arr.dtype))
        for start in range(0, arr.shape[0], chunk_rows):
            h.update(np.ascontiguousarray(arr[start : start + chunk_rows]).tobytes())
    return h.hexdigest()


def _fingerprint_header(name: str, shape: tuple[int, ...], dtype: Any) -> bytes:
    return f"{name}:{tuple(shape)}:{np.dtype(dtype).str}\n".encode()


def _file_stamp(path: Path) -> dict[str, int]:
    """What the cached fingerprint is checked against: a file's size and modification time."""
    st = path.stat()
    return {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def _modality_order(name: str) -> tuple[int, str]:
    return (MODALITIES.index(name), name) if name in MODALITIES else (len(MODALITIES), name)


#: What a modality may be called: a lowercase identifier of at most 32 characters. Names
#: become parts of report keys (``pairs.video-text``, ``video->text``) and file names
#: (``video.npy``), so ``-``, ``>``, ``/``, ``.`` and capitals are out.
MODALITY_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


def printable_name(name: str) -> str:
    """A file name as the UTF-8 text a manifest keeps: bytes that are not UTF-8 (which
    Python lists as surrogates) written as ``\\xff``.

    >>> printable_name("caf\\udce9.png"), printable_name("caf\\u00e9.png")
    ('caf\\\\xe9.png', 'café.png')
    """
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def check_modality_name(name: Any, error: type[GapscopeError] = GapscopeError) -> str:
    """``name`` if it may name a modality (:data:`MODALITY_NAME`); else ``error`` in one line.

    >>> check_modality_name("video"), check_modality_name("depth_map")
    ('video', 'depth_map')
    """
    if not isinstance(name, str) or MODALITY_NAME.fullmatch(name) is None:
        raise error(
            f"modality name {name!r}: use a lowercase identifier (letters, digits, _; at most "
            "32 characters, starting with a letter), e.g. image, text, audio, video, depth"
        )
    return name


def _check_modality(modality: str) -> None:
    check_modality_name(modality, StoreError)


def check_format_version(path: Path, manifest: Mapping[str, Any]) -> None:
    """Refuse a manifest of a format version this gapscope does not read, in one line."""
    version = manifest.get("format_version")
    if isinstance(version, bool) or version not in READABLE_FORMAT_VERSIONS:
        readable = " and ".join(str(v) for v in READABLE_FORMAT_VERSIONS)
        raise StoreError(
            f"{path}: unknown store format version {version!r} "
            f"(this gapscope {__version__} reads versions {readable})"
        )


def check_manifest(path: Path, manifest: Mapping[str, Any]) -> None:
    """Check the types of a manifest's fields, so that a hand-edited or damaged manifest is
    refused with one line naming the field instead of failing somewhere later.

    Raises:
        StoreError: a field of the wrong type, an unknown modality, or a file that lies
            outside the store folder.
    """
    modalities = manifest.get("modalities")
    if not isinstance(modalities, dict):
        raise StoreError(
            f"{path}: 'modalities' must be an object mapping each modality to its files, "
            f"got {_json_type(modalities)}"
        )
    for modality, entry in modalities.items():
        if not isinstance(modality, str) or MODALITY_NAME.fullmatch(modality) is None:
            raise StoreError(
                f"{path}: modality {modality!r} in 'modalities' is not a lowercase identifier"
            )
        _check_entry(path, modality, entry)
    for key in ("encoder", "dataset", "extract"):
        if manifest.get(key) is not None and not isinstance(manifest[key], dict):
            raise StoreError(f"{path}: {key!r} must be an object, got {_json_type(manifest[key])}")
    if "complete" in manifest and not isinstance(manifest["complete"], bool):
        raise StoreError(f"{path}: 'complete' must be true or false, got {manifest['complete']!r}")
    cached = manifest.get("fingerprint")
    if cached is not None and not (
        isinstance(cached, str) and re.fullmatch("[0-9a-f]{64}", cached) is not None
    ):
        raise StoreError(f"{path}: 'fingerprint' must be a sha256 in hex, got {cached!r}")
    skipped = manifest.get("skipped")
    if skipped is not None and not (
        isinstance(skipped, list) and all(isinstance(e, dict) for e in skipped)
    ):
        raise StoreError(f"{path}: 'skipped' must be a list of objects, got {_json_type(skipped)}")


def _check_entry(path: Path, modality: str, entry: Any) -> None:
    if not isinstance(entry, dict):
        raise StoreError(
            f"{path}: the entry of {modality} must be an object, got {_json_type(entry)}"
        )
    for key in ("file", "items"):
        name = entry.get(key)
        if key == "items" and key not in entry:
            continue
        if not isinstance(name, str) or not name:
            raise StoreError(f"{path}: {key!r} of {modality} must be a file name, got {name!r}")
        target = (path / name).resolve()
        if target.parent != path.resolve():
            raise StoreError(f"{path}: {key!r} of {modality} ({name!r}) lies outside the store")
    for key in ("rows", "dim"):
        value = entry.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 0
        ):
            raise StoreError(f"{path}: {key!r} of {modality} must be a whole number, got {value!r}")
    if entry.get("dtype") is not None and not isinstance(entry["dtype"], str):
        raise StoreError(f"{path}: 'dtype' of {modality} must be a name, got {entry['dtype']!r}")


def _plain_value(value: Any) -> bool:
    """A JSON value a group or label may hold: null, a string, a number, or a list of them."""
    if isinstance(value, list):
        return all(_plain_value(v) for v in value)
    return value is None or isinstance(value, str | int | float)


def _json_type(value: Any) -> str:
    """How JSON would name the type of ``value`` ("a list", "null", ...)."""
    if value is None:
        return "null"
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    return names.get(type(value), "a number")


def _check_rows(modality: str, embeddings: np.ndarray, items: Sequence[Mapping[str, Any]]) -> None:
    if not isinstance(embeddings, np.ndarray) or embeddings.ndim != 2:
        shape = getattr(embeddings, "shape", None)
        raise StoreError(f"{modality}: embeddings must be a 2-D numpy array, got shape {shape}")
    if embeddings.dtype.name not in _DTYPES:
        raise StoreError(
            f"{modality}: embeddings must be float16 or float32, got {embeddings.dtype.name}"
        )
    if len(items) != embeddings.shape[0]:
        raise StoreError(f"{modality}: {embeddings.shape[0]} embedding rows but {len(items)} items")
    for i, item in enumerate(items):
        if "id" not in item or "group" not in item:
            raise StoreError(f"{modality}: item {i} needs an 'id' and a 'group', got {dict(item)}")
        for key in ("group", "label"):
            if not _plain_value(item.get(key)):
                raise StoreError(
                    f"{modality}: item {i} has {_json_type(item[key])} inside its {key}; a "
                    f"{key} is a string, a number or a list of them"
                )


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    items = []
    # Bytes, decoded a line at a time: a line that is not UTF-8 is named like bad JSON.
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise StoreError(f"{path}: line {lineno} is not valid UTF-8") from None
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise StoreError(f"{path}: line {lineno} is not valid JSON ({exc.msg})") from None
    return items


def _load_npy(path: Path, mmap: bool) -> np.ndarray:
    if not path.is_file():
        raise StoreError(f"{path}: file is missing")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StoreError(f"{path}: truncated or not a valid .npy file ({reason})") from None


# --------------------------------------------------------------------------- writing safely

#: A URL (``s3://b/x``), also once a ``Path`` has folded its ``//`` (``s3:/b/x``); a
#: one-letter scheme is a Windows drive.
_URL_LIKE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]+:/")
_LOCK_WAIT_SECONDS = 0.5  # a reader's probe holds the lock for microseconds; never refuse on it
# A store opened while a writer swaps it is opened again, this many times this far apart.
_OPEN_ATTEMPTS = 20
_REOPEN_SECONDS = 0.05


@dataclass(frozen=True)
class StorePaths:
    """Where gapscope keeps what it needs to write the store at ``given``, all beside it in
    its parent folder (so that renaming the store folder never moves them).

    ``real`` is the store folder with links resolved (a linked store is replaced where it
    lies); ``lock`` the lock file; ``staging`` the replacement an overwrite builds;
    ``old`` the replaced store while the two are swapped.
    """

    given: Path
    real: Path
    lock: Path
    staging: Path
    old: Path

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> StorePaths:
        if _URL_LIKE.match(os.fspath(path)):
            raise StoreError(
                f"{os.fspath(path)}: gapscope writes stores to local folders only (stores at "
                "URLs are read-only); write it to a local folder and copy it there"
            )
        given = Path(path)
        try:
            real = given.resolve()
        except RuntimeError:  # Python 3.11 and 3.12; later ones give OSError (ELOOP)
            raise StoreError(f"{given}: a loop of symbolic links") from None
        if not real.name:
            raise StoreError(f"{given}: the root folder cannot be a store")
        name = real.name
        return cls(
            given,
            real,
            real.with_name(f".{name}.gapscope-lock"),
            real.with_name(f".{name}.gapscope-new"),
            real.with_name(f".{name}.gapscope-old"),
        )


def _holder(fd: int) -> str:
    """Who holds a lock, as its file records it: ``pid 123 on host``."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        record = json.loads(os.read(fd, 4096).decode("utf-8"))
        return f"pid {int(record['pid'])} on {record['host']}"
    except (OSError, ValueError, KeyError, TypeError):  # written a moment from now
        return "pid unknown"


class StoreLock:
    """The exclusive lock of a store being written: ``flock`` on ``.<name>.gapscope-lock``.

    One process writes a store at a time; a second one is refused at once, with the pid and
    host of the holder. The OS releases the lock when its process dies, so ``kill -9`` never
    leaves a stale lock; the lock file is removed on release (a killed writer's file is taken
    over by the next writer). Taking the lock also finishes or undoes what a killed writer
    left (:func:`recover`). Every acquire opens the lock file anew, so a second one is refused
    within one process too.
    """

    def __init__(self, paths: StorePaths, fd: int) -> None:
        self.paths = paths
        self._fd: int | None = fd
        _LIVE_LOCKS.add(self)

    @classmethod
    def acquire(cls, path: str | os.PathLike[str]) -> StoreLock:
        """Lock the store at ``path`` (creating its parent folder if needed) and recover it.

        Raises:
            StoreError: another process holds the lock.
        """
        paths = StorePaths.of(path)
        file = next((p for p in paths.lock.parents if p.is_file()), None)
        if file is not None:
            raise StoreError(f"{paths.given}: {file} is a file, not a folder")
        paths.lock.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + _LOCK_WAIT_SECONDS
        while True:
            fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o666)
            if try_lock(fd):
                if same_file(fd, paths.lock):
                    break
                os.close(fd)  # the holder removed the file as it released it: take a new one
                continue
            holder = _holder(fd)
            os.close(fd)
            if time.monotonic() >= deadline:
                raise StoreError(
                    f"{paths.given}: another gapscope process is writing this store ({holder}); "
                    "wait for it to finish, or stop it and run the command again"
                )
            time.sleep(0.05)
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode()
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, record + b"\n")
        lock = cls(paths, fd)
        kill_point("store:locked")
        try:
            recover(paths)
        except BaseException:
            lock.release()
            raise
        return lock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Remove the lock file and release the lock (nothing if already released)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if same_file(fd, self.paths.lock):
                self.paths.lock.unlink()
        except OSError:
            pass
        finally:
            os.close(fd)

    def __enter__(self) -> StoreLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        # A lock dropped without release (an exception, a library user's forgotten store):
        # the OS would release it with the file; remove the file too, quietly.
        with contextlib.suppress(Exception):  # at interpreter shutdown os may be gone
            self.release()


_LIVE_LOCKS: weakref.WeakSet[StoreLock] = weakref.WeakSet()


def _forget_locks_in_child() -> None:
    """In a forked child (a DataLoader worker), let go of the parent's locks.

    A ``flock`` belongs to the open file, which a fork shares: a worker still alive after its
    writer was killed would keep the lock held. The child closes its copies (never unlocking:
    that would unlock the parent too) and forgets them.
    """
    for lock in list(_LIVE_LOCKS):
        fd, lock._fd = lock._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_locks_in_child)


def store_writer(path: str | os.PathLike[str]) -> str | None:
    """``"pid 123 on host"`` of the process writing the store at ``path``, or ``None``.

    Readers use it to tell a store being written from one whose writer was interrupted; it
    never waits and never blocks a writer for more than an instant.
    """
    try:
        paths = StorePaths.of(path)
        fd = os.open(paths.lock, os.O_RDONLY)
    except (OSError, StoreError):
        return None
    try:
        return None if try_lock(fd, shared=True) else _holder(fd)
    finally:
        os.close(fd)


def recover(paths: StorePaths) -> None:
    """Finish or undo what a killed writer left; the caller holds the store's lock.

    - killed while swapping in a replacement (the old store moved aside): the replacement is
      complete, so it is moved in; the old store is then removed;
    - temporary files of killed atomic writes are removed from the store and the replacement
      (and their parts);
    - ``parts/`` of a complete store (killed while removing it) is removed.
    """
    if os.path.lexists(paths.old):
        if not os.path.lexists(paths.real):
            moved = paths.staging if _is_complete(paths.staging) else paths.old
            os.rename(moved, paths.real)
            fsync_dir(paths.real.parent)
            kill_point("recover:moved-in")
        _remove_tree(paths.old, "old")
    for folder in (paths.real, paths.staging):
        _tidy(folder)


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT else None


def _is_complete(folder: Path) -> bool:
    manifest = _read_manifest(folder)
    return bool(manifest and manifest.get("complete"))


def _tidy(folder: Path) -> None:
    if not folder.is_dir() or folder.is_symlink():
        return
    remove_dead_temps(folder)
    parts = folder / _PARTS
    if parts.is_dir():
        for sub in parts.iterdir():
            remove_dead_temps(sub)
        if _is_complete(folder):
            _remove_tree(parts, _PARTS)


def _is_empty(folder: Path) -> bool:
    return not any(folder.iterdir())


def _remove_tree(path: Path, what: str) -> None:
    """Remove a folder of gapscope's own (parts, a replaced or abandoned store), its manifest
    last, so that a kill part-way leaves a folder the next writer still recognises."""
    if not os.path.lexists(path):
        return
    if path.is_dir() and not path.is_symlink():
        entries = sorted(path.iterdir(), key=lambda p: p.name == MANIFEST)
        for k, entry in enumerate(entries):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            if k == 0:
                kill_point(f"remove:partly:{what}")
        path.rmdir()
    else:
        path.unlink()
    fsync_dir(path.parent)
    kill_point(f"remove:done:{what}")


def _discard_staging(paths: StorePaths) -> None:
    """Remove an unfinished replacement; refuse a folder there that gapscope did not make."""
    staging = paths.staging
    if not os.path.lexists(staging):
        return
    if staging.is_dir() and (_read_manifest(staging) is not None or _is_empty(staging)):
        _remove_tree(staging, "staging")
        return
    raise StoreError(f"{staging}: is in the way of replacing {paths.given} and is not gapscope's")


def _own_names(folder: Path) -> set[str]:
    """Names in a store folder that belong to the store (everything else is the user's)."""
    names = {MANIFEST, STAMPS, _PARTS}
    manifest = _read_manifest(folder) or {}
    listed = manifest.get("modalities") if manifest.get("complete") else None
    if not isinstance(listed, dict):  # unfinished: any modality's files may be there
        listed = {m: {} for m in MODALITIES}
        parts = folder / _PARTS
        if parts.is_dir():
            listed |= {p.name: {} for p in parts.iterdir() if p.is_dir()}
    for modality, info in listed.items():
        names |= {f"{modality}.npy", f"{modality}.items.jsonl", f"{modality}.items.npz"}
        if isinstance(info, dict):
            names |= {str(info[k]) for k in ("file", "items") if k in info}
    return names


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:  # a filesystem without hard links
        shutil.copy2(src, dst, follow_symlinks=False)


def _carry(src: Path, dst: Path) -> None:
    """Put ``src`` at ``dst`` too (hard links where possible), leaving ``src`` in place."""
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
    elif src.is_dir():
        shutil.copytree(src, dst, symlinks=True, copy_function=_link_or_copy)
    else:
        _link_or_copy(str(src), str(dst))


def _carry_user_files(paths: StorePaths) -> None:
    """Give the replacement the files of the old store's folder that are not the store's own.

    Entries of the replacement that are not its own are earlier, possibly partial, carries
    and are made again. Until the swap the originals stay where they are.
    """
    real, staging = paths.real, paths.staging
    new_own = _own_names(staging)
    for entry in staging.iterdir():
        if entry.name not in new_own:
            _remove_tree(entry, "carried")
    old_own = _own_names(real)
    user = sorted(
        p for p in real.iterdir() if p.name not in old_own and not is_gapscope_temp(p.name)
    )
    clash = next((p for p in user if p.name in new_own), None)
    if clash is not None:
        raise StoreError(
            f"{clash}: is not part of the store being replaced, but the new store has a file of "
            "that name; move it away and run the command again"
        )
    for entry in user:
        _carry(entry, staging / entry.name)
        kill_point(f"swap:carried:{entry.name}")


def _swap_in(paths: StorePaths) -> None:
    """Replace the store at ``paths.real`` with the complete one at ``paths.staging``.

    Two renames: the old store aside, the new one in; then the old one is removed. A kill
    between the renames is finished by :func:`recover`.
    """
    if os.path.lexists(paths.real):
        _carry_user_files(paths)
        shutil.copymode(paths.real, paths.staging)
        os.rename(paths.real, paths.old)
        kill_point("swap:moved-old")
    os.rename(paths.staging, paths.real)
    fsync_dir(paths.real.parent)
    kill_point("swap:moved-new")
    _remove_tree(paths.old, "old")


def _lock_of(path: str | os.PathLike[str], lock: StoreLock) -> StoreLock:
    """``lock``, once checked to be the held lock of the store at ``path``."""
    if not lock.held or lock.paths.real != Path(path).resolve():
        raise StoreError(f"{path}: the lock given is not a held lock of this store")
    return lock


class _StoreReplaced(StoreError):
    """The folder was swapped for another store while one object read it."""


def _folder_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _manifest_stamp(folder: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(folder / MANIFEST)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def _new_store_folder(paths: StorePaths, overwrite: bool) -> Path:
    """Where a new store for ``paths.given`` is made: in place when there is nothing there,
    else (``overwrite``, over a store) beside it, to be swapped in once complete."""
    real = paths.real
    if os.path.lexists(real) and not real.is_dir():
        raise StoreError(f"{paths.given}: exists and is not a folder")
    if not real.exists() or _is_empty(real):
        _discard_staging(paths)  # the replacement of a store that is no longer there
        return real
    if not overwrite:
        raise StoreError(
            f"{paths.given}: folder is not empty (--overwrite, or overwrite=True, replaces a store)"
        )
    if _read_manifest(real) is None:
        raise StoreError(f"{paths.given}: not an embedding store; refusing to overwrite it")
    check_replaceable(paths)
    _discard_staging(paths)
    return paths.staging


def check_replaceable(paths: StorePaths) -> None:
    """Refuse, before any work, to replace a store whose folder this process may not empty:
    the swap would put the new store in and then fail to remove the old one's files
    (a folder made read-only, ``chmod a-w``, is a store its owner wants kept as it is).

    Raises:
        StoreError: the folder lacks write or search permission for this process.
    """
    refused = (
        f"{paths.given}: the store folder is not writable (replacing it needs write and "
        "search permission on it: chmod u+wx, as its owner)"
    )
    if not os.access(paths.real, os.W_OK | os.X_OK):
        raise StoreError(refused)
    # os.access answers from the mode bits as this machine sees them; a network mount can say
    # otherwise (root squashed to nobody, a read-only export), so a file made and removed
    # there asks the file system itself.
    try:
        fd, trial = tempfile.mkstemp(prefix=".gapscope-trial-", dir=paths.real)
        os.close(fd)
        os.unlink(trial)
    except OSError as exc:
        raise StoreError(f"{refused}: {exc.strerror or exc}") from None


def _swap_note(path: Path) -> str:
    try:
        old = StorePaths.of(path).old
    except StoreError:
        return ""
    if not os.path.lexists(old):
        return ""
    return (
        " (a replacement was interrupted while it was swapped in; run the same command again "
        "to finish it)"
    )


# --------------------------------------------------------------------------- the store


class EmbeddingStore:
    """An embedding store folder (format version 2; version 1 is read too).

    Create one with :meth:`create` (then :meth:`append` parts and :meth:`finalize`) or with
    :meth:`write` when all arrays are in memory; read one with :meth:`open`. A store being
    written holds its :class:`StoreLock` until :meth:`finalize` or :meth:`close`.

    >>> import tempfile, numpy as np
    >>> folder = Path(tempfile.mkdtemp()) / "demo"
    >>> emb = {"image": np.eye(2, 4, dtype=np.float32), "text": np.eye(2, 4, 1, dtype=np.float32)}
    >>> items = {m: [{"id": f"{m}{i}", "source": "", "group": i} for i in range(2)] for m in emb}
    >>> store = EmbeddingStore.write(folder, emb, items)
    >>> store = EmbeddingStore.open(folder)
    >>> store.modalities, store.embeddings("text").shape, store.groups("text").tolist()
    (['image', 'text'], (2, 4), [0, 1])
    """

    def __init__(self, path: Path, manifest: dict[str, Any], *, mmap: bool = True) -> None:
        self.path = Path(path)
        #: Where the store is published: ``path`` itself, except while an overwrite builds
        #: the replacement beside it (then ``path`` is the staging folder).
        self.target = self.path
        self.manifest = manifest
        self._mmap = mmap
        self._items: dict[str, list[dict[str, Any]]] = {}
        self._columns: dict[str, ItemColumns] = {}
        self._codes: dict[str, dict[str, np.ndarray | None]] | None = None
        self._lock: StoreLock | None = None
        self._owns_lock = False
        # Which folder this object reads (see open).
        self._folder, self._stamp = _folder_id(self.path), _manifest_stamp(self.path)

    # ---------------------------------------------------------------- creating

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        encoder: Mapping[str, Any] | None = None,
        dataset: Mapping[str, Any] | None = None,
        overwrite: bool = False,
        lock: StoreLock | None = None,
        **extra: Any,
    ) -> EmbeddingStore:
        """Start a new, empty, incomplete store at ``path``, locked for writing.

        ``path`` must not exist or be an empty folder, unless ``overwrite`` is true and it
        holds a store: then the new store is built beside it (``.<name>.gapscope-new``) and
        :meth:`finalize` swaps it in once complete, keeping the folder's other files; until
        then the old store stays readable. A folder that is not a store is never replaced.
        ``lock`` is the caller's lock on ``path`` (else one is taken and held until
        :meth:`finalize` or :meth:`close`). ``extra`` keys are added to the manifest as they
        are.
        """
        held = _lock_of(path, lock) if lock is not None else StoreLock.acquire(path)
        try:
            folder = _new_store_folder(held.paths, overwrite)
            folder.mkdir(parents=True, exist_ok=True)
            kill_point("store:folder-made")
            manifest: dict[str, Any] = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "gapscope_version": __version__,
                "complete": False,
                "encoder": dict(encoder) if encoder is not None else None,
                "dataset": dict(dataset) if dataset is not None else None,
                "modalities": {},
                **extra,
            }
            atomic_write_json(folder / MANIFEST, manifest)
        except BaseException:
            if lock is None:
                held.release()
            raise
        store = cls(folder if folder != held.paths.real else Path(path), manifest)
        store._attach(held, Path(path), owns=lock is None)
        return store

    @classmethod
    def reopen(
        cls, path: str | os.PathLike[str], *, lock: StoreLock, staged: bool = False
    ) -> EmbeddingStore | None:
        """The store at ``path`` (``staged``: the replacement an overwrite is building beside
        it), complete or not, for the holder of ``lock`` to resume, finalise or swap in.

        ``None`` when there is none: no folder, an empty one, or one without a manifest.
        """
        folder = _lock_of(path, lock).paths.staging if staged else Path(path)
        if not folder.is_dir() or not (folder / MANIFEST).is_file():
            return None
        store = cls.open(folder, allow_incomplete=True)
        store._attach(lock, Path(path), owns=False)
        return store

    def _attach(self, lock: StoreLock, target: Path, *, owns: bool) -> None:
        self._lock, self._owns_lock, self.target = lock, owns, target

    @property
    def staged(self) -> bool:
        """Whether this is a replacement being built beside the store it will replace."""
        return self._lock is not None and self.path == self._lock.paths.staging

    def _ensure_writable(self) -> None:
        """Take the store's lock if this object does not hold it (a store opened to read)."""
        if self._lock is not None and self._lock.held:
            return
        self._attach(StoreLock.acquire(self.target), self.target, owns=True)
        fresh = _read_manifest(self.path)
        if fresh is None:
            self.close()
            raise StoreError(f"{self.path}: not an embedding store any more")
        self.manifest = fresh

    def close(self) -> None:
        """Release the lock this store took for writing (a no-op for a reader)."""
        if self._lock is not None and self._owns_lock:
            self._lock.release()
        self._owns_lock = False

    def discard(self) -> None:
        """Give up a replacement being built (``staged``); the store it would replace stays."""
        if self.staged:
            assert self._lock is not None
            _discard_staging(self._lock.paths)
        self.close()

    def abandon(self, restore: Path | None = None) -> None:
        """Leave nothing of a store being written: a replacement is dropped (:meth:`discard`:
        the old store stays), a new, unfinished store removed, and ``restore`` made again
        (the folder given, when it was there, empty, before)."""
        if self.staged:
            self.discard()
        elif not self.complete:
            self.close()
            shutil.rmtree(self.path, ignore_errors=True)
            if restore is not None:
                restore.mkdir(exist_ok=True)

    @classmethod
    def write(
        cls,
        path: str | os.PathLike[str],
        embeddings: Mapping[str, np.ndarray],
        items: Mapping[str, Sequence[Mapping[str, Any]]],
        *,
        encoder: Mapping[str, Any] | None = None,
        dataset: Mapping[str, Any] | None = None,
        normalized: Mapping[str, bool] | None = None,
        overwrite: bool = False,
        **extra: Any,
    ) -> EmbeddingStore:
        """Write a complete store from in-memory arrays and item lists, one modality each."""
        if set(embeddings) != set(items):
            raise StoreError("embeddings and items must name the same modalities")
        for modality in embeddings:
            _check_modality(modality)
            _check_rows(modality, embeddings[modality], items[modality])
        store = cls.create(path, encoder=encoder, dataset=dataset, overwrite=overwrite, **extra)
        try:
            for modality in sorted(embeddings, key=_modality_order):
                store.append(modality, embeddings[modality], items[modality])
            store.finalize(normalized=normalized)
        finally:
            store.close()
        return cls.open(path)

    def _part_modalities(self) -> list[str]:
        """Modalities with parts written, in the store's order (image, text, audio, then
        other names alphabetically)."""
        root = self.path / _PARTS
        names = [p.name for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
        return sorted((n for n in names if MODALITY_NAME.fullmatch(n)), key=_modality_order)

    def _part_dir(self, modality: str) -> Path:
        return self.path / _PARTS / modality

    def _parts(self, modality: str) -> list[Path]:
        folder = self._part_dir(modality)
        if not folder.is_dir():
            return []
        parts = sorted(p for p in folder.glob("*.npy") if not p.name.startswith("."))
        for expected, part in enumerate(parts):
            if part.stem != f"{expected:08d}":
                raise StoreError(f"{part}: parts are not contiguous (expected {expected:08d}.npy)")
        return parts

    def append(
        self, modality: str, embeddings: np.ndarray, items: Sequence[Mapping[str, Any]]
    ) -> None:
        """Append rows of one modality as a new part (atomic: the part appears whole or not at all).

        The part's items are written first and its ``.npy`` last, so a part counts as written
        exactly when its ``.npy`` exists.
        """
        self._ensure_writable()
        if self.complete:
            raise StoreError(
                f"{self.path}: store is already finalised; create a new one to add rows"
            )
        _check_modality(modality)
        _check_rows(modality, embeddings, items)
        known = self.manifest["modalities"].get(modality)
        parts = self._parts(modality)
        if parts:
            first = _load_npy(parts[0], mmap=True)
            if first.shape[1] != embeddings.shape[1] or first.dtype != embeddings.dtype:
                raise StoreError(
                    f"{modality}: new rows have dim {embeddings.shape[1]} and dtype "
                    f"{embeddings.dtype}, earlier parts have dim {first.shape[1]} and {first.dtype}"
                )
        elif known:
            raise StoreError(f"{modality}: already written in this store")
        index = len(parts)
        folder = self._part_dir(modality)
        with AtomicFile(folder / f"{index:08d}.items.jsonl", "w") as fh:
            _write_jsonl(fh, items)
        atomic_save_npy(folder / f"{index:08d}.npy", embeddings)

    def rows_written(self, modality: str) -> int:
        """Rows of ``modality`` on disk: the finalised file's, or the sum over written parts."""
        info = self.manifest["modalities"].get(modality)
        if self.complete and info:
            return int(info["rows"])
        return sum(_load_npy(p, mmap=True).shape[0] for p in self._parts(modality))

    def part_items(self, modality: str) -> list[dict[str, Any]]:
        """Items of all parts written so far (for resuming an interrupted extract)."""
        items: list[dict[str, Any]] = []
        for part in self._parts(modality):
            items.extend(_read_jsonl(part.with_name(f"{part.stem}.items.jsonl")))
        return items

    def finalize(self, *, normalized: Mapping[str, bool] | None = None, **extra: Any) -> None:
        """Concatenate the parts into ``<modality>.npy`` and ``.items.npz``; mark complete.

        ``normalized`` records, per modality, whether the encoder's outputs were already
        L2-normalised (the report shows it as ``normalized_by_encoder``); ``extra`` keys go into
        the manifest. A store without a row is refused unless it is a shard (:attr:`is_shard`:
        its slice may hold no batch or only unreadable files; the merge, not the shard,
        needs rows). The manifest saying ``complete`` is written last, then ``parts/`` is
        removed; a replacement (``staged``) is then swapped in (:meth:`swap_in`), and a lock
        this store took is released.
        """
        self._ensure_writable()
        if self.complete:
            raise StoreError(f"{self.path}: store is already finalised")
        modalities = {}
        # The fingerprint of the embeddings (fingerprint_arrays) is hashed from the bytes as
        # they are written, and cached in the manifest with each file's size and mtime, so
        # that reading the store never needs to hash it again.
        digest = hashlib.sha256()
        codes: tuple[dict[Any, int], dict[Any, int]] = ({}, {})  # groups, labels: store-wide
        for modality in self._part_modalities():
            parts = self._parts(modality)
            if parts:
                modalities[modality] = self._concatenate(modality, parts, digest, codes)
                modalities[modality]["normalized"] = bool((normalized or {}).get(modality, False))
        if not modalities and not self.is_shard:
            raise StoreError(f"{self.path}: nothing to finalise, no rows were written")
        dims = {info["dim"] for info in modalities.values()}
        if len(dims) > 1:
            raise StoreError(f"{self.path}: modalities have different dims {sorted(dims)}")
        self.manifest.update(extra)
        self.manifest["format_version"] = FORMAT_VERSION  # a resumed format-1 extract too
        self.manifest["modalities"] = modalities
        self.manifest["fingerprint"] = digest.hexdigest()
        stamps = {e["file"]: _file_stamp(self.path / e["file"]) for e in modalities.values()}
        atomic_write_json(self.path / STAMPS, stamps)
        self.manifest["complete"] = True
        atomic_write_json(self.path / MANIFEST, self.manifest)
        _remove_tree(self.path / _PARTS, _PARTS)
        self.swap_in()

    def _concatenate(
        self,
        modality: str,
        parts: list[Path],
        digest: Any,
        codes: tuple[dict[Any, int], dict[Any, int]],
    ) -> dict[str, Any]:
        """Write ``<modality>.npy`` and ``.items.npz`` from the parts, feeding the rows'
        bytes to ``digest`` as :func:`fingerprint_arrays` does; their manifest entry.

        ``codes`` (groups, labels) carries the code assignment from modality to modality.
        The items' columns are built in memory (about the size of their JSON lines, plus
        one entry a distinct group) and written in one atomic write."""
        arrays = [_load_npy(p, mmap=True) for p in parts]
        rows = sum(a.shape[0] for a in arrays)
        dim, dtype = arrays[0].shape[1], arrays[0].dtype
        npy = self.path / f"{modality}.npy"
        with AtomicFile(npy, "wb") as fh:
            header = {
                "descr": np.lib.format.dtype_to_descr(dtype),
                "fortran_order": False,
                "shape": (rows, dim),
            }
            np.lib.format.write_array_header_1_0(fh, header)
            digest.update(_fingerprint_header(modality, (rows, dim), dtype))
            for a in arrays:
                data = np.ascontiguousarray(a).tobytes()
                digest.update(data)
                fh.write(data)
        columns = item_columns.ColumnsBuilder(*codes)
        for p in parts:
            for item in _read_jsonl(p.with_name(f"{p.stem}.items.jsonl")):
                columns.add(item)
        if len(columns) != rows:
            raise StoreError(f"{self.path}: {modality} has {rows} rows but {len(columns)} items")
        items_path = self.path / f"{modality}.items.npz"
        item_columns.write_npz(items_path, columns.members())
        return {
            "file": npy.name,
            "items": items_path.name,
            "rows": rows,
            "dim": int(dim),
            "dtype": dtype.name,
        }

    def swap_in(self) -> None:
        """Put a complete replacement (``staged``) in place of the store it replaces, keeping
        the files of that folder that are not the store's own; release a lock this store took.

        Nothing to swap for a store written in place.
        """
        if self.staged:
            assert self._lock is not None
            if not self.complete:
                raise StoreError(f"{self.path}: an unfinished store cannot replace {self.target}")
            _swap_in(self._lock.paths)
            self.path = self.target
            self._folder, self._stamp = _folder_id(self.path), _manifest_stamp(self.path)
        self.close()

    def update_manifest(self, **fields: Any) -> None:
        """Merge ``fields`` into the manifest and rewrite it atomically."""
        self._ensure_writable()
        self.manifest.update(fields)
        atomic_write_json(self.path / MANIFEST, self.manifest)

    # ---------------------------------------------------------------- reading

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, mmap: bool = True, allow_incomplete: bool = False
    ) -> EmbeddingStore:
        """Open and validate a store; arrays are memory-mapped read-only unless ``mmap=False``.

        Needs no lock. An incomplete store is refused (unless ``allow_incomplete``) with a
        message that says whether a writer is at work on it. Should an overwrite swap a new
        store in while this one is read, reading it again starts over; a store object that
        loads a file after such a swap raises :class:`StoreError` rather than mix two stores.

        ``path`` may be an fsspec URL (``file://``, ``memory://``, ``s3://``, ``gs://``,
        ``hf://``; the ``remote`` extra): a ``file://`` store is opened as a local folder, any
        other is read-only and its files are read into memory
        (:class:`gapscope.data.remote.RemoteStore`).
        """
        from gapscope.data import remote

        if remote.is_url(path):
            local = remote.local_path(str(path))
            if local is None:
                return remote.RemoteStore.open_url(str(path), allow_incomplete=allow_incomplete)
            path = local
        for attempt in range(_OPEN_ATTEMPTS):
            try:
                return cls._open(Path(path), mmap=mmap, allow_incomplete=allow_incomplete)
            except _StoreReplaced:
                continue
            except StoreError:
                # A store being replaced is missing, or half old and half new, for the instant
                # between two renames: while its writer holds the lock, open it again.
                if attempt + 1 == _OPEN_ATTEMPTS or store_writer(path) is None:
                    raise
                time.sleep(_REOPEN_SECONDS)
        raise StoreError(f"{path}: replaced again and again while it was read")

    @classmethod
    def _open(cls, path: Path, *, mmap: bool, allow_incomplete: bool) -> EmbeddingStore:
        if not path.exists():
            raise StoreError(f"{path}: no such store{_swap_note(path)}")
        if not path.is_dir():
            raise StoreError(f"{path}: not a store folder")
        # Taken before the manifest is read: a swap after that is then seen.
        folder, stamp = _folder_id(path), _manifest_stamp(path)
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise StoreError(f"{path}: not an embedding store (no {MANIFEST})")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StoreError(f"{manifest_path}: not valid JSON ({exc})") from None
        except OSError as exc:  # moved away since it was seen: a swap (open() retries)
            if _folder_id(path) != folder:
                raise _StoreReplaced(
                    f"{path}: the store was replaced while it was opened"
                ) from None
            raise StoreError(f"{manifest_path}: cannot be read ({exc.strerror or exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise StoreError(f"{manifest_path}: not a gapscope store manifest")
        check_format_version(path, manifest)
        check_manifest(path, manifest)
        store = cls(path, manifest, mmap=mmap)
        store._folder, store._stamp = folder, stamp
        return store._checked(allow_incomplete)

    def _checked(self, allow_incomplete: bool) -> EmbeddingStore:
        """This store, validated; an incomplete one refused unless ``allow_incomplete``."""
        path, store, manifest = self.path, self, self.manifest
        if not manifest.get("complete"):
            if allow_incomplete:
                return store
            writer = store_writer(path)
            if writer is not None:
                raise StoreError(
                    f"{path}: store is incomplete: another gapscope process is writing it "
                    f"({writer}); wait for it to finish"
                )
            raise StoreError(
                f"{path}: store is incomplete (an extract was interrupted); "
                "run the same extract again to resume it"
            )
        with store._reading():  # files of a store swapped in meanwhile do not fit its manifest
            store.validate()
        return store

    def _check_not_replaced(self) -> None:
        """Raise when the folder at ``path`` is no longer the one this object read first."""
        if self._was_replaced():
            raise _StoreReplaced(
                f"{self.path}: the store was replaced (an overwrite) while it was read; open "
                "it again"
            )

    def _was_replaced(self) -> bool:
        folder = _folder_id(self.path)
        if folder == self._folder:
            return False
        if folder is not None and _manifest_stamp(self.path) == self._stamp:
            # The same manifest file: a filesystem whose inode numbers move, not a swap (a
            # swapped-in store's manifest was written at another time).
            self._folder = folder
            return False
        return True

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """Around a read of the store's files. A read that fails because the folder was
        swapped underneath it (an overwrite: the files of two stores, or none) is a
        replacement, which :meth:`open` retries and a later read reports as such, not a
        damaged store; a read that fails otherwise is a damaged store, in one line."""
        try:
            yield
        except _StoreReplaced:
            raise
        except (StoreError, OSError, ValueError) as exc:
            self._check_not_replaced()  # the swap, if there was one (a URL store has none)
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"{self.path}: cannot read the store ({exc})") from None

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    @property
    def format_version(self) -> int:
        """1 (items as JSON lines) or 2 (items as columns)."""
        return int(self.manifest["format_version"])

    @property
    def is_shard(self) -> bool:
        """Whether this store is one shard of an extract (``extract --shard i/n``, or a
        ``torchrun`` rank): the only kind of store that may hold no rows."""
        record = self.manifest.get("extract")
        return isinstance(record, dict) and bool(record.get("shard"))

    @property
    def modalities(self) -> list[str]:
        """Modalities present, in the order image, text, audio, then others alphabetically."""
        return sorted(self.manifest.get("modalities", {}), key=_modality_order)

    @property
    def encoder(self) -> dict[str, Any] | None:
        return self.manifest.get("encoder")

    @property
    def dataset(self) -> dict[str, Any] | None:
        return self.manifest.get("dataset")

    def info(self, modality: str) -> dict[str, Any]:
        """The manifest's entry for one modality (file, items, rows, dim, dtype, normalized)."""
        try:
            return self.manifest["modalities"][modality]
        except KeyError:
            raise StoreError(
                f"{self.path}: no {modality!r} modality (has {', '.join(self.modalities)})"
            ) from None

    def embeddings(self, modality: str) -> np.ndarray:
        """Raw embeddings of one modality, ``(rows, dim)``, memory-mapped read-only by default."""
        info = self.info(modality)
        with self._reading():
            array = _load_npy(self.path / info["file"], mmap=self._mmap)
        self._check_not_replaced()
        return array

    def items(self, modality: str) -> list[dict[str, Any]]:
        """One dict a row: ``id``, ``source``, ``group`` and optionally ``label``.

        Every row is decoded and kept (close to 1 GiB a million rows): for large format-2
        stores read :meth:`item_columns` instead, which decodes a row when it is asked for.
        """
        if modality not in self._items:
            if self.format_version >= 2:
                items = list(self.item_columns(modality))
            else:
                info = self.info(modality)
                with self._reading():
                    items = self._read_item_lines(info.get("items", f"{modality}.items.jsonl"))
                self._check_not_replaced()
            self._items[modality] = items
        return self._items[modality]

    def _read_item_lines(self, name: str) -> list[dict[str, Any]]:
        """The items of a format-1 store's JSON-lines file ``name``."""
        path = self.path / name
        if not path.is_file():
            raise StoreError(f"{path}: file is missing")
        return _read_jsonl(path)

    def item_columns(self, modality: str) -> ItemColumns:
        """The items of one modality as memory-mapped columns, decoded a row at a time
        (:class:`~gapscope.data.item_columns.ItemColumns`); format 2 only.

        Raises:
            StoreError: a format-1 store (``gapscope upgrade STORE`` converts it), or a
                columns file that does not match the manifest.
        """
        if modality not in self._columns:
            info = self.info(modality)
            if self.format_version < 2:
                raise StoreError(
                    f"{self.path}: format {self.format_version} keeps its items as JSON lines, "
                    "not columns; run gapscope upgrade on it, or read items()"
                )
            self._columns[modality] = self._read_columns(
                info.get("items", f"{modality}.items.npz"), int(info["rows"])
            )
        return self._columns[modality]

    def _read_columns(self, name: str, rows: int) -> ItemColumns:
        """The checked item columns of the file ``name`` (memory-mapped)."""
        path = self.path / name
        with self._reading():
            if not path.is_file():
                raise StoreError(f"{path}: file is missing")
            columns = item_columns.read_columns(path, rows)
        self._check_not_replaced()
        return columns

    def _encode(self) -> dict[str, dict[str, np.ndarray | None]]:
        # Codes are shared across modalities, so equal groups (or labels) of two modalities get
        # equal integers; assigned in order of first appearance for determinism.
        if self._codes is None and self.format_version >= 2:
            self._codes = {
                m: {
                    "groups": self.item_columns(m).group_codes,
                    "labels": _labelled(self.item_columns(m).label_codes),
                }
                for m in self.modalities
            }
        if self._codes is None:
            group_codes: dict[Any, int] = {}
            label_codes: dict[Any, int] = {}
            codes: dict[str, dict[str, np.ndarray | None]] = {}
            for modality in self.modalities:
                items = self.items(modality)
                groups = np.fromiter(
                    (group_codes.setdefault(_key(it["group"]), len(group_codes)) for it in items),
                    dtype=np.int64,
                    count=len(items),
                )
                with_label = sum(1 for it in items if it.get("label") is not None)
                if with_label == 0:
                    labels = None
                elif with_label < len(items):
                    raise StoreError(
                        f"{self.path}: {modality} has labels on {with_label} of {len(items)} "
                        "rows; give a label to every row or to none"
                    )
                else:
                    labels = np.fromiter(
                        (
                            label_codes.setdefault(_key(it["label"]), len(label_codes))
                            for it in items
                        ),
                        dtype=np.int64,
                        count=len(items),
                    )
                codes[modality] = {"groups": groups, "labels": labels}
            self._codes = codes
        return self._codes

    def groups(self, modality: str) -> np.ndarray:
        """Integer group codes, ``(rows,)`` int64; equal codes across modalities are positives."""
        self.info(modality)
        groups = self._encode()[modality]["groups"]
        assert groups is not None
        return groups

    def labels(self, modality: str) -> np.ndarray | None:
        """Integer label codes ``(rows,)`` int64, or ``None`` when the modality has no labels."""
        self.info(modality)
        return self._encode()[modality]["labels"]

    def fingerprint(self, *, verify: bool = False) -> str:
        """sha256 of the embeddings (see :func:`fingerprint_arrays`).

        A store written by this version keeps it in its manifest (``fingerprint``, hashed
        from the bytes as they were written) and each ``.npy`` file's size and modification
        time in :data:`STAMPS`; while those match, the manifest's value is returned without
        reading the embeddings. A copied store (new mtimes), an older store or
        ``verify=True`` hashes every byte.

        Raises:
            StoreError: with ``verify``, bytes that no longer hash to the manifest's value
                (the files changed after the store was written).
        """
        cached = self.manifest.get("fingerprint")
        if cached is not None and not verify and self._stamps_hold():
            return str(cached)
        value = fingerprint_arrays({m: self.embeddings(m) for m in self.modalities})
        if verify and cached is not None and value != cached:
            raise StoreError(
                f"{self.path}: the embeddings no longer match the fingerprint in the manifest "
                f"(sha256 {value[:12]}..., manifest {str(cached)[:12]}...): the files changed "
                "after the store was written"
            )
        return value

    def _stamps_hold(self) -> bool:
        """Whether every ``.npy`` file keeps the size and mtime recorded in :data:`STAMPS`
        when the store was finalised (a missing or unreadable record: no)."""
        try:
            stamps = json.loads((self.path / STAMPS).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        files = sorted({self.info(m)["file"] for m in self.modalities})
        if not isinstance(stamps, dict) or sorted(stamps) != files:
            return False
        try:
            return all(_file_stamp(self.path / name) == stamps[name] for name in files)
        except OSError:
            return False

    def validate(self) -> None:
        """Check every file against the manifest; raise :class:`StoreError` on the first problem."""
        if not self.modalities and not self.is_shard:
            # A shard's slice may have made no row (as finalize allows); a store may not.
            raise StoreError(f"{self.path}: store has no modalities")
        dims = set()
        for modality in self.modalities:
            _check_modality(modality)
            info = self.info(modality)
            for key in ("file", "rows", "dim", "dtype"):
                if key not in info:
                    raise StoreError(f"{self.path}: manifest entry for {modality} lacks {key!r}")
            arr = self.embeddings(modality)
            where = self.path / info["file"]
            if arr.ndim != 2:
                raise StoreError(f"{where}: expected a 2-D array, got shape {arr.shape}")
            if arr.dtype.name != info["dtype"] or arr.dtype.name not in _DTYPES:
                raise StoreError(
                    f"{where}: dtype {arr.dtype.name}, manifest says {info['dtype']} "
                    f"(stores hold {' or '.join(_DTYPES)})"
                )
            if arr.shape != (info["rows"], info["dim"]):
                raise StoreError(
                    f"{where}: shape {arr.shape} disagrees with the manifest "
                    f"({info['rows']} rows, dim {info['dim']})"
                )
            if arr.shape[0] == 0:
                raise StoreError(f"{where}: has no rows")
            dims.add(arr.shape[1])
            if self.format_version >= 2:
                self.item_columns(modality)  # read_columns checks them against the rows
            else:
                self._check_item_dicts(modality, arr.shape[0])
        if len(dims) > 1:
            raise StoreError(f"{self.path}: modalities have different dims {sorted(dims)}")
        self._encode()

    def _check_item_dicts(self, modality: str, rows: int) -> None:
        """The items of a format-1 store: one a row, each with an ``id`` and a plain
        ``group`` (and ``label``)."""
        n_items = len(self.items(modality))
        if n_items != rows:
            raise StoreError(
                f"{self.path}: {modality} has {rows} embedding rows but {n_items} items"
            )
        for i, item in enumerate(self.items(modality)):
            if not isinstance(item, dict) or "group" not in item or "id" not in item:
                raise StoreError(f"{self.path}: {modality} item {i} lacks an 'id' or 'group'")
            for key in ("group", "label"):
                if not _plain_value(item.get(key)):
                    raise StoreError(
                        f"{self.path}: {modality} item {i} has {_json_type(item[key])} "
                        f"inside its {key}; a {key} is a string, a number or a list of them"
                    )

    def __repr__(self) -> str:
        rows = ", ".join(f"{m}={self.info(m)['rows']}" for m in self.modalities)
        return f"EmbeddingStore({str(self.path)!r}, {rows})"


# JSON round-trips 3 and "3" differently; keep them distinct but hashable (lists -> tuples).
_key = item_columns.value_key


def _labelled(codes: np.ndarray | None) -> np.ndarray | None:
    """Label codes of a format-2 modality; ``None`` when no row has a label (all ``-1``:
    columns hold that only with no labels at all, since a partial labelling is refused)."""
    if codes is None or codes.shape[0] == 0 or codes[0] < 0:
        return None
    return codes
