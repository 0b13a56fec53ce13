"""Compare the O(n^2) passes of this checkout with those of another checkout of gapscope.

Each checkout measures itself with its own ``benchmarks/bench_gemm_bound.py`` (its passes
against the three blocked matmuls, in the same process), run in fresh processes that
alternate between the two checkouts, so that load from other processes hits both alike.
Prints each run and the median ratio (passes / matmul bound) of each checkout.

    git worktree add /tmp/baseline <commit>
    python benchmarks/bench_checkouts.py --baseline /tmp/baseline --n 20000 --repeat 6
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def run(checkout: Path, n: int, dim: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        env = dict(os.environ, PYTHONPATH=str(checkout))
        # Older checkouts compared against a per-metric engine too; --skip-per-metric keeps
        # only the passes.
        command = [
            sys.executable,
            str(checkout / "benchmarks" / "bench_gemm_bound.py"),
            "--n",
            str(n),
            "--dim",
            str(dim),
            "--skip-per-metric",
            "--json",
            str(out),
        ]
        subprocess.run(command, env=env, check=True, cwd=checkout, capture_output=True)
        return json.loads(out.read_text())["rows"][0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="the other checkout")
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=6)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    runs: dict[str, list[dict]] = {"baseline": [], "this": []}
    for _ in range(args.repeat):
        for name, checkout in (("baseline", args.baseline.resolve()), ("this", HERE)):
            row = run(checkout, args.n, args.dim)
            runs[name].append(row)
            print(
                f"{name:8s} passes {row['fused_s']:6.1f} s  bound {row['gemm_bound_s']:6.1f} s"
                f"  ratio {row['fused_over_bound']:.2f}",
                flush=True,
            )
    summary = {
        name: {
            "median_passes_s": statistics.median(r["fused_s"] for r in rows),
            "median_ratio": statistics.median(r["fused_over_bound"] for r in rows),
        }
        for name, rows in runs.items()
    }
    for name, s in summary.items():
        print(
            f"{name:8s} median passes {s['median_passes_s']:.1f} s, "
            f"median passes / bound {s['median_ratio']:.2f}"
        )
    ratio = summary["this"]["median_ratio"] / summary["baseline"]["median_ratio"]
    print(f"this / baseline (medians of passes / bound): {ratio:.3f}")
    if args.json:
        args.json.write_text(
            json.dumps({"n": args.n, "dim": args.dim, "runs": runs, "summary": summary}, indent=2)
            + "\n"
        )


if __name__ == "__main__":
    main()
