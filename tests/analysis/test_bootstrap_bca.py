"""BCa bootstrap intervals: the formula by hand, scipy's BCa as an independent reference, the
jackknife totals against the resampling path, the report's parameter and note, and the gate's
warning for intervals of two kinds."""

from __future__ import annotations

import json
from statistics import NormalDist

import numpy as np
import pytest
from helpers import paired_set
from scipy import stats
from typer.testing import CliRunner

from gapscope import analyze
from gapscope.analysis.bootstrap import (
    GroupTotals,
    bca_interval,
    bootstrap_intervals,
    percentile_interval,
)
from gapscope.cli import app
from gapscope.errors import GapscopeError
from gapscope.gate.check import baseline_analysis_params
from gapscope.gate.reports import comparability_warnings
from gapscope.report.model import Report

runner = CliRunner()


def test_bca_interval_follows_the_formula_by_hand():
    rng = np.random.default_rng(0)
    values = rng.gamma(2.0, size=999)
    estimate = 1.7
    jackknife = rng.normal(size=40) ** 3
    normal = NormalDist()
    below = np.count_nonzero(values < estimate) + np.count_nonzero(values <= estimate)
    z0 = normal.inv_cdf(below / (2 * values.size))
    spread = jackknife.mean() - jackknife
    a = (spread**3).sum() / (6 * ((spread**2).sum()) ** 1.5)
    levels = [
        normal.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))
        for z in (normal.inv_cdf(0.05), normal.inv_cdf(0.95))
    ]
    want = tuple(float(q) for q in np.quantile(values, levels))
    assert bca_interval(values, estimate, jackknife, 0.9) == pytest.approx(want, abs=1e-15)


def test_bca_is_the_percentile_interval_without_bias_or_skew():
    values = np.arange(1001.0)
    # The estimate at the median (z0 = 0) and a symmetric jackknife (a = 0).
    # Phi(Phi^-1(0.95)) is 0.95 up to rounding.
    assert bca_interval(values, 500.0, np.array([-1.0, 0.0, 1.0]), 0.9) == pytest.approx(
        percentile_interval(values, 0.9), abs=1e-9
    )
    # Every value equal to the estimate: each counts half, z0 = 0, a point interval.
    assert bca_interval(np.full(50, 0.25), 0.25, np.full(7, 0.25), 0.95) == (0.25, 0.25)


@pytest.mark.parametrize(
    ("values", "estimate", "why"),
    [
        (np.arange(10.0), -1.0, "every value above the estimate"),
        (np.arange(10.0), 9.5, "every value below the estimate"),
        (np.arange(10.0), float("nan"), "an undefined estimate"),
        (np.r_[np.arange(4.0), np.full(6, np.nan)], 2.0, "fewer than half defined"),
    ],
)
def test_bca_interval_is_null_where_it_is_undefined(values, estimate, why):
    assert bca_interval(values, estimate, np.arange(5.0), 0.9) is None, why


def test_undefined_jackknife_values_are_left_out_of_the_acceleration():
    values = np.random.default_rng(1).normal(size=500)
    jackknife = np.array([0.1, 0.5, -0.2, 2.0])
    with_nan = np.r_[jackknife, np.nan, np.nan]
    assert bca_interval(values, 0.1, with_nan, 0.9) == bca_interval(values, 0.1, jackknife, 0.9)


@pytest.mark.parametrize(("n", "confidence"), [(25, 0.9), (25, 0.95), (40, 0.95)])
def test_bca_of_a_skewed_mean_agrees_with_scipy(n, confidence):
    """scipy.stats.bootstrap(method="BCa") on its own draws: the bounds agree within 3% of the
    interval's width, where the percentile interval is off by more than twice that."""
    x = np.random.default_rng(3 + n).exponential(size=n) ** 2
    totals = GroupTotals(n)
    totals.add("x", x)
    totals.add("n", np.ones(n))
    mean = {"mean": lambda t: t["x"] / t["n"]}
    ours = bootstrap_intervals(totals, mean, n_resamples=40_000, seed=1, confidence=confidence)
    plain = bootstrap_intervals(
        totals, mean, n_resamples=40_000, seed=1, confidence=confidence, interval="percentile"
    )
    reference = stats.bootstrap(
        (x,),
        np.mean,
        method="BCa",
        n_resamples=40_000,
        confidence_level=confidence,
        random_state=np.random.default_rng(0),
    ).confidence_interval
    width = reference.high - reference.low
    assert ours["mean"] == pytest.approx((reference.low, reference.high), abs=0.03 * width)
    assert abs(plain["mean"][1] - reference.high) > 0.06 * width


