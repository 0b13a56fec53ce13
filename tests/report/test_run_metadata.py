"""Run metadata: ``--step``, ``--tag`` and the checkpoint identity go into the report (its
optional ``run`` section) and into every flat output; reports without one stay valid."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from helpers import make_paired
from typer.testing import CliRunner

from gapscope import EmbeddingStore, analyze
from gapscope.cli import app
from gapscope.errors import GapscopeError
from gapscope.gate.reports import load_report
from gapscope.gate.schema import first_problem, report_schema_for
from gapscope.report import Report, report_schema
from gapscope.report.run import check_step, check_tags, checkpoint_identity, parse_tags

V1 = Path(__file__).parent / "data" / "example-report-v1.json"
runner = CliRunner()


def arrays(seed: int = 0) -> dict[str, np.ndarray]:
    image, text, *_ = make_paired(n=30, d=8, captions=1, seed=seed)
    return {"image": image, "text": text}


def one_error_line(result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert fragment in lines[0], lines[0]


def test_step_tags_and_checkpoint_are_recorded(example_store):
    report = analyze(example_store, metrics="gap", device="cpu", step=1000, tags={"lr": 3e-4})
    data = json.loads(report.to_json())
    assert data["run"] == {
        "step": 1000,
        "tags": {"lr": "0.0003"},
        "checkpoint": "gapscope example generator",
    }
    jsonschema.validate(data, report_schema())
    assert first_problem(data, report_schema_for("gapscope.report/2")) is None
    # Deterministic: the same analysis gives the same bytes, and JSON round-trips them.
    again = analyze(example_store, metrics="gap", device="cpu", step=1000, tags={"lr": 3e-4})
    assert again.to_json() == report.to_json()
    assert Report.from_json(report.to_json()).to_json() == report.to_json()
    # Without step and tags the run still names the checkpoint.
    plain = json.loads(analyze(example_store, metrics="gap", device="cpu").to_json())
    assert plain["run"] == {"step": None, "tags": {}, "checkpoint": "gapscope example generator"}


def test_arrays_are_identified_by_their_fingerprint():
    report = analyze(arrays(), metrics="gap", device="cpu")
    fingerprint = report.input["fingerprint"]
    assert report.run["checkpoint"] == f"embeddings@sha256:{fingerprint}"
    other = analyze(arrays(seed=1), metrics="gap", device="cpu")
    assert other.run["checkpoint"] != report.run["checkpoint"]


@pytest.mark.parametrize(
    ("encoder", "identity"),
    [
        (
            {"family": "open_clip", "model": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"},
            "ViT-B-32@laion2b_s34b_b79k",
        ),
        (
            {"family": "open_clip", "model": "ViT-B-32", "checkpoint_sha256": "9f" * 32},
            "ViT-B-32@sha256:" + "9f" * 32,
        ),
        (
            {"family": "clap", "model": "gapscope-tiny-clap", "random_init_seed": 0},
            "gapscope-tiny-clap@random-seed-0",
        ),
        ({"family": "synthetic"}, "synthetic"),
    ],
)
def test_the_checkpoint_comes_from_the_store_manifest(tmp_path, encoder, identity):
    data = arrays()
    items = {m: [{"id": str(i), "group": i} for i in range(len(x))] for m, x in data.items()}
    store = EmbeddingStore.write(tmp_path / "store", data, items, encoder=encoder)
    report = analyze(store.path, metrics="gap", device="cpu", step=5)
    assert report.run == {"step": 5, "tags": {}, "checkpoint": identity}
    assert report.to_flat() == analyze(data, metrics="gap", device="cpu").to_flat()


def test_reports_without_a_run_stay_valid_and_unchanged(tmp_path, example_store):
    current = json.loads(analyze(example_store, metrics="gap", device="cpu").to_json())
    del current["run"]
    jsonschema.validate(current, report_schema())
    path = tmp_path / "old.json"
    path.write_text(json.dumps(current))
    old = load_report(path)
    assert old.run is None and "run" not in json.loads(old.to_json())
    assert old.run_info.step is None and old.run_info.tags == {}
    assert old.run_info.checkpoint == "gapscope example generator"
    # A schema-1 report reads too, its checkpoint from its input.
    assert load_report(V1).run_info.checkpoint == "gapscope example generator"


@pytest.mark.parametrize(
    ("run", "field"),
    [
        ({"step": -1, "tags": {}, "checkpoint": "x"}, "run.step"),
        ({"step": 1.5, "tags": {}, "checkpoint": "x"}, "run.step"),
        ({"step": 1, "tags": {"lr": 3}, "checkpoint": "x"}, "run.tags.lr"),
        ({"step": 1, "tags": {"a/b": "x"}, "checkpoint": "x"}, "run.tags"),
        ({"step": 1, "tags": {}}, "run"),
        ({"step": 1, "tags": {}, "checkpoint": ""}, "run.checkpoint"),
    ],
)
def test_a_broken_run_section_is_refused_with_its_field(tmp_path, example_store, run, field):
    data = json.loads(analyze(example_store, metrics="gap", device="cpu").to_json())
    data["run"] = run
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, report_schema())
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    with pytest.raises(GapscopeError, match=rf"r\.json: {field}"):
        load_report(path)


def test_bad_step_and_tags_are_refused_before_the_analysis(monkeypatch):
    import gapscope.api as api

    def never(*args, **kwargs):
        raise AssertionError("analysed despite bad run fields")

    monkeypatch.setattr(api, "run_analysis", never)
    for bad in (
        {"step": -3},
        {"step": 1.5},
        {"step": True},
        {"tags": {"a/b": "x"}},
        {"step": 2**63},
    ):
        with pytest.raises(GapscopeError, match="step|tag"):
            analyze(arrays(), device="cpu", **bad)
    for bad_tags in ({"lr": None}, {"lr": float("nan")}, {"": "x"}, {"lr": [1]}):
        with pytest.raises(GapscopeError, match="tag"):
            analyze(arrays(), device="cpu", tags=bad_tags)
    # MLflow's limits for a tag, the tightest of the trackers: refused before any run.
    with pytest.raises(GapscopeError, match="tag 'note': a value has at most 8000 characters"):
        analyze(arrays(), device="cpu", tags={"note": "x" * 8001})
    with pytest.raises(GapscopeError, match="a key has at most 250 characters, this one 251"):
        analyze(arrays(), device="cpu", tags={"k" * 251: "x"})
    assert check_step(2**63 - 1) == 2**63 - 1
    assert check_tags({"k" * 250: "x" * 8000}) == {"k" * 250: "x" * 8000}
    assert parse_tags(["a=1", "b=", "c=x=y"]) == {"a": "1", "b": "", "c": "x=y"}
    assert checkpoint_identity({}) == "unknown"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--tag", "lr"], "--tag 'lr': expected KEY=VALUE"),
        (["--tag", "=3"], "--tag '=3': expected KEY=VALUE"),
        (["--tag", "lr=1", "--tag", "lr=2"], "--tag 'lr' is given twice"),
        (["--tag", "a b=1"], "tag 'a b': a key may hold"),
        (["--step", "-2"], "step: expected an integer >= 0, got -2"),
        (["--step", "x"], "--step: 'x' is not a valid integer"),
        (["--step", str(2**63)], "step: expected an integer from 0 to 2^63 - 1"),
    ],
)
def test_cli_bad_step_or_tag_is_one_line_and_exit_2(example_store, args, fragment):
    one_error_line(runner.invoke(app, ["analyze", str(example_store), "-q", *args]), fragment)


def test_cli_records_step_and_tags(example_store, tmp_path):
    out = tmp_path / "r.json"
    args = ["analyze", str(example_store), "-q", "--metrics", "gap", "--step", "12"]
    args += ["--tag", "lr=3e-4", "--tag", "data=coco val", "--json", str(out)]
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "run: step 12, data=coco val, lr=3e-4" in result.stdout
    run = json.loads(out.read_text())["run"]
    assert run == {
        "step": 12,
        "tags": {"data": "coco val", "lr": "3e-4"},
        "checkpoint": "gapscope example generator",
    }


def test_a_tag_key_ending_in_a_newline_is_refused():
    # A regex "$" also matches before a final newline: the key is matched whole.
    with pytest.raises(GapscopeError, match="a key may hold letters"):
        check_tags({"lr\n": "3e-4"})
    assert check_tags({"lr": "3e-4"}) == {"lr": "3e-4"}
