"""The extra diagnostics (issue 7) against hand-derived values, analytic cases and full-matrix
references written from the papers' formulas, independent of gapscope's blocked code."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from scipy.stats import ortho_group

from gapscope.errors import EmbeddingError, GapscopeError
from gapscope.metrics.cka import linear_cka
from gapscope.metrics.effective_rank import dimensional_collapse, effective_rank
from gapscope.metrics.gap_direction import gap_direction
from gapscope.metrics.gram_volume import gram_volume, gram_volumes
from gapscope.metrics.separability import modality_separability
from gapscope.metrics.similarity_stats import HISTOGRAM_BINS, similarity_stats


def unit(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def gapped(n=120, d=12, seed=0, gap=1.5, captions=1):
    """Paired rows: shared content plus a constant offset per modality (a modality gap)."""
    rng = np.random.default_rng(seed)
    content = rng.normal(size=(n, d))
    x = content + gap * rng.normal(size=d) + 0.5 * rng.normal(size=(n, d))
    y = np.repeat(content, captions, axis=0) + gap * rng.normal(size=d)
    y = y + 0.5 * rng.normal(size=y.shape)
    gx = np.arange(n)
    gy = np.repeat(gx, captions)
    return x.astype(np.float32), y.astype(np.float32), gx, gy


# --------------------------------------------------------------------------- effective rank


def reference_erank(x, center=True):
    u = unit(x)
    if center:
        u = u - u.mean(axis=0)
    s = np.linalg.svd(u, compute_uv=False)
    s = s[s > 1e-10 * s.max()]
    p = s / s.sum()
    return float(np.exp(-(p * np.log(p)).sum())), s


@pytest.mark.parametrize("center", [True, False])
def test_effective_rank_matches_svd_reference(center):
    x = np.random.default_rng(1).normal(size=(50, 8)) + 0.5
    expected, s = reference_erank(x, center)
    c = dimensional_collapse(x, top=(1, 3, 8), center=center)
    assert c.effective_rank == pytest.approx(expected, rel=1e-10)
    var = s**2 / (s**2).sum()
    assert c.variance_share[1] == pytest.approx(var[0], rel=1e-10)
    assert c.variance_share[3] == pytest.approx(var[:3].sum(), rel=1e-10)
    assert c.variance_share[8] == pytest.approx(1.0)
    np.testing.assert_allclose(c.singular_values[: s.size], s, rtol=1e-9)


def test_effective_rank_by_hand():
    # Uncentred rows e1, e1, e1, e2: singular values sqrt(3) and 1.
    x = np.array([[1.0, 0, 0], [1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0]])
    p = math.sqrt(3) / (math.sqrt(3) + 1)
    expected = math.exp(-(p * math.log(p) + (1 - p) * math.log(1 - p)))
    c = dimensional_collapse(x, top=(1,), center=False)
    assert c.effective_rank == pytest.approx(expected, rel=1e-12)
    assert c.rank == 2
    assert c.variance_share[1] == pytest.approx(0.75)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_data_confined_to_k_dims_has_effective_rank_at_most_k(k):
    rng = np.random.default_rng(k)
    x = np.zeros((200, 24))
    x[:, :k] = rng.normal(size=(200, k)) + 0.5  # a cone: the mean is off 0
    for center in (True, False):
        c = dimensional_collapse(x, top=(k,), center=center)
        assert c.effective_rank <= k + 1e-9
        assert 1 <= c.rank <= k
        assert c.variance_share[k] == pytest.approx(1.0)
    # Spread over all 24 dimensions it is far larger.
    assert effective_rank(rng.normal(size=(200, 24))) > 15


def test_effective_rank_isotropic_is_the_dimension():
    d = 6
    x = np.concatenate([np.eye(d), -np.eye(d)])  # mean 0, equal variance in every direction
    c = dimensional_collapse(x, top=(1,))
    assert c.effective_rank == pytest.approx(d, rel=1e-12)
    assert c.variance_share[1] == pytest.approx(1 / d, rel=1e-12)


def test_effective_rank_ignores_row_scale_and_rotation():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(80, 10))
    q = ortho_group.rvs(10, random_state=4)
    scaled = x * rng.uniform(0.1, 10, size=(80, 1))
    assert effective_rank(scaled @ q) == pytest.approx(effective_rank(x), rel=1e-9)
    assert effective_rank(torch.from_numpy(x)) == pytest.approx(effective_rank(x), rel=1e-12)


def test_effective_rank_without_spread_is_zero():
    c = dimensional_collapse(np.tile([[1.0, 2.0, 3.0]], (5, 1)), top=(1, 2))
    assert (c.effective_rank, c.rank, c.variance_share) == (0.0, 0, {1: 0.0, 2: 0.0})
    assert effective_rank(np.tile([[1.0, 2.0]], (3, 1)), center=False) == pytest.approx(1.0)


def test_effective_rank_bad_input():
    with pytest.raises(GapscopeError, match="top"):
        dimensional_collapse(np.eye(3), top=0)
    with pytest.raises(EmbeddingError, match="NaN"):
        effective_rank(np.array([[1.0, np.nan]]))


# --------------------------------------------------------------------------- separability


def test_mixed_modalities_are_not_separable():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    sep = modality_separability(x, y, seed=0)
    assert abs(sep.accuracy - 0.5) < 0.08
    assert sep.n_per_modality == 400 and sep.folds == 5 and len(sep.fold_accuracies) == 5


def test_gapped_modalities_are_separable():
    x, y, _, _ = gapped(n=200, d=12, gap=2.0)
    assert modality_separability(x, y).accuracy == 1.0


def test_separability_balances_the_classes():
    # 600 rows against 50 from one distribution: a majority vote would score 0.92.
    rng = np.random.default_rng(5)
    sep = modality_separability(rng.normal(size=(600, 6)), rng.normal(size=(50, 6)), seed=1)
    assert sep.n_per_modality == 50
    assert abs(sep.accuracy - 0.5) < 0.15
    capped = modality_separability(
        rng.normal(size=(600, 6)), rng.normal(size=(500, 6)), max_rows=100
    )
    assert capped.n_per_modality == 100


def test_separability_is_deterministic_and_checks_input():
    x, y, _, _ = gapped(n=60, d=6, gap=0.3)
    assert modality_separability(x, y, seed=3) == modality_separability(x, y, seed=3)
    with pytest.raises(EmbeddingError, match="at least 5 rows"):
        modality_separability(x[:3], y)
    with pytest.raises(GapscopeError, match="folds"):
        modality_separability(x, y, folds=1)
    with pytest.raises(EmbeddingError, match="dim"):
        modality_separability(x, y[:, :3])


def sklearn_separability(x, y, *, folds=5, max_rows=5000, c=1.0, seed=0):
    """The probe as scikit-learn runs it: the same sampled unit rows, its StratifiedKFold
    and LogisticRegression (the implementation gapscope's used to call)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    from gapscope.engine.sampling import Stream, sample_rows

    r = min(len(x), len(y), max_rows)
    ix = sample_rows(len(x), r, seed, Stream.SEPARABILITY_ROWS_X)
    iy = sample_rows(len(y), r, seed, Stream.SEPARABILITY_ROWS_Y)
    features = np.concatenate([unit(x if ix is None else x[ix]), unit(y if iy is None else y[iy])])
    target = np.repeat([0, 1], r)
    scores = []
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(
        features, target
    ):
        model = LogisticRegression(C=c, max_iter=1000)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(features[train], target[train])
        scores.append(float(np.mean(model.predict(features[test]) == target[test])))
    return scores


@pytest.mark.parametrize("case", range(24))
def test_separability_equals_scikit_learns_probe(case):
    """Fold accuracies equal scikit-learn's LogisticRegression on StratifiedKFold, on rows
    from mixed to separable, d above and below the rows, strong and weak regularisation,
    2 to 5 folds, capped samples."""
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(1000 + case)
    n, m = (int(v) for v in rng.integers(6, 300, size=2))
    d = int(rng.integers(2, 80))
    x, y = rng.normal(size=(n, d)), rng.normal(size=(m, d))
    y[:, 0] += float(rng.choice([0.0, 0.05, 0.3, 1.0, 6.0]))
    options = {
        "folds": int(rng.integers(2, 6)),
        "max_rows": int(rng.choice([5000, 40])),
        "c": float(rng.choice([0.01, 1.0, 100.0])),
        "seed": int(rng.integers(0, 2**32 - 1)),
    }
    ours = modality_separability(x, y, **options)
    assert list(ours.fold_accuracies) == sklearn_separability(x, y, **options)


def test_separability_folds_are_scikit_learns():
    from sklearn.model_selection import StratifiedKFold

    from gapscope.engine.sampling import stratified_folds

    rng = np.random.default_rng(3)
    for _ in range(50):
        target = rng.integers(0, 3, size=int(rng.integers(9, 60)))
        folds = int(rng.integers(2, 4))
        seed = int(rng.integers(0, 2**32 - 1))
        if np.bincount(target).min() < folds:
            continue
        theirs = StratifiedKFold(folds, shuffle=True, random_state=seed).split(target, target)
        ours = stratified_folds(target, folds, seed)
        for (a, b), (c, e) in zip(theirs, ours, strict=True):
            assert a.tolist() == c.tolist() and b.tolist() == e.tolist()


# --------------------------------------------------------------------------- CKA


def reference_cka(a, b):
    """Kornblith et al.'s kernel (HSIC) form on n x n Gram matrices: a different route."""
    a, b = unit(a), unit(b)
    n = a.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = h @ a @ a.T @ h, h @ b @ b.T @ h
    return float(np.sum(k * l_) / math.sqrt(np.sum(k * k) * np.sum(l_ * l_)))


def test_cka_matches_the_kernel_form():
    x, y, gx, gy = gapped(n=40, d=7, seed=2)
    assert linear_cka(x, y).cka == pytest.approx(reference_cka(x, y), rel=1e-9)


def test_cka_with_groups_repeats_the_shared_row():
    x, y, gx, gy = gapped(n=30, d=5, captions=3, seed=4)
    result = linear_cka(x, y, gx, gy)
    assert result.n_pairs == result.n_used == 90
    assert result.cka == pytest.approx(reference_cka(np.repeat(x, 3, axis=0), y), rel=1e-9)


def test_cka_is_one_under_rotation_and_small_for_unrelated_rows():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(300, 10))
    q = ortho_group.rvs(10, random_state=7)
    assert linear_cka(x, x @ q).cka == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(x, rng.normal(size=(300, 10))).cka < 0.1


