"""Count how many times ``analyze`` reads each modality's rows, in this checkout or another.

The O(n^2) work is one similarity product a block of rows; every read of a modality's rows
that feeds a product or an O(n d) sum is a scan of that modality. This script hands
``gapscope.analyze`` arrays that count the rows taken out of them (2-D slices and fancy
indexing), attributes each read to the function that made it, and prints the total in full
scans of each modality (rows read / rows held). Reads of sampled pairs (negative cosines,
CKA's and the Gram volume's samples) are listed but left out of the total: they read a fixed
number of rows, not whole modalities.

    python benchmarks/bench_row_reads.py                          # this checkout
    python benchmarks/bench_row_reads.py --checkout /tmp/baseline # another checkout
    python benchmarks/bench_row_reads.py --metrics gap,uniformity,retrieval
    python benchmarks/bench_row_reads.py --n 20000 --sample 2000 --stream  # as at 1M rows
    python benchmarks/bench_row_reads.py --n 40000 --sample 2000 --stream --dtype float16

``--stream`` sets the in-memory budget of the unit rows to zero, so the sampled modalities are
normalised again on every read, as they are when a store's float32 unit rows would not fit
1 GiB (a million rows of d = 512); ``--sample`` passes ``analyze``'s ``--sample``; ``--dtype``
is the rows' format (a store's rows are float16).
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]
READS: collections.Counter[tuple[str, str]] = collections.Counter()
# Functions that read a fixed-size sample of pairs, not whole modalities.
SAMPLED_PAIRS = {"_sampled_negative_cosines", "linear_cka", "_positive_cosines", "gram_volume"}


class CountingArray(np.ndarray):
    """An ndarray that counts the rows read out of it, by the function that read them."""

    modality: str | None = None

    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        out = super().__getitem__(index)
        if self.modality is not None and isinstance(out, np.ndarray) and out.ndim == 2:
            frames = [f.name for f in traceback.extract_stack(limit=16)[:-1]]
            # A helper that reads pairs for a function of SAMPLED_PAIRS (the similarity
            # statistics' _cosines) counts as that function.
            sampled = [name for name in frames if name in SAMPLED_PAIRS]
            reader = (
                sampled[-1]
                if sampled
                else next(name for name in reversed(frames) if name != "__getitem__")
            )
            READS[(self.modality, reader)] += out.shape[0]
        if isinstance(out, CountingArray):
            out.modality = None  # views handed on are counted where they were cut out
        return out


def counting(array: np.ndarray, modality: str) -> CountingArray:
    out = np.asarray(array).view(CountingArray)
    out.modality = modality
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, default=HERE)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--metrics", default=None, help="analyze's metrics (default: its own)")
    parser.add_argument("--sample", type=int, default=None, help="analyze's --sample")
    parser.add_argument(
        "--stream", action="store_true", help="no unit rows held in memory (as at 1M rows)"
    )
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    sys.path.insert(0, str(args.checkout.resolve()))
    import torch

    # One thread: lanes make slices in threads whose stacks do not say who asked for them
    # (the sampled pairs); the rows read are the same on any number of threads.
    torch.set_num_threads(1)
    from gapscope import EmbeddingSet, analyze

    if args.stream:
        from gapscope.engine import unit_rows

        unit_rows.IN_MEMORY_BUDGET_BYTES = 0

    rng = np.random.default_rng(0)
    n, d = args.n, args.dim
    image = (rng.normal(size=(n, d)) + 1).astype(np.float32)
    text = (np.repeat(image, 2, axis=0) + rng.normal(size=(2 * n, d))).astype(np.float32)
    image, text = image.astype(args.dtype), text.astype(args.dtype)
    data = EmbeddingSet(
        embeddings={"image": counting(image, "image"), "text": counting(text, "text")},
        groups={"image": np.arange(n), "text": np.repeat(np.arange(n), 2)},
    )
    analyze(data, device="cpu", metrics=args.metrics, sample=args.sample)

    result = {}
    for modality, rows in (("image", n), ("text", 2 * n)):
        readers = {
            reader: round(count / rows, 2)
            for (m, reader), count in sorted(READS.items())
            if m == modality
        }
        scans = sum(v for k, v in readers.items() if k not in SAMPLED_PAIRS)
        result[modality] = {"full_scans": round(scans, 1), "by_reader": readers}
        print(f"{modality}: {scans:.1f} full scans")
        for reader, value in readers.items():
            note = "  (sampled pairs, not counted)" if reader in SAMPLED_PAIRS else ""
            print(f"    {reader:40s} {value:6.2f}{note}")
    if args.json:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=args.checkout,
            capture_output=True,
            text=True,
        ).stdout.strip()
        payload = {
            "commit": commit or None,
            "n": n,
            "dim": d,
            "metrics": args.metrics,
            "sample": args.sample,
            "stream": args.stream,
            "dtype": args.dtype,
        }
        args.json.write_text(json.dumps(payload | {"scans": result}, indent=2) + "\n")


if __name__ == "__main__":
    main()
