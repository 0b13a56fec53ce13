"""Tests for uniformity, uniformity_sampled and alignment against independent references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from gapscope.engine.sampling import Stream, sample_rows
from gapscope.errors import EmbeddingError, GapscopeError
from gapscope.metrics.alignment import (
    MAX_MEAN_COSINE_FOR_TOTAL,
    alignment,
    alignment_from_cosine_total,
)
from gapscope.metrics.cosine import paired_cosine
from gapscope.metrics.uniformity import uniformity, uniformity_sampled


def unit(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def squared_distances(x) -> np.ndarray:
    u = unit(x)
    diff = u[:, None, :] - u[None, :, :]
    return (diff**2).sum(axis=-1)


def reference_uniformity(x, t=2.0) -> float:
    """Full pairwise matrix in float64, log-domain so it is finite for any t."""
    sq = squared_distances(x)
    upper = sq[np.triu_indices(len(sq), k=1)]
    return float(logsumexp(-t * upper) - math.log(upper.size))


def torch_pdist_uniformity(x, t=2.0) -> float:
    """Wang & Isola's own formula."""
    u = torch.from_numpy(unit(x))
    return float(torch.pdist(u, p=2).pow(2).mul(-t).exp().mean().log())


def reference_sampled(x, t, n_queries, seed) -> tuple[float, float]:
    """The estimator written out from its definition on the full distance matrix."""
    n = len(x)
    # The rows uniformity_sampled draws: the QUERIES stream of gapscope.engine.sampling.
    queries = sample_rows(n, n_queries, seed, Stream.QUERIES)
    kernel = np.exp(-t * squared_distances(x))
    a = np.array([(kernel[q].sum() - kernel[q, q]) / (n - 1) for q in queries])
    mean = a.mean()
    se = math.sqrt((1 - n_queries / n) * a.var(ddof=1) / n_queries)
    return math.log(mean), se / mean


# --- uniformity -----------------------------------------------------------------------------


def test_hand_derived_three_points():
    # e1, -e1, e2: squared distances 4, 2, 2 -> log((e^-8 + 2 e^-4) / 3) = -4.396349 for t = 2.
    x = np.array([[1.0, 0.0], [-3.0, 0.0], [0.0, 0.5]])
    expected = math.log((math.exp(-8) + 2 * math.exp(-4)) / 3)
    assert expected == pytest.approx(-4.396349, abs=1e-6)
    assert uniformity(x) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(("d", "t"), [(2, 2.0), (5, 2.0), (16, 0.5), (16, 3.0), (8, 1000.0)])
def test_orthonormal_basis_gives_minus_two_t(d, t):
    # Every pairwise squared distance is 2, so the mean is exp(-2t): uniformity = -2t.
    assert uniformity(np.eye(d), t) == pytest.approx(-2 * t, rel=1e-6)


def test_identical_rows_give_zero():
    x = np.random.default_rng(0).normal(size=(1, 6)) * np.array([[1.0], [2.0], [0.3]])
    assert uniformity(x) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    ("n", "d", "t"), [(2, 3, 2.0), (10, 4, 2.0), (60, 16, 2.0), (45, 8, 0.7), (30, 3, 5.0)]
)
def test_matches_torch_pdist(n, d, t):
    x = np.random.default_rng(n + d).normal(size=(n, d))
    ref = torch_pdist_uniformity(x, t)
    assert math.isfinite(ref)
    assert uniformity(x, t) == pytest.approx(ref, abs=1e-5)


@pytest.mark.parametrize("block_size", [1, 5, 16, 37, 64, None])
def test_blocked_equals_full_matrix_reference(block_size):
    x = np.random.default_rng(1).normal(size=(37, 12)) + 0.3
    value = uniformity(x, block_size=block_size)
    assert value == pytest.approx(reference_uniformity(x), abs=1e-5)


