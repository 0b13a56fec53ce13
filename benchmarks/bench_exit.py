"""How long a ``gapscope`` command takes to exit once its report is written, with the
interpreter's collections at shutdown frozen out (what the console script does) and without.

    python benchmarks/bench_exit.py [--runs 5] [--rows 2000] [--json out.json]

Each run is a fresh process of ``gapscope analyze --metrics gap`` on generated rows (torch
imported, as every analysis imports it), writing its JSON report to a file; "after the
report" is the time from the report's last modification to the end of the process, as seen
by this script. The baseline is the same command in a process where :func:`gapscope.cli.main`
cannot register :func:`gc.freeze` at exit (its ``atexit.register`` skips it), so the
interpreter's collections at shutdown walk everything torch made. The two kinds of process
alternate; the table gives their medians and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

_CHILD = textwrap.dedent(
    """
    import atexit, gc, sys

    if sys.argv[1] == "unfrozen":
        register = atexit.register
        atexit.register = lambda f, *a, **k: f if f is gc.freeze else register(f, *a, **k)
    from gapscope.cli import main

    sys.argv = ["gapscope", *sys.argv[2:]]
    main()
    """
)


def one_run(kind: str, folder: Path) -> tuple[float, float]:
    """Wall seconds of one process and the seconds from its report's write to its end."""
    out = folder / f"{kind}.json"
    cmd = [sys.executable, "-c", _CHILD, kind, "analyze", "--image", "image.npy"]
    cmd += ["--text", "text.npy", "--metrics", "gap", "-q", "-f", "json", "-o", str(out)]
    t0 = time.time()
    subprocess.run(cmd, cwd=folder, check=True, capture_output=True)
    end = time.time()
    return end - t0, end - os.stat(out).st_mtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    seen: dict[str, list[tuple[float, float]]] = {"unfrozen": [], "frozen": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in ("image", "text"):
            rows = rng.standard_normal((args.rows, 512)).astype(np.float32)
            np.save(folder / f"{name}.npy", rows)
        for _ in range(args.runs):
            for kind in seen:
                seen[kind].append(one_run(kind, folder))
    result: dict[str, object] = {"rows": args.rows, "runs": args.runs}
    print("| process | wall (median) | after the report (median) | after the report (runs) |")
    print("|---|---:|---:|---|")
    for kind, runs in seen.items():
        wall = statistics.median(w for w, _ in runs)
        after = statistics.median(a for _, a in runs)
        result[kind] = {"wall_s": [w for w, _ in runs], "after_report_s": [a for _, a in runs]}
        listed = ", ".join(f"{a:.2f}" for _, a in runs)
        print(f"| {kind} | {wall:.2f} s | {after:.2f} s | {listed} |")
    ratio = statistics.median(a for _, a in seen["frozen"]) / statistics.median(
        a for _, a in seen["unfrozen"]
    )
    result["after_report_ratio"] = ratio
    print(f"exit after the report, frozen / unfrozen: {ratio:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
