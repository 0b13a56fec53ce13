"""Helpers for the extraction tests: generated datasets with broken files, subprocess runs,
store comparison. No model weights or datasets are downloaded; the models are gapscope's tiny,
randomly initialised ones."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gapscope.data.store import EmbeddingStore

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


@dataclass(frozen=True)
class ImageData:
    images: Path
    captions: Path
    n_good: int  # readable images
    n_captions: int  # captions that name an existing image


@dataclass(frozen=True)
class AudioData:
    audio: Path
    captions: Path
    n_good: int
    n_captions: int


def write_images(
    root: Path, per_class: int = 6, classes=("cat", "dog"), broken: bool = True, size: int = 40
) -> ImageData:
    """PNGs/JPEGs in class sub-folders, two captions each; optionally a corrupt image, a caption
    naming a missing file and an empty caption."""
    from PIL import Image

    rng = np.random.default_rng(1)
    folder = root / "images"
    rows = [("image", "caption")]
    n = 0
    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
            pixels[..., c % 3] = 255 - 10 * i
            suffix = "png" if i % 2 == 0 else "jpg"
            rel = f"{name}/{i:03d}.{suffix}"
            Image.fromarray(pixels).save(folder / rel)
            rows.append((rel, f"a photo of {name} number {i}"))
            rows.append((rel, f"{name} picture, variant {i}"))
            n += 1
    n_captions = len(rows) - 1
    if broken:
        (folder / classes[0] / "corrupt.png").write_bytes(b"this is not a png")
        rows.append((f"{classes[0]}/corrupt.png", "a corrupt image that cannot be read"))
        n_captions += 1  # its file exists, so its caption is kept
        rows.append((f"{classes[1]}/missing.png", "a caption for a file that does not exist"))
        rows.append((f"{classes[1]}/000.png", ""))  # empty caption
    captions = root / "captions.csv"
    with open(captions, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    return ImageData(folder, captions, n, n_captions)


def write_audio(root: Path, per_class: int = 3, broken: bool = True) -> AudioData:
    """WAV/FLAC clips in class sub-folders (mono and stereo, several rates), JSONL captions;
    optionally an empty (0-byte) file and a caption naming a missing file."""
    import soundfile

    folder = root / "audio"
    lines = []
    n = 0
    for c, name in enumerate(("tone", "noise")):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            rate = (16000, 22050, 44100)[i % 3]
            t = np.arange(int(rate * (0.4 + 0.5 * i))) / rate
            rng = np.random.default_rng(10 * c + i)
            wave = (
                np.sin(2 * np.pi * (200 + 150 * i) * t)
                if name == "tone"
                else rng.standard_normal(t.shape[0]) / 4
            )
            if i % 2 == 1:
                wave = np.stack([wave, 0.5 * wave], axis=1)
            rel = f"{name}/{i:02d}.{'flac' if i == 2 else 'wav'}"
            soundfile.write(folder / rel, 0.5 * wave, rate)
            lines.append({"audio": rel, "caption": [f"{name} clip {i}", f"the {name} sound"]})
            n += 1
    n_captions = 2 * n
    if broken:
        (folder / "tone" / "empty.wav").write_bytes(b"")
        lines.append({"audio": "tone/empty.wav", "caption": "an empty file"})
        n_captions += 1
        lines.append({"audio": "noise/missing.wav", "caption": "a missing file"})
    captions = root / "audio.jsonl"
    captions.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return AudioData(folder, captions, n, n_captions)


def tiny_extract_args(
    out: Path, *inputs: str | Path, batch_size: int | None = None
) -> list[str | Path]:
    """The arguments of ``gapscope extract`` of ``inputs`` (``"--images", DIR, ...``) into
    ``out`` with the bundled tiny ViT on the CPU, decoding in-process, quietly."""
    args: list[str | Path] = ["extract", *inputs, "--model", "gapscope-tiny-vit"]
    args += ["--device", "cpu", "--workers", "0", "-q", "-o", out]
    if batch_size is not None:
        args += ["--batch-size", str(batch_size)]
    return args


def run_module(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m ...`` in a subprocess, offline (the hub is never contacted)."""
    return subprocess.run(
        [PYTHON, "-m", *[str(a) for a in args]],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=offline_env(),
    )


def offline_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(REPO))
    return env


def assert_same_store(a: Path, b: Path, *, manifest: bool = True) -> None:
    """Two finished stores hold byte-identical arrays, identical items and (optionally)
    identical manifests."""
    sa, sb = EmbeddingStore.open(a), EmbeddingStore.open(b)
    assert sa.modalities == sb.modalities
    for m in sa.modalities:
        ea, eb = sa.embeddings(m), sb.embeddings(m)
        assert ea.dtype == eb.dtype and ea.shape == eb.shape, m
        assert np.asarray(ea).tobytes() == np.asarray(eb).tobytes(), f"{m} arrays differ"
        assert sa.items(m) == sb.items(m), f"{m} items differ"
        assert (a / f"{m}.npy").read_bytes() == (b / f"{m}.npy").read_bytes()
        assert (a / f"{m}.items.npz").read_bytes() == (b / f"{m}.items.npz").read_bytes()
    if manifest:
        assert sa.manifest == sb.manifest
    assert not (a / "parts").exists() and not (b / "parts").exists()
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
