"""Tests for gapscope.metrics.mir against hand-derived values, closed forms and scipy's sqrtm."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from gapscope.engine.normalization import row_norms
from gapscope.errors import EmbeddingError, GapscopeError
from gapscope.metrics.mir import (
    FD_FLOOR,
    MIRResult,
    RawMoments,
    RawMomentsScan,
    frechet_distance,
    modality_integration_rate,
    norms_may_vary,
    raw_norms,
)


def sqrtm_fd(mu1, s1, mu2, s2) -> float:
    """The textbook FID formula with scipy's general matrix square root (full-rank cases)."""
    root = scipy.linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(root.real))


def reference_mir(x, y) -> tuple[float, int, int]:
    """Steps 1-3 written out on whole arrays with numpy/scipy (no skip rule: spread norms)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    s = 1 / np.linalg.norm(y, axis=1).mean()
    counts = []
    moments = []
    for a in (s * x, s * y):
        norms = np.linalg.norm(a, axis=1)
        out = np.abs(norms - np.median(norms)) > 3 * norms.std(ddof=1)
        a = a.copy()
        a[out] = np.median(a, axis=0)
        counts.append(int(out.sum()))
        moments.append((a.mean(axis=0), np.cov(a, rowvar=False, ddof=1)))
    (m1, c1), (m2, c2) = moments
    return sqrtm_fd(m1, c1, m2, c2), counts[0], counts[1]


def exact_moments(rng, n, d, mean, sigma) -> np.ndarray:
    """Samples whose empirical mean is exactly ``mean`` and covariance exactly sigma^2 I."""
    z = rng.normal(size=(n, d))
    z -= z.mean(axis=0)
    chol = np.linalg.cholesky(np.cov(z, rowvar=False))
    return mean + sigma * z @ np.linalg.inv(chol).T


def random_spd(rng, d) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


# --- frechet_distance -------------------------------------------------------------------------


def test_frechet_isotropic_closed_form():
    # N(mu1, s1^2 I) vs N(mu2, s2^2 I): FD = ||mu1 - mu2||^2 + d (s1 - s2)^2.
    rng = np.random.default_rng(0)
    d, s1, s2 = 7, 1.5, 0.4
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    fd = frechet_distance(mu1, s1**2 * np.eye(d), mu2, s2**2 * np.eye(d))
    assert fd == pytest.approx(((mu1 - mu2) ** 2).sum() + d * (s1 - s2) ** 2, rel=1e-12)


@pytest.mark.parametrize("d", [1, 2, 5, 20])
def test_frechet_matches_scipy_sqrtm(d):
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = random_spd(rng, d), random_spd(rng, d)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(
        sqrtm_fd(mu1, s1, mu2, s2), rel=1e-10, abs=1e-12
    )


def test_frechet_identical_gaussians_is_zero_and_symmetric():
    rng = np.random.default_rng(1)
    mu, s = rng.normal(size=6), random_spd(rng, 6)
    assert frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-12)
    s2 = random_spd(rng, 6)
    assert frechet_distance(mu, s, mu, s2) == pytest.approx(
        frechet_distance(mu, s2, mu, s), rel=1e-10
    )


def test_frechet_singular_covariances_match_nuclear_norm():
    # With A = centred samples, Tr((S1 S2)^(1/2)) = ||A1 A2^T||_* / sqrt((n1-1)(n2-1)) exactly,
    # valid for rank-deficient covariances where sqrtm is unreliable.
    rng = np.random.default_rng(2)
    d = 30
    a1, a2 = rng.normal(size=(6, d)), rng.normal(size=(9, d)) + 0.5
    c1, c2 = a1 - a1.mean(0), a2 - a2.mean(0)
    s1, s2 = c1.T @ c1 / 5, c2.T @ c2 / 8
    nuclear = np.linalg.svd(c1 @ c2.T, compute_uv=False).sum() / math.sqrt(5 * 8)
    mu1, mu2 = a1.mean(0), a2.mean(0)
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * nuclear
    fd = frechet_distance(mu1, s1, mu2, s2)
    assert math.isfinite(fd) and fd >= 0.0
    assert fd == pytest.approx(expected, rel=1e-12)


# --- modality_integration_rate: hand-derived ------------------------------------------------


def test_hand_derived_one_dimension():
    # y norms 2, 2 -> s = 1/2; scaled x = 0.5, 1.5: mean 1, var 0.5; scaled y = 1, 1: var 0.
    # FD = 0 + 0.5 + 0 - 2 sqrt(0) = 0.5, MIR = log10(0.5) = -0.30103.
    r = modality_integration_rate(np.array([[1.0], [3.0]]), np.array([[2.0], [2.0]]))
    assert r.scale == 0.5
    assert r.fd == pytest.approx(0.5, abs=1e-12)
    assert r.mir == pytest.approx(-0.30103, abs=1e-5)
    assert (r.outliers_x, r.outliers_y) == (0, 0)
    assert (r.outlier_step_skipped_x, r.outlier_step_skipped_y) == (False, True)
    assert r.full_rank is False  # var(y) = 0


def test_hand_derived_isotropic_two_dimensions():
    # x = 2 * {e1, e2, -e1, -e2}, y = {e1, e2, -e1, -e2}: s = 1, means 0,
    # S_x = (8/3) I, S_y = (2/3) I: FD = 16/3 + 4/3 - 2 * 2 * 4/3 = 4/3, MIR = 0.124939.
    basis = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    r = modality_integration_rate(2 * basis, basis)
    assert r.scale == 1.0
    assert r.fd == pytest.approx(4 / 3, abs=1e-12)
    assert r.mir == pytest.approx(0.124939, abs=1e-6)
    assert r.outlier_step_skipped_x and r.outlier_step_skipped_y
    assert r.full_rank is True


def test_hand_derived_outlier_replacement():
    # x: 11 unit rows (e1 x3, e2 x3, -e1 x3, -e2 x2) and 10 e2. Norms: eleven 1s and a 10:
    # median 1, std = 9 / sqrt(12) = 2.598, |10 - 1| = 9 > 7.79: one outlier.
    # Coordinate-wise median of all 12 rows = (0, 0), which replaces 10 e2.
    # Then mean_x = (0, 1/12); var0 = 6/11, var1 = (5 - 12/144)/11 = 59/132, cov01 = 0.
    # y = {e1, e2, -e1, -e2}: s = 1, mean 0, S_y = (2/3) I. Diagonal covariances commute:
    # FD = 1/144 + (sqrt(6/11) - sqrt(2/3))^2 + (sqrt(59/132) - sqrt(2/3))^2.
    e1, e2 = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    x = np.array([e1] * 3 + [e2] * 3 + [-e1] * 3 + [-e2] * 2 + [10 * e2])
    y = np.array([e1, e2, -e1, -e2])
    r = modality_integration_rate(x, y)
    expected = (
        1 / 144
        + (math.sqrt(6 / 11) - math.sqrt(2 / 3)) ** 2
        + (math.sqrt(59 / 132) - math.sqrt(2 / 3)) ** 2
    )
    assert (r.outliers_x, r.outliers_y) == (1, 0)
    assert (r.outlier_step_skipped_x, r.outlier_step_skipped_y) == (False, True)
    assert r.fd == pytest.approx(expected, rel=1e-12)
    assert r.mir == pytest.approx(math.log10(expected), rel=1e-12)


# --- modality_integration_rate: references --------------------------------------------------


def test_isotropic_gaussians_closed_form():
    # Data with exactly known empirical moments: FD of the scaled data = s^2 * closed form.
    rng = np.random.default_rng(3)
    d = 5
    mu1, mu2 = np.full(d, 2.0), np.array([1.0, -1.0, 0.5, 3.0, 0.0])
    x = exact_moments(rng, 60, d, mu1, 0.8)
    y = exact_moments(rng, 70, d, mu2, 0.3)
    r = modality_integration_rate(x, y)
    assert (r.outliers_x, r.outliers_y) == (0, 0)
    s = 1 / np.linalg.norm(y, axis=1).mean()
    assert r.scale == pytest.approx(s, rel=1e-12)
    closed = ((mu1 - mu2) ** 2).sum() + d * (0.8 - 0.3) ** 2
    assert r.fd == pytest.approx(s**2 * closed, rel=1e-9)
    assert r.full_rank is True


@pytest.mark.parametrize("block_size", [1, 5, 16, 37, 64, None])
def test_blocked_equals_full_reference_with_outliers(block_size):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(37, 4)) + 1.0
    x[5] *= 40.0  # a far outlier in norm
    y = 3.0 * rng.normal(size=(41, 4))
    y[0] *= 25.0
    fd, out_x, out_y = reference_mir(x, y)
    r = modality_integration_rate(x, y, block_size=block_size)
    assert (r.outliers_x, r.outliers_y) == (out_x, out_y)
    assert out_x >= 1 and out_y >= 1
    assert r.fd == pytest.approx(fd, rel=1e-9)
    assert r.mir == pytest.approx(math.log10(fd), abs=1e-9)


def test_rank_deficient_is_finite_and_exact():
    # n <= d: singular covariances; compare with the nuclear-norm identity on scaled data.
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(8, 24)) + 0.3, rng.normal(size=(12, 24))
    r = modality_integration_rate(x, y)
    assert r.full_rank is False
    assert math.isfinite(r.mir) and r.fd >= 0.0
    s = 1 / np.linalg.norm(y, axis=1).mean()
    assert (r.outliers_x, r.outliers_y) == (0, 0)
    cx, cy = s * (x - x.mean(0)), s * (y - y.mean(0))
    nuclear = np.linalg.svd(cx @ cy.T, compute_uv=False).sum() / math.sqrt(7 * 11)
    expected = (
        s**2 * ((x.mean(0) - y.mean(0)) ** 2).sum()
        + (cx**2).sum() / 7
        + (cy**2).sum() / 11
        - 2 * nuclear
    )
    assert r.fd == pytest.approx(expected, rel=1e-12)


def test_identical_modalities_hit_the_floor():
    x = np.random.default_rng(6).normal(size=(50, 8))
    r = modality_integration_rate(x, x.copy())
    assert r.fd < FD_FLOOR
    assert r.mir == math.log10(FD_FLOOR) == -12.0


def test_global_scale_and_rotation_invariance():
    # Norms uniform in [0.9, 1.1] (x) and [2.7, 3.3] (y): the largest distance to the median
    # norm is below 3 std, so no row is replaced and rotation invariance is exact.
    rng = np.random.default_rng(7)
    x = unit_rows(rng, 40, 6) + 0.3
    x *= rng.uniform(0.9, 1.1, size=(40, 1)) / np.linalg.norm(x, axis=1, keepdims=True)
    y = unit_rows(rng, 50, 6) * rng.uniform(2.7, 3.3, size=(50, 1))
    base = modality_integration_rate(x, y)
    assert (base.outliers_x, base.outliers_y) == (0, 0)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    for xs, ys in [(1e3 * x, 1e3 * y), (1e-3 * x, 1e-3 * y), (x @ q, y @ q)]:
        r = modality_integration_rate(xs, ys)
        assert r.fd == pytest.approx(base.fd, rel=1e-9)
        assert r.mir == pytest.approx(base.mir, abs=1e-9)


# --- the skip rule for already-normalised encoders ------------------------------------------


def unit_rows(rng, n, d):
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_unit_normalised_rows_skip_the_outlier_step(dtype):
    rng = np.random.default_rng(8)
    x = unit_rows(rng, 300, 64).astype(dtype)
    y = unit_rows(rng, 200, 64).astype(dtype)
    r = modality_integration_rate(x, y)
    assert r.outlier_step_skipped_x and r.outlier_step_skipped_y
    assert (r.outliers_x, r.outliers_y) == (0, 0)


@pytest.mark.parametrize("compute", [torch.float32, torch.float16, torch.bfloat16])
def test_rows_normalised_in_low_precision_are_detected(compute):
    # Encoders often normalise under fp16/bf16 autocast and store float32: the norms then
    # differ from 1 by the compute precision's rounding (relative std ~2e-4 for fp16, ~2e-3
    # for bf16), which must still count as "already normalised".
    raw = torch.randn(256, 128, generator=torch.Generator().manual_seed(0))
    x = torch.nn.functional.normalize(raw.to(compute), dim=1).float()
    norms = x.double().norm(dim=1)
    assert float(norms.std() / norms.median()) > (1e-5 if compute != torch.float32 else 0.0)
    r = modality_integration_rate(x, x[:100])
    assert r.outlier_step_skipped_x and r.outlier_step_skipped_y
    assert (r.outliers_x, r.outliers_y) == (0, 0)
    expected = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
    assert r.rounding_x == expected[compute]
    n = norms.numpy()
    assert r.norm_spread_x == pytest.approx(float(np.abs(n / np.median(n) - 1).max()), rel=1e-6)
    # Scaled by 3 the values no longer sit on the format's grid, so the rows are tested; the
    # rounding spread is bounded (under 3 standard deviations), so no row is replaced.
    scaled = modality_integration_rate(x, x[:100] * 3.0)
    if compute != torch.float32:
        assert not scaled.outlier_step_skipped_y
    assert (scaled.outliers_x, scaled.outliers_y) == (0, 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_small_genuine_spread_is_tested(dtype):
    # Raw rows whose norms vary by about 0.1% (far above float32 rounding) and one row 38
    # standard deviations out: the outlier step must run and find it.
    rng = np.random.default_rng(12)
    x = unit_rows(rng, 2000, 16) * (1.0 + 1e-3 * rng.standard_normal((2000, 1)))
    x[5] *= 1.0 + 38e-3
    x = x.astype(dtype)
    r = modality_integration_rate(x, unit_rows(rng, 50, 16).astype(dtype))
    assert not r.outlier_step_skipped_x
    assert r.outlier_step_skipped_y
    assert r.outliers_x >= 1
    assert r.norm_spread_x > 0.03


def test_a_far_row_among_many_is_found():
    # 20,000 unit rows and one of twice the median norm: the old std-based rule hid it.
    rng = np.random.default_rng(13)
    x = unit_rows(rng, 20000, 8).astype(np.float32)
    x[123] *= 2.0
    r = modality_integration_rate(x, unit_rows(rng, 50, 8).astype(np.float32))
    assert not r.outlier_step_skipped_x
    assert r.outliers_x == 1
    assert r.rounding_x == "float32"


@pytest.mark.parametrize(
    ("values", "dtype", "expected"),
    [
        ([[1.0, 0.5], [0.25, 3.0]], np.float64, "bfloat16"),
        ([[1.0 + 2.0**-10, 0.5], [0.25, 3.0]], np.float64, "float16"),
        ([[1.0 + 2.0**-20, 0.5], [0.25, 3.0]], np.float64, "float32"),
        ([[1.0 + 2.0**-40, 0.5], [0.25, 3.0]], np.float64, "float64"),
        ([[1.0 + 2.0**-20, 7e4], [0.25, 3.0]], np.float32, "float32"),
        ([[1.0 + 2.0**-10, 0.5], [0.25, 3.0]], np.float16, "float16"),
        ([[2.0**17, 0.5], [0.25, 3.0]], np.float32, "bfloat16"),  # beyond float16 range
        ([[1.0 + 2.0**-10, 0.5], [0.25, 3.0]], np.float32, "float16"),
        ([[1.0, 0.5], [0.25, 3.0]], np.float16, "bfloat16"),
        ([[1.0 + 2.0**-7, -0.5], [0.25, 3.0]], np.float16, "bfloat16"),
        ([[1.0 + 2.0**-8, 0.5], [0.25, 3.0]], np.float16, "float16"),
        # float16 subnormals: 3 * 2^-24 has two significant bits, 1023 * 2^-24 ten.
        ([[3 * 2.0**-24, 0.5], [0.25, 3.0]], np.float16, "bfloat16"),
        ([[1023 * 2.0**-24, 0.5], [0.25, 3.0]], np.float16, "float16"),
    ],
)
def test_the_rounding_format_is_the_narrowest_that_holds_every_value(values, dtype, expected):
    r = modality_integration_rate(np.array(values, dtype=dtype), np.array(values, dtype=dtype))
    assert (r.rounding_x, r.rounding_y) == (expected, expected)


@pytest.mark.parametrize(
    ("dtype", "spread"),
    [(np.float32, 0.05), (np.float32, 0.01), (np.float16, 0.05), (np.float64, 0.02)],
)
def test_spread_norms_are_tested_for_outliers(dtype, spread):
    rng = np.random.default_rng(9)
    x = (unit_rows(rng, 300, 32) * rng.lognormal(0.0, spread, size=(300, 1))).astype(dtype)
    x[7] *= 1.0 + 10 * spread  # 10 sigma out
    y = unit_rows(rng, 100, 32).astype(dtype)
    r = modality_integration_rate(x, y)
    assert not r.outlier_step_skipped_x
    assert r.outlier_step_skipped_y
    assert r.outliers_x >= 1


@pytest.mark.parametrize(("n", "outliers"), [(8, 0), (12, 1)])
def test_three_sigma_rule_uses_sample_std(n, outliers):
    # n - 1 rows of norm 1 and one of norm 1 + D: median 1, and the std with ddof = 1 is
    # D / sqrt(n). So the far row is an outlier iff D > 3 D / sqrt(n), i.e. n > 9: n = 8 keeps
    # it (the population std, D sqrt(n-1) / n, would flag it), n = 12 replaces it.
    rng = np.random.default_rng(11)
    x = unit_rows(rng, n, 3)
    x[-1] *= 3.0  # D = 2
    r = modality_integration_rate(x, unit_rows(rng, 5, 3))
    assert not r.outlier_step_skipped_x
    assert r.outliers_x == outliers


# --- inputs and outputs ---------------------------------------------------------------------


def test_memmap_torch_and_determinism(tmp_path):
    rng = np.random.default_rng(10)
    x16 = (rng.normal(size=(40, 6)) + 1.0).astype(np.float16)
    y16 = rng.normal(size=(45, 6)).astype(np.float16)
    np.save(tmp_path / "x.npy", x16)
    xm = np.load(tmp_path / "x.npy", mmap_mode="r")
    a = modality_integration_rate(xm, torch.from_numpy(y16), block_size=7)
    fd, out_x, out_y = reference_mir(x16, y16)
    assert a.fd == pytest.approx(fd, rel=1e-9)
    b = modality_integration_rate(xm, torch.from_numpy(y16), block_size=7)
    assert a == b
    assert isinstance(a, MIRResult)
    for name in ("mir", "fd", "scale"):
        assert type(getattr(a, name)) is float
    for name in ("outliers_x", "outliers_y"):
        assert type(getattr(a, name)) is int
    for name in ("outlier_step_skipped_x", "outlier_step_skipped_y", "full_rank"):
        assert type(getattr(a, name)) is bool


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        (np.ones((1, 3)), np.ones((3, 3)), "at least 2"),
        (np.ones((3, 3)), np.ones((1, 3)), "at least 2"),
        (np.array([[np.nan, 1.0], [1.0, 1.0]]), np.ones((2, 2)), "NaN"),
        (np.ones((2, 2)), np.array([[1.0, 1.0], [0.0, 0.0]]), "zero vector"),
        (np.ones(4), np.ones((2, 4)), "2-D"),
        (np.ones((3, 2)), np.ones((3, 3)), "dim"),
    ],
)
def test_bad_input_raises(x, y, match):
    with pytest.raises(EmbeddingError, match=match):
        modality_integration_rate(x, y)


def test_given_norms_give_the_same_result_and_are_checked():
    # An analysis reads each modality's raw norms once (for the report's mean raw norm too)
    # and hands them to MIR: the result must be the one MIR computes on its own.
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 6)) * rng.uniform(0.5, 2.0, size=(300, 1))
    y = rng.normal(size=(280, 6)).astype(np.float32)
    norms = (raw_norms(x), raw_norms(y, block_size=7))
    assert norms[1].rounding == "float32" and norms[0].rounding == "float64"
    assert np.allclose(norms[0].norms, np.linalg.norm(x, axis=1), rtol=1e-15, atol=0)
    assert modality_integration_rate(x, y, norms=norms) == modality_integration_rate(x, y)
    with pytest.raises(GapscopeError, match="norms: x has 300 rows but 280"):
        modality_integration_rate(x, y, norms=(norms[1], norms[1]))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_mir_of_fortran_ordered_rows_is_that_of_the_same_rows_in_c_order(dtype):
    # Every block is read into one C-ordered float64 buffer: the layout of the input changes
    # no bit, and the caller's rows (with outliers, so the medians run) are left as they were.
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 6)).astype(dtype)
    y = (rng.normal(size=(300, 6)) + 0.5).astype(dtype)
    x[7] *= 40
    y[11] *= 40
    fx, fy = np.asfortranarray(x), np.asfortranarray(y)
    before = (fx.copy(), fy.copy())
    c_order, fortran = modality_integration_rate(x, y), modality_integration_rate(fx, fy)
    assert fortran.outliers_x >= 1 and fortran.outliers_y >= 1
    assert fortran.fd == c_order.fd and fortran.mir == c_order.mir
    np.testing.assert_array_equal(fx, before[0])
    np.testing.assert_array_equal(fy, before[1])


# --- moments made in another read (an analysis's validating read) --------------------------


def _count_reads(monkeypatch) -> list[int]:
    """A list that grows by one each time MIR reads a modality's rows for its moments."""
    import gapscope.metrics.mir as mir

    reads: list[int] = []
    original = mir._mean_cov
    monkeypatch.setattr(mir, "_mean_cov", lambda *a: reads.append(1) or original(*a))
    return reads