def test_cka_sampled_pairs_and_edge_cases():
    x, y, gx, gy = gapped(n=100, d=6, captions=2, seed=8)
    full = linear_cka(x, y, gx, gy)
    sampled = linear_cka(x, y, gx, gy, max_pairs=120, seed=1)
    assert sampled.n_used == 120 and sampled.n_pairs == 200
    assert sampled == linear_cka(x, y, gx, gy, max_pairs=120, seed=1)
    assert abs(sampled.cka - full.cka) < 0.1
    assert math.isnan(linear_cka(np.tile([[1.0, 0.0]], (4, 1)), x[:4, :2]).cka)
    with pytest.raises(EmbeddingError, match="at least 2 positive pairs"):
        linear_cka(x[:1], y[:1])


# --------------------------------------------------------------------------- gap direction


def test_gap_orthogonal_to_the_content_by_hand():
    c, s = 0.6, 0.8
    x = np.array([[c, s, 0.0], [c, -s, 0.0]])
    y = np.array([[-c, 0.0, s], [-c, 0.0, -s]])
    r = gap_direction(x, y, top=(1, 2, 3))
    assert r.gap == pytest.approx(1.2)
    assert r.pc_share == {1: 0.0, 2: 0.0, 3: 0.0}
    assert r.coordinate_share[1] == pytest.approx(1.0)
    assert (r.axis_cosine_x, r.axis_cosine_y) == (0.0, 0.0)
    assert r.pc_share_chance == {1: 1 / 3, 2: 2 / 3, 3: 1.0}


