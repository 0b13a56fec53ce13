"""Time MIR's column medians: the radix select over rows read whole, against slices of columns.

Writes ``--n`` x ``--dim`` rows of each ``--dtypes`` to a ``.npy`` file, memory-maps it (as
``analyze`` reads a store) and times, in this one process, after one read that puts every
page in the page cache:

* the baseline: ``numpy.median`` of float64 copies of slices of columns that fit the memory
  budget (``gapscope.engine.column_medians._sliced_medians``, what float32 and float64 rows
  took before the radix select; float16 rows were counted by bit pattern, but in the same
  slices of columns);
* :func:`gapscope.engine.column_medians.column_medians`, which takes the radix select when it
  reads the rows fewer times.

Each is also run once over a wrapper that counts the rows it reads: a slice of columns reads
every page of a row-major file, so "reads" is how many times the whole file is read. Every
figure is the median of ``--repeat`` runs and a ratio to the baseline of the same dtype; the
medians are checked equal.

    python benchmarks/bench_column_medians.py --n 1000000 --dim 512
    python benchmarks/bench_column_medians.py --ties   # where both read the rows as often
    python benchmarks/bench_column_medians.py --n 1000000 \
        --json benchmarks/results/column_medians_1m.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.format import open_memmap

from gapscope.engine import column_medians as cm

HERE = Path(__file__).resolve().parents[1]


class _Counted:
    """Rows that count how many of them are read, whatever the columns."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.rows_read = array, 0
        self.shape, self.dtype = array.shape, array.dtype

    def __getitem__(self, key: Any) -> np.ndarray:
        rows = key[0] if isinstance(key, tuple) else key
        self.rows_read += len(range(*rows.indices(self.shape[0])))
        return self.array[key]


def _write(path: Path, n: int, dim: int, dtype: type, seed: int) -> np.ndarray:
    rows = open_memmap(path, mode="w+", dtype=dtype, shape=(n, dim))
    rng = np.random.default_rng(seed)
    for start in range(0, n, 65536):
        stop = min(n, start + 65536)
        # Encoder-like columns: offsets and scales that differ from column to column.
        part = rng.normal(size=(stop - start, dim)) * np.linspace(0.1, 2.0, dim)
        rows[start:stop] = (part + np.linspace(-1.0, 1.0, dim)).astype(dtype)
    rows.flush()
    del rows
    return np.load(path, mmap_mode="r")


def _median_time(
    method: Callable[[Any], np.ndarray], rows: np.ndarray, repeat: int
) -> tuple[float, np.ndarray]:
    times, result = [], np.empty(0)
    for _ in range(repeat):
        start = time.perf_counter()
        result = method(rows)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), result


def _reads(method: Callable[[Any], np.ndarray], rows: np.ndarray) -> float:
    counted = _Counted(rows)
    method(counted)
    return counted.rows_read / rows.shape[0]


def _ties(dim: int, repeat: int) -> None:
    """Both paths, best of ``repeat``, at row counts where they read the rows equally often
    (what ``_RADIX_ROWS`` decides)."""
    budget = cm.MEDIAN_BUDGET_BYTES
    rng = np.random.default_rng(0)
    print(
        f"arrays in memory, {dim} columns, best of {repeat}; ties go to the slices below "
        f"{cm._RADIX_ROWS} rows"
    )
    for dtype, sizes in ((np.float16, (4096, 16384, 32768, 65536)), (np.float32, (70000, 131072))):
        for n in sizes:
            rows = rng.normal(size=(n, dim)).astype(dtype)
            radix = min(
                _median_time(lambda a: cm._RadixSelect(a, budget).medians(), rows, 1)[0]
                for _ in range(repeat)
            )
            sliced = min(
                _median_time(lambda a: cm._sliced_medians(a, budget), rows, 1)[0]
                for _ in range(repeat)
            )
            reads = cm._radix_reads(n, dim, rows.itemsize, budget), cm._slice_reads(n, dim, budget)
            print(
                f"  {np.dtype(dtype).name:8s} n = {n:7d}  reads {reads[0]} / {reads[1]}"
                f"  radix select {radix:6.3f} s  slices {sliced:6.3f} s  {radix / sliced:5.2f}x"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--dtypes", default="float16,float32")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--ties",
        action="store_true",
        help="instead: both paths on arrays in memory where they read the rows as often",
    )
    args = parser.parse_args()
    if args.ties:
        _ties(args.dim, args.repeat)
        return

    budget = cm.MEDIAN_BUDGET_BYTES
    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(args.dtypes.split(",")):
            dtype = np.dtype(name).type
            rows = _write(Path(tmp) / f"{name}.npy", args.n, args.dim, dtype, i)
            _ = [np.array(rows[s : s + 65536]) for s in range(0, args.n, 65536)]
            methods: dict[str, Callable[[Any], np.ndarray]] = {
                "slices of columns (numpy.median)": lambda a: cm._sliced_medians(a, budget),
                "column_medians": lambda a: cm.column_medians(a, budget),
            }
            found = {}
            results[name] = {}
            for label, method in methods.items():
                seconds, found[label] = _median_time(method, rows, args.repeat)
                results[name][label] = {"seconds": seconds, "reads": _reads(method, rows)}
            first, second = found.values()
            assert np.array_equal(first, second), "the medians differ"
            del rows

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True
    ).stdout.strip()
    print(f"{args.n} x {args.dim} rows, memory-mapped, budget {budget >> 20} MiB; commit {commit}")
    for name, timings in results.items():
        baseline = next(iter(timings.values()))["seconds"]
        print(f"\n{name}")
        for label, t in timings.items():
            print(
                f"  {label:34s} {t['seconds']:7.2f} s  {t['seconds'] / baseline:5.2f}x"
                f"  {t['reads']:6.1f} reads of the rows"
            )
    payload = {"commit": commit, "n": args.n, "dim": args.dim, "repeat": args.repeat}
    payload.update(budget_bytes=budget, results=results)
    if args.json is not None:
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
