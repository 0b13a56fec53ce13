"""How often the bootstrap intervals of the gap and the centroid cosine cover the population
value, BCa against percentile, over the same draws.

Each repetition draws ``--pairs`` pairs in ``--dim`` dimensions,
``x = unit(s e0 + z + 0.5 eps)`` and ``y = unit(s e1 + z + 0.5 eps')`` (``z`` shared by a
pair, ``eps`` and ``eps'`` independent standard normal), and analyses them with
``--bootstrap`` resamples at ``--confidence``, once with each ``--interval``. The population
values come from ``--population`` pairs drawn the same way (their Monte Carlo error is far
below the coverage's). The coverage's own error is about ``sqrt(c (1 - c) / reps)``.

Run: ``python benchmarks/bench_bootstrap_coverage.py --reps 400 --json cov.json``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from gapscope import analyze

KINDS = ("bca", "percentile")
METRICS = ("gap", "centroid_cosine")


def draw(rng: np.random.Generator, shift: float, n: int, dim: int) -> tuple[np.ndarray, ...]:
    z = rng.normal(size=(n, dim))
    x = z + 0.5 * rng.normal(size=(n, dim))
    y = z + 0.5 * rng.normal(size=(n, dim))
    x[:, 0] += shift
    y[:, 1] += shift
    return (
        x / np.linalg.norm(x, axis=1, keepdims=True),
        y / np.linalg.norm(y, axis=1, keepdims=True),
    )


def population(shift: float, n: int, dim: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    sums = [np.zeros(dim), np.zeros(dim)]
    done = 0
    while done < n:
        b = min(1_000_000, n - done)
        x, y = draw(rng, shift, b, dim)
        sums[0] += x.sum(0)
        sums[1] += y.sum(0)
        done += b
    mx, my = sums[0] / n, sums[1] / n
    return {
        "gap": float(np.linalg.norm(mx - my)),
        "centroid_cosine": float(mx @ my / np.linalg.norm(mx) / np.linalg.norm(my)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shifts", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--resamples", type=int, default=200)
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--population", type=int, default=2_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    started = time.perf_counter()
    rows = []
    for shift in args.shifts:
        truth = population(shift, args.population, args.dim, args.seed + 1)
        rng = np.random.default_rng(args.seed)
        covered = {kind: dict.fromkeys(METRICS, 0) for kind in KINDS}
        truth_below = {kind: dict.fromkeys(METRICS, 0) for kind in KINDS}
        null = {kind: dict.fromkeys(METRICS, 0) for kind in KINDS}
        for rep in range(args.reps):
            x, y = draw(rng, shift, args.pairs, args.dim)
            for kind in KINDS:
                pair = analyze(
                    {"image": x, "text": y},
                    metrics="gap",
                    bootstrap=args.resamples,
                    confidence=args.confidence,
                    interval=kind,
                    seed=rep,
                    device="cpu",
                ).pairs["image-text"]
                for metric in METRICS:
                    bounds = pair[f"{metric}_ci"]
                    if bounds is None:
                        null[kind][metric] += 1
                        continue
                    covered[kind][metric] += bounds[0] <= truth[metric] <= bounds[1]
                    truth_below[kind][metric] += truth[metric] < bounds[0]
        row = {"shift": shift, "population": truth}
        for kind in KINDS:
            row[kind] = {
                metric: {
                    "coverage": covered[kind][metric] / args.reps,
                    "truth_below": truth_below[kind][metric] / args.reps,
                    "null": null[kind][metric] / args.reps,
                }
                for metric in METRICS
            }
        rows.append(row)
        print(
            f"s = {shift:g} (gap {truth['gap']:.3f}, centroid cosine "
            f"{truth['centroid_cosine']:.3f}): "
            + "; ".join(
                f"{kind} gap {row[kind]['gap']['coverage']:.3f}, centroid cosine "
                f"{row[kind]['centroid_cosine']['coverage']:.3f}"
                for kind in KINDS
            ),
            flush=True,
        )
    result = {"params": vars(args) | {"json": None}, "rows": rows}
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(f"{result['seconds']} s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
