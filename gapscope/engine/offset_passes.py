"""Passes over unit rows moved by offsets, all read from one product of the rows as they are.

The gap-closing what-ifs (:mod:`gapscope.analysis.whatif`) measure several versions of a pair
of modalities, each with every unit row ``u_i`` of a modality moved by one vector ``p`` and
re-normalised: ``w_i = (u_i - p) / nu_i``, ``nu_i = ||u_i - p||``. The score of a moved query
row (offset ``p``) and a moved key row (offset ``q``) is

    T_ij = w_i . z_j = (S_ij - u_i . q - p . v_j + p . q) / (nu_i mu_j),

with ``S_ij = u_i . v_j`` the score of the rows as they are. So one product ``S`` serves every
version: each block of it is turned into each version's scores by two additions and a
multiplication a score (one more for the kernel sums; together about a tenth of the product's
time on a CPU), then ranked and summed as :mod:`gapscope.engine.passes` ranks and sums its own
blocks. Five versions of a pair
then cost one product a direction instead of five.

**The rows a version is.** :class:`OffsetRows` defines a version's float32 unit rows as
``fl32((fl32(u_i - p)) / nu_i)`` (``p`` rounded to float32 first, ``nu_i`` the float64 norm of
the float32 difference), from the float32 unit rows ``u_i`` of :class:`~gapscope.engine.
unit_rows.UnitRows`. Near-ties are ranked by the exact (float64) dot products of those rows,
so a rank is the rank by exact scores of a version's rows, ties to the lower index: the same
rank a product of the version's rows of their own gives.

**Ranked up to a row's factor.** Within a query row the order of the scores does not change
when every score is multiplied by the same positive number, so rows are ranked by
``R_ij = fl32(fl32(fl32(S_ij + d_j) + c_i) * rho_j)`` with ``c_i = fl32(p . q - u_i . q)``,
``d_j = fl32(-p . v_j)`` and ``rho = fl32(1 / nu)``: ``T_ij`` without its row's factor
``rho_i``, which is multiplied in only afterwards, for the kernel sums (the same bits as
multiplying it in first: that is the last operation either way).

**How far a ranked score can be from the exact one.** With ``u = 2^-24``, ``e_S`` the bound on
a float32 score of unit rows (:func:`~gapscope.engine.ranking.score_error_bound`), ``P =
max(||p||, ||q||)`` and ``e_i = fl32(u_i - p)``: ``e_i . e'_j`` is within ``2.01u (1 + P)^2``
of ``N_ij = (u_i - p) . (v_j - q)``; ``S_ij + d_j + c_i`` as computed is within ``e_S + 3.01u
(1 + P)^2`` of ``N_ij`` (the float32 product, the rounded terms ``u (P + P^2)`` and ``u P``, and
two additions of numbers below ``(1 + P)^2``); the multiplication and the rounded ``rho_j`` add
``2.01u |N| rho_j <= 2.01u (1 + P)^2 rho_j``; and the version's float32 rows (each within
``u`` of ``e_i / nu_i`` in every coordinate) have a dot product within ``2.1u`` of
``e_i . e'_j / (nu_i mu_j)``, which is ``2.1u nu_i <= 2.1u (1 + P)`` in the units of ``R``.
So against ``nu_i`` times the exact score of the version's rows,

    |R_ij - nu_i T_exact,ij| <= (e_S + 8u (1 + P)^2) rho_j (1 + 2u) + 3u (1 + P),

a bound that does not depend on the query row; with the largest ``rho_j`` of the keys it is
the ranking's per-score bound (the margin is twice that), and keys within it of a relevant
score are ranked by exact scores. The bound grows with ``rho``: a version whose keys include a
row within ``1 / 4`` of its offset (``rho > 4``: :data:`DERIVED_MAX_FACTOR`) would send a
growing share of every row to exact scoring, so such a version is measured by passes over its
own rows instead (the same ranks, by the rule above; its own products). The uniformity of a
moved version sums ``exp(2t T_ij)`` over the derived scores, whose float32 error is at most
``rho_i rho_j <= 16`` times that of a product of the version's own rows. A version with no
offset on either side is the product itself (``R = T = S``, bound ``e_S``), bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch

from gapscope.engine.blocks import resolve_block_size
from gapscope.engine.column_ranks import IntraColumnRanks, fits_columns
from gapscope.engine.device_ranking import row_ranks_device
from gapscope.engine.distributed import current_share
from gapscope.engine.numerics import log_sum_exp
from gapscope.engine.passes import (
    ModalityPassResult,
    _ChunkSums,
    _IntraRanks,
    _KernelRows,
    _sampled_estimate,
    cross_pass,
    key_chunk_width,
    modality_pass,
    ranks_on_device,
    sweep_key_chunks,
)
from gapscope.engine.pipelining import PerLane, in_lanes, lane_count, pipelined
from gapscope.engine.ranking import (
    GroupMembers,
    RetrievalResult,
    row_ranks,
    score_error_bound,
    summarize,
)
from gapscope.engine.unit_rows import (
    MIN_NORM,
    UnitRows,
    exact_scores,
    moved_norms,
    moved_unit_rows,
    score_buffer,
)
from gapscope.engine.validation import (
    ArrayLike,
    check_groups,
    check_k,
    check_query_index,
    check_same_dim,
    check_temperature,
    pair_groups,
)
from gapscope.errors import EmbeddingError, GapscopeError

__all__ = [
    "DERIVED_MAX_FACTOR",
    "ModalityToPass",
    "OffsetRows",
    "RowsToMove",
    "offset_cross_passes",
    "offset_modality_passes",
    "offset_modality_passes_of_each",
    "offset_rows",
    "offset_rows_of_each",
]

_U = 2.0**-24
#: A version whose rows include one with ``1 / ||u - p||`` above this is measured by passes
#: over its own rows (module notes).
DERIVED_MAX_FACTOR = 4.0


class OffsetRows:
    """The unit rows of ``base`` moved by ``offset`` and normalised again, as float32.

    Row ``i`` is ``fl32(fl32(u_i - p) / nu_i)`` with ``u_i`` the float32 unit row of ``base``,
    ``p`` the offset rounded to float32 and ``nu_i`` the float64 norm of ``fl32(u_i - p)``
    (:func:`~gapscope.engine.unit_rows.moved_unit_rows`: the rows ``UnitRows(x,
    offset=p)`` holds, bit for bit). Only the factors ``fl32(1 / nu_i)`` are kept (``n``
    floats): :meth:`take` makes rows when the ranking asks for exact scores, and
    :meth:`own_rows` the version's own :class:`~gapscope.engine.unit_rows.UnitRows` when it is
    measured by passes of its own. ``offset=None`` is ``base`` itself.

    Raises:
        EmbeddingError: a row the offset sends (within ``MIN_NORM``) to the origin, named by
            ``name`` and described by ``why`` (with ``check=False``, kept for :meth:`check`).
        GapscopeError: unit rows that are not float32, an offset that is not finite.
    """

    def __init__(
        self,
        base: UnitRows,
        offset: np.ndarray | None,
        *,
        name: str = "x",
        why: str = "is sent to the origin by the offset",
        norms: np.ndarray | None = None,
        dots: _RowDots | None = None,
        check: bool = True,
    ) -> None:
        if base.dtype != torch.float32:
            raise GapscopeError(f"{name}: moved rows need float32 unit rows, got {base.dtype}")
        self.base = base
        self.name, self.why = name, why
        self.problem: EmbeddingError | None = None
        self.shape = base.shape
        self.device = base.device
        # u_i . v of the base rows with the vectors the passes need, kept once computed.
        self.dots = dots if dots is not None else _RowDots(base)
        self.offset: np.ndarray | None = None
        self.offset_norm = 0.0
        # rho_i = fl32(1 / nu_i), the factor of a row's scores; 1 for rows not moved.
        self.factors = torch.ones(base.shape[0], dtype=torch.float32, device=self.device)
        self.max_factor = 1.0
        self._offset_t: torch.Tensor | None = None
        if offset is None:
            return
        self.offset = _as_offset(offset, base.shape[1])
        self.offset_norm = math.sqrt(math.fsum(self.offset * self.offset))
        self._offset_t = torch.from_numpy(self.offset.astype(np.float32)).to(self.device)
        if norms is None:
            (norms,) = _scan(base, [self._offset_t], self.dots, [])
        short = np.flatnonzero(norms < MIN_NORM)
        if short.size:
            self.problem = EmbeddingError(
                f"{name}: row {int(short[0])} {why}, so it has no direction left"
            )
            if check:
                self.check()
            norms = np.maximum(norms, MIN_NORM)
        factors = (1.0 / norms).astype(np.float32)
        self.factors = torch.from_numpy(factors).to(self.device)
        self.max_factor = float(factors.max())

    def check(self) -> None:
        """Raise the error of a row the offset sends to the origin, if there is one."""
        if self.problem is not None:
            raise self.problem

    def own_rows(self) -> UnitRows:
        """The version's rows as :class:`~gapscope.engine.unit_rows.UnitRows` of their own (the
        same bits as :meth:`take`; held in memory when ``base`` is)."""
        return UnitRows(
            self.base.source,
            device=self.device,
            in_memory=self.base.in_memory,
            offset=None if self.offset is None else self.offset.astype(np.float32),
            name=self.name,
            why=self.why,
            chunk_rows=self.base.chunk_rows,
        )

    def first_rows(self, index: np.ndarray) -> np.ndarray:
        """The base's :meth:`~gapscope.engine.unit_rows.UnitRows.first_rows`: a moved row's
        bits depend on its base row's alone, so twins stay twins."""
        return self.base.first_rows(index)

    def take(self, index: np.ndarray) -> torch.Tensor:
        """The moved unit rows at ``index`` (float32, a new tensor)."""
        rows = self.base.take(index)
        if self._offset_t is None:
            return rows
        return moved_unit_rows(rows, self._offset_t)[0]


