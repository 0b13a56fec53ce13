"""The O(n d) scans make their slices in lanes: the same folds in the same order, the same
bits as one thread, and the first error in row order."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from gapscope.analysis.context import _ReadStats
from gapscope.engine import distributed
from gapscope.engine.column_medians import column_medians
from gapscope.engine.distributed import Share
from gapscope.engine.moments import unit_scatter
from gapscope.engine.pipelining import LANE_BYTES
from gapscope.engine.validation import check_embeddings
from gapscope.errors import EmbeddingError
from gapscope.metrics.alignment import alignment
from gapscope.metrics.cosine import paired_cosine
from gapscope.metrics.mir import _mean_cov
from gapscope.metrics.similarity_stats import similarity_stats


@pytest.fixture
def threads():
    previous = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(previous)


@pytest.fixture
def lanes_run(monkeypatch):
    """The lane counts of every scan that ran in lanes."""
    seen: list[int] = []
    real = distributed.in_lanes

    def spy(n_blocks, lanes, work, **kwargs):
        seen.append(lanes)
        return real(n_blocks, lanes, work, **kwargs)

    monkeypatch.setattr(distributed, "in_lanes", spy)
    return seen


def _jittered(make):
    """``make`` with a random pause first, so that the lanes finish out of order."""
    rng = np.random.default_rng(0)
    pauses = rng.uniform(0, 0.004, size=64)

    def made(b):
        time.sleep(pauses[b % pauses.size])
        return make(b)

    return made


def test_blocks_made_in_lanes_are_folded_in_order(threads, lanes_run):
    threads(4)
    folded, makers = [], set()

    def make(b):
        makers.add(threading.get_ident())
        return np.full(3, float(b))

    Share().in_order(40, _jittered(make), lambda b, v: folded.append((b, v[0])), 3, lane_bytes=1024)
    assert folded == [(b, float(b)) for b in range(40)]
    assert lanes_run == [4]
    assert len(makers) > 1


def test_without_lane_bytes_or_beyond_the_budget_one_thread_makes_them(threads, lanes_run):
    threads(4)
    for lane_bytes in (None, LANE_BYTES):
        makers = set()

        def make(b, makers=makers):
            makers.add(threading.get_ident())
            return np.zeros(1)

        Share().in_order(8, make, lambda b, v: None, 1, lane_bytes=lane_bytes)
        assert makers == {threading.get_ident()}
    assert lanes_run == []


@pytest.mark.parametrize(
    ("make_fails", "fold_fails", "raised"),
    [(None, 5, "fold 5"), (9, 5, "fold 5"), (3, 5, "make 3"), (3, None, "make 3")],
)
def test_the_first_error_in_block_order_is_raised(threads, make_fails, fold_fails, raised):
    # One thread raises the error that comes first in block order (a fold's error before a
    # later block's make); so do the lanes, whichever lane meets which error first.
    for count in (1, 4):
        threads(count)
        folded = []

        def make(b):
            if b == make_fails:
                raise RuntimeError(f"make {b}")
            return np.zeros(1)

        def fold(b, _, folded=folded):
            if b == fold_fails:
                raise RuntimeError(f"fold {b}")
            folded.append(b)

        with pytest.raises(RuntimeError, match=f"^{raised}$"):
            Share().in_order(16, _jittered(make), fold, 1, lane_bytes=64)
        first = min(b for b in (make_fails, fold_fails) if b is not None)
        assert folded == list(range(first))


def _read_stats(rows, slice_rows):
    n, d = rows.shape
    stats = _ReadStats(n, d, slice_rows, sums=True, moments=True)
    check_embeddings(rows, "image", slice_rows=slice_rows, stats=stats)
    norms, sums, moments = stats.norms.result(), stats.unit.result(), stats.moments.result()
    return (
        norms.norms,
        norms.rounding,
        sums.total,
        sums.squares,
        moments.exponent,
        moments.mean,
        moments.scatter,
    )


def _same(a, b):
    assert len(a) == len(b)
    for left, right in zip(a, b, strict=True):
        if isinstance(left, np.ndarray):
            assert left.tobytes() == right.tobytes()
        else:
            assert left == right


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_the_validating_read_in_lanes_makes_the_bits_of_one_thread(threads, lanes_run, dtype):
    rng = np.random.default_rng(1)
    rows = (rng.standard_normal((997, 24)) * rng.uniform(0.1, 30, size=(997, 1))).astype(dtype)
    # Slices whose values some formats hold and others do not: a lane that saw a format fail
    # stops testing it, the fold still learns it from the slice where it failed.
    rows[500:520] = rows[500:520].astype(np.float16)
    threads(1)
    alone = _read_stats(rows, 37)
    assert lanes_run == []
    for count in (2, 3):
        threads(count)
        _same(_read_stats(rows, 37), alone)
    assert lanes_run == [2, 3]


def test_the_formats_of_the_slices_fold_in_lanes(threads):
    # bfloat16 holds every row but one in the last slice: the lanes must not lose that.
    rows = np.ones((64, 4), dtype=np.float32)
    rows[63, 0] = 1.0 + 2.0**-20
    for count in (1, 4):
        threads(count)
        assert _read_stats(rows, 4)[1] == "float32"


def test_the_first_bad_row_is_named_in_lanes(threads, lanes_run):
    threads(4)
    rows = np.ones((400, 3), dtype=np.float32)
    rows[130] = 0.0
    rows[250, 1] = np.inf
    stats = _ReadStats(400, 3, 7, sums=True, moments=True)
    with pytest.raises(EmbeddingError, match="^image: row 130 is a zero vector"):
        check_embeddings(rows, "image", slice_rows=7, stats=stats)
    with pytest.raises(EmbeddingError, match="^image: row 130 is a zero vector"):
        check_embeddings(rows, "image", slice_rows=7)
    assert lanes_run == [4, 4]


def _scans(x, y, groups_x, groups_y):
    """Every lane-made scan of the metrics, as bytes."""
    outliers = np.zeros(x.shape[0], dtype=bool)
    outliers[::7] = True
    stats = similarity_stats(x, y, groups_x, groups_y, max_negatives=300, block_size=16)
    cosines = paired_cosine(x, y, groups_x, groups_y, block_size=16)
    return [
        np.array([cosines.paired, cosines.unpaired, cosines.paired_total]),
        np.array([alignment(x, y, groups_x, groups_y, alpha=1.5, block_size=16)]),
        *unit_scatter(x, block_size=16),
        *_mean_cov(x, 0.5, outliers, 16),
        column_medians(x, budget_bytes=x.shape[0] * 8 * 3),
        np.array([stats.positive_quantiles[q] for q in sorted(stats.positive_quantiles)]),
        np.array([stats.negative_quantiles[q] for q in sorted(stats.negative_quantiles)]),
    ]


def test_the_metrics_scans_in_lanes_make_the_bits_of_one_thread(threads, lanes_run, monkeypatch):
    # A pause after each slice's unit rows are made, so that lanes sharing a buffer would
    # overwrite each other's rows before they are used.
    import importlib

    from gapscope.engine import moments

    # The package exports the functions under the modules' names.
    alignment_module = importlib.import_module("gapscope.metrics.alignment")
    cosine = importlib.import_module("gapscope.metrics.cosine")

    rng = np.random.default_rng(3)
    real = cosine.unit_rows

    def paused(*args, **kwargs):
        out = real(*args, **kwargs)
        time.sleep(float(rng.uniform(0, 0.002)))
        return out

    for module in (moments, alignment_module, cosine):
        monkeypatch.setattr(module, "unit_rows", paused)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((300, 10)).astype(np.float32)
    y = rng.standard_normal((450, 10)).astype(np.float16)
    groups_x = np.arange(300)
    groups_y = np.repeat(np.arange(300), [1, 2] * 150)
    threads(1)
    alone = _scans(x, y, groups_x, groups_y)
    assert lanes_run == []
    threads(3)
    _same(_scans(x, y, groups_x, groups_y), alone)
    # Cosines, alignment, scatter, MIR's moments, both cosine samples.
    assert len(lanes_run) >= 6 and set(lanes_run) == {3}


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_the_radix_select_in_lanes_finds_the_medians_of_one_thread(
    threads, lanes_run, monkeypatch, dtype
):
    from gapscope.engine import column_medians as cm

    # Lanes are counted in column_medians' own namespace.
    real = cm.in_lanes
    monkeypatch.setattr(
        cm,
        "in_lanes",
        lambda n, lanes, work, **kwargs: (lanes_run.append(lanes), real(n, lanes, work, **kwargs)),
    )
    monkeypatch.setattr(cm, "_CHUNK_BYTES", 64)
    rng = np.random.default_rng(4)
    # An even count, with values that share their first digits (the middle two part late,
    # so later reads look for extremes), ties and zeros of either sign.
    a = rng.choice(np.array([-0.0, 0.0, 1.0, 1.5, -2.25, 3.0], dtype), size=(402, 5))
    a[:, 1] = (rng.standard_normal(402) * 1e-3 + 1.0).astype(dtype)
    expected = np.median(a.astype(np.float64), axis=0)
    threads(1)
    alone = cm._RadixSelect(a, 10**9).medians()
    assert lanes_run == []
    threads(3)
    in_lanes = cm._RadixSelect(a, 10**9).medians()
    assert lanes_run and set(lanes_run) == {3}
    assert in_lanes.tobytes() == alone.tobytes()
    np.testing.assert_array_equal(in_lanes, expected)
    # A budget that holds one lane's counts (the group's five columns) counts on one thread.
    runs = len(lanes_run)
    assert cm._RadixSelect(a, 5 * 4 * 2**16).medians().tobytes() == alone.tobytes()
    assert len(lanes_run) == runs


def test_a_scans_float64_products_do_not_depend_on_the_thread_count(threads, monkeypatch):
    # OpenBLAS splits A^T A among its threads, and on some CPUs the split changes the bits of
    # some entries (5,000 x 300 on the reference CPU): the scans run it on one thread,
    # whether their slices are made in lanes or in turn.
    from gapscope.engine import pipelining

    rng = np.random.default_rng(5)
    x = rng.standard_normal((10_000, 300))
    outliers = np.zeros(10_000, dtype=bool)
    made = []
    for count, budget in ((1, LANE_BYTES), (2, LANE_BYTES), (2, 1), (3, 1)):
        threads(count)
        # A budget of one byte leaves one lane: the slices in turn, on this thread.
        monkeypatch.setattr(pipelining, "LANE_BYTES", budget)
        made.append(b"".join(part.tobytes() for part in _mean_cov(x, 1.0, outliers, 5_000)))
        made.append(b"".join(part.tobytes() for part in unit_scatter(x, block_size=5_000)))
    assert made[0::2] == [made[0]] * 4
    assert made[1::2] == [made[1]] * 4


def test_lanes_hold_back_while_an_earlier_block_is_slow(threads):
    # A slow first block: the other lanes make at most 2 * lanes blocks ahead of the folds,
    # so their values (d x d float64 for MIR's moments) never pile up.
    threads(4)
    folded, ahead = [], []

    def make(b):
        ahead.append(b - len(folded))
        if b == 0:
            time.sleep(0.3)
        return np.full(1, float(b))

    Share().in_order(60, make, lambda b, v: folded.append(b), 1, lane_bytes=64)
    assert folded == list(range(60))
    assert max(ahead) < 2 * 4


@pytest.mark.parametrize("where", ["make", "fold"])
def test_lanes_held_back_are_let_go_when_an_earlier_block_fails(threads, where):
    # Block 0 fails late, while the other lanes wait for its fold: they must not wait
    # for ever. (Run on a thread, so that a hang fails the test instead of the run.)
    threads(4)
    raised = []

    def make(b):
        if b == 0:
            time.sleep(0.3)
            if where == "make":
                raise RuntimeError("block 0")
        return np.zeros(1)

    def fold(b, _):
        if b == 0:
            raise RuntimeError("block 0")

    def run():
        try:
            Share().in_order(60, make, fold, 1, lane_bytes=64)
        except RuntimeError as error:
            raised.append(str(error))

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(timeout=20)
    assert not runner.is_alive()
    assert raised == ["block 0"]


def _whatif_scans(x, offset, vector):
    from gapscope.analysis.whatif import _SumsOfEveryFix, _TransformedSums
    from gapscope.engine.offset_passes import offset_rows
    from gapscope.engine.unit_rows import UnitRows

    d = x.shape[1]
    sums = _SumsOfEveryFix(
        [_TransformedSums(d, None, "x", "why"), _TransformedSums(d, offset, "x", "why")]
    )
    sums.read(torch.from_numpy(x.astype(np.float32)), chunk_rows=41)
    made = [part for s in sums.sums for part in (s.sum_w, s.sum_unit)]
    for in_memory in (True, False):
        base = UnitRows(x, in_memory=in_memory, chunk_rows=50)
        moved = offset_rows(base, [offset.astype(np.float32), None], dots_with=[vector])
        made += [moved[0].factors.numpy(), *moved[0].dots.known.values()]
    return made


def test_the_whatifs_scans_in_lanes_make_the_bits_of_one_thread(threads, lanes_run):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1003, 40)) * rng.uniform(1e-3, 1e3, size=(1003, 1))
    offset = rng.standard_normal(40) * 0.01
    vector = rng.standard_normal(40).astype(np.float32)
    threads(1)
    alone = _whatif_scans(x, offset, vector)
    assert lanes_run == []
    threads(3)
    _same(_whatif_scans(x, offset, vector), alone)
    # The gap sums and both row scans (the rows held and streamed).
    assert lanes_run == [3, 3, 3]


def test_the_outlier_rows_product_does_not_depend_on_the_thread_count():
    # MIR takes its outlier rows out of the moments with one float64 A^T A of them: on one
    # BLAS thread, like the scans' (5,000 x 300 is a shape whose bits moved with the thread
    # count on the reference CPU).
    from threadpoolctl import threadpool_limits

    from gapscope.metrics.mir import RawMomentsScan, _outliers_replaced

    rng = np.random.default_rng(8)
    x = rng.standard_normal((10_000, 300))
    scan = RawMomentsScan(300)
    scan.fold(10_000, scan.make(x, float(np.linalg.norm(x, axis=1).max())))
    outliers = np.zeros(10_000, dtype=bool)
    outliers[::3] = True  # 3,334 x 300: moved too; a third of the scatter, so taken out
    made = []
    for count in (1, 2):
        with threadpool_limits(count, user_api="blas"):
            replaced = _outliers_replaced(x, scan.result(), outliers)
        assert replaced is not None
        made.append(b"".join(part.tobytes() for part in replaced))
    assert made[0] == made[1]
