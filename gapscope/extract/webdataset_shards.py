"""webdataset tar shards as an extraction input, in img2dataset's layout, read in place.

A set of shards is named as webdataset and img2dataset name it: a path, a brace pattern
(``shards/{00000..00009}.tar``, expanded by webdataset's own ``expand_urls``, so ``::`` joins
several patterns and ``${WDS_...}`` variables work too), or a glob (``shards/*.tar``). Shards are
read in the order the pattern gives (a glob's matches sorted); only local files are read.

Each shard holds samples as webdataset groups them (``webdataset.tariterators.group_by_keys``,
consecutive members with the same key, the key being the member name up to the first dot of
its base name): ``000012.jpg`` (or ``.png``, ``.webp``, ...: an image; or ``.wav``, ``.flac``,
...: audio; the first such member of the shards decides which of the two they hold),
``000012.txt`` (its caption) and ``000012.json`` (img2dataset's metadata, not read). Each
sample gives one media row (``id`` = ``group`` = the key, ``source`` =
``<shard>/<member>``, the shard named relative to the shards' common folder) and, when the
shards hold captions, one text row (``id`` = ``<key>#0``, ``source`` = the caption, the same
group), so the rows look like those of a folder and a captions file.

Nothing is dropped in silence. A sample without an image (or audio) member, without a
readable caption while the shards hold captions, or whose key an earlier sample already had,
is skipped whole and listed (``{modality, source, reason}``, as unreadable files of a folder
are); so is a sample's second image or audio member (``.png`` beside ``.jpg``: the first is
read); an image that fails to decode is skipped at extraction, like a corrupt file.

Streaming: the scan reads every shard once, member by member, keeping only captions and the
sha256, offset and size of each media member; extraction then reads each media member by its
offset (:class:`TarMember`) when its batch is decoded. So shards must be plain, uncompressed
tar files (img2dataset's default): a compressed shard is refused, since reading one member of
it would mean decompressing the shard up to it. A shard that is not a readable tar file, or
that ends before its end-of-archive marker (a truncated download or an interrupted write), is
refused with one line naming it: the scan reads every shard before any encoding starts, so a
damaged shard stops the extract at once instead of after hours, and the listing never hides
a missing part of a dataset.

Identity: the dataset fingerprint holds every row (key, shard and member name, caption) and
the sha256 of every media member's bytes, so a resume or a merge notices any changed image or
caption, wherever the shards lie; the other members (``.json``) do not count.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from gapscope.errors import GapscopeError
from gapscope.extract.audio import AUDIO_EXTENSIONS
from gapscope.extract.captions import MAX_FIELD_CHARS
from gapscope.extract.datasets import (
    IMAGE_EXTENSIONS,
    Candidate,
    Dataset,
    MediaRef,
    rows_fingerprint,
)
from gapscope.extras import require

_SUFFIXES = {
    "image": {e.lstrip(".") for e in IMAGE_EXTENSIONS},
    "audio": {e.lstrip(".") for e in AUDIO_EXTENSIONS},
}
CAPTION_SUFFIX = "txt"
# webdataset's tar iterator skips these metadata members (its ``skip_meta`` default).
_META = re.compile(r"__[^/]*__($|/)")
_COMPRESSED = {
    b"\x1f\x8b": "gzip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
}
_BLOCK = tarfile.BLOCKSIZE
_CHUNK = 1 << 20
# A caption's bytes are read up to this many (UTF-8 takes at most 4 bytes a character).
_MAX_CAPTION_BYTES = 4 * MAX_FIELD_CHARS


def require_webdataset() -> Any:
    """Import webdataset, or say how to install the webdataset extra."""
    return require("webdataset", "reading webdataset shards", extra="webdataset")


@dataclass(frozen=True, slots=True)
class TarMember(MediaRef):
    """A media member of a shard: read by its offset when its batch is decoded."""

    path: str  # the shard, absolute
    offset: int  # of the member's data in the shard
    size: int
    name: str  # "<shard>/<member>", as the store's items and skips show it
    sha256: str

    def _bytes(self) -> bytes:
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read(self.size)
        if len(data) != self.size:
            raise ValueError(f"{self.name}: the shard is shorter than when the extract started")
        return data


@dataclass
class _Member:
    """What the scan keeps of a member: where its data lies, and its digest or caption."""

    name: str
    offset: int
    size: int
    sha256: str | None = None  # media members
    caption: str | None = None  # the caption member, when readable
    problem: str | None = None  # why the caption member is not a caption


@dataclass
class _Sample:
    shard: str  # relative to the shards' common folder
    key: str
    members: dict[str, _Member] = field(default_factory=dict)  # suffix -> member, in tar order
    duplicate_of: str | None = None  # the shard where an earlier sample had this key


def scan_webdataset(pattern: str) -> Dataset:
    """The rows of the samples of every shard ``pattern`` names.

    Raises:
        GapscopeError: a pattern that names no shard or a missing one, a remote shard, a
            shard named twice, a compressed, damaged or truncated shard, or shards without
            one image or audio member.
    """
    wds = require_webdataset()
    shards = expand_shards(pattern, wds)
    real = [shard.resolve() for shard in shards]
    root = Path(os.path.commonpath([str(r.parent) for r in real]))
    names = {r.relative_to(root).as_posix(): str(r) for r in real}
    rows = _Rows(names)
    for shard, rel in zip(shards, names, strict=True):
        for sample in _shard_samples(shard, rel, wds):
            rows.add(sample)
    modality, media, texts, skipped = rows.finish(pattern)
    with_captions = rows.with_captions
    if not media:
        first = f" (first: {skipped[0]['source']}: {skipped[0]['reason']})" if skipped else ""
        raise GapscopeError(
            f"--webdataset {pattern}: none of its {rows.samples} samples has "
            f"{'an image' if modality == 'image' else 'audio'}"
            f"{' and a caption' if with_captions else ''}{first}"
        )
    candidates = {modality: media, **({"text": texts} if with_captions else {})}
    description: dict[str, Any] = {
        "images": None,
        "audio": None,
        "captions": None,
        "webdataset": pattern,
        "shard_folder": str(root),
        "shards": len(shards),
        "samples": rows.samples,
        "files": len(media),
        "labels": None,
        "fingerprint": rows_fingerprint(candidates, skipped),
    }
    return Dataset(tuple(candidates), candidates, skipped, description)


def expand_shards(pattern: str, wds: Any = None) -> list[Path]:
    """The shard files ``pattern`` names, in order: webdataset's expansion (``::``, braces,
    ``${WDS_...}``), then each glob's matches sorted.

    Raises:
        GapscopeError: no shard, a missing shard, a remote URL, or a shard named twice.
    """
    wds = wds or require_webdataset()
    try:
        names = wds.shardlists.expand_urls(pattern)
    except AssertionError as exc:  # webdataset asserts that a ${WDS_...} variable is set
        raise GapscopeError(f"--webdataset {pattern}: {exc}") from None
    except ValueError as exc:  # braceexpand's unbalanced braces
        raise GapscopeError(f"--webdataset {pattern}: not a valid pattern ({exc})") from None
    shards: list[Path] = []
    for name in names:
        if "://" in name or name.startswith("pipe:"):
            raise GapscopeError(
                f"--webdataset {pattern}: {name} is not a local file; only local shards are "
                "read (download them first)"
            )
        if glob.has_magic(name):
            matches = sorted(glob.glob(name, recursive=True))
            if not matches:
                raise GapscopeError(f"--webdataset {pattern}: no shard matches {name}")
            shards.extend(Path(m) for m in matches)
        elif not Path(name).is_file():
            what = "a folder, not a shard file" if Path(name).is_dir() else "no such shard file"
            raise GapscopeError(f"--webdataset {pattern}: {name}: {what}")
        else:
            shards.append(Path(name))
    if not shards:
        raise GapscopeError(f"--webdataset {pattern}: names no shard")
    return _distinct(pattern, shards)


def _distinct(pattern: str, shards: list[Path]) -> list[Path]:
    seen: dict[Path, Path] = {}
    for shard in shards:
        if shard.is_dir():
            raise GapscopeError(f"--webdataset {pattern}: {shard}: a folder, not a shard file")
        real = shard.resolve()
        if real in seen:
            raise GapscopeError(
                f"--webdataset {pattern}: names {shard} twice"
                + (f" (also as {seen[real]})" if seen[real] != shard else "")
            )
        seen[real] = shard
    return shards


def _shard_samples(shard: Path, rel: str, wds: Any) -> Iterator[_Sample]:
    """The samples of one shard, grouped by webdataset's own ``group_by_keys``."""
    reader = _ShardReader(shard, rel)
    try:
        for grouped in wds.tariterators.group_by_keys(reader.members(), lcase=True):
            sample = _Sample(rel, grouped["__key__"])
            sample.members = {k: v for k, v in grouped.items() if not k.startswith("__")}
            yield sample
    except ValueError as exc:
        if "duplicate file name" not in str(exc.args[0] if exc.args else ""):
            raise
        # webdataset refuses a sample with two members of one suffix (000012.jpg twice)
        raise GapscopeError(
            f"--webdataset {shard}: {reader.last}: a second member with this name in one "
            "sample (webdataset: duplicate file name)"
        ) from None


