"""The default analysis of rows whose scores sit close together, with labels that do not
follow them: where the ranking's exact scores dominate.

    python benchmarks/bench_dense_scores.py --n 3000 [--dim 512] [--classes 100]

The data of ``bench_bootstrap.py``: ``content + 2 m + 0.8 noise`` (image) and
``content - 2 m' + 0.8 noise`` (text) for shared offsets ``m``, ``m'``, so all cosines of a
modality sit near 0.7, and random labels of ``--classes`` classes. Prints the seconds at
which each stage of the analysis starts and the total.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=100)
    args = parser.parse_args()

    from gapscope import EmbeddingSet, analyze

    rng = np.random.default_rng(0)
    n, d = args.n, args.dim
    content = rng.normal(size=(n, d))
    image = content + 2.0 * rng.normal(size=d) + 0.8 * rng.normal(size=(n, d))
    text = content - 2.0 * rng.normal(size=d) + 0.8 * rng.normal(size=(n, d))
    data = EmbeddingSet.from_arrays(
        {"image": image.astype(np.float32), "text": text.astype(np.float32)},
        labels=rng.integers(0, args.classes, size=n),
    )
    start = time.perf_counter()
    analyze(
        data,
        device="cpu",
        progress=lambda stage: print(f"{time.perf_counter() - start:7.1f} s  {stage}", flush=True),
    )
    print(f"total {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
