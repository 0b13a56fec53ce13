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

With ``--captions K`` the data are instead ``n`` images and ``K`` captions an image (float16,
written chunk by chunk and memory-mapped, a group an image, no labels), and ``--sample N``
passes analyze's ``--sample``: with enough rows (200,000 images and two captions at d = 512)
the unit rows no longer fit in memory and every read normalises them again, as at a million
rows:

    python benchmarks/bench_checkouts.py --baseline /tmp/baseline --n 200000 --captions 2 \
        --sample 2000 --cli gap,cosine,alignment,cone,uniformity,mir,retrieval --repeat 2
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


def run_cli(
    checkout: Path, folder: Path, metrics: str, out: Path, sample: int | None = None
) -> float:
    """Wall seconds of ``gapscope analyze`` of ``checkout`` on the data in ``folder``."""
    command = [sys.executable, "-c", _CLI, str(checkout), "analyze"]
    for m in ("image", "text"):
        command += [f"--{m}", str(folder / f"{m}.npy")]
    if (folder / "labels.npy").exists():
        command += ["--labels", str(folder / "labels.npy")]
    for m in ("image", "text"):
        if (folder / f"{m}_groups.npy").exists():
            command += ["--groups", f"{m}={folder / f'{m}_groups.npy'}"]
    command += ["--device", "cpu", "--format", "json"]
    if metrics != "default":
        command += ["--metrics", metrics]
    if sample is not None:
        command += ["--sample", str(sample)]
    command += ["-o", str(out)]
    env = dict(os.environ, PYTHONPATH=str(checkout))
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, cwd=folder, capture_output=True)
    return time.perf_counter() - start


def write_captions(folder: Path, n: int, dim: int, captions: int, chunk: int = 65536) -> None:
    """``n`` float16 images and ``captions`` float16 captions an image, near their image,
    written chunk by chunk (never whole in memory), and each modality's groups."""
    rng = np.random.default_rng(0)
    image = np.lib.format.open_memmap(folder / "image.npy", "w+", np.float16, (n, dim))
    text = np.lib.format.open_memmap(folder / "text.npy", "w+", np.float16, (captions * n, dim))
    for start in range(0, n, chunk):
        rows = min(chunk, n - start)
        content = rng.standard_normal((rows, dim), dtype=np.float32) + 0.3
        image[start : start + rows] = content
        noise = rng.standard_normal((captions * rows, dim), dtype=np.float32)
        text[captions * start : captions * (start + rows)] = (
            np.repeat(content, captions, axis=0) + noise
        )
    image.flush()
    text.flush()
    np.save(folder / "image_groups.npy", np.arange(n))
    np.save(folder / "text_groups.npy", np.repeat(np.arange(n), captions))


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
        if args.captions:
            write_captions(folder, args.n, args.dim, args.captions)
        else:
            data = make_data(args.n, args.dim, 100)
            for name, array in zip(("image", "text", "labels"), data, strict=True):
                np.save(folder / f"{name}.npy", array)
        for _ in range(args.repeat):
            for name, checkout in (("baseline", args.baseline.resolve()), ("this", HERE)):
                out = folder / f"{name}.json"
                wall = run_cli(checkout, folder, args.cli, out, args.sample)
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
                    "captions": args.captions,
                    "sample": args.sample,
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
    parser.add_argument(
        "--captions", type=int, default=0, help="with --cli: K float16 captions an image"
    )
    parser.add_argument("--sample", type=int, help="with --cli: analyze's --sample")
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
