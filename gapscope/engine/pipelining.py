"""Products overlapped with their consumers.

Two ways to keep every core busy while blocks are multiplied and read:

* :func:`pipelined`: block b + 1 is multiplied (by every core's BLAS thread) while a worker
  thread reads block b. On a GPU the product runs on the device, so this is the whole story.
* :func:`in_lanes`: on a CPU, while the reading thread runs, one core would be shared by a
  BLAS thread and the reader, and a BLAS product waits for its slowest thread: the product
  then runs at the speed of its slowest core. In lanes, each of ``L`` threads multiplies a
  block with ``threads // L`` BLAS threads and then reads it, so no core has two of them.

The O(n d) scans (the validating read, the paired cosines, MIR's moments, ...) run their
slices in lanes too (:func:`scan_lanes`, through
:meth:`~gapscope.engine.distributed.Share.in_order`): most of a slice's work is numpy on one
thread, so one process alone would leave every other core idle.
"""

from __future__ import annotations

import contextvars
import functools
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

import torch
from threadpoolctl import ThreadpoolController

__all__ = [
    "LANE_BYTES",
    "MAX_LANES",
    "InOrder",
    "PerLane",
    "PerThread",
    "in_lanes",
    "lane_count",
    "one_blas_thread",
    "pipelined",
    "run_blocks",
    "scan_lanes",
]

T = TypeVar("T")

#: Lanes at most: each holds its own score buffers, so a machine with many cores gives each
#: lane several BLAS threads rather than a buffer a core.
MAX_LANES = 8

#: The buffers of all lanes together at most (what each holds from block to block: scores,
#: flags, a scratch tile, a chunk of keys): lanes whose buffers are larger are fewer. A
#: pipelined pass holds two score buffers, so two lanes of the largest blocks (512 MiB of
#: scores each) hold what the pipeline held. The temporaries a lane makes while it reads a
#: block (one reader's, e.g. up to ``CANDIDATES_MAX`` candidates of the column ranks) come
#: once a lane.
LANE_BYTES = 1 << 30


def pipelined(n_blocks: int, product: Callable[[int], T], consume: Callable[[T], Any]) -> None:
    """``consume(product(b))`` for every block b, with block b + 1's product (on this thread;
    torch releases the GIL and uses every core) overlapping block b's consumption (ranking
    and counting in numpy, mostly on one core, on a worker thread). ``product`` alternates
    between two buffers, so block b's scores stay intact until their consumer is done. The
    results do not depend on the timing: each block writes its own rows of the outputs, and
    the consumer runs the blocks in order."""
    if n_blocks <= 1:
        for b in range(n_blocks):
            consume(product(b))
        return
    with ThreadPoolExecutor(
        max_workers=1, initializer=_use_device, initargs=(_current_cuda_device(),)
    ) as pool:
        pending: Future[Any] | None = None
        for b in range(n_blocks):
            item = product(b)
            if pending is not None:
                pending.result()
            pending = pool.submit(consume, item)
        assert pending is not None
        pending.result()