def test_large_t_never_minus_inf():
    # Spread points, t = 1000: every squared distance is > 0.75, so every exp term is below
    # e^-750, under the float64 range, and the naive formula gives -inf.
    x = np.random.default_rng(2).normal(size=(30, 32))
    assert squared_distances(x)[np.triu_indices(30, k=1)].min() > 0.75
    assert torch_pdist_uniformity(x, 1000.0) == -math.inf
    value = uniformity(x, 1000.0, block_size=7)
    assert math.isfinite(value)
    assert value == pytest.approx(reference_uniformity(x, 1000.0), rel=1e-4)


def test_float16_memmap_and_torch_inputs(tmp_path):
    x16 = np.random.default_rng(3).normal(size=(29, 8)).astype(np.float16)
    np.save(tmp_path / "x.npy", x16)
    xm = np.load(tmp_path / "x.npy", mmap_mode="r")
    ref = reference_uniformity(x16)
    assert uniformity(xm, block_size=4, device="cpu") == pytest.approx(ref, abs=1e-5)
    assert uniformity(torch.from_numpy(x16)) == pytest.approx(ref, abs=1e-5)


def test_deterministic():
    x = np.random.default_rng(4).normal(size=(80, 16))
    assert uniformity(x, block_size=9) == uniformity(x.copy(), block_size=9)
    assert type(uniformity(x)) is float


# --- uniformity_sampled ---------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_sampled_within_three_standard_errors(seed):
    x = np.random.default_rng(5).normal(size=(300, 6))
    exact = reference_uniformity(x)
    est, se = uniformity_sampled(x, n_queries=60, seed=seed)
    assert 0.0 < se < 0.1
    assert abs(est - exact) <= 3 * se


def test_sampled_standard_error_is_calibrated():
    # Over many seeds the spread of the estimates around the exact value must match the
    # reported se. Half the rows are sampled, so the finite-population correction matters: the
    # ratio would be sqrt(1/2) = 0.71 without it.
    x = np.random.default_rng(15).normal(size=(150, 4))
    exact = reference_uniformity(x)
    runs = np.array([uniformity_sampled(x, n_queries=75, seed=s) for s in range(200)])
    rms_error = math.sqrt(np.mean((runs[:, 0] - exact) ** 2))
    assert 0.85 < rms_error / runs[:, 1].mean() < 1.2


@pytest.mark.parametrize(("seed", "block_size"), [(0, 1), (1, 5), (2, 16), (3, 37), (4, 64)])
def test_sampled_equals_estimator_reference(seed, block_size):
    x = np.random.default_rng(6).normal(size=(37, 5))
    ref_est, ref_se = reference_sampled(x, 2.0, 20, seed)
    est, se = uniformity_sampled(x, n_queries=20, seed=seed, block_size=block_size)
    assert est == pytest.approx(ref_est, abs=1e-5)
    assert se == pytest.approx(ref_se, rel=1e-4)


def test_sampled_finite_population_correction():
    # k = n - 1 of n rows: the correction 1 - k/n shrinks the se by sqrt(1/n) compared with the
    # with-replacement formula.
    x = np.random.default_rng(7).normal(size=(25, 4))
    _, se = uniformity_sampled(x, n_queries=24, seed=0)
    _, ref_se = reference_sampled(x, 2.0, 24, 0)
    assert se == pytest.approx(ref_se, rel=1e-4)
    assert se > 0.0


@pytest.mark.parametrize("n_queries", [37, 38, 1000])
def test_sampled_all_queries_is_exact(n_queries):
    x = np.random.default_rng(8).normal(size=(37, 5))
    est, se = uniformity_sampled(x, n_queries=n_queries, block_size=5)
    assert se == 0.0
    assert est == uniformity(x, block_size=5)


def test_sampled_deterministic_for_a_seed():
    x = np.random.default_rng(9).normal(size=(200, 8))
    first = uniformity_sampled(x, n_queries=30, seed=11)
    assert first == uniformity_sampled(x.copy(), n_queries=30, seed=11)
    assert first != uniformity_sampled(x, n_queries=30, seed=12)