def test_jackknife_totals_equal_the_resampled_totals_of_leave_one_out_weights():
    rng = np.random.default_rng(5)
    g = 9
    totals = GroupTotals(g)
    totals.add("vec", rng.normal(size=(g, 4)))
    totals.add("count", rng.integers(0, 3, size=g).astype(float), squared=True)
    groups = rng.integers(0, g, size=30)
    totals.add_by_column("table", groups, rng.integers(0, 5, size=30), rng.random(30), 5)
    weights = np.ones((g, g)) - np.eye(g)
    want = totals.resampled(weights)
    for start, stop in ((0, g), (2, 5), (8, 9)):
        got = totals.left_out(start, stop)
        assert set(got) == set(want)
        for name, value in got.items():
            np.testing.assert_allclose(value, want[name][start:stop], rtol=0, atol=1e-12)
    whole = totals.resampled(np.ones((1, g)))
    for name, value in totals.whole().items():
        np.testing.assert_allclose(value, whole[name], rtol=0, atol=1e-12)


def test_jackknife_chunks_do_not_change_the_interval(monkeypatch):
    import gapscope.analysis.bootstrap as bootstrap_module

    data = paired_set(n=60, captions=2, seed=2)
    whole = analyze(data, metrics="gap,cosine,cone", bootstrap=50, device="cpu").to_json()
    monkeypatch.setattr(bootstrap_module, "_CHUNK_ENTRIES", 64)
    assert analyze(data, metrics="gap,cosine,cone", bootstrap=50, device="cpu").to_json() == whole


def test_report_records_the_kind_and_says_it_in_the_note():
    data = paired_set(n=40, captions=1, seed=3)
    bca = analyze(data, metrics="gap,retrieval", bootstrap=40, device="cpu")
    plain = analyze(
        data, metrics="gap,retrieval", bootstrap=40, interval="percentile", device="cpu"
    )
    assert bca.params["interval"] == "bca" and plain.params["interval"] == "percentile"
    assert any("BCa (bias-corrected and accelerated) bootstrap" in n for n in bca.notes)
    assert any("percentile bootstrap" in n for n in plain.notes)
    # The same draws, other bounds; the point values are the same.
    assert bca.pairs["image-text"]["gap_ci"] != plain.pairs["image-text"]["gap_ci"]
    assert bca.pairs["image-text"]["gap"] == plain.pairs["image-text"]["gap"]
    assert "interval" not in analyze(data, metrics="gap", device="cpu").params
    with pytest.raises(GapscopeError, match="interval: expected one of bca, percentile"):
        analyze(data, metrics="gap", bootstrap=20, interval="bc", device="cpu")


def test_cli_interval_option(tmp_path):
    data = paired_set(n=30, captions=1, seed=4)
    np.save(tmp_path / "image.npy", data.embeddings["image"])
    np.save(tmp_path / "text.npy", data.embeddings["text"])
    base = ["analyze", "--image", str(tmp_path / "image.npy"), "--text"]
    base += [str(tmp_path / "text.npy"), "--metrics", "gap", "--bootstrap", "20", "-f", "json"]
    result = runner.invoke(app, [*base, "--interval", "percentile"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["params"]["interval"] == "percentile"
    bad = runner.invoke(app, [*base, "--interval", "student"])
    assert bad.exit_code == 2
    assert "interval: expected one of bca, percentile, got 'student'" in bad.output


def test_gate_warns_for_intervals_of_two_kinds_and_repeats_the_baselines_kind():
    data = paired_set(n=40, captions=1, seed=6)
    bca = analyze(data, metrics="gap", bootstrap=30, device="cpu").to_dict()
    plain = analyze(data, metrics="gap", bootstrap=30, interval="percentile", device="cpu")
    warnings = comparability_warnings(plain.to_dict(), bca)
    assert any(
        "intervals are of different kinds (percentile in the baseline, bca now)" in w
        for w in warnings
    )
    assert comparability_warnings(bca, bca) == []
    # A report made before BCa intervals has none recorded: its intervals were percentile.
    older = json.loads(json.dumps(bca))
    del older["params"]["interval"]
    assert any("different kinds" in w for w in comparability_warnings(older, bca))
    assert baseline_analysis_params(Report.from_dict(older))["interval"] == "percentile"
    assert baseline_analysis_params(Report.from_dict(bca))["interval"] == "bca"
    no_intervals = analyze(data, metrics="gap", device="cpu")
    assert baseline_analysis_params(no_intervals, bootstrap=50)["interval"] == "bca"
    assert baseline_analysis_params(None)["interval"] == "bca"