def test_gap_along_the_content_axis_by_hand():
    # x spreads along (1, -1) / sqrt 2; y has no spread; g = (0.5, 0.5) - (1, 0) = (-0.5, 0.5).
    x = np.array([[1.0, 0.0], [0.0, 1.0]])
    y = np.array([[1.0, 0.0], [2.0, 0.0]])
    r = gap_direction(x, y, top=(1, 2))
    assert r.gap == pytest.approx(math.sqrt(0.5))
    assert r.pc_share[1] == pytest.approx(1.0)
    assert r.axis_cosine_x == pytest.approx(1.0)
    assert math.isnan(r.axis_cosine_y)
    assert r.coordinate_share == {1: pytest.approx(0.5), 2: pytest.approx(1.0)}


def test_gap_direction_matches_numpy_reference():
    x, y, _, _ = gapped(n=90, d=9, seed=11)
    ux, uy = unit(x), unit(y)
    g = ux.mean(0) - uy.mean(0)
    pooled = (np.cov(ux, rowvar=False, bias=True) + np.cov(uy, rowvar=False, bias=True)) / 2
    w, v = np.linalg.eigh(pooled)
    v = v[:, ::-1]
    proj = (v.T @ g) ** 2 / (g @ g)
    r = gap_direction(x, y, top=(1, 4))
    assert r.pc_share[1] == pytest.approx(proj[0], rel=1e-8)
    assert r.pc_share[4] == pytest.approx(proj[:4].sum(), rel=1e-8)
    first_x = np.linalg.eigh(np.cov(ux, rowvar=False))[1][:, -1]
    assert r.axis_cosine_x == pytest.approx(abs(first_x @ g) / np.linalg.norm(g), rel=1e-8)
    assert r.gap == pytest.approx(np.linalg.norm(g), rel=1e-12)