def test_sampled_large_t_finite():
    x = np.random.default_rng(10).normal(size=(60, 6))
    est, se = uniformity_sampled(x, 1000.0, n_queries=20, seed=0)
    ref_est, ref_se = reference_sampled_logdomain(x, 1000.0, 20, 0)
    assert math.isfinite(est) and math.isfinite(se)
    assert est == pytest.approx(ref_est, rel=1e-4)
    assert se == pytest.approx(ref_se, rel=1e-3)


def reference_sampled_logdomain(x, t, n_queries, seed):
    """Same estimator as reference_sampled, in scipy's log domain (for t where exp underflows)."""
    n = len(x)
    # The rows uniformity_sampled draws: the QUERIES stream of gapscope.engine.sampling.
    queries = sample_rows(n, n_queries, seed, Stream.QUERIES)
    log_kernel = -t * squared_distances(x)
    log_a = np.array([logsumexp(np.delete(log_kernel[q], q)) for q in queries]) - math.log(n - 1)
    log_mean = logsumexp(log_a) - math.log(n_queries)
    rel = np.exp(log_a - log_mean)  # a_q / mean
    se_rel = math.sqrt((1 - n_queries / n) * rel.var(ddof=1) / n_queries)
    return float(log_mean), se_rel


# --- alignment ------------------------------------------------------------------------------


def reference_alignment(x, y, gx=None, gy=None, alpha=2.0) -> float:
    dist = np.linalg.norm(unit(x)[:, None, :] - unit(y)[None, :, :], axis=-1)
    positive = (
        np.eye(len(x), dtype=bool)
        if gx is None
        else (np.asarray(gx)[:, None] == np.asarray(gy)[None, :])
    )
    return float((dist[positive] ** alpha).mean())


def test_alignment_hand_derived():
    # Pairs (e1, e2): ||e1 - e2||^2 = 2; (e2, e2): 0. alpha = 2 -> 1; alpha = 1 -> sqrt(2)/2.
    x = np.array([[1.0, 0.0], [0.0, 1.0]])
    y = np.array([[0.0, 3.0], [0.0, 1.0]])
    assert alignment(x, y) == pytest.approx(1.0, abs=1e-12)
    assert alignment(x, y, alpha=1.0) == pytest.approx(math.sqrt(2) / 2, abs=1e-12)


