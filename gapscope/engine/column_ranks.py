"""Ranks of sampled queries counted down the columns of thin products: intra-modal ranks, and
the first ranks of cross-modal directions and of moved rows (the what-ifs).

When a modality's keys are too many to keep as float32 unit rows (a million rows of d = 512
is 2 GiB), each read of the keys normalises them again. The block path of
:func:`~gapscope.engine.passes.modality_pass` multiplies a block of query rows by every key,
so it reads the keys once a block of queries: at a million keys a 512 MiB block holds 134
queries, and 2,000 sampled queries read the keys 15 times. Here every sampled query meets one
chunk of keys at a time instead (the chunks the sampled uniformity reads anyway), so the keys
are read once.

A query's ranks need only, for each of its relevant rows ("items"), how many non-relevant
keys outrank it (:func:`~gapscope.engine.ranking.relevant_ranks`), and those counts add up over
chunks of keys once each item's score is known before the pass. The items' scores are the
exact ones (:func:`~gapscope.engine.unit_rows.exact_scores`, gathered up front), and each item
gets a window of twice the float32 error bound around its score (in the scores' units):

* a key whose float32 score lies above the window is counted as outranking the item (its exact
  score is higher: the float32 score is within the bound of it);
* a key below the window does not outrank it;
* a key inside the window is kept and compared by exact score after the pass (ties to the
  lower index).

So the counts, and the ranks ``sort(counts) + (0, 1, ..., m - 1)``, are the exact ones, the
same as the block path's, however the keys are chunked. Scoring the items exactly gathers
``2 sum |items|`` rows (the two rows of each pair), so the path is taken only when that is at
most the number of keys (:func:`fits_columns`): groups of a few rows (captions of one image)
qualify; a label shared by a tenth of a million rows does not, and keeps the block path.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np
import torch

from gapscope.engine.distributed import current_share
from gapscope.engine.ranking import window_counts
from gapscope.engine.unit_rows import RowSource, exact_scores
from gapscope.engine.window_ranks import at_or_above, entry_values, true_counts, true_entries

__all__ = ["CANDIDATES_MAX", "IntraColumnRanks", "fits_columns"]

#: Candidate keys (at or above a query's lowest window) taken out of a chunk's scores at once:
#: their indices and scores take about 100 MiB.
CANDIDATES_MAX = 1 << 22


def fits_columns(item_counts: np.ndarray, n_keys: int) -> bool:
    """Whether scoring every sampled query's items exactly (``item_counts[p]`` items for
    query ``p``; each pair gathers its two rows) reads at most as many rows as one pass over
    the ``n_keys`` keys.

    >>> fits_columns(np.array([4, 4, 4]), 100), fits_columns(np.array([30, 30]), 100)
    (True, False)
    """
    return 2 * int(np.sum(item_counts, dtype=np.int64)) <= n_keys


class IntraColumnRanks:
    """The exact intra-modal ranks of ``queries``, counted one chunk of keys at a time.

    The same counts serve the first ranks of a cross-modal direction (``keys`` and
    ``query_codes`` given: the items are a query's positives in the other modality) and the
    ranks of moved rows (:mod:`~gapscope.engine.offset_passes`: ``row_scale``, the factor
    each query row's scores carry).

    Args:
        unit: the unit rows of the queries (and of the keys, without ``keys``).
        queries: the query rows (ascending), each with at least one item.
        items: ``items[p]``, the relevant keys of ``queries[p]`` (the query left out).
        codes: the relevance code of every key (a key whose code is the query's is an item,
            or the query itself, and is never counted).
        margin: twice the float32 error bound of a score, in the units of the products' scores
            before ``scale`` (for moved rows, the units of ``R``).
        scale: the factor the product's query rows were multiplied by (a power of two).
        product_rows: the rows the products multiply (ascending, ``queries`` among them).
        keys: the keys' rows, when they are not ``unit``.
        query_codes: the queries' codes, when ``codes`` are the keys' only.
        row_scale: ``row_scale[p]``, the positive factor of query ``p``'s scores in the
            products (their order within a row is the exact scores' order); ``None``: 1.
    """

    def __init__(
        self,
        unit: RowSource,
        queries: np.ndarray,
        items: Sequence[np.ndarray],
        codes: np.ndarray,
        margin: float,
        scale: float,
        product_rows: np.ndarray,
        *,
        keys: RowSource | None = None,
        query_codes: np.ndarray | None = None,
        row_scale: np.ndarray | None = None,
    ) -> None:
        self.unit = unit
        self.keys = unit if keys is None else keys
        self.queries = np.asarray(queries, dtype=np.int64)
        self.codes = codes
        self.query_codes = codes[self.queries] if query_codes is None else query_codes
        sizes = np.array([a.size for a in items], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])
        owner = np.repeat(np.arange(self.queries.size), sizes)
        flat = np.concatenate(items).astype(np.int64) if len(items) else np.zeros(0, np.int64)
        exact = exact_scores(unit, self.queries[owner], self.keys, flat)
        # Within a query, items ascend by exact score (ties by index): the windows ascend too.
        order = np.lexsort((flat, exact, owner))
        self.items, self.exact, self.owner = flat[order], exact[order], owner[order]
        centre = self.exact if row_scale is None else self.exact * row_scale[self.owner]
        self.lo = (centre - margin) * scale
        self.hi = (centre + margin) * scale
        # Each product row's lowest window bound, in float32 one step down (so no key at or
        # above it is missed); +inf for rows that are not queries here.
        positions = np.searchsorted(product_rows, self.queries)
        lowest = np.full(product_rows.size, np.inf, np.float32)
        lowest[positions] = np.nextafter(
            self.lo[self.offsets[:-1]].astype(np.float32), np.float32(-np.inf)
        )
        self.lowest = lowest
        # The query a product row holds (-1: none).
        self.query_of_row = np.full(lowest.size, -1, dtype=np.int64)
        self.query_of_row[positions] = np.arange(self.queries.size)
        self.above = np.zeros(self.items.size, dtype=np.int64)
        # Lanes count chunks at once: the counts (integers) are added under a lock, and the
        # near keys are counted whatever order they were listed in.
        self._adding = threading.Lock()
        self.near_keys: list[np.ndarray] = []
        self.near_windows: list[np.ndarray] = []

    def add_chunk(self, start: int, scores_t: torch.Tensor) -> None:
        """Count keys ``start, start + 1, ...`` (the columns of ``scores_t``, whose rows are
        the products' rows, in the scaled units)."""
        if not self.queries.size:
            return
        mask = at_or_above(scores_t, self.lowest)
        # The candidates are taken out a run of rows at a time, at most CANDIDATES_MAX of
        # them (a query whose relevant rows score low has nearly every key as a candidate).
        ends = np.cumsum(true_counts(mask, 1))
        r0 = 0
        while r0 < ends.size:
            before = int(ends[r0 - 1]) if r0 else 0
            r1 = max(r0 + 1, int(np.searchsorted(ends, before + CANDIDATES_MAX, side="right")))
            if ends[r1 - 1] > before:
                self._add_rows(start, r0, scores_t[r0:r1], mask[r0:r1])
            r0 = r1

    def _add_rows(self, start: int, r0: int, scores_t: torch.Tensor, mask: torch.Tensor) -> None:
        at, cols = true_entries(mask)
        values = entry_values(scores_t, at, cols).astype(np.float64)
        rows = self.query_of_row[at + r0]
        keys = cols + start
        # A key of the query's own code is one of its items, or the query itself.
        keep = self.codes[keys] != self.query_codes[rows]
        rows, keys, values = rows[keep], keys[keep], values[keep]
        # nonzero lists the candidates row by row, so each query's are one run.
        bounds = np.searchsorted(rows, np.arange(self.queries.size + 1))
        for p in np.flatnonzero(np.diff(bounds)).tolist():
            self._count(p, keys[bounds[p] : bounds[p + 1]], values[bounds[p] : bounds[p + 1]])

    def _count(self, p: int, keys: np.ndarray, values: np.ndarray) -> None:
        """Add query ``p``'s candidate keys (non-relevant, at or above its lowest window)."""
        w0, w1 = int(self.offsets[p]), int(self.offsets[p + 1])
        lo, hi = self.lo[w0:w1], self.hi[w0:w1]
        # Counted as relevant_ranks counts a row; the keys are only needed inside a window.
        above, upto = window_counts(values, lo, hi)
        near = []
        for w in np.flatnonzero(upto > above).tolist():
            inside = keys[(values >= lo[w]) & (values <= hi[w])]
            near.append((inside, np.full(inside.size, w0 + w, dtype=np.int64)))
        with self._adding:
            self.above[w0:w1] += above
            for inside, windows in near:
                self.near_keys.append(inside)
                self.near_windows.append(windows)

    def finish(self, store: Callable[[int, np.ndarray], None]) -> None:
        """Resolve the keys inside the windows by exact score and hand each query's ranks
        (0-based, ascending) to ``store(query_row, ranks)``.

        Processes that shared the chunks (:mod:`~gapscope.engine.distributed`) each resolve
        the keys of their own chunks; the counts, integers, are then added over them."""
        counts = self.above.copy()
        if self.near_keys:
            keys = np.concatenate(self.near_keys)
            windows = np.concatenate(self.near_windows)
            queries = self.queries[self.owner[windows]]
            s_key = exact_scores(self.unit, queries, self.keys, keys)
            s_item, item = self.exact[windows], self.items[windows]
            outranks = (s_key > s_item) | ((s_key == s_item) & (keys < item))
            counts += np.bincount(windows[outranks], minlength=counts.size)
        current_share().sum(counts)
        for p, query in enumerate(self.queries.tolist()):
            part = counts[self.offsets[p] : self.offsets[p + 1]]
            store(query, np.sort(part) + np.arange(part.size))
