"""What ``analyze --precision bf16`` changes: time of the O(n^2) metrics and their values,
against ``--precision fp32`` on the same data in the same run.

Data: 1:1 pairs that are hard to retrieve (as ``bench_faiss.py``: shared content plus twice as
much noise a modality), with 100 weak classes as intra-modal relevance, so that many scores
lie close together and rounding can reorder them. Runs ``analyze(..., metrics=
"uniformity,retrieval")`` once a precision (after a warm-up on a small slice) and prints each
metric's two values and their difference.

    python benchmarks/bench_precision.py --n 10000 --dim 512 --json precision.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from gapscope import EmbeddingSet, analyze


def make_data(n: int, dim: int, classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    centres = rng.normal(size=(classes, dim)).astype(np.float32)
    content = rng.normal(size=(n, dim)).astype(np.float32) + 0.5 * centres[labels]
    image = content + 2.0 * rng.normal(size=(n, dim)).astype(np.float32) + 0.3
    text = content + 2.0 * rng.normal(size=(n, dim)).astype(np.float32) - 0.3
    return image, text, labels


def flat(report) -> dict[str, float]:
    """The report's scalar metrics as ``path: value`` (counts and notes left out)."""
    out: dict[str, float] = {}

    def walk(value, path):
        if isinstance(value, dict):
            for key, v in value.items():
                walk(v, f"{path}.{key}" if path else key)
        elif isinstance(value, float) and not path.endswith(("n_queries", "n_skipped")):
            out[path] = value

    walk({"modalities": report.modalities, "pairs": report.pairs}, "")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    image, text, labels = make_data(args.n, args.dim, args.classes)
    data = EmbeddingSet.from_arrays({"image": image, "text": text}, labels=labels)
    small = EmbeddingSet.from_arrays(
        {"image": image[:500], "text": text[:500]}, labels=labels[:500]
    )
    times, values = {}, {}
    for precision in ("fp32", "bf16"):
        analyze(small, metrics="uniformity,retrieval", device=args.device, precision=precision)
        t0 = time.perf_counter()
        report = analyze(
            data, metrics="uniformity,retrieval", device=args.device, precision=precision
        )
        times[precision] = time.perf_counter() - t0
        values[precision] = flat(report)

    rows = []
    for key in values["fp32"]:
        a, b = values["fp32"][key], values["bf16"][key]
        rows.append({"metric": key, "fp32": a, "bf16": b, "difference": b - a})
    print(
        f"n={args.n} d={args.dim} device={args.device}: fp32 {times['fp32']:.1f} s, "
        f"bf16 {times['bf16']:.1f} s (bf16 / fp32 = {times['bf16'] / times['fp32']:.2f}x)"
    )
    print(f"{'metric':<44} {'fp32':>11} {'bf16':>11} {'bf16 - fp32':>12}")
    for row in rows:
        print(
            f"{row['metric']:<44} {row['fp32']:>11.5f} {row['bf16']:>11.5f} "
            f"{row['difference']:>+12.5f}"
        )
    result = {
        "machine": platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "n": args.n,
        "dim": args.dim,
        "device": args.device,
        "seconds": times,
        "max_abs_difference": max(abs(r["difference"]) for r in rows),
        "rows": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
