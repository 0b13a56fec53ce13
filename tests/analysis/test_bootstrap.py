"""Bootstrap intervals: each resampled statistic against the metric recomputed on the explicitly
resampled data, coverage of known truths on a few hundred generated datasets, and the report
contract (JSON schema, flat keys, determinism, point values unchanged)."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
import reference as ref
from helpers import make_paired, paired_set

import gapscope.analysis.bootstrap as bootstrap_module
from gapscope import analyze
from gapscope.analysis.bootstrap import percentile_interval, resample_weights
from gapscope.errors import GapscopeError
from gapscope.metrics.alignment import alignment, alignment_row_terms
from gapscope.metrics.retrieval import cross_modal_retrieval, intra_modal_retrieval
from gapscope.metrics.uniformity import uniformity, uniformity_with_row_terms
from gapscope.report import Report, report_schema

# ----------------------------------------------------------------------------- helpers


def first_ranks(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """Per query, the 0-based rank of its first relevant key (stable, ties to the lower index);
    -1 for a query with no relevant key."""
    out = np.full(scores.shape[0], -1)
    for i in range(scores.shape[0]):
        if relevant[i].any():
            order = np.argsort(-scores[i], kind="stable")
            out[i] = int(np.argmax(relevant[i][order]))
    return out


def fixed_weights(monkeypatch, weights: np.ndarray, copies: int = 10) -> None:
    """Make every resample use the same group weights, so each interval is one value."""

    def fake(n_groups, n_resamples, seed):
        assert n_groups == weights.shape[0]
        yield np.tile(weights.astype(np.float64), (n_resamples, 1))

    monkeypatch.setattr(bootstrap_module, "resample_weights", fake)


def interval_value(interval) -> float:
    low, high = interval
    assert low == pytest.approx(high, abs=1e-12)
    return low


# ----------------------------------------------------------------------------- building blocks


def test_resample_weights_are_seeded_multinomial_counts():
    first = np.concatenate(list(resample_weights(7, 25, seed=3)))
    again = np.concatenate(list(resample_weights(7, 25, seed=3)))
    other = np.concatenate(list(resample_weights(7, 25, seed=4)))
    assert first.shape == (25, 7) and np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert np.all(first.sum(axis=1) == 7) and np.all(first >= 0)
    assert np.all(first == np.round(first))
    # Each group is drawn once a resample on average.
    many = np.concatenate(list(resample_weights(50, 400, seed=0)))
    assert many.mean() == pytest.approx(1.0, abs=0.02)
    assert many.var() == pytest.approx(1.0 - 1 / 50, abs=0.05)


def test_percentile_interval_matches_numpy_and_drops_undefined():
    values = np.random.default_rng(0).normal(size=1000)
    low, high = percentile_interval(values, 0.9)
    assert (low, high) == tuple(np.quantile(values, [0.05, 0.95]))
    values[:100] = np.nan
    assert percentile_interval(values, 0.9) == tuple(np.quantile(values[100:], [0.05, 0.95]))
    values[:600] = np.nan
    assert percentile_interval(values, 0.9) is None


def test_retrieval_per_query_values_match_a_full_matrix_reference():
    image, text, gi, gt, li, _ = make_paired(n=30, d=8, captions=2, seed=1)
    result = cross_modal_retrieval(text, image, gt, gi, k=(1, 5), device="cpu")
    s = ref.unit(text) @ ref.unit(image).T
    first = first_ranks(s, ref.positives(gt, gi))
    assert np.array_equal(result.query_rows, np.arange(len(gt)))
    for k in (1, 5):
        assert np.array_equal(result.per_query[f"R@{k}"], (first < k).astype(float))
        assert result.per_query[f"R@{k}"].mean() == result.recall[k]
    assert np.array_equal(result.per_query["mean_rank"], first + 1.0)
    assert result.per_query["mean_rank"].mean() == pytest.approx(result.mean_rank, rel=1e-15)

    intra = intra_modal_retrieval(
        image, li, k=(1, 3), device="cpu", query_index=np.arange(0, 30, 2)
    )
    assert set(intra.per_query) == {"R@1", "R@3", "mean_rank", "mAP", "R-precision"}
    s = ref.unit(image) @ ref.unit(image).T
    expected_ap = []
    for i in range(0, 30, 2):
        others = np.delete(np.arange(30), i)
        relevant = (li[others] == li[i])[np.argsort(-s[i, others], kind="stable")]
        if relevant.any():
            positions = np.flatnonzero(relevant)
            expected_ap.append(np.mean(np.arange(1, positions.size + 1) / (positions + 1)))
    assert intra.query_rows.tolist() == [i for i in range(0, 30, 2) if (li == li[i]).sum() > 1]
    assert np.allclose(intra.per_query["mAP"], expected_ap, atol=1e-12)
    assert intra.per_query["mAP"].mean() == pytest.approx(intra.mean_average_precision)
    assert intra.per_query["R-precision"].mean() == pytest.approx(intra.r_precision)


def test_uniformity_row_terms_match_full_matrix_and_value_is_unchanged():
    x = make_paired(n=37, d=6, seed=2)[0]
    value, log_a = uniformity_with_row_terms(x, 2.0, block_size=5, device="cpu")
    assert value == uniformity(x, 2.0, block_size=5, device="cpu")  # bit-identical
    u = ref.unit(x)
    kernel = np.exp(-2.0 * ((u[:, None, :] - u[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(kernel, 0.0)
    expected = np.log(kernel.sum(axis=1) / (len(x) - 1))
    assert np.allclose(log_a, expected, atol=1e-5)
    assert np.log(np.exp(log_a).mean()) == pytest.approx(value, abs=1e-6)


def test_alignment_row_terms_sum_to_alignment():
    image, text, gi, gt, *_ = make_paired(n=25, d=6, captions=3, seed=3)
    sums, counts = alignment_row_terms(image, text, gi, gt, alpha=1.5, block_size=4)
    assert counts.tolist() == [3] * 25
    assert sums.sum() / counts.sum() == pytest.approx(
        alignment(image, text, gi, gt, alpha=1.5), rel=1e-12
    )
    xu, yu = ref.unit(image), ref.unit(text)
    expected = [
        sum(np.linalg.norm(xu[i] - yu[j]) ** 1.5 for j in np.flatnonzero(gt == i))
        for i in range(25)
    ]
    assert np.allclose(sums, expected, rtol=1e-10)


# ----------------------------------------------------------------------------- resampled statistics


def test_each_statistic_equals_the_metric_on_the_resampled_data(monkeypatch):
    """For one weight vector, each interval collapses to the statistic; compare it with the
    metric computed from scratch on the rows the weights select (copies of whole groups)."""
    data = paired_set(n=40, captions=2, seed=5)
    image, text = data.embeddings["image"], data.embeddings["text"]
    gi, gt = data.groups["image"], data.groups["text"]
    weights = np.random.default_rng(0).multinomial(40, np.full(40, 1 / 40))
    fixed_weights(monkeypatch, weights)
    # Percentile: every resample is the same, so the interval is that one value (a BCa
    # interval would be null, every value lying on one side of the estimate).
    report = analyze(
        data,
        metrics="gap,cosine,alignment,cone,retrieval",
        k="1,5",
        bootstrap=10,
        interval="percentile",
        device="cpu",
    )

    # The resampled data: w_g copies of group g's rows, each copy its own group.
    img_rows = np.concatenate(
        [np.repeat(np.flatnonzero(gi == g), 1) for g in range(40) for _ in range(weights[g])]
    )
    img_copy = np.concatenate(
        [np.full((gi == g).sum(), 1000 * g + c) for g in range(40) for c in range(weights[g])]
    )
    txt_rows = np.concatenate(
        [np.flatnonzero(gt == g) for g in range(40) for _ in range(weights[g])]
    )
    txt_copy = np.concatenate(
        [np.full((gt == g).sum(), 1000 * g + c) for g in range(40) for c in range(weights[g])]
    )
    x, y = ref.unit(image[img_rows]), ref.unit(text[txt_rows])
    pair, mods = report.pairs["image-text"], report.modalities

    assert interval_value(pair["gap_ci"]) == pytest.approx(
        ref.gap(image[img_rows], text[txt_rows]), abs=1e-10
    )
    mx, my = x.mean(0), y.mean(0)
    assert interval_value(pair["centroid_cosine_ci"]) == pytest.approx(
        mx @ my / np.linalg.norm(mx) / np.linalg.norm(my), abs=1e-10
    )
    # Cone: pairs of distinct original rows (a row is never paired with its own copy).
    for m, rows, z in (("image", img_rows, x), ("text", txt_rows, y)):
        s = z @ z.T
        distinct = rows[:, None] != rows[None, :]
        assert interval_value(mods[m]["cone_ci"]) == pytest.approx(s[distinct].mean(), abs=1e-10)
    # Positives: within one copy of a group; unpaired: rows of different original groups.
    s = x @ y.T
    positive = img_copy[:, None] == txt_copy[None, :]
    other_group = gi[img_rows][:, None] != gt[txt_rows][None, :]
    assert interval_value(pair["paired_cosine_ci"]) == pytest.approx(s[positive].mean(), abs=1e-10)
    assert interval_value(pair["unpaired_cosine_ci"]) == pytest.approx(
        s[other_group].mean(), abs=1e-10
    )
    i, j = np.nonzero(positive)
    assert interval_value(pair["alignment_ci"]) == pytest.approx(
        (np.linalg.norm(x[i] - y[j], axis=1) ** 2).mean(), abs=1e-10
    )
    # Retrieval: ranks on the full data (the gallery is fixed), queries resampled.
    full = ref.unit(text) @ ref.unit(image).T
    hits = first_ranks(full, ref.positives(gt, gi)) < 5
    assert interval_value(pair["recall"]["text->image"]["R@5_ci"]) == pytest.approx(
        hits[txt_rows].mean(), abs=1e-12
    )
    intra = mods["image"]["recall"]["image->image"]
    per_query = intra_modal_retrieval(image, data.labels["image"], k=(1,), device="cpu")
    ap = dict(zip(per_query.query_rows.tolist(), per_query.per_query["mAP"], strict=True))
    drawn = [ap[r] for r in img_rows if r in ap]
    assert interval_value(intra["mAP_ci"]) == pytest.approx(np.mean(drawn), abs=1e-12)


def test_uniformity_interval_matches_the_exact_resampled_u_statistic():
    """The first-order resampled uniformity reproduces the interval of the exact resampled
    U-statistic (pairs of distinct original rows, weighted w_i w_j) for the same draws, while
    resampling the row terms alone would give an interval half as wide."""
    n = 300
    image = make_paired(n=n, d=8, captions=1, seed=6)[0]
    u = ref.unit(image)
    kernel = np.exp(-2.0 * ((u[:, None, :] - u[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(kernel, 0.0)
    report = analyze(
        {"image": image, "text": image[::-1].copy()},
        metrics="uniformity",
        bootstrap=200,
        interval="percentile",
        seed=1,
        device="cpu",
    )
    low, high = report.modalities["image"]["uniformity_ci"]
    # The same draws: with plain arrays each row is its own group, in row order.
    weights = np.concatenate(list(resample_weights(n, 200, seed=1)))
    exact = np.log(
        np.einsum("bi,ij,bj->b", weights, kernel, weights)
        / (weights.sum(1) ** 2 - (weights**2).sum(1))
    )
    exact_low, exact_high = percentile_interval(exact, 0.95)
    assert (high - low) == pytest.approx(exact_high - exact_low, rel=0.12)
    assert low == pytest.approx(exact_low, abs=0.1 * (exact_high - exact_low))
    _, log_a = uniformity_with_row_terms(image, device="cpu")
    naive = np.log(weights @ np.exp(log_a) / weights.sum(1))
    naive_low, naive_high = percentile_interval(naive, 0.95)
    assert (naive_high - naive_low) < 0.6 * (exact_high - exact_low)


# ----------------------------------------------------------------------------- coverage


def _discrete_truths(vectors, joint, t=2.0):
    p, q = joint.sum(axis=1), joint.sum(axis=0)
    mx, my = p @ vectors, q @ vectors
    gram = vectors @ vectors.T
    sq = 2.0 - 2.0 * gram
    return {
        ("pairs", "gap"): float(np.linalg.norm(mx - my)),
        ("pairs", "centroid_cosine"): float(mx @ my / np.linalg.norm(mx) / np.linalg.norm(my)),
        ("pairs", "paired_cosine"): float((joint * gram).sum()),
        ("pairs", "unpaired_cosine"): float(mx @ my),
        ("pairs", "alignment"): float((joint * sq).sum()),
        ("image", "cone"): float(mx @ mx),
        ("text", "cone"): float(my @ my),
        ("image", "uniformity"): float(np.log(p @ np.exp(-t * sq) @ p)),
        ("text", "uniformity"): float(np.log(q @ np.exp(-t * sq) @ q)),
    }


N_PAIRS = 400


def test_intervals_cover_known_truths_at_about_the_nominal_rate():
    """300 datasets of 400 pairs drawn from a discrete joint distribution over 5 directions,
    so every population value is known exactly; 95% intervals from 200 resamples each."""
    rng = np.random.default_rng(2024)
    d, n_points = 6, 5
    vectors = rng.normal(size=(n_points, d))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    p = np.array([0.4, 0.3, 0.15, 0.1, 0.05])
    partner = np.array([1, 2, 3, 4, 0])
    joint = 0.5 * np.diag(p)[:, partner] + 0.5 * np.outer(p, p[::-1])
    joint /= joint.sum()
    truths = _discrete_truths(vectors, joint)
    covered = {key: 0 for key in truths}
    n_sets = 300
    for s in range(n_sets):
        draw = rng.choice(n_points * n_points, size=N_PAIRS, p=joint.ravel())
        a, b = np.divmod(draw, n_points)
        scale = rng.uniform(0.5, 2.0, size=(N_PAIRS, 1))  # raw norms vary; metrics normalise
        arrays = {"image": vectors[a] * scale, "text": vectors[b] * scale[::-1]}
        report = analyze(
            arrays,
            metrics="gap,cosine,alignment,cone,uniformity",
            bootstrap=200,
            seed=s,
            device="cpu",
        )
        for (where, metric), truth in truths.items():
            entry = report.pairs["image-text"] if where == "pairs" else report.modalities[where]
            low, high = entry[f"{metric}_ci"]
            covered[(where, metric)] += low <= truth <= high
    rates = {key: c / n_sets for key, c in covered.items()}
    # The binomial sd of a rate of 95% over 300 sets is 1.3 points (the metrics of one set are
    # correlated, so they move together); percentile intervals run a little short at this n.
    # An interval half as wide as it should be would cover about 67%.
    for key, rate in rates.items():
        assert 0.90 <= rate <= 0.99, (key, rates)


def test_recall_intervals_cover_the_hit_probability():
    """Image i pairs with text e_i (a sure hit) or -e_i (a sure miss), each with its own
    probability, so every query's hit is an independent Bernoulli(0.7) draw."""
    rng = np.random.default_rng(7)
    n, n_sets, covered = 80, 300, 0
    for s in range(n_sets):
        image = np.eye(n, dtype=np.float32)
        good = rng.random(n) < 0.7
        text = np.where(good[:, None], image, -image)
        report = analyze(
            {"image": image, "text": text},
            metrics="retrieval",
            k="1",
            bootstrap=200,
            seed=s,
            device="cpu",
        )
        entry = report.pairs["image-text"]["recall"]["image->text"]
        assert entry["R@1"] == good.mean()
        low, high = entry["R@1_ci"]
        covered += low <= 0.7 <= high
    assert 0.90 <= covered / n_sets <= 0.99, covered / n_sets


