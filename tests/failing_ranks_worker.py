"""One process of the failing-process test (tests/engine/test_distributed.py).

``python tests/failing_ranks_worker.py OUT [THREADS]`` with RANK, WORLD_SIZE, MASTER_ADDR and
MASTER_PORT set joins a gloo group (with THREADS torch threads, 1 by default: with more, the
CPU passes run in lanes) (a 60 s timeout, so a process left waiting fails the test instead of
hanging it) and runs one shared block (``gapscope.engine.distributed.sharing``) a scenario, in
each of which the last process fails at one place. Every process writes what it raised in
each scenario to ``OUT/raised-<RANK>.json``, then the arrays of one more shared pass to
``OUT/after-<RANK>.npz``: the same as one process's only if the processes are still in step.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from gapscope.engine import passes, self_tiles
from gapscope.engine.distributed import current_share, process_group_share, sharing
from gapscope.engine.passes import cross_pair_pass, modality_pass
from gapscope.engine.unit_rows import UnitRows
from gapscope.errors import GapscopeError


def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    y = (x + 0.3 * rng.normal(size=x.shape)).astype(np.float32)
    return x, y, rng.integers(0, 5, size=300)


def after_arrays() -> dict[str, np.ndarray]:
    """A sampled modality pass and a cross pass: what every process must still agree on."""
    x, y, labels = data()
    groups = np.arange(x.shape[0])
    m = modality_pass(x, labels, k=(1, 5), block_size=16, query_index=np.arange(0, 300, 3))
    c = cross_pair_pass(x, y, groups, groups, k=(1, 5), block_size=16)
    return {
        "terms": m.uniformity_row_terms,
        "ranks": m.retrieval.first_rank,
        "ap": m.retrieval.average_precision,
        "x_to_y": c.x_to_y.first_rank,
        "y_to_x": c.y_to_x.first_rank,
    }


@contextmanager
def failing(owner: Any, name: str, error: BaseException, call: int = 1) -> Iterator[None]:
    """``owner.name`` raises ``error`` at its ``call``-th call, on the last process only."""
    share = current_share()
    original = getattr(owner, name)
    calls = [0]

    def patched(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if share.rank == share.world - 1 and calls[0] == call:
            raise error
        return original(*args, **kwargs)

    setattr(owner, name, patched)
    try:
        yield
    finally:
        setattr(owner, name, original)


#: Products each process made in the paced scenarios before it raised.
MADE: dict[str, int] = {}
_COUNTING = threading.Lock()


def paced(name: str, owner: Any, method: str, run: Callable[[], None]) -> None:
    """``run`` with ``owner.method`` counted on every process (in ``MADE[name]``) and failing
    at its first call on the last process: the others must stop within
    ``PACE_ROUNDS`` rounds of blocks, not at the end of the pass."""
    share = current_share()
    original = getattr(owner, method)
    MADE[name] = 0

    def patched(*args: Any, **kwargs: Any) -> Any:
        with _COUNTING:  # lanes make products side by side
            MADE[name] += 1
        if share.rank == share.world - 1:
            raise MemoryError("its first block")
        return original(*args, **kwargs)

    setattr(owner, method, patched)
    try:
        run()
    finally:
        setattr(owner, method, original)


def exact_tiles() -> None:
    """The exact modality pass in tiles of 16 rows: 19 tiles a side, 190 on and above the
    diagonal (95 rounds for 2 processes, 64 for 3)."""
    x, _, labels = data()
    saved = self_tiles._TILE_ROWS
    self_tiles._TILE_ROWS = 16
    try:
        modality_pass(x, labels, k=(1, 5))
    finally:
        self_tiles._TILE_ROWS = saved


def cross_in_small_blocks() -> None:
    """The cross pass in blocks of 4 rows: 75 blocks (38 rounds for 2 processes, 25 for 3)."""
    x, y, _ = data()
    groups = np.arange(x.shape[0])
    cross_pair_pass(x, y, groups, groups, k=(1, 5), block_size=4)


def counting_sweep() -> None:
    """Sampled intra-modal ranks counted down chunks of 4 keys normalised on the fly, without
    the kernel (no round sums to exchange): 75 chunks, 38 rounds for 2 processes, 25 for 3.
    The last process fails at its first chunk; the others count theirs in MADE."""
    x, _, _ = data()
    # Pairs of rows as classes: few enough relevant rows to count down the chunks.
    labels = np.arange(x.shape[0]) // 2
    unit = UnitRows(x, in_memory=False, name="x")
    block, share = unit.block, current_share()
    MADE["sweep_paced"] = 0

    def chunk(start: int, stop: int) -> torch.Tensor:
        if stop - start == 4:  # a chunk of keys, not a row gathered for exact scores
            MADE["sweep_paced"] += 1
            if share.rank == share.world - 1:
                raise MemoryError("its first block")
        return block(start, stop)

    unit.block = chunk  # type: ignore[method-assign]
    saved = passes.key_chunk_columns
    passes.key_chunk_columns = lambda n_queries: 4
    try:
        queries = np.arange(0, 300, 3)
        modality_pass(unit, labels, k=(1, 5), block_size=4, query_index=queries, uniformity=False)
    finally:
        passes.key_chunk_columns = saved


def sampled_pass() -> None:
    x, _, labels = data()
    modality_pass(x, labels, k=(1, 5), block_size=16, query_index=np.arange(0, 300, 3))


def cross() -> None:
    x, y, _ = data()
    groups = np.arange(x.shape[0])
    cross_pair_pass(x, y, groups, groups, k=(1, 5), block_size=16)


def told_then_new() -> None:
    """A failure told to every process and handled, then shared work, then a new failure on
    the last process while handling the first: news to the others, so they hear it too."""

    try:
        current_share().in_order(2, _bad_block, lambda b, v: None, 1)
    except Exception:
        with failing(UnitRows, "block_scores", MemoryError("after a told error"), call=2):
            sampled_pass()


def told_then_raised_from_it() -> None:
    """A failure told to every process and kept; more shared work; then, on the last process
    alone, an error raised from the kept one: news to the others (the exchange that told it
    is past), so they hear it too."""
    try:
        current_share().in_order(2, _bad_block, lambda b, v: None, 1)
    except Exception as exc:
        kept = exc
    sampled_pass()
    share = current_share()
    if share.rank == share.world - 1:
        raise RuntimeError("raised again") from kept


class Unmarkable(Exception):
    """An error that refuses attributes of its own (Python's own, like its traceback, are
    kept)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("__"):
            raise AttributeError(name)
        super().__setattr__(name, value)


