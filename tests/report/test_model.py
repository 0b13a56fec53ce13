"""The report model: schema 2, and schema-1 reports (a committed one, written by gapscope
0.1.0 before the schema changed) read, checked and diffed by upgrading them."""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from gapscope import analyze
from gapscope.cli import app
from gapscope.report.model import SCHEMA, Report, upgrade_report

V1 = Path(__file__).parent / "data" / "example-report-v1.json"


def schema(name: str) -> dict:
    return json.loads(resources.files("gapscope.report").joinpath(f"schemas/{name}").read_text())


@pytest.fixture(scope="module")
def v1() -> dict:
    return json.loads(V1.read_text("utf-8"))


@pytest.fixture(scope="module")
def current(example_store) -> Report:
    # The committed report's own analysis: the example store with 50 bootstrap resamples,
    # percentile intervals (made before BCa intervals, the default now).
    return analyze(example_store, device="cpu", bootstrap=50, seed=0, interval="percentile")


def test_committed_v1_report_is_schema_1(v1):
    assert v1["schema"] == "gapscope.report/1"
    jsonschema.validate(v1, schema("report-1.json"))
    assert "image->image" in v1["pairs"]["image-text"]["recall"]


def test_upgrade_moves_intra_recall_and_drops_duplicates(v1):
    v2 = upgrade_report(v1)
    assert v2["schema"] == SCHEMA and v1["schema"] == "gapscope.report/1"  # v1 left as it was
    jsonschema.validate(v2, schema("report-2.json"))
    pair = v2["pairs"]["image-text"]
    assert set(pair["recall"]) == {"image->text", "text->image"}
    for m in ("image", "text"):
        assert (
            v2["modalities"][m]["recall"][f"{m}->{m}"]
            == v1["pairs"]["image-text"]["recall"][f"{m}->{m}"]
        )
    assert not any(k.startswith("coord_top") for k in pair["gap_direction"])
    assert "fd" not in v2["directions"] and v2["directions"]["gap"] == "lower"


def test_the_example_store_report_is_unchanged_but_for_the_schema(v1, current):
    # Every value the upgraded schema-1 report holds, the current analysis reports too.
    old = upgrade_report(v1)
    new = json.loads(current.to_json())
    for doc in (old, new):  # where the store lies and which version wrote it may differ
        doc.pop("gapscope_version")
        doc["input"].pop("source")
    # Schema 2 records the block size (null: chosen from the shapes), and the run.
    assert new["params"].pop("block_size") is None
    # ... and the kind of the bootstrap intervals.
    assert new["params"].pop("interval") == "percentile"
    assert new.pop("run") == {"step": None, "tags": {}, "checkpoint": "gapscope example generator"}
    # ... and whether the encoder's weights were random (the example's are not).
    assert new["input"]["model"].pop("random_weights") is False
    # Every retrieval direction gained its mean and median rank.
    entries = [
        e
        for section in ("modalities", "pairs")
        for v in new[section].values()
        for e in v.get("recall", {}).values()
    ]
    assert entries
    for entry in entries:
        assert entry.pop("mean_rank") >= 1 and entry.pop("median_rank") >= 1
        for key in [k for k in entry if k.startswith("mean_rank_")]:
            entry.pop(key)
    assert new["directions"].pop("mean_rank") == new["directions"].pop("median_rank") == "lower"
    # Every pair gained the cross-modal uniformity and MMD².
    for entry in new["pairs"].values():
        assert entry.pop("cross_uniformity") < 0
        assert entry.pop("mmd2") > 0
    assert new["directions"].pop("mmd2") == "lower"
    # The zero-shot family is new (the example store has no class prompts: no values).
    new["params"]["metrics"] = [m for m in new["params"]["metrics"] if m not in ("zeroshot", "mmd")]
    # The shift what-ifs sweep both ways: the two that widen the gap are new.
    for entry in new["pairs"].values():
        assert entry["whatif"].pop("shift_-1.0")["gap"] > entry["whatif"]["original"]["gap"]
        entry["whatif"].pop("shift_-0.5")
    # The zero-shot accuracies have a direction (the example store has no class prompts).
    for key in ("top1_accuracy", "top5_accuracy", "balanced_accuracy"):
        assert new["directions"].pop(key) == "higher"

    def same(a, b, path=""):
        if isinstance(a, dict):
            assert isinstance(b, dict) and set(a) == set(b), (path, set(a) ^ set(b))
            for key in a:
                same(a[key], b[key], f"{path}/{key}")
        elif (
            isinstance(a, float)
            and isinstance(b, float)
            or isinstance(a, list)
            and a
            and isinstance(a[0], float)
        ):
            assert b == pytest.approx(a, rel=1e-6, abs=1e-12), path
        else:
            assert a == b, path

    same(old, new)


def test_check_and_diff_read_the_v1_baseline(tmp_path, current):
    runner = CliRunner()
    report = tmp_path / "current.json"
    report.write_text(current.to_json())
    gate = runner.invoke(app, ["check", str(report), "--baseline", str(V1), "-f", "json"])
    assert gate.exit_code == 0, gate.output
    result = json.loads(gate.stdout)
    assert result["summary"]["regressed"] == 0 and result["summary"]["pass"] > 0
    # Intra-modal recall is gated once, under its modality.
    assert "image/recall/image->image/R@1" in result["metrics"]
    assert not any("image-text/recall/image->image" in key for key in result["metrics"])
    diff = runner.invoke(app, ["diff", str(V1), str(report), "-f", "json"])
    assert diff.exit_code == 0, diff.output
    assert all(
        m["assessment"] in ("unchanged", "better", "worse", None)
        for m in json.loads(diff.stdout)["metrics"].values()
    )


def test_round_trip_keeps_directions_and_refuses_other_schemas(current):
    again = Report.from_json(current.to_json())
    assert again.to_json() == current.to_json() and again.context is None
    assert again.direction_of("image-text/recall/text->image/R@5") == "higher"
    bad = copy.deepcopy(json.loads(current.to_json()))
    bad["schema"] = "gapscope.report/9"
    with pytest.raises(ValueError, match="gapscope.report/9"):
        Report.from_dict(bad)
