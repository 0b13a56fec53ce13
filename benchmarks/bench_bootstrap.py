"""What ``--bootstrap B`` costs on top of a plain ``gapscope analyze``, measured in one process.

    python benchmarks/bench_bootstrap.py --n 20000 --dim 512 --bootstrap 200 [--repeat 2]

Generates n image/text pairs (d dims, 100 label classes), then alternates a plain analysis and
one with ``--bootstrap B`` of each kind of interval (BCa and percentile; all metrics, CPU)
``--repeat`` times, so that load from other processes hits them alike, and prints the median
wall and CPU seconds of each. It also times the bootstrap's own stage (``attach_intervals``:
the resampling, and for BCa the jackknife); the passes keep every row's uniformity term and
every query's rank anyway, so the bootstrap computes nothing quadratic.
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
    stage: dict[str, list[float]] = {"percentile": [], "bca": []}
    module = sys.modules["gapscope.analysis.orchestrator"]
    original = gapscope.analysis.orchestrator.attach_intervals

    def timed(*a, **k):
        t0 = time.perf_counter()
        original(*a, **k)
        stage[k["interval"]].append(time.perf_counter() - t0)

    module.attach_intervals = timed

    runs: dict[str, list[tuple[float, float]]] = {"plain": [], "percentile": [], "bca": []}
    for _ in range(args.repeat):
        for name in runs:
            boot = None if name == "plain" else args.bootstrap
            kind = "bca" if name == "plain" else name
            wall, cpu = time.perf_counter(), time.process_time()
            analyze(data, device="cpu", bootstrap=boot, interval=kind)
            runs[name].append((time.perf_counter() - wall, time.process_time() - cpu))

    print(f"n={args.n} d={args.dim} B={args.bootstrap} repeat={args.repeat}")
    for name, values in runs.items():
        wall = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        print(f"{name:10s} wall {wall:7.1f} s   cpu {cpu:7.1f} s")
    plain = statistics.median(v[0] for v in runs["plain"])
    for kind, seconds in stage.items():
        median = statistics.median(seconds)
        print(
            f"intervals, {kind} ({args.bootstrap} resamples): {median:.2f} s = "
            f"{100 * median / plain:.1f}% of the plain wall time"
        )


if __name__ == "__main__":
    main()