def unmarkable_then_more_work() -> None:
    """An error that refuses attributes, raised in the last process's block: told once (not
    again on leaving the block), so the next shared block starts in step."""

    def block(b: int) -> np.ndarray:
        if b == current_share().world - 1:
            raise Unmarkable("no attributes")
        return np.zeros(1)

    current_share().in_order(current_share().world, block, lambda b, v: None, 1)


def _bad_block(b: int) -> np.ndarray:
    if b == 1:
        raise FloatingPointError("block 1")
    return np.zeros(1)


def after_the_last_collective() -> None:
    sampled_pass()
    share = current_share()
    if share.rank == share.world - 1:
        raise RuntimeError("after the pass")


def before_any_collective() -> None:
    share = current_share()
    if share.rank == share.world - 1:
        raise FileNotFoundError(2, "No such file or directory", "image.npy")
    sampled_pass()


SCENARIOS: dict[str, Callable[[], None]] = {
    "block": lambda: _with(UnitRows, "block_scores", MemoryError("a block"), sampled_pass),
    "cross_block": lambda: _with(
        UnitRows, "block_scores", OSError(5, "Input/output error"), cross, call=3
    ),
    "bad_input_in_block": lambda: _with(
        UnitRows, "block_scores", GapscopeError("a bad block"), sampled_pass, call=2
    ),
    "before_any_collective": before_any_collective,
    "after_the_last_collective": after_the_last_collective,
    "told_then_new": told_then_new,
    "told_then_raised_from_it": told_then_raised_from_it,
    "unmarkable": unmarkable_then_more_work,
    "tiles_paced": lambda: paced("tiles_paced", self_tiles._Tiles, "product", exact_tiles),
    "cross_paced": lambda: paced("cross_paced", UnitRows, "block_scores", cross_in_small_blocks),
    "sweep_paced": counting_sweep,
}


def _with(
    owner: Any, name: str, error: BaseException, run: Callable[[], None], call: int = 1
) -> None:
    with failing(owner, name, error, call):
        run()


def main(folder: str, threads: int = 1) -> None:
    import torch.distributed as dist

    torch.set_num_threads(threads)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    try:
        share = process_group_share()
        raised: dict[str, list[str]] = {}
        for name, scenario in SCENARIOS.items():
            try:
                with sharing(process_group_share()):
                    scenario()
                raised[name] = ["", ""]
            except Exception as exc:
                raised[name] = [type(exc).__name__, str(exc)]
        with open(os.path.join(folder, f"raised-{share.rank}.json"), "w") as f:
            json.dump(raised, f)
        with open(os.path.join(folder, f"made-{share.rank}.json"), "w") as f:
            json.dump(MADE, f)
        with sharing(process_group_share()):
            after = after_arrays()
        np.savez(os.path.join(folder, f"after-{share.rank}.npz"), **after)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:3]))
