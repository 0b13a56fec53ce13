"""The default analysis of rows whose scores sit close together, with labels that do not
follow them: where the ranking's exact scores dominate.

    python benchmarks/bench_dense_scores.py --n 3000 [--dim 512] [--classes 100] [--compare]

The data of ``bench_bootstrap.py``: ``content + 2 m + 0.8 noise`` (image) and
``content - 2 m' + 0.8 noise`` (text) for shared offsets ``m``, ``m'``, so all cosines of a
modality sit near 0.7, and random labels of ``--classes`` classes. Prints the seconds at
which each stage of the analysis starts and the total.

With ``--compare`` the analysis runs twice in this process: first with every key inside a
window scored pair by pair (``ordered_scores.DENSE_SHARE`` set to infinity: how the ranking
resolved windows before the float64 products), then as shipped; it prints both totals, their
ratio and whether the two reports' JSON is identical. It also times, on this data, one
exact score gathered pair by pair against one entry of a float64 product (the trade-off
``DENSE_SHARE`` sets).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _data(n: int, d: int, classes: int):  # type: ignore[no-untyped-def]
    from gapscope import EmbeddingSet

    rng = np.random.default_rng(0)
    content = rng.normal(size=(n, d))
    image = content + 2.0 * rng.normal(size=d) + 0.8 * rng.normal(size=(n, d))
    text = content - 2.0 * rng.normal(size=d) + 0.8 * rng.normal(size=(n, d))
    return EmbeddingSet.from_arrays(
        {"image": image.astype(np.float32), "text": text.astype(np.float32)},
        labels=rng.integers(0, classes, size=n),
    )


def _analysis(data, label: str) -> tuple[float, str]:  # type: ignore[no-untyped-def]
    from gapscope import analyze

    start = time.perf_counter()
    report = analyze(
        data,
        device="cpu",
        progress=lambda stage: print(
            f"{label}{time.perf_counter() - start:7.1f} s  {stage}", flush=True
        ),
    )
    seconds = time.perf_counter() - start
    print(f"{label}total {seconds:.1f} s", flush=True)
    return seconds, json.dumps(report.to_dict(), sort_keys=True)


def _unit_costs(data) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Seconds per exact score gathered pair by pair, and per entry of a float64 product."""
    import torch

    from gapscope.engine.unit_rows import UnitRows, exact_scores

    unit = UnitRows(data.embeddings["image"])
    n = unit.shape[0]
    rng = np.random.default_rng(1)
    pairs = 200_000
    rows, keys = rng.integers(0, n, size=pairs), rng.integers(0, n, size=pairs)
    start = time.perf_counter()
    exact_scores(unit, rows, unit, keys)
    per_pair = (time.perf_counter() - start) / pairs
    block = unit.take(np.arange(min(n, 1024))).double()
    every = unit.take(np.arange(n)).double()
    start = time.perf_counter()
    for _ in range(3):
        torch.mm(block, every.T)
    per_entry = (time.perf_counter() - start) / (3 * block.shape[0] * n)
    return per_pair, per_entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--compare", action="store_true", help="also time pair-by-pair scores")
    parser.add_argument("--share", type=float, help="DENSE_SHARE to try instead of the shipped")
    args = parser.parse_args()

    from gapscope.engine import ordered_scores

    if args.share is not None:
        ordered_scores.DENSE_SHARE = args.share
    data = _data(args.n, args.dim, args.classes)
    if not args.compare:
        _analysis(data, "")
        return
    # A small analysis first, so that neither timed run pays for the first imports.
    _analysis(_data(200, args.dim, args.classes), "warm-up       ")
    shipped_share = ordered_scores.DENSE_SHARE
    ordered_scores.DENSE_SHARE = float("inf")
    before, before_json = _analysis(data, "pair by pair  ")
    ordered_scores.DENSE_SHARE = shipped_share
    after, after_json = _analysis(data, "products      ")
    per_pair, per_entry = _unit_costs(data)
    print(f"pair by pair {before:.1f} s, with products {after:.1f} s: {before / after:.2f}x")
    print(f"JSON identical: {before_json == after_json}")
    print(
        f"one exact score pair by pair {per_pair * 1e6:.2f} us, one float64 product entry "
        f"{per_entry * 1e9:.1f} ns ({per_pair / per_entry:.0f} entries a pair)"
    )


if __name__ == "__main__":
    main()