class RowsToMove(NamedTuple):
    """One modality's request to :func:`offset_rows_of_each`: its unit rows, the offset of
    every version (``None``: the rows as they are), the name and the reason an error gives
    for a row sent to the origin, and the vectors whose dot products with every row the
    passes need besides the offsets (the other modality's offsets)."""

    base: UnitRows
    offsets: Sequence[np.ndarray | None]
    name: str = "x"
    whys: Sequence[str] | None = None
    dots_with: Sequence[np.ndarray | None] = ()


def offset_rows(
    base: UnitRows,
    offsets: Sequence[np.ndarray | None],
    *,
    name: str = "x",
    whys: Sequence[str] | None = None,
    dots_with: Sequence[np.ndarray | None] = (),
    check: bool = True,
) -> list[OffsetRows]:
    """:class:`OffsetRows` of ``base`` for every offset, from one read of its rows: the norms
    of every version, and each row's dot products with every offset and every vector of
    ``dots_with`` (the other modality's offsets, which the cross passes need), kept for the
    passes. Rows normalised block by block are then read once for all versions, not once a
    version and once a pass.

    Raises:
        EmbeddingError: a row an offset sends to the origin (the first version's first; with
            ``check=False`` each version keeps its own for :meth:`OffsetRows.check`).
    """
    (moved,) = offset_rows_of_each([RowsToMove(base, offsets, name, whys, dots_with)], check=check)
    return moved


def offset_rows_of_each(
    requests: Sequence[RowsToMove], *, check: bool = True
) -> list[list[OffsetRows]]:
    """:func:`offset_rows` of several modalities from one scan of their rows: the chunks of
    the first, then of the next, so that lanes, or the processes sharing the passes, make two
    modalities' chunks side by side where each alone may be one chunk (20,000 rows are one
    65,536-row chunk). A row's values depend on that row alone: the same bits as a scan a
    modality.

    Raises:
        EmbeddingError: as :func:`offset_rows`, in the order of ``requests``.
    """
    plans = []
    for request in requests:
        base = request.base
        moved = [None if p is None else _as_offset(p, base.shape[1]) for p in request.offsets]
        others = (_as_offset(w, base.shape[1]) for w in request.dots_with if w is not None)
        vectors = [v for v in (*moved, *others) if v is not None]
        targets = [
            torch.from_numpy(p.astype(np.float32)).to(base.device) for p in moved if p is not None
        ]
        plans.append((moved, _RowDots(base), targets, vectors))
    norms = _scans(
        [
            (r.base, targets, dots, vectors)
            for r, (_, dots, targets, vectors) in zip(requests, plans, strict=True)
        ]
    )
    out = []
    for request, (moved, dots, _, _), found in zip(requests, plans, norms, strict=True):
        whys = (
            list(request.whys)
            if request.whys is not None
            else ["is sent to the origin by the offset"] * len(moved)
        )
        it = iter(found)
        out.append(
            [
                OffsetRows(
                    request.base,
                    p,
                    name=request.name,
                    why=why,
                    norms=None if p is None else next(it),
                    dots=dots,
                    check=check,
                )
                for p, why in zip(moved, whys, strict=True)
            ]
        )
    return out


