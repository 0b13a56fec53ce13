"""Edge cases of the bootstrap intervals: undefined resamples, parameter limits, memory bounds."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
from typer.testing import CliRunner

import gapscope.analysis.bootstrap as bootstrap_module
from gapscope import analyze
from gapscope.analysis.bootstrap import (
    MAX_RESAMPLES,
    GroupTotals,
    bootstrap_intervals,
    check_bootstrap_params,
    resample_weights,
)
from gapscope.cli import app
from gapscope.errors import GapscopeError
from gapscope.report import report_schema
from gapscope.report.model import SIGNIFICANT_DIGITS

runner = CliRunner()


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def oracle_interval(values: list[float], n_resamples: int, confidence: float):
    """The percentile interval of the defined resampled values; None when most are undefined."""
    if 2 * len(values) < n_resamples:
        return None
    low, high = np.quantile(values, [(1 - confidence) / 2, (1 + confidence) / 2])
    return [float(low), float(high)]


# ------------------------------------------------------------------ undefined resamples


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_resamples_of_one_distinct_row_are_left_out_not_clipped_to_one(seed):
    """Three rows, each its own group: one resample in nine draws a single distinct row, which
    has no unpaired pair and no pair of distinct rows, so its unpaired cosine and cone are
    undefined. Rebuild every resample from the same draws, compute both metrics from scratch on
    the rows it selects, leave the undefined ones out and take the quantiles."""
    rng = np.random.default_rng(seed)
    image, text = rng.normal(size=(3, 8)), rng.normal(size=(3, 8))
    n_resamples, confidence = 200, 0.95
    report = analyze(
        {"image": image, "text": text},
        metrics="cosine,cone",
        bootstrap=n_resamples,
        seed=seed,
        confidence=confidence,
        interval="percentile",
        device="cpu",
    )
    x, y = unit(image), unit(text)
    unpaired: list[float] = []
    cones: dict[str, list[float]] = {"image": [], "text": []}
    degenerate = 0
    for weights in np.concatenate(list(resample_weights(3, n_resamples, seed))):
        rows = np.repeat(np.arange(3), weights.astype(int))
        other = rows[:, None] != rows[None, :]
        if not other.any():
            degenerate += 1
            continue
        unpaired.append(float((x[rows] @ y[rows].T)[other].mean()))
        for m, z in (("image", x), ("text", y)):
            cones[m].append(float((z[rows] @ z[rows].T)[other].mean()))
    assert degenerate > 0  # the case under test occurs

    pair = report.pairs["image-text"]
    expected = oracle_interval(unpaired, n_resamples, confidence)
    assert pair["unpaired_cosine_ci"] == pytest.approx(expected, abs=1e-10)
    for m in ("image", "text"):
        expected = oracle_interval(cones[m], n_resamples, confidence)
        assert report.modalities[m]["cone_ci"] == pytest.approx(expected, abs=1e-10)
        assert max(abs(v) for v in report.modalities[m]["cone_ci"]) < 1.0
    assert max(abs(v) for v in pair["unpaired_cosine_ci"]) < 1.0


def totals_with_zero_denominator() -> dict[str, np.ndarray]:
    """Resampled totals of one resample that drew a single unit row x three times: no pair of
    distinct rows, no unpaired pair; the numerators are 0 only up to rounding."""
    x = unit(np.array([[0.3, -1.1, 0.7, 2.9]]))
    t = GroupTotals(1)
    t.add("sum:a", x)
    t.add("sum:b", x)
    t.add("sq:a", np.einsum("ij,ij->i", x, x), squared=True)
    t.add("n:a", np.ones(1), squared=True)
    t.add("n:b", np.ones(1), squared=True)
    t.add("dot", np.einsum("ij,ij->i", x, x), squared=True)
    t.add("pairs", np.ones(1), squared=True)
    resampled = t.resampled(np.array([[3.0]]))
    # Whatever the rounding gives, force a positive residue: the worst case, +inf before.
    resampled["sq:a^2"] = resampled["sq:a^2"] - 1e-12
    resampled["dot^2"] = resampled["dot^2"] - 1e-12
    return resampled


def test_statistics_are_nan_where_the_denominator_is_zero():
    t = totals_with_zero_denominator()
    cone = bootstrap_module._cone_statistic("sum:a", "sq:a", "n:a")
    _, unpaired = bootstrap_module._cosine_statistics(
        "dot", "pairs", "sum:a", "sum:b", "n:a", "n:b"
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        assert np.isnan(cone(t)).all()
        assert np.isnan(unpaired(t)).all()


def test_missing_centroid_is_undefined_and_a_zero_one_has_cosine_zero():
    """Third resample: no row of modality a, so its sum is exactly 0 over a count of 0."""
    gap, centroid_cosine = bootstrap_module._gap_statistics("sa", "na", "sb", "nb")
    t = {
        "sa": np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]),
        "na": np.array([1.0, 2.0, 0.0]),
        "sb": np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]),
        "nb": np.array([1.0, 1.0, 1.0]),
    }
    with np.errstate(divide="ignore", invalid="ignore"):
        cosine = centroid_cosine(t)
        distance = gap(t)
    assert cosine[:2].tolist() == [0.0, 0.0]
    assert np.isnan(cosine[2]) and np.isnan(distance[2])


def test_too_many_undefined_resamples_give_no_interval():
    """Two rows: half of the resamples draw one distinct row; when fewer than half are defined
    the interval is null, as for any statistic undefined in most resamples."""
    totals = GroupTotals(2)
    totals.add("x", np.array([1.0, 3.0]))
    totals.add("n", np.ones(2), squared=True)

    def pairs_mean(t):
        return bootstrap_module._divide(t["x"], t["n"] ** 2 - t["n^2"])

    counts = np.concatenate(list(resample_weights(2, 11, seed=4)))
    defined = int((counts.min(axis=1) > 0).sum())
    ci = bootstrap_intervals(totals, {"s": pairs_mean}, n_resamples=11, seed=4)
    assert (ci["s"] is None) == (2 * defined < 11)


# ------------------------------------------------------------------ confidence


@pytest.mark.parametrize(
    ("confidence", "message"),
    [
        (0.999999999, "would store as 1; use at most 0.99999999"),
        (0.9999999951, "would store as 1; use at most 0.99999999"),
        (1.0, "between 0 and 1, got 1.0"),
        (0.0, "between 0 and 1, got 0.0"),
        (float("nan"), "between 0 and 1, got nan"),
    ],
)
def test_confidence_that_would_be_stored_as_one_is_refused(confidence, message):
    with pytest.raises(GapscopeError, match=f"confidence: expected a .*{message}"):
        check_bootstrap_params(200, confidence)
    with pytest.raises(GapscopeError, match="confidence"):
        analyze(
            {"image": np.eye(4), "text": np.eye(4)},
            metrics="gap",
            bootstrap=20,
            confidence=confidence,
            device="cpu",
        )


def test_confidence_check_rounds_as_the_report_does():
    assert bootstrap_module._STORED_DIGITS == SIGNIFICANT_DIGITS


def test_highest_accepted_confidence_gives_a_report_that_validates():
    rng = np.random.default_rng(0)
    report = analyze(
        {"image": rng.normal(size=(12, 4)), "text": rng.normal(size=(12, 4))},
        metrics="gap",
        bootstrap=20,
        confidence=0.99999999,
        device="cpu",
    )
    data = json.loads(report.to_json())
    jsonschema.validate(data, report_schema())
    assert data["params"]["confidence"] == 0.99999999


def one_line_error(result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output


def test_cli_refuses_confidence_and_resamples_out_of_range(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "img.npy", rng.normal(size=(6, 4)).astype(np.float32))
    np.save(tmp_path / "txt.npy", rng.normal(size=(6, 4)).astype(np.float32))
    base = ["analyze", "--image", str(tmp_path / "img.npy"), "--text", str(tmp_path / "txt.npy")]
    base += ["--metrics", "gap", "--quiet", "--device", "cpu"]
    result = runner.invoke(app, [*base, "--bootstrap", "50", "--confidence", "0.999999999"])
    one_line_error(result, "confidence: expected a number between 0 and 1, got 0.999999999")
    result = runner.invoke(app, [*base, "--bootstrap", str(10**9)])
    one_line_error(result, f"at most {MAX_RESAMPLES} resamples")


# ------------------------------------------------------------------ memory bounds


def test_huge_resample_count_is_refused_before_any_draw(monkeypatch):
    def no_draws(*args, **kwargs):
        raise AssertionError("drew resamples")

    monkeypatch.setattr(bootstrap_module, "resample_weights", no_draws)
    with pytest.raises(GapscopeError, match=r"at most 100000 resamples.*lower --bootstrap"):
        check_bootstrap_params(10**9, 0.95)
    totals = GroupTotals(3)
    totals.add("x", np.ones(3))
    with pytest.raises(GapscopeError, match="at most 100000 resamples"):
        bootstrap_intervals(totals, {"s": lambda t: t["x"]}, n_resamples=10**9, seed=0)
    check_bootstrap_params(MAX_RESAMPLES, 0.95)


def test_values_of_all_statistics_over_the_cap_are_refused(monkeypatch):
    monkeypatch.setattr(bootstrap_module, "MAX_VALUE_BYTES", 8 * 1000)
    totals = GroupTotals(3)
    totals.add("x", np.ones(3))
    statistics = {k: (lambda t: t["x"]) for k in range(11)}
    with pytest.raises(GapscopeError, match=r"100 resamples of 11 metrics need about .* GiB"):
        bootstrap_intervals(totals, statistics, n_resamples=100, seed=0)
    assert len(bootstrap_intervals(totals, statistics, n_resamples=90, seed=0)) == 11


def test_chunks_are_bounded_by_the_widest_total_and_do_not_change_intervals(monkeypatch):
    """Few groups and wide rows: each chunk's (b, d) totals stay within the entry budget, and
    the intervals are identical to those computed in one chunk."""
    rng = np.random.default_rng(1)
    totals = GroupTotals(4)
    totals.add("s", rng.normal(size=(4, 64)))
    totals.add("n", np.full(4, 2.0))
    seen: list[int] = []

    def norm_of_mean(t):
        seen.append(t["s"].size)
        return np.linalg.norm(t["s"] / t["n"][:, None], axis=1)

    whole = bootstrap_intervals(totals, {"g": norm_of_mean}, n_resamples=300, seed=2)
    assert max(seen) == 300 * 64
    seen.clear()
    monkeypatch.setattr(bootstrap_module, "_CHUNK_ENTRIES", 64 * 7)
    chunked = bootstrap_intervals(totals, {"g": norm_of_mean}, n_resamples=300, seed=2)
    assert max(seen) <= 64 * 7
    assert chunked == whole