def test_alignment_hand_derived_groups():
    # Image e1 (g 0) with captions e1, e2, -e1: squared distances 0, 2, 4 -> mean 2;
    # alpha = 1: (0 + sqrt2 + 2) / 3. The second image (g 1) has no caption.
    x = np.array([[1.0, 0.0], [0.0, 1.0]])
    y = np.array([[2.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    assert alignment(x, y, [0, 1], [0, 0, 0]) == pytest.approx(2.0, abs=1e-12)
    assert alignment(x, y, [0, 1], [0, 0, 0], alpha=1.0) == pytest.approx(
        (math.sqrt(2) + 2) / 3, abs=1e-12
    )


def test_alignment_identical_is_zero():
    x = np.random.default_rng(11).normal(size=(20, 5))
    assert alignment(x, 3.0 * x) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 3.0])
@pytest.mark.parametrize("block_size", [1, 5, 16, 37, 64, None])
def test_alignment_chunked_equals_reference(alpha, block_size):
    rng = np.random.default_rng(12)
    x, y = rng.normal(size=(37, 6)), rng.normal(size=(41, 6))
    gx = rng.integers(0, 9, size=37)
    gy = rng.integers(3, 14, size=41)
    value = alignment(x, y, gx, gy, alpha=alpha, block_size=block_size)
    assert value == pytest.approx(reference_alignment(x, y, gx, gy, alpha), abs=1e-12)


@pytest.mark.parametrize("block_size", [1, 5, 16, None])
def test_alignment_reads_each_row_once_with_the_same_bits(block_size):
    # An image with five captions is in five pairs: its row is read and normalised once, and
    # each pair's term has the bits of normalising both rows of the pair on their own.
    from gapscope.engine.blocks import iter_positive_pairs
    from gapscope.engine.normalization import unit_rows
    from gapscope.metrics.alignment import alignment_row_terms

    class Counting(np.ndarray):
        def __getitem__(self, index):
            out = super().__getitem__(index)
            if out.ndim == 2 and "read" in self.__dict__:
                self.read += out.shape[0]
            return out

    rng = np.random.default_rng(15)
    image = rng.normal(size=(40, 6)).view(Counting)
    text = rng.normal(size=(200, 6)).view(Counting)
    gi, gt = np.arange(40), rng.permutation(np.repeat(np.arange(40), 5))
    for x, y, gx, gy in ((image, text, gi, gt), (text, image, gt, gi)):
        image.read = text.read = 0
        sums, counts = alignment_row_terms(x, y, gx, gy, alpha=1.5, block_size=block_size)
        expected = np.zeros(x.shape[0])
        for i, j in iter_positive_pairs(gx, gy, block_size or 10**6):
            diff = unit_rows(np.asarray(x)[i]) - unit_rows(np.asarray(y)[j])
            terms = np.einsum("ij,ij->i", diff, diff) ** 0.75
            expected += np.bincount(i, weights=terms, minlength=x.shape[0])
        if block_size is not None:
            assert sums.tobytes() == expected.tobytes()
        else:
            # One chunk of pairs: the validation's read and one read of each distinct row.
            assert (image.read, text.read) == (80, 400)
        assert counts.sum() == 200


def test_alignment_of_fortran_ordered_rows_has_the_bits_of_c_ordered_ones():
    # Rows read as a slice keep their layout; their unit rows are made row-major anyway.
    rng = np.random.default_rng(16)
    x, y = rng.normal(size=(40, 24)), rng.normal(size=(200, 24))
    gx, gy = np.arange(40), rng.permutation(np.repeat(np.arange(40), 5))
    for dtype in (np.float32, np.float64):
        c = alignment(x.astype(dtype), y.astype(dtype), gx, gy, alpha=1.5)
        f = alignment(
            np.asfortranarray(x, dtype=dtype), np.asfortranarray(y, dtype=dtype), gx, gy, alpha=1.5
        )
        assert f == c


@pytest.mark.parametrize("block_size", [1, 5, 16, 37, 64])
def test_alignment_one_to_one_equals_reference(block_size):
    rng = np.random.default_rng(13)
    x = rng.normal(size=(37, 6))
    y = x + rng.normal(size=(37, 6))
    value = alignment(x, y, block_size=block_size)
    assert value == pytest.approx(reference_alignment(x, y), abs=1e-12)


def test_alignment_alpha_two_is_two_minus_two_paired_cosine():
    rng = np.random.default_rng(14)
    x, y = rng.normal(size=(30, 8)), rng.normal(size=(45, 8))
    gx, gy = np.arange(30), rng.integers(0, 30, size=45)
    value = alignment(x, y, gx, gy)
    assert value == pytest.approx(2 - 2 * paired_cosine(x, y, gx, gy).paired, abs=1e-12)


@pytest.mark.parametrize(
    ("closeness", "groups"), [(0.0, 2), (0.3, 1), (0.7, 1), (0.7, 2), (3.0, 1), (1e3, 1)]
)
def test_alignment_from_the_cosine_total_is_alignment_where_it_answers(closeness, groups):
    # 2 - 2 * mean cosine, from the total paired_cosine keeps, agrees with the differences
    # to rounding up to a mean cosine of 0.9 (pairs of y = c x + noise: cosine c / sqrt(1 +
    # c^2); in groups of two rows a modality, half the pairs are unrelated); above it (c = 3:
    # 0.95), None: nearly equal pairs (c = 1e3, cosine 1 - 5e-7) would cancel there the
    # digits that the differences keep.
    rng = np.random.default_rng(15)
    x = rng.normal(size=(400, 16))
    y = closeness * x + rng.normal(size=(400, 16))
    gx = gy = np.arange(400) // groups
    c = paired_cosine(x, y, gx, gy)
    got = alignment_from_cosine_total(c.paired_total, c.n_pairs)
    mean = c.paired_total / c.n_pairs
    assert c.paired == pytest.approx(mean, abs=1e-15)
    assert (got is None) == (mean > MAX_MEAN_COSINE_FOR_TOTAL) == (closeness >= 3.0)
    if got is not None:
        assert got == pytest.approx(alignment(x, y, gx, gy), rel=1e-14)


def test_alignment_from_the_cosine_total_answers_up_to_a_mean_cosine_of_nine_tenths():
    # Pairs of unit rows at a set angle (y = c x + sqrt(1 - c^2) z, z orthogonal to x): every
    # cosine is c, so the mean sits where it is put, just under and just over 0.9.
    rng = np.random.default_rng(16)
    basis = np.linalg.qr(rng.normal(size=(8, 8)))[0]
    for c, answers in ((0.899, True), (0.901, False)):
        x = np.tile(basis[0], (50, 1))
        y = c * x + np.sqrt(1 - c * c) * basis[1]
        total = paired_cosine(x, y).paired_total
        got = alignment_from_cosine_total(total, 50)
        assert (got is not None) == answers, c
        if answers:
            assert got == pytest.approx(alignment(x, y), rel=1e-12)


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (np.ones((1, 3)), "at least 2"),
        (np.array([[np.nan, 1.0], [1.0, 1.0]]), "NaN"),
        (np.array([[1.0, 1.0], [0.0, 0.0]]), "zero vector"),
        (np.ones(3), "2-D"),
    ],
)
def test_uniformity_bad_input_raises(x, match):
    with pytest.raises(EmbeddingError, match=match):
        uniformity(x)
    with pytest.raises(EmbeddingError, match=match):
        uniformity_sampled(x, n_queries=2)


