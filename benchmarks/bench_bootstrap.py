"""What ``--bootstrap B`` costs on top of a plain ``gapscope analyze``, measured in one process.

    python benchmarks/bench_bootstrap.py --n 20000 --dim 512 --bootstrap 200 [--repeat 2]

Generates n image/text pairs (d dims, 100 label classes), then alternates a plain analysis and
one with ``--bootstrap B`` (all metrics, CPU) ``--repeat`` times, so that load from other
processes hits both alike, and prints the median wall and CPU seconds of each. It also times
the bootstrap's own stage, the resampling (``attach_intervals``); the passes keep every row's
uniformity term and every query's rank anyway, so the bootstrap computes nothing quadratic.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    import gapscope.analysis.orchestrator
    from gapscope import EmbeddingSet, analyze

    rng = np.random.default_rng(0)
    content = rng.normal(size=(args.n, args.dim))
    image = (
        content + 2.0 * rng.normal(size=args.dim) + 0.8 * rng.normal(size=(args.n, args.dim))
    ).astype(np.float32)
    text = (
        content - 2.0 * rng.normal(size=args.dim) + 0.8 * rng.normal(size=(args.n, args.dim))
    ).astype(np.float32)
    data = EmbeddingSet.from_arrays(
        {"image": image, "text": text}, labels=rng.integers(0, 100, size=args.n)
    )

    # Time the resampling stage where analyze calls it.
    stage: list[float] = []
    module = sys.modules["gapscope.analysis.orchestrator"]
    original = gapscope.analysis.orchestrator.attach_intervals

    def timed(*a, **k):
        t0 = time.perf_counter()
        original(*a, **k)
        stage.append(time.perf_counter() - t0)

    module.attach_intervals = timed

    runs: dict[str, list[tuple[float, float]]] = {"plain": [], "bootstrap": []}
    for _ in range(args.repeat):
        for name, boot in (("plain", None), ("bootstrap", args.bootstrap)):
            wall, cpu = time.perf_counter(), time.process_time()
            analyze(data, device="cpu", bootstrap=boot)
            runs[name].append((time.perf_counter() - wall, time.process_time() - cpu))

    print(f"n={args.n} d={args.dim} B={args.bootstrap} repeat={args.repeat}")
    for name, values in runs.items():
        wall = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        print(f"{name:10s} wall {wall:7.1f} s   cpu {cpu:7.1f} s")
    plain = statistics.median(v[0] for v in runs["plain"])
    resampling = statistics.median(stage)
    print(
        f"resampling ({args.bootstrap} resamples): {resampling:.2f} s = "
        f"{100 * resampling / plain:.1f}% of the plain wall time"
    )


if __name__ == "__main__":
    main()
