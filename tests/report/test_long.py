"""The tidy long table (``--format long``): one row a metric, every number of the report in
exactly one cell, the same rows read back from CSV (csv module, pandas) and Parquet
(pyarrow, DuckDB-style typed columns), byte-identical output for the same report."""

from __future__ import annotations

import csv
import io
import math
import sys
from collections import Counter

import numpy as np
import pytest
from helpers import make_paired
from typer.testing import CliRunner

from gapscope import analyze
from gapscope.cli import app
from gapscope.data.embedding_set import EmbeddingSet
from gapscope.report.long import (
    LONG_COLUMNS,
    long_rows,
    parse_long_tags,
    to_long_csv,
    to_long_parquet,
    write_long,
)
from gapscope.report.model import Report

runner = CliRunner()
IDENT = ("pair", "modality", "direction", "metric", "k")
NUMBERS = ("value", "ci_low", "ci_high", "se")


def hand_report() -> Report:
    """A report whose every number is chosen here, in every kind of place a number sits."""
    return Report(
        input={},
        params={},
        modalities={
            "image": {
                "cone": 0.31,
                "cone_ci": [0.29, 0.33],
                "uniformity": -3.1,
                "uniformity_se": 0.011,
                "recall": {"image->image": {"R@1": 0.9, "R@10": 0.99, "mAP": 0.7, "n_queries": 40}},
            }
        },
        pairs={
            "image-text": {
                "gap": 0.62,
                "gap_ci": [0.6, 0.64],
                "centroid_norms": {"image": 0.58, "text": 0.57},
                "mir": None,
                "similarity": {"auc": 0.97},
                "recall": {
                    "text->image": {"R@5": 0.8, "R@5_ci": [0.75, 0.85], "R@5_se": 0.02},
                },
                "whatif": {"centered": {"gap": 0.0, "uniformity": {"text": -3.3}}},
            }
        },
        tuples={"image-text-audio": {"gram_volume_mean": 0.41, "gram_volume_se": 0.004}},
        run={"step": 1200, "tags": {"lr": "3e-4", "note": "a;b%c"}, "checkpoint": "ViT-B-32@x"},
    )


#: The rows of hand_report(), derived by hand: (pair, modality, direction, metric, k) ->
#: (value, ci_low, ci_high, se).
HAND_ROWS = {
    ("image-text", "image", None, "centroid_norms", None): (0.58, None, None, None),
    ("image-text", "text", None, "centroid_norms", None): (0.57, None, None, None),
    ("image-text", None, None, "gap", None): (0.62, 0.6, 0.64, None),
    ("image-text", None, "text->image", "recall", 5): (0.8, 0.75, 0.85, 0.02),
    ("image-text", None, None, "similarity/auc", None): (0.97, None, None, None),
    ("image-text", None, None, "whatif/centered/gap", None): (0.0, None, None, None),
    ("image-text", "text", None, "whatif/centered/uniformity", None): (-3.3, None, None, None),
    ("image-text-audio", None, None, "gram_volume_mean", None): (0.41, None, None, 0.004),
    (None, "image", None, "cone", None): (0.31, 0.29, 0.33, None),
    (None, "image", "image->image", "recall", 1): (0.9, None, None, None),
    (None, "image", "image->image", "recall", 10): (0.99, None, None, None),
    (None, "image", "image->image", "mAP", None): (0.7, None, None, None),
    (None, "image", "image->image", "n_queries", None): (40, None, None, None),
    (None, "image", None, "uniformity", None): (-3.1, None, None, 0.011),
}


def as_table(rows) -> dict:
    return {tuple(r[c] for c in IDENT): tuple(r[c] for c in NUMBERS) for r in rows}


