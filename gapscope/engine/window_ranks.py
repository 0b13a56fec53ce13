"""Intra-modal ranks counted against windows about the relevant rows' scores, many queries
at once.

A query's ranks need only, for each of its relevant rows ("items"), how many non-relevant
keys outrank it (:func:`~gapscope.engine.ranking.relevant_ranks`): ``sort(counts) + (0, 1,
..., m - 1)`` are then the items' exact ranks. Each item gets a window ``[lo, hi]`` twice the
float32 error bound wide about a float32 score of it, and in a float32 block of scores:

* a non-relevant key above the window outranks the item (its exact score is higher);
* one below the window does not;
* one inside is compared by exact score (:func:`outranking_in_windows`), ties to the lower
  index.

Two passes count this way. The tiles of the exact modality pass
(:mod:`~gapscope.engine.self_tiles`) take windows known before the pass and add the counts
of every tile. Blocks of whole rows (:func:`block_ranks`) take each row's own item
scores, and count every query of a block in one sort of the keys that can count, where
:func:`~gapscope.engine.ranking.relevant_ranks` takes a handful of numpy calls a query. Both
give the counts of the exact scores, so the ranks are the same, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from gapscope.engine.ordered_scores import ordered_scores
from gapscope.engine.ranking import GroupMembers, near_window, true_counts_along
from gapscope.engine.unit_rows import RowSource

__all__ = [
    "HOST_SUMS",
    "at_or_above",
    "block_ranks",
    "candidate_counts",
    "compare_counts",
    "entry_values",
    "ordered_bits",
    "outranking_in_groups",
    "outranking_in_windows",
    "sorted_counts",
    "store_ranks",
    "take_candidates",
    "true_counts",
    "true_entries",
]

#: Devices whose tiles are summed and counted by numpy (the others by torch, on the device).
HOST_SUMS = {"cpu"}

#: Windows a row counts by one comparison pass each; more by one sort of the row's candidates.
COMPARE_MAX_ITEMS = 4
#: (query, window, key) entries of keys inside windows resolved at once (100 MiB).
NEAR_ENTRIES = 1 << 22
#: A slab of a block's rows: at most this many scores (rows times keys: 8 MiB of float32,
#: and up to 56 MiB of candidates' indices and scores) and window slots (rows times the
#: widest row's relevant rows: about 50 MiB of items, windows and counts), whose windows are
#: made and candidates taken at once; with a part's counting (below), about 180 MiB a slab
#: at most.
BLOCK_ENTRIES = 1 << 21
BLOCK_SLOTS = 1 << 21
#: Candidate keys (at or above their row's lowest window) of a slab counted at once: each
#: takes about 72 bytes while it is counted (its indices, packed key, order and sorted
#: copy), about 72 MiB (a row with more is counted alone).
BLOCK_CANDIDATES = 1 << 20

#: Windows that hold the same keys as another window of their row (items whose scores are
#: equal: rows that tie), ``(rows, windows, representatives)``: window ``windows[p]`` of
#: row ``rows[p]`` is counted against the keys listed for window ``representatives[p]`` of
#: that row (every window of a batch is listed, a representative with itself).
Shared = tuple[np.ndarray, np.ndarray, np.ndarray]

#: Takes keys inside windows, ``(rows, windows, keys)``, the keys counted from the scores'
#: first (numpy int64 arrays of one length), and optionally the windows that share them.
Resolve = Callable[..., None]

#: Tells candidates that are never counted: ``exclude(rows, keys)`` is ``True`` for each
#: ``(rows[p], keys[p])`` to leave out (a key of the query's own code).
Exclude = Callable[[np.ndarray, np.ndarray], np.ndarray]


def compare_counts(
    scores: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, columns: bool, resolve: Resolve
) -> np.ndarray:
    """Keys above each window, one comparison pass a window (few windows a query), the keys
    inside handed to ``resolve`` a window at a time; the queries along the rows of
    ``scores``, or along its columns."""
    above = np.zeros(tuple(lo.shape), dtype=np.int64)
    for w in range(lo.shape[1]):
        low, high = (
            (lo[None, :, w], hi[None, :, w]) if columns else (lo[:, w, None], hi[:, w, None])
        )
        beyond = scores > high
        # hi >= lo, so the keys at or above the window but not beyond it are those inside.
        inside = (scores >= low).logical_xor_(beyond)
        above[:, w] = true_counts(beyond, 0 if columns else 1)
        if bool(inside.any()):
            i, j = (a.cpu().numpy() for a in torch.nonzero(inside, as_tuple=True))
            query, key = (j, i) if columns else (i, j)
            resolve(query.astype(np.int64), np.full(query.size, w, np.int64), key.astype(np.int64))
    return above


def true_counts(mask: torch.Tensor, axis: int) -> np.ndarray:
    """The ``True`` entries of a boolean tile along ``axis`` (int64). Summed as bytes, in
    host memory by numpy (:func:`~gapscope.engine.ranking.true_counts_along`): a boolean sum
    in torch runs about seven times slower."""
    if mask.device.type in HOST_SUMS:
        return true_counts_along(mask.numpy(), axis)
    return mask.view(torch.uint8).sum(axis, dtype=torch.int32).cpu().numpy().astype(np.int64)


def true_entries(mask: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The row and the column (int64) of every ``True`` entry of a 2-D boolean tensor, row
    by row. In host memory by one ``flatnonzero``: about twice as fast as ``nonzero``'s
    pairs of indices, numpy's or torch's."""
    if mask.device.type in HOST_SUMS:
        return np.divmod(np.flatnonzero(mask.numpy()), mask.shape[1])
    # nonzero over the rows that hold an entry only (few, when the items score high).
    held = torch.from_numpy(np.flatnonzero(true_counts(mask, 1))).to(mask.device)
    sub, j = torch.nonzero(mask[held], as_tuple=True)
    return held[sub].cpu().numpy().astype(np.int64), j.cpu().numpy().astype(np.int64)


