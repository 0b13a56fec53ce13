"""Uniformity and intra-modal ranks of every row of a modality from half of ``X X^T``.

``X X^T`` is symmetric, so the exact pass of :func:`~gapscope.engine.passes.modality_pass`
multiplies only the tiles on and above its diagonal: the rows are cut into tiles of
:func:`tile_rows` rows (a function of ``n`` alone), and each tile ``S = X_I X_J^T`` with
``I <= J`` is made once and read twice: along its rows for the queries of ``I`` (keys of
``J``) and down its columns for the queries of ``J`` (keys of ``I``). Every pair of rows is
met in exactly one tile, so the pass makes ``n (n + tile) / 2`` scores instead of ``n^2``.

Uniformity. Each tile gives every row it holds one partial sum of the kernel over the tile's
other side (the terms ``exp(2t S)`` summed pairwise in float32 along the tile's rows and
down its columns); row ``i``'s sum ``sum_{j != i} exp(2t s_ij)`` adds its partials in float64
in the order of the tiles ``J = 0, 1, ...``. A partial depends on its tile alone, the tiles on ``n``
alone, and the partials of all processes are put together before they are added, so the row
terms do not depend on the block size, the thread count or the number of processes.

Ranks. A row of a tile holds only part of a query's keys, so a query's ranks are counted
against thresholds known before the pass, as in :mod:`~gapscope.engine.column_ranks`: each
relevant row ("item") of a query gets a float32 estimate of its score (from products of each
group's rows with themselves, within the float32 error bound ``E`` of the exact score ``S``)
and a window of ``2E`` around it. In every tile, a non-relevant key above an item's window
outranks it (its exact score is higher), one below does not, and one inside is compared by
exact score (ties to the lower index) while the next tile is multiplied. The counts add up over the
tiles, and ``sort(counts) + (0, 1, ..., m - 1)`` are the item ranks, the exact ones
(:mod:`~gapscope.engine.window_ranks`). The windows take :data:`TILE_SLOTS_MAX`
slots at most (a tile's queries padded to its widest group); beyond, the ranks are counted by
the blocks of whole rows instead, with the same numbers.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence

import numpy as np
import torch

from gapscope.engine import window_ranks
from gapscope.engine.distributed import Share, current_share
from gapscope.engine.numerics import MAX_UNSHIFTED_EXPONENT
from gapscope.engine.pipelining import lane_count, run_blocks
from gapscope.engine.ranking import near_window
from gapscope.engine.unit_rows import UnitRows, matmul_batched, matmul_into, score_buffer
from gapscope.engine.window_ranks import (
    Shared,
    candidate_counts,
    compare_counts,
    outranking_in_windows,
    store_ranks,
    take_candidates,
)

__all__ = ["TILE_SLOTS_MAX", "TileRanks", "self_tiles", "tile_rows", "tile_slots"]

#: Rows of a tile up to :data:`_LARGE_ROWS` rows (16 MiB of float32 scores a tile); twice
#: as many beyond, so that a million rows make 245 x 245 tiles, not 489 x 489.
_TILE_ROWS = 2048
_LARGE_ROWS = 131072

#: Candidates gathered for a tile of rows: ``(queries, keys, values)`` of each tile of keys.
_Gathered = list[tuple[np.ndarray, np.ndarray, np.ndarray]]

#: Window slots (queries times the widest group of their tile) the ranks may take: 16 bytes a
#: slot, 512 MiB in all (50,000 rows in 100 classes take about 27 million).
TILE_SLOTS_MAX = 1 << 25

# Rows the group products of the estimates gather at once.
_ESTIMATE_BYTES = 64 << 20

#: Candidate keys a tile of rows gathers, over its tiles of keys, before it counts them
#: against its windows: a quarter of its window slots (counting reads every slot, whatever
#: the candidates), at least :data:`PENDING_MIN`, and all tiles of rows together within
#: :data:`PENDING_BYTES` (12 bytes a candidate) where that leaves each at least the minimum.
PENDING_MIN = 1 << 12
PENDING_BYTES = 128 << 20


def tile_rows(n: int) -> int:
    """Rows of a tile of the exact pass over ``n`` rows (a function of ``n`` alone).

    >>> tile_rows(20000), tile_rows(1_000_000)
    (2048, 4096)
    """
    return _TILE_ROWS if n <= _LARGE_ROWS else 2 * _TILE_ROWS


def _tile_starts(n: int, tile: int) -> list[int]:
    return list(range(0, n, tile))


def tile_slots(item_counts: np.ndarray, tile: int) -> int:
    """Window slots of rows with ``item_counts`` items each: every tile of rows padded to
    the most items one of its rows has.

    >>> tile_slots(np.array([1, 3, 2, 0, 0]), 2)
    10
    """
    total = 0
    for start in range(0, item_counts.size, tile):
        part = item_counts[start : start + tile]
        total += part.size * int(part.max(initial=0))
    return total


class _Windows:
    """The windows of one tile of rows: its queries' items, padded to the widest (``-1``
    beyond a query's items), their windows' bounds in the scaled units (``+inf`` beyond:
    no key reaches them) on the host and on the device, and each query's lowest bound."""

    def __init__(self, items: np.ndarray, lo: np.ndarray, hi: np.ndarray, device: torch.device):
        self.items = items
        self.lo_host, self.hi_host = lo, hi
        self.lo = torch.from_numpy(lo).to(device)
        self.hi = torch.from_numpy(hi).to(device)
        # A key below a query's lowest window counts for none of them.
        self.lowest = np.min(lo, axis=1, initial=np.float32(np.inf))


