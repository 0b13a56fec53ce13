"""Peak memory of ``gapscope analyze --sample`` on a large memory-mapped float16 store.

Writes ``image.npy`` and ``text.npy`` (n x d float16, paired row by row) chunk by chunk with
``numpy.lib.format.open_memmap`` (never whole in memory), then runs the CLI in a fresh process
on them as plain arrays (memory-mapped) and reports its peak RSS. With ``--store``, writes an
embedding store instead (``EmbeddingStore.create``, appended chunk by chunk with an item a row:
a path, a caption-like source and the pair's group) and analyses the store, item metadata
included. Pages of the memory map that
were read count in RSS too, so ``peak RSS - store size`` is an upper bound on the memory that
gapscope itself needs beyond the store.

With ``--processes N`` it then times the same command with one BLAS thread
(``OMP_NUM_THREADS=1``) in one process and in N processes under ``torchrun --standalone``, and
checks that the two reports are byte-identical; with ``--pinned`` too, every process is pinned
to a core of its own (``_pinned.py``), and the launch alone is timed.

    python benchmarks/bench_sample_memory.py --n 1000000 --dim 512 --sample 2000 --json mem.json
    python benchmarks/bench_sample_memory.py --n 1000000 --store --metrics ... --processes 2
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _runs import one_against_several, run_measured

CHUNK = 65536


def write_store(folder: Path, n: int, dim: int) -> int:
    """Write the two float16 arrays; returns their total size in bytes."""
    rng = np.random.default_rng(0)
    image = np.lib.format.open_memmap(folder / "image.npy", "w+", np.float16, (n, dim))
    text = np.lib.format.open_memmap(folder / "text.npy", "w+", np.float16, (n, dim))
    for start in range(0, n, CHUNK):
        rows = min(CHUNK, n - start)
        content = rng.standard_normal((rows, dim), dtype=np.float32)
        image[start : start + rows] = content + rng.standard_normal((rows, dim), np.float32) + 1
        text[start : start + rows] = content + rng.standard_normal((rows, dim), np.float32) - 1
    image.flush()
    text.flush()
    del image, text
    return sum((folder / f).stat().st_size for f in ("image.npy", "text.npy"))


def write_embedding_store(folder: Path, n: int, dim: int) -> int:
    """Write the same rows as :func:`write_store` into an embedding store at ``folder``, with
    items; returns the store's size in bytes."""
    from gapscope.data.store import EmbeddingStore

    rng = np.random.default_rng(0)
    store = EmbeddingStore.create(folder, dataset={"name": "bench_sample_memory"})
    try:
        for start in range(0, n, CHUNK):
            rows = min(CHUNK, n - start)
            content = rng.standard_normal((rows, dim), dtype=np.float32)
            for modality, offset in (("image", 1.0), ("text", -1.0)):
                noise = rng.standard_normal((rows, dim), np.float32)
                items = [
                    {
                        "id": f"{modality}/{i:08d}",
                        "source": f"shard-{i // 10000:05d}/{i:08d}.{modality}",
                        "group": i,
                    }
                    for i in range(start, start + rows)
                ]
                store.append(modality, (content + noise + offset).astype(np.float16), items)
        store.finalize()
    finally:
        store.close()
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--sample", type=int, default=2000)
    parser.add_argument("--metrics", default="all")
    parser.add_argument("--store", action="store_true", help="an embedding store, with items")
    parser.add_argument("--processes", type=int, default=0, help="also time N processes")
    parser.add_argument(
        "--pinned", action="store_true", help="with --processes: one core a process"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        if args.store:
            store_bytes = write_embedding_store(folder / "store", args.n, args.dim)
            inputs = [str(folder / "store")]
        else:
            store_bytes = write_store(folder, args.n, args.dim)
            inputs = ["--image", str(folder / "image.npy"), "--text", str(folder / "text.npy")]
        write_s = time.perf_counter() - t0
        cmd = [
            sys.executable,
            "-m",
            "gapscope",
            "analyze",
            *inputs,
            "--sample",
            str(args.sample),
            "--metrics",
            args.metrics,
            "--device",
            "cpu",
            "-q",
            "-f",
            "json",
            "-o",
            str(folder / "r.json"),
        ]
        run = run_measured(cmd)
        wall, peak_mib = run.wall_s, run.peak_mib
        shared = None
        if args.processes:
            shared = one_against_several(cmd[:-2], args.processes, folder, pinned=args.pinned)
    store_mib = store_bytes / 2**20
    result = {
        "machine": platform.processor() or platform.machine(),
        "n": args.n,
        "dim": args.dim,
        "sample": args.sample,
        "metrics": args.metrics,
        "input": "embedding store with items" if args.store else "plain arrays",
        "store_mib": store_mib,
        "write_s": write_s,
        "analyze_s": wall,
        "peak_rss_mib": peak_mib,
        "peak_beyond_store_mib": peak_mib - store_mib,
        "command": " ".join(["gapscope"] + cmd[3:]),
    }
    print(
        f"n={args.n} d={args.dim} float16 store {store_mib:.0f} MiB (written in {write_s:.0f} "
        f"s): analyze --sample {args.sample} --metrics {args.metrics}: {wall:.0f} s, peak RSS "
        f"{peak_mib:.0f} MiB, beyond the store <= {peak_mib - store_mib:.0f} MiB"
    )
    if shared is not None:
        result.update(shared)
        tag = "pinned_" if args.pinned else ""
        print(
            f"{'1 core' if args.pinned else '1 thread'} a process: 1 process "
            f"{shared[tag + 'one_process_one_thread_s']:.0f} s, {args.processes} processes "
            f"{shared[tag + 'shared_s']:.0f} s: {shared[tag + 'speedup']:.2f}x; "
            f"JSON {'identical' if shared[tag + 'identical_json'] else 'DIFFERENT'}"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
