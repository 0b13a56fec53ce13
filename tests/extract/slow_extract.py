"""Run an extract whose encoder sleeps after each batch, so a test can kill it mid-way.

Usage: python tests/extract/slow_extract.py OUT IMAGES CAPTIONS BATCH_SIZE

Every batch becomes its own part (part_rows=1), so parts appear on disk one by one. The
encoder is the same tiny model a plain ``gapscope extract --model gapscope-tiny-vit`` loads
(only slower), so rerunning that command resumes this store.
"""

from __future__ import annotations

import sys
import time


def main(out: str, images: str, captions: str, batch_size: str) -> None:
    from gapscope.extract import extract, load_encoder

    encoder = load_encoder("open_clip", model="gapscope-tiny-vit", device="cpu")
    encode = encoder.encode_batch

    def slow_encode(modality, batch):
        result = encode(modality, batch)
        time.sleep(0.5)
        return result

    encoder.encode_batch = slow_encode
    extract(
        out,
        images=images,
        captions=captions,
        encoder=encoder,
        batch_size=int(batch_size),
        workers=1,
        quiet=True,
        part_rows=1,
    )


if __name__ == "__main__":
    main(*sys.argv[1:5])