def test_rows_of_a_hand_built_report():
    rows = long_rows(hand_report())
    assert all(tuple(r) == LONG_COLUMNS for r in rows)
    assert as_table(rows) == HAND_ROWS
    assert len(rows) == len(HAND_ROWS)  # no identity twice
    for row in rows:
        assert row["step"] == 1200 and row["checkpoint"] == "ViT-B-32@x"
        assert row["tags"] == "lr=3e-4;note=a%3Bb%25c"
        assert parse_long_tags(row["tags"]) == {"lr": "3e-4", "note": "a;b%c"}
    # mir is null: no number, no row.
    assert not any(r["metric"] == "mir" for r in rows)
    # Recall@K by K as a number: R@1 before R@10.
    intra = [r["k"] for r in rows if r["direction"] == "image->image" and r["metric"] == "recall"]
    assert intra == [1, 10]


def test_report_to_long_is_long_rows():
    report = hand_report()
    assert report.to_long() == long_rows(report)


def numbers_of(rows) -> Counter:
    return Counter(r[c] for r in rows for c in NUMBERS if r[c] is not None)


@pytest.fixture(scope="module")
def full_report():
    """Paired arrays with labels (intra-modal retrieval) analysed with every metric and
    bootstrap intervals."""
    image, text, _, _, labels, _ = make_paired(n=60, d=12, captions=1, seed=5)
    data = EmbeddingSet.from_arrays({"image": image, "text": text}, labels=labels)
    return analyze(data, bootstrap=20, device="cpu", step=7, tags={"lr": "1e-3"})


@pytest.fixture(scope="module")
def sampled_report():
    """Arrays analysed from sampled queries: standard errors on uniformity and recall."""
    rng = np.random.default_rng(0)
    image = rng.normal(size=(80, 12)).astype(np.float32)
    text = (image + 0.6 * rng.normal(size=(80, 12))).astype(np.float32)
    return analyze({"image": image, "text": text}, sample=30, device="cpu")


@pytest.mark.parametrize("which", ["full_report", "sampled_report"])
def test_every_number_is_in_exactly_one_cell(which, request):
    report = request.getfixturevalue(which)
    rows = long_rows(report)
    flat = report.to_flat()
    assert numbers_of(rows) == Counter(flat.values())
    assert sum(r[c] is not None for r in rows for c in NUMBERS) == len(flat)
    assert len({tuple(r[c] for c in IDENT) for r in rows}) == len(rows)


def test_intervals_and_standard_errors_sit_beside_their_metric(full_report, sampled_report):
    flat = full_report.to_flat()
    table = as_table(long_rows(full_report))
    r5 = table[("image-text", None, "image->text", "recall", 5)]
    assert r5[:3] == (
        flat["image-text/recall/image_to_text/R5"],
        flat["image-text/recall/image_to_text/R5_ci/low"],
        flat["image-text/recall/image_to_text/R5_ci/high"],
    )
    shifted = table[("image-text", "text", None, "whatif/shift_0.5/uniformity", None)]
    assert shifted[0] == flat["image-text/whatif/shift_0.5/uniformity/text"]
    mean_ap = table[(None, "text", "text->text", "mAP", None)]
    assert mean_ap[:3] == (
        flat["text/recall/text_to_text/mAP"],
        flat["text/recall/text_to_text/mAP_ci/low"],
        flat["text/recall/text_to_text/mAP_ci/high"],
    )
    sampled = as_table(long_rows(sampled_report))
    sflat = sampled_report.to_flat()
    assert sampled[("image-text", None, "text->image", "recall", 1)][0::3] == (
        sflat["image-text/recall/text_to_image/R1"],
        sflat["image-text/recall/text_to_image/R1_se"],
    )
    assert sampled[(None, "image", None, "uniformity", None)][3] == sflat["image/uniformity_se"]


def _cell(text: str, column: str):
    if text == "":
        return None
    if column in ("k", "step"):
        return int(text)
    if column in NUMBERS:
        number = float(text)
        return int(number) if text.lstrip("-").isdigit() else number
    return text


def test_csv_reads_back_as_the_rows(full_report):
    rows = long_rows(full_report)
    text = to_long_csv(full_report)
    reader = csv.reader(io.StringIO(text))
    assert tuple(next(reader)) == LONG_COLUMNS
    back = [{c: _cell(v, c) for c, v in zip(LONG_COLUMNS, line, strict=True)} for line in reader]
    assert back == rows
    assert to_long_csv(full_report) == text  # deterministic


