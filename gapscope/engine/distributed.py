"""The O(n^2) passes shared among the processes of a ``torch.distributed`` group.

Under ``torchrun --nproc-per-node N -m gapscope analyze ...`` (or ``srun``) every process
reads the same input and runs the same analysis; only the similarity passes are split. A pass
cuts its query rows into blocks (:func:`~gapscope.engine.blocks.row_blocks`) and process
``rank`` of ``world`` takes blocks ``rank, rank + world, ...`` (:meth:`Share.blocks`). What a
block produces is either a value of its own queries (a first rank, an average precision, a
uniformity row term), which every other process leaves at zero, or a count (rows that outrank
a column query's best positive); :meth:`Share.sum` adds them over the processes. Adding zeros
and integers is exact, and every score is made by the same product tile whichever process
makes it (:meth:`~gapscope.engine.unit_rows.UnitRows.block_scores`), so every process ends
with the arrays a single process would have, bit for bit. Scans whose blocks are combined in
a fixed order (the validating read with its norms and sums, MIR's moments and medians, the
paired cosines, the alignment, the unit rows' scatter, the what-ifs' gap sums) share their
blocks through
:meth:`Share.in_order`: each block is made by one process, gathered to all, and every process
combines them all in block order. Values of each row or pair alone (the what-ifs' row scan,
the similarity statistics' cosines of the positive pairs and of the sampled negative pairs)
are written into their places the same way (:meth:`Share.rows_in_order`).
A sweep of sampled queries over chunks of keys (the sampled kernels, and the intra-modal ranks
counted down their chunks) shares its chunks the same way, a round at a time. The rest of the
analysis (bootstrap, the other diagnostics on their capped samples, readings) runs on each
process alike.

Every collective starts with a status exchange (:meth:`Share.raise_together`), a pass's
blocks make one every :data:`PACE_ROUNDS` rounds (:meth:`Share.keep_pace`), and a process
that leaves the :func:`sharing` block with an error makes that exchange on its way out, so a
failure on one process anywhere in the shared work is raised on every process at the next
exchange (there as :class:`~gapscope.errors.ProcessFailedError` or
:class:`~gapscope.errors.ProcessCrashedError`), never left for the group's timeout.

A pass reads :func:`current_share`, which is one process alone unless :func:`sharing` says
otherwise: a library caller opts in (``analyze(..., distributed=True)``), because a process
group in a training script does not mean that every rank calls ``analyze``.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gapscope.engine.pipelining import InOrder, in_lanes, one_blas_thread, scan_lanes
from gapscope.errors import GapscopeError, ProcessCrashedError, ProcessFailedError

__all__ = [
    "ProcessCrashedError",
    "ProcessFailedError",
    "RankInfo",
    "Share",
    "current_share",
    "init_process_group",
    "launcher_rank",
    "process_group",
    "process_group_share",
    "rank_device",
    "sharing",
]


@dataclass(frozen=True)
class RankInfo:
    """Where a launcher (torchrun, srun) placed this process."""

    rank: int
    world_size: int
    local_rank: int


def launcher_rank(environ: Mapping[str, str] | None = None) -> RankInfo | None:
    """The rank of this process when ``torchrun`` (``RANK``, ``WORLD_SIZE``) or Slurm's
    ``srun`` (``SLURM_PROCID``, ``SLURM_NTASKS``, with ``MASTER_ADDR`` exported) started two
    or more; ``None`` otherwise. Slurm's variables alone do not count: a batch script of
    several tasks sets them for a command it runs once, outside ``srun``.

    >>> launcher_rank({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    RankInfo(rank=1, world_size=4, local_rank=1)
    >>> slurm = {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1"}
    >>> launcher_rank({**slurm, "MASTER_ADDR": "node1"})
    RankInfo(rank=3, world_size=4, local_rank=1)
    >>> launcher_rank(slurm) is None, launcher_rank({}) is None
    (True, True)
    """
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" in env:
        names = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
    elif "SLURM_NTASKS" in env and "SLURM_PROCID" in env and env.get("MASTER_ADDR"):
        names = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")
    else:
        return None
    try:
        rank = int(env.get(names[0], "0"))
        world = int(env[names[1]])
        local = int(env.get(names[2], str(rank)))
    except ValueError:
        raise GapscopeError(f"{', '.join(names)} must be integers") from None
    if world <= 1:
        return None
    if not 0 <= rank < world:
        raise GapscopeError(f"{names[0]}={rank} is not a rank of {names[1]}={world}")
    return RankInfo(rank=rank, world_size=world, local_rank=local)


def rank_device(device: str, info: RankInfo) -> str:
    """One GPU a rank: ``auto``/``cuda`` become ``cuda:LOCAL_RANK`` when CUDA is there."""
    import torch

    if device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{info.local_rank % torch.cuda.device_count()}"
    return device


def init_process_group(info: RankInfo, backend: str) -> None:
    """Join the default process group as ``info`` says (once; torchrun sets ``MASTER_ADDR``
    and ``MASTER_PORT``, under ``srun`` export them)."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:
        raise GapscopeError(
            f"{' and '.join(missing)} must be set for {info.world_size} processes to meet "
            "(torchrun sets them; under srun, export them)"
        )
    dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)


@contextlib.contextmanager
def process_group(info: RankInfo, device: str) -> Iterator[str]:
    """Join the default process group for one command and leave it after; yields this
    rank's device (:func:`rank_device`): NCCL between GPUs, gloo otherwise."""
    import torch.distributed as dist

    rank_dev = rank_device(device, info)
    owned = not dist.is_initialized()
    if rank_dev.startswith("cuda"):
        import torch

        # NCCL reduces on the current device (Share.sum's ``.cuda()``): each rank's own GPU,
        # not cuda:0 for every rank.
        torch.cuda.set_device(rank_dev)
    init_process_group(info, "nccl" if rank_dev.startswith("cuda") else "gloo")
    try:
        yield rank_dev
    finally:
        if owned:
            dist.destroy_process_group()


#: The passes' blocks make a status exchange every this many rounds (a round: one block of
#: every process), besides the collective that ends the pass: a process that fails in a block
#: is heard within that many rounds, and the processes never drift further apart than that.
#: One exchange took 0.65 ms between two gloo processes (docs/performance.md).
PACE_ROUNDS = 8

# What a process says in the status exchange: nothing wrong, or how it failed, so that the
# others raise an error of the same kind (a caller that goes on after bad input, but not after
# a crash, then does the same on every process).
_OK, _BAD_INPUT, _CRASH = 0.0, 1.0, 2.0


@dataclass
class _Exchanges:
    """The errors the latest status exchange of a share raised on this process (every process
    raised with one at the same exchange); emptied by the next exchange."""

    raised: list[BaseException] = field(default_factory=list)


def _failure_kind(error: BaseException | None) -> float:
    if error is None:
        return _OK
    return _BAD_INPUT if isinstance(error, GapscopeError | OSError) else _CRASH


@dataclass(frozen=True)
class Share:
    """This process's share of every pass: blocks ``rank, rank + world, ...``.

    Attributes:
        rank: this process, from 0.
        world: how many processes share the passes (1: this one alone).
        group: the ``torch.distributed`` process group (``None``: the default group).
        exchanges: the errors the latest status exchange raised here (:meth:`told`).
    """

    rank: int = 0
    world: int = 1
    group: Any = None
    exchanges: _Exchanges = field(default_factory=_Exchanges, compare=False, repr=False)

    def blocks(self, n_blocks: int) -> range:
        """The blocks of a pass of ``n_blocks`` that this process computes.

        >>> list(Share(1, 3).blocks(7))
        [1, 4]
        """
        return range(self.rank, n_blocks, self.world)

    def keep_pace(self, done: int) -> None:
        """The status exchange of a pass's blocks, made before this process's block ``done``
        (its ``done``-th of :meth:`blocks`: round ``done`` of the pass) every
        :data:`PACE_ROUNDS` rounds.

        A pass's blocks end in one :meth:`sum`, which would otherwise be the first
        collective after hours of blocks at scale: a process that failed in its first block
        would be heard only then (and its own exchange on the way out could time out first),
        and processes that drift apart over the whole pass would meet the group's timeout
        (ten minutes for NCCL by default). Every process must make the same exchanges:
        after its last block it calls :meth:`catch_up`.

        >>> Share().keep_pace(PACE_ROUNDS)
        """
        if self.world > 1 and done and done % PACE_ROUNDS == 0:
            self.raise_together(None)

    def catch_up(self, done: int, n_blocks: int) -> None:
        """The exchanges of :meth:`keep_pace` for the rounds of a pass of ``n_blocks`` after
        this process's last block (``done`` blocks made), so that a process with a block
        fewer makes as many as the others.

        >>> Share(1, 2).catch_up(len(Share(1, 2).blocks(7)), 7)
        """
        for r in range(done, -(-n_blocks // self.world)):
            self.keep_pace(r)

    def sum(self, *arrays: np.ndarray, error: BaseException | None = None) -> None:
        """Add each array (C-contiguous, writable) over the processes, in place.

        A collective: every process calls it, after the status exchange of
        :meth:`raise_together` (a process that failed before it makes every process raise);
        ``error`` is this process's own failure since the last collective, caught by the
        caller, which the exchange raises here and names on every other process."""
        if self.world == 1:
            if error is not None:
                raise error
            return
        import torch
        import torch.distributed as dist

        on_gpu = dist.get_backend(self.group) == "nccl"
        # Made before the exchange, so a copy that fails (the GPU's memory) fails on this
        # process alone and is heard by the others, not in the middle of the reductions.
        tensors = [torch.from_numpy(array) for array in arrays if array.size]
        moved = [tensor.cuda() for tensor in tensors] if on_gpu else tensors
        self.raise_together(error)
        for tensor in moved:
            dist.all_reduce(tensor, group=self.group)
        if on_gpu:
            for tensor, back in zip(tensors, moved, strict=True):
                tensor.copy_(back.cpu())

    def gather(self, array: np.ndarray, error: BaseException | None = None) -> np.ndarray:
        """Every process's ``array`` (same shape and dtype on each), stacked in rank order:
        their bits as made (a sum with zeros would turn ``-0.0`` into ``+0.0``). A collective,
        after the status exchange of :meth:`raise_together` (``error``: as for :meth:`sum`)."""
        if self.world == 1:
            if error is not None:
                raise error
            return array[None].copy()
        tensor, parts = self._gather_buffers(array)
        self.raise_together(error)
        return self._gather_into(tensor, parts)

    def _gather_buffers(self, array: np.ndarray) -> tuple[Any, list[Any]]:
        import torch
        import torch.distributed as dist

        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if dist.get_backend(self.group) == "nccl":
            tensor = tensor.cuda()
        return tensor, [torch.empty_like(tensor) for _ in range(self.world)]

    def _gather_into(self, tensor: Any, parts: list[Any]) -> np.ndarray:
        import torch.distributed as dist

        dist.all_gather(parts, tensor, group=self.group)
        return np.stack([part.cpu().numpy() for part in parts])

    def raise_together(self, error: BaseException | None) -> None:
        """The status exchange: raise ``error`` on the process that failed and an error naming
        it on every other (:class:`ProcessFailedError` when it failed on its input,
        :class:`ProcessCrashedError` otherwise), so that no process waits in a later collective
        for one that left. Every process calls it (a collective); every other collective of a
        :class:`Share` starts with it, and :func:`sharing` calls it when a process leaves the
        shared work with an error the others have not been told of, so a failure anywhere is
        raised on every process at the next collective.

        >>> Share().raise_together(None)
        """
        if self.world == 1:
            if error is not None:
                raise error
            return
        tensor, parts = self._gather_buffers(np.array([_failure_kind(error)]))
        flags = self._gather_into(tensor, parts)[:, 0]
        # Held by identity, not marked on the error: an error may refuse new attributes.
        self.exchanges.raised.clear()
        if error is not None:
            self.exchanges.raised.append(error)
            raise error
        failed = np.flatnonzero(flags)
        if failed.size:
            p = int(failed[0])
            kind = ProcessFailedError if flags[p] == _BAD_INPUT else ProcessCrashedError
            peer = kind(
                f"process {p} of {self.world} failed "
                f"{'on its input' if kind is ProcessFailedError else '(a crash)'}; "
                "its own message says why"
            )
            self.exchanges.raised.append(peer)
            raise peer

    def told(self, error: BaseException) -> bool:
        """Whether every process already raised with ``error``: it came out of this share's
        latest status exchange, or was raised from one that did (``raise ... from``). An error
        told earlier and handled before more collectives does not count, nor does one raised
        while handling a told error without ``from``: what failed since is news to the
        others."""
        seen: set[int] = set()
        current: BaseException | None = error
        while current is not None and id(current) not in seen:
            if any(current is raised for raised in self.exchanges.raised):
                return True
            seen.add(id(current))
            current = current.__cause__
        return False

    def in_order(
        self,
        n_blocks: int,
        make: Callable[[int], np.ndarray],
        fold: Callable[[int, np.ndarray], None],
        size: int,
        *,
        lane_bytes: int | None = None,
    ) -> None:
        """``fold(b, make(b))`` for every block ``b`` in order, each block made by one
        process: for a scan whose blocks are combined in a fixed order (float64 sums), so
        that sharing it keeps its bits.

        With ``lane_bytes`` (the buffers ``make`` holds a thread: ``make`` must then be safe
        to call from several threads at once, with scratch of each thread's own), one
        process alone makes the blocks in lanes on the CPU
        (:func:`~gapscope.engine.pipelining.scan_lanes`) and folds them in block order as
        they come (:class:`~gapscope.engine.pipelining.InOrder`): the same folds in the same
        order, so the same bits. The first error in block order is raised, as alone.
        Either way ``make`` runs with numpy's BLAS on one thread
        (:func:`~gapscope.engine.pipelining.one_blas_thread`), so its bits do not depend on
        the thread count.

        In round ``r`` process ``p`` makes block ``r * world + p`` (``size`` float64 values);
        the round's blocks are gathered to every process and folded in block order, so every
        process folds the values one process alone would, in the same order, holding
        ``world`` blocks at a time. Every process runs every round, and an error in one
        process's ``make`` is raised on every process (on the others as
        :class:`~gapscope.errors.ProcessFailedError` or
        :class:`~gapscope.errors.ProcessCrashedError`, naming the process) rather than leaving
        the others waiting.

        >>> seen = []
        >>> Share().in_order(3, lambda b: np.full(2, b), lambda b, v: seen.append(int(v[0])), 2)
        >>> seen
        [0, 1, 2]
        """
        with one_blas_thread():
            if self.world == 1 and lane_bytes is not None:
                lanes = scan_lanes(n_blocks, lane_bytes)
                if lanes:
                    self._in_lanes(n_blocks, make, fold, lanes)
                    return
            for r in range(-(-n_blocks // self.world)):
                self.round(r, n_blocks, make, fold, size)

    @staticmethod
    def _in_lanes(
        n_blocks: int,
        make: Callable[[int], np.ndarray],
        fold: Callable[[int, np.ndarray], None],
        lanes: int,
    ) -> None:
        """:meth:`in_order`'s blocks made in ``lanes`` lanes, each with one BLAS thread, and
        folded in order. A lane makes a block only once it is fewer than ``2 * lanes`` ahead
        of the next to fold: a block's values can be ``d^2`` float64 (MIR's moments), and a
        slow block would otherwise leave every later one waiting in memory."""
        order: InOrder[np.ndarray] = InOrder(fold)

        def work(b: int, _: int) -> None:
            if not order.wait_within(b, 2 * lanes):
                return  # an earlier block failed: its error is the one raised
            try:
                value = make(b)
            except BaseException:
                order.fail()
                raise
            order.put(b, value)

        in_lanes(n_blocks, lanes, work, blas_threads=1)

    def rows_in_order(
        self,
        out: np.ndarray,
        chunk: int,
        make: Callable[[int, int], np.ndarray],
        *,
        lane_bytes: int | None = None,
    ) -> None:
        """``out[..., start:stop] = make(start, stop)`` for every chunk ``start:stop`` of the
        last axis of ``out``, ``chunk`` wide: for values of each position alone (a row's norm,
        a pair's cosine). Each chunk is made by one process (:meth:`in_order`, the last chunk
        padded) and written by every process, so every process ends with every value, as made.
        ``lane_bytes``: as for :meth:`in_order` (the chunk's own values counted here).

        >>> out = np.zeros((2, 5))
        >>> Share().rows_in_order(out, 2, lambda a, b: np.arange(a, b) * [[1.0], [-1.0]])
        >>> out.tolist()
        [[0.0, 1.0, 2.0, 3.0, 4.0], [-0.0, -1.0, -2.0, -3.0, -4.0]]
        """
        self.rows_in_order_of_each([(out, chunk, make)], lane_bytes=lane_bytes)

    def rows_in_order_of_each(
        self,
        requests: Sequence[tuple[np.ndarray, int, Callable[[int, int], np.ndarray]]],
        *,
        lane_bytes: int | None = None,
    ) -> None:
        """:meth:`rows_in_order` of several ``(out, chunk, make)`` in one scan: the chunks of
        the first, then of the next, so that lanes, or processes, make chunks of different
        arrays side by side where each array alone may be one chunk (two modalities of
        20,000 rows). Each chunk's values are padded to the largest request's chunk.

        >>> a, b = np.zeros((1, 3)), np.zeros((2, 2))
        >>> counts = lambda s, e: np.arange(s, e)[None] * 1.0
        >>> Share().rows_in_order_of_each([(a, 2, counts), (b, 1, lambda s, e: np.ones((2, 1)))])
        >>> a.tolist(), b.tolist()
        ([[0.0, 1.0, 2.0]], [[1.0, 1.0], [1.0, 1.0]])
        """
        chunks = []
        for r, (out, chunk, _) in enumerate(requests):
            if out.dtype != np.float64 or chunk < 1:
                raise ValueError(
                    f"rows_in_order: a float64 out and a chunk >= 1, not {out.dtype}, {chunk}"
                )
            n = out.shape[-1]
            chunks += [(r, start, min(n, start + chunk)) for start in range(0, n, chunk)]
        widths = [math.prod(out.shape[:-1]) * chunk for out, chunk, _ in requests]
        size = max(widths, default=0)

        def made(c: int) -> np.ndarray:
            r, start, stop = chunks[c]
            out, chunk, make = requests[r]
            lead = out.shape[:-1]
            got = np.asarray(make(start, stop))
            if got.shape != (*lead, stop - start):
                raise ValueError(
                    f"rows_in_order: make({start}, {stop}) gave shape {got.shape}, "
                    f"not {(*lead, stop - start)}"
                )
            values = np.zeros(size)
            values[: widths[r]].reshape(*lead, chunk)[..., : stop - start] = got
            return values

        def fold(c: int, packed: np.ndarray) -> None:
            r, start, stop = chunks[c]
            out, chunk, _ = requests[r]
            lead = out.shape[:-1]
            out[..., start:stop] = packed[: widths[r]].reshape(*lead, chunk)[..., : stop - start]

        held = None if lane_bytes is None else lane_bytes + 16 * size
        self.in_order(len(chunks), made, fold, size, lane_bytes=held)

    def round(
        self,
        r: int,
        n_blocks: int,
        make: Callable[[int], np.ndarray],
        fold: Callable[[int, np.ndarray], None],
        size: int,
    ) -> None:
        """Round ``r`` of :meth:`in_order`: this process makes block ``r * world + rank``
        (``make`` is not called past the last block), and every block of the round is folded
        in order. For a scan that makes its blocks itself, a round at a time (every process
        must run every round)."""
        b = r * self.world + self.rank
        if self.world == 1:
            fold(b, make(b))
            return
        mine = np.zeros(size)
        error: Exception | None = None
        if b < n_blocks:
            try:
                mine[:] = make(b)
            except Exception as exc:  # raised below, on every process alike
                error = exc
        blocks = self.gather(mine, error)
        for p in range(min(self.world, n_blocks - r * self.world)):
            fold(r * self.world + p, blocks[p])


_ALONE = Share()
_CURRENT: contextvars.ContextVar[Share] = contextvars.ContextVar("gapscope_share", default=_ALONE)


def current_share() -> Share:
    """The share the passes run under now (one process alone unless :func:`sharing`)."""
    return _CURRENT.get()


@contextlib.contextmanager
def sharing(share: Share) -> Iterator[Share]:
    """Run the passes inside the ``with`` block shared as ``share`` says.

    Every process must run the block. One that leaves it with an error the others have not
    been told of tells them (:meth:`Share.raise_together`): they raise at their next
    collective, or on leaving the block, which ends with a last status exchange."""
    token = _CURRENT.set(share)
    try:
        yield share
        share.raise_together(None)
    except Exception as exc:
        if not share.told(exc):
            try:
                share.raise_together(exc)
            except Exception as failed:
                if failed is exc:
                    raise
                # The exchange itself failed (a process gone, a broken device): the error
                # that brought this process here is still the one to report.
                raise exc from failed
        raise
    finally:
        _CURRENT.reset(token)


def process_group_share(group: Any = None) -> Share:
    """The share of this process in ``group`` (default: the default group, which must be
    initialised: ``torch.distributed.init_process_group``)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise GapscopeError(
            "distributed=True needs an initialised torch.distributed process group "
            "(torch.distributed.init_process_group)"
        )
    return Share(rank=dist.get_rank(group), world=dist.get_world_size(group), group=group)
