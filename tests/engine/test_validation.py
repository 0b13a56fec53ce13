"""check_embeddings hands each checked slice of rows on, so one read validates and measures."""

from __future__ import annotations

import numpy as np
import pytest

from gapscope.engine.validation import check_embeddings
from gapscope.errors import EmbeddingError


class Recorded:
    """A SliceStats that records every slice it is handed (and measures nothing)."""

    size = 0

    def __init__(self):
        self.seen = []
        self.folded = []

    def make(self, start, raw, wide):
        # ``wide`` is one buffer that the next slice overwrites: kept, it is copied.
        self.seen.append((start, raw, wide.copy()))
        return np.zeros(0)

    def fold(self, start, stop, stats):
        self.folded.append((start, stop))


def test_each_checked_slice_is_handed_on_in_order():
    rows = np.arange(1, 23, dtype=np.float16).reshape(11, 2)
    stats = Recorded()
    checked = check_embeddings(rows, "image", slice_rows=4, stats=stats)
    seen = stats.seen
    assert [s for s, _, _ in seen] == [0, 4, 8]
    assert stats.folded == [(0, 4), (4, 8), (8, 11)]
    assert all(raw.dtype == np.float16 and wide.dtype == np.float64 for _, raw, wide in seen)
    np.testing.assert_array_equal(np.concatenate([raw for _, raw, _ in seen]), rows)
    np.testing.assert_array_equal(np.concatenate([w for _, _, w in seen]), rows.astype(np.float64))
    # Checked rows are not scanned again, so nothing is handed on.
    again = Recorded()
    check_embeddings(checked, "image", stats=again)
    assert not again.seen


def test_no_slice_is_handed_on_from_a_bad_row_on():
    rows = np.ones((10, 3), dtype=np.float32)
    rows[6] = 0.0
    stats = Recorded()
    with pytest.raises(EmbeddingError, match="text: row 6 is a zero vector"):
        check_embeddings(rows, "text", slice_rows=3, stats=stats)
    assert [s for s, _, _ in stats.seen] == [0, 3]


@pytest.mark.parametrize("slice_rows", [None, 1, 3, 7, 64])
def test_the_first_bad_row_is_named_whatever_the_slices(slice_rows):
    rows = np.ones((20, 3), dtype=np.float32)
    rows[5] = 0.0
    rows[12, 1] = np.nan
    with pytest.raises(EmbeddingError, match="^image: row 5 is a zero vector"):
        check_embeddings(rows, "image", slice_rows=slice_rows)
    rows[5] = 1.0
    rows[2, 0] = np.inf
    with pytest.raises(EmbeddingError, match="^image: row 2 contains NaN or Inf"):
        check_embeddings(rows, "image", slice_rows=slice_rows)


@pytest.mark.parametrize("slice_rows", [0, -1, 2.5, True])
def test_bad_slice_rows_are_refused(slice_rows):
    from gapscope.errors import GapscopeError

    with pytest.raises(GapscopeError, match="slice_rows: expected a positive integer"):
        check_embeddings(np.ones((4, 2)), "image", slice_rows=slice_rows)