def _scan(
    base: UnitRows, targets: Sequence[torch.Tensor], dots: _RowDots, vectors: Sequence[np.ndarray]
) -> list[np.ndarray]:
    """:func:`_scans` of one modality."""
    return _scans([(base, targets, dots, vectors)])[0]


def _scans(
    reads: Sequence[tuple[UnitRows, Sequence[torch.Tensor], _RowDots, Sequence[np.ndarray]]],
) -> list[list[np.ndarray]]:
    """One read of each modality's rows, ``(base, targets, dots, vectors)``, in one scan: the
    norms of the rows moved by each of ``targets`` (float32 offsets on the rows' device),
    returned, and the dot products with ``vectors`` kept in ``dots``.

    The rows are read a chunk at a time and worked on in parts of at most
    :data:`_SCAN_ROWS` rows, so that the float64 work on them stays small. The chunks of
    every modality form one scan
    (:meth:`~gapscope.engine.distributed.Share.rows_in_order_of_each`): lanes, or the
    processes sharing the passes, take them in turn and every process gets every row's
    values (a row's norm and dot products depend on that row alone)."""
    plans = []
    for base, targets, _, vectors in reads:
        unique = list({v.tobytes(): v for v in vectors}.values())
        outputs = np.empty((len(targets) + len(unique), base.shape[0]), dtype=np.float64)
        plans.append((base, targets, unique, outputs, max(1, min(base.shape[0], base.chunk_rows))))

    def make_of(
        base: UnitRows, targets: Sequence[torch.Tensor], unique: list[np.ndarray], count: int
    ) -> Callable[[int, int], np.ndarray]:
        def make(start: int, stop: int) -> np.ndarray:
            rows = base.block(start, stop)
            values = np.empty((count, stop - start), dtype=np.float64)
            for lo in range(0, stop - start, _SCAN_ROWS):
                hi = min(stop - start, lo + _SCAN_ROWS)
                part = rows[lo:hi]
                for t, target in enumerate(targets):
                    values[t, lo:hi] = moved_norms(part, target)
                if unique:
                    # numpy sums along each row, so a row's value does not depend on the
                    # threads.
                    part64 = part.cpu().numpy().astype(np.float64)
                    for k, vector in enumerate(unique):
                        values[len(targets) + k, lo:hi] = np.multiply(part64, vector).sum(axis=1)
            return values

        return make

    requests = [
        (outputs, chunk, make_of(base, targets, unique, outputs.shape[0]))
        for base, targets, unique, outputs, chunk in plans
        if outputs.shape[0]
    ]
    # A thread holds a chunk of rows (float32, normalised anew when streamed), a part's
    # float64 copy and the chunk's values. Rows on a GPU are read a chunk at a time: lanes
    # would hold one a lane in the device's memory.
    held = None
    if all(base.device.type == "cpu" for base, *_ in plans):
        held = max(
            (chunk * base.shape[1] * 4 + _SCAN_ROWS * base.shape[1] * 8)
            for base, _, _, _, chunk in plans
        )
    if requests:
        current_share().rows_in_order_of_each(requests, lane_bytes=held)
    out = []
    for (_, targets, unique, outputs, _), (_, _, dots, _) in zip(plans, reads, strict=True):
        # The dot products are kept for the passes; a copy of their own, so the norms (used
        # once, for the factors) are not held with them.
        kept = outputs[len(targets) :].copy()
        dots.known.update((v.tobytes(), o) for v, o in zip(unique, kept, strict=True))
        out.append(list(outputs[: len(targets)]))
    return out


#: Rows a part of :func:`_scan`: 16 MiB of float64 at d = 512.
_SCAN_ROWS = 4096


def _as_offset(offset: np.ndarray, dim: int) -> np.ndarray:
    """An offset as the rows see it: rounded to float32, held as float64."""
    out = np.asarray(offset, dtype=np.float32).reshape(dim).astype(np.float64)
    if not np.isfinite(out).all():
        raise GapscopeError("offset: expected finite numbers (within the float32 range)")
    return out


class _RowDots:
    """``u_i . v`` for every row of ``base`` and vectors ``v``, in float64 (numpy sums along
    each row, so a row's value does not depend on the thread count), kept by the vector's
    bytes; the vectors not known yet are computed together, in one read of the rows."""

    def __init__(self, base: UnitRows) -> None:
        self.base = base
        self.known: dict[bytes, np.ndarray] = {}

    def get(self, vectors: Sequence[np.ndarray | None]) -> list[np.ndarray]:
        """The dot products with each vector (zeros for ``None``)."""
        missing = [v for v in vectors if v is not None and v.tobytes() not in self.known]
        if missing:
            _scan(self.base, [], self, missing)
        zeros = np.zeros(self.base.shape[0], dtype=np.float64)
        return [zeros if v is None else self.known[v.tobytes()] for v in vectors]


