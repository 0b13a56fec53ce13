"""The passes shared among processes (gapscope.engine.distributed) against one process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from distributed_worker import MADE_BLOCKS, SIMILARITY_CHUNKS, STREAMED_CHUNKS, pass_arrays
from failing_ranks_worker import after_arrays
from process_group import run_ranks

from gapscope import analyze
from gapscope.engine.distributed import (
    PACE_ROUNDS,
    Share,
    current_share,
    launcher_rank,
    sharing,
)
from gapscope.errors import GapscopeError

WORKER = Path(__file__).parents[1] / "distributed_worker.py"


@pytest.mark.parametrize(("world", "threads"), [(2, 1), (3, 1), (2, 3)])
def test_shared_passes_give_every_process_the_single_process_arrays(tmp_path, world, threads):
    # With several threads a process runs its CPU blocks in lanes, which take the blocks
    # and make the pace's exchanges in order.
    run_ranks(WORKER, world, str(tmp_path), str(threads))
    alone = pass_arrays()
    for rank in range(world):
        with np.load(tmp_path / f"rank-{rank}.npz") as shared:
            assert sorted(shared.files) == sorted(alone)
            for name, array in alone.items():
                assert shared[name].dtype == array.dtype, name
                assert shared[name].tobytes() == array.tobytes(), name
    # The chunks of streamed keys, and the blocks made in order, were shared out: no process
    # made them all.
    counts = [(tmp_path / f"chunks-{rank}.txt").read_text().split() for rank in range(world)]
    chunks, made, similarity = ([int(c[i]) for c in counts] for i in (0, 1, 2))
    assert sum(chunks) == STREAMED_CHUNKS[0] and max(chunks) < STREAMED_CHUNKS[0]
    assert sum(made) == MADE_BLOCKS[0] == 7 and max(made) < 7
    assert sum(similarity) == SIMILARITY_CHUNKS[0] == 29 + 14 and max(similarity) < 43


def test_block_sizes_agree_with_each_other_alone():
    # The worker's block size (37) against the default: the same arrays either way, so the
    # comparison above checks the shares, not a lucky block size.
    a, b = pass_arrays(37), pass_arrays(None)
    for name in a:
        assert a[name].tobytes() == b[name].tobytes(), name


def test_share_blocks_cover_every_block_once():
    n = 11
    seen = sorted(b for rank in range(4) for b in Share(rank, 4).blocks(n))
    assert seen == list(range(n))


def test_one_process_alone_unless_told(monkeypatch):
    # No process group here: the status exchange on leaving the block is left out.
    monkeypatch.setattr(Share, "raise_together", lambda self, error: None)
    assert current_share() == Share()
    with sharing(Share(1, 2)) as share:
        assert current_share() is share
    assert current_share() == Share()


def test_distributed_without_a_process_group_is_one_line():
    arrays = {"image": np.eye(3, dtype=np.float32), "text": np.eye(3, dtype=np.float32)}
    with pytest.raises(GapscopeError, match="init_process_group"):
        analyze(arrays, distributed=True, device="cpu")


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"RANK": "x", "WORLD_SIZE": "2"}, "must be integers"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "not a rank"),
    ],
)
def test_bad_launcher_variables(env, match):
    with pytest.raises(GapscopeError, match=match):
        launcher_rank(env)


def test_a_gpu_rank_reduces_on_its_own_gpu(monkeypatch):
    # Share.sum moves arrays with .cuda(), the current device: under torchrun each rank must
    # make its own GPU current, or every rank would reduce on cuda:0 (NCCL refuses that).
    import torch
    import torch.distributed as dist

    from gapscope.engine import distributed

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set", device)))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(
        distributed, "init_process_group", lambda info, backend: calls.append(("init", backend))
    )
    monkeypatch.setattr(dist, "destroy_process_group", lambda: calls.append(("destroy",)))
    info = distributed.RankInfo(rank=3, world_size=4, local_rank=2)
    with distributed.process_group(info, "auto") as device:
        assert device == "cuda:2"
    assert calls == [("set", "cuda:2"), ("init", "nccl"), ("destroy",)]


def test_the_pipelines_worker_uses_the_callers_gpu(monkeypatch):
    # The current CUDA device is a thread's own; the consumer thread must take the caller's.
    import threading

    import torch

    from gapscope.engine.pipelining import pipelined

    devices: dict[str, int] = {}
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    monkeypatch.setattr(
        torch.cuda, "set_device", lambda d: devices.__setitem__(threading.current_thread().name, d)
    )
    seen = []
    pipelined(3, lambda b: b, seen.append)
    assert seen == [0, 1, 2]
    assert list(devices.values()) == [3]
    assert threading.current_thread().name not in devices


FAILING = Path(__file__).parents[1] / "failing_ranks_worker.py"


@pytest.mark.parametrize(("world", "threads"), [(2, 1), (3, 1), (2, 3)])
def test_a_process_that_fails_anywhere_fails_every_process(tmp_path, world, threads):
    # The last process fails inside a pass's own blocks (a crash, a failed read, bad input),
    # before any collective, after the last one, while handling an error every process was
    # told of, from such an error after more collectives, and with an error that refuses
    # attributes. Every other process raises at its next collective (or on leaving the
    # shared block) an error of the same kind, instead of waiting for the group's timeout;
    # then one more shared pass gives the single-process arrays, so none was left behind.
    # With several threads a process runs its CPU blocks in lanes: the others must still stop
    # at the same exchange.
    run_ranks(FAILING, world, str(tmp_path), str(threads), timeout=240)
    last = world - 1
    crashed = [
        "ProcessCrashedError",
        f"process {last} of {world} failed (a crash); its own message says why",
    ]
    bad = [
        "ProcessFailedError",
        f"process {last} of {world} failed on its input; its own message says why",
    ]
    expected_last = {
        "block": ["MemoryError", "a block"],
        "cross_block": ["OSError", "[Errno 5] Input/output error"],
        "bad_input_in_block": ["GapscopeError", "a bad block"],
        "before_any_collective": [
            "FileNotFoundError",
            "[Errno 2] No such file or directory: 'image.npy'",
        ],
        "after_the_last_collective": ["RuntimeError", "after the pass"],
        "told_then_new": ["MemoryError", "after a told error"],
        "told_then_raised_from_it": ["RuntimeError", "raised again"],
        "unmarkable": ["Unmarkable", "no attributes"],
        "tiles_paced": ["MemoryError", "its first block"],
        "cross_paced": ["MemoryError", "its first block"],
        "sweep_paced": ["MemoryError", "its first block"],
    }
    kinds = {
        "block": crashed,
        "cross_block": bad,
        "bad_input_in_block": bad,
        "before_any_collective": bad,
        "after_the_last_collective": crashed,
        "told_then_new": crashed,
        "told_then_raised_from_it": crashed,
        "unmarkable": crashed,
        "tiles_paced": crashed,
        "cross_paced": crashed,
        "sweep_paced": crashed,
    }
    for rank in range(world):
        raised = json.loads((tmp_path / f"raised-{rank}.json").read_text())
        assert raised == (expected_last if rank == last else kinds), rank
    # The last process failed at its first block of a long pass (190 tiles; 75 blocks of the
    # cross pass; 75 chunks of keys of a sweep that only counts); the others heard of it
    # within PACE_ROUNDS rounds of their own blocks, not after all of them (95, 38 and 38
    # with 2 processes, 64, 25 and 25 with 3). The sweep exchanges where its chunks are
    # consumed, while the next chunk's product is made.
    for rank in range(last):
        made = json.loads((tmp_path / f"made-{rank}.json").read_text())
        assert made["tiles_paced"] == made["cross_paced"] == PACE_ROUNDS, (rank, made)
        assert made["sweep_paced"] <= PACE_ROUNDS + 2, (rank, made)
    alone = after_arrays()
    for rank in range(world):
        with np.load(tmp_path / f"after-{rank}.npz") as shared:
            for name, array in alone.items():
                assert shared[name].tobytes() == array.tobytes(), name
