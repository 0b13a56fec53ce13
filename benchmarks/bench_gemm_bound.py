"""Benchmark the O(n^2) part of analyze against the GEMM lower bound, measured in the same run.

The lower bound is the time of the three products the metrics need (X X^T, Y Y^T, X Y^T, each
n x n x d float32), done in blocks of the same size on the same device, with nothing else.
Against it: the fused pass (:func:`gapscope.engine.passes.fused_pair_pass`: uniformity with row
terms, intra-modal retrieval with class labels, both cross-modal directions) and, unless
``--skip-per-metric``, the per-metric functions analyze called before (six products).

    python benchmarks/bench_gemm_bound.py --n 10000 50000 --dim 512 --json gemm_bound.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from gapscope.engine.passes import auto_block_size, fused_pair_pass
from gapscope.engine.validation import normalize_rows
from gapscope.metrics.retrieval import cross_modal_retrieval, intra_modal_retrieval
from gapscope.metrics.uniformity import uniformity_with_row_terms


def make_data(n: int, dim: int, classes: int, seed: int = 0):
    """Paired image/text rows around shared class centres (as benchmarks/bench_analyze.py)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    centres = rng.normal(size=(classes, dim)).astype(np.float32)
    content = centres[labels] + rng.normal(size=(n, dim)).astype(np.float32)
    image = content + 2 + rng.normal(size=(n, dim)).astype(np.float32)
    text = content - 2 + rng.normal(size=(n, dim)).astype(np.float32)
    return image, text, labels


def gemm_bound(x: torch.Tensor, y: torch.Tensor, block: int) -> float:
    """Seconds for X X^T, Y Y^T and X Y^T in row blocks of ``block``, results discarded."""
    t0 = time.perf_counter()
    for a, b in ((x, x), (y, y), (x, y)):
        out = torch.empty((block, b.shape[0]), dtype=torch.float32, device=a.device)
        for start in range(0, a.shape[0], block):
            rows = a[start : start + block]
            torch.mm(rows, b.T, out=out[: rows.shape[0]])
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[10000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-per-metric", action="store_true")
    parser.add_argument(
        "--block-size",
        type=int,
        default=None,
        help="rows a block for the bound and the fused pass (default: analyze's)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    rows = []
    for n in args.n:
        image, text, labels = make_data(n, args.dim, args.classes)
        groups = np.arange(n)
        block = args.block_size or auto_block_size(n)
        ux = normalize_rows(image, device=args.device)
        uy = normalize_rows(text, device=args.device)
        bound = gemm_bound(ux, uy, block)
        # The same products in 2048-row blocks: what BLAS reaches with larger blocks here.
        bound_2048 = gemm_bound(ux, uy, 2048)

        t0 = time.perf_counter()
        fused_pair_pass(
            ux,
            uy,
            groups,
            groups,
            labels,
            labels,
            k=(1, 5, 10),
            row_terms=True,
            per_query=True,
            device=args.device,
            block_size=args.block_size,
        )
        fused = time.perf_counter() - t0
        row = {
            "n": n,
            "dim": args.dim,
            "block": block,
            "gemm_bound_s": bound,
            "fused_s": fused,
            "fused_over_bound": fused / bound,
            "gemm_bound_2048_rows_s": bound_2048,
            "fused_over_bound_2048_rows": fused / bound_2048,
        }
        if not args.skip_per_metric:
            t0 = time.perf_counter()
            kw = {"device": args.device, "per_query": True, "k": (1, 5, 10)}
            for u in (ux, uy):
                uniformity_with_row_terms(u, device=args.device)
                intra_modal_retrieval(u, labels, **kw)
            cross_modal_retrieval(ux, uy, groups, groups, **kw)
            cross_modal_retrieval(uy, ux, groups, groups, **kw)
            row["per_metric_s"] = time.perf_counter() - t0
            row["per_metric_over_bound"] = row["per_metric_s"] / bound
            row["speedup_fused_vs_per_metric"] = row["per_metric_s"] / fused
        rows.append(row)
        print(
            f"n={n:>7} d={args.dim} block={block:>4}: GEMM bound {bound:8.1f} s | fused "
            f"{fused:8.1f} s ({fused / bound:.2f}x; {fused / bound_2048:.2f}x the 2048-row-block "
            f"bound {bound_2048:.1f} s)"
            + (
                ""
                if args.skip_per_metric
                else f" | per-metric {row['per_metric_s']:8.1f} s"
                f" ({row['per_metric_over_bound']:.2f}x)"
            ),
            flush=True,
        )
    result = {
        "machine": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "device": args.device,
        "rows": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
