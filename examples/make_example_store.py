"""Regenerate ``examples/example-store``: a small synthetic store with a known modality gap.

300 images in 6 classes, two captions each (600 text rows), d = 64. Each image and its
captions share a latent "content" vector (class centre + item detail); each modality adds its
own constant offset (the modality gap) and noise, and raw row norms vary the way real encoder
outputs do. Run from the repository root:

    python examples/make_example_store.py [OUT [SEED]]

Another seed gives another "checkpoint" of the same kind (handy to try ``gapscope diff``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from gapscope.data.store import EmbeddingStore

N_IMAGES, CAPTIONS_PER_IMAGE, N_CLASSES, DIM = 300, 2, 6, 64
CLASSES = ["circle", "square", "triangle", "star", "cross", "ring"]


def make(seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, list[dict]]]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(N_CLASSES, DIM))
    offset_image = rng.normal(size=DIM) * 0.35
    offset_text = rng.normal(size=DIM) * 0.35
    labels = np.repeat(np.arange(N_CLASSES), N_IMAGES // N_CLASSES)
    content = 0.5 * centres[labels] + 0.6 * rng.normal(size=(N_IMAGES, DIM))
    image = content + offset_image * np.sqrt(DIM) / 4 + 0.7 * rng.normal(size=(N_IMAGES, DIM))
    image *= rng.uniform(8.0, 12.0, size=(N_IMAGES, 1))  # raw image norms vary
    text_rows, text_items = [], []
    for i in range(N_IMAGES):
        for c in range(CAPTIONS_PER_IMAGE):
            row = content[i] + offset_text * np.sqrt(DIM) / 4 + 0.8 * rng.normal(size=DIM)
            text_rows.append(row * rng.uniform(5.0, 7.0))
            text_items.append(
                {
                    "id": f"caption-{i:03d}-{c}",
                    "source": f"a photo of a {CLASSES[labels[i]]} (item {i}, caption {c})",
                    "group": f"image-{i:03d}",
                    "label": CLASSES[labels[i]],
                }
            )
    image_items = [
        {
            "id": f"image-{i:03d}",
            "source": f"images/{CLASSES[labels[i]]}/{i:03d}.png",
            "group": f"image-{i:03d}",
            "label": CLASSES[labels[i]],
        }
        for i in range(N_IMAGES)
    ]
    embeddings = {"image": image.astype(np.float32), "text": np.asarray(text_rows, np.float32)}
    return embeddings, {"image": image_items, "text": text_items}


def main(out: Path, seed: int = 0) -> None:
    embeddings, items = make(seed)
    EmbeddingStore.write(
        out,
        embeddings,
        items,
        overwrite=True,
        encoder={
            "family": "synthetic",
            "model": "gapscope example generator",
            "pretrained": None,
            "embedding_dim": DIM,
        },
        dataset={
            "name": "example-store",
            "generator": "examples/make_example_store.py",
            "seed": seed,
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main(
        Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "example-store",
        int(sys.argv[2]) if len(sys.argv) > 2 else 0,
    )
