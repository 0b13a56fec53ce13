"""Stores and arrays at fsspec URLs (``s3://``, ``gs://``, ``hf://``, ``memory://``, ``file://``),
read-only.

A ``file://`` URL is a local path: it is opened as one, memory-mapped like any local store or
``.npy`` file, and needs no extra. Any other protocol goes through fsspec (the ``remote``
extra; the protocol's own package, such as ``s3fs``, ``gcsfs`` or ``huggingface_hub``, is the
user's to install): each file is read whole into memory when it is first needed, since a
remote file cannot be memory-mapped. Nothing is ever written to a URL; extracting, merging,
importing or upgrading a store there is refused.

A remote store's fingerprint is always hashed from the embeddings as read (its fingerprint
stamps, which record local modification times, cannot be checked there), so the report names
the bytes it analysed; with ``verify`` a value that differs from the manifest's is a
:class:`~gapscope.errors.StoreError`, as for a local store.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import re
from pathlib import Path
from typing import Any

import numpy as np

from gapscope.data import item_columns
from gapscope.data.item_columns import ItemColumns
from gapscope.data.store import (
    FORMAT,
    MANIFEST,
    EmbeddingStore,
    check_format_version,
    check_manifest,
)
from gapscope.errors import GapscopeError, MissingDependencyError, StoreError
from gapscope.extras import require

__all__ = ["RemoteStore", "UrlPath", "filesystem", "is_url", "local_path", "read_bytes"]

_URL = re.compile(r"^(?P<protocol>[A-Za-z][A-Za-z0-9+.\-]*)://")
_LOCAL = ("file", "local")
#: Protocols whose fsspec implementation lives in a package of its own, and that package.
_PACKAGES = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "hf": "huggingface_hub",
    "az": "adlfs",
    "abfs": "adlfs",
    "abfss": "adlfs",
    "adl": "adlfs",
    "http": "aiohttp",
    "https": "aiohttp",
    "sftp": "paramiko",
    "ssh": "paramiko",
}


def is_url(path: Any) -> bool:
    """Whether ``path`` is a URL with a protocol (``s3://...``), not a local path.

    >>> is_url("s3://bucket/store"), is_url("store"), is_url(Path("s3://bucket/store"))
    (True, False, False)
    """
    return isinstance(path, str) and _URL.match(path) is not None


def local_path(url: str) -> Path | None:
    """The local path of a ``file://`` (or ``local://``) URL; ``None`` for other protocols.

    >>> local_path("file:///data/store"), local_path("s3://bucket/store")
    (PosixPath('/data/store'), None)
    """
    match = _URL.match(url)
    if match is None or match.group("protocol").lower() not in _LOCAL:
        return None
    return Path(url[match.end() :] or ".")


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path in it.

    Raises:
        MissingDependencyError: fsspec (the ``remote`` extra) or the protocol's package
            (``s3fs`` for ``s3://``, ...) is not installed; the line names what to install.
        GapscopeError: a protocol fsspec does not know.
    """
    require("fsspec", "reading stores and arrays at URLs", extra="remote")
    import fsspec.core

    protocol = url.split("://", 1)[0].lower()
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError:
        package = _PACKAGES.get(protocol, f"the fsspec implementation of {protocol}://")
        how = f"pip install {package}" if protocol in _PACKAGES else "see fsspec's documentation"
        raise MissingDependencyError(
            f"{url}: reading {protocol}:// URLs needs {package}, which is not installed: {how}"
        ) from None
    except ValueError as exc:
        if "not known" in str(exc).lower():
            raise GapscopeError(f"{url}: fsspec knows no protocol {protocol!r}") from None
        raise GapscopeError(f"{url}: not a URL fsspec can open ({exc})") from None


def read_bytes(url: str, what: str = "") -> bytes:
    """The whole file at ``url``.

    Raises:
        GapscopeError: no such file, or the filesystem refused the read (one line).
    """
    fs, path = filesystem(url)
    label = f"{what}: " if what else ""
    try:
        return bytes(fs.cat_file(path))
    except (FileNotFoundError, IsADirectoryError):
        raise GapscopeError(f"{label}no such file {url}") from None
    except OSError as exc:
        raise GapscopeError(f"{label}cannot read {url} ({exc})") from None


class UrlPath:
    """Where a remote store's file lies: joined with ``/``, printed as its URL.

    Just enough of :class:`pathlib.Path` for the store's messages and checks (``/``,
    ``name``, ``parent``, ``resolve``); it is not a local path.

    >>> (UrlPath("memory://bucket/store/") / "image.npy").name
    'image.npy'
    >>> str((UrlPath("s3://b/store") / "../x.npy").resolve())
    's3://b/x.npy'
    """

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def __truediv__(self, name: str) -> UrlPath:
        return UrlPath(f"{self.url}/{name}")

    def __str__(self) -> str:
        return self.url

    def __fspath__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"UrlPath({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UrlPath) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def parent(self) -> UrlPath:
        return UrlPath(self.url.rsplit("/", 1)[0])

    def resolve(self) -> UrlPath:
        protocol, _, rest = self.url.partition("://")
        return UrlPath(f"{protocol}://{posixpath.normpath(rest)}")


class RemoteStore(EmbeddingStore):
    """A store at a URL, read-only: every file read whole into memory on first use.

    Opened through :meth:`EmbeddingStore.open` with a URL (not ``file://``, which opens the
    local folder). Its ``path`` is a :class:`UrlPath`.
    """

    _arrays: dict[str, np.ndarray]

    @classmethod
    def open_url(cls, url: str, *, allow_incomplete: bool = False) -> RemoteStore:
        """Open and validate the store at ``url`` (see :meth:`EmbeddingStore.open`).

        Raises:
            StoreError: no store there, or one that does not validate.
            MissingDependencyError: fsspec or the protocol's package is missing.
        """
        root = UrlPath(url)
        try:
            payload = read_bytes(str(root / MANIFEST))
        except GapscopeError as exc:
            if isinstance(exc, MissingDependencyError):
                raise
            raise StoreError(f"{root}: not an embedding store (no {MANIFEST})") from None
        try:
            manifest = json.loads(payload.decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StoreError(f"{root / MANIFEST}: not valid JSON ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise StoreError(f"{root / MANIFEST}: not a gapscope store manifest")
        check_format_version(root, manifest)  # type: ignore[arg-type]
        check_manifest(root, manifest)  # type: ignore[arg-type]
        store = cls(Path(), manifest, mmap=False)
        store.path = store.target = root  # type: ignore[assignment]
        store._arrays = {}
        checked = store._checked(allow_incomplete)
        assert isinstance(checked, RemoteStore)
        return checked

    def _read(self, name: str) -> bytes:
        url = str(self.path / name)
        try:
            return read_bytes(url)
        except MissingDependencyError:
            raise
        except GapscopeError:
            raise StoreError(f"{url}: file is missing or unreadable") from None

    def embeddings(self, modality: str) -> np.ndarray:
        """Raw embeddings of one modality, read into memory (once)."""
        if modality not in self._arrays:
            name = self.info(modality)["file"]
            payload = self._read(name)
            try:
                self._arrays[modality] = np.load(io.BytesIO(payload), allow_pickle=False)
            except (ValueError, OSError, EOFError) as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise StoreError(
                    f"{self.path / name}: truncated or not a valid .npy file ({reason})"
                ) from None
        return self._arrays[modality]

    def _read_item_lines(self, name: str) -> list[dict[str, Any]]:
        items = []
        where = self.path / name
        for lineno, line in enumerate(self._read(name).decode("utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise StoreError(f"{where}: line {lineno} is not valid JSON ({exc.msg})") from None
        return items

    def _read_columns(self, name: str, rows: int) -> ItemColumns:
        return item_columns.read_columns(self._read(name), rows, str(self.path / name))

    def _stamps_hold(self) -> bool:
        return False  # local modification times: never checkable at a URL

    def _check_not_replaced(self) -> None:
        return None  # every file is read once, whole

    def _ensure_writable(self) -> None:
        raise StoreError(
            f"{self.path}: stores at URLs are read-only; write the store to a local folder"
        )


def refuse_url_output(path: str | os.PathLike[str], option: str) -> None:
    """Refuse a URL where a store is to be written (``file://`` aside), in one line.

    Raises:
        GapscopeError: ``path`` is a URL of another protocol.
    """
    if is_url(path) and local_path(str(path)) is None:
        raise GapscopeError(
            f"{option} {path}: gapscope writes stores to local folders only (stores at URLs "
            "are read-only); write it locally and copy it"
        )
