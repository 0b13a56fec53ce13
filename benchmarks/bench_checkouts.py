"""Compare the O(n^2) passes of this checkout with those of another checkout of gapscope.

Each checkout measures itself with its own ``benchmarks/bench_gemm_bound.py`` (its passes
against the three blocked matmuls, in the same process), run in fresh processes that
alternate between the two checkouts, so that load from other processes hits both alike.
Prints each run and the median ratio (passes / matmul bound) of each checkout.

    git worktree add /tmp/baseline <commit>
    python benchmarks/bench_checkouts.py --baseline /tmp/baseline --n 20000 --repeat 6

With ``--cli`` each run is ``gapscope analyze`` end to end instead (``--cli default`` for the
default metrics, or a ``--metrics`` list), on the same generated data (100 classes as labels),
alternating between the checkouts; prints each run's wall time, the median of each and their
ratio, and how many values of the two JSON reports differ. Each run starts outside both
checkouts with ``PYTHONPATH`` set to its checkout and checks that it imported that one (an
editable install of either would otherwise win).

    python benchmarks/bench_checkouts.py --baseline /tmp/baseline --cli default --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

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


# Runs gapscope's CLI from the checkout first on sys.path, and refuses any other.
_CLI = """
import sys, runpy
root = sys.argv.pop(1)
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path.insert(0, root)
import gapscope
if not gapscope.__file__.startswith(root):
    sys.exit(f"imported {gapscope.__file__}, not the checkout {root}")
runpy.run_module("gapscope", run_name="__main__", alter_sys=True)
"""


def run_cli(checkout: Path, folder: Path, metrics: str, out: Path) -> float:
    """Wall seconds of ``gapscope analyze`` of ``checkout`` on the data in ``folder``."""
    command = [sys.executable, "-c", _CLI, str(checkout), "analyze"]
    for m in ("image", "text"):
        command += [f"--{m}", str(folder / f"{m}.npy")]
    command += ["--labels", str(folder / "labels.npy"), "--device", "cpu", "--format", "json"]
    if metrics != "default":
        command += ["--metrics", metrics]
    command += ["-o", str(out)]
    env = dict(os.environ, PYTHONPATH=str(checkout))
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, cwd=folder, capture_output=True)
    return time.perf_counter() - start


def _leaves(value: object, path: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        return {
            k: v for key, item in value.items() for k, v in _leaves(item, f"{path}/{key}").items()
        }
    if isinstance(value, list):
        return {
            k: v for i, item in enumerate(value) for k, v in _leaves(item, f"{path}[{i}]").items()
        }
    return {path: value}


def compare_cli(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_gemm_bound import make_data

    times: dict[str, list[float]] = {"baseline": [], "this": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = make_data(args.n, args.dim, 100)
        for name, array in zip(("image", "text", "labels"), data, strict=True):
            np.save(folder / f"{name}.npy", array)
        for _ in range(args.repeat):
            for name, checkout in (("baseline", args.baseline.resolve()), ("this", HERE)):
                wall = run_cli(checkout, folder, args.cli, folder / f"{name}.json")
                times[name].append(wall)
                print(f"{name:8s} analyze ({args.cli}) {wall:6.1f} s", flush=True)
        reports = [
            _leaves(json.loads((folder / f"{n}.json").read_text())) for n in ("baseline", "this")
        ]
    differ = sorted(
        k for k in reports[0].keys() | reports[1].keys() if reports[0].get(k) != reports[1].get(k)
    )
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, median in medians.items():
        print(f"{name:8s} median {median:.1f} s")
    print(f"this / baseline (medians): {medians['this'] / medians['baseline']:.3f}")
    print(f"JSON values that differ: {len(differ)}" + "".join(f"\n  {k}" for k in differ[:20]))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "n": args.n,
                    "dim": args.dim,
                    "cli": args.cli,
                    "runs": times,
                    "medians": medians,
                    "differ": differ,
                },
                indent=2,
            )
            + "\n"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="the other checkout")
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=6)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--cli", metavar="METRICS", help="time analyze end to end: 'default' or a --metrics list"
    )
    args = parser.parse_args()
    if args.cli:
        compare_cli(args)
        return

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
