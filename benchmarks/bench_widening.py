"""Time the conversions at the start of every read of float16 rows, against numpy's cast.

Writes ``--n`` x ``--dim`` float16 rows to a ``.npy`` file, memory-maps it (as ``analyze``
reads a store) and times, slice by slice over every row, in this one process:

* the baseline: ``np.array(slice, dtype=...)``, a fresh array a slice, what a read did before
  ``gapscope.engine.widening``;
* ``widen`` into a fresh array, and into one :class:`WideningBuffer` reused by every slice;
* for float64 slices, a float64 ``X^T X`` of each slice right after the conversion (what MIR's
  moments do), since a conversion by torch leaves its worker threads spinning into numpy's BLAS;
* float16 column medians (:func:`gapscope.engine.column_medians.column_medians`, counted by bit
  pattern) against ``numpy.median`` of float64 copies of 64 columns at a time.

Every figure is the median of ``--repeat`` runs and a ratio to the baseline measured in the
same run (the first line of its group). The values are checked equal (the conversions are
exact).

    python benchmarks/bench_widening.py --n 1000000 --dim 512
    python benchmarks/bench_widening.py --n 200000 --json benchmarks/results/widening.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from gapscope.engine.column_medians import column_medians
from gapscope.engine.widening import WideningBuffer, widen

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

    def each(convert: Callable[[np.ndarray], object]) -> float:
        # One slice's result alive at a time, as in a read.
        return _timed(lambda: [convert(p) is None for p in parts])

    times = {
        "numpy cast, fresh array": each(lambda p: np.array(p, dtype=target, order="C")),
        "widen, fresh array": each(lambda p: widen(p, target)),
        "widen, reused buffer": each(buffer),
    }
    return times


def _conversions_then_gram(rows: np.ndarray, size: int) -> dict[str, float]:
    """Float64 slices each followed by ``X^T X`` in numpy (MIR's moments)."""
    parts = _slices(rows, size)
    buffer = WideningBuffer(np.float64)

    def by_torch(p: np.ndarray) -> np.ndarray:
        out = np.empty(p.shape, dtype=np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a read-only memory map, only read
            torch.from_numpy(out).copy_(torch.from_numpy(np.asarray(p)))
        return out

    def gram(convert: Callable[[np.ndarray], np.ndarray]) -> float:
        def run() -> None:
            for p in parts:
                block = convert(p)
                _ = block.T @ block

        return _timed(run)

    return {
        "numpy cast (fresh) + X^T X": gram(lambda p: np.array(p, np.float64)),
        "widen (numpy, reused buffer) + X^T X": gram(buffer),
        "torch copy (fresh) + X^T X": gram(by_torch),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
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
        os.sync()  # no write-back of the new file while the reads are timed
        rows = np.load(path, mmap_mode="r")
        # Every page in the page cache and mapped into this process, as in a second read.
        _ = [np.array(p, dtype=np.float32) for p in _slices(rows, 65536)]

        # Slices as the readers take them: 16,384 keys a product chunk (float32) and 10,922
        # rows a scan slice of 512 columns (float64). Each group runs --repeat times in turn;
        # the medians are reported.
        groups: dict[str, Callable[[], dict[str, float]]] = {
            "float32, slices of 16384": lambda: _conversions(rows, np.float32, 16384),
            "float64, slices of 10922": lambda: _conversions(rows, np.float64, 10922),
            "float64, slices of 10922, each then X^T X": lambda: _conversions_then_gram(
                rows, 10922
            ),
        }
        runs = [{name: group() for name, group in groups.items()} for _ in range(args.repeat)]
        results: dict[str, dict[str, float]] = {
            name: {
                label: float(np.median([run[name][label] for run in runs]))
                for label in runs[0][name]
            }
            for name in groups
        }
        expected, ours = np.empty(args.dim), np.empty(args.dim)

        def numpy_medians() -> None:
            for c in range(0, args.dim, 64):
                columns = np.asarray(rows[:, c : c + 64], dtype=np.float64)
                expected[c : c + 64] = np.median(columns, axis=0)

        medians = {
            "numpy.median, 64 float64 columns at a time": _timed(numpy_medians),
            "counted by bit pattern": _timed(lambda: ours.__setitem__(..., column_medians(rows))),
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
            print(f"  {label:44s} {seconds:7.2f} s  {seconds / baseline:5.2f}x")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "commit": commit,
                    "n": args.n,
                    "dim": args.dim,
                    "repeat": args.repeat,
                    "median_seconds": results,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
