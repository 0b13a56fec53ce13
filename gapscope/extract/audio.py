"""Reading audio for CLAP: soundfile to decode, mono, scipy to resample, then one clip length.

No torchaudio or librosa: soundfile's bundled libsndfile reads WAV, FLAC, OGG and MP3, and
``scipy.signal.resample_poly`` resamples exactly by a rational factor.
"""

from __future__ import annotations

import math
import os
from typing import Any, BinaryIO

import numpy as np

from gapscope.errors import GapscopeError
from gapscope.extras import require

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff")


def require_soundfile() -> Any:
    """Import soundfile, or say how to install the audio extra."""
    try:
        return require("soundfile", "reading audio")
    except OSError as exc:  # the package is there but its libsndfile is not
        raise GapscopeError(f"soundfile cannot load libsndfile ({exc})") from None


def require_scipy() -> Any:
    """Import scipy (the resampler), or say how to install the audio extra."""
    return require("scipy", "resampling audio")


def read_audio(path: str | os.PathLike[str] | BinaryIO) -> tuple[np.ndarray, int]:
    """Decode an audio file (a path, or a binary file object: a member of a tar shard, a
    dataset's cell) to a mono float32 waveform and its sample rate.

    Channels are averaged. Raises ``ValueError`` for an empty or non-finite signal (and
    soundfile's own errors for unreadable files), which the extraction reports as skips.
    """
    soundfile = require_soundfile()
    source = path if hasattr(path, "read") else os.fspath(path)  # type: ignore[arg-type]
    data, rate = soundfile.read(source, dtype="float32", always_2d=True)
    if data.shape[0] == 0:
        raise ValueError("empty audio (0 samples)")
    wave = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(wave).all():
        raise ValueError("audio contains NaN or infinite samples")
    return np.ascontiguousarray(wave, dtype=np.float32), int(rate)


def resample(wave: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """Resample ``wave`` from ``rate`` to ``target_rate`` Hz with a polyphase filter.

    >>> resample(np.ones(48000, dtype=np.float32), 48000, 16000).shape
    (16000,)
    """
    if rate == target_rate:
        return wave
    require_scipy()
    from scipy.signal import resample_poly

    g = math.gcd(int(rate), int(target_rate))
    out = resample_poly(wave, target_rate // g, rate // g)
    return np.ascontiguousarray(out, dtype=np.float32)


def fit_length(wave: np.ndarray, length: int) -> np.ndarray:
    """Cut ``wave`` to its first ``length`` samples, or repeat it and pad with zeros to ``length``.

    Repeat-then-pad is CLAP's ``repeatpad``; cutting at the start (rather than a random crop)
    keeps extraction deterministic.

    >>> fit_length(np.array([1, 2, 3], dtype=np.float32), 7).tolist()
    [1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 0.0]
    >>> fit_length(np.arange(5, dtype=np.float32), 2).tolist()
    [0.0, 1.0]
    """
    if wave.shape[0] >= length:
        return np.ascontiguousarray(wave[:length])
    repeats = length // wave.shape[0]
    tiled = np.tile(wave, repeats)
    return np.pad(tiled, (0, length - tiled.shape[0])).astype(np.float32, copy=False)


def load_clip(path: str | os.PathLike[str] | BinaryIO, rate: int, length: int) -> np.ndarray:
    """Read, make mono, resample to ``rate`` and fit to ``length`` samples."""
    wave, source_rate = read_audio(path)
    return fit_length(resample(wave, source_rate, rate), length)
