"""Reports with every kind of key, for the flat-key and tracker tests: three modalities (three
pairs and a tuple), labels, every metric family (what-ifs and diagnostics included) and
bootstrap intervals; or sampled queries (the ``*_se`` keys)."""

from __future__ import annotations

import numpy as np
from helpers import make_paired

from gapscope import EmbeddingSet, analyze
from gapscope.report import Report


def three_modalities(seed: int = 0) -> EmbeddingSet:
    """40 images, 80 captions and 40 sounds (an image's rows reversed, plus noise), labelled."""
    image, text, gi, gt, li, lt = make_paired(n=40, d=8, captions=2, seed=seed)
    rng = np.random.default_rng(seed + 1)
    audio = (image[:, ::-1] + 0.3 * rng.normal(size=image.shape)).astype(np.float32)
    return EmbeddingSet(
        embeddings={"image": image, "text": text, "audio": audio},
        groups={"image": gi, "text": gt, "audio": gi.copy()},
        labels={"image": li, "text": lt, "audio": li.copy()},
    )


def full_report(**run) -> Report:
    """Every metric (the default), three modalities, 95% intervals; ``run`` is step and tags."""
    return analyze(three_modalities(), device="cpu", bootstrap=20, seed=0, **run)


def sampled_report(**run) -> Report:
    """Sampled queries: the standard-error keys (``*_se``)."""
    return analyze(three_modalities(), device="cpu", sample=20, seed=0, **run)
