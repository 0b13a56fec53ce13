"""The exact modality pass (half of ``X X^T``) against one whole ``X X^T`` product.

Each case times one ``modality_pass`` over every row, in a fresh process of the checkout
named by ``--checkout`` (default: this one), and in the same process the bound it is measured
against: the whole ``X X^T`` as float32 products of 2048-row blocks into a preallocated
buffer, nothing else (a pass that reads only the tiles on and above the diagonal can go below
1.0x). Data as ``bench_gemm_bound.make_data`` (rows around 100 class centres); the cases:
uniformity alone, intra-modal retrieval with the 100 classes as labels, with groups of two
rows, and uniformity with the labels. Run it for two checkouts to compare them:

    git worktree add /tmp/baseline <commit>
    python benchmarks/bench_self_tiles.py --n 20000
    python benchmarks/bench_self_tiles.py --n 20000 --checkout /tmp/baseline
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
CASES = ("uniformity", "labels", "groups", "both")

_RUN = """
import json, sys, time
import numpy as np
import torch
sys.path.insert(0, sys.argv[1] + "/benchmarks")
import gapscope
assert gapscope.__file__.startswith(sys.argv[1]), gapscope.__file__
from bench_gemm_bound import make_data
from gapscope.engine.passes import modality_pass
from gapscope.engine.normalization import normalize_rows
case, n, d = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
x, _, labels = make_data(n, d, 100)
relevance = {"uniformity": None, "labels": labels, "groups": np.arange(n) // 2,
             "both": labels}[case]
unit = normalize_rows(x)
out = torch.empty((2048, n), dtype=torch.float32)
start = time.perf_counter()
for s in range(0, n, 2048):
    rows = unit[s : s + 2048]
    torch.mm(rows, unit.T, out=out[: rows.shape[0]])
bound = time.perf_counter() - start
start = time.perf_counter()
r = modality_pass(x, relevance, uniformity=case in ("uniformity", "both"))
wall = time.perf_counter() - start
print(json.dumps({"pass_s": wall, "bound_s": bound, "uniformity": r.uniformity,
                  "map": None if r.retrieval is None else r.retrieval.mean_average_precision}))
"""


def run(checkout: Path, case: str, n: int, dim: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(checkout))
    done = subprocess.run(
        [sys.executable, "-c", _RUN, str(checkout), case, str(n), str(dim)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        cwd=checkout.parent,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--checkout", type=Path, default=HERE)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = {}
    for case in CASES:
        r = run(args.checkout.resolve(), case, args.n, args.dim)
        results[case] = r
        print(
            f"{case:10s} pass {r['pass_s']:6.2f} s  whole X X^T {r['bound_s']:6.2f} s  "
            f"ratio {r['pass_s'] / r['bound_s']:.2f}  (uniformity {r['uniformity']}, "
            f"mAP {r['map']})",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps({"n": args.n, "dim": args.dim, **results}, indent=2))


if __name__ == "__main__":
    main()
