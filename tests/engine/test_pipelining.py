"""Lanes (gapscope.engine.pipelining.in_lanes): blocks multiplied and read side by side."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from gapscope.engine import pipelining
from gapscope.engine.pipelining import LANE_BYTES, MAX_LANES, in_lanes, lane_count


@pytest.fixture
def threads():
    previous = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(previous)


def test_every_block_once_with_the_hook_in_block_order(threads):
    threads(4)
    done: dict[int, tuple[int, str]] = {}
    hooked: list[int] = []
    inside: list[int] = []

    def work(b: int, lane: int) -> None:
        inside.append(torch.get_num_threads())
        done[b] = (lane, threading.current_thread().name)

    in_lanes(23, 2, work, before=hooked.append)
    assert sorted(done) == list(range(23))
    assert hooked == list(range(23))
    assert {lane for lane, _ in done.values()} <= {0, 1}
    # Two threads a lane while they run (4 / 2), four again afterwards.
    assert set(inside) == {2}
    assert torch.get_num_threads() == 4


def test_the_earliest_blocks_error_is_raised_and_no_block_is_taken_after_it(threads):
    threads(3)
    taken: list[int] = []
    gate = threading.Barrier(3)

    def work(b: int, lane: int) -> None:
        taken.append(b)
        if b < 3:
            # The three lanes hold blocks 0, 1 and 2 at once; 1 and 2 fail, and block 0
            # finishes well after them.
            gate.wait(timeout=10)
        if b in (1, 2):
            raise ValueError(f"block {b}")
        time.sleep(0.5)

    with pytest.raises(ValueError, match="block 1"):
        in_lanes(50, 3, work)
    assert sorted(taken) == [0, 1, 2]
    assert torch.get_num_threads() == 3


def test_an_exchange_that_told_of_a_failure_wins_over_a_lanes_own(threads):
    # Every process raised what the exchange told; a lane's own error, raised instead, would
    # be announced in one more exchange that the others, gone, never make.
    threads(2)
    told = RuntimeError("process 1 of 2 failed")
    exchanging, failing = threading.Event(), threading.Event()

    def work(b: int, lane: int) -> None:
        if b == 0:
            # Block 0 fails while the other lane makes the exchange before block 1.
            exchanging.wait(timeout=10)
            failing.set()
            raise MemoryError("block 0")

    def before(b: int) -> None:
        if b == 1:
            exchanging.set()
            failing.wait(timeout=10)
            raise told

    with pytest.raises(RuntimeError) as raised:
        in_lanes(10, 2, work, before=before)
    assert raised.value is told


def test_a_failing_hook_stops_the_lanes(threads):
    threads(2)
    done: list[int] = []

    def before(b: int) -> None:
        if b == 5:
            raise RuntimeError("the exchange before block 5")

    with pytest.raises(RuntimeError, match="block 5"):
        in_lanes(40, 2, lambda b, lane: done.append(b), before=before)
    assert sorted(done) == [0, 1, 2, 3, 4]
    assert torch.get_num_threads() == 2


def test_an_interrupt_stops_the_lanes_and_is_raised_after_them(threads, monkeypatch):
    threads(2)
    done: list[int] = []
    calls = [0]
    join = threading.Thread.join

    def interrupted_join(self, timeout=None):
        calls[0] += 1
        if calls[0] == 1:
            time.sleep(0.2)
            raise KeyboardInterrupt
        return join(self, timeout)

    lanes: set[threading.Thread] = set()

    def work(b: int, lane: int) -> None:
        lanes.add(threading.current_thread())
        time.sleep(0.05)
        done.append(b)

    monkeypatch.setattr(threading.Thread, "join", interrupted_join)
    with pytest.raises(KeyboardInterrupt):
        in_lanes(1000, 2, work)
    monkeypatch.undo()
    # Each lane finished the block it held, then took no more, before the interrupt left.
    assert lanes and not any(lane.is_alive() for lane in lanes)
    assert len(done) < 20
    assert sorted(done) == list(range(len(done)))
    assert torch.get_num_threads() == 2


def test_lane_count(threads):
    cpu = torch.device("cpu")
    threads(3)
    assert lane_count(cpu, 100, 1) == 3
    # No more lanes than blocks, than fit the buffers' budget, or than MAX_LANES.
    assert lane_count(cpu, 2, 1) == 2
    assert lane_count(cpu, 100, LANE_BYTES // 2) == 2
    # One lane left is no lane: the caller pipelines.
    assert lane_count(cpu, 1, 1) == 0
    assert lane_count(cpu, 100, LANE_BYTES) == 0
    assert lane_count(torch.device("meta"), 100, 1) == 0
    threads(1)
    assert lane_count(cpu, 100, 1) == 0
    # The most threads kept busy, the more lanes on a tie: 2 lanes of 2 threads, not 3 of 1
    # with one idle; 6 lanes of 2, not 8 of 1 with 4 idle.
    threads(4)
    assert lane_count(cpu, 100, 1) == 4
    assert lane_count(cpu, 3, 1) == 2
    threads(12)
    assert lane_count(cpu, 100, 1) == 6
    threads(MAX_LANES)
    assert lane_count(cpu, 100, 1) == MAX_LANES
    threads(16)
    assert lane_count(cpu, 100, 1) == MAX_LANES


def test_lanes_share_the_threads_out(threads, monkeypatch):
    # Each lane gets threads // lanes BLAS threads, at least one.
    seen = []
    monkeypatch.setattr(pipelining.torch, "set_num_threads", seen.append)
    monkeypatch.setattr(pipelining.torch, "get_num_threads", lambda: 7)
    in_lanes(4, 3, lambda b, lane: None)
    assert seen == [2, 7]


def test_lanes_see_the_callers_share(threads):
    from gapscope.engine.distributed import Share, current_share, sharing

    threads(2)
    seen = []
    share = Share(0, 1)
    with sharing(share):
        in_lanes(4, 2, lambda b, lane: seen.append(current_share() is share))
    assert seen == [True] * 4