def sorted_counts(
    scores: torch.Tensor,
    lo: np.ndarray,
    hi: np.ndarray,
    columns: bool,
    resolve: Resolve,
    exclude: Exclude | None = None,
    candidates: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Keys above each window of the queries of ``scores`` (along its rows, or along its
    columns), counted by :func:`candidate_counts` from the keys that can count (those at or
    above their query's lowest window). Candidates that ``exclude`` names are not counted at
    all; ``candidates``, when given, are those of :func:`take_candidates`, taken already."""
    if candidates is None:
        candidates = take_candidates(scores, lo.min(axis=1), columns)
    i, j, values = candidates
    query_np, key_np = (j, i) if columns else (i, j)
    if exclude is not None:
        kept = ~exclude(query_np, key_np)
        query_np, key_np, values = query_np[kept], key_np[kept], values[kept]
    return candidate_counts(query_np, key_np, values, lo, hi, resolve)


def candidate_counts(
    queries: np.ndarray,
    keys: np.ndarray,
    values: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    resolve: Resolve,
) -> np.ndarray:
    """Keys above each window (``lo[q, w]``, ``hi[q, w]``: window ``w`` of query ``q``),
    from one sort of the candidate keys, all queries together: candidate ``p`` is key
    ``keys[p]`` with float32 score ``values[p]`` for query ``queries[p]`` (int64 queries and
    keys, in any order; a query's keys may come from many tiles). Each candidate becomes an
    int64 made of its query (high bits) and its score's bits in an order-preserving form
    (low bits), so one binary search a window finds its count. The keys inside the windows
    go to ``resolve`` by (query, score), ties in any order, at most :data:`NEAR_ENTRIES`
    (query, window, key) entries at a time."""
    above = np.zeros(lo.shape, dtype=np.int64)
    if not queries.size:
        return above
    packed = (queries << 32) | ordered_bits(values)
    # One argsort serves the counts and the keys inside the windows (a second sort for the
    # keys would take as long again). Candidates that tie keep no particular order: the
    # counts, and the keys each window holds, are the same in any.
    order = np.argsort(packed)
    ordered = packed[order]
    # Only the queries with a candidate have anything to count (found by a count a query,
    # not a sort: the candidates number up to every key of every query).
    some = np.flatnonzero(np.bincount(queries, minlength=lo.shape[0]))
    rows = some[:, None] << 32
    end = np.searchsorted(ordered, rows + (1 << 32))
    above_some = end - np.searchsorted(ordered, rows | ordered_bits(hi[some]), side="right")
    upto_some = end - np.searchsorted(ordered, rows | ordered_bits(lo[some]))
    above[some] = above_some
    near_at, near_windows = np.nonzero(upto_some > above_some)
    if not near_at.size:
        return above
    # The keys inside a window are a run of the sorted candidates.
    keys = keys[order]
    first = end[near_at, 0] - upto_some[near_at, near_windows]
    lengths = upto_some[near_at, near_windows] - above_some[near_at, near_windows]
    # Windows of a query that start and end at the same sorted candidates hold the same keys
    # (items with equal scores: rows that tie with each other). Their keys are listed once,
    # for the first such window; the others are counted against that list.
    run = first * (int(lengths.max()) + 1) + lengths
    _, rep, member_of = np.unique(run, return_index=True, return_inverse=True)
    member_of = member_of.reshape(-1)
    shared = rep.size < near_at.size
    if shared:
        by_rep = np.argsort(member_of, kind="stable")
        rep_starts = np.searchsorted(member_of[by_rep], np.arange(rep.size + 1))
    ends = np.cumsum(lengths[rep])
    w0 = 0
    while w0 < rep.size:
        before = int(ends[w0 - 1]) if w0 else 0
        w1 = max(w0 + 1, int(np.searchsorted(ends, before + NEAR_ENTRIES, side="right")))
        windows = rep[w0:w1]
        runs = lengths[windows]
        owner = np.repeat(windows, runs)
        offsets = np.arange(owner.size) - np.repeat(np.cumsum(runs) - runs, runs)
        listed = (some[near_at[owner]], near_windows[owner], keys[first[owner] + offsets])
        if shared:
            members = by_rep[rep_starts[w0] : rep_starts[w1]]
            rows = some[near_at[members]]
            resolve(*listed, (rows, near_windows[members], near_windows[rep[member_of[members]]]))
        else:
            resolve(*listed)
        w0 = w1
    return above


def take_candidates(
    scores: torch.Tensor, lowest: np.ndarray, columns: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(i, j, values)``: the entries of ``scores`` at or above their query's ``lowest``
    (queries along the rows, or along the columns), row by row, as int64 indices and float32
    values in host memory."""
    i, j = true_entries(at_or_above(scores, lowest, columns))
    return i, j, entry_values(scores, i, j)


def at_or_above(scores: torch.Tensor, lowest: np.ndarray, columns: bool = False) -> torch.Tensor:
    """Whether each score is at or above its query's ``lowest`` (float32; queries along the
    rows, or along the columns), on the scores' device."""
    if scores.device.type in HOST_SUMS:
        # numpy's comparison: torch's took about a third longer here.
        lows = lowest[None, :] if columns else lowest[:, None]
        return torch.from_numpy(scores.numpy() >= lows)
    bound = torch.from_numpy(lowest).to(scores.device)
    return scores >= (bound[None, :] if columns else bound[:, None])


def entry_values(scores: torch.Tensor, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """``scores[i, j]`` (int64 indices, e.g. of :func:`true_entries`) in host memory."""
    if scores.device.type in HOST_SUMS:
        return scores.numpy()[i, j]
    index = (torch.from_numpy(i).to(scores.device), torch.from_numpy(j).to(scores.device))
    return scores[index].cpu().numpy()


def ordered_bits(values: np.ndarray) -> np.ndarray:
    """float32 values as int64 in ``[0, 2^32)`` with the same order (``-0.0`` as ``0.0``):
    negative floats have their bits flipped, the others their sign bit set.

    >>> values = np.array([-np.inf, -1.0, -0.0, 0.0, 1e-30, np.inf], np.float32)
    >>> ordered_bits(values).tolist() == sorted(ordered_bits(values).tolist())
    True
    """
    bits = (np.asarray(values, np.float32) + np.float32(0.0)).view(np.int32)
    # In int32, flipping the low 31 bits of the negative floats orders every float as a
    # signed integer; shifted by 2^31 into [0, 2^32) as int64 (about 25 times faster than
    # choosing between two int64 forms).
    flipped = bits ^ ((bits >> 31) & np.int32(0x7FFFFFFF))
    return flipped.astype(np.int64) + (1 << 31)


def outranking_in_windows(
    unit: RowSource,
    queries: np.ndarray,
    items: np.ndarray,
    rows: np.ndarray,
    windows: np.ndarray,
    keys: np.ndarray,
    shared: Shared | None = None,
) -> np.ndarray:
    """How many of the keys inside windows (``keys[p]`` inside window ``windows[p]`` of row
    ``rows[p]``) outrank the window's item (``items[rows[p], windows[p]]``) by exact score
    for the row's query (``queries[rows[p]]``), ties to the lower index; int32, in the shape
    of ``items``. With ``shared``, the keys are listed once for windows that hold the same
    keys (:data:`Shared`), and every window of ``shared`` is counted against its
    representative's keys."""
    if shared is not None:
        return _outranking_shared(unit, queries, items, rows, windows, keys, shared)
    picked = items[rows, windows].astype(np.int64)
    # Each window's item is scored once, however many keys it holds: ordered_scores scores
    # each distinct pair once.
    s_key, s_item = _window_scores(unit, queries, rows, keys, rows, picked)
    outranks = (s_key > s_item) | ((s_key == s_item) & (keys < picked))
    out = np.zeros(items.shape, dtype=np.int32)
    np.add.at(out, (rows[outranks], windows[outranks]), 1)
    return out


def _outranking_shared(
    unit: RowSource,
    queries: np.ndarray,
    items: np.ndarray,
    rows: np.ndarray,
    windows: np.ndarray,
    keys: np.ndarray,
    shared: Shared,
) -> np.ndarray:
    """:func:`outranking_in_windows` of the windows of ``shared``, each counted against the
    keys listed for its representative window."""
    width = items.shape[1]
    m_rows, m_windows, m_reps = shared
    # Each window is one slot: its item is scored once.
    m_items = items[m_rows, m_windows].astype(np.int64)
    s_key, s_item = _window_scores(unit, queries, rows, keys, m_rows, m_items)
    out = np.zeros(items.shape, dtype=np.int32)
    out[m_rows, m_windows] = outranking_in_groups(
        rows * width + windows, s_key, keys, m_rows * width + m_reps, s_item, m_items
    )
    return out


def _window_scores(
    unit: RowSource,
    queries: np.ndarray,
    rows: np.ndarray,
    keys: np.ndarray,
    item_rows: np.ndarray,
    items: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Scores of each key ``keys[p]`` and each item ``items[p]`` for the query of its row,
    from one :func:`~gapscope.engine.ordered_scores.ordered_scores`: a query's keys and items
    compare as their exact scores do (each query and key scored once, however many of the
    query's windows hold the key)."""
    scores = ordered_scores(
        unit,
        np.concatenate([queries[rows], queries[item_rows]]),
        unit,
        np.concatenate([keys, items]),
    )
    return scores[: rows.size], scores[rows.size :]


def outranking_in_groups(
    groups: np.ndarray,
    scores: np.ndarray,
    keys: np.ndarray,
    item_groups: np.ndarray,
    item_scores: np.ndarray,
    items: np.ndarray,
) -> np.ndarray:
    """For each item ``p``, how many entries of its group (``groups == item_groups[p]``)
    outrank it: a higher score than ``item_scores[p]``, or an equal one and a lower key
    than ``items[p]`` (keys and items are never equal). Int64 group ids, float64 scores,
    int64 keys and items in ``[0, 2^32)``.

    One sort of the entries by (group, score, key), then binary searches: the same counts as
    comparing every entry with every item of its group, in O((E + P) log E).

    >>> outranking_in_groups(
    ...     np.array([0, 0, 0, 1]), np.array([0.5, 0.2, 0.2, 0.9]), np.array([4, 1, 6, 2]),
    ...     np.array([0, 0, 1]), np.array([0.2, 0.5, 0.1]), np.array([3, 7, 5]),
    ... ).tolist()
    [2, 1, 1]
    """
    if not groups.size:
        return np.zeros(items.size, dtype=np.int64)
    values = np.unique(np.concatenate([scores, item_scores]))
    dense = np.unique(groups)
    item_dense = np.searchsorted(dense, item_groups)
    # (group, score) as one int64 "level": group in the high bits, the score's rank below.
    level = (np.searchsorted(dense, groups) << 32) | np.searchsorted(values, scores)
    item_level = (item_dense << 32) | np.searchsorted(values, item_scores)
    levels = np.unique(level)
    # Entries by (level, key): each level's keys are one ascending run.
    ordered = np.sort((np.searchsorted(levels, level) << 32) | keys)
    group_end = np.searchsorted(levels, ((item_level >> 32) + 1) << 32)
    higher = np.searchsorted(levels, item_level, side="right")
    count = np.searchsorted(ordered, group_end << 32) - np.searchsorted(ordered, higher << 32)
    equal = np.searchsorted(levels, item_level)
    found = equal < levels.size
    found[found] = levels[equal[found]] == item_level[found]
    at = equal[found] << 32
    count[found] += np.searchsorted(ordered, at | items[found]) - np.searchsorted(ordered, at)
    # An item whose group has no entry at all has nothing that outranks it (its dense id
    # above is that of the next group).
    count[dense[np.minimum(item_dense, dense.size - 1)] != item_groups] = 0
    return count


def block_ranks(
    scores: torch.Tensor,
    rows: np.ndarray,
    queries: np.ndarray,
    members: GroupMembers,
    unit: RowSource,
    margin: float,
    store: Callable[[np.ndarray, np.ndarray], None],
) -> None:
    """The exact ranks of the relevant rows of the queries of a block of whole rows, all
    queries together (module notes); a query's relevant rows are the other members of its
    group.

    Args:
        scores: ``(b, n)`` float32 scores of a block's rows against every key, in host
            memory (a query's own key ``-inf``, never counted).
        rows: the block rows to rank (ascending), each a query with at least one relevant
            row; ``queries`` their row numbers.
        members: the group of every key (a key of its query's group is one of its relevant
            rows, or the query itself, and is never counted).
        unit: the rows whose exact scores break near-ties.
        margin: twice the largest error of a float32 score, in the scores' units.
        store: takes ``(query_rows, ranks)``: queries with as many relevant rows each, and
            their 0-based ranks, ascending, a row a query.

    Each relevant row's window is about its own float32 score in its query's row. The rows
    are taken a slab at a time (at most :data:`BLOCK_ENTRIES` scores and
    :data:`BLOCK_SLOTS` window slots), and a slab's rows are counted a part at a time, each
    part by one :func:`sorted_counts` over at most :data:`BLOCK_CANDIDATES` candidate keys
    (or one row's).
    """
    n = scores.shape[1]
    host = scores.numpy()
    codes = members.codes_of(queries)
    sizes = members.count(codes) - 1
    contiguous = rows.size == host.shape[0]
    a = 0
    while a < rows.size:
        # As many rows as keep both the scores and the window slots within their budgets.
        widest = np.maximum.accumulate(sizes[a : a + max(1, BLOCK_ENTRIES // max(n, 1))])
        fits = np.arange(1, widest.size + 1) * widest <= BLOCK_SLOTS
        z = a + max(1, int(np.count_nonzero(fits)))
        slab = slice(a, z)
        # Every row of the block (the usual case) is counted from the block itself.
        sub = scores[slab] if contiguous else torch.from_numpy(host[rows[slab]])
        _slab_ranks(sub, queries[slab], codes[slab], sizes[slab], members, unit, margin, store)
        a = z


def _slab_ranks(
    sub: torch.Tensor,
    queries: np.ndarray,
    codes: np.ndarray,
    sizes: np.ndarray,
    members: GroupMembers,
    unit: RowSource,
    margin: float,
    store: Callable[[np.ndarray, np.ndarray], None],
) -> None:
    """:func:`block_ranks` of one slab: ``sub`` holds the rows of ``queries`` (their
    ``codes``, ``sizes`` relevant rows each)."""
    width = int(sizes.max())
    items = _items(members, queries, codes, sizes, width)
    valid = np.arange(width)[None, :] < sizes[:, None]
    host = sub.numpy()
    lo, hi = near_window(host[np.arange(queries.size)[:, None], items], margin)
    # No key reaches the window of a slot beyond a query's relevant rows.
    lo = np.where(valid, lo, np.float32(np.inf))
    hi = np.where(valid, hi, np.float32(np.inf))
    counts = np.zeros(items.shape, dtype=np.int64)
    # The slab's candidates (at or above their row's lowest window, its relevant rows among
    # them), row by row, cut the parts: each takes about 72 bytes while a part is counted.
    i, j, values = take_candidates(sub, lo.min(axis=1), False)
    bounds = np.searchsorted(i, np.arange(queries.size + 1))
    p0 = 0
    while p0 < queries.size:
        cut = bounds[p0] + BLOCK_CANDIDATES
        p1 = max(p0 + 1, int(np.searchsorted(bounds, cut, side="right")) - 1)
        part, held = slice(p0, p1), slice(bounds[p0], bounds[p1])
        windows = (lo[part], hi[part])
        rank_of = (queries[part], codes[part], items[part])
        taken = (i[held] - p0, j[held], values[held])
        counts[part] += _part_counts(sub[part], *windows, *rank_of, members, unit, taken)
        p0 = p1
    store_ranks(store, queries, sizes, counts)


def store_ranks(
    store: Callable[[np.ndarray, np.ndarray], None],
    queries: np.ndarray,
    sizes: np.ndarray,
    counts: np.ndarray,
) -> None:
    """Hand ``store(query_rows, ranks)`` the ranks of ``queries`` (``sizes[p]`` relevant rows
    each, ``counts[p, :sizes[p]]`` the non-relevant keys outranking each), the queries with
    as many relevant rows at once: ``sort(counts) + (0, 1, ..., m - 1)`` a row a query."""
    for m in np.unique(sizes).tolist():
        same = np.flatnonzero(sizes == m)
        store(queries[same], np.sort(counts[same, :m], axis=1) + np.arange(m))


def _part_counts(
    sub: torch.Tensor,
    lo: np.ndarray,
    hi: np.ndarray,
    queries: np.ndarray,
    codes: np.ndarray,
    items: np.ndarray,
    members: GroupMembers,
    unit: RowSource,
    candidates: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> np.ndarray:
    """How many non-relevant keys outrank each item of a part's rows (``sub``, whose
    ``candidates`` are taken already), in the shape of ``items``."""
    counts = np.zeros(items.shape, dtype=np.int64)

    def resolve(
        r: np.ndarray, w: np.ndarray, keys: np.ndarray, shared: Shared | None = None
    ) -> None:
        counts[:] += outranking_in_windows(unit, queries, items, r, w, keys, shared)

    def exclude(r: np.ndarray, keys: np.ndarray) -> np.ndarray:
        return members.codes_of(keys) == codes[r]

    counts += sorted_counts(sub, lo, hi, False, resolve, exclude, candidates)
    return counts


def _items(
    members: GroupMembers, queries: np.ndarray, codes: np.ndarray, sizes: np.ndarray, width: int
) -> np.ndarray:
    """``(queries.size, width)``: each query's relevant rows (its group's other members,
    ascending), padded with its group's last member (the query itself, when it is the last)
    beyond its size: slots whose windows are empty and whose counts are never read."""
    group = members.padded(codes, width + 1)
    # The query's place among its group's members (its first: the padding repeats the last).
    at = np.argmax(group == queries[:, None], axis=1)
    columns = np.arange(width)[None, :]
    return np.take_along_axis(group, columns + (columns >= at[:, None]), axis=1)