def test_gap_direction_zero_gap():
    x = np.random.default_rng(0).normal(size=(20, 4))
    r = gap_direction(x, x)
    assert r.gap == 0.0 and r.pc_share == {1: 0.0, 10: 0.0}
    assert math.isnan(r.axis_cosine_x)


# --------------------------------------------------------------------------- similarity stats


def test_similarity_stats_match_the_full_matrix():
    x, y, gx, gy = gapped(n=30, d=6, captions=2, seed=12)
    s = unit(x) @ unit(y).T
    pos_mask = gx[:, None] == gy[None, :]
    pos, neg = s[pos_mask], s[~pos_mask]
    levels = (0.05, 0.5, 0.95)
    st = similarity_stats(x, y, gx, gy, quantiles=levels)
    assert not st.negatives_sampled
    assert (st.n_positive, st.n_negative, st.n_negative_total) == (60, neg.size, neg.size)
    assert st.positive_mean == pytest.approx(pos.mean(), rel=1e-12)
    assert st.negative_mean == pytest.approx(neg.mean(), rel=1e-12)
    for q in levels:
        assert st.positive_quantiles[q] == pytest.approx(np.quantile(pos, q), rel=1e-12)
        assert st.negative_quantiles[q] == pytest.approx(np.quantile(neg, q), rel=1e-12)
    edges = np.linspace(-1, 1, HISTOGRAM_BINS + 1)
    hp, hn = np.histogram(pos, edges)[0], np.histogram(neg, edges)[0]
    np.testing.assert_array_equal(st.positive_counts, hp)
    np.testing.assert_array_equal(st.negative_counts, hn)
    assert st.overlap == pytest.approx(np.minimum(hp / hp.sum(), hn / hn.sum()).sum())
    # AUC by brute force over every (positive, negative) couple.
    wins = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert st.auc == pytest.approx(wins, rel=1e-12)
    assert st.negatives_above_median_positive == pytest.approx((neg > np.median(pos)).mean())


@pytest.mark.parametrize("block_size", [None, 1, 2, 3])
def test_similarity_ties_of_duplicated_rows_count_half(block_size):
    """A duplicated row makes a negative pair equal to a positive one in exact arithmetic:
    the AUC counts it as a tie (a half), whatever the block size."""
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    x[1] = x[0]
    unit_x = x / np.linalg.norm(x, axis=1, keepdims=True)
    unit_y = y / np.linalg.norm(y, axis=1, keepdims=True)
    s = unit_x @ unit_y.T
    # Each tie by hand: cos(x1, y0) = cos(x0, y0) and cos(x0, y1) = cos(x1, y1).
    s[1, 0], s[0, 1] = s[0, 0], s[1, 1]
    positive, negative = s[np.eye(4, dtype=bool)], s[~np.eye(4, dtype=bool)]
    wins = (positive[:, None] > negative) + 0.5 * (positive[:, None] == negative)
    st = similarity_stats(x, y, block_size=block_size)
    assert st.auc == pytest.approx(wins.mean(), abs=1e-15)
    assert st.auc == pytest.approx(37 / 48, abs=1e-15)  # the two ties are halves


def test_similarity_separated_and_identical_distributions():
    x = np.eye(4)
    st = similarity_stats(x, x)
    assert (st.auc, st.overlap, st.negatives_above_median_positive) == (1.0, 0.0, 0.0)
    assert st.positive_quantiles[0.5] == pytest.approx(1.0)
    # All rows identical: positives and negatives coincide.
    same = similarity_stats(np.ones((5, 3)), np.ones((5, 3)))
    assert same.auc == pytest.approx(0.5) and same.overlap == pytest.approx(1.0)


def test_similarity_negatives_are_sampled_beyond_the_cap():
    x, y, gx, gy = gapped(n=80, d=6, seed=13)
    exact = similarity_stats(x, y, gx, gy)
    st = similarity_stats(x, y, gx, gy, max_negatives=3000, seed=2)
    assert st.negatives_sampled and st.n_negative == 3000
    assert st.n_negative_total == 80 * 79
    assert int(st.negative_counts.sum()) == 3000
    assert st == similarity_stats(x, y, gx, gy, max_negatives=3000, seed=2)
    # Positives stay exact; sampled negatives estimate the full distribution.
    assert st.positive_mean == exact.positive_mean
    assert st.negative_quantiles[0.5] == pytest.approx(exact.negative_quantiles[0.5], abs=0.03)
    assert st.auc == pytest.approx(exact.auc, abs=0.02)


