"""Property tests: the metrics do not change under transformations that should not matter.

A shared rotation of both modalities, a consistent permutation of rows (with their groups) and
positive per-row scaling must leave every normalised-row metric unchanged. MIR works on raw rows,
so it is checked against a shared global scale, a shared rotation and row permutations instead.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gapscope.metrics.alignment import alignment
from gapscope.metrics.cone import cone_effect
from gapscope.metrics.cosine import paired_cosine
from gapscope.metrics.gap import modality_gap
from gapscope.metrics.mir import modality_integration_rate
from gapscope.metrics.uniformity import uniformity

SETTINGS = settings(max_examples=25, deadline=None)

# float64 metrics agree to rounding; uniformity multiplies float32 rows.
TOL = {"default": 1e-9, "uniformity_x": 1e-5, "uniformity_y": 1e-5}


@st.composite
def embeddings(draw):
    """Two modalities with a shared offset, groups (or 1:1 rows) and a seeded generator."""
    seed = draw(st.integers(0, 2**32 - 1))
    one_to_one = draw(st.booleans())
    n = draw(st.integers(2, 12))
    m = n if one_to_one else draw(st.integers(2, 12))
    d = draw(st.integers(2, 6))
    rng = np.random.default_rng(seed)
    offset = rng.normal(size=d)
    x = rng.normal(size=(n, d)) + offset
    y = rng.normal(size=(m, d)) - 0.5 * offset
    if one_to_one:
        return x, y, None, None, rng
    k = draw(st.integers(1, 4))
    gx = rng.integers(0, k, size=n)
    gy = rng.integers(0, k, size=m)
    gy[0] = gx[0]  # at least one positive pair
    return x, y, gx, gy, rng


def orthogonal(rng, d):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def metrics(x, y, gx, gy, *, with_shares=True):
    g = modality_gap(x, y)
    c = paired_cosine(x, y, gx, gy)
    out = {
        "gap": g.gap,
        "centroid_norm_x": g.centroid_norm_x,
        "centroid_norm_y": g.centroid_norm_y,
        "paired": c.paired,
        "unpaired": c.unpaired,
        "n_pairs": c.n_pairs,
        "cone_x": cone_effect(x),
        "cone_y": cone_effect(y),
        "uniformity_x": uniformity(x, block_size=5),
        "uniformity_y": uniformity(y, block_size=3),
        "alignment": alignment(x, y, gx, gy),
        "alignment_1": alignment(x, y, gx, gy, alpha=1.0),
    }
    # The centroid cosine is ill-conditioned when a centroid is (nearly) zero.
    if min(g.centroid_norm_x, g.centroid_norm_y) > 1e-6:
        out["centroid_cosine"] = g.centroid_cosine
    if with_shares:  # coordinate shares depend on the basis, so not under rotation
        out["top1_share"] = g.top1_share
        out["top10_share"] = g.top10_share
    return out


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        if value is None or isinstance(value, int):
            assert b[key] == value, key
        else:
            assert b[key] == pytest.approx(value, abs=TOL.get(key, TOL["default"])), key


@SETTINGS
@given(embeddings())
def test_shared_rotation(data):
    x, y, gx, gy, rng = data
    q = orthogonal(rng, x.shape[1])
    base = metrics(x, y, gx, gy, with_shares=False)
    rotated = metrics(x @ q, y @ q, gx, gy, with_shares=False)
    assert_same(base, rotated)


@SETTINGS
@given(embeddings())
def test_consistent_row_permutation(data):
    x, y, gx, gy, rng = data
    px, py = rng.permutation(len(x)), rng.permutation(len(y))
    if gx is None:  # 1:1 rows: the same permutation on both keeps row i with row i
        py = px
        pgx = pgy = None
    else:
        pgx, pgy = gx[px], gy[py]
    assert_same(metrics(x, y, gx, gy), metrics(x[px], y[py], pgx, pgy))


@SETTINGS
@given(embeddings(), st.data())
def test_positive_row_scaling(data, draw):
    x, y, gx, gy, rng = data
    exponents = st.lists(st.floats(-3, 3), min_size=len(x) + len(y), max_size=len(x) + len(y))
    factors = 10.0 ** np.array(draw.draw(exponents))
    sx, sy = factors[: len(x), None], factors[len(x) :, None]
    assert_same(metrics(x, y, gx, gy), metrics(x * sx, y * sy, gx, gy))


def mir_values(x, y):
    r = modality_integration_rate(x, y)
    return r, (
        r.fd,
        r.outliers_x,
        r.outliers_y,
        r.outlier_step_skipped_x,
        r.outlier_step_skipped_y,
        r.full_rank,
    )


def assert_same_mir(a, b):
    assert a[1:] == b[1:]
    assert b[0] == pytest.approx(a[0], rel=1e-7, abs=1e-12)


@SETTINGS
@given(embeddings(), st.floats(-3, 3))
def test_mir_shared_global_scale(data, exponent):
    x, y, _, _, _ = data
    c = 10.0**exponent
    base, a = mir_values(x, y)
    scaled, b = mir_values(c * x, c * y)
    assert_same_mir(a, b)
    assert scaled.scale == pytest.approx(base.scale / c, rel=1e-12)
    if base.fd > 1e-9:
        assert scaled.mir == pytest.approx(base.mir, abs=1e-6)
    assert math.isfinite(scaled.mir)


@SETTINGS
@given(embeddings())
def test_mir_shared_rotation(data):
    x, y, _, _, rng = data
    base, a = mir_values(x, y)
    # The coordinate-wise median row is not rotation-equivariant, so only without outliers.
    assume(base.outliers_x == 0 and base.outliers_y == 0)
    q = orthogonal(rng, x.shape[1])
    _, b = mir_values(x @ q, y @ q)
    assert_same_mir(a, b)


@SETTINGS
@given(embeddings())
def test_mir_row_permutation(data):
    x, y, _, _, rng = data
    _, a = mir_values(x, y)
    _, b = mir_values(x[rng.permutation(len(x))], y[rng.permutation(len(y))])
    assert_same_mir(a, b)