class _ShardReader:
    """The regular members of a shard in tar order, as webdataset's tar iterator gives them
    (``{"fname", "data", "__url__"}``), ``data`` being a :class:`_Member`: media members are
    hashed and captions read, chunk by chunk, the other members skipped."""

    def __init__(self, shard: Path, rel: str) -> None:
        self.shard = shard
        self.rel = rel
        self.last = ""  # the member read last (for errors)

    def members(self) -> Iterator[dict[str, Any]]:
        end = 0  # where the last member's data ends, padded to whole blocks
        try:
            with open(self.shard, "rb") as fh:
                self._check_plain(fh.read(6))
                fh.seek(0)
                # Headers through tarfile, which seeks past the data it is not asked for;
                # the data of media and captions read here, from the same file.
                with tarfile.open(fileobj=fh, mode="r:") as tar:
                    while (info := tar.next()) is not None:
                        # a shard is streamed: keep no index of its members
                        tar.members = []  # type: ignore[attr-defined]
                        self.last = info.name
                        end = info.offset_data + -(-info.size // _BLOCK) * _BLOCK
                        if not info.isreg() or _META.match(info.name):
                            continue
                        yield {
                            "fname": info.name,
                            "data": self._member(fh, info),
                            "__url__": self.rel,
                        }
            self._check_end(end)
        except (tarfile.TarError, EOFError) as exc:
            last = f"; the last member read: {self.last}" if self.last else ""
            raise GapscopeError(
                f"--webdataset {self.shard}: not a readable tar file ({exc}{last}); a damaged "
                "or truncated shard: download or write it again, or leave it out of the pattern"
            ) from None

    def _check_plain(self, head: bytes) -> None:
        for magic, kind in _COMPRESSED.items():
            if head.startswith(magic):
                raise GapscopeError(
                    f"--webdataset {self.shard}: a {kind}-compressed shard; gapscope reads each "
                    "image in place and needs uncompressed .tar shards (img2dataset's default): "
                    "decompress it first"
                )

    def _check_end(self, end: int) -> None:
        """A shard cut at a member boundary reads as a shorter valid tar: require the
        end-of-archive marker (a zero block) after the last member."""
        with open(self.shard, "rb") as fh:
            fh.seek(end)
            marker = fh.read(_BLOCK)
        if len(marker) < _BLOCK or marker.strip(b"\0"):
            raise tarfile.ReadError(
                "it ends without the end-of-archive marker: truncated, or its write was interrupted"
            )

    def _member(self, fh: BinaryIO, info: tarfile.TarInfo) -> _Member:
        member = _Member(info.name, info.offset_data, info.size)
        suffix = _suffix(info.name)
        if suffix not in _SUFFIXES["image"] | _SUFFIXES["audio"] | {CAPTION_SUFFIX}:
            return member  # not read: tarfile seeks past its data
        if info.issparse():
            raise tarfile.ReadError(f"{info.name} is a sparse member, which is not read")
        fh.seek(info.offset_data)
        if suffix == CAPTION_SUFFIX:
            raw = fh.read(min(info.size, _MAX_CAPTION_BYTES + 1))
            if len(raw) < min(info.size, _MAX_CAPTION_BYTES + 1):
                raise tarfile.ReadError("unexpected end of data")
            member.caption, member.problem = _caption(raw)
            return member
        digest = hashlib.sha256()
        remaining = info.size
        while remaining:
            chunk = fh.read(min(_CHUNK, remaining))
            if not chunk:
                raise tarfile.ReadError("unexpected end of data")
            digest.update(chunk)
            remaining -= len(chunk)
        member.sha256 = digest.hexdigest()
        return member


def _suffix(name: str) -> str | None:
    """The member's suffix as webdataset's ``base_plus_ext`` splits it, lowercased."""
    match = re.match(r"^((?:.*/|)[^.]+)[.]([^/]*)$", name)
    return match.group(2).lower() if match else None


def _caption(raw: bytes) -> tuple[str | None, str | None]:
    """(caption, None), or (None, why the member is not a usable caption)."""
    if len(raw) > _MAX_CAPTION_BYTES:
        return None, f"its caption (.txt) is longer than {MAX_FIELD_CHARS:,} characters"
    try:
        text = raw.decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        return None, "its caption (.txt) is not UTF-8 text"
    if len(text) > MAX_FIELD_CHARS:
        return None, f"its caption (.txt) is longer than {MAX_FIELD_CHARS:,} characters"
    if not text:
        return None, "its caption (.txt) is empty"
    return text, None


class _Rows:
    """The rows of the samples, built as the samples stream by, so that the scan holds the
    rows and not the samples.

    The media kind is that of the first image or audio member of the shards (image/text or
    audio/text, as one encoder reads them); a sample without a member of that kind is
    skipped. Whether the shards hold captions is known only at their end: the media rows of
    samples without a ``.txt`` member wait in ``uncaptioned``, and become the rows (no sample
    has a caption) or skips (some have) at the end.
    """

    def __init__(self, paths: dict[str, str]) -> None:
        self.paths = paths  # shard name (relative to the common folder) -> absolute path
        self.modality: str | None = None
        self.with_captions = False
        self.samples = 0
        self.media: list[Candidate] = []
        self.texts: list[Candidate] = []
        self.uncaptioned: list[Candidate] = []
        self.skipped: list[dict[str, Any]] = []
        self._pending: list[_Sample] = []  # samples before the first media member: no media
        self._first_seen: dict[str, str] = {}  # key -> the shard that had it first
        self._suffixes: set[str] = set()

    def add(self, sample: _Sample) -> None:
        self.samples += 1
        self._suffixes.update(sample.members)
        self.with_captions |= CAPTION_SUFFIX in sample.members
        sample.duplicate_of = self._first_seen.get(sample.key)
        if sample.duplicate_of is None:
            self._first_seen[sample.key] = sample.shard
        if self.modality is None:
            kinds = [k for s in sample.members for k in _SUFFIXES if s in _SUFFIXES[k]]
            if not kinds:
                self._pending.append(sample)
                return
            self.modality = kinds[0]
            for earlier in self._pending:
                self._row(earlier, self.modality)
            self._pending = []
        self._row(sample, self.modality)

    def _row(self, sample: _Sample, modality: str) -> None:
        found = next((m for k, m in sample.members.items() if k in _SUFFIXES[modality]), None)
        caption = sample.members.get(CAPTION_SUFFIX)
        source = f"{sample.shard}/{found.name if found else sample.key}"
        reason = None
        if sample.duplicate_of is not None:
            reason = f"key {sample.key!r} already read in {sample.duplicate_of}"
        elif found is None:
            kinds = ", ".join(sample.members)
            reason = f"no {modality} in the sample (members: {kinds or 'none'})"
        elif caption is not None and caption.problem is not None:
            reason = caption.problem
        if reason is not None:
            self.skipped.append({"modality": modality, "source": source, "reason": reason})
            return
        assert found is not None and found.sha256 is not None
        for suffix, other in sample.members.items():
            # One media member a sample is read; any other is listed, not dropped in silence.
            kind = next((k for k in _SUFFIXES if suffix in _SUFFIXES[k]), None)
            if other is not found and kind is not None:
                self.skipped.append(
                    {
                        "modality": kind,
                        "source": f"{sample.shard}/{other.name}",
                        "reason": f"another {kind} member of sample {sample.key!r} "
                        f"({found.name} is the one read)",
                    }
                )
        ref = TarMember(self.paths[sample.shard], found.offset, found.size, source, found.sha256)
        row = Candidate(sample.key, source, sample.key, None, ref, found.sha256)
        if caption is None or caption.caption is None:
            self.uncaptioned.append(row)
            return
        self.media.append(row)
        self.texts.append(
            Candidate(f"{sample.key}#0", caption.caption, sample.key, None, caption.caption)
        )

    def finish(
        self, pattern: str
    ) -> tuple[str, list[Candidate], list[Candidate], list[dict[str, Any]]]:
        """The media kind, the media and text rows, and the samples left out."""
        if self.modality is None:
            raise GapscopeError(
                f"--webdataset {pattern}: no image or audio member in the {self.samples} "
                f"samples of {len(self.paths)} shard(s) (member suffixes: "
                f"{', '.join(sorted(self._suffixes)) or 'none'})"
            )
        if not self.with_captions:
            return self.modality, self.uncaptioned, [], self.skipped
        self.skipped += [
            {
                "modality": self.modality,
                "source": row.source,
                "reason": "no caption (.txt) in the sample",
            }
            for row in self.uncaptioned
        ]
        return self.modality, self.media, self.texts, self.skipped