class TileRanks:
    """The exact intra-modal ranks of every row with relevant rows, counted tile by tile.

    Each group's rows are multiplied with themselves once, up front, for the items'
    estimates; a tile of rows's windows are made from those products by the lane that first
    counts it (:meth:`windows`), beside the other lanes' products. A process that counts only
    some tiles of rows (under ``torchrun``) may keep the groups' products to the end.

    Args:
        unit: the unit rows.
        codes: ``(n,)`` relevance codes; a row's items are the other rows of its code.
        item_counts: ``(n,)`` how many items each row has (its code's rows less one).
        margin: twice the float32 error bound of a score, in unit-row units.
        scale: the factor the tiles' row side is multiplied by (a power of two).
        tile: rows of a tile (:func:`tile_rows`).
    """

    def __init__(
        self,
        unit: UnitRows,
        codes: np.ndarray,
        item_counts: np.ndarray,
        margin: float,
        scale: float,
        tile: int,
    ) -> None:
        self.unit = unit
        self.tile = tile
        self.margin = margin
        self.scale = np.float32(scale)
        n = codes.size
        _, inverse = np.unique(codes, return_inverse=True)
        # Dense int32 codes: the tiles compare them fastest.
        self.codes_host = inverse.reshape(-1).astype(np.int32)
        self.codes_t = torch.from_numpy(self.codes_host).to(unit.device)
        self.item_counts = np.asarray(item_counts, dtype=np.int64)
        self._estimates: _GroupEstimates | None = _GroupEstimates(unit, self.codes_host)
        self.starts = _tile_starts(n, tile)
        tiles = len(self.starts)
        self.widths = [int(self.item_counts[a : a + tile].max(initial=0)) for a in self.starts]
        # Each query's outranking keys, a slot an item (the counts of all lanes added under
        # ``_adding``: integers, so the totals do not depend on the order).
        self.above = [
            np.zeros((min(tile, n - a), w), dtype=np.int32)
            for a, w in zip(self.starts, self.widths, strict=True)
        ]
        self._adding = threading.Lock()
        self._windows: list[_Windows | None] = [None] * tiles
        self._making = [threading.Lock() for _ in range(tiles)]
        self._to_make = sum(w > 0 for w in self.widths)
        # The candidates a tile of rows has gathered, ``(queries, keys, values)`` a tile of
        # keys, how many, and how many of its tiles are still to come (:meth:`expect`).
        each = PENDING_BYTES // (12 * max(tiles, 1))
        self._pending: list[_Gathered] = [[] for _ in range(tiles)]
        self._pending_size = [0] * tiles
        self._flush_at = [max(PENDING_MIN, min(a.size // 4, each)) for a in self.above]
        self._to_come = [0] * tiles

    def windows(self, t: int) -> _Windows:
        """The windows of tile of rows ``t``, made on first use (by one lane; the others
        wait for it). Once every tile's are made, the groups' products are dropped."""
        made = self._windows[t]
        if made is not None:
            return made
        with self._making[t]:
            made = self._windows[t]
            if made is None:
                assert self._estimates is not None
                r0 = self.starts[t]
                rows = np.arange(r0, r0 + self.above[t].shape[0])
                items, estimates = self._estimates.padded(rows, self.widths[t])
                valid = np.arange(self.widths[t])[None, :] < self.item_counts[rows, None]
                lo, hi = near_window(estimates, self.margin)
                for bound in (lo, hi):
                    bound *= self.scale
                    np.copyto(bound, np.float32(np.inf), where=~valid)
                np.copyto(items, -1, where=~valid)
                made = self._windows[t] = _Windows(items, lo, hi, self.unit.device)
                with self._adding:
                    self._to_make -= 1
                    if not self._to_make:
                        self._estimates = None
        return made

    def has_queries(self, t: int) -> bool:
        """Whether tile of rows ``t`` holds a row with an item."""
        return self.widths[t] > 0

    def sorts(self, t: int) -> bool:
        """Whether the queries of tile of rows ``t`` are counted by one sort of their
        candidate keys (more windows than :data:`~gapscope.engine.window_ranks.
        COMPARE_MAX_ITEMS`), which leaves out the keys of a query's own code by itself;
        counting by comparisons needs them masked (:meth:`mask`)."""
        return self.widths[t] > window_ranks.COMPARE_MAX_ITEMS

    def expect(self, pairs: Sequence[tuple[int, int]]) -> None:
        """Note the tiles ``(I, J)`` this process will count (:meth:`count` of the queries of
        ``I`` along the rows, and of ``J`` down the columns when ``I != J``): a tile of rows
        counts its gathered candidates as its last tile comes in."""
        for a, c in pairs:
            for t in (a, c) if a != c else (a,):
                if self.has_queries(t) and self.sorts(t):
                    self._to_come[t] += 1

    def count(
        self, t: int, key_start: int, scores: torch.Tensor, *, columns: bool, masked: bool
    ) -> None:
        """Count the keys of a tile for the queries of tile of rows ``t``: the tile's rows
        are those queries and its columns keys ``key_start, ...`` (``columns=False``), or
        its columns are the queries and its rows the keys (``columns=True``). Scores in the
        scaled units; ``masked``: ``-inf`` wherever a key has the query's own code
        (:meth:`mask`), which counting by comparisons needs (:meth:`sorts`).

        Counting by sorts takes the tile's candidates (the keys at or above a query's lowest
        window, less those of the query's own code) and counts them with those of other tiles
        of keys, once they are many enough (a quarter of its window slots, at least
        :data:`PENDING_MIN`) or its last tile of keys has come in (:meth:`expect`): the
        counting reads every window slot of the tile of rows, however few the candidates."""
        if not self.has_queries(t):
            return
        w = self.windows(t)
        if not self.sorts(t):
            assert masked, "counting by comparisons needs the tile masked"
            outranking, resolve = self._resolver(t, key_start)
            above = compare_counts(scores, w.lo, w.hi, columns, resolve)
            self._add(t, above + outranking)
            return
        queries = t * self.tile + np.arange(w.items.shape[0])
        i, j, values = take_candidates(scores, w.lowest, columns)
        rows, keys = (j, i) if columns else (i, j)
        keys = keys + key_start
        if not masked:
            kept = self.codes_host[keys] != self.codes_host[queries[rows]]
            rows, keys, values = rows[kept], keys[kept], values[kept]
        with self._adding:
            if rows.size:
                self._pending[t].append((rows.astype(np.int32), keys.astype(np.int32), values))
                self._pending_size[t] += rows.size
            self._to_come[t] -= 1
            if not self._pending_size[t] or (
                self._pending_size[t] < self._flush_at[t] and self._to_come[t] > 0
            ):
                return
            batch = self._pending[t]
            self._pending[t], self._pending_size[t] = [], 0
        self._count_pending(t, batch)

    def _count_pending(self, t: int, batch: _Gathered) -> None:
        """Count the gathered candidates ``batch`` of tile of rows ``t`` against its windows."""
        w = self.windows(t)
        outranking, resolve = self._resolver(t, 0)
        rows, keys, values = (np.concatenate(parts) for parts in zip(*batch, strict=True))
        above = candidate_counts(
            rows.astype(np.int64),
            keys.astype(np.int64),
            values,
            w.lo_host,
            w.hi_host,
            resolve,
        )
        self._add(t, above + outranking)

    def _resolver(self, t: int, key_start: int) -> tuple[np.ndarray, window_ranks.Resolve]:
        """``(outranking, resolve)``: ``resolve`` adds to ``outranking`` (a slot an item of
        tile of rows ``t``) how many of the keys inside windows outrank the windows' items
        by exact score (keys counted from ``key_start``)."""
        w = self.windows(t)
        queries = t * self.tile + np.arange(w.items.shape[0])
        outranking = np.zeros(w.items.shape, dtype=np.int64)

        def resolve(
            rows: np.ndarray, windows: np.ndarray, keys: np.ndarray, shared: Shared | None = None
        ) -> None:
            outranking[:] += outranking_in_windows(
                self.unit, queries, w.items, rows, windows, keys + key_start, shared
            )

        return outranking, resolve

    def _add(self, t: int, counted: np.ndarray) -> None:
        with self._adding:
            self.above[t] += counted.astype(np.int32)

    def mask(self, row_start: int, column_start: int, scores: torch.Tensor) -> None:
        """Set to ``-inf`` the scores of a tile (rows from ``row_start``, columns from
        ``column_start``) whose row and column share a code: a query's items, and the query
        itself, are never counted as keys (the same entries in either orientation)."""
        rows, cols = scores.shape
        codes = self.codes_t
        same = (
            codes[row_start : row_start + rows, None]
            == codes[None, column_start : column_start + cols]
        )
        scores.masked_fill_(same, -math.inf)

    def finish(self, store: Callable[[np.ndarray, np.ndarray], None]) -> None:
        """Add the counts over the processes and hand the queries' ranks (0-based, ascending)
        to ``store(rows, ranks)``, queries with as many items at once (``ranks`` a row a
        query): this process's share of the queries (rows ``rank, rank + world, ...``), so
        the caller adds what ``store`` made over the processes, as after blocks of rows."""
        share = current_share()
        for t, batch in enumerate(self._pending):
            # Tiles of rows this process counted fewer tiles of than :meth:`expect` said.
            if batch:
                self._count_pending(t, batch)
            self._pending[t], self._pending_size[t] = [], 0
        flat = np.concatenate([a.reshape(-1) for a in self.above]) if self.above else None
        if flat is not None:
            share.sum(flat)
            start = 0
            for a in self.above:
                a.reshape(-1)[:] = flat[start : start + a.size]
                start += a.size
        for t, above in enumerate(self.above):
            r0 = t * self.tile
            counts = self.item_counts[r0 : r0 + above.shape[0]]
            # A query a process: a serial part that would otherwise not shrink with more
            # processes.
            mine = np.flatnonzero(
                (counts > 0) & ((r0 + np.arange(counts.size)) % share.world == share.rank)
            )
            store_ranks(store, r0 + mine, counts[mine], above[mine])


class _GroupEstimates:
    """Each group's rows multiplied with themselves (groups of one size batched), kept as
    one flat float32 array: the estimates of every row's items, each within the float32
    error bound of the exact score.

    Args:
        unit: the unit rows.
        codes: ``(n,)`` dense relevance codes.
    """

    def __init__(self, unit: UnitRows, codes: np.ndarray) -> None:
        n = codes.size
        # The rows of each group, ascending, one group after another. Indices are int32:
        # the products of all groups are fewer than 2^31 within the tiles' slots.
        self.order = np.argsort(codes, kind="stable").astype(np.int32)
        sizes = np.bincount(codes, minlength=int(codes.max(initial=-1)) + 1)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        # Row r is member ``position[r]`` of its group (of ``size[r]`` rows, from
        # ``self.order[start[r]]``), whose products start at ``base[r]`` of ``self.flat``.
        self.size = sizes[codes].astype(np.int32)
        self.start = starts[codes].astype(np.int32)
        self.position = np.empty(n, dtype=np.int32)
        self.position[self.order] = np.arange(n) - np.repeat(starts, sizes)
        base_of = np.zeros(sizes.size, dtype=np.int64)
        dim = unit.shape[1]
        paired = sizes[sizes >= 2]
        # One buffer for all the products (written a chunk of groups at a time).
        self.flat = np.zeros(max(1, int(np.sum(paired.astype(np.int64) ** 2))), dtype=np.float32)
        used = 0
        for g in np.unique(paired).tolist():
            groups = np.flatnonzero(sizes == g)
            base_of[groups] = used + np.arange(groups.size) * g * g
            chunk = max(1, _ESTIMATE_BYTES // (4 * g * (dim + g)))
            for c0 in range(0, groups.size, chunk):
                m = self.order[starts[groups[c0 : c0 + chunk], None] + np.arange(g)]
                rows = unit.take(m.reshape(-1)).reshape(m.shape[0], g, dim)
                gram = matmul_batched(rows, rows.transpose(1, 2)).cpu().numpy().reshape(-1)
                self.flat[used : used + gram.size] = gram
                used += gram.size
        assert self.flat.size < 1 << 31
        self.base = base_of[codes].astype(np.int32)

    def padded(self, rows: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
        """``(items, estimates)``, ``(rows.size, width)``: each row's items (the other rows
        of its group, ascending; int32) and their estimates; beyond a row's items, some
        valid entry (the caller masks them)."""
        slot = np.arange(width, dtype=np.int32)[None, :]
        position, size = self.position[rows], self.size[rows]
        # The member a slot holds: the slot's, or the next one's from the row's own on.
        member = slot + (slot >= position[:, None])
        np.minimum(member, (size - 1)[:, None], out=member)
        items = self.order[self.start[rows, None] + member]
        member += np.where(size >= 2, self.base[rows] + position * size, 0)[:, None]
        return items, self.flat[member]


def self_tiles(
    unit: UnitRows,
    *,
    two_t: float | None,
    prescale: bool,
    ranks: TileRanks | None,
    tile: int,
) -> np.ndarray | None:
    """Read the tiles of ``X X^T`` on and above the diagonal (module notes), this process's
    share of them (round robin), each product overlapping the reading of the one before.

    Args:
        unit: the unit rows.
        two_t: ``2t`` of the uniformity kernel; ``None``: no kernel.
        prescale: the tiles' row side is multiplied by ``two_t`` (a power of two).
        ranks: counts the intra-modal ranks, or ``None``.
        tile: rows of a tile (:func:`tile_rows`).

    Returns:
        ``log sum_{j != i} exp(2t s_ij) - 2t`` of every row (float64), or ``None`` without a
        kernel.
    """
    share = current_share()
    pairs = _Tiles.pairs_of(unit.shape[0], tile, two_t, ranks)
    mine = share.blocks(len(pairs))
    width = min(tile, unit.shape[0])
    # A lane's buffers: a tile's scores and its kernel terms.
    lanes = lane_count(unit.device, len(mine), 2 * 4 * width * width)
    tiles = _Tiles(unit, two_t, prescale, ranks, tile, pairs, max(lanes, 1))
    if ranks is not None:
        ranks.expect([pairs[p] for p in mine])
    run_blocks(
        len(mine),
        lanes,
        lambda b, buffer: tiles.product(mine[b], buffer),
        lambda item, lane: tiles.consume(*item, lane),
        share.keep_pace,
    )
    share.catch_up(len(mine), len(pairs))
    return tiles.row_log_sums(share)


class _Tiles:
    """The tiles of one pass: their products, and what each is read for."""

    def __init__(
        self,
        unit: UnitRows,
        two_t: float | None,
        prescale: bool,
        ranks: TileRanks | None,
        tile: int,
        pairs: list[tuple[int, int]],
        lanes: int,
    ) -> None:
        self.unit, self.two_t, self.prescale, self.ranks, self.tile = (
            unit,
            two_t,
            prescale,
            ranks,
            tile,
        )
        n = unit.shape[0]
        self.starts = _tile_starts(n, tile)
        count = len(self.starts)
        self.pairs = pairs
        width = min(tile, n)
        # A buffer a lane, or two that alternate (pipelined); a scratch a reader.
        self.buffers = [score_buffer(width, width, unit.device) for _ in range(max(2, lanes))]
        self.scratch = [score_buffer(width, width, unit.device) for _ in range(lanes)]
        self.shifted = two_t is not None and 2.0 * two_t > MAX_UNSHIFTED_EXPONENT
        # One partial kernel sum per row and tile of keys (n x n / tile: 1 GiB at a million
        # rows): float32 sums are kept as they are, log-domain ones in float64.
        dtype = np.float64 if self.shifted else np.float32
        self.partial = None if two_t is None else np.zeros((n, count), dtype=dtype)

    @staticmethod
    def pairs_of(
        n: int, tile: int, two_t: float | None, ranks: TileRanks | None
    ) -> list[tuple[int, int]]:
        """The tiles ``(I, J)``, ``I <= J``, of a pass over ``n`` rows."""
        count = len(_tile_starts(n, tile))
        pairs = [(a, b) for a in range(count) for b in range(a, count)]
        if two_t is None:
            # Without the kernel, a tile with no query on either side is not needed.
            assert ranks is not None
            pairs = [(a, b) for a, b in pairs if ranks.has_queries(a) or ranks.has_queries(b)]
        return pairs

    def bounds(self, t: int) -> tuple[int, int]:
        return self.starts[t], min(self.unit.shape[0], self.starts[t] + self.tile)

    def product(self, p: int, buffer: int) -> tuple[int, int, torch.Tensor]:
        a, c = self.pairs[p]
        a0, a1 = self.bounds(a)
        c0, c1 = self.bounds(c)
        queries = self.unit.block(a0, a1)
        if self.prescale:
            assert self.two_t is not None
            queries = queries * self.two_t
        out = self.buffers[buffer][: a1 - a0, : c1 - c0]
        scores = matmul_into(queries, self.unit.block(c0, c1), out)
        if a == c:
            # The query itself: a zero kernel term, and never a key.
            scores.diagonal().fill_(-math.inf)
        return a, c, scores

    def consume(self, a: int, c: int, scores: torch.Tensor, lane: int) -> None:
        a0, a1 = self.bounds(a)
        c0, c1 = self.bounds(c)
        if self.partial is not None:
            terms = self._terms(scores, self.scratch[lane][: a1 - a0, : c1 - c0])
            # The rows' partial sums along the rows, the columns' down the columns.
            self.partial[a0:a1, c] = _kernel_sums(terms, 1, self.shifted)
            if a != c:
                self.partial[c0:c1, a] = _kernel_sums(terms, 0, self.shifted)
        ranks = self.ranks
        if ranks is None:
            return
        row_queries = ranks.has_queries(a)
        column_queries = a != c and ranks.has_queries(c)
        # Counting by sorts leaves out the keys of a query's own code as it counts; a tile is
        # masked (a pass over it) only for counting by comparisons.
        masked = (row_queries and not ranks.sorts(a)) or (column_queries and not ranks.sorts(c))
        if masked:
            ranks.mask(a0, c0, scores)
        if column_queries:
            ranks.count(c, a0, scores, columns=True, masked=masked)
        if row_queries:
            ranks.count(a, c0, scores, columns=False, masked=masked)

    def _terms(self, scores: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The kernel terms ``exp(2t s)`` of a tile (their logarithms ``2t s`` when
        shifted), into ``out``; the scores stay intact for the ranks."""
        two_t = self.two_t
        assert two_t is not None
        if self.shifted:
            return torch.mul(scores, 1.0 if self.prescale else two_t, out=out)
        if self.prescale:
            return torch.exp(scores, out=out)
        return torch.mul(scores, two_t, out=out).exp_()

    def row_log_sums(self, share: Share) -> np.ndarray | None:
        """``log sum_{j != i} exp(2t s_ij) - 2t`` of every row: the partials of all the
        processes (each written by one of them, zero on the others) added in the order of
        the tiles of keys."""
        if self.partial is None:
            return None
        assert self.two_t is not None
        share.sum(self.partial)
        total = np.full(self.partial.shape[0], -math.inf if self.shifted else 0.0)
        for t in range(self.partial.shape[1]):
            column = self.partial[:, t].astype(np.float64)
            total = np.logaddexp(total, column) if self.shifted else total + column
        return (total if self.shifted else np.log(total)) - self.two_t


def _kernel_sums(terms: torch.Tensor, axis: int, shifted: bool) -> np.ndarray:
    """The sums of a tile's kernel terms along ``axis`` (``terms`` are the terms, or their
    logarithms when ``shifted``: then ``log sum exp`` in float64, shifted by the maximum).
    On a CPU summed by numpy, pairwise in float32 (relative error about ``log2(tile) u``, as
    torch sums a row): each sum depends on the tile alone, never on a thread count."""
    if terms.device.type not in window_ranks.HOST_SUMS:
        if shifted:
            return torch.logsumexp(terms.double(), dim=axis).cpu().numpy()
        return terms.sum(axis).cpu().numpy()
    host = terms.numpy()
    if not shifted:
        return np.add.reduce(host, axis=1) if axis == 1 else _pairwise_column_sums(host)
    top = host.max(axis=axis, keepdims=True).astype(np.float64)
    safe = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        sums = np.log(np.add.reduce(np.exp(host - safe), axis=axis, dtype=np.float64))
    return sums + np.squeeze(safe, axis=axis)


def _pairwise_column_sums(rows: np.ndarray) -> np.ndarray:
    """Each column's float32 sum, by adding the first half of the rows to the second until
    one row is left (numpy sums down a column one row at a time, which loses up to ``n u``).

    >>> _pairwise_column_sums(np.arange(15, dtype=np.float32).reshape(5, 3)).tolist()
    [30.0, 35.0, 40.0]
    """
    while rows.shape[0] > 1:
        half = rows.shape[0] // 2
        summed = rows[:half] + rows[half : 2 * half]
        rows = np.concatenate([summed, rows[2 * half :]]) if rows.shape[0] % 2 else summed
    return rows[0]