def test_csv_in_pandas(full_report, tmp_path):
    pd = pytest.importorskip("pandas")
    path = write_long(tmp_path / "m.csv", full_report)
    frame = pd.read_csv(path)
    assert tuple(frame.columns) == LONG_COLUMNS
    assert len(frame) == len(long_rows(full_report))
    gap = frame[(frame.pair == "image-text") & (frame.metric == "gap")].iloc[0]
    flat = full_report.to_flat()
    assert gap.value == flat["image-text/gap"] and gap.ci_low == flat["image-text/gap_ci/low"]
    assert set(frame.step) == {7} and math.isnan(gap.se)
    r5 = frame[(frame.direction == "text->image") & (frame.k == 5) & (frame.metric == "recall")]
    assert list(r5.value) == [flat["image-text/recall/text_to_image/R5"]]


def test_parquet_has_typed_columns_and_the_same_rows(full_report, tmp_path):
    parquet = pytest.importorskip("pyarrow.parquet")
    path = write_long(tmp_path / "m.parquet", full_report)
    table = parquet.read_table(path)
    assert tuple(table.column_names) == LONG_COLUMNS
    types = {f.name: str(f.type) for f in table.schema}
    assert types["k"] == types["step"] == "int64"
    assert {types[c] for c in NUMBERS} == {"double"}
    assert {types[c] for c in ("pair", "modality", "direction", "metric", "tags")} == {"string"}
    rows = long_rows(full_report)
    back = table.to_pylist()
    assert len(back) == len(rows)
    for got, want in zip(back, rows, strict=True):
        assert {c: got[c] for c in IDENT} == {c: want[c] for c in IDENT}
        for c in NUMBERS:
            assert got[c] == (None if want[c] is None else float(want[c]))
    # Same report, same bytes.
    assert to_long_parquet(full_report) == path.read_bytes()


def test_several_reports_concatenate(full_report, sampled_report):
    text = to_long_csv([full_report, sampled_report])
    lines = text.splitlines()
    assert len(lines) == 1 + len(long_rows(full_report)) + len(long_rows(sampled_report))


@pytest.fixture(scope="module")
def arrays(tmp_path_factory):
    """--image and --text arrays, and the gap of their report."""
    folder = tmp_path_factory.mktemp("arrays")
    image, text, *_ = make_paired(n=30, d=8, captions=1, seed=9)
    np.save(folder / "image.npy", image)
    np.save(folder / "text.npy", text)
    gap = analyze({"image": image, "text": text}, metrics="gap", device="cpu").to_dict()["pairs"]
    return ["--image", str(folder / "image.npy"), "--text", str(folder / "text.npy")], gap


def test_cli_format_long(arrays, tmp_path):
    source, pairs = arrays
    result = runner.invoke(
        app, ["analyze", *source, "-q", "--metrics", "gap", "--step", "3", "-f", "long"]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == ",".join(LONG_COLUMNS)
    gap = repr(pairs["image-text"]["gap"])
    assert f"image-text,,,gap,,{gap},,,,3,,embeddings@sha256:" in result.stdout
    out = tmp_path / "m.parquet"
    args = ["analyze", *source, "-q", "--metrics", "gap", "-f", "long", "-o", str(out)]
    assert runner.invoke(app, args).exit_code == 0
    parquet = pytest.importorskip("pyarrow.parquet")
    rows = parquet.read_table(out).to_pylist()
    assert {r["metric"] for r in rows} >= {"gap", "centroid_cosine"}


def test_cli_parquet_needs_format_long_and_pyarrow(arrays, tmp_path, monkeypatch):
    source, _ = arrays
    out = tmp_path / "m.parquet"
    result = runner.invoke(app, ["analyze", *source, "-q", "-f", "json", "-o", str(out)])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"Error: --output {out}: Parquet is written by --format long only; give --format long, "
        "or a file name without .parquet"
    ]
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # an import of it fails
    result = runner.invoke(app, ["analyze", *source, "-q", "-f", "long", "-o", str(out)])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert "pip install 'gapscope[parquet]'" in line
    assert not out.exists()