def _scanned(a: np.ndarray, slice_rows: int) -> RawMoments:
    scan = RawMomentsScan(a.shape[1])
    for start in range(0, a.shape[0], slice_rows):
        wide = np.asarray(a[start : start + slice_rows], dtype=np.float64)
        scan.fold(wide.shape[0], scan.make(wide, float(row_norms(wide).max())))
    return scan.result()


@pytest.mark.parametrize("slice_rows", [1, 7, 50, 1000])
def test_raw_moments_of_slices_of_any_magnitude_match_the_whole_matrix(slice_rows):
    # Slices a power of two apart (2^-900 .. 2^900: squares would overflow or vanish in
    # float64), merged in the units of the largest: the mean and scatter of the whole matrix
    # (numpy, on the same rows brought to one scale exactly), to rounding.
    rng = np.random.default_rng(8)
    base = rng.normal(size=(240, 5)) + np.array([3.0, -1.0, 0.0, 0.5, 2.0])
    powers = np.repeat(rng.choice([-900, -3, 0, 2, 900], size=24), 10)
    rows = np.ldexp(base, powers[:, None])
    got = _scanned(rows, slice_rows)
    assert got.rows == 240 and got.exponent == int(np.frexp(row_norms(rows).max())[1]) > 900
    units = np.ldexp(rows, -got.exponent)  # exact but for the rows 2^-1800 down (far below)
    mean = units.mean(axis=0)
    scatter = (units - mean).T @ (units - mean)
    np.testing.assert_allclose(got.mean, mean, rtol=1e-13, atol=1e-300)
    np.testing.assert_allclose(got.scatter, scatter, rtol=1e-12, atol=1e-13 * np.abs(scatter).max())


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("case", ["no outliers", "outliers", "a far outlier", "1e300"])
def test_mir_from_moments_made_elsewhere_is_mir_of_the_rows(monkeypatch, dtype, case):
    # The covariance scaled from moments made in another read, the outlier rows taken out of
    # them and the median row put in, agrees with reading the rows to rounding; only a far
    # outlier (most of the scatter), where taking it out would cancel digits, reads again.

    rng = np.random.default_rng(6)
    x = rng.normal(size=(600, 8)) * rng.uniform(0.5, 2.0, size=8) + 2.0
    y = rng.normal(size=(500, 8)) + 1.0
    if case == "no outliers":  # norms spread evenly: none 3 standard deviations out
        x *= rng.uniform(0.9, 1.1, size=(600, 1)) / np.linalg.norm(x, axis=1, keepdims=True)
        y *= rng.uniform(0.9, 1.1, size=(500, 1)) / np.linalg.norm(y, axis=1, keepdims=True)
    else:
        x[::61] *= 1.9
        y[::97] *= 2.2
    if case == "a far outlier":
        x[3] *= 1e3
    if case == "1e300" and dtype == np.float64:
        x, y = x * 1e300, y * 1e300
    x, y = x.astype(dtype), y.astype(dtype)
    reads = _count_reads(monkeypatch)
    plain = modality_integration_rate(x, y)
    assert len(reads) == 2
    reads.clear()
    made = modality_integration_rate(x, y, moments=(_scanned(x, 64), _scanned(y, 64)))
    assert reads == ([1] if case == "a far outlier" else [])
    assert (made.outliers_x, made.outliers_y) == (plain.outliers_x, plain.outliers_y)
    assert (plain.outliers_x > 0) == (case != "no outliers")
    assert made.fd == pytest.approx(plain.fd, rel=1e-12)
    assert made.mir == pytest.approx(plain.mir, abs=1e-12)
    assert made.scale == plain.scale


