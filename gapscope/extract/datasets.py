"""What to extract: an image or audio folder and an optional captions file, as ordered rows;
or webdataset tar shards (:mod:`gapscope.extract.webdataset_shards`) or a Hugging Face dataset
saved to disk (:mod:`gapscope.extract.hf_datasets`), whose media rows point into the shards or
the dataset's Arrow files (:class:`MediaRef`) and are read batch by batch.

- Media files are found recursively (hidden files and folders are ignored) and ordered by
  their relative path, so every run, resume and shard sees the same order. When every file
  sits in a sub-folder, the first sub-folder is the file's ``label`` (``cat/001.png`` -> ``cat``).
- Symbolic links are followed, each real file and folder once: a second path to a file
  already listed (a link to it, or a link to a folder already read) and a link back to a
  folder being read (a loop) are skipped and listed, never read twice or forever.
- Every media file is identified by the sha256 of its bytes, so the dataset fingerprint (and
  with it a resume or a merge) notices a file replaced by another of the same size.
- Each caption becomes a text row in captions-file order. It shares its file's ``group`` (the
  file's relative path) and ``label``. A caption whose file is not in the folder is skipped and
  reported, and so is a row without a file name or caption.

A store's items come from :meth:`Candidate.item`: ``id`` (the relative path, or
``<relative path>#<k>`` for the k-th caption of a file), ``source`` (relative path or caption
text), ``group`` and, when there are labels, ``label``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from abc import ABC, abstractmethod
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gapscope.data.store import printable_name
from gapscope.errors import GapscopeError
from gapscope.extract.audio import AUDIO_EXTENSIONS
from gapscope.extract.captions import read_captions

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class MediaRef(ABC):
    """Where one row's media lies inside a container: a member of a tar shard, a cell of a
    saved dataset. Small and picklable (DataLoader workers get it), it is read only when its
    batch is decoded, so a dataset is never held in memory beyond the batches in flight.

    :meth:`read` checks the bytes against the sha256 the scan recorded, so a container
    changed while an extract runs is never encoded under the old identity.
    """

    __slots__ = ()  # a row of millions: subclasses are slotted dataclasses

    name: str  # what a skip or an error shows, e.g. "00000.tar/000012.jpg"
    sha256: str  # of the media's bytes, recorded by the scan

    @abstractmethod
    def _bytes(self) -> bytes:
        """The media's bytes as stored in the container."""

    def read(self) -> bytes:
        """The media's bytes, checked against the scan's sha256 (``ValueError`` if changed)."""
        data = self._bytes()
        if hashlib.sha256(data).hexdigest() != self.sha256:
            raise ValueError(f"{self.name} changed since the extract started")
        return data

    def open(self) -> NamedBytes:
        """A file object of the bytes: the decoders (PIL, soundfile) read it like a file."""
        return NamedBytes(self.read(), self.name)

    def __str__(self) -> str:
        return self.name


class NamedBytes(io.BytesIO):
    """In-memory bytes whose ``repr`` is their name, not an address: decoders put the file
    object's ``repr`` in their error messages, which become skip reasons, and these must be
    the same on every run."""

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(data)
        self.shown_as = name

    def __repr__(self) -> str:
        return repr(self.shown_as)


@dataclass(frozen=True, slots=True)
class FileRef(MediaRef):
    """A media file of a folder, read whole when its batch is decoded and checked against
    the sha256 the scan took: a file changed while an extract runs is skipped and listed
    ("changed since the extract started"), not encoded under its old identity."""

    path: str  # absolute
    name: str  # as the store's items and skips show it: the path in the media folder
    sha256: str

    def _bytes(self) -> bytes:
        with open(self.path, "rb") as fh:
            return fh.read()


def open_media(load: str | MediaRef) -> Any:
    """What a preprocessor reads for a row: a path or a caption as they are, or the bytes of a
    :class:`MediaRef` as a file object."""
    return load.open() if isinstance(load, MediaRef) else load


@dataclass(frozen=True, slots=True)
class Candidate:
    """One row to extract (unless its file turns out to be unreadable)."""

    id: str
    source: str  # what the store records: the relative path, or the caption text
    group: str
    label: str | None
    # what the preprocessor reads: the absolute path, the caption text, or a MediaRef (a
    # member of a tar shard, a cell of a saved dataset)
    load: str | MediaRef
    # sha256 of a media file's bytes ("unreadable: <reason>" when it cannot be read; the
    # decoder then skips it); part of the dataset fingerprint. None for captions.
    content: str | None = None

    def item(self) -> dict[str, Any]:
        """The store item of this row."""
        item: dict[str, Any] = {"id": self.id, "source": self.source, "group": self.group}
        if self.label is not None:
            item["label"] = self.label
        return item


