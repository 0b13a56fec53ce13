"""Flat keys every tracker takes: ``Report.to_flat()``, ``--format flat`` and CSV spell the
metrics with letters, digits, ``_``, ``-``, ``.`` and ``/`` only; the JSON report keeps its own
key paths; ``check`` and ``diff`` keep naming metrics by those paths and take patterns in
either spelling."""

from __future__ import annotations

import io
import json
import re

import pandas as pd
import pytest
from full_reports import full_report, sampled_report
from typer.testing import CliRunner

from gapscope.analysis.keys import tracker_key
from gapscope.cli import app
from gapscope.gate.check import check_report
from gapscope.gate.diff import diff_reports
from gapscope.report import Report
from gapscope.report.formats import to_csv, to_flat_json
from gapscope.report.model import flatten_report

# What MLflow, TensorBoard and W&B all take (MLflow also takes spaces and ':', the others more).
TRACKER_SAFE = re.compile(r"^[A-Za-z0-9_\-./]+$")
runner = CliRunner()


@pytest.fixture(scope="module")
def full():
    return full_report(step=7, tags={"lr": "3e-4", "data": "coco-val"})


@pytest.fixture(scope="module")
def sampled():
    return sampled_report()


def test_every_flat_key_of_a_full_report_is_tracker_safe_and_unique(full, sampled):
    for report in (full, sampled):
        paths = flatten_report(report.to_dict())
        flat = report.to_flat()
        bad = [key for key in flat if not TRACKER_SAFE.match(key)]
        assert not bad, bad
        # One tracker key a JSON path, the same value under it: nothing lost, nothing merged.
        assert len(flat) == len(paths) == len({tracker_key(p) for p in paths})
        assert flat == {tracker_key(path): value for path, value in paths.items()}
        assert list(flat) == sorted(flat)
    # The report holds every kind of key: pairs, a tuple, directions, intervals, what-ifs, _se.
    flat = full.to_flat()
    for key in (
        "image-text/recall/image_to_text/R1",
        "image-audio/recall/audio_to_image/R10_ci/high",
        "image/recall/image_to_image/R-precision",
        "text/recall/text_to_text/mAP_ci/low",
        "image-text/gap_ci/low",
        "text-audio/whatif/shift_0.5/recall/text_to_audio/R5",
        "image-text-audio/gram_volume_mean",
        "image-text/similarity/negatives_above_median_positive",
    ):
        assert key in flat, key
    assert "audio/recall/audio_to_audio/R-precision_se" in sampled.to_flat()
    # What MLflow refuses is gone from every flat key.
    assert not any(("->" in k or "@" in k) for k in flat)


def test_the_json_report_keeps_its_key_paths(full):
    data = json.loads(full.to_json())
    assert data["pairs"]["image-text"]["recall"]["image->text"]["R@5"] is not None
    assert data["modalities"]["image"]["recall"]["image->image"]["R-precision"] is not None
    assert len(data["pairs"]["image-text"]["gap_ci"]) == 2
    assert "image-text-audio" in data["tuples"]
    # The path form stays available for code that wants it.
    paths = flatten_report(data)
    assert (
        paths["image-text/recall/image->text/R@5"]
        == full.to_flat()["image-text/recall/image_to_text/R5"]
    )


def test_direction_of_takes_either_spelling(full):
    for path, spelled in (
        ("image-text/recall/text->image/R@5", "image-text/recall/text_to_image/R5"),
        ("image/recall/image->image/R-precision", "image/recall/image_to_image/R-precision"),
        ("text/recall/text->text/R@10", "text/recall/text_to_text/R10"),
        ("image-text/similarity/auc", "image-text/similarity/auc"),
    ):
        assert full.direction_of(path) == full.direction_of(spelled) is not None, path
    assert full.direction_of("image-text/n_pairs") is None


def test_flat_json_and_csv_carry_the_run_fields(full):
    flat = json.loads(to_flat_json(full))
    assert flat["step"] == 7 and flat["tag.lr"] == "3e-4" and flat["tag.data"] == "coco-val"
    assert flat["checkpoint"] == full.run_info.checkpoint
    assert {k for k in flat if "/" not in k} == {"step", "checkpoint", "tag.lr", "tag.data"}
    assert {k: v for k, v in flat.items() if "/" in k} == full.to_flat()

    table = pd.read_csv(io.StringIO(to_csv(full)), dtype={"tag.lr": str})
    assert list(table.columns) == ["metric", "value", "step", "checkpoint", "tag.data", "tag.lr"]
    assert len(table) == len(full.to_flat())
    assert dict(zip(table["metric"], table["value"], strict=True)) == pytest.approx(
        full.to_flat(), rel=1e-15
    )
    assert set(table["step"]) == {7} and set(table["tag.lr"]) == {"3e-4"}


