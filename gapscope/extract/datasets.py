"""What to extract: an image or audio folder and an optional captions file, as ordered rows.

- Media files are found recursively (hidden files and folders are ignored) and ordered by
  their relative path, so every run, resume and shard sees the same order. When every file
  sits in a sub-folder, the first sub-folder is the file's ``label`` (``cat/001.png`` -> ``cat``).
- Each caption becomes a text row in captions-file order. It shares its file's ``group`` (the
  file's relative path) and ``label``. A caption whose file is not in the folder is skipped and
  reported, and so is a row without a file name or caption.

A store's items come from :meth:`Candidate.item`: ``id`` (the relative path, or
``<relative path>#<k>`` for the k-th caption of a file), ``source`` (relative path or caption
text), ``group`` and, when there are labels, ``label``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gapscope.errors import GapscopeError
from gapscope.extract.audio import AUDIO_EXTENSIONS
from gapscope.extract.captions import read_captions

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@dataclass(frozen=True)
class Candidate:
    """One row to extract (unless its file turns out to be unreadable)."""

    id: str
    source: str  # what the store records: the relative path, or the caption text
    group: str
    label: str | None
    load: str  # what the preprocessor reads: the absolute path, or the caption text
    size: int | None = None  # file size in bytes, part of the dataset fingerprint

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
        """sha256 of every row (ids, sources, groups, labels, file sizes) and the dropped rows:
        two scans with equal fingerprints extract to equal stores, wherever the folder lies."""
        return self.description["fingerprint"]


def scan_dataset(
    *,
    images: str | os.PathLike[str] | None = None,
    audio: str | os.PathLike[str] | None = None,
    captions: str | os.PathLike[str] | None = None,
    file_column: str | None = None,
    caption_column: str | None = None,
) -> Dataset:
    """List the rows to extract from an image folder or an audio folder, and a captions file.

    Raises:
        GapscopeError: no folder, both folders, a folder that is missing or holds no media
            file, or an unreadable captions file.
    """
    if images is not None and audio is not None:
        raise GapscopeError(
            "give --images or --audio, not both: one extract uses one encoder (run two)"
        )
    if images is None and audio is None:
        raise GapscopeError("nothing to extract: give --images DIR or --audio DIR")
    modality = "image" if images is not None else "audio"
    root = Path(images if images is not None else audio)  # type: ignore[arg-type]
    extensions = IMAGE_EXTENSIONS if modality == "image" else AUDIO_EXTENSIONS
    option = f"--{'images' if modality == 'image' else 'audio'}"
    media = _media_candidates(root, extensions, option)
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
            Path(captions), root, media, modality, file_column, caption_column
        )
        candidates["text"] = texts
        description.update(
            captions=str(Path(captions).resolve()),
            columns=columns,
            captions_read=len(texts) + len(skipped),
        )
    modalities = tuple(candidates)
    description["fingerprint"] = _fingerprint(candidates, skipped)
    return Dataset(modalities, candidates, skipped, description)


def _media_candidates(root: Path, extensions: tuple[str, ...], option: str) -> list[Candidate]:
    if not root.is_dir():
        raise GapscopeError(f"{option} {root}: folder not found")
    found: list[tuple[str, Path, int]] = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith(".") or not name.lower().endswith(extensions):
                continue
            path = Path(folder) / name
            try:
                size = path.stat().st_size
            except OSError:  # a dangling link: keep it, so it is reported as unreadable
                size = -1
            found.append((path.relative_to(root).as_posix(), path, size))
    if not found:
        raise GapscopeError(
            f"{option} {root}: no {'/'.join(e.lstrip('.') for e in extensions)} files in it"
        )
    found.sort(key=lambda entry: entry[0])
    labelled = all("/" in rel for rel, _, _ in found)
    return [
        Candidate(
            id=rel,
            source=rel,
            group=rel,
            label=rel.split("/", 1)[0] if labelled else None,
            load=str(path.resolve()),
            size=size,
        )
        for rel, path, size in found
    ]


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
            return path.resolve().relative_to(root).as_posix()
        except ValueError:
            return None
    rel = os.path.normpath(path.as_posix()).replace(os.sep, "/")
    return None if rel == ".." or rel.startswith("../") else rel


def _fingerprint(candidates: dict[str, list[Candidate]], skipped: list[dict[str, Any]]) -> str:
    h = hashlib.sha256()
    for modality, rows in candidates.items():
        for c in rows:
            h.update(
                json.dumps(
                    [modality, c.id, c.source, c.group, c.label, c.size], ensure_ascii=False
                ).encode()
            )
            h.update(b"\n")
    h.update(json.dumps(skipped, sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()
