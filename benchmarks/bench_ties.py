"""What rows that tie cost the exact modality pass: its tiles against the blocks of whole rows.

Rows that tie with many others (entries +-1 in a low dimension, or a few distinct rows
repeated) put most keys inside most near-tie windows, where ranks are settled by exact scores.
Each case runs one ``modality_pass`` (intra-modal retrieval, 8 random labels, no uniformity)
in a fresh process of the checkout named by ``--checkout`` (default: this one), once by the
tiles on and above the diagonal (``self_tiles``) and once by the blocks of whole rows
(``TILE_SLOTS_MAX = 0``), the baseline; both give the same ranks, checked by their mAP.

    python benchmarks/bench_ties.py --n 4096
    python benchmarks/bench_ties.py --n 4096 --checkout /tmp/baseline --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
CASES = {
    "+-1 rows, d = 4": "pm1",
    "16 distinct rows, d = 64": "few",
}

_RUN = """
import json, resource, sys, time
import numpy as np
import gapscope
assert gapscope.__file__.startswith(sys.argv[1]), gapscope.__file__
from gapscope.engine import passes
from gapscope.engine.passes import modality_pass
kind, n, path = sys.argv[2], int(sys.argv[3]), sys.argv[4]
rng = np.random.default_rng(0)
if kind == "pm1":
    x = rng.choice([-1.0, 1.0], size=(n, 4)).astype(np.float32)
else:
    base = rng.normal(size=(16, 64)).astype(np.float32)
    x = base[rng.integers(0, 16, size=n)]
labels = rng.integers(0, 8, size=n)
if path == "blocks":
    passes.TILE_SLOTS_MAX = 0
start = time.perf_counter()
r = modality_pass(x, labels, k=(1, 5), uniformity=False)
wall = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"wall_s": wall, "peak_mib": peak, "map": r.retrieval.mean_average_precision}))
"""


def run(checkout: Path, kind: str, n: int, path: str) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(checkout))
    done = subprocess.run(
        [sys.executable, "-c", _RUN, str(checkout), kind, str(n), path],
        env=env,
        cwd=checkout,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--checkout", type=Path, default=HERE)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    checkout = args.checkout.resolve()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True, text=True
    ).stdout.strip()
    print(f"n = {args.n}, 8 labels, retrieval only; checkout {checkout} ({commit})")
    results = {}
    for name, kind in CASES.items():
        blocks = run(checkout, kind, args.n, "blocks")
        tiles = run(checkout, kind, args.n, "tiles")
        if tiles["map"] != blocks["map"]:
            sys.exit(f"{name}: mAP {tiles['map']!r} from the tiles, {blocks['map']!r} from blocks")
        results[name] = {"tiles": tiles, "blocks": blocks}
        print(
            f"{name:26s} blocks {blocks['wall_s']:7.2f} s ({blocks['peak_mib']:5.0f} MiB)"
            f"  tiles {tiles['wall_s']:7.2f} s ({tiles['peak_mib']:5.0f} MiB)"
            f"  {tiles['wall_s'] / blocks['wall_s']:5.2f}x  same mAP"
        )
    if args.json is not None:
        args.json.write_text(
            json.dumps({"commit": commit, "n": args.n, "cases": results}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
