"""Tests for gapscope.metrics.retrieval against hand-derived values and a full-matrix reference.

The reference below ranks every row of the full similarity matrix with a stable argsort on the
negated scores (ties: lower index first) and computes hit@K, AP and R-precision the textbook
way. It scores in float64 from float32 unit rows, so its ranking matches the float32 blocked
code only when distinct scores are further apart than float32 rounding; the data below are
either exact in binary (entries of +-0.5 after normalisation, so every score is a multiple of
0.25 and ties are everywhere) or Gaussian with duplicated rows, where a precondition checks the
separation instead of hoping for it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from gapscope.engine import blocks, passes, ranking, window_ranks
from gapscope.errors import EmbeddingError, GapscopeError
from gapscope.metrics.retrieval import cross_modal_retrieval, intra_modal_retrieval

KS = (1, 2, 3, 5, 10, 1000)
BLOCK_SIZES = [1, 3, 7, 16, 64, None]


# ----------------------------------------------------------------------------- reference


def _unit32(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


def _scores(q: np.ndarray, k: np.ndarray) -> np.ndarray:
    return _unit32(q).astype(np.float64) @ _unit32(k).astype(np.float64).T


def ref_cross(q, k, gq, gk, ks=KS, rows=None):
    """Per-query first-positive rank by a full stable argsort; returns (recall, n, skipped)."""
    s = _scores(q, k)
    rows = range(len(q)) if rows is None else rows
    firsts, skipped = [], 0
    for i in rows:
        positive = np.asarray(gk) == gq[i]
        if not positive.any():
            skipped += 1
            continue
        order = np.argsort(-s[i], kind="stable")
        firsts.append(int(np.argmax(positive[order])))
    firsts = np.array(firsts)
    recall = {c: (float(np.mean(firsts < c)) if firsts.size else None) for c in ks}
    return recall, firsts, skipped


def ref_intra(x, codes, ks=KS, rows=None):
    """Textbook hit@K, AP and R-precision over the n - 1 other rows, per eligible query."""
    s = _scores(x, x)
    n = len(x)
    codes = np.asarray(codes)
    rows = range(n) if rows is None else rows
    per_query = {"first": [], "ap": [], "rp": []}
    skipped = 0
    for i in rows:
        others = np.delete(np.arange(n), i)
        ranked = others[np.argsort(-s[i, others], kind="stable")]
        relevant = codes[ranked] == codes[i]
        n_rel = int(relevant.sum())
        if n_rel == 0:
            skipped += 1
            continue
        precision_at = np.cumsum(relevant) / np.arange(1, n)
        per_query["first"].append(int(np.argmax(relevant)))
        per_query["ap"].append(float(precision_at[relevant].mean()))
        per_query["rp"].append(float(relevant[:n_rel].mean()))
    per_query = {key: np.array(v) for key, v in per_query.items()}
    first = per_query["first"]
    summary = {
        "recall": {c: (float(np.mean(first < c)) if first.size else None) for c in ks},
        "mAP": float(per_query["ap"].mean()) if first.size else None,
        "R-precision": float(per_query["rp"].mean()) if first.size else None,
    }
    return summary, per_query, skipped


def assert_separated(s: np.ndarray, tol: float = 2e-6) -> None:
    """Precondition: distinct scores in a row are far apart compared with float32 rounding."""
    for row in s:
        distinct = np.unique(row)
        if distinct.size > 1:
            assert np.diff(distinct).min() > tol, "test data has near-ties; pick another seed"


# ----------------------------------------------------------------------------- data


def quarter_rows(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """Rows with exactly four +-1 entries, randomly scaled: unit rows have entries +-0.5, so
    every cosine is an exact multiple of 0.25 in float32 and float64 alike (many exact ties)."""
    x = np.zeros((n, d))
    for i in range(n):
        cols = rng.choice(d, size=4, replace=False)
        x[i, cols] = rng.choice([-1.0, 1.0], size=4)
    return (x * rng.uniform(0.5, 3.0, size=(n, 1))).astype(np.float32)


def gaussian_with_duplicates(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian rows where some rows repeat others exactly or as 2x (the same unit row)."""
    x = rng.standard_normal((n, d)).astype(np.float32)
    src = rng.choice(n, size=n // 5, replace=False)
    dst = rng.choice(np.setdiff1d(np.arange(n), src), size=n // 5, replace=False)
    x[dst[: n // 10]] = x[src[: n // 10]]
    x[dst[n // 10 :]] = 2.0 * x[src[n // 10 :]]
    return x


def make_data(kind: str, n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return quarter_rows(n, d, rng) if kind == "quarter" else gaussian_with_duplicates(n, d, rng)


@pytest.fixture(params=["count", "sort", "count-exact", "sort-exact"])
def rank_path(request, monkeypatch):
    """Run a test through each exact ranking path: per-item counting passes or a sorted row,
    each with the usual near-tie margin or with every key near every item (so that every
    order is decided by the exact scores)."""
    # A row's counting (the column ranks) and a tile's (window_ranks) switch alike.
    if request.param.startswith("count"):
        monkeypatch.setattr(ranking, "_COUNT_MAX_ITEMS", 10**9)
        monkeypatch.setattr(window_ranks, "COMPARE_MAX_ITEMS", 10**9)
    else:
        monkeypatch.setattr(ranking, "_COUNT_MAX_ITEMS", 0)
        monkeypatch.setattr(window_ranks, "COMPARE_MAX_ITEMS", 0)
    if request.param.endswith("exact"):
        monkeypatch.setattr(ranking, "score_error_bound", lambda dim: 4.0)
        monkeypatch.setattr(passes, "score_error_bound", lambda dim: 4.0)
    return request.param


# ----------------------------------------------------------------------------- hand-derived

# Images q0=(1,0) g0, q1=(0,1) g1, q2=(-1,0) g2 (no caption). Texts k0=(3,4) g1, k1=(3,-4) g0,
# k2=(0,1) g7, k3=(1,0) g5 (no image), k4=(-4,3) g1, k5=(1,1) g1, k6=(1,1) g0. With c = 0.7071:
#
#            k0    k1    k2    k3    k4    k5    k6
#     q0    0.6   0.6   0     1    -0.8   c     c      positives k1, k6
#     q1    0.8  -0.8   1     0     0.6   c     c      positives k0, k4, k5 (three captions)
#     q2   -0.6  -0.6   0    -1     0.8  -c    -c      none
HAND_IMAGES = np.array([[1, 0], [0, 1], [-1, 0]], dtype=np.float32)
HAND_TEXTS = np.array([[3, 4], [3, -4], [0, 1], [1, 0], [-4, 3], [1, 1], [1, 1]], dtype=np.float32)
HAND_GI = np.array([0, 1, 2])
HAND_GT = np.array([1, 0, 7, 5, 1, 1, 0])


def test_cross_hand_image_to_text():
    # q0: best positive k6 (c); above it k3 (1) and k5 (c, equal score, lower index): rank 2.
    # q1: best positive k0 (0.8); above it k2 (1): rank 1. q2: no positive, left out.
    result = cross_modal_retrieval(HAND_IMAGES, HAND_TEXTS, HAND_GI, HAND_GT, k=(1, 2, 3))
    assert result.recall == {1: 0.0, 2: 0.5, 3: 1.0}
    assert (result.n_queries, result.n_skipped) == (2, 1)
    assert result.mean_average_precision is None and result.r_precision is None
    assert result.se is None


def test_cross_hand_text_to_image():
    # Rows of the transposed matrix. k0 -> q1 rank 0; k1 -> q0 rank 0; k4 -> q1 rank 1 (q2
    # above); k5 -> q1 rank 1 (q0 ties at c and has the lower index); k6 -> q0 rank 0 (q1 ties
    # but has the higher index). k2, k3 have no image: left out.
    result = cross_modal_retrieval(HAND_TEXTS, HAND_IMAGES, HAND_GT, HAND_GI, k=(1, 2))
    assert result.recall == {1: 0.6, 2: 1.0}
    assert (result.n_queries, result.n_skipped) == (5, 2)


def test_cross_hand_one_to_one_and_large_k():
    # Paired rows: image0 ranks text0 (1.0) first; image1=(0,1) scores text0 0 and text1
    # -0.196, so its partner is second. K = 50 > 2 keys retrieves everything.
    images = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    texts = np.array([[1.0, 0.0], [1.0, -0.2]], dtype=np.float32)
    result = cross_modal_retrieval(images, texts, k=[1, 50])
    assert result.recall == {1: 0.5, 50: 1.0}
    assert cross_modal_retrieval(images, texts, k=1).recall == {1: 0.5}


# Unit rows at angles 0, 10, 30, 65, 110 degrees with labels 0, 1, 0, 0, 1. Ranked others and
# their relevance (1 = same label):
#   q0: 1 2 3 4 -> 0 1 1 0   AP (1/2 + 2/3) / 2 = 7/12   R-prec 1/2   first 1
#   q1: 0 2 3 4 -> 0 0 0 1   AP 1/4                       R-prec 0     first 3
#   q2: 1 0 3 4 -> 0 1 1 0   AP 7/12                      R-prec 1/2   first 1
#   q3: 2 4 1 0 -> 1 0 0 1   AP (1 + 2/4) / 2 = 3/4       R-prec 1/2   first 0
#   q4: 3 2 1 0 -> 0 0 1 0   AP 1/3                       R-prec 0     first 2
ANGLES = np.deg2rad([0.0, 10.0, 30.0, 65.0, 110.0])
ANGLE_ROWS = np.stack([np.cos(ANGLES), np.sin(ANGLES)], axis=1).astype(np.float32)
ANGLE_LABELS = np.array([0, 1, 0, 0, 1])


def test_intra_hand_ap_and_r_precision(rank_path):
    result = intra_modal_retrieval(ANGLE_ROWS, ANGLE_LABELS, k=(1, 2, 3, 4))
    assert result.recall == {1: 0.2, 2: 0.6, 3: 0.8, 4: 1.0}
    assert result.mean_average_precision == pytest.approx(
        (7 / 12 + 1 / 4 + 7 / 12 + 3 / 4 + 1 / 3) / 5
    )
    assert result.mean_average_precision == pytest.approx(0.5)
    assert result.r_precision == pytest.approx(0.3)
    assert (result.n_queries, result.n_skipped) == (5, 0)
    # One query at a time gives its own AP.
    for i, ap in enumerate([7 / 12, 1 / 4, 7 / 12, 3 / 4, 1 / 3]):
        single = intra_modal_retrieval(ANGLE_ROWS, ANGLE_LABELS, query_index=[i])
        assert single.mean_average_precision == pytest.approx(ap)


# x0 = x1 = (1, 0), x2 = (0.8, 0.6), x3 = (0, 1). Scores (self excluded, ties -> lower index):
#   q0: x1 1, x2 0.8, x3 0       q1: x0 1, x2 0.8, x3 0
#   q2: x0 0.8, x1 0.8, x3 0.6   q3: x2 0.6, x0 0, x1 0
DUP_ROWS = np.array([[1, 0], [1, 0], [4, 3], [0, 1]], dtype=np.float32)


def test_intra_self_exclusion_with_duplicates(rank_path):
    # Labels 0 1 0 1: q0 finds x2 second, q1 finds x3 third, q2 finds x0 first, q3 finds x1
    # third. A query that retrieved itself would score q0 a hit at 1.
    result = intra_modal_retrieval(DUP_ROWS, [0, 1, 0, 1], k=(1, 2, 3))
    assert result.recall == {1: 0.25, 2: 0.5, 3: 1.0}
    assert result.mean_average_precision == pytest.approx((1 / 2 + 1 / 3 + 1 + 1 / 3) / 4)
    assert result.r_precision == pytest.approx(0.25)


def test_intra_self_exclusion_keeps_the_lower_index_twin(rank_path):
    # Labels 0 0 1 1: q1's twin x0 ties with q1 itself and has the lower index; excluding
    # "the first row with the top score" instead of q1 itself would drop x0. q2's only relevant
    # row x3 comes third (after x0, x1); q3's only relevant row x2 comes first.
    result = intra_modal_retrieval(DUP_ROWS, [0, 0, 1, 1], k=(1, 2, 3))
    assert result.recall == {1: 0.75, 2: 0.75, 3: 1.0}
    assert result.mean_average_precision == pytest.approx((1 + 1 + 1 / 3 + 1) / 4)
    assert result.r_precision == pytest.approx(0.75)


def test_intra_query_without_relevant_row_is_skipped():
    result = intra_modal_retrieval(ANGLE_ROWS, [0, 1, 0, 0, 2], k=(1, 2))
    assert (result.n_queries, result.n_skipped) == (3, 2)
    # q0: 2 is second (after 1); q2: 0 after 1; q3: 2 first.
    assert result.recall == {1: pytest.approx(1 / 3), 2: 1.0}


def test_no_eligible_query_gives_none():
    result = intra_modal_retrieval(ANGLE_ROWS, np.arange(5))
    assert result.recall == {1: None, 5: None, 10: None}
    assert result.mean_average_precision is None and result.r_precision is None
    assert (result.n_queries, result.n_skipped) == (0, 5)
    one_row = intra_modal_retrieval(ANGLE_ROWS[:1], [0], k=1)
    assert (one_row.recall, one_row.n_skipped) == ({1: None}, 1)
    cross = cross_modal_retrieval(ANGLE_ROWS, ANGLE_ROWS, np.zeros(5, int), np.ones(5, int))
    assert cross.recall[1] is None and cross.n_skipped == 5


def test_perfect_pairs_give_recall_one():
    x = np.random.default_rng(3).standard_normal((200, 32)).astype(np.float32)
    for result in (cross_modal_retrieval(x, x.copy(), k=1), cross_modal_retrieval(2 * x, x, k=1)):
        assert result.recall == {1: 1.0}
        assert result.n_queries == 200


# ----------------------------------------------------------------------------- vs reference


@pytest.mark.parametrize("kind,seed", [("quarter", 0), ("gaussian", 6)])
@pytest.mark.parametrize("block_size", BLOCK_SIZES)
def test_cross_matches_full_matrix_reference(kind, seed, block_size):
    n, m, d = 57, 83, 12
    x = make_data(kind, n + m, d, seed)
    q, k = x[:n], x[n:]
    rng = np.random.default_rng(seed + 100)
    gq, gk = rng.integers(0, 60, n), rng.integers(0, 60, m)  # many-to-one and orphans
    if kind == "gaussian":
        assert_separated(_scores(q, k))
    for a, b, ga, gb in ((q, k, gq, gk), (k, q, gk, gq)):
        expected, _, skipped = ref_cross(a, b, ga, gb)
        assert skipped > 0 and len(b) < max(KS)  # the data exercise both edge cases
        result = cross_modal_retrieval(a, b, ga, gb, k=KS, block_size=block_size)
        assert result.recall == expected
        assert (result.n_queries, result.n_skipped) == (len(a) - skipped, skipped)


def test_cross_one_to_one_matches_reference():
    x = make_data("quarter", 120, 10, 5)
    expected, _, _ = ref_cross(x[:60], x[60:], np.arange(60), np.arange(60))
    assert cross_modal_retrieval(x[:60], x[60:], k=KS, block_size=7).recall == expected


@pytest.mark.parametrize("kind,seed", [("quarter", 2), ("gaussian", 7)])
@pytest.mark.parametrize("relevance", ["labels", "groups"])
@pytest.mark.parametrize("block_size", [1, 7, 16, None])
def test_intra_matches_full_matrix_reference(kind, seed, relevance, block_size, rank_path):
    n, d = 90, 12
    x = make_data(kind, n, d, seed)
    rng = np.random.default_rng(seed + 200)
    # Labels: 2 classes, ~44 relevant rows a query (sorted path by default); groups: pairs and
    # triples with singletons (counting path by default, with skipped queries).
    codes = rng.integers(0, 2, n) if relevance == "labels" else rng.integers(0, 50, n)
    if kind == "gaussian":
        assert_separated(_scores(x, x))
    expected, _, skipped = ref_intra(x, codes)
    result = intra_modal_retrieval(x, codes, k=KS, block_size=block_size)
    assert result.recall == expected["recall"]
    assert result.mean_average_precision == pytest.approx(expected["mAP"], rel=1e-12)
    assert result.r_precision == pytest.approx(expected["R-precision"], rel=1e-12)
    assert (result.n_queries, result.n_skipped) == (n - skipped, skipped)


def test_auto_block_size_that_does_not_divide_n(monkeypatch):
    x = make_data("quarter", 70, 10, 4)
    codes = np.arange(70) % 9
    monkeypatch.setattr(blocks, "similarity_block_rows", lambda n_keys: 4)  # auto block: 4 rows
    assert blocks.resolve_block_size(None, 70) == 4
    expected, _, _ = ref_intra(x, codes)
    result = intra_modal_retrieval(x, codes, k=KS)
    assert result.recall == expected["recall"]
    assert result.mean_average_precision == pytest.approx(expected["mAP"], rel=1e-12)


def test_intra_map_matches_sklearn_without_ties():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((70, 16)).astype(np.float32)
    labels = rng.integers(0, 4, 70)
    s = _scores(x, x)
    assert_separated(s)
    aps = []
    for i in range(70):
        others = np.delete(np.arange(70), i)
        ap = average_precision_score(labels[others] == labels[i], s[i, others])
        aps.append(ap)
        if i < 10:
            single = intra_modal_retrieval(x, labels, query_index=[i], block_size=3)
            assert single.mean_average_precision == pytest.approx(ap, rel=1e-12)
    result = intra_modal_retrieval(x, labels, block_size=9)
    assert result.mean_average_precision == pytest.approx(np.mean(aps), rel=1e-12)


def test_float16_and_torch_inputs_match_float32_reference():
    x = make_data("quarter", 60, 12, 8)
    codes = np.arange(60) % 7
    expected, _, _ = ref_intra(x, codes)
    for data in (x.astype(np.float16), torch.from_numpy(x), np.asarray(x, dtype=np.float64)):
        result = intra_modal_retrieval(data, torch.from_numpy(codes), k=KS, device="cpu")
        assert result.recall == expected["recall"]
        assert result.mean_average_precision == pytest.approx(expected["mAP"], rel=1e-12)


def test_deterministic_bit_identical():
    x = make_data("gaussian", 80, 16, 9)
    codes = np.arange(80) % 6
    first = intra_modal_retrieval(x, codes, block_size=11)
    again = intra_modal_retrieval(x.copy(), codes.copy(), block_size=11)
    assert first == again
    a = cross_modal_retrieval(x[:40], x[40:], block_size=6)
    assert a == cross_modal_retrieval(x[:40], x[40:], block_size=6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_reference():
    x = make_data("quarter", 90, 12, 16)
    labels = np.arange(90) % 2
    expected, _, _ = ref_intra(x, labels)
    result = intra_modal_retrieval(x, labels, k=KS, block_size=7, device="cuda")
    assert result.recall == expected["recall"]
    assert result.mean_average_precision == pytest.approx(expected["mAP"], rel=1e-12)
    cross_expected, _, _ = ref_cross(x[:40], x[40:], np.arange(40) % 13, np.arange(50) % 17)
    cross = cross_modal_retrieval(
        x[:40], x[40:], np.arange(40) % 13, np.arange(50) % 17, k=KS, device="cuda"
    )
    assert cross.recall == cross_expected


# ----------------------------------------------------------------------------- query_index


def _se(values: np.ndarray, population: int) -> float:
    q = values.size
    correction = math.sqrt((population - q) / (population - 1))
    return float(np.std(values, ddof=1) / math.sqrt(q) * correction)


def test_query_index_cross_matches_reference_subset():
    x = make_data("quarter", 130, 12, 10)
    q, k = x[:60], x[60:]
    rng = np.random.default_rng(11)
    gq, gk = rng.integers(0, 40, 60), rng.integers(0, 40, 70)
    sample = rng.choice(60, size=25, replace=False)
    expected, firsts, skipped = ref_cross(q, k, gq, gk, rows=np.sort(sample))
    result = cross_modal_retrieval(q, k, gq, gk, k=KS, block_size=4, query_index=sample)
    assert result.recall == expected
    assert (result.n_queries, result.n_skipped) == (firsts.size, skipped)
    population = int(np.isin(gq, gk).sum())
    assert result.se is not None and set(result.se) == {f"R@{c}" for c in KS} | {"mean_rank"}
    for c in KS:
        assert math.isfinite(result.se[f"R@{c}"]) and result.se[f"R@{c}"] >= 0
        assert result.se[f"R@{c}"] == pytest.approx(_se((firsts < c).astype(float), population))
    # The order of the sample does not matter.
    assert (
        cross_modal_retrieval(q, k, gq, gk, k=KS, block_size=4, query_index=sample[::-1].copy())
        == result
    )


def test_query_index_intra_matches_reference_subset():
    x = make_data("gaussian", 90, 16, 2)
    codes = np.random.default_rng(13).integers(0, 8, 90)
    codes[0] = 99  # a query with no relevant row, sampled below
    assert_separated(_scores(x, x))
    sample = np.concatenate([[0], np.random.default_rng(14).choice(np.arange(1, 90), 30, False)])
    expected, per_query, skipped = ref_intra(x, codes, rows=np.sort(sample))
    result = intra_modal_retrieval(
        x, codes, k=KS, block_size=8, query_index=torch.from_numpy(sample)
    )
    assert result.recall == expected["recall"]
    assert result.mean_average_precision == pytest.approx(expected["mAP"], rel=1e-12)
    assert result.r_precision == pytest.approx(expected["R-precision"], rel=1e-12)
    assert (result.n_queries, result.n_skipped, skipped) == (30, 1, 1)
    population = 89
    assert result.se["mAP"] == pytest.approx(_se(per_query["ap"], population))
    assert result.se["R-precision"] == pytest.approx(_se(per_query["rp"], population))
    hits_at_5 = (per_query["first"] < 5).astype(float)
    assert result.se["R@5"] == pytest.approx(_se(hits_at_5, population))
    assert all(math.isfinite(v) and v >= 0 for v in result.se.values())


def test_query_index_census_has_zero_se_and_full_result():
    x = make_data("quarter", 40, 10, 15)
    codes = np.arange(40) % 5
    full = intra_modal_retrieval(x, codes, k=KS)
    census = intra_modal_retrieval(x, codes, k=KS, query_index=np.arange(40))
    assert census.recall == full.recall
    assert census.mean_average_precision == full.mean_average_precision
    assert census.se == {
        **{f"R@{c}": 0.0 for c in KS},
        "mean_rank": 0.0,
        "mAP": 0.0,
        "R-precision": 0.0,
    }
    lone = intra_modal_retrieval(x, codes, k=1, query_index=[3])
    assert math.isnan(lone.se["R@1"])  # one sampled query out of many: spread unknown


# ----------------------------------------------------------------------------- bad input

GOOD = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)


def _with(row: int, value: float) -> np.ndarray:
    bad = GOOD.copy()
    bad[row] = value
    return bad


@pytest.mark.parametrize(
    "call",
    [
        lambda: cross_modal_retrieval(_with(2, np.nan), GOOD),
        lambda: cross_modal_retrieval(GOOD, _with(1, np.inf)),
        lambda: cross_modal_retrieval(_with(0, 0.0), GOOD),
        lambda: intra_modal_retrieval(_with(3, 0.0), np.zeros(6, int)),
        lambda: intra_modal_retrieval(_with(3, np.nan), np.zeros(6, int)),
        lambda: cross_modal_retrieval(GOOD, GOOD[:, :3]),
        lambda: cross_modal_retrieval(GOOD, GOOD[:5]),
        lambda: cross_modal_retrieval(GOOD, GOOD, np.arange(5), np.arange(6)),
        lambda: cross_modal_retrieval(GOOD, GOOD, np.arange(6), None),
        lambda: cross_modal_retrieval(GOOD, GOOD, np.arange(6.0), np.arange(6.0)),
        lambda: intra_modal_retrieval(GOOD, np.arange(7)),
        lambda: intra_modal_retrieval(GOOD, np.zeros(6)),
        lambda: intra_modal_retrieval(GOOD, None),
        lambda: intra_modal_retrieval(GOOD[0], [0]),
        lambda: cross_modal_retrieval(GOOD, GOOD, k=0),
        lambda: cross_modal_retrieval(GOOD, GOOD, k=(1, -5)),
        lambda: cross_modal_retrieval(GOOD, GOOD, k=(1, 2.5)),
        lambda: cross_modal_retrieval(GOOD, GOOD, k=True),
        lambda: intra_modal_retrieval(GOOD, np.zeros(6, int), k=()),
        lambda: intra_modal_retrieval(GOOD, np.zeros(6, int), k="5"),
        lambda: intra_modal_retrieval(GOOD, np.zeros(6, int), block_size=0),
        lambda: intra_modal_retrieval(GOOD, np.zeros(6, int), block_size=2.0),
        lambda: intra_modal_retrieval(GOOD, np.zeros(6, int), query_index=[6]),
        lambda: intra_modal_retrieval(GOOD, np.zeros(6, int), query_index=[-1]),
        lambda: intra_modal_retrieval(GOOD, np.zeros(6, int), query_index=[1, 1]),
        lambda: intra_modal_retrieval(GOOD, np.zeros(6, int), query_index=[0.0]),
        lambda: intra_modal_retrieval(GOOD, np.zeros(6, int), query_index=[]),
        lambda: cross_modal_retrieval(GOOD, GOOD, query_index=[[0, 1]]),
    ],
)
def test_bad_input_raises_one_clear_error(call):
    with pytest.raises(GapscopeError):
        call()


def test_error_messages_name_the_argument():
    with pytest.raises(GapscopeError, match=r"^k: .*-5"):
        cross_modal_retrieval(GOOD, GOOD, k=(1, -5))
    with pytest.raises(GapscopeError, match=r"^query_index: row 9 "):
        cross_modal_retrieval(GOOD, GOOD, query_index=[0, 9])
    with pytest.raises(EmbeddingError, match=r"^relevance: expected shape \(6,\)"):
        intra_modal_retrieval(GOOD, np.arange(3))


def test_mean_and_median_rank_by_hand():
    # Ranks of the best positives (0-based) 0, 3 and 4: mean 1 + 7/3, median floor(3) + 1.
    r = ranking.summarize(
        (1,), np.array([0, 3, 4]), n_skipped=0, n_eligible_total=None, query_rows=np.arange(3)
    )
    assert r.mean_rank == pytest.approx(1 + 7 / 3) and r.median_rank == 4.0
    # An even count: numpy's median is the mean of the middle two, floored as open_clip does.
    r = ranking.summarize(
        (1,), np.array([0, 1, 2, 7]), n_skipped=0, n_eligible_total=None, query_rows=np.arange(4)
    )
    assert r.mean_rank == 3.5 and r.median_rank == 2.0
    empty = ranking.summarize(
        (1,), np.empty(0, np.int64), n_skipped=2, n_eligible_total=None, query_rows=np.empty(0)
    )
    assert empty.mean_rank is None and empty.median_rank is None


def test_mean_and_median_rank_equal_open_clips_evaluation():
    # open_clip's get_clip_metrics on the same arrays: logits, argsort descending, the
    # position of the ground truth, mean + 1 and floor(median) + 1.
    rng = np.random.default_rng(9)
    image = rng.normal(size=(200, 16)).astype(np.float32)
    text = (image + 1.5 * rng.normal(size=(200, 16))).astype(np.float32)
    ui = torch.nn.functional.normalize(torch.from_numpy(image).double(), dim=-1)
    ut = torch.nn.functional.normalize(torch.from_numpy(text).double(), dim=-1)
    logits = {"image_to_text": ui @ ut.T, "text_to_image": ut @ ui.T}
    truth = torch.arange(200).view(-1, 1)
    ours = dict(
        zip(("image_to_text", "text_to_image"), passes.cross_pass(image, text, k=(1,)), strict=True)
    )
    for name, logit in logits.items():
        ranking_ = torch.argsort(logit, descending=True)
        preds = torch.where(ranking_ == truth)[1].numpy()
        assert ours[name].mean_rank == pytest.approx(preds.mean() + 1, rel=1e-12)
        assert ours[name].median_rank == np.floor(np.median(preds)) + 1