# ----------------------------------------------------------------------------- report contract


@pytest.fixture(scope="module")
def booted():
    data = paired_set(n=50, captions=2, seed=8)
    return data, analyze(data, bootstrap=60, seed=4, device="cpu")


def test_report_with_intervals_validates_and_is_deterministic(booted):
    data, report = booted
    text = report.to_json()
    jsonschema.validate(json.loads(text), report_schema())
    assert analyze(data, bootstrap=60, seed=4, device="cpu").to_json() == text
    other = analyze(data, bootstrap=60, seed=5, device="cpu")
    assert other.pairs["image-text"]["gap_ci"] != report.pairs["image-text"]["gap_ci"]
    assert report.params["bootstrap"] == 60 and report.params["confidence"] == 0.95
    assert report.params["interval"] == "bca"
    assert any(
        "BCa (bias-corrected and accelerated) bootstrap" in note and "MIR has no interval" in note
        for note in report.notes
    )
    # Every scalar metric with a direction has an interval, except MIR (and FD); what-ifs are
    # hypothetical and carry none.
    flat = report.to_flat()
    for key in flat:
        if "/whatif/" in key:
            continue
        leaf = key.rsplit("/", 1)[-1]
        if leaf in ("gap", "cone", "uniformity", "alignment", "paired_cosine", "mAP", "R@5"):
            assert f"{key}_ci/low" in flat and f"{key}_ci/high" in flat, key
            assert flat[f"{key}_ci/low"] <= flat[f"{key}_ci/high"]
    assert "image-text/mir_ci/low" not in flat
    assert Report.from_json(text).to_json() == text


def test_point_values_do_not_change_with_bootstrap(booted):
    data, report = booted
    plain = analyze(data, seed=4, device="cpu").to_flat()
    with_ci = {k: v for k, v in report.to_flat().items() if "_ci/" not in k}
    assert with_ci == plain


def test_sampled_analysis_has_retrieval_intervals_and_no_uniformity_interval():
    data = paired_set(n=50, captions=2, seed=9)
    report = analyze(data, sample=30, bootstrap=40, device="cpu", metrics="uniformity,retrieval")
    assert "uniformity_ci" not in report.modalities["image"]
    assert "uniformity_se" in report.modalities["image"]
    assert report.pairs["image-text"]["recall"]["image->text"]["R@1_ci"] is not None
    assert any("standard error instead of an interval" in note for note in report.notes)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"bootstrap": 5}, "at least 10 resamples"),
        ({"bootstrap": 100, "confidence": 1.5}, "between 0 and 1"),
    ],
)
def test_bad_bootstrap_parameters(options, message):
    with pytest.raises(GapscopeError, match=message):
        analyze(paired_set(n=10), device="cpu", metrics="gap", **options)
