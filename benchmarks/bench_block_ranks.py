"""Intra-modal ranks of a block of whole rows: every query at once against one query at a time.

One block of ``--rows`` query rows against every one of ``--n`` rows (unit rows of d =
``--dim``, labels as relevance), ranked by ``window_ranks.block_ranks`` (the passes' path)
and, as the baseline measured in the same run, by ``ranking.relevant_ranks`` a query at a
time (the path before it). Both give the same ranks, checked here. One thread, the best of
``--repeat`` runs each. Three kinds of rows:

* ``clusters``: rows around ``--classes`` class centres, labels the classes (relevant rows
  score high: few candidate keys a query);
* ``spread``: random rows with random labels (relevant rows spread over the whole ranking:
  most keys are candidates);
* ``ties``: entries +-1 in d = 4 with random labels (most keys inside most windows).

    python benchmarks/bench_block_ranks.py
    python benchmarks/bench_block_ranks.py --n 20000 --rows 1024 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from gapscope.engine.ranking import GroupMembers, relevant_ranks, score_error_bound
from gapscope.engine.unit_rows import UnitRows, exact_scores
from gapscope.engine.window_ranks import block_ranks


def make_rows(kind: str, n: int, dim: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, classes, size=n)
    if kind == "clusters":
        centres = rng.normal(size=(classes, dim))
        return (centres[labels] + 0.5 * rng.normal(size=(n, dim))).astype(np.float32), labels
    if kind == "ties":
        return rng.choice([-1.0, 1.0], size=(n, 4)).astype(np.float32), labels
    return rng.normal(size=(n, dim)).astype(np.float32), labels


def per_row(unit: UnitRows, host: np.ndarray, codes: np.ndarray, margin: float) -> list:
    members = GroupMembers(codes)
    out = []
    for q in range(host.shape[0]):
        items = members.of(int(codes[q]))
        items = items[items != q]
        out.append(
            relevant_ranks(
                host[q],
                items,
                lambda keys, c=codes[q]: codes[keys] == c,
                margin,
                lambda keys, q=q: exact_scores(unit, np.full(keys.size, q), unit, keys),
            )
        )
    return out


def best_of(repeat: int, run) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return min(times), result


def measure(kind: str, args: argparse.Namespace) -> dict[str, float | bool]:
    """Both paths on one kind of rows, their times and whether their ranks agree."""
    x, labels = make_rows(kind, args.n, args.dim, args.classes)
    unit = UnitRows(x)
    members = GroupMembers(labels)
    rows = np.arange(args.rows)
    scores = unit.take(rows) @ unit.take(np.arange(args.n)).T
    scores[torch.arange(args.rows), torch.from_numpy(rows)] = -math.inf
    margin = 2.0 * score_error_bound(unit.shape[1])
    eligible = rows[members.count(labels[rows]) > 1]

    def at_once() -> dict[int, list[int]]:
        found: dict[int, list[int]] = {}

        def store(queries: np.ndarray, ranks: np.ndarray) -> None:
            found.update(zip(queries.tolist(), ranks.tolist(), strict=True))

        block_ranks(scores, eligible, eligible, members, unit, margin, store)
        return found

    host = scores.numpy()
    base_s, reference = best_of(args.repeat, lambda: per_row(unit, host, labels, margin))
    new_s, found = best_of(args.repeat, at_once)
    assert isinstance(found, dict) and isinstance(reference, list)
    same = all(found[q] == reference[q].tolist() for q in eligible.tolist())
    print(
        f"{kind:9s} {args.rows} rows x {args.n} keys: a query at a time {1e3 * base_s:7.1f} ms,"
        f" the block at once {1e3 * new_s:7.1f} ms ({new_s / base_s:.2f}x), same ranks: {same}"
    )
    return {
        "per_row_ms": 1e3 * base_s,
        "block_ms": 1e3 * new_s,
        "ratio": new_s / base_s,
        "same_ranks": same,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {kind: measure(kind, args) for kind in ("clusters", "spread", "ties")}
    if args.json:
        document = {"args": {**vars(args), "json": str(args.json)}, **results}
        args.json.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
