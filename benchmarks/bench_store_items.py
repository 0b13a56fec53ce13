"""Time and memory of opening a store's items: format 1 (JSON lines) against format 2 (columns).

Writes synthetic stores whose items look like an image-caption extract: half the rows are
images (``id = source = group =`` a path ``images/<class>/<n>.jpg``, ``label`` the class),
half their captions (``id = "<path>#0"``, ``source`` an 8-14 word caption, the image's group
and label). Format 2 at ``--rows`` (10M by default) and both formats at ``--format1-rows``
(1M: format 1 holds about 1 GiB a million rows, so 10M would need about 10 GiB), each opened in
a fresh process that then does what an analysis does with the items: ``EmbeddingStore.open``
(which validates), the group and label codes of every modality read through once, and one item
decoded. Reported: the wall time of that, and the peak RSS beyond the process's RSS before it
(``VmHWM`` and ``VmRSS`` of ``/proc/self/status``: ``getrusage``'s peak would carry over the
parent's across the fork), which counts the pages of memory-mapped files that were read.
Embeddings are 4-dimensional float16: their reading is not measured.

    python benchmarks/bench_store_items.py --rows 10000000 --format1-rows 1000000 --json items.json
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gapscope.data.item_columns import write_npz

CLASSES = 1000
WORDS = [
    "a",
    "the",
    "photo",
    "of",
    "small",
    "large",
    "red",
    "blue",
    "green",
    "dog",
    "cat",
    "bird",
    "car",
    "street",
    "city",
    "tree",
    "river",
    "mountain",
    "person",
    "people",
    "sitting",
    "standing",
    "on",
    "in",
    "near",
    "with",
    "two",
    "three",
    "old",
    "young",
    "white",
    "black",
    "field",
    "house",
    "window",
    "table",
    "food",
    "plate",
    "boat",
    "beach",
    "snow",
    "night",
    "day",
]
DIM = 4

# Runs in a fresh process: what opening the items of the store at argv[1] takes.
MEASURE = r"""
import json, sys, time
from gapscope.data.store import EmbeddingStore

def status_kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])