@dataclass
class Dataset:
    """The rows of each modality, the rows dropped while reading, and a fingerprint."""

    modalities: tuple[str, ...]
    candidates: dict[str, list[Candidate]]
    skipped: list[dict[str, Any]] = field(default_factory=list)
    description: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """sha256 of every row (ids, sources, groups, labels, the sha256 of each file's bytes)
        and the dropped rows: two scans with equal fingerprints extract to equal stores,
        wherever the folder lies."""
        return self.description["fingerprint"]


@dataclass(frozen=True)
class DatasetInput:
    """The one input an extract reads, with the options that belong to it: an image or audio
    folder (and a captions file with its columns), webdataset tar shards (a path, glob or
    brace pattern), or a Hugging Face dataset saved to disk (its columns and split). The
    arguments of :func:`scan_dataset` and of :func:`gapscope.extract.extract`."""

    images: str | os.PathLike[str] | None = None
    audio: str | os.PathLike[str] | None = None
    captions: str | os.PathLike[str] | None = None
    file_column: str | None = None
    caption_column: str | None = None
    webdataset: str | os.PathLike[str] | None = None
    hf_dataset: str | os.PathLike[str] | None = None
    image_column: str | None = None
    text_column: str | None = None
    audio_column: str | None = None
    split: str | None = None


def scan_dataset(source: DatasetInput | None = None, /, **options: Any) -> Dataset:
    """List the rows to extract from one input (a :class:`DatasetInput`, or its fields as
    keyword arguments): an image or audio folder (and a captions file), webdataset tar shards
    (``webdataset``: a path, glob or brace pattern; see
    :func:`~gapscope.extract.webdataset_shards.scan_webdataset`), or a Hugging Face dataset
    saved to disk (``hf_dataset`` with its columns and split; see
    :func:`~gapscope.extract.hf_datasets.scan_hf_dataset`).

    Raises:
        GapscopeError: no input, two inputs, options of another input, a folder that is
            missing or holds no media file, or an unreadable captions file, shard or dataset.
    """
    source = DatasetInput(**options) if source is None else source
    _check_one_input(source)
    images, audio, captions = source.images, source.audio, source.captions
    webdataset, hf_dataset = source.webdataset, source.hf_dataset
    if webdataset is not None:
        from gapscope.extract.webdataset_shards import scan_webdataset

        return scan_webdataset(os.fspath(webdataset))
    if hf_dataset is not None:
        from gapscope.extract.hf_datasets import scan_hf_dataset

        return scan_hf_dataset(
            hf_dataset,
            image_column=source.image_column,
            text_column=source.text_column,
            audio_column=source.audio_column,
            split=source.split,
        )
    modality = "image" if images is not None else "audio"
    root = Path(images if images is not None else audio)  # type: ignore[arg-type]
    extensions = IMAGE_EXTENSIONS if modality == "image" else AUDIO_EXTENSIONS
    option = f"--{'images' if modality == 'image' else 'audio'}"
    media, media_skipped = _media_candidates(root, extensions, option, modality)
    candidates = {modality: media}
    skipped: list[dict[str, Any]] = []
    description: dict[str, Any] = {
        "images": None,
        "audio": None,
        "captions": None,
        f"{'images' if modality == 'image' else 'audio'}": str(root.resolve()),
        "files": len(media),
        "labels": "first sub-folder" if media[0].label is not None else None,
    }
    if captions is not None:
        texts, skipped, columns = _caption_candidates(
            Path(captions), root, media, modality, source.file_column, source.caption_column
        )
        candidates["text"] = texts
        description.update(
            captions=str(Path(captions).resolve()),
            columns=columns,
            captions_read=len(texts) + len(skipped),
        )
    skipped = media_skipped + skipped
    modalities = tuple(candidates)
    description["fingerprint"] = rows_fingerprint(candidates, skipped)
    return Dataset(modalities, candidates, skipped, description)


def _check_one_input(source: DatasetInput) -> None:
    """One input, and no option that belongs to another input (it would be ignored)."""
    options = vars(source)
    inputs = [
        f"--{name.replace('_', '-')}"
        for name in ("images", "audio", "webdataset", "hf_dataset")
        if options[name] is not None
    ]
    if inputs == ["--images", "--audio"]:
        raise GapscopeError(
            "give --images or --audio, not both: one extract uses one encoder (run two)"
        )
    if len(inputs) > 1:
        raise GapscopeError(
            f"give one input, not {' and '.join(inputs)}: one extract reads one dataset"
        )
    if not inputs:
        raise GapscopeError(
            "nothing to extract: give --images DIR or --audio DIR (with --captions FILE), "
            "--webdataset SHARDS or --hf-dataset DIR"
        )
    folder = inputs[0] in ("--images", "--audio")
    misplaced = {
        "captions": (not folder, "a dataset carries its captions (.txt members, --text-column)"),
        "file_column": (not folder, "it names a column of a --captions file"),
        "caption_column": (not folder, "it names a column of a --captions file"),
        "image_column": (inputs[0] != "--hf-dataset", "it names a column of --hf-dataset"),
        "text_column": (inputs[0] != "--hf-dataset", "it names a column of --hf-dataset"),
        "audio_column": (inputs[0] != "--hf-dataset", "it names a column of --hf-dataset"),
        "split": (inputs[0] != "--hf-dataset", "it names a split of --hf-dataset"),
    }
    for name, (wrong, why) in misplaced.items():
        if wrong and options[name] is not None:
            raise GapscopeError(f"--{name.replace('_', '-')} does not apply to {inputs[0]} ({why})")


