"""How the width of a float32 product changes its speed: ``Q x d`` queries against chunks of
``width`` keys, in GFLOP/s, each width as a ratio to a power-of-two width measured in the same
run.

Sampled uniformity multiplies the sampled queries by every key a chunk at a time
(``gapscope.engine.blocks.key_chunk_columns``); this shows why the chunks are a multiple of
1,024 keys wide. A width that is not a multiple of 32 is also timed as two products (the
aligned keys, then the rest) into the same buffer: that it is no faster says the cost is the
row stride of the output, not the width of the product; it is timed a third way too, into
the score buffers of the passes (rows 32 floats apart). The keys
are the same random rows for every width; each width is run ``--repeats`` times and the best
run is reported.

    python benchmarks/bench_product_width.py --queries 2000 --widths 16384 16777 2048 2000 20001
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from gapscope.engine.unit_rows import score_buffer


def gflops(
    queries: torch.Tensor,
    keys: torch.Tensor,
    width: int,
    repeats: int,
    *,
    split: bool = False,
    aligned_rows: bool = False,
) -> float:
    """Best GFLOP/s of ``queries @ chunk^T`` over the whole chunks of ``width`` keys into a
    ``(Q, width)`` buffer. With ``split``, the keys beyond the last multiple of 32 are a
    second product into the same buffer (is the cost the width of the product?); with
    ``aligned_rows``, the buffer is ``gapscope.engine.unit_rows.score_buffer``'s view whose
    rows start 32 floats apart (is it the row stride of the output?)."""
    n = keys.shape[0] - keys.shape[0] % width
    if aligned_rows:
        out = score_buffer(queries.shape[0], width, torch.device("cpu"))
    else:
        out = torch.empty((queries.shape[0], width), dtype=torch.float32)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for start in range(0, n, width):
            chunk = keys[start : start + width]
            aligned = width - width % 32
            if split and aligned:
                torch.mm(queries, chunk[:aligned].T, out=out[:, :aligned])
                torch.mm(queries, chunk[aligned:].T, out=out[:, aligned:])
            else:
                torch.mm(queries, chunk.T, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * queries.shape[0] * n * queries.shape[1] / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--keys", type=int, default=65536 * 2)
    parser.add_argument("--widths", type=int, nargs="+", default=[16384, 16777, 4096, 2048])
    parser.add_argument("--baseline", type=int, default=16384, help="the width ratios are to")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    gen = torch.Generator().manual_seed(0)
    queries = torch.randn((args.queries, args.dim), generator=gen)
    keys = torch.randn((args.keys, args.dim), generator=gen)
    base = gflops(queries, keys, args.baseline, args.repeats)
    rows = [{"width": args.baseline, "gflops": base, "ratio": 1.0}]
    print(f"width {args.baseline:>7}: {base:6.1f} GFLOP/s (baseline)")
    for width in args.widths:
        if width == args.baseline:
            continue
        rate = gflops(queries, keys, width, args.repeats)
        row = {"width": width, "gflops": rate, "ratio": rate / base}
        line = f"width {width:>7}: {rate:6.1f} GFLOP/s ({rate / base:.2f}x)"
        if width % 32:
            split = gflops(queries, keys, width, args.repeats, split=True)
            row.update(split_gflops=split, split_ratio=split / base)
            strided = gflops(queries, keys, width, args.repeats, aligned_rows=True)
            row.update(aligned_rows_gflops=strided, aligned_rows_ratio=strided / base)
            line += f", split at a multiple of 32: {split:6.1f} GFLOP/s ({split / base:.2f}x)"
            line += f", into aligned rows: {strided:6.1f} GFLOP/s ({strided / base:.2f}x)"
        rows.append(row)
        print(line)
    if args.json:
        threads = torch.get_num_threads()
        machine = f"{platform.machine()}, {threads} threads, torch {torch.__version__}"
        report = {"queries": args.queries, "dim": args.dim, "machine": machine, "widths": rows}
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