def lane_count(device: torch.device, n_blocks: int, lane_bytes: int) -> int:
    """How many lanes :func:`in_lanes` runs for ``n_blocks`` blocks on ``device`` when each
    lane holds ``lane_bytes`` of buffers; ``0`` (use :func:`pipelined`) on other devices than
    a CPU, with one thread, or when that leaves one lane.

    At most :data:`MAX_LANES`, one a block and :data:`LANE_BYTES` of buffers in all; among
    those counts, the one whose lanes keep the most of this process's threads busy (each
    lane gets ``threads // lanes``), the larger on a tie: 12 threads make 6 lanes of 2, not
    8 of 1 with 4 threads idle.

    >>> lane_count(torch.device("meta"), 10, 1)
    0
    """
    if device.type != "cpu":
        return 0
    threads = torch.get_num_threads()
    cap = _lane_cap(threads, n_blocks, lane_bytes)
    if cap < 2:
        return 0
    return max(range(2, cap + 1), key=lambda lanes: (lanes * (threads // lanes), lanes))


def _lane_cap(threads: int, n_blocks: int, lane_bytes: int) -> int:
    """Lanes at most: one a thread, :data:`MAX_LANES`, one a block, and :data:`LANE_BYTES`
    of buffers in all."""
    return min(threads, MAX_LANES, n_blocks, LANE_BYTES // max(lane_bytes, 1))


def scan_lanes(n_blocks: int, lane_bytes: int) -> int:
    """How many lanes a scan of ``n_blocks`` slices of rows runs in on the CPU when each lane
    holds ``lane_bytes`` of buffers of its own: a lane a thread (a scan's BLAS calls run on
    one thread, :func:`one_blas_thread`), at most :data:`MAX_LANES`, one a slice and
    :data:`LANE_BYTES` in all; ``0`` when that leaves one (the slices made in turn).

    >>> scan_lanes(1, 1)
    0
    """
    cap = _lane_cap(torch.get_num_threads(), n_blocks, lane_bytes)
    return cap if cap >= 2 else 0


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """numpy's BLAS on one thread for the block (as it was after it): the scans' float64
    products (MIR's moments, the unit rows' scatter) then give the same bits whatever the
    thread count. OpenBLAS splits a product's output among its threads, and the split
    changes which kernel sums some entries: ``A^T A`` of 5,000 x 300 float64 rows differed
    in some bits between one thread and two on the reference CPU (10,922 x 512 did not)."""
    with _numpy_blas().limit(limits=1, user_api="blas"):
        yield


def in_lanes(
    n_blocks: int,
    lanes: int,
    work: Callable[[int, int], Any],
    *,
    before: Callable[[int], Any] | None = None,
    blas_threads: int | None = None,
) -> None:
    """``work(b, lane)`` for every block b, on ``lanes`` threads that take the blocks in
    order, each with ``blas_threads`` BLAS threads (default ``threads // lanes``; restored
    afterwards). ``lane`` names
    the thread (its buffers are its own); ``work`` must leave results that do not depend on
    which lane ran a block or when (each block writes its own cells, or adds integers under
    a lock). ``before(b)`` runs as block b is taken, one block at a time, in block order
    (the pace's status exchanges are collectives, made in the same order on every process).

    The first error stops the lanes from taking more blocks and is raised here once every
    lane has finished its block: an error of ``before`` if there is one (a status exchange
    that told of another process's failure: every process raised it, so it is the one to
    leave with), else the error of the earliest block, the one a single lane would have met
    first. An interrupt of this thread (Ctrl-C) stops them the same way."""
    lock = threading.Lock()
    state = {"next": 0}
    told: list[BaseException] = []
    failed: list[tuple[int, BaseException]] = []
    device = _current_cuda_device()

    def take() -> int | None:
        with lock:
            b = state["next"]
            if told or failed or b >= n_blocks:
                return None
            state["next"] = b + 1
            try:
                if before is not None:
                    before(b)
            except BaseException as error:
                told.append(error)
                return None
            return b

    def lane(index: int) -> None:
        # The current CUDA device is a thread's own (see _use_device): a CPU pass under a
        # process group of GPUs still exchanges its status there.
        _use_device(device)
        while (b := take()) is not None:
            try:
                work(b, index)
            except BaseException as error:
                with lock:
                    failed.append((b, error))
                return

    count = blas_threads or max(1, torch.get_num_threads() // lanes)
    with _blas_threads(count):
        # Each lane runs in a copy of the caller's context (the share of the processes,
        # gapscope.engine.distributed.current_share, lives there).
        threads = [
            threading.Thread(target=contextvars.copy_context().run, args=(lane, i))
            for i in range(lanes)
        ]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
        except BaseException as interrupt:
            # No lane takes another block; each finishes the one it holds.
            with lock:
                failed.append((-1, interrupt))
            for thread in threads:
                thread.join()
            raise
    if told:
        raise told[0]
    if failed:
        raise min(failed, key=lambda pair: pair[0])[1]


def run_blocks(
    n_blocks: int,
    lanes: int,
    product: Callable[[int, int], T],
    consume: Callable[[T, int], Any],
    pace: Callable[[int], Any],
) -> None:
    """``consume(product(b, buffer), lane)`` for every block b, with ``pace(b)`` made before
    block b's product, in block order: in ``lanes`` lanes (:func:`in_lanes`; ``buffer`` is
    the lane) when ``lanes`` (from :func:`lane_count`), else :func:`pipelined` (``buffer``
    alternates as ``b % 2``; one consumer, lane 0)."""
    if lanes:
        in_lanes(n_blocks, lanes, lambda b, lane: consume(product(b, lane), lane), before=pace)
        return

    def paced(b: int) -> T:
        pace(b)
        return product(b, b % 2)

    pipelined(n_blocks, paced, lambda item: consume(item, 0))


class InOrder(Generic[T]):
    """Values handed in by lanes in any order, folded in index order (0, 1, ...) as soon as
    every earlier one has come: sums that lanes make out of order are added in the order one
    thread would add them, the same bits. A value waits while an earlier one is still being
    made: the values the other lanes finish meanwhile (small for the sweeps' chunks: a
    float64 a query). Lanes whose values are large hold back with :meth:`wait_within` before
    making one, so that at most a few wait.

    >>> folded = []
    >>> order = InOrder(lambda i, v: folded.append(v))
    >>> for i, v in ((1, "b"), (0, "a"), (2, "c")):
    ...     order.put(i, v)
    >>> folded
    ['a', 'b', 'c']
    """

    def __init__(self, fold: Callable[[int, T], Any]) -> None:
        self._fold = fold
        self._next = 0
        self._waiting: dict[int, T] = {}
        self._lock = threading.Lock()
        self._moved = threading.Condition(self._lock)
        self._failed = False

    def put(self, index: int, value: T) -> None:
        with self._lock:
            self._waiting[index] = value
            try:
                while self._next in self._waiting:
                    self._fold(self._next, self._waiting.pop(self._next))
                    self._next += 1
            except BaseException:
                # The folds stop here for good: no lane waits for them.
                self._failed = True
                raise
            finally:
                self._moved.notify_all()

    def fail(self) -> None:
        """Tell the waiting lanes that a value will never come (its making failed)."""
        with self._lock:
            self._failed = True
            self._moved.notify_all()

    def wait_within(self, index: int, lead: int) -> bool:
        """Wait until value ``index`` is fewer than ``lead`` ahead of the next to fold (so at
        most ``lead`` values wait at once); ``False`` when a fold or a value failed first.
        The lane that makes the next value to fold never waits, so the folds go on."""
        with self._moved:
            self._moved.wait_for(lambda: self._failed or index < self._next + lead)
            return not self._failed


class PerThread(Generic[T]):
    """A buffer a thread, made by ``make()`` the first time the thread asks for it and freed
    with the thread: the scratch of a scan whose slices may be made in lanes.

    >>> buffers = PerThread(list)
    >>> buffers() is buffers()
    True
    """

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._local = threading.local()

    def __call__(self) -> T:
        held: T | None = getattr(self._local, "held", None)
        if held is None:
            held = self._local.held = self._make()
        return held


class PerLane(Generic[T]):
    """A buffer a lane, made by ``make()`` the first time the lane asks for it (a consumer
    that does not know how many lanes will call it).

    >>> buffers = PerLane(list)
    >>> buffers(1) is buffers(1), buffers(0) is buffers(1)
    (True, False)
    """

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._held: dict[int, T] = {}

    def __call__(self, lane: int) -> T:
        # Each lane asks for its own key alone: no two threads make the same buffer.
        held = self._held.get(lane)
        if held is None:
            held = self._held[lane] = self._make()
        return held


@contextmanager
def _blas_threads(count: int) -> Iterator[None]:
    """torch's intra-op (and MKL's) thread count, and numpy's BLAS threads, set to ``count``
    for the block, as they were after it. numpy's BLAS (OpenBLAS in numpy's wheels) takes
    every core for each call: two lanes' products at once would each start that many
    threads (measured on 2 cores: two lanes of MIR's moments, a float64 ``A^T A`` a slice,
    took as long as one thread making the slices in turn, 5.2 s a million rows of d = 512,
    and 3.8 s with one BLAS thread a lane)."""
    previous = torch.get_num_threads()
    with _numpy_blas().limit(limits=count, user_api="blas"):
        if count == previous:
            yield
            return
        torch.set_num_threads(count)
        try:
            yield
        finally:
            torch.set_num_threads(previous)


@functools.cache
def _numpy_blas() -> ThreadpoolController:
    """The BLAS libraries loaded in this process, found once (threadpoolctl inspects the
    process's shared libraries)."""
    return ThreadpoolController()


def _current_cuda_device() -> int | None:
    """This thread's current CUDA device, when CUDA is in use (else ``None``)."""
    # is_initialized first: asking whether CUDA is available would start its driver.
    if torch.cuda.is_initialized():
        return torch.cuda.current_device()
    return None


def _use_device(device: int | None) -> None:
    """Make ``device`` the worker's current CUDA device. The current device is a thread's own:
    a new thread starts on cuda:0, so under torchrun every rank's consumer would copy to
    cuda:0 (``Share.sum`` and ``Share.gather`` move arrays with ``.cuda()``), and NCCL refuses
    two ranks on one GPU."""
    if device is not None:
        torch.cuda.set_device(device)