def _media_candidates(
    root: Path, extensions: tuple[str, ...], option: str, modality: str
) -> tuple[list[Candidate], list[dict[str, Any]]]:
    if not root.is_dir():
        raise GapscopeError(f"{option} {root}: folder not found")
    walk = _MediaWalk(root, extensions, modality)
    walk.run()
    if not walk.found:
        raise GapscopeError(
            f"{option} {root}: no {'/'.join(e.lstrip('.') for e in extensions)} files in it"
        )
    found = sorted(walk.found, key=lambda entry: entry[0])
    contents = content_digests([path for _, path in found])
    labelled = all("/" in rel for rel, _ in found)
    media = [
        Candidate(
            id=rel,
            source=rel,
            group=rel,
            label=rel.split("/", 1)[0] if labelled else None,
            load=_file_load(path, rel, content),
            content=content,
        )
        for (rel, path), content in zip(found, contents, strict=True)
    ]
    return media, walk.skipped


def _file_load(path: Path, rel: str, content: str) -> str | MediaRef:
    """What the decoder reads for a media file: the file checked against its scan digest,
    or (a file the scan could not read) its path, whose read then fails and is listed.
    realpath, not resolve(): a link in a loop stays as it is (on Python 3.11, resolve()
    raises)."""
    real = os.path.realpath(path)
    if content.startswith("unreadable: "):
        return real
    return FileRef(real, rel, content)


class _MediaWalk:
    """A walk of a media folder that follows symbolic links but reads every real file and
    folder once.

    The real tree is walked first and links after it, each level in sorted order: a file
    reached by its own path and through a link keeps its own path, and which path is kept is
    the same on every run. A second path to a file or folder already read is skipped and
    listed ("already read"), and so is a link to a folder that contains it ("a loop": the walk
    would never end).
    """

    def __init__(self, root: Path, extensions: tuple[str, ...], modality: str) -> None:
        self.root = root
        self.extensions = extensions
        self.modality = modality
        self.found: list[tuple[str, Path]] = []
        self.skipped: list[dict[str, Any]] = []
        self._seen: dict[tuple[int, int], str] = {}  # (device, inode) -> first relative path
        self._links: deque[Path] = deque()
        self._root_real = root.resolve()

    def run(self) -> None:
        """Walk the real tree, then every link found on the way (and those found in them)."""
        self._folder(self.root)
        while self._links:
            link = self._links.popleft()
            if _is_dir(link):
                self._folder(link)
            else:
                self._file(link)

    def _folder(self, path: Path) -> None:
        if self._already_read(path, "folder"):
            return
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError as exc:
            self._skip(path, f"folder not readable ({exc.strerror or exc})")
            return
        for entry in entries:
            child = Path(entry.path)
            if entry.name.startswith("."):
                continue
            link = entry.is_symlink()
            folder = _is_dir(child) if link else _entry_is_dir(entry)
            if not (folder or self._is_media(entry.name)):
                continue
            if not _is_utf8(entry.name):
                # Ids, sources and labels are UTF-8 text in the store and the report.
                self._skip(child, "its name is not valid UTF-8")
            elif link:
                self._links.append(child)
            elif folder:
                self._folder(child)
            else:
                self._file(child)

    def _file(self, path: Path) -> None:
        # A dangling link has no identity: it is kept, so the decoder reports it unreadable.
        if not self._already_read(path, "file"):
            self.found.append((self._rel(path), path))

    def _already_read(self, path: Path, kind: str) -> bool:
        """Record ``path``'s target; if it was read before, or is a folder that contains the
        whole media folder (the walk would read the disk around it), list ``path`` as
        skipped."""
        key = _identity(path)
        if key is None:
            return False
        first = self._seen.get(key)
        if first is not None:
            if kind == "folder" and path.parent.resolve().is_relative_to(path.resolve()):
                reason = f"symlink loop: links back to {first!r}, a folder that contains it"
            else:
                reason = f"the same {kind} as {first!r}, already read"
            self._skip(path, reason)
            return True
        if kind == "folder" and path != self.root and self._contains_root(path):
            self._skip(path, "symlink loop: links to a folder that contains the media folder")
            return True
        self._seen[key] = self._rel(path)
        return False

    def _contains_root(self, folder: Path) -> bool:
        return self._root_real.is_relative_to(folder.resolve())

    def _is_media(self, name: str) -> bool:
        return name.lower().endswith(self.extensions)

    def _rel(self, path: Path) -> str:
        rel = path.relative_to(self.root).as_posix()
        return "." if rel in ("", ".") else rel

    def _skip(self, path: Path, reason: str) -> None:
        source = printable_name(self._rel(path))
        self.skipped.append({"modality": self.modality, "source": source, "reason": reason})