def test_moments_of_other_rows_are_refused():
    x = np.random.default_rng(1).normal(size=(30, 4))
    with pytest.raises(GapscopeError, match="moments: y has 30 rows of 4 values"):
        modality_integration_rate(x, x, moments=(None, _scanned(x[:20], 8)))


@pytest.mark.parametrize("magnitude", ["subnormal", "norm beyond float64", "mixed in a slice"])
def test_moments_of_rows_at_the_edges_of_float64(monkeypatch, magnitude):
    # Rows whose largest norm is subnormal (its power of two, 2^1026, is inf), whose norm
    # overflows (the power comes from the largest entry; y as large, so that the scaled rows
    # are not), or a slice holding rows 1e100 apart: the moments give the MIR of reading the
    # rows, and (norms spread evenly: no outliers) without reading them.

    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 4)) + 1.0
    x *= rng.uniform(0.9, 1.1, size=(300, 1)) / np.linalg.norm(x, axis=1, keepdims=True)
    y = rng.normal(size=(300, 4)) - 0.5
    y *= rng.uniform(0.9, 1.1, size=(300, 1)) / np.linalg.norm(y, axis=1, keepdims=True)
    if magnitude == "subnormal":
        x *= 1e-309
    elif magnitude == "norm beyond float64":
        x = rng.uniform(1.0, 2.0, size=(300, 4)) * 1e307
        x[::7] = 1.5e308
        y *= 1e300
    else:
        x[::2] *= 1e100
    reads = _count_reads(monkeypatch)
    # Norms beyond float64 are inf, and their spread nan, in both ways (MIR's outlier test).
    with np.errstate(over="ignore", invalid="ignore"):
        plain = modality_integration_rate(x, y)
        reads.clear()
        made = modality_integration_rate(x, y, moments=(_scanned(x, 64), _scanned(y, 64)))
    if magnitude != "norm beyond float64":
        assert plain.outliers_x == plain.outliers_y == 0 and not reads
    assert np.isfinite(made.fd)
    assert made.fd == pytest.approx(plain.fd, rel=1e-12)


