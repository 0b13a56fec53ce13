"""Outlying rows of MIR's reference modality set its scale (the paper takes the scale before
it replaces outliers): the result says what MIR would read with the scale from the other rows,
checked against the reference implementation given that scale, and the report notes it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import reference as ref

from gapscope import analyze
from gapscope.metrics.mir import modality_integration_rate


def _pair(seed: int = 0, n: int = 300, d: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) + 0.8
    y = rng.normal(size=(n, d))
    return x, y


def _outliers(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1)
    return np.abs(norms - np.median(norms)) > 3 * norms.std(ddof=1)


@pytest.mark.parametrize("factor", [30.0, 1e3])
def test_mir_without_reference_outliers_matches_the_reference_at_that_scale(factor):
    x, y = _pair()
    y[5] *= factor
    r = modality_integration_rate(x, y)
    bad = _outliers(y)
    assert bad.sum() == r.outliers_y == 1
    kept = 1.0 / np.linalg.norm(y[~bad], axis=1).mean()
    assert r.scale_without_outliers == pytest.approx(kept, rel=1e-12)
    assert r.mir == pytest.approx(ref.mir(x, y), abs=1e-8)
    assert r.mir_without_reference_outliers() == pytest.approx(ref.mir(x, y, scale=kept), abs=1e-8)


def test_without_reference_outliers_there_is_nothing_to_say():
    x, y = _pair(seed=1)
    y = 2.0 * y / np.linalg.norm(y, axis=1, keepdims=True)  # one norm: no outlier in y
    x[3] *= 1e3  # an outlier of the other modality is replaced; it does not set the scale
    r = modality_integration_rate(x, y)
    assert r.outliers_x == 1 and r.outliers_y == 0
    assert r.scale_without_outliers == r.scale
    assert r.mir_without_reference_outliers() is None
    report = analyze({"image": x, "text": y}, metrics="mir", device="cpu")
    assert not [n for n in report.notes if "of outlying norm" in n]


def test_the_report_notes_a_reference_outlier_and_what_mir_would_read():
    x, y = _pair(seed=2)
    y[7] *= 1e3
    report = analyze({"image": x, "text": y}, metrics="mir", device="cpu")
    r = modality_integration_rate(x, y)
    without = r.mir_without_reference_outliers()
    want = f"with the scale from the other rows MIR would read {without:.4g}"
    notes = [n for n in report.notes if "of outlying norm" in n]
    assert len(notes) == 1, report.notes
    assert notes[0].startswith("MIR (image-text): 1 text row of outlying norm set its scale")
    assert want in notes[0]
    assert report.pairs["image-text"]["mir"] == pytest.approx(r.mir, abs=1e-9)


def test_a_huge_reference_row_puts_mir_at_its_floor_and_says_so():
    x, y = _pair(seed=3)
    y[0] *= 1e150
    report = analyze({"image": x, "text": y}, metrics="mir", device="cpu")
    assert report.pairs["image-text"]["mir"] == -12.0
    notes = [n for n in report.notes if "of outlying norm" in n]
    assert len(notes) == 1 and "MIR reads its floor (-12) because of them" in notes[0]


def test_a_small_shift_is_not_noted():
    # A mild outlier among many rows moves the mean norm by far less than 1%.
    x, y = _pair(seed=4, n=20_000)
    y[0] *= 2.5
    r = modality_integration_rate(x, y)
    assert r.outliers_y >= 1
    assert abs(2 * math.log10(r.scale_without_outliers / r.scale)) < 0.01
    report = analyze({"image": x, "text": y}, metrics="mir", device="cpu")
    assert not [n for n in report.notes if "of outlying norm" in n]
