"""Extraction throughput against the encoder's own forward pass on the same batches.

For each model: generate an image folder with captions, run ``gapscope.extract.extract`` on
it (decoding in DataLoader workers, writing the store), then time ``encode_batch`` alone on the
very same batches, already decoded in memory. The ratio extract / forward says how much of the
encoder's speed the pipeline keeps (1.0 = decoding and writing cost nothing visible). The model
is loaded once, outside both timings; each figure is the best of ``--repeat`` runs, since
a shared machine makes single runs noisy.

    python benchmarks/bench_extract.py --model gapscope-tiny-vit --images 512 --batch-size 64
    python benchmarks/bench_extract.py --model ViT-B-32 --images 64 --batch-size 32

Prints a table (ratio = best extract / best forward; median = median over runs of each run's
extract / forward) and writes JSON (``--json``, default ``bench_extract.json``).

Measured 2026-11-25 on the project's 2-core CPU VM (shared; 1-min load 0.9 at the start), torch
2.14.1, 1 decoding worker, 256x256 JPEGs, best of 3, with
``python benchmarks/bench_extract.py`` (items/s):

    model              modality   rows batch  extract/s  forward/s  ratio  median
    gapscope-tiny-vit  image       512    64      637.4    16753.8   0.04    0.04
    gapscope-tiny-vit  text       1024    64     5010.8    22711.9   0.22    0.22
    ViT-B-32 (random)  image        64    32       17.6       20.2   0.87    0.90
    ViT-B-32 (random)  text        128    32       25.0       27.6   0.91    0.91

The tiny model is bound by JPEG decoding and resizing in its one decoding worker (figures in
docs/performance.md); ViT-B-32 is bound by the encoder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def make_images(folder: Path, count: int, size: int, seed: int = 0) -> Path:
    """``count`` JPEGs of ``size`` x ``size`` noise with two captions each; returns captions."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["image,caption"]
    for i in range(count):
        pixels = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)
        lines += [
            f"{i:05d}.jpg,a photo of thing number {i}",
            f"{i:05d}.jpg,noise pattern {i} in many colours",
        ]
    captions = folder.parent / "captions.csv"
    captions.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return captions


def forward_rate(encoder, modality: str, sources: list, batch_size: int) -> float:
    """Items/s of ``encode_batch`` alone over pre-decoded batches (one warm-up batch first)."""
    pre = encoder.preprocessor(modality)
    batches = [
        pre.collate([pre.load(s) for s in sources[i : i + batch_size]])
        for i in range(0, len(sources), batch_size)
    ]
    encoder.encode_batch(modality, batches[0])
    started = time.perf_counter()
    for batch in batches:
        encoder.encode_batch(modality, batch)
    return len(sources) / (time.perf_counter() - started)


def bench(
    model: str,
    images: int,
    size: int,
    batch_size: int,
    workers: int | None,
    device: str,
    repeat: int,
) -> list[dict]:
    """Best of ``repeat`` runs of each measurement (the machine may be shared)."""
    from gapscope.extract import extract, load_encoder, scan_dataset

    encoder = load_encoder("open_clip", model=model, device=device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        captions = make_images(folder, images, size)
        dataset = scan_dataset(images=folder, captions=captions)
        # Warm the encoder up so that neither timing pays for first-call set-up.
        encoder.encode_texts(["warm up"])
        extract_rates: dict[str, list[float]] = {"image": [], "text": []}
        forward_rates: dict[str, list[float]] = {"image": [], "text": []}
        for _ in range(repeat):
            summary = extract(
                Path(tmp) / "store",
                images=folder,
                captions=captions,
                encoder=encoder,
                batch_size=batch_size,
                workers=workers,
                quiet=True,
                overwrite=True,
            )
            for modality, stats in summary.throughput.items():
                extract_rates[modality].append(stats["processed"] / stats["seconds"])
                sources = [c.load for c in dataset.candidates[modality]]
                forward_rates[modality].append(forward_rate(encoder, modality, sources, batch_size))
        for modality in ("image", "text"):
            best_extract, best_forward = max(extract_rates[modality]), max(forward_rates[modality])
            rows.append(
                {
                    "model": model,
                    "modality": modality,
                    "rows": len(dataset.candidates[modality]),
                    "batch_size": batch_size,
                    "workers": summary_workers(workers),
                    "device": str(encoder.device),
                    "repeat": repeat,
                    "extract_items_per_s": round(best_extract, 2),
                    "forward_items_per_s": round(best_forward, 2),
                    "ratio": round(best_extract / best_forward, 3),
                    # Each run's extract and forward timings are back to back, so their ratio is
                    # less exposed to other load on the machine than the best-of figures.
                    "median_pair_ratio": round(
                        float(
                            np.median(
                                np.array(extract_rates[modality])
                                / np.array(forward_rates[modality])
                            )
                        ),
                        3,
                    ),
                    "all_extract_items_per_s": [round(x, 2) for x in extract_rates[modality]],
                    "all_forward_items_per_s": [round(x, 2) for x in forward_rates[modality]],
                }
            )
    return rows


def summary_workers(workers: int | None) -> int:
    from gapscope.extract import default_workers

    return default_workers() if workers is None else workers


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        action="append",
        help="open_clip model (repeatable); default: gapscope-tiny-vit and ViT-B-32",
    )
    parser.add_argument(
        "--images",
        type=int,
        action="append",
        help="images per model (repeatable, in --model order)",
    )
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument(
        "--batch-size",
        type=int,
        action="append",
        help="batch size per model (repeatable, in --model order)",
    )
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    parser.add_argument("--json", default="bench_extract.json")
    args = parser.parse_args(argv)
    models = args.model or ["gapscope-tiny-vit", "ViT-B-32"]
    counts = args.images or [512, 64][: len(models)] + [64] * max(0, len(models) - 2)
    batches = args.batch_size or [64, 32][: len(models)] + [32] * max(0, len(models) - 2)
    load_start = os.getloadavg()[0]  # the machine may be shared: record how busy it was
    results = []
    for model, count, batch in zip(models, counts, batches, strict=True):
        results.extend(
            bench(model, count, args.image_size, batch, args.workers, args.device, args.repeat)
        )

    load_end = os.getloadavg()[0]
    header = (
        f"{'model':<18} {'modality':<8} {'rows':>6} {'batch':>5} {'workers':>7} "
        f"{'extract/s':>10} {'forward/s':>10} {'ratio':>6} {'median':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['model']:<18} {r['modality']:<8} {r['rows']:>6} {r['batch_size']:>5} "
            f"{r['workers']:>7} {r['extract_items_per_s']:>10.1f} "
            f"{r['forward_items_per_s']:>10.1f} {r['ratio']:>6.2f} "
            f"{r['median_pair_ratio']:>6.2f}"
        )
    record = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_average_1min": {"at_start": round(load_start, 2), "at_end": round(load_end, 2)},
        },
        "results": results,
    }
    Path(args.json).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
