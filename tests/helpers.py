"""Helpers many tests share: the repository's root, paired test rows, the leaves of a report,
a read-only folder."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def make_paired(n: int = 60, d: int = 16, captions: int = 2, classes: int = 4, seed: int = 0):
    """Raw image rows, text rows (``captions`` an image), groups and labels, with a gap."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, d))
    labels = rng.integers(0, classes, size=n)
    content = centres[labels] + 0.7 * rng.normal(size=(n, d))
    image = (content + 1.5 * rng.normal(size=d)) * rng.uniform(2, 4, size=(n, 1))
    text = np.repeat(content, captions, axis=0) + 1.5 * rng.normal(size=d)
    text = text + 0.4 * rng.normal(size=text.shape)
    text *= rng.uniform(1, 2, size=(text.shape[0], 1))
    gi = np.arange(n)
    gt = np.repeat(gi, captions)
    return (
        image.astype(np.float32),
        text.astype(np.float32),
        gi,
        gt,
        labels,
        np.repeat(labels, captions),
    )


def leaves(value, path=""):
    """``(path, leaf)`` for every leaf of nested dicts and lists, paths like ``/a/0/b``."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from leaves(v, f"{path}/{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from leaves(v, f"{path}/{i}")
    else:
        yield path, value


@contextmanager
def read_only_folder(path: Path, monkeypatch):
    """``chmod a-w`` on ``path`` for the block, then back; as root (who may write anyway)
    ``os.access`` answers for ``path`` what it answers any other user."""
    path.chmod(0o555)
    if os.geteuid() == 0:
        real_access = os.access

        def access(target, mode, *args, **kwargs):
            if Path(target) == path and mode & os.W_OK:
                return False
            return real_access(target, mode, *args, **kwargs)

        monkeypatch.setattr(os, "access", access)
    try:
        yield path
    finally:
        path.chmod(0o755)


def small_store(path: Path, encoder: dict) -> Path:
    """A store of 12 paired image and text rows (d = 6, one group a pair) written by
    ``encoder``: what the tests of the encoder's words (random weights, escaping) read."""
    from gapscope.data.store import EmbeddingStore

    rows = np.random.default_rng(0).normal(size=(12, 6)).astype(np.float32)
    items = {
        m: [{"id": str(i), "source": f"{i}.png", "group": i} for i in range(12)]
        for m in ("image", "text")
    }
    return EmbeddingStore.write(
        path, {"image": rows, "text": rows + 0.1}, items, encoder=encoder
    ).path


def paired_set(n: int = 40, captions: int = 2, seed: int = 0):
    """:func:`make_paired` in 8 dimensions as an ``EmbeddingSet`` with groups and labels."""
    from gapscope.data.embedding_set import EmbeddingSet

    image, text, gi, gt, li, lt = make_paired(n=n, d=8, captions=captions, seed=seed)
    return EmbeddingSet(
        embeddings={"image": image, "text": text},
        groups={"image": gi, "text": gt},
        labels={"image": li, "text": lt},
    )