@pytest.mark.parametrize(
    "kwargs",
    [{"t": 0.0}, {"t": -1.0}, {"t": math.inf}, {"block_size": 0}, {"block_size": 2.5}],
)
def test_uniformity_bad_parameters_raise(kwargs):
    with pytest.raises(GapscopeError):
        uniformity(np.eye(3), **kwargs)


@pytest.mark.parametrize("n_queries", [0, 1, 2.0, True])
def test_sampled_bad_n_queries_raise(n_queries):
    with pytest.raises(GapscopeError, match="n_queries"):
        uniformity_sampled(np.eye(5), n_queries=n_queries)


@pytest.mark.parametrize(
    ("x", "y", "gx", "gy", "kwargs", "error"),
    [
        (np.ones((2, 2)), np.ones((3, 2)), None, None, {}, EmbeddingError),
        (np.ones((2, 2)), np.ones((2, 3)), None, None, {}, EmbeddingError),
        (np.ones((2, 2)), np.ones((2, 2)), [0, 1], [2, 3], {}, EmbeddingError),
        (np.array([[np.inf, 1.0]]), np.ones((1, 2)), None, None, {}, EmbeddingError),
        (np.ones((2, 2)), np.ones((2, 2)), None, None, {"alpha": 0.0}, GapscopeError),
        (np.ones((2, 2)), np.ones((2, 2)), None, None, {"block_size": -3}, GapscopeError),
    ],
)
def test_alignment_bad_input_raises(x, y, gx, gy, kwargs, error):
    with pytest.raises(error):
        alignment(x, y, gx, gy, **kwargs)


@pytest.mark.parametrize("t", [1e-46, 2.0**-150, 5e-324])
def test_temperatures_below_float32_kernels_are_refused(t):
    """A temperature whose float32 kernel would be constant (or not a float32 at all) is
    refused by every kernel, not left to fail inside the sums."""
    from gapscope.metrics.kernel_distance import cross_modal_uniformity, mmd2

    x = np.random.default_rng(2).normal(size=(10, 4))
    for measure in (lambda: uniformity(x, t=t), lambda: mmd2(x, x + 0.1, t=t)):
        with pytest.raises(GapscopeError, match="temperature of at least 1.4013e-45"):
            measure()
    with pytest.raises(GapscopeError, match="temperature of at least 1.4013e-45"):
        cross_modal_uniformity(x, x, t=t)
    assert uniformity(x, t=2.0**-149) == pytest.approx(0.0, abs=1e-12)  # the smallest: fine
