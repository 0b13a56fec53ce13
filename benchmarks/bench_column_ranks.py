"""Sampled intra-modal ranks against keys normalised on the fly: columns against blocks.

With ``--sample`` and keys too many to hold as float32 unit rows, ``modality_pass`` counts the
sampled queries' intra-modal ranks down the columns of chunks of keys
(``gapscope/engine/column_ranks.py``), reading the keys once; the block path reads them once
a block of queries. Each run times one ``modality_pass`` (uniformity and intra-modal
retrieval) in a fresh process, on ``n`` rows in groups of five (five captions an image), for
three kinds of data: Gaussian rows (relevant rows anywhere in the ranking), relevant rows
opposite their query (nearly every key outranks them: every key is a candidate) and
clustered groups (relevant rows near the top, as real captions are). Both paths must give
the same mAP and R@1 (the ranks are exact either way).

    python benchmarks/bench_column_ranks.py --n 200000 --queries 2000 --dim 64
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

KINDS = ("gaussian", "opposite", "clustered")

_RUN = """
import json, resource, sys, time
import numpy as np
from gapscope.engine import passes
from gapscope.engine.unit_rows import UnitRows
path, kind, n, q, d = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rng = np.random.default_rng(0)
codes = np.arange(n) // 5
if kind == "clustered":
    centres = np.repeat(rng.normal(size=(-(-n // 5), d)), 5, axis=0)[:n]
    x = (centres + 0.5 * rng.normal(size=(n, d))).astype(np.float32)
else:
    x = rng.normal(size=(n, d)).astype(np.float32)
    if kind == "opposite":
        x[1::5] = -x[0::5][: x[1::5].shape[0]]
        x[2::5] = -x[0::5][: x[2::5].shape[0]] + 0.01
queries = np.sort(rng.choice(n, q, replace=False))
if path == "blocks":
    passes.fits_columns = lambda counts, n_keys: False
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
r = passes.modality_pass(UnitRows(x, in_memory=False), codes, k=(1,), query_index=queries)
wall = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"wall_s": wall, "peak_rss_mib": peak / 1024, "before_mib": before / 1024,
                  "map": r.retrieval.mean_average_precision, "r1": r.retrieval.recall[1]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = []
    for kind in KINDS:
        runs = {}
        for path in ("columns", "blocks"):
            argv = [path, kind, str(args.n), str(args.queries), str(args.dim)]
            out = subprocess.run(
                [sys.executable, "-c", _RUN, *argv], check=True, capture_output=True, text=True
            ).stdout
            runs[path] = json.loads(out.strip().splitlines()[-1])
        same = all(runs["columns"][k] == runs["blocks"][k] for k in ("map", "r1"))
        print(
            f"{kind:10s} columns {runs['columns']['wall_s']:6.1f} s "
            f"(peak {runs['columns']['peak_rss_mib']:5.0f} MiB), blocks "
            f"{runs['blocks']['wall_s']:6.1f} s (peak {runs['blocks']['peak_rss_mib']:5.0f} MiB), "
            f"ratio {runs['columns']['wall_s'] / runs['blocks']['wall_s']:.2f}, "
            f"{'same' if same else 'DIFFERENT'} mAP and R@1"
        )
        results.append({"kind": kind, **runs, "same": same})
    if args.json:
        payload = {"n": args.n, "queries": args.queries, "dim": args.dim, "runs": results}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
