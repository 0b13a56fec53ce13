"""Datasets as they come, written by the real packages: webdataset tar shards in img2dataset's
layout (``webdataset.TarWriter``) and Hugging Face datasets saved with ``save_to_disk``, each
with a folder and a captions file holding the same media and captions, byte for byte, for the
tests to compare stores with."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class ShardData:
    shards: list[Path]  # in order
    pattern: str  # a brace pattern naming them all
    folder: Path  # the same images, as <key>.<suffix>
    captions: Path  # CSV: <key>.<suffix>, caption
    keys: list[str]


@dataclass(frozen=True)
class HFData:
    dataset: Path  # the save_to_disk folder
    folder: Path  # the same media files
    captions: Path  # the same captions
    rows: int


def encoded_image(rng: np.random.Generator, suffix: str, size: int = 40) -> bytes:
    from PIL import Image

    pixels = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG" if suffix == "png" else "JPEG")
    return buffer.getvalue()


def write_shards(
    root: Path, shards: int = 3, per_shard: int = 4, seed: int = 0, name: str = "shards"
) -> ShardData:
    """``shards`` tar files of ``per_shard`` samples each (``<key>.jpg`` or ``.png``,
    ``<key>.txt``, ``<key>.json`` as img2dataset writes them), keys ``000000000``, ... in order,
    and the folder and captions file of the same images and captions."""
    import webdataset as wds

    rng = np.random.default_rng(seed)
    folder = root / f"{name}-folder"
    folder.mkdir(parents=True)
    (root / name).mkdir()
    paths, keys, rows = [], [], [("image", "caption")]
    for s in range(shards):
        path = root / name / f"{s:05d}.tar"
        with wds.TarWriter(str(path)) as sink:
            for i in range(per_shard):
                key = f"{s:05d}{i:04d}"
                suffix = "png" if (s + i) % 2 else "jpg"
                image = encoded_image(rng, suffix)
                caption = f"sample {key}, a picture of {['cats', 'dogs', 'boats'][i % 3]}"
                meta = {"key": key, "url": f"https://example.com/{key}.{suffix}", "status": "ok"}
                sink.write({"__key__": key, suffix: image, "txt": caption, "json": meta})
                (folder / f"{key}.{suffix}").write_bytes(image)
                rows.append((f"{key}.{suffix}", caption))
                keys.append(key)
        paths.append(path)
    captions = root / f"{name}.csv"
    with open(captions, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    pattern = str(root / name / f"{{00000..{shards - 1:05d}}}.tar")
    return ShardData(paths, pattern, folder, captions, keys)


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A tar file of exactly these members, in this order (webdataset's writer refuses
    malformed samples, which some tests need)."""
    import tarfile

    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write_hf_images(root: Path, rows: int = 7, seed: int = 1, name: str = "hf") -> HFData:
    """A DatasetDict (``train``: ``rows`` rows, ``test``: 2) with an ``image`` column (an
    ``Image`` feature made from PIL images) and a ``captions`` column (lists of two strings),
    saved with ``save_to_disk``; and a folder and CSV captions file of the train split's
    images (the bytes ``datasets`` stored) and captions."""
    from datasets import Dataset, DatasetDict, Features, Image, Value
    from PIL import Image as PILImage

    try:
        from datasets import List
    except ImportError:  # datasets < 4
        from datasets import Sequence as List

    rng = np.random.default_rng(seed)
    pictures = [
        PILImage.fromarray(rng.integers(0, 255, size=(36, 36, 3), dtype=np.uint8))
        for _ in range(rows + 2)
    ]
    captions = [[f"row {i}: a small picture", f"another caption of row {i}"] for i in range(rows)]
    captions += [["held out"], ["held out too"]]
    features = Features({"image": Image(), "captions": List(Value("string"))})
    full = Dataset.from_dict({"image": pictures, "captions": captions}, features=features)
    split = DatasetDict(train=full.select(range(rows)), test=full.select(range(rows, rows + 2)))
    path = root / name
    split.save_to_disk(str(path))
    return _mirror(root, path, name, "train", "image", "captions", "png")


def write_hf_audio(root: Path, rows: int = 5, name: str = "hf-audio") -> HFData:
    """A Dataset (no splits) with an ``Audio`` column (WAV and FLAC bytes of tones at several
    rates, mono and stereo) and a ``text`` column (one string each), saved with
    ``save_to_disk``; and the same clips as files with a JSONL captions file.

    The Audio column is cast from stored bytes: encoding arrays needs torchcodec, which
    reading does not."""
    import soundfile
    from datasets import Audio, Dataset, Features, Value

    cells, texts = [], []
    for i in range(rows):
        rate = (16000, 22050, 44100)[i % 3]
        t = np.arange(int(rate * (0.3 + 0.2 * i))) / rate
        wave = 0.4 * np.sin(2 * np.pi * (220 + 110 * i) * t)
        if i % 2:
            wave = np.stack([wave, 0.5 * wave], axis=1)
        buffer = io.BytesIO()
        soundfile.write(buffer, wave, rate, format="FLAC" if i == 2 else "WAV")
        cells.append({"bytes": buffer.getvalue(), "path": None})
        texts.append(f"a tone of {220 + 110 * i} hertz")
    stored = Features(
        {"clip": {"bytes": Value("binary"), "path": Value("string")}, "text": Value("string")}
    )
    ds = Dataset.from_dict({"clip": cells, "text": texts}, features=stored)
    path = root / name
    ds.cast_column("clip", Audio()).save_to_disk(str(path))
    return _mirror(root, path, name, None, "clip", "text", None)


def _mirror(
    root: Path,
    path: Path,
    name: str,
    split: str | None,
    media: str,
    text: str,
    suffix: str | None,
) -> HFData:
    """The folder and captions file of what the saved dataset holds (read back as stored)."""
    import datasets

    loaded = datasets.load_from_disk(str(path))
    ds = (loaded[split] if split else loaded).with_format("arrow")
    table = ds[0 : len(ds)]
    folder = root / f"{name}-folder"
    folder.mkdir()
    lines = []
    for i, (cell, caption) in enumerate(
        zip(table.column(media).to_pylist(), table.column(text).to_pylist(), strict=True)
    ):
        data = cell["bytes"]
        ext = suffix or ("flac" if data[:4] == b"fLaC" else "wav")
        file = f"{i:04d}.{ext}"
        (folder / file).write_bytes(data)
        lines.append(json.dumps({"file": file, "caption": caption}))
    captions = root / f"{name}.jsonl"
    captions.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return HFData(path, folder, captions, len(ds))