def test_outliers_that_hold_one_coordinate_are_not_taken_out_of_the_moments(monkeypatch):
    # 20 outlier rows hold all of the second coordinate's scatter but under half of the
    # trace: taking them out of the moments would leave that coordinate's 2e-8 spread to
    # rounding (FD off by about 6e-8 relative), so the rows are read again.

    n = 20000
    rng = np.random.default_rng(0)
    x = np.c_[5 + rng.normal(size=n), 2e-8 * rng.normal(size=n)]
    x[:: n // 20, 1] = 28.0 * rng.choice([-1, 1], size=20)
    y = np.c_[5 + rng.normal(size=n), rng.normal(size=n)]
    raw = _scanned(x, 4096)
    reads = _count_reads(monkeypatch)
    made = modality_integration_rate(x, y, moments=(raw, None))
    assert reads == [1, 1]  # x read again, y (no moments given) read
    assert made.outliers_x >= 20
    assert made.fd == pytest.approx(modality_integration_rate(x, y).fd, rel=1e-12)


@pytest.mark.parametrize("case", ["outliers", "a far outlier"])
def test_medians_made_with_the_moments_are_used_as_read(monkeypatch, case):
    # Moments that carry the coordinate-wise medians (counted in the read that made them):
    # MIR takes them, whether it corrects the moments or reads the rows again (a far
    # outlier), and gives the bits of taking the medians itself.
    import gapscope.metrics.mir as mir

    rng = np.random.default_rng(9)
    x = (rng.normal(size=(600, 8)) + 2.0).astype(np.float16)
    y = (rng.normal(size=(500, 8)) + 1.0).astype(np.float16)
    x[::61] *= 1.9
    if case == "a far outlier":
        x[3] *= 1e3
    moments = (_scanned(x, 64), _scanned(y, 64))
    itself = modality_integration_rate(x, y, moments=moments)
    taken = []
    monkeypatch.setattr(mir, "column_medians", lambda a: taken.append(1))
    counted = tuple(
        m._replace(medians=np.median(a.astype(np.float64), axis=0))
        for m, a in zip(moments, (x, y), strict=True)
    )
    made = modality_integration_rate(x, y, moments=counted)
    assert not taken and made.outliers_x > 0
    assert (made.fd, made.mir) == (itself.fd, itself.mir)


def test_norms_may_vary_from_the_first_rows():
    rng = np.random.default_rng(4)
    raw = rng.normal(size=(256, 64)) + 0.1
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    # Raw encoder rows spread their norms by percents; normalised rows, rounded to float16
    # or bfloat16 (float32 with the low 16 bits cleared), lie within rounding.
    assert norms_may_vary(raw) and norms_may_vary(raw.astype(np.float16))
    assert not norms_may_vary(unit) and not norms_may_vary(unit.astype(np.float16))
    bf16 = (unit.astype(np.float32).view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)
    assert not norms_may_vary(bf16)
    # Norms 1% apart vary; rows that validation will refuse (zero, NaN) are counted on.
    assert norms_may_vary(unit * np.r_[1.01, np.ones(255)][:, None])
    assert norms_may_vary(np.vstack([unit[:3], np.zeros((1, 64))]))
    assert norms_may_vary(np.vstack([unit[:3], np.full((1, 64), np.nan)]))
    assert not norms_may_vary(unit[:0])


def test_scales_beyond_float64_are_refused_in_one_line():
    """y's mean norm too small to invert, and modalities 1e300 apart (covariances that
    overflow): an EmbeddingError naming the side, with no warning on the way. A scale
    float64 covers is still exact (the 1e-300 case)."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 4)), rng.normal(size=(40, 4)) + 1.0
    reference = modality_integration_rate(x, y).fd
    assert modality_integration_rate(x * 1e-300, y * 1e-300).fd == pytest.approx(reference)
    cases = [(x * 1e-310, y * 1e-310, "y: the mean row norm 2.6.e-310 is too small")]
    cases += [(x * 1e300, y, "x: its covariance"), (x, y * 1e-300, "x: its covariance")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for first, second, message in cases:
            with pytest.raises(EmbeddingError, match=message):
                modality_integration_rate(first, second)
        # x 1e-300 times as long as y: its covariance underflows, and rightly counts for
        # nothing beside y's spread and mean (FD of y's Gaussian against a point at 0).
        far = modality_integration_rate(x, y * 1e300)
    unit = y / np.linalg.norm(y, axis=1).mean()
    expected = np.sum(unit.mean(axis=0) ** 2) + np.trace(np.cov(unit, rowvar=False))
    assert far.fd == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("power", [-500, -300, -40, 40, 300, 500])
def test_frechet_distance_far_from_unit_scale(power):
    """FD(s x, s y) = s^2 FD(x, y) bit for bit for a power of two s, where the products of
    three covariances at that scale would overflow or underflow; an FD beyond float64 is
    refused."""
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(2, 5, 5))
    mean_x, cov_x, mean_y, cov_y = rng.normal(size=5), a @ a.T, rng.normal(size=5), b @ b.T
    s = 2.0**power
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scaled = frechet_distance(mean_x * s, cov_x * s * s, mean_y * s, cov_y * s * s)
        assert scaled == np.ldexp(frechet_distance(mean_x, cov_x, mean_y, cov_y), 2 * power)
        same = frechet_distance(mean_x * s, cov_x * s * s, mean_x * s, cov_x * s * s)
        assert same <= 1e-12 * np.trace(cov_x) * s * s


def test_frechet_distance_beyond_float64_is_refused():
    with pytest.raises(EmbeddingError, match="must be finite"):
        frechet_distance(np.zeros(2), np.full((2, 2), np.inf), np.zeros(2), np.eye(2))
    with pytest.raises(EmbeddingError, match="beyond float64"):
        frechet_distance(np.full(2, 1e200), np.eye(2), np.full(2, -1e200), np.eye(2))
