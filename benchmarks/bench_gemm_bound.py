"""Benchmark the O(n^2) part of analyze against the GEMM lower bound, measured in the same run.

The lower bound is the time of the three products the metrics need (X X^T, Y Y^T, X Y^T, each
n x n x d float32), done in blocks of the same size on the same device, with nothing else.
Against it: the passes an analysis runs (:mod:`gapscope.engine.passes`: ``modality_pass`` of
each modality, uniformity with row terms and intra-modal retrieval with class labels, and one
``cross_pass`` for both cross-modal directions). ``--skip-per-metric`` is accepted and ignored
(there is one engine: the per-metric functions run the same passes).

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

from gapscope.engine.blocks import similarity_block_rows
from gapscope.engine.normalization import normalize_rows
from gapscope.engine.passes import cross_pass, modality_pass


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
    """Seconds for X X^T, Y Y^T and X Y^T in row blocks of ``block``, results discarded (on a
    GPU, up to the device's completion of the last product)."""
    cuda = x.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(x.device)
    t0 = time.perf_counter()
    for a, b in ((x, x), (y, y), (x, y)):
        out = torch.empty((block, b.shape[0]), dtype=torch.float32, device=a.device)
        for start in range(0, a.shape[0], block):
            rows = a[start : start + block]
            torch.mm(rows, b.T, out=out[: rows.shape[0]])
    if cuda:
        torch.cuda.synchronize(x.device)
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
        block = args.block_size or similarity_block_rows(n)
        ux = normalize_rows(image, device=args.device)
        uy = normalize_rows(text, device=args.device)
        bound = gemm_bound(ux, uy, block)
        # The same products in 2048-row blocks: what BLAS reaches with larger blocks.
        bound_2048 = gemm_bound(ux, uy, 2048)

        t0 = time.perf_counter()
        for u in (ux, uy):
            modality_pass(u, labels, k=(1, 5, 10), device=args.device, block_size=args.block_size)
        cross_pass(
            ux, uy, groups, groups, k=(1, 5, 10), device=args.device, block_size=args.block_size
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
        rows.append(row)
        print(
            f"n={n:>7} d={args.dim} block={block:>4}: GEMM bound {bound:8.1f} s | fused "
            f"{fused:8.1f} s ({fused / bound:.2f}x; {fused / bound_2048:.2f}x the 2048-row-block "
            f"bound {bound_2048:.1f} s)",
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