def _is_utf8(name: str) -> bool:
    """Whether a listed file name was valid UTF-8 (Python keeps other bytes as surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of what ``path`` points to, or None when it cannot be reached."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _entry_is_dir(entry: os.DirEntry[str]) -> bool:
    """Whether a listed entry (not a link) is a folder, from the listing's own type field."""
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _is_dir(path: Path) -> bool:
    """Whether ``path`` leads to a folder (through links); False when it cannot be reached."""
    try:
        return path.is_dir()
    except OSError:
        return False


# Reading is I/O and hashlib releases the GIL on large buffers, so threads overlap both.
_HASH_THREADS = 8


def content_digests(paths: list[Path]) -> list[str]:
    """The sha256 (hex) of each file's bytes, in order; ``"unreadable: <reason>"`` for a file
    that cannot be read (the decoder reports it as a skipped file later)."""
    if len(paths) < 2:
        return [content_digest(p) for p in paths]
    with ThreadPoolExecutor(max_workers=min(_HASH_THREADS, len(paths))) as pool:
        return list(pool.map(content_digest, paths))


def content_digest(path: Path) -> str:
    """The sha256 (hex) of one file's bytes, or ``"unreadable: <reason>"``."""
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError as exc:
        return f"unreadable: {exc.strerror or type(exc).__name__}"


def _caption_candidates(
    path: Path,
    root: Path,
    media: list[Candidate],
    modality: str,
    file_column: str | None,
    caption_column: str | None,
) -> tuple[list[Candidate], list[dict[str, Any]], dict[str, str]]:
    rows, problems, columns = read_captions(
        path, file_column=file_column, caption_column=caption_column
    )
    by_group = {c.group: c for c in media}
    resolved_root = root.resolve()
    skipped: list[dict[str, Any]] = [
        {"modality": "text", "line": p.line, "file": p.file, "source": "", "reason": p.reason}
        for p in problems
    ]
    texts: list[Candidate] = []
    seen: dict[str, int] = {}
    for row in rows:
        rel = _relative(row.file, resolved_root)
        owner = by_group.get(rel) if rel is not None else None
        if owner is None:
            on_disk = rel is not None and (resolved_root / rel).is_file()
            reason = f"not a listed {modality} file of the folder" if on_disk else "file not found"
            skipped.append(
                {
                    "modality": "text",
                    "line": row.line,
                    "file": row.file,
                    "source": row.caption,
                    "reason": reason,
                }
            )
            continue
        k = seen.get(owner.group, 0)
        seen[owner.group] = k + 1
        texts.append(
            Candidate(
                id=f"{owner.group}#{k}",
                source=row.caption,
                group=owner.group,
                label=owner.label,
                load=row.caption,
            )
        )
    skipped.sort(key=lambda s: s["line"])
    if not texts:
        raise GapscopeError(
            f"--captions {path}: none of its {len(rows)} captions names a file of {root}"
            + (f" (first: {rows[0].file!r})" if rows else "")
        )
    return texts, skipped, columns


def _relative(file: str, root: Path) -> str | None:
    """The file's path relative to ``root`` in POSIX form, or ``None`` if it lies outside."""
    path = Path(file.replace("\\", "/"))
    if path.is_absolute():
        try:
            return Path(os.path.realpath(path)).relative_to(root).as_posix()
        except ValueError:
            return None
    rel = os.path.normpath(path.as_posix()).replace(os.sep, "/")
    return None if rel == ".." or rel.startswith("../") else rel


def rows_fingerprint(candidates: dict[str, list[Candidate]], skipped: list[dict[str, Any]]) -> str:
    """sha256 of every row (modality, id, source, group, label, content digest) in order, and
    of the rows dropped: what :attr:`Dataset.fingerprint` holds, whatever the input."""
    h = hashlib.sha256()
    for modality, rows in candidates.items():
        for c in rows:
            h.update(
                json.dumps(
                    [modality, c.id, c.source, c.group, c.label, c.content], ensure_ascii=False
                ).encode()
            )
            h.update(b"\n")
    h.update(json.dumps(skipped, sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()
