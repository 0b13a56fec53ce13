"""Time the O(n d) scans of an analysis made in lanes, against the same scans made in turn.

Writes ``--n`` pairs of ``--dim``-dimensional float16 rows (two ``.npy`` files, memory-mapped
as ``analyze`` reads a store, every page read once first so both ways read from the page
cache) and times, in this one process, each scan three ways:

* **one thread, every BLAS thread** (the baseline): the slices made in turn, numpy's BLAS
  with its own thread count (what a scan did before its slices ran in lanes);
* **one thread, one BLAS thread**: the slices made in turn with numpy's BLAS on one thread
  (what a scan does now where it cannot run lanes: one thread, or lanes' buffers beyond
  their budget);
* **lanes**: the slices made in lanes, a lane a thread, each with one BLAS thread (what one
  process does now on a CPU with several threads).

The scans: the validating read of a modality with its raw norms, unit-row sums and raw
moments (MIR's covariance), the paired cosines, MIR's column medians (the radix select,
counted in lanes) and the scatter of the unit rows (the gap direction and the effective
rank). Every figure is the median of ``--repeat`` runs and a ratio to the baseline of the
same scan; the results of the three ways are checked bit for bit.

    python benchmarks/bench_scans.py --n 1000000 --dim 512
    python benchmarks/bench_scans.py --n 200000 --json benchmarks/results/scans_200k.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib.format import open_memmap

from gapscope.analysis.context import _ReadStats
from gapscope.engine import column_medians as cm
from gapscope.engine import distributed, pipelining
from gapscope.engine.blocks import resolve_scan_rows
from gapscope.engine.moments import unit_scatter
from gapscope.engine.validation import check_embeddings
from gapscope.metrics.cosine import paired_cosine


def _write(path: Path, n: int, dim: int, seed: int) -> np.ndarray:
    rows = open_memmap(path, mode="w+", dtype=np.float16, shape=(n, dim))
    rng = np.random.default_rng(seed)
    for start in range(0, n, 65536):
        stop = min(n, start + 65536)
        rows[start:stop] = rng.standard_normal((stop - start, dim)) * 0.05
    rows.flush()
    del rows
    return np.load(path, mmap_mode="r")


@contextlib.contextmanager
def _way(name: str) -> Iterator[None]:
    """Run the scans inside as ``name`` says (see the module's docstring)."""
    with contextlib.ExitStack() as stack:
        if name != "lanes":
            # No lane fits a budget of one byte: the slices are made in turn.
            stack.enter_context(_patched(pipelining, "LANE_BYTES", 1))
        if name == "one thread, every BLAS thread":
            stack.enter_context(_patched(distributed, "one_blas_thread", contextlib.nullcontext))
        yield


@contextlib.contextmanager
def _patched(module: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


def _validating_read(rows: np.ndarray) -> list[np.ndarray]:
    n, d = rows.shape
    slice_rows = resolve_scan_rows(None, d)
    stats = _ReadStats(n, d, min(slice_rows, n), sums=True, moments=True)
    check_embeddings(rows, "image", min_rows=2, slice_rows=slice_rows, stats=stats)
    moments = stats.moments.result() if stats.moments is not None else None
    sums = stats.unit.result() if stats.unit is not None else None
    assert moments is not None and sums is not None
    return [stats.norms.norms, sums.total, moments.mean, moments.scatter]


def _scans(image: np.ndarray, text: np.ndarray) -> dict[str, Callable[[], list[np.ndarray]]]:
    def cosines() -> list[np.ndarray]:
        c = paired_cosine(image, text)
        return [np.array([c.paired, c.unpaired, c.paired_total])]

    return {
        "validating read (norms, unit sums, raw moments)": lambda: _validating_read(image),
        "paired cosines": cosines,
        "column medians (radix select)": lambda: [cm.column_medians(image)],
        "unit rows' scatter": lambda: list(unit_scatter(image)),
    }


WAYS = ("one thread, every BLAS thread", "one thread, one BLAS thread", "lanes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    print(f"n = {args.n:,}, d = {args.dim}, float16, {torch.get_num_threads()} threads")
    results: dict[str, Any] = {"n": args.n, "dim": args.dim, "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        image = _write(Path(tmp) / "image.npy", args.n, args.dim, 0)
        text = _write(Path(tmp) / "text.npy", args.n, args.dim, 1)
        for rows in (image, text):
            float(np.asarray(rows[:: max(1, 4096 // rows.itemsize // args.dim)]).sum())
        for scan, run in _scans(image, text).items():
            times: dict[str, float] = {}
            made: dict[str, bytes] = {}
            for way in WAYS:
                seconds = []
                for _ in range(args.repeat):
                    with _way(way):
                        start = time.perf_counter()
                        out = run()
                        seconds.append(time.perf_counter() - start)
                times[way] = statistics.median(seconds)
                made[way] = b"".join(np.ascontiguousarray(a).tobytes() for a in out)
            base = times[WAYS[0]]
            same = made[WAYS[1]] == made[WAYS[2]]
            print(f"{scan}:")
            for way in WAYS:
                print(f"  {way:<31} {times[way]:6.2f} s  {times[way] / base:4.2f}x")
            print(
                f"  lanes and one BLAS thread give the same bits: {same}; "
                f"the baseline too: {made[WAYS[0]] == made[WAYS[2]]}"
            )
            if not same:
                raise SystemExit(f"{scan}: lanes differ from one thread")
            results[scan] = {
                "seconds": times,
                "same_bits": same,
                "baseline_same_bits": made[WAYS[0]] == made[WAYS[2]],
            }
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
