"""gapscope diff: changes, better/worse by direction, significance, one-sided metrics, JSON."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest
from helpers import make_paired
from report_paths import get_value, set_value, write
from typer.testing import CliRunner

from gapscope import EmbeddingSet, analyze
from gapscope.cli import app
from gapscope.gate.diff import diff_reports
from gapscope.gate.outputs import diff_schema
from gapscope.report import Report

runner = CliRunner()


@pytest.fixture(scope="module")
def before():
    image, text, gi, gt, li, lt = make_paired(n=40, d=8, captions=1, seed=21)
    data = EmbeddingSet.from_arrays({"image": image, "text": text}, labels=li)
    return analyze(data, bootstrap=40, device="cpu", k="1,5").to_dict()


def moved(data: dict, key: str, move: float, ci_move: float | None = None) -> dict:
    out = copy.deepcopy(data)
    set_value(out, key, get_value(out, key) + move)
    if ci_move is not None:
        low, high = get_value(out, f"{key}_ci")
        set_value(out, f"{key}_ci", [low + ci_move, high + ci_move])
    return out


def report(data: dict) -> Report:
    return Report.from_dict(copy.deepcopy(data))


def test_changes_and_assessment_follow_each_metric_direction(before):
    after = moved(moved(before, "image-text/gap", -0.1), "image/cone", +0.1)
    after = moved(after, "image-text/recall/image->text/R@1", -0.1)
    result = diff_reports(report(before), report(after))
    gap = result.metrics["image-text/gap"]
    assert gap.change == pytest.approx(-0.1) and gap.assessment == "better"
    assert gap.relative_change == pytest.approx(-0.1 / get_value(before, "image-text/gap"))
    assert result.metrics["image/cone"].assessment == "worse"
    assert result.metrics["image-text/recall/image->text/R@1"].assessment == "worse"
    assert result.metrics["image-text/paired_cosine"].assessment == "unchanged"
    assert result.metrics["image-text/paired_cosine"].change == 0
    # Only metrics with a direction, unless all numbers are asked for.
    assert "image-text/n_pairs" not in result.metrics
    everything = diff_reports(report(before), report(after), all_keys=True).metrics
    assert everything["image-text/n_pairs"].direction is None
    assert everything["image-text/n_pairs"].assessment is None
    assert not any("_ci" in key for key in everything)


def test_significance_needs_non_overlapping_intervals(before):
    low, high = get_value(before, "image-text/gap_ci")
    width = high - low
    overlapping = moved(before, "image-text/gap", width / 2, ci_move=width / 2)
    separate = moved(before, "image-text/gap", 3 * width, ci_move=3 * width)
    assert (
        diff_reports(report(before), report(overlapping)).metrics["image-text/gap"].significant
        is False
    )
    assert (
        diff_reports(report(before), report(separate)).metrics["image-text/gap"].significant is True
    )
    # MIR has no interval: significance unknown.
    assert (
        diff_reports(report(before), report(separate)).metrics["image-text/mir"].significant is None
    )


def test_metric_on_one_side_only_is_listed(before):
    after = copy.deepcopy(before)
    del after["pairs"]["image-text"]["mir"]
    entry = diff_reports(report(before), report(after)).metrics["image-text/mir"]
    assert entry.a == get_value(before, "image-text/mir") and entry.b is None
    assert entry.change is None and entry.assessment is None


def test_cli_table_json_and_bad_input(tmp_path, before):
    a = write(tmp_path / "a.json", before)
    b = write(tmp_path / "b.json", moved(before, "image-text/gap", 0.2, ci_move=0.2))
    table = runner.invoke(app, ["diff", str(a), str(b)])
    assert table.exit_code == 0, table.output
    assert "image-text/gap" in table.stdout and "worse" in table.stdout
    assert "significant" in table.stdout
    out = tmp_path / "diff.json"
    result = runner.invoke(app, ["diff", str(a), str(b), "--format", "json", "-o", str(out)])
    assert result.exit_code == 0 and result.stdout == ""
    data = json.loads(out.read_text())
    jsonschema.validate(data, diff_schema())
    gap = data["metrics"]["image-text/gap"]
    assert gap["assessment"] == "worse" and gap["significant"] is True
    assert gap["change"] == pytest.approx(0.2)
    again = runner.invoke(app, ["diff", str(a), str(b), "-f", "json"])
    assert again.stdout == out.read_text()
    with_all = runner.invoke(app, ["diff", str(a), str(b), "--all", "-f", "json"])
    assert "image-text/n_pairs" in json.loads(with_all.stdout)["metrics"]
    other = write(tmp_path / "v3.json", dict(copy.deepcopy(before), schema="gapscope.report/3"))
    bad = runner.invoke(app, ["diff", str(a), str(other)])
    assert bad.exit_code == 2
    assert bad.stderr.startswith("Error: report B") and "gapscope.report/3" in bad.stderr
