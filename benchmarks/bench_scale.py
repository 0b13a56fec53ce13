"""One run, every reference point: the matmul bound, faiss, core and default ``analyze``, and
``analyze`` shared among processes.

    python benchmarks/bench_scale.py --n 20000 --dim 512 [--processes 2] [--json out.json]

On the same data (paired rows around 100 class centres, labels as intra-modal relevance):

* bound: X X^T, Y Y^T and X Y^T of the unit rows as float32 products in 2048-row blocks into a
  preallocated buffer, nothing else (the three matmuls every exact run needs);
* faiss: ``IndexFlatIP`` top-10, both directions (retrieval only; skipped without faiss-cpu);
* core: ``gapscope analyze --metrics gap,cosine,alignment,cone,uniformity,mir,retrieval``, a
  CLI process end to end (start-up and loading included);
* default: ``gapscope analyze`` with everything but UMAP (diagnostics and what-ifs);
* distributed: the core run with one thread (``OMP_NUM_THREADS=1``) in one process, then in
  ``--processes`` processes of one thread each under ``torchrun --standalone``; the two JSON
  reports must be byte-identical;
* distributed, one core a process: the same two runs with every process pinned to a core of
  its own (``_pinned.py``; one BLAS thread still leaves a process its ranking thread, so the
  unpinned single process keeps two cores busy), and the launch alone (imports, and
  ``torchrun`` starting processes that import and exit), to tell the speed-up of the shared
  work from that of the whole run.

When a CUDA device is available (or ``--device cuda``), the bound and the core run are
measured on it too: the bound's products on the GPU, ``analyze --device cuda`` with the
score blocks ranked on the GPU (``gapscope/engine/device_ranking.py``).

Every figure is a ratio to a baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _faiss_blas import checked_faiss_blas  # noqa: E402
from _runs import one_against_several, run_measured  # noqa: E402
from bench_gemm_bound import gemm_bound, make_data  # noqa: E402

from gapscope.engine.normalization import normalize_rows  # noqa: E402

CORE = "gap,cosine,alignment,cone,uniformity,mir,retrieval"


def timed(cmd: list[str]) -> float:
    """Wall seconds of ``cmd`` in a fresh process (which must succeed)."""
    return run_measured(cmd).wall_s


def faiss_both_ways(x: np.ndarray, y: np.ndarray) -> float | None:
    try:
        import faiss
    except ImportError:
        return None
    t0 = time.perf_counter()
    for queries, keys in ((x, y), (y, x)):
        index = faiss.IndexFlatIP(keys.shape[1])
        index.add(keys)
        index.search(queries, 10)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--skip-default", action="store_true")
    parser.add_argument("--skip-pinned", action="store_true", help="no runs of one core a process")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="also measure on CUDA (auto: when torch sees a GPU)",
    )
    args = parser.parse_args()
    gpu = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())

    image, text, labels = make_data(args.n, args.dim, args.classes)
    result: dict[str, object] = {
        "n": args.n,
        "dim": args.dim,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, array in (("image", image), ("text", text), ("labels", labels)):
            np.save(folder / f"{name}.npy", array)
        ux = normalize_rows(image).cpu()
        uy = normalize_rows(text).cpu()
        bound = gemm_bound(ux, uy, 2048)
        result["bound_s"] = bound
        print(f"bound (three blocked float32 matmuls): {bound:.1f} s")
        seconds = faiss_both_ways(ux.numpy(), uy.numpy())
        if seconds is not None:
            result["faiss_s"] = seconds
            print(f"faiss IndexFlatIP top-10, both ways: {seconds:.1f} s ({seconds / bound:.2f}x)")
            result["faiss_blas"] = checked_faiss_blas()
        base = [
            sys.executable,
            "-m",
            "gapscope",
            "analyze",
            "--image",
            str(folder / "image.npy"),
            "--text",
            str(folder / "text.npy"),
            "--labels",
            str(folder / "labels.npy"),
            "--device",
            "cpu",
            "-q",
            "-f",
            "json",
        ]
        core = timed([*base, "--metrics", CORE, "-o", str(folder / "core.json")])
        result["core_s"] = core
        print(f"analyze, core metrics (CLI): {core:.1f} s ({core / bound:.2f}x the bound)")
        if not args.skip_default:
            default = timed([*base, "-o", str(folder / "default.json")])
            result["default_s"] = default
            print(f"analyze, default (CLI): {default:.1f} s ({default / bound:.2f}x the bound)")

        if gpu:
            gpu_bound = gemm_bound(ux.cuda(), uy.cuda(), 2048)
            cuda_cmd = [*base[:-5], "--device", "cuda", *base[-3:]]
            gpu_core = timed([*cuda_cmd, "--metrics", CORE, "-o", str(folder / "cuda.json")])
            result.update(
                gpu=torch.cuda.get_device_name(0), gpu_bound_s=gpu_bound, gpu_core_s=gpu_core
            )
            print(
                f"on {torch.cuda.get_device_name(0)}: bound {gpu_bound:.2f} s; analyze, core "
                f"metrics (CLI, --device cuda): {gpu_core:.1f} s ({gpu_core / gpu_bound:.1f}x)"
            )

        shared = one_against_several([*base, "--metrics", CORE], args.processes, folder)
        result.update(shared)
        print(
            f"analyze, core metrics, 1 thread a process: 1 process "
            f"{shared['one_process_one_thread_s']:.1f} s, {args.processes} processes "
            f"{shared['shared_s']:.1f} s: {shared['speedup']:.2f}x; "
            f"JSON {'identical' if shared['identical_json'] else 'DIFFERENT'}"
        )
        if not args.skip_pinned:
            pinned = one_against_several(
                [*base, "--metrics", CORE], args.processes, folder, pinned=True
            )
            result.update(pinned)
            print(
                f"analyze, core metrics, 1 core a process: 1 process "
                f"{pinned['pinned_one_process_one_thread_s']:.1f} s, {args.processes} "
                f"processes {pinned['pinned_shared_s']:.1f} s: {pinned['pinned_speedup']:.2f}x; "
                f"JSON {'identical' if pinned['pinned_identical_json'] else 'DIFFERENT'}; "
                f"launching alone {pinned['pinned_launch_one_s']:.1f} s and "
                f"{pinned['pinned_launch_shared_s']:.1f} s, the rest "
                f"{pinned['pinned_speedup_beyond_launch']:.2f}x"
            )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
