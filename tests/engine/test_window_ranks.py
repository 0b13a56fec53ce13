"""Ranks of blocks of whole rows counted all at once (:func:`~gapscope.engine.window_ranks.
block_ranks`) against :func:`~gapscope.engine.ranking.relevant_ranks`, one row at a time.

Tie-heavy rows put keys inside windows everywhere, so the exact-score resolution (batched,
shared between windows that hold the same keys) is exercised as much as the counting; parts
of a single row, parts cut by window slots, rows left out of the block and rows scaled by a
power of two must all give the per-row ranks, bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gapscope.engine import window_ranks
from gapscope.engine.ranking import GroupMembers, relevant_ranks, score_error_bound
from gapscope.engine.unit_rows import UnitRows, exact_scores


def _rows(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "ties":  # +-1 in d = 4: every score a multiple of 0.25
        return rng.choice([-1.0, 1.0], size=(n, 4)).astype(np.float32)
    if kind == "few distinct":  # a dozen rows, each repeated and rescaled
        base = rng.normal(size=(12, 16))
        return (base[rng.integers(0, 12, size=n)] * rng.choice([1.0, 2.0], (n, 1))).astype(
            np.float32
        )
    return rng.normal(size=(n, 24)).astype(np.float32)


def _codes(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "labels":  # about twenty relevant rows a query
        return rng.integers(0, 6, size=n)
    if kind == "pairs":  # one relevant row: the windows' own comparisons
        return np.arange(n) // 2
    return rng.integers(0, n // 3, size=n)  # ragged, some rows without a relevant one


def _per_row(unit, scores, rows, codes, margin):
    """relevant_ranks of every query row, one at a time (the reference)."""
    out = {}
    for r in rows.tolist():
        items = np.flatnonzero((codes == codes[r]) & (np.arange(codes.size) != r))
        out[r] = relevant_ranks(
            scores[r],
            items,
            lambda keys, c=codes[r]: codes[keys] == c,
            margin,
            lambda keys, q=r: exact_scores(unit, np.full(keys.size, q), unit, keys),
        )
    return out


@pytest.mark.parametrize("data", ["ties", "few distinct", "gaussian"])
@pytest.mark.parametrize("relevance", ["labels", "pairs", "ragged"])
@pytest.mark.parametrize(
    ("entries", "slots", "candidates", "near"),
    [
        (1 << 22, 1 << 21, 1 << 20, 1 << 22),
        (1, 1 << 21, 1 << 20, 3),
        (1 << 22, 7, 1 << 20, 5),
        (1 << 22, 1 << 21, 150, 1 << 22),
        (1 << 22, 1 << 21, 1, 1 << 22),
    ],
)
@pytest.mark.parametrize("every", [1, 3])
def test_block_ranks_are_relevant_ranks_row_by_row(
    monkeypatch, data, relevance, entries, slots, candidates, near, every
):
    # Slabs of one row (entries = 1), slabs cut by window slots, parts cut by candidates
    # (down to rows with more candidates than a part may hold), near keys resolved a few
    # entries at a time; every third row only (a block whose rows
    # are gathered).
    monkeypatch.setattr(window_ranks, "BLOCK_ENTRIES", entries)
    monkeypatch.setattr(window_ranks, "BLOCK_SLOTS", slots)
    monkeypatch.setattr(window_ranks, "BLOCK_CANDIDATES", candidates)
    monkeypatch.setattr(window_ranks, "NEAR_ENTRIES", near)
    n = 90
    unit = UnitRows(_rows(data, n, seed=1))
    codes = _codes(relevance, n, seed=2)
    members = GroupMembers(codes)
    block = unit.take(np.arange(n))
    scores = block @ block.T
    scores.fill_diagonal_(-math.inf)
    margin = 2.0 * score_error_bound(unit.shape[1])
    eligible = np.flatnonzero(members.count(codes) > 1)
    rows = eligible[::every]
    expected = _per_row(unit, scores.numpy(), rows, codes, margin)
    got: dict[int, np.ndarray] = {}

    def store(queries: np.ndarray, ranks: np.ndarray) -> None:
        assert ranks.shape == (queries.size, ranks.shape[1])
        for q, r in zip(queries.tolist(), ranks, strict=True):
            assert q not in got  # each query once
            got[q] = r

    parts = []
    counted = window_ranks.sorted_counts

    def spy(sub, lo, *args):  # type: ignore[no-untyped-def]
        held = int((sub.numpy() >= lo.min(axis=1)[:, None]).sum())
        parts.append((sub.shape[0], lo.size, held))
        return counted(sub, lo, *args)

    monkeypatch.setattr(window_ranks, "sorted_counts", spy)
    window_ranks.block_ranks(scores, rows, rows, members, unit, margin, store)
    assert sorted(got) == rows.tolist()
    # Each part keeps its scores, window slots and candidates within the budgets (or is a
    # single row).
    assert all(r == 1 or (r * n <= entries and s <= slots and c <= candidates) for r, s, c in parts)
    for q in rows.tolist():
        np.testing.assert_array_equal(got[q], expected[q], err_msg=f"query {q}")


def test_scaled_scores_rank_alike():
    # Scores multiplied by a power of two, with the margin in their units: the same ranks.
    n = 80
    unit = UnitRows(_rows("ties", n, seed=3))
    codes = _codes("labels", n, seed=4)
    members = GroupMembers(codes)
    block = unit.take(np.arange(n))
    margin = 2.0 * score_error_bound(unit.shape[1])
    rows = np.flatnonzero(members.count(codes) > 1)
    found = []
    for scale in (1.0, 4.0):
        scores = (block * scale) @ block.T
        scores.fill_diagonal_(-math.inf)
        ranks: dict[int, list[int]] = {}
        window_ranks.block_ranks(
            scores,
            rows,
            rows,
            members,
            unit,
            margin * scale,
            lambda q, r, ranks=ranks: ranks.update(zip(q.tolist(), r.tolist(), strict=True)),
        )
        found.append(ranks)
    assert found[0] == found[1]


@pytest.mark.parametrize("columns", [False, True])
def test_host_and_torch_candidates_agree(monkeypatch, columns):
    # The host path takes the candidates with numpy, a device with torch (run here on CPU
    # tensors): the same entries, row by row, with the same values.
    rng = np.random.default_rng(5)
    scores = torch.from_numpy(rng.choice([-0.5, 0.0, 0.25, 0.5], size=(17, 23)).astype(np.float32))
    lowest = rng.choice([-1.0, 0.0, 0.25, np.inf], size=23 if columns else 17).astype(np.float32)
    host = window_ranks.take_candidates(scores, lowest, columns)
    monkeypatch.setattr(window_ranks, "HOST_SUMS", set())
    device = window_ranks.take_candidates(scores, lowest, columns)
    for a, b in zip(host, device, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    i, j, values = host
    bound = lowest[j] if columns else lowest[i]
    assert (values >= bound).all() and values.size == int(
        (scores.numpy() >= (lowest[None, :] if columns else lowest[:, None])).sum()
    )


@pytest.mark.parametrize("axis", [0, 1])
def test_true_counts_of_runs_longer_than_a_uint16_sum(monkeypatch, axis):
    # More than 65,535 entries along the axis: numpy adds them in runs of uint16 sums.
    rng = np.random.default_rng(6)
    shape = (3, 70_000) if axis == 1 else (70_000, 3)
    mask = torch.from_numpy(rng.random(shape) < 0.97)
    mask[:, 0] = True
    expected = mask.numpy().sum(axis=axis)
    assert window_ranks.true_counts(mask, axis).tolist() == expected.tolist()
    ones = torch.ones(shape, dtype=torch.bool)
    assert set(window_ranks.true_counts(ones, axis).tolist()) == {70_000}
    monkeypatch.setattr(window_ranks, "HOST_SUMS", set())
    assert window_ranks.true_counts(mask, axis).tolist() == expected.tolist()


@pytest.mark.parametrize("start", [0, 37])
def test_a_block_of_later_rows_with_signed_zeros(monkeypatch, start):
    # A block of rows start:start + b: block rows and query rows differ, some rows of the
    # block are not ranked, and half of the zero scores are -0.0 (equal to 0.0, as exact
    # scores say).
    monkeypatch.setattr(window_ranks, "BLOCK_ENTRIES", 200)
    n, b = 90, 41
    unit = UnitRows(_rows("ties", n, seed=7))
    codes = _codes("labels", n, seed=8)
    members = GroupMembers(codes)
    idx = np.arange(start, start + b)
    scores = unit.take(idx) @ unit.take(np.arange(n)).T
    scores[torch.arange(b), torch.from_numpy(idx)] = -math.inf
    zeros = torch.nonzero(scores == 0.0, as_tuple=True)
    assert zeros[0].numel() > 10
    scores[zeros[0][::2], zeros[1][::2]] = -0.0
    margin = 2.0 * score_error_bound(unit.shape[1])
    rows = np.flatnonzero((members.count(codes[idx]) > 1) & (np.arange(b) % 4 != 1))
    host = scores.numpy()
    got: dict[int, np.ndarray] = {}

    def store(queries: np.ndarray, ranks: np.ndarray) -> None:
        got.update(zip(queries.tolist(), ranks, strict=True))

    window_ranks.block_ranks(scores, rows, idx[rows], members, unit, margin, store)
    assert sorted(got) == idx[rows].tolist()
    for r in rows.tolist():
        q = int(idx[r])
        items = np.flatnonzero((codes == codes[q]) & (np.arange(n) != q))
        expected = relevant_ranks(
            host[r],
            items,
            lambda keys, c=codes[q]: codes[keys] == c,
            margin,
            lambda keys, q=q: exact_scores(unit, np.full(keys.size, q), unit, keys),
        )
        np.testing.assert_array_equal(got[q], expected, err_msg=f"query {q}")