class _Moved:
    """Turns blocks of ``S = U_q U_k^T`` into a version's scores (module notes): :meth:`apply`
    gives ``R``, the scores without the query row's factor ``rho_i`` (the order of a row's
    scores is the order of its ``T``), ranked with :attr:`margin` (twice the bound on ``R``'s
    error, the same for every row), and :meth:`finish` multiplies ``rho_i`` and ``scale`` (a
    power of two) in, giving ``T`` times ``scale`` for the kernel sums. ``query_dots`` are
    ``u_i . q`` of the query rows with the keys' offset, ``key_dots`` ``v_j . p`` of the key rows
    with the queries' offset (``OffsetRows.dots``)."""

    def __init__(
        self,
        queries: OffsetRows,
        keys: OffsetRows,
        query_dots: np.ndarray,
        key_dots: np.ndarray,
        scale: float = 1.0,
    ) -> None:
        self.queries, self.keys, self.scale = queries, keys, scale
        e_s = score_error_bound(queries.shape[1])
        self.identity = queries.offset is None and keys.offset is None
        # How far T_exact / rho_i (a window's centre, with the kept factor) can lie from
        # nu_i T_exact: nu_i |T| u, below u (1 + P) (chunks of keys, _version_chunks).
        self.centre_slack = 0.0
        if self.identity:
            self.margin = 2.0 * e_s
            return
        p, q = queries.offset, keys.offset
        big = max(queries.offset_norm, keys.offset_norm)
        bound = (e_s + 8.0 * _U * (1.0 + big) ** 2) * keys.max_factor * (1.0 + 2.0 * _U)
        self.margin = 2.0 * (bound + 3.0 * _U * (1.0 + big))
        self.centre_slack = 2.0 * _U * (1.0 + big)
        pq = 0.0 if p is None or q is None else math.fsum(p * q)
        dev = queries.device
        self.row_terms = torch.from_numpy((pq - query_dots).astype(np.float32)).to(dev)
        self.column_terms = torch.from_numpy((-key_dots).astype(np.float32)).to(dev)[None]
        self.row_factors = queries.factors * scale
        self.column_factors = keys.factors[None]

    def exact_scores(self, rows: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """Exact scores of the moved query ``rows`` and ``keys``, pair by pair."""
        return exact_scores(self.queries, rows, self.keys, keys)

    def apply(
        self,
        scores: torch.Tensor,
        idx_t: torch.Tensor,
        out: torch.Tensor,
        keys: slice = slice(None),
    ) -> torch.Tensor:
        """``R`` of the query rows ``idx_t`` from their block ``scores`` (against the keys
        ``keys``, every key by default), into ``out``: ``((S + d_j) + c_i) * rho_j``,
        elementwise in float32, a few rows at a time (the operations then run on rows still
        in cache)."""
        if self.identity:
            return out.copy_(scores)
        row_terms = self.row_terms.index_select(0, idx_t)[:, None]
        column_terms, column_factors = self.column_terms[:, keys], self.column_factors[:, keys]
        for a in range(0, idx_t.numel(), _CACHED_ROWS):
            z = a + _CACHED_ROWS
            part = torch.add(scores[a:z], column_terms, out=out[a:z])
            part.add_(row_terms[a:z]).mul_(column_factors)
        return out

    def row_scale(self, rows: np.ndarray) -> np.ndarray:
        """The factor of each query row's ``R``, ``nu_i`` as the kept ``1 / rho_i``
        (float64), within :attr:`centre_slack` of ``nu_i`` times a score."""
        return 1.0 / self.queries.factors.cpu().numpy()[rows].astype(np.float64)

    def column_ranks(
        self,
        rows: np.ndarray,
        items: Sequence[np.ndarray],
        codes: np.ndarray,
        product_rows: np.ndarray,
        query_codes: np.ndarray | None = None,
    ) -> IntraColumnRanks:
        """Ranks of the query ``rows`` (ascending, each with its ``items``) counted down chunks
        of this version's ``R`` (:class:`~gapscope.engine.column_ranks.IntraColumnRanks`):
        windows about ``nu_i`` times each item's exact score, widened by
        :attr:`centre_slack`."""
        return IntraColumnRanks(
            self.queries,
            rows,
            items,
            codes,
            self.margin + self.centre_slack,
            1.0,
            product_rows,
            keys=None if self.keys is self.queries else self.keys,
            query_codes=query_codes,
            row_scale=self.row_scale(rows),
        )

    def finish(self, moved: torch.Tensor, idx_t: torch.Tensor) -> torch.Tensor:
        """``T`` times ``scale`` from ``R``, in place."""
        if self.identity:
            return moved.mul_(self.scale) if self.scale != 1.0 else moved
        return moved.mul_(self.row_factors.index_select(0, idx_t)[:, None])


#: Rows of a block transformed together: 32 rows of 20,000 scores are 2.5 MiB.
_CACHED_ROWS = 32


class _BlockJob(NamedTuple):
    """A pass for :func:`_jobs_in_blocks`: blocks of ``base_q``'s query ``rows`` (``block``
    rows each) against every row of ``base_k``, turned into each of ``moved``'s versions and
    handed to ``consume`` (as :func:`_jobs_in_blocks` describes)."""

    base_q: UnitRows
    base_k: UnitRows
    rows: np.ndarray
    block: int
    moved: list[_Moved]
    consume: Callable[[int, np.ndarray, int, torch.Tensor, int], None]


def _jobs_in_blocks(jobs: Sequence[_BlockJob]) -> None:
    """For every pass of ``jobs`` (:class:`_BlockJob`), ``consume(start, idx, v, scores,
    lane)`` for every block of its query ``rows`` (this process's share) and every version
    ``v``: ``scores`` are version ``v``'s scores of the rows ``idx`` (positions ``start:``),
    read from the one product ``U_q[idx] U_k^T`` of their block; ``lane`` names the thread
    that consumes them (:func:`~gapscope.engine.pipelining.in_lanes`; ``0`` when pipelined),
    whose scratch buffers are its own.

    The passes' blocks form one list, the blocks of the first, then of the next, taken by
    the lanes (or shared among the processes) as one pass's are: two cross-modal directions
    of 5,000 queries in 1,024-row blocks are five blocks each, which left one of two lanes a
    block to make alone at the end of each direction; as one list of ten, the lanes make
    five each. Buffers of the same shape serve every pass that has it.

    Each block's product is kept in one buffer until its last version is made, and a
    version's scores go to a buffer of at most :data:`_PART_BYTES`, a part of the block's
    rows at a time when the block is bigger (a block of a million keys takes 512 MiB). On a
    CPU, lanes make and consume whole blocks side by side, each with its own buffers, when
    they fit :data:`~gapscope.engine.pipelining.LANE_BYTES`; else (and on other devices)
    the product and the versions' scores are made on this thread while a worker thread
    consumes the previous scores, in two buffers of versions' scores. Every row is consumed
    whole, so neither the parts nor the lanes change a number."""
    jobs = [job for job in jobs if job.moved and job.rows.size]
    if not jobs:
        return
    share = current_share()
    device = jobs[0].base_q.device
    blocks = [
        (j, start) for j, job in enumerate(jobs) for start in range(0, job.rows.size, job.block)
    ]
    mine = share.blocks(len(blocks))
    # Each pass's buffers: its block's product, a part's versions' scores (and the consumer's
    # flags of them), and a scratch tile for blocks that cover tiles in part.
    rows_max = [min(job.block, job.rows.size) for job in jobs]
    parts = [_part_rows(r, job.base_k.shape[0]) for r, job in zip(rows_max, jobs, strict=True)]
    product_shapes = sorted(
        {(r, job.base_k.shape[0]) for r, job in zip(rows_max, jobs, strict=True)}
    )
    output_shapes = sorted({(p, job.base_k.shape[0]) for p, job in zip(parts, jobs, strict=True)})
    lane_bytes = (
        sum(4 * r * n for r, n in product_shapes)
        + sum(5 * p * n for p, n in output_shapes)
        + max(job.base_k.scratch_bytes(job.block) for job in jobs)
    )
    lanes = lane_count(device, len(mine), lane_bytes)
    products = [
        {shape: score_buffer(*shape, device) for shape in product_shapes}
        for _ in range(max(lanes, 1))
    ]
    outputs = [
        {shape: score_buffer(*shape, device) for shape in output_shapes}
        for _ in range(max(lanes, 2))
    ]

    def product_of(j: int, lane: int) -> torch.Tensor:
        return products[lane][(rows_max[j], jobs[j].base_k.shape[0])]

    def multiply(b: int, lane: int) -> tuple[int, int, np.ndarray]:
        j, start = blocks[mine[b]]
        job = jobs[j]
        idx = job.rows[start : start + job.block]

        def queries(a: int, z: int) -> torch.Tensor:
            return job.base_q.take(job.rows[a:z])

        job.base_k.block_scores(
            queries, job.rows.size, start, start + idx.size, product_of(j, lane)[: idx.size]
        )
        return j, start, idx

    def version(
        j: int, start: int, idx: np.ndarray, v: int, lo: int, lane: int, out_lane: int
    ) -> tuple[int, int, np.ndarray, int, torch.Tensor]:
        job = jobs[j]
        hi = min(lo + parts[j], idx.size)
        idx_t = torch.from_numpy(idx[lo:hi]).to(device)
        out = outputs[out_lane][(parts[j], job.base_k.shape[0])]
        scores = job.moved[v].apply(product_of(j, lane)[lo:hi], idx_t, out[: hi - lo])
        return j, start + lo, idx[lo:hi], v, scores

    def hand(item: tuple[int, int, np.ndarray, int, torch.Tensor], lane: int) -> None:
        j, start, idx, v, scores = item
        jobs[j].consume(start, idx, v, scores, lane)

    if lanes:

        def work(b: int, lane: int) -> None:
            j, start, idx = multiply(b, lane)
            for v in range(len(jobs[j].moved)):
                for lo in range(0, idx.size, parts[j]):
                    hand(version(j, start, idx, v, lo, lane, lane), lane)

        in_lanes(len(mine), lanes, work, before=share.keep_pace)
    else:
        items = []
        for b in range(len(mine)):
            j, start = blocks[mine[b]]
            size = min(jobs[j].block, jobs[j].rows.size - start)
            items += [
                (b, v, lo) for v in range(len(jobs[j].moved)) for lo in range(0, size, parts[j])
            ]

        def make(item: int) -> tuple[int, int, np.ndarray, int, torch.Tensor]:
            b, v, lo = items[item]
            if v == 0 and lo == 0:
                share.keep_pace(b)
                multiply(b, 0)
            j, start = blocks[mine[b]]
            idx = jobs[j].rows[start : start + jobs[j].block]
            return version(j, start, idx, v, lo, 0, item % 2)

        pipelined(len(items), make, lambda item: hand(item, 0))
    share.catch_up(len(mine), len(blocks))


#: The largest buffer of versions' scores (two are used); a block bigger than that is made
#: into versions' scores a part of its rows at a time (1,024 rows of 20,000 keys take 80 MiB).
_PART_BYTES = 128 << 20


def _part_rows(rows_max: int, n_keys: int) -> int:
    """Rows of a part of a block (:func:`_jobs_in_blocks`): as many as fit :data:`_PART_BYTES`
    of float32 scores, at least one."""
    return max(1, min(rows_max, _PART_BYTES // (4 * max(n_keys, 1))))


def _version_chunks(
    base_q: UnitRows,
    base_k: UnitRows,
    rows: np.ndarray,
    moved: list[_Moved],
    consume: Callable[[int, int, int, torch.Tensor | None], None],
    *,
    own: bool,
) -> None:
    """``consume(r, start, v, scores)`` for every round ``r`` of chunks of ``base_k``'s keys
    and every version ``v``: ``scores`` are version ``v``'s ``R`` of every query row ``rows``
    (ascending) against this process's chunk of the round (keys ``start, start + 1, ...``),
    or ``None`` when it has none; with ``own``, each query's own key is ``-inf``.

    For keys normalised on the fly: blocks of query rows against every key
    (:func:`_jobs_in_blocks`) would read and normalise every key once a block (a 512 MiB
    block holds 134 queries at a million keys, so 2,000 sampled queries read the keys 15
    times a pass). Here every query meets one chunk of keys at a time
    (:func:`~gapscope.engine.passes.sweep_key_chunks`, as the sampled kernel does), so the
    keys are read once a pass. The product of a chunk is made on this thread while a worker
    thread turns the previous one into each version's scores and consumes them; one process
    alone on a CPU with several threads sweeps in lanes, each turning its own chunks into
    the versions' scores in a buffer of its own, and ``consume`` then takes rounds in any
    order and at once."""
    if not moved:
        return
    rows_t = torch.from_numpy(rows).to(base_q.device)
    width = key_chunk_width(base_k.shape[0], rows.size)
    # A buffer of versions' scores a lane.
    outs = PerLane(lambda: score_buffer(rows.size, width, base_q.device))

    def versions(r: int, start: int, scores: torch.Tensor | None, lane: int) -> None:
        out = outs(lane)
        for v, change in enumerate(moved):
            version = None
            if scores is not None:
                keys = slice(start, start + scores.shape[1])
                version = change.apply(scores, rows_t, out[:, : scores.shape[1]], keys)
            consume(r, start, v, version)

    sweep_key_chunks(
        base_q.take(rows),
        rows,
        base_k,
        versions,
        own=own,
        overlap=True,
        # A lane's versions' scores, and the flags the column ranks make of them.
        lane_bytes_per_score=5,
    )


class _Version(NamedTuple):
    moved: _Moved
    intra: _IntraRanks | None
    kernel: _KernelRows


def offset_modality_passes(
    base: UnitRows,
    versions: Sequence[OffsetRows],
    relevance: ArrayLike | Sequence[int] | None = None,
    *,
    k: int | Sequence[int] = (1, 5, 10),
    t: float = 2.0,
    block_size: int | None = None,
    query_index: ArrayLike | Sequence[int] | None = None,
) -> list[ModalityPassResult]:
    """:func:`~gapscope.engine.passes.modality_pass` (uniformity and intra-modal retrieval) of
    every version of one modality, from one ``X X^T`` pass over ``base``.

    Each block of ``base``'s query rows against every row is made once and turned into each
    version's scores (module notes); the query's own column is ``-inf`` in every version.
    Sampled queries against keys normalised on the fly meet one chunk of keys at a time
    instead (:func:`_version_chunks`: one read of the keys), the kernel summed by chunks and
    the ranks counted down them when the relevant rows are few enough to score up front (else
    by blocks). Retrieval is exact (ranks by exact scores of each version's rows), and a
    version without offset gives :func:`~gapscope.engine.passes.modality_pass`'s numbers bit
    for bit; the uniformity of a moved version is its float32 kernel sum over derived scores,
    within float32 rounding of a pass over its own rows.

    Args:
        base: the modality's unit rows (held in memory or streamed).
        versions: :class:`OffsetRows` of ``base``.
        relevance, k, t, block_size, query_index: as for
            :func:`~gapscope.engine.passes.modality_pass`.

    Returns:
        One :class:`~gapscope.engine.passes.ModalityPassResult` a version, in order.

    Raises:
        EmbeddingError: bad codes, fewer than 2 rows.
        GapscopeError: a bad ``t``, ``k``, ``block_size`` or ``query_index``.
    """
    (results,) = offset_modality_passes_of_each(
        [ModalityToPass(base, versions, relevance, query_index)], k=k, t=t, block_size=block_size
    )
    return results


class ModalityToPass(NamedTuple):
    """One modality's request to :func:`offset_modality_passes_of_each`: its unit rows, the
    :class:`OffsetRows` of its versions, its relevance codes and its query rows (as for
    :func:`offset_modality_passes`)."""

    base: UnitRows
    versions: Sequence[OffsetRows]
    relevance: ArrayLike | Sequence[int] | None = None
    query_index: ArrayLike | Sequence[int] | None = None


def offset_modality_passes_of_each(
    requests: Sequence[ModalityToPass],
    *,
    k: int | Sequence[int] = (1, 5, 10),
    t: float = 2.0,
    block_size: int | None = None,
) -> list[list[ModalityPassResult]]:
    """:func:`offset_modality_passes` of several modalities, their blocks of query rows as
    one list (:func:`_jobs_in_blocks`): two modalities of five blocks each keep two lanes
    busy to the end. The same numbers as a call a modality.

    Raises:
        as :func:`offset_modality_passes`, in the order of ``requests``.
    """
    prepared = [
        _modality_job(r.base, r.versions, r.relevance, r.query_index, k, t, block_size)
        for r in requests
    ]
    _jobs_in_blocks([job for job, _ in prepared if job is not None])
    return [finish() for _, finish in prepared]


def _modality_job(
    base: UnitRows,
    versions: Sequence[OffsetRows],
    relevance: ArrayLike | Sequence[int] | None,
    query_index: ArrayLike | Sequence[int] | None,
    k: int | Sequence[int],
    t: float,
    block_size: int | None,
) -> tuple[_BlockJob | None, Callable[[], list[ModalityPassResult]]]:
    """:func:`offset_modality_passes` up to its blocks: its sweeps made, its blocks' job
    (``None`` when the sweeps did everything) and the results once the blocks are made."""
    cutoffs = check_k(k)
    n = base.shape[0]
    if n < 2:
        raise EmbeddingError(f"{base.name}: needs at least 2 rows, got {n}")
    t = check_temperature(t, "t")
    block = resolve_block_size(block_size, n)
    sample = check_query_index(query_index, n)
    codes = check_groups(relevance, n, "relevance")
    rows = np.arange(n) if sample is None else sample
    _check_versions(base, versions)
    # Over every row, a version that is not moved is the modality's own exact pass, whose
    # kernel comes from the tiles of half the product (self_tiles.py): measured by that pass,
    # so its numbers are modality_pass's, bit for bit.
    derived = [
        v
        for v, view in enumerate(versions)
        if _derivable(view, view) and (sample is not None or view.offset is not None)
    ]
    states = []
    for view in (versions[v] for v in derived):
        (own_dots,) = view.dots.get([view.offset])
        kernel = _KernelRows(rows.size, t)
        moved = _Moved(view, view, own_dots, own_dots, _KernelRows.scale_of(kernel))
        intra = None
        if codes is not None:
            intra = _IntraRanks(codes, rows, view)
            intra.margin = moved.margin
        states.append(_Version(moved, intra, kernel))

    # Sampled queries against keys normalised on the fly: the kernel from one sweep over
    # chunks of the keys (as modality_pass sums it: whatever is asked for, the same bits),
    # the ranks counted down the same chunks when the relevant rows are few enough to score
    # up front, else from blocks of query rows (the path depends on the data alone).
    swept = sample is not None and not base.in_memory and bool(states)
    counted = swept and _fit_columns(base, states)
    if swept:
        _modality_chunks(base, rows, states, ranks=counted)

    def consume(start: int, idx: np.ndarray, v: int, moved: torch.Tensor, lane: int) -> None:
        state = states[v]
        idx_t = torch.from_numpy(idx).to(base.device)
        moved[torch.arange(idx.size, device=base.device), idx_t] = -math.inf
        if state.intra is not None:
            # Ranked by R (module notes): a row's order without its factor.
            if ranks_on_device(moved):
                state.intra.rank_block_device(idx, moved, 1.0)
            else:
                state.intra.rank_block(idx, moved, 1.0)
        if not swept:
            # Last: the kernel overwrites the scores in place.
            state.kernel.add_block(slice(start, start + idx.size), state.moved.finish(moved, idx_t))

    block_rows = _block_rows(rows, states, swept=swept, counted=counted)
    job = None
    if block_rows is not None:
        job = _BlockJob(base, base, block_rows, block, [state.moved for state in states], consume)
    return job, lambda: _modality_results(
        base, versions, derived, states, codes, sample, cutoffs, t, block_size, swept, counted
    )


def _modality_results(
    base: UnitRows,
    versions: Sequence[OffsetRows],
    derived: list[int],
    states: list[_Version],
    codes: np.ndarray | None,
    sample: np.ndarray | None,
    cutoffs: Sequence[int],
    t: float,
    block_size: int | None,
    swept: bool,
    counted: bool,
) -> list[ModalityPassResult]:
    """The results of :func:`_modality_job`'s pass once its blocks are made: what the blocks
    of this process made added over the processes, and the versions that are not derived
    measured by passes over their own rows."""
    share = current_share()
    n = base.shape[0]
    results: list[ModalityPassResult | None] = [None] * len(versions)
    for v, state in zip(derived, states, strict=True):
        # What the blocks of this process made is added over the processes; the sweeps
        # leave every process with every value already.
        if state.intra is not None and not counted:
            share.sum(state.intra.first_rank, state.intra.ap, state.intra.rp)
        if not swept:
            share.sum(state.kernel.row_lse)
        results[v] = _modality_result(state, n, sample, cutoffs)
    for v, view in enumerate(versions):
        if results[v] is None:
            results[v] = modality_pass(
                view.own_rows(),
                codes,
                k=cutoffs,
                t=t,
                block_size=block_size,
                device=base.device,
                query_index=sample,
            )
    return [r for r in results if r is not None]


def _block_rows(
    rows: np.ndarray, states: Sequence[_Version], *, swept: bool, counted: bool
) -> np.ndarray | None:
    """The query rows the blocks multiply: every one when nothing was swept; only those with a
    relevant row when the sweep summed the kernel but could not count the ranks (the blocks
    then rank alone); ``None`` when the sweep did both."""
    if not swept:
        return rows
    intra = states[0].intra
    return None if intra is None or counted else intra.evaluated


def _modality_result(
    state: _Version, n: int, sample: np.ndarray | None, cutoffs: Sequence[int]
) -> ModalityPassResult:
    """A version's uniformity (exact, or the sampled estimate) and retrieval."""
    retrieval = None if state.intra is None else state.intra.result(cutoffs, sample)
    terms = state.kernel.row_lse - math.log(n - 1)
    if sample is None:
        # At most 0, as modality_pass keeps it, so a version without offset gives its bits.
        value, se = min(log_sum_exp(state.kernel.row_lse) - math.log(n * (n - 1)), 0.0), None
    else:
        value, se = _sampled_estimate(terms, n)
    return ModalityPassResult(value, se, sample, terms, retrieval)


def _fit_columns(base: UnitRows, states: Sequence[_Version]) -> bool:
    """Whether the versions' ranks can be counted down chunks of keys: the queries' relevant
    rows are few enough to score up front (:func:`~gapscope.engine.column_ranks.fits_columns`,
    the same for every version: a function of the codes and the sample alone)."""
    intra = states[0].intra
    if intra is None:
        return True
    return fits_columns(intra.members.count(intra.codes[intra.evaluated]) - 1, base.shape[0])


def _modality_chunks(
    base: UnitRows, rows: np.ndarray, states: Sequence[_Version], *, ranks: bool
) -> None:
    """Every version's kernel rows (and with ``ranks`` its intra-modal ranks) of the sampled
    query ``rows`` from one sweep over chunks of ``base``'s keys (:func:`_version_chunks`):
    the kernel summed a chunk at a time and the chunks' sums combined in order, as the
    sampled kernel of :func:`~gapscope.engine.passes.modality_pass` combines them (a version
    without offset gives its bits), the ranks counted down the chunks
    (:class:`~gapscope.engine.column_ranks.IntraColumnRanks`). Every process ends with every
    query's values."""
    rows_t = torch.from_numpy(rows).to(base.device)
    counters: list[IntraColumnRanks | None] = []
    for state in states:
        intra, counter = state.intra, None
        if ranks and intra is not None and intra.evaluated.size:
            items = [intra.items(int(i)) for i in intra.evaluated.tolist()]
            counter = state.moved.column_ranks(intra.evaluated, items, intra.codes, rows)
        counters.append(counter)
    sums = [_ChunkSums(state.kernel, base.shape[0]) for state in states]

    def consume(r: int, start: int, v: int, scores: torch.Tensor | None) -> None:
        counter = counters[v]
        if scores is not None:
            if counter is not None:
                # Ranked by R (module notes): a row's order without its factor.
                counter.add_chunk(start, scores)
            # Last: T times the prescale (module notes), which the kernel overwrites in place.
            scores = states[v].moved.finish(scores, rows_t)
        sums[v].add_round(r, scores)

    _version_chunks(base, base, rows, [state.moved for state in states], consume, own=True)
    for state, counter, total in zip(states, counters, sums, strict=True):
        if counter is not None:
            assert state.intra is not None
            counter.finish(state.intra.store)
        total.finish()


def _check_versions(base: UnitRows, versions: Sequence[OffsetRows]) -> None:
    """Every version must move the rows of ``base`` itself."""
    for view in versions:
        if view.base is not base:
            raise GapscopeError(f"{view.name}: a version of other unit rows than the pass's")


def _derivable(queries: OffsetRows, keys: OffsetRows) -> bool:
    """Whether a version's scores are derived from the shared product (else measured by
    passes over its own rows: a row too close to its offset, module notes)."""
    return max(queries.max_factor, keys.max_factor) <= DERIVED_MAX_FACTOR


def offset_cross_passes(
    base_x: UnitRows,
    base_y: UnitRows,
    versions: Sequence[tuple[OffsetRows, OffsetRows]],
    groups_x: ArrayLike | Sequence[int] | None = None,
    groups_y: ArrayLike | Sequence[int] | None = None,
    *,
    k: int | Sequence[int] = (1, 5, 10),
    block_size: int | None = None,
    query_index_x: ArrayLike | Sequence[int] | None = None,
    query_index_y: ArrayLike | Sequence[int] | None = None,
) -> list[tuple[RetrievalResult, RetrievalResult]]:
    """:func:`~gapscope.engine.passes.cross_pass` (``x -> y`` and ``y -> x`` recall@K) of every
    version of a pair, from one product a direction.

    Each direction's queries (every row, or ``query_index_*``) are ranked by rows: blocks of
    ``base_x``'s query rows against every ``base_y`` row (and the other way round), made once
    and turned into each version's scores (module notes). Sampled queries against keys
    normalised on the fly meet one chunk of keys at a time instead (:func:`_version_chunks`:
    one read of the keys a direction), their first ranks counted down the chunks. Ranks are
    exact, so each version's numbers are those of :func:`~gapscope.engine.passes.cross_pass`
    on its own rows.

    Args:
        base_x, base_y: the two modalities' unit rows (held in memory or streamed).
        versions: ``(x version, y version)`` pairs of :class:`OffsetRows`.
        groups_x, groups_y, k, block_size, query_index_x, query_index_y: as for
            :func:`~gapscope.engine.passes.cross_pass`.

    Returns:
        ``(x_to_y, y_to_x)`` a version, in order.

    Raises:
        EmbeddingError: bad groups.
        GapscopeError: a bad ``k``, ``block_size`` or ``query_index_*``.
    """
    cutoffs = check_k(k)
    check_same_dim(base_x, base_y, ("x", "y"))
    gx, gy = pair_groups(base_x, base_y, groups_x, groups_y, ("x", "y"))
    sample_x = check_query_index(query_index_x, base_x.shape[0])
    sample_y = check_query_index(query_index_y, base_y.shape[0])
    _check_versions(base_x, [x for x, _ in versions])
    _check_versions(base_y, [y for _, y in versions])
    derived = [v for v, (x, y) in enumerate(versions) if _derivable(x, y)]
    pairs = [versions[v] for v in derived]
    # u_i . q of every x row with each version's y offset, and v_j . p the other way.
    x_dots = [x.dots.get([y.offset])[0] for x, y in pairs]
    y_dots = [y.dots.get([x.offset])[0] for x, y in pairs]
    forward = [_Moved(x, y, xq, yp) for (x, y), xq, yp in zip(pairs, x_dots, y_dots, strict=True)]
    backward = [_Moved(y, x, yp, xq) for (x, y), xq, yp in zip(pairs, x_dots, y_dots, strict=True)]
    x_job, x_done = _rows_direction(base_x, base_y, forward, gx, gy, sample_x, cutoffs, block_size)
    y_job, y_done = _rows_direction(base_y, base_x, backward, gy, gx, sample_y, cutoffs, block_size)
    # Both directions' blocks as one list, shared out together.
    _jobs_in_blocks([job for job in (x_job, y_job) if job is not None])
    x_to_y, y_to_x = x_done(), y_done()
    results: dict[int, tuple[RetrievalResult, RetrievalResult]] = dict(
        zip(derived, zip(x_to_y, y_to_x, strict=True), strict=True)
    )
    for v, (x, y) in enumerate(versions):
        if v not in results:
            own = cross_pass(
                x.own_rows(),
                y.own_rows(),
                gx,
                gy,
                k=cutoffs,
                block_size=block_size,
                device=base_x.device,
                query_index_x=sample_x,
                query_index_y=sample_y,
            )
            assert own[0] is not None and own[1] is not None
            results[v] = (own[0], own[1])
    return [results[v] for v in range(len(versions))]


def _rows_direction(
    base_q: UnitRows,
    base_k: UnitRows,
    moved: list[_Moved],
    groups_q: np.ndarray,
    groups_k: np.ndarray,
    sample: np.ndarray | None,
    cutoffs: Sequence[int],
    block_size: int | None,
) -> tuple[_BlockJob | None, Callable[[], list[RetrievalResult]]]:
    """First ranks of one direction's queries in every version, by rows of blocks of the one
    product ``U_q[queries] U_k^T``, or counted down its chunks of keys (sampled queries, keys
    normalised on the fly, positives few enough to score up front; counted here).

    Returns the blocks' job (``None`` when counted down chunks), for the caller to run with
    the other direction's (:func:`_jobs_in_blocks`), and ``finish``, which then adds the
    ranks over the processes and summarises them a version."""
    members = GroupMembers(groups_k)
    eligible = members.count(groups_q) > 0
    rows = np.arange(base_q.shape[0]) if sample is None else sample
    evaluated = rows[eligible[rows]]
    n_keys = base_k.shape[0]
    firsts = [np.zeros(evaluated.size, dtype=np.int64) for _ in moved]
    block = resolve_block_size(block_size, n_keys)
    # Flags of the rows consumed at once (a part of a block), one array a lane.
    mask_shape = (_part_rows(min(block, max(evaluated.size, 1)), n_keys), n_keys)
    masks = PerLane(lambda: np.empty(mask_shape, dtype=bool))

    def consume(start: int, idx: np.ndarray, v: int, scores: torch.Tensor, lane: int) -> None:
        mask = masks(lane)
        # Ranked by R (module notes): a row's order without its factor.
        change, codes, every = moved[v], groups_q[idx], np.arange(idx.size)
        exact = change.exact_scores
        if ranks_on_device(scores):
            ranks = row_ranks_device(scores, every, idx, codes, members, change.margin, exact)
        else:
            ranks = row_ranks(
                scores.cpu().numpy(), every, idx, codes, members, change.margin, exact, mask
            )
        firsts[v][start : start + idx.size] = ranks

    share = current_share()
    counts = members.count(groups_q[evaluated])
    chunked = sample is not None and not base_k.in_memory and evaluated.size > 0
    job = None
    if chunked and fits_columns(counts, n_keys):
        _cross_chunks(base_q, base_k, evaluated, moved, groups_q, groups_k, members, firsts)
    else:
        job = _BlockJob(base_q, base_k, evaluated, block, moved, consume)

    def finish() -> list[RetrievalResult]:
        if job is not None:
            # What the blocks of this process ranked, added over the processes.
            for first in firsts:
                share.sum(first)
        return [
            summarize(
                cutoffs,
                first,
                n_skipped=int(rows.size - evaluated.size),
                n_eligible_total=None if sample is None else int(np.count_nonzero(eligible)),
                query_rows=evaluated,
            )
            for first in firsts
        ]

    return job, finish


def _cross_chunks(
    base_q: UnitRows,
    base_k: UnitRows,
    queries: np.ndarray,
    moved: list[_Moved],
    groups_q: np.ndarray,
    groups_k: np.ndarray,
    members: GroupMembers,
    firsts: list[np.ndarray],
) -> None:
    """Every version's first ranks of the sampled ``queries`` (ascending, each with a positive)
    from one sweep over chunks of ``base_k``'s keys (:func:`_version_chunks`), counted down the
    chunks with each query's positives as its items: the best positive's rank is the fewest
    keys that outrank one of them. Every process ends with every query's rank."""
    items = [members.of(int(g)) for g in groups_q[queries].tolist()]
    codes = groups_q[queries]
    counters = [change.column_ranks(queries, items, groups_k, queries, codes) for change in moved]

    def consume(r: int, start: int, v: int, scores: torch.Tensor | None) -> None:
        if scores is not None:
            counters[v].add_chunk(start, scores)

    _version_chunks(base_q, base_k, queries, moved, consume, own=False)
    for counter, first in zip(counters, firsts, strict=True):
        # finish hands the queries over in order, one at a time.
        found: list[int] = []

        def store(query: int, ranks: np.ndarray, found: list[int] = found) -> None:
            found.append(int(ranks[0]))

        counter.finish(store)
        first[:] = found
