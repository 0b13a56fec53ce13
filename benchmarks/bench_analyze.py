"""Benchmark ``gapscope analyze`` against a naive full-matrix implementation, in the same run.

The naive baseline is what the papers' reference code does: build each n x n similarity matrix
in memory, ``torch.pdist`` for uniformity, ``torch.topk`` for recall@K and a full sort of each row
for mAP. gapscope computes the same numbers block by block.

    python benchmarks/bench_analyze.py --n 20000 --dim 512 [--json out.json] [--skip-naive]
    python benchmarks/bench_analyze.py --n 32000 --naive-only --memory-limit-gib 24

Prints wall time and peak memory (max RSS of a fresh process) of each, and their ratio.
``--memory-limit-gib`` caps the naive process's address space (``RLIMIT_AS``), so the size at
which it runs out of memory is found without swapping the machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
from _runs import run_measured

NAIVE = r"""
import sys, time, numpy as np, torch
x = np.load(sys.argv[1]); y = np.load(sys.argv[2]); labels = np.load(sys.argv[3])
t0 = time.perf_counter()
x = torch.nn.functional.normalize(torch.from_numpy(x), dim=1)
y = torch.nn.functional.normalize(torch.from_numpy(y), dim=1)
gap = (x.mean(0) - y.mean(0)).norm()
for z in (x, y):
    torch.pdist(z).pow(2).mul(-2).exp().mean().log()   # uniformity, Wang & Isola's code
    s = z @ z.T
    cone = (s.sum() - s.diagonal().sum()) / (len(z) * (len(z) - 1))
    s.fill_diagonal_(-float("inf"))
    order = s.argsort(dim=1, descending=True, stable=True)   # intra-modal mAP needs full ranks
    rel = torch.from_numpy(labels)[order] == torch.from_numpy(labels)[:, None]
    prec = rel.cumsum(1) / torch.arange(1, rel.shape[1] + 1)
    ap = (prec * rel).sum(1) / rel.sum(1).clamp(min=1)
    del s, order, rel, prec
s = x @ y.T
for sim in (s, s.T):
    top = sim.topk(10, dim=1).indices
    hit = (top == torch.arange(len(sim))[:, None]).any(1).float().mean()
print(time.perf_counter() - t0)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--naive-only", action="store_true")
    parser.add_argument("--metrics", default="all", help="gapscope's --metrics")
    parser.add_argument(
        "--memory-limit-gib",
        type=float,
        default=None,
        help="address-space cap of the naive process",
    )
    args = parser.parse_args()
    limit = None if args.memory_limit_gib is None else int(args.memory_limit_gib * 2**30)

    from gapscope.data.store import EmbeddingStore

    rng = np.random.default_rng(0)
    labels = rng.integers(0, args.classes, size=args.n)
    centres = rng.normal(size=(args.classes, args.dim)).astype(np.float32)
    content = centres[labels] + rng.normal(size=(args.n, args.dim)).astype(np.float32)
    image = content + 2 + rng.normal(size=(args.n, args.dim)).astype(np.float32)
    text = content - 2 + rng.normal(size=(args.n, args.dim)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        items = {
            m: [
                {"id": f"{m}{i}", "source": "", "group": i, "label": int(labels[i])}
                for i in range(args.n)
            ]
            for m in ("image", "text")
        }
        EmbeddingStore.write(tmp / "store", {"image": image, "text": text}, items)
        np.save(tmp / "x.npy", image)
        np.save(tmp / "y.npy", text)
        np.save(tmp / "labels.npy", labels)
        cmd = [
            sys.executable,
            "-m",
            "gapscope",
            "analyze",
            str(tmp / "store"),
            "-q",
            "-f",
            "json",
            "--device",
            "cpu",
            "--metrics",
            args.metrics,
        ]
        results = {
            "n": args.n,
            "dim": args.dim,
            "machine": platform.processor() or platform.machine(),
        }
        if not args.naive_only:
            run = run_measured(cmd)
            wall, rss = run.wall_s, run.peak_mib
            results["gapscope"] = {
                "wall_s": wall,
                "peak_rss_mib": rss,
                "command": " ".join(cmd[1:]),
            }
            print(
                f"gapscope analyze  n={args.n} d={args.dim} --metrics {args.metrics}: "
                f"{wall:7.1f} s, peak RSS {rss:7.0f} MiB"
            )
        if not args.skip_naive:
            naive = [
                sys.executable,
                "-c",
                NAIVE,
                str(tmp / "x.npy"),
                str(tmp / "y.npy"),
                str(tmp / "labels.npy"),
            ]
            naive_run = run_measured(naive, limit_bytes=limit)
            nwall, nrss, oom = naive_run.wall_s, naive_run.peak_mib, naive_run.out_of_memory
            results["naive"] = {
                "wall_s": nwall,
                "peak_rss_mib": nrss,
                "out_of_memory": oom,
                "memory_limit_gib": args.memory_limit_gib,
            }
            print(
                f"naive full-matrix n={args.n} d={args.dim}: {nwall:7.1f} s, "
                + (
                    f"out of memory under {args.memory_limit_gib} GiB"
                    if oom
                    else f"peak RSS {nrss:7.0f} MiB"
                )
            )
            if not args.naive_only and not oom:
                print(f"ratio gapscope/naive: time {wall / nwall:.2f}x, memory {rss / nrss:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
