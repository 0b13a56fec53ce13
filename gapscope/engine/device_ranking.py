"""Ranking on the device that made the scores: the counts of :mod:`gapscope.engine.ranking`
computed where the score block lies, so a GPU pass copies only a few indices to the host.

Every rank of :mod:`gapscope.engine.ranking` is a count of float32 comparisons against
thresholds (a score's near window, :func:`~gapscope.engine.ranking.near_window`) plus the
exact re-ranking of the few keys inside a window. The comparisons are the same float32
comparisons on the device (``torch`` compares IEEE float32 exactly as numpy does, and the
windows are made with the same rounding), so the counts are identical; the keys inside a
window are copied to the host and re-ranked there by the same functions as on the host path.
What runs on the device:

* :func:`row_ranks_device`: a block's cross-modal queries (rows), the rank of each one's best
  positive: one comparison of the block with each row's window.
* :func:`column_counts_device`: the column queries of a cross pass, the same down the columns.
* :func:`relevant_ranks_device`: every relevant row's rank of a block's intra-modal queries
  (for mAP and R-precision): the block's rows sorted once, each relevant row's window found by
  binary search (``torch.searchsorted``), as the host does for many relevant rows.

Tests run these on CPU tensors against the host path on tie-heavy data
(``tests/engine/test_device_ranking.py``); :mod:`gapscope.engine.passes` uses them for the
device types in ``DEVICE_RANKING`` (CUDA).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from gapscope.engine.ranking import (
    ExactScores,
    GroupMembers,
    float32_margin,
    near_keys,
    outranking_best_positive,
    outranking_items,
)

__all__ = [
    "DEVICE_RANKING",
    "column_window_counts",
    "relevant_ranks_device",
    "row_ranks_device",
    "window_device",
]

#: The device types whose score blocks are ranked where they lie; the others copy the block
#: to the host (on a CPU the numpy path is as fast and needs no copy).
DEVICE_RANKING: set[str] = {"cuda"}


def window_device(values: torch.Tensor, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`~gapscope.engine.ranking.near_window` of a float32 tensor, on its device, bit
    for bit: the margin rounded up to float32, the bounds one float32 step outwards."""
    m = torch.tensor(float(float32_margin(margin)), dtype=torch.float32, device=values.device)
    inf = torch.tensor(float("inf"), dtype=torch.float32, device=values.device)
    lo = torch.nextafter(values - m, -inf)
    hi = torch.nextafter(values + m, inf)
    return lo, hi


def _index(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64)).to(device)


def row_ranks_device(
    scores: torch.Tensor,
    queries: np.ndarray,
    query_rows: np.ndarray,
    codes: np.ndarray,
    members: GroupMembers,
    margin: float,
    exact: ExactScores,
) -> np.ndarray:
    """:func:`~gapscope.engine.ranking.row_ranks` of a block on its device: the same ranks."""
    dev = scores.device
    counts = members.count(codes)
    width = int(counts.max())
    cols = _index(members.padded(codes, width), dev)
    rows = _index(queries, dev)
    sub = scores[rows]
    values = torch.gather(sub, 1, cols)
    valid = torch.arange(width, device=dev)[None, :] < _index(counts, dev)[:, None]
    values = values.masked_fill(~valid, float("-inf"))
    lo, hi = window_device(values.max(dim=1).values, margin)
    near_positives = ((values >= lo[:, None]) & (values <= hi[:, None])).sum(dim=1)
    ranks = (sub > hi[:, None]).sum(dim=1)
    near = (sub >= lo[:, None]).sum(dim=1) - ranks
    need_t = torch.nonzero(near > near_positives).flatten()
    out = ranks.cpu().numpy().astype(np.int64)
    if need_t.numel():
        need = need_t.cpu().numpy()
        window = (sub[need_t] >= lo[need_t, None]) & (sub[need_t] <= hi[need_t, None])
        owner, keys = (t.cpu().numpy() for t in torch.nonzero(window, as_tuple=True))
        out[need] += outranking_best_positive(
            owner, keys, query_rows[need], codes[need], members, exact
        )
    return out


def column_window_counts(
    sub: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """For each column j of ``sub``: how many rows score above ``hi[j]``, and how many lie
    in ``[lo[j], hi[j]]`` (host arrays)."""
    above = (sub > hi[None, :]).sum(dim=0)
    near = (sub >= lo[None, :]).sum(dim=0) - above
    return above.cpu().numpy().astype(np.int64), near.cpu().numpy().astype(np.int64)


def relevant_ranks_device(
    scores: torch.Tensor,
    queries: np.ndarray,
    items: list[np.ndarray],
    is_relevant: list[Callable[[np.ndarray], np.ndarray]],
    margin: float,
    exact_keys: list[Callable[[np.ndarray], np.ndarray]],
) -> list[np.ndarray]:
    """:func:`~gapscope.engine.ranking.relevant_ranks` of several rows of a block at once, on
    its device: for block row ``queries[q]``, the ascending 0-based ranks of its relevant
    ``items[q]`` (non-empty), with ``is_relevant[q]`` and ``exact_keys[q]`` as there.

    The rows are sorted once; an item's count of keys above (in) its window is a binary search
    of the sorted row, and that of relevant items one of the sorted item scores (padded with
    ``+inf``, which no window reaches). Rows whose windows hold a non-relevant key are copied
    to the host and those keys re-ranked by exact score as on the host path.
    """
    dev = scores.device
    sizes = np.array([i.size for i in items], dtype=np.int64)
    width = int(sizes.max())
    padded = np.zeros((len(items), width), dtype=np.int64)
    for q, i in enumerate(items):
        padded[q, : i.size] = i
    rows = _index(queries, dev)
    sub = scores[rows]
    valid = torch.arange(width, device=dev)[None, :] < _index(sizes, dev)[:, None]
    values = torch.gather(sub, 1, _index(padded, dev)).masked_fill(~valid, float("inf"))
    # Ascending, stable: equal scores keep the items' (ascending) order, as on the host.
    values, order = torch.sort(values, dim=1, stable=True)
    lo, hi = window_device(values, margin)
    m = _index(sizes, dev)[:, None]
    above_relevant = m - torch.searchsorted(values, hi, right=True)
    near_relevant = m - above_relevant - torch.searchsorted(values, lo)
    keys = torch.sort(sub, dim=1).values
    n = keys.shape[1]
    above = n - torch.searchsorted(keys, hi.contiguous(), right=True)
    near = n - above - torch.searchsorted(keys, lo.contiguous())
    counts = (above - above_relevant).cpu().numpy()
    need_mask = ((near > near_relevant) & valid).cpu().numpy()
    order_np = order.cpu().numpy()
    out = []
    needy = np.flatnonzero(need_mask.any(axis=1))
    host_rows = dict(zip(needy.tolist(), sub[_index(needy, dev)].cpu().numpy(), strict=True))
    lo_np = hi_np = None
    if needy.size:
        lo_np, hi_np = lo.cpu().numpy(), hi.cpu().numpy()
    for q in range(len(items)):
        size = int(sizes[q])
        c = counts[q, :size].astype(np.int64)
        need = np.flatnonzero(need_mask[q, :size])
        if need.size:
            assert lo_np is not None and hi_np is not None
            ordered = items[q][order_np[q, :size]]
            close, owner = near_keys(host_rows[q], lo_np[q, need], hi_np[q, need], is_relevant[q])
            c[need] += outranking_items(close, owner, ordered[need], exact_keys[q])
        out.append(np.sort(c) + np.arange(size))
    return out
