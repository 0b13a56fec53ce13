"""Time the conversions at the start of every read of float16 rows, against numpy's cast.

Writes ``--n`` x ``--dim`` float16 rows to a ``.npy`` file, memory-maps it (as ``analyze``
reads a store) and times, slice by slice over every row, in this one process:

* the baseline: ``np.array(slice, dtype=...)``, a fresh array a slice, what a read did before
  ``gapscope.engine.widening``;
* ``widen`` into a fresh array, and into one :class:`WideningBuffer` reused by every slice;
* for float64 slices, a float64 ``X^T X`` of each slice right after the conversion (what MIR's
  moments do), since a conversion by torch leaves its worker threads spinning into numpy's BLAS;
* float16 column medians (:func:`gapscope.metrics.mir._column_medians`, counted by bit
  pattern) against ``numpy.median`` of float64 copies of 64 columns at a time.

Every figure is a ratio to the baseline measured in the same run. The values are checked
equal (the conversions are exact).

    python benchmarks/bench_widening.py --n 1000000 --dim 512
    python benchmarks/bench_widening.py --n 200000 --json benchmarks/results/widening.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from gapscope.engine.widening import WideningBuffer, widen
from gapscope.metrics.mir import _column_medians

HERE = Path(__file__).resolve().parents[1]


def _timed(step: Callable[[], object]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def _slices(rows: np.ndarray, size: int) -> list[np.ndarray]:
    return [rows[s : s + size] for s in range(0, rows.shape[0], size)]


def _conversions(rows: np.ndarray, target: type[np.floating], size: int) -> dict[str, float]:
    parts = _slices(rows, size)
    buffer = WideningBuffer(target)
    first = parts[0]
    assert np.array_equal(widen(first, target), np.array(first, dtype=target))
    times = {
        "numpy cast, fresh array": _timed(
            lambda: [np.array(p, dtype=target, order="C") for p in parts]
        ),
        "widen, fresh array": _timed(lambda: [widen(p, target) for p in parts]),
        "widen, reused buffer": _timed(lambda: [buffer(p) for p in parts]),
    }
    if target == np.float64:

        def gram(convert: Callable[[np.ndarray], np.ndarray]) -> None:
            for p in parts:
                block = convert(p)
                _ = block.T @ block

        gram_buffer = WideningBuffer(np.float64)

        def by_torch(p: np.ndarray) -> np.ndarray:
            out = np.empty(p.shape, dtype=np.float64)
            torch.from_numpy(out).copy_(torch.from_numpy(np.array(p)))
            return out

        times["numpy cast + X^T X"] = _timed(lambda: gram(lambda p: np.array(p, np.float64)))
        times["widen (numpy, reused) + X^T X"] = _timed(lambda: gram(gram_buffer))
        times["torch copy (fresh) + X^T X"] = _timed(lambda: gram(by_torch))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rows.npy"
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(args.n, args.dim))
        for s in range(0, args.n, 65536):
            stop = min(args.n, s + 65536)
            out[s:stop] = rng.standard_normal((stop - s, args.dim), dtype=np.float32)
        out.flush()
        del out
        rows = np.load(path, mmap_mode="r")
        _ = [np.asarray(p).sum() for p in _slices(rows, 65536)]  # into the page cache

        results: dict[str, dict[str, float]] = {
            # Slices as the readers take them: 16,384 keys a product chunk (float32) and
            # 10,922 rows a scan slice of 512 columns (float64).
            "float32, slices of 16384": _conversions(rows, np.float32, 16384),
            "float64, slices of 10922": _conversions(rows, np.float64, 10922),
        }
        expected, ours = np.empty(args.dim), np.empty(args.dim)

        def numpy_medians() -> None:
            for c in range(0, args.dim, 64):
                columns = np.asarray(rows[:, c : c + 64], dtype=np.float64)
                expected[c : c + 64] = np.median(columns, axis=0)

        medians = {
            "numpy.median, 64 float64 columns at a time": _timed(numpy_medians),
            "counted by bit pattern": _timed(lambda: ours.__setitem__(..., _column_medians(rows))),
        }
        assert np.array_equal(ours, expected)
        results["column medians"] = medians

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True
    ).stdout.strip()
    print(f"{args.n} x {args.dim} float16 rows, memory-mapped; commit {commit}")
    for name, times in results.items():
        baseline = next(iter(times.values()))
        print(f"\n{name}")
        for label, seconds in times.items():
            print(f"  {label:34s} {seconds:7.2f} s  {seconds / baseline:5.2f}x")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {"commit": commit, "n": args.n, "dim": args.dim, "seconds": results}, indent=2
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