base = status_kib("VmRSS")
t0 = time.perf_counter()
store = EmbeddingStore.open(sys.argv[1])
rows = 0
for m in store.modalities:
    groups, labels = store.groups(m), store.labels(m)
    touched = int(groups.max()) + (int(labels.max()) if labels is not None else 0)
    items = store.item_columns(m) if store.format_version >= 2 else store.items(m)
    middle = items[len(items) // 2]
    assert "group" in middle and touched >= 0
    rows += len(items)
wall = time.perf_counter() - t0
peak = status_kib("VmHWM")
print(json.dumps({"rows": rows, "open_s": wall, "beyond_mib": (peak - base) / 1024}))
"""


def _column(texts: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """``offsets`` and ``data`` of a text column."""
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets, np.frombuffer(b"".join(texts), dtype=np.uint8)


def _content(pairs: int, seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    """The image paths, their classes and one caption each."""
    rng = np.random.default_rng(seed)
    classes = [f"class_{c:04d}" for c in range(CLASSES)]
    cls = np.arange(pairs) % CLASSES
    paths = [f"images/{classes[c]}/{i:09d}.jpg" for i, c in enumerate(cls.tolist())]
    lengths = rng.integers(8, 15, size=pairs)
    words = rng.integers(0, len(WORDS), size=int(lengths.sum())).tolist()
    captions, at = [], 0
    for n in lengths.tolist():
        captions.append(" ".join(WORDS[w] for w in words[at : at + n]))
        at += n
    return paths, [classes[c] for c in cls.tolist()], captions


def _manifest(rows: int, version: int, items: str) -> dict:
    entry = {"dim": DIM, "dtype": "float16", "normalized": False, "rows": rows}
    return {
        "complete": True,
        "dataset": {"name": "bench_store_items"},
        "encoder": None,
        "format": "gapscope.store",
        "format_version": version,
        "gapscope_version": "bench",
        "modalities": {
            m: {**entry, "file": f"{m}.npy", "items": f"{m}.items.{items}"}
            for m in ("image", "text")
        },
    }


def _embeddings(folder: Path, rows: int) -> None:
    for m in ("image", "text"):
        arr = np.lib.format.open_memmap(folder / f"{m}.npy", "w+", np.float16, (rows, DIM))
        arr[:] = 1
        arr.flush()
        del arr


def write_format2(folder: Path, pairs: int) -> None:
    """A format-2 store of ``pairs`` images and ``pairs`` captions, written column by column."""
    folder.mkdir()
    paths, labels, captions = _content(pairs)
    quoted = [f'"{p}"'.encode() for p in paths]
    label_text = [f'"{c}"'.encode() for c in labels]
    codes = np.arange(pairs, dtype=np.int64)
    label_codes = codes % CLASSES
    label_column = _column(label_text)
    del label_text
    image = [("id", _column(quoted)), ("source", _column(quoted)), ("group", _column(quoted))]
    write_npz(
        folder / "image.items.npz",
        _members(image, codes, label_column, label_codes),
    )
    del image
    ids = _column([f'"{p}#0"'.encode() for p in paths])
    sources = _column([f'"{c}"'.encode() for c in captions])
    text = [("id", ids), ("source", sources), ("group", _column(quoted))]
    write_npz(folder / "text.items.npz", _members(text, codes, label_column, label_codes))
    _embeddings(folder, pairs)
    (folder / "manifest.json").write_text(json.dumps(_manifest(pairs, 2, "npz"), indent=2))


def _members(columns, codes, label_column, label_codes) -> list[tuple[str, np.ndarray]]:
    out = []
    for name, (offsets, data) in columns:
        out += [(f"{name}.offsets", offsets), (f"{name}.data", data)]
        if name == "group":
            out.append(("group.codes", codes))
    out += [("label.offsets", label_column[0]), ("label.data", label_column[1])]
    return [*out, ("label.codes", label_codes)]


def write_format1(folder: Path, pairs: int) -> None:
    """The same items as a format-1 store (JSON lines, keys sorted, as format 1 wrote them)."""
    folder.mkdir()
    paths, labels, captions = _content(pairs)
    with open(folder / "image.items.jsonl", "w", encoding="utf-8") as fh:
        for p, c in zip(paths, labels, strict=True):
            item = {"group": p, "id": p, "label": c, "source": p}
            fh.write(json.dumps(item, sort_keys=True, ensure_ascii=False) + "\n")
    with open(folder / "text.items.jsonl", "w", encoding="utf-8") as fh:
        for p, c, s in zip(paths, labels, captions, strict=True):
            item = {"group": p, "id": f"{p}#0", "label": c, "source": s}
            fh.write(json.dumps(item, sort_keys=True, ensure_ascii=False) + "\n")
    _embeddings(folder, pairs)
    (folder / "manifest.json").write_text(json.dumps(_manifest(pairs, 1, "jsonl"), indent=2))


def measure(folder: Path) -> dict:
    """Open the store's items in a fresh process; its rows, seconds and MiB beyond baseline."""
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(folder)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="format-2 store rows")
    parser.add_argument("--format1-rows", type=int, default=1_000_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict = {"machine": platform.processor() or platform.machine()}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, writer, rows in [
            ("format1_small", write_format1, args.format1_rows),
            ("format2_small", write_format2, args.format1_rows),
            ("format2_large", write_format2, args.rows),
        ]:
            t0 = time.perf_counter()
            writer(root / name, rows // 2)
            written = time.perf_counter() - t0
            size = sum(p.stat().st_size for p in (root / name).glob("*.items.*"))
            results[name] = {**measure(root / name), "write_s": written, "items_mib": size / 2**20}
            r = results[name]
            print(
                f"{name}: {r['rows']:,} rows, items {r['items_mib']:.0f} MiB on disk: opened in "
                f"{r['open_s']:.2f} s, {r['beyond_mib']:.0f} MiB beyond baseline"
            )
    f1, f2 = results["format1_small"], results["format2_small"]
    ratio = {"time": f1["open_s"] / f2["open_s"], "memory": f1["beyond_mib"] / f2["beyond_mib"]}
    results["ratio_format1_over_format2"] = ratio
    print(
        f"at {f1['rows']:,} rows format 1 / format 2: {ratio['time']:.0f}x the time, "
        f"{ratio['memory']:.0f}x the memory"
    )
    large = results["format2_large"]
    print(
        f"format 2 at {large['rows']:,} rows: {large['open_s']:.2f} s (target < 2 s), "
        f"{large['beyond_mib']:.0f} MiB (target < 500 MiB)"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
