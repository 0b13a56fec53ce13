"""Benchmark gapscope's exact cross-modal retrieval against faiss-cpu exact search, same data.

faiss ``IndexFlatIP`` on L2-normalised rows is exact top-K cosine search; recall@K from its
top-K lists (K = 10) is compared with gapscope's (``cross_pass``: both directions from one
X Y^T pass, and ``cross_modal_retrieval`` called once a direction), timed in the same run on
the same threads. Needs the ``bench`` extra (``pip install faiss-cpu``).

    python benchmarks/bench_faiss.py --n 10000 50000 --dim 512 --json faiss.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import torch

from gapscope.engine.normalization import normalize_rows
from gapscope.engine.passes import cross_pass
from gapscope.metrics.retrieval import cross_modal_retrieval

sys.path.insert(0, str(Path(__file__).parent))
from _faiss_blas import checked_faiss_blas  # noqa: E402

K = (1, 5, 10)


def faiss_recall(queries: np.ndarray, keys: np.ndarray) -> tuple[dict[int, float], float]:
    """Recall@K of row i retrieving key i, from faiss exact inner-product top-10; seconds."""
    t0 = time.perf_counter()
    index = faiss.IndexFlatIP(keys.shape[1])
    index.add(keys)
    _, top = index.search(queries, max(K))
    seconds = time.perf_counter() - t0
    hit = top == np.arange(len(queries))[:, None]
    return {k: float(hit[:, :k].any(axis=1).mean()) for k in K}, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[10000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    faiss.omp_set_num_threads(torch.get_num_threads())
    blas = checked_faiss_blas(sys.stderr)

    rows = []
    for n in args.n:
        rng = np.random.default_rng(0)
        content = rng.normal(size=(n, args.dim)).astype(np.float32)
        image = content + 2.0 * rng.normal(size=(n, args.dim)).astype(np.float32) + 0.3
        text = content + 2.0 * rng.normal(size=(n, args.dim)).astype(np.float32) - 0.3
        ux, uy = normalize_rows(image), normalize_rows(text)
        x, y = ux.numpy(), uy.numpy()

        f_i2t, t_i2t = faiss_recall(x, y)
        f_t2i, t_t2i = faiss_recall(y, x)
        groups = np.arange(n)
        t0 = time.perf_counter()
        g_i2t, g_t2i = cross_pass(ux, uy, groups, groups, k=K, device="cpu")
        t_fused = time.perf_counter() - t0
        t0 = time.perf_counter()
        cross_modal_retrieval(ux, uy, k=K, device="cpu")
        cross_modal_retrieval(uy, ux, k=K, device="cpu")
        t_per = time.perf_counter() - t0
        row = {
            "n": n,
            "dim": args.dim,
            "faiss_s": t_i2t + t_t2i,
            "gapscope_fused_s": t_fused,
            "gapscope_per_direction_s": t_per,
            "fused_over_faiss": t_fused / (t_i2t + t_t2i),
            "recall": {
                "faiss": {"image->text": f_i2t, "text->image": f_t2i},
                "gapscope": {"image->text": g_i2t.recall, "text->image": g_t2i.recall},
            },
            "recall_max_abs_diff": max(
                abs(f[k] - g.recall[k]) for f, g in ((f_i2t, g_i2t), (f_t2i, g_t2i)) for k in K
            ),
        }
        rows.append(row)
        print(
            f"n={n:>7} d={args.dim}: faiss IndexFlatIP {row['faiss_s']:7.1f} s | gapscope "
            f"cross_pass {t_fused:7.1f} s ({row['fused_over_faiss']:.2f}x faiss) | per-direction "
            f"{t_per:7.1f} s | max |recall diff| {row['recall_max_abs_diff']:.2e}",
            flush=True,
        )
        print(f"    R@1/5/10 i->t faiss {f_i2t} gapscope {g_i2t.recall}", flush=True)
    result = {
        "machine": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "faiss": faiss.__version__,
        "faiss_blas": blas,
        "rows": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
