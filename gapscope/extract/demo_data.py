"""The demo dataset: coloured shapes with captions, and synthesised sounds with descriptions.

Generated on the fly, deterministically (no binary files ship with gapscope):

- ``images/<shape>/<colour>-<size>.png``: 24 PNGs, 64x64, a circle, square or triangle in one of
  four colours and two sizes on white; the shape sub-folder is the label. ``images.csv`` gives
  each image two captions.
- ``audio/<kind>/<name>.wav``: 12 one-second clips (tones, noises, sweeps), some at 16 kHz
  mono, some at 22.05 or 44.1 kHz stereo so that resampling and down-mixing are exercised; the
  kind sub-folder is the label. ``audio.jsonl`` gives each clip a list of two descriptions.
- ``image-classes.txt``, ``image-templates.txt``, ``audio-classes.txt``,
  ``audio-templates.txt``: the class names (the sub-folders) and prompt templates of zero-shot
  classification (``gapscope extract --classes --templates``).

Regenerate with ``python -m gapscope.extract.demo_data DIR``. Existing files are never
overwritten: a file already there must be exactly the one the demo writes (an earlier demo's),
else nothing is written and :class:`~gapscope.errors.GapscopeError` names it.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gapscope.data.atomic import atomic_write_bytes
from gapscope.errors import GapscopeError, MissingDependencyError
from gapscope.extras import EXTRAS, require

SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
}
SIZES = {"small": 18, "large": 28}
IMAGE_SIZE = 64


@dataclass(frozen=True)
class DemoDataset:
    """Where :func:`write_demo_dataset` put things."""

    root: Path
    images: Path
    image_captions: Path
    audio: Path
    audio_captions: Path
    image_classes: Path
    image_templates: Path
    audio_classes: Path
    audio_templates: Path


def write_demo_dataset(root: str | Path) -> DemoDataset:
    """Write the demo images, sounds and caption files under ``root`` (created if needed).

    The files are made in a temporary folder first. A file that is already under ``root``
    is kept when its bytes are the demo's (an earlier demo wrote it: the data is the same on
    every run); any other file in the way stops the demo before anything is written.

    Raises:
        MissingDependencyError: Pillow or soundfile is not installed.
        GapscopeError: a file in the way under ``root`` differs from the demo's.
    """
    # Before anything is written, and for both extras at once: the demo draws images
    # (Pillow) and synthesises sounds (soundfile), then runs open_clip and CLAP on them.
    missing = [EXTRAS[m][0] for m in ("PIL", "soundfile") if not _importable(m)]
    if missing:
        raise MissingDependencyError(
            f"the demo needs the extract and audio extras ({' and '.join(missing)} not "
            "installed): pip install 'gapscope[extract,audio]'"
        )
    root = Path(root)
    with tempfile.TemporaryDirectory(prefix="gapscope-demo-") as tmp:
        fresh = Path(tmp)
        _write_images(fresh / "images", fresh / "images.csv")
        _write_audio(fresh / "audio", fresh / "audio.jsonl")
        _write_classes(fresh)
        files = sorted(p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file())
        for rel in _missing_files(root, fresh, files):
            atomic_write_bytes(root / rel, (fresh / rel).read_bytes())
    return DemoDataset(
        root,
        root / "images",
        root / "images.csv",
        root / "audio",
        root / "audio.jsonl",
        root / "image-classes.txt",
        root / "image-templates.txt",
        root / "audio-classes.txt",
        root / "audio-templates.txt",
    )


#: The prompt templates of the demo's zero-shot classes (CLIP-style, ``{}`` the class name).
IMAGE_TEMPLATES = ("a photo of a {}.", "a drawing of a {}.", "a {} on a white background.")
AUDIO_TEMPLATES = ("this is a sound of {}.", "a recording of a {}.")
SOUND_KINDS = ("tone", "noise", "sweep")


def _write_classes(root: Path) -> None:
    """The class names (the label sub-folders) and templates, one a line."""
    for name, lines in (
        ("image-classes.txt", SHAPES),
        ("image-templates.txt", IMAGE_TEMPLATES),
        ("audio-classes.txt", SOUND_KINDS),
        ("audio-templates.txt", AUDIO_TEMPLATES),
    ):
        (root / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _missing_files(root: Path, fresh: Path, files: list[Path]) -> list[Path]:
    """The demo files not yet under ``root``; refuse when something else is in the way."""
    missing, in_the_way = [], []
    for rel in files:
        target = root / rel
        folders = [root / parent for parent in reversed(rel.parents)]
        if any(os.path.lexists(f) and not f.is_dir() for f in folders):
            in_the_way.append(target)
        elif not os.path.lexists(target):
            missing.append(rel)
        elif not target.is_file() or target.read_bytes() != (fresh / rel).read_bytes():
            in_the_way.append(target)
    if in_the_way:
        more = f" (and {len(in_the_way) - 1} more)" if len(in_the_way) > 1 else ""
        raise GapscopeError(
            f"{in_the_way[0]}: exists and is not the demo's file{more}; the demo never "
            "overwrites files: choose another folder or move it away"
        )
    return missing


def _importable(module: str) -> bool:
    try:
        require(module, "the demo")
    except MissingDependencyError:
        return False
    return True


def _write_images(folder: Path, captions: Path) -> None:
    require("PIL", "the demo images")
    from PIL import Image, ImageDraw

    rows = []
    for shape in SHAPES:
        (folder / shape).mkdir(parents=True, exist_ok=True)
        for k, (colour, rgb) in enumerate(COLOURS.items()):
            for size_name, radius in SIZES.items():
                image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), "white")
                draw = ImageDraw.Draw(image)
                # Shift the centre a little per colour so no two images share a layout.
                cx, cy = 32 + (k - 1.5) * 3, 32 - (k - 1.5) * 2
                box = (cx - radius, cy - radius, cx + radius, cy + radius)
                if shape == "circle":
                    draw.ellipse(box, fill=rgb)
                elif shape == "square":
                    draw.rectangle(box, fill=rgb)
                else:
                    draw.polygon(
                        [(cx, cy - radius), (cx + radius, cy + radius), (cx - radius, cy + radius)],
                        fill=rgb,
                    )
                name = f"{shape}/{colour}-{size_name}.png"
                image.save(folder / name)
                rows.append((name, f"a {size_name} {colour} {shape}"))
                rows.append((name, f"a {colour} {shape} on a white background"))
    with open(captions, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "caption"])
        writer.writerows(rows)


def _tone(freq: float, rate: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.sin(2 * np.pi * freq * t)


def _sweep(f0: float, f1: float, rate: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
    return np.sin(phase)


def _sounds() -> list[tuple[str, int, int, np.ndarray, list[str]]]:
    """(relative path, sample rate, channels, mono signal, two descriptions) of each clip."""
    rng = np.random.default_rng(0)
    white = rng.standard_normal(44100)
    brown = np.cumsum(rng.standard_normal(16000))
    brown = brown - np.convolve(brown, np.ones(400) / 400, mode="same")  # remove the drift
    pulses = _tone(660, 16000) * (np.arange(16000) % 4000 < 1000)
    return [
        (
            "tone/220hz.wav",
            16000,
            1,
            _tone(220, 16000),
            ["a low steady hum", "a pure 220 hertz tone"],
        ),
        (
            "tone/440hz.wav",
            22050,
            2,
            _tone(440, 22050),
            ["a steady beep at concert pitch", "a pure 440 hertz tone"],
        ),
        (
            "tone/880hz.wav",
            16000,
            1,
            _tone(880, 16000),
            ["a high pitched whistle", "a pure 880 hertz tone"],
        ),
        (
            "tone/chord.wav",
            44100,
            2,
            (_tone(262, 44100) + _tone(330, 44100) + _tone(392, 44100)) / 3,
            ["a major chord held still", "three tones played together"],
        ),
        ("noise/white.wav", 44100, 1, white / 4, ["loud white noise", "static hiss"]),
        (
            "noise/brown.wav",
            16000,
            1,
            brown / np.abs(brown).max(),
            ["a deep rumbling noise", "low rumble like distant thunder"],
        ),
        (
            "noise/bursts.wav",
            16000,
            1,
            rng.standard_normal(16000) * (np.arange(16000) % 8000 < 2000) / 3,
            ["two short bursts of noise", "noise that starts and stops"],
        ),
        ("noise/pulses.wav", 16000, 1, pulses, ["four short beeps", "a beeping alarm"]),
        (
            "sweep/rising.wav",
            16000,
            1,
            _sweep(200, 2000, 16000),
            ["a tone rising in pitch", "an upward sweep"],
        ),
        (
            "sweep/falling.wav",
            22050,
            2,
            _sweep(2000, 200, 22050),
            ["a tone falling in pitch", "a downward sweep"],
        ),
        (
            "sweep/fast-rise.wav",
            16000,
            1,
            _sweep(100, 6000, 16000),
            ["a fast rising whoosh", "a quick upward chirp"],
        ),
        (
            "sweep/warble.wav",
            16000,
            1,
            np.sin(
                2
                * np.pi
                * (
                    600 * np.arange(16000) / 16000
                    + 20 * np.sin(2 * np.pi * 6 * np.arange(16000) / 16000)
                )
            ),
            ["a warbling siren", "a wobbling tone"],
        ),
    ]


def _write_audio(folder: Path, captions: Path) -> None:
    soundfile = require("soundfile", "the demo sounds")

    lines = []
    for rel, rate, channels, signal, descriptions in _sounds():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        signal = 0.8 * np.asarray(signal, dtype=np.float64)
        if channels == 2:  # a slightly quieter right channel, so the down-mix is not trivial
            signal = np.stack([signal, 0.6 * signal], axis=1)
        soundfile.write(path, signal, rate, subtype="PCM_16")
        lines.append(json.dumps({"audio": rel, "captions": descriptions}))
    captions.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":  # python -m gapscope.extract.demo_data DIR
    print(write_demo_dataset(sys.argv[1] if len(sys.argv) > 1 else "gapscope-demo-data"))