def test_similarity_without_negatives_and_bad_input():
    st = similarity_stats(np.eye(3), np.eye(3), [0, 0, 0], [0, 0, 0])
    assert st.n_negative == 0 and st.auc is None and st.negative_quantiles is None
    with pytest.raises(EmbeddingError, match="no positive pairs"):
        similarity_stats(np.eye(2), np.eye(2), [0, 1], [2, 3])
    with pytest.raises(GapscopeError, match="quantiles"):
        similarity_stats(np.eye(2), np.eye(2), quantiles=(1.5,))


# --------------------------------------------------------------------------- GRAM volume


def test_gram_volume_analytic_values():
    e = np.eye(3)
    assert gram_volumes(e[None]).tolist() == [pytest.approx(1.0)]
    assert gram_volumes(np.stack([e[[0, 0, 1]]])).tolist() == [0.0]
    tilt = np.array([[[1.0, 0, 0], [1.0, 1.0, 0], [0, 0, 5.0]]])
    assert gram_volumes(tilt)[0] == pytest.approx(math.sqrt(0.5))
    theta = 0.3
    pair = np.array([[[1.0, 0.0], [math.cos(theta), math.sin(theta)]]])
    assert gram_volumes(pair)[0] == pytest.approx(math.sin(theta))


def test_gram_volume_equals_the_determinant_when_k_equals_d():
    v = np.random.default_rng(14).normal(size=(50, 3, 3))
    expected = np.abs(np.linalg.det(v / np.linalg.norm(v, axis=2, keepdims=True)))
    np.testing.assert_allclose(gram_volumes(v), expected, rtol=1e-9, atol=1e-12)


def brute_force_tuples(arrays, groups):
    vols = []
    for g in sorted(set.intersection(*(set(gr.tolist()) for gr in groups))):
        rows = [np.flatnonzero(gr == g) for gr in groups]
        for combo in itertools.product(*rows):
            v = np.stack([unit(a[[r]])[0] for a, r in zip(arrays, combo, strict=True)])
            vols.append(math.sqrt(max(0.0, np.linalg.det(v @ v.T))))
    return np.array(vols)


def test_gram_volume_over_grouped_tuples():
    rng = np.random.default_rng(15)
    arrays = [rng.normal(size=(n, 5)) for n in (6, 10, 7)]
    groups = [np.array([0, 1, 2, 3, 4, 9]), rng.integers(0, 5, 10), rng.integers(0, 5, 7)]
    ref = brute_force_tuples(arrays, groups)
    r = gram_volume(arrays, groups)
    assert r.n_tuples == r.n_evaluated == ref.size
    assert r.mean == pytest.approx(ref.mean(), rel=1e-12)
    assert r.median == pytest.approx(np.median(ref), rel=1e-12)
    assert r.se == 0.0
    # A sample draws real tuples: every sampled volume is one of the brute-force volumes.
    s = gram_volume(arrays, groups, max_tuples=5, seed=3)
    assert s.n_evaluated == 5 and s.n_tuples == ref.size and s.se > 0
    for v in s.volumes:
        assert np.min(np.abs(ref - v)) < 1e-12


@pytest.mark.parametrize("scale", [1e200, 1e-170, 1e-310])
def test_gram_volumes_of_vectors_whose_squares_leave_float64(scale):
    """sin 45 degrees whatever the vectors' length: no overflow to 0, no false zero vector."""
    v = np.array([[[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert gram_volumes(v * scale)[0] == pytest.approx(np.sqrt(0.5), rel=1e-15)
    with pytest.raises(EmbeddingError, match="a zero vector"):
        gram_volumes(np.array([[[1.0, 0.0], [0.0, 0.0]]]))


def test_gram_volume_plain_rows_and_errors():
    e = np.eye(3)
    r = gram_volume([e, e[[1, 2, 0]], e[[2, 0, 1]]])
    assert (r.mean, r.n_tuples) == (pytest.approx(1.0), 3)
    assert gram_volume([e, e, e]).mean == 0.0
    with pytest.raises(EmbeddingError, match="row counts differ"):
        gram_volume([e, e[:2]])
    with pytest.raises(EmbeddingError, match="no group"):
        gram_volume([e, e], [[0, 1, 2], [3, 4, 5]])
    with pytest.raises(EmbeddingError, match="at least 2 modalities"):
        gram_volume([e])