def test_many_reports_concatenate_into_one_table(tmp_path, example_store):
    # The CSVs and flat JSONs of several checkpoints combine in pandas without hand work.
    csvs, rows = [], []
    for step in (1000, 2000, 3000):
        out = tmp_path / f"step-{step}.csv"
        args = ["analyze", str(example_store), "-q", "--metrics", "gap,retrieval"]
        args += ["--step", str(step), "--tag", "lr=3e-4", "-f", "csv", "-o", str(out)]
        result = runner.invoke(app, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        csvs.append(out)
        flat = runner.invoke(app, [*args[:-4], "-f", "flat"], catch_exceptions=False)
        rows.append(json.loads(flat.stdout))
    long = pd.concat([pd.read_csv(path) for path in csvs], ignore_index=True)
    wide = long.pivot_table(index="step", columns="metric", values="value")
    assert list(wide.index) == [1000, 2000, 3000]
    assert wide["image-text/gap"].tolist() == [rows[0]["image-text/gap"]] * 3
    frame = pd.DataFrame(rows).set_index("step")
    assert (
        frame.loc[2000, "image-text/recall/text_to_image/R5"]
        == wide.loc[2000, "image-text/recall/text_to_image/R5"]
    )
    assert set(frame["checkpoint"]) == {"gapscope example generator"}
    assert set(frame["tag.lr"]) == {"3e-4"} and set(long["tag.lr"]) == {3e-4}  # read as a number


def test_csv_without_run_fields_leaves_step_empty():
    report = Report(input={"fingerprint": "ab" * 32}, params={}, pairs={"image-text": {"gap": 0.5}})
    assert to_csv(report).splitlines() == [
        "metric,value,step,checkpoint",
        f"image-text/gap,0.5,,embeddings@sha256:{'ab' * 32}",
    ]


def test_check_takes_patterns_in_either_spelling(full):
    worse = Report.from_dict(json.loads(full.to_json()))
    worse.pairs["image-text"]["gap"] += 0.05
    worse.pairs["image-text"]["recall"]["text->image"]["R@1"] -= 0.2
    for tolerances in (
        [("image-text/gap", 0.1), ("R@1", 0.5)],
        [("image-text/gap", 0.1), ("R1", 0.5)],
        [("image-text/gap", 0.1), ("image-text/recall/text_to_image/R1", 0.5)],
        [("image-*/gap", 0.1), ("image-text/recall/*_to_*/R1", 0.5)],
    ):
        result = check_report(worse, full, tolerances=tolerances)
        assert result.metrics["image-text/gap"].verdict == "pass", tolerances
        assert result.metrics["image-text/recall/text->image/R@1"].verdict == "pass", tolerances
    # Without the patterns, both regress (the default gate's tolerances, intervals aside).
    result = check_report(worse, full, significant=False)
    assert result.metrics["image-text/gap"].verdict == "regressed"
    assert result.metrics["image-text/recall/text->image/R@1"].verdict == "regressed"
    # Both spellings of one key are equally specific: the one given last wins.
    key, spelled = "image-text/recall/text->image/R@1", "image-text/recall/text_to_image/R1"
    for rules, verdict in (
        ([(key, 0.5), (spelled, 0)], "regressed"),
        ([(spelled, 0), (key, 0.5)], "pass"),
        ([("R1", 0), (spelled, 0.5)], "pass"),  # a full key beats a leaf name
    ):
        assert check_report(worse, full, tolerances=rules).metrics[key].verdict == verdict, rules
    r1 = full.pairs["image-text"]["recall"]["text->image"]["R@1"]
    for spelling in (key, spelled):
        gate = check_report(full, thresholds=[f"{spelling}>={r1 + 0.01}"])
        assert gate.metrics[key].verdict == "failed", spelling
        assert list(gate.metrics) == [key]
    for spelling in ("R@5", "R5"):
        gate = check_report(full, thresholds=[f"{spelling}>=0"])
        assert {k.rsplit("/", 1)[-1] for k in gate.metrics} == {"R@5"}
        # Two directions a pair, one a modality (what-ifs are never gated).
        assert len(gate.metrics) == 3 * 2 + 3
    # check and diff documents keep the report's own key paths.
    assert "image-text/recall/text->image/R@1" in diff_reports(full, worse).metrics


def test_cli_check_with_a_tracker_spelled_threshold(tmp_path, full):
    path = tmp_path / "r.json"
    path.write_text(full.to_json())
    r1 = full.pairs["image-text"]["recall"]["text->image"]["R@1"]
    threshold = f"image-text/recall/text_to_image/R1>={r1 + 0.01}"
    result = runner.invoke(app, ["check", str(path), "--threshold", threshold, "-f", "json"])
    assert result.exit_code == 1, result.output
    # The check document names the metric by its report path.
    assert list(json.loads(result.stdout)["metrics"]) == ["image-text/recall/text->image/R@1"]
    result = runner.invoke(app, ["check", str(path), "--threshold", "image-text/nothing<=1"])
    assert result.exit_code == 2
    assert "text_to_image/R5" in result.stderr and "(or R5)" in result.stderr
