"""gapscope's own JSON Schema check (``gate/schema.py``) agrees with ``jsonschema`` on the
schemas gapscope ships, over real documents and a seeded sample of broken copies of them,
and ``load_report`` names the field that is wrong."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import jsonschema
import pytest
from helpers import make_paired

from gapscope import analyze
from gapscope.errors import GapscopeError
from gapscope.gate.check import check_report
from gapscope.gate.diff import diff_reports
from gapscope.gate.outputs import check_schema, diff_schema
from gapscope.gate.reports import load_report
from gapscope.gate.schema import first_problem, report_schema_for, schema_problems
from gapscope.report import Report

V1 = Path(__file__).resolve().parents[1] / "report" / "data" / "example-report-v1.json"
REPLACEMENTS = (None, "x", -1, 0, 1.5, True, [], {}, [0.1, 0.2], [1, 2, 3], "lower", 10**400)


@pytest.fixture(scope="module")
def documents():
    """A full report (every family, bootstrap intervals), a schema-1 report, and a check and
    a diff document, each with its schema."""
    image, text, *_, labels, _ = make_paired(n=40, d=8, captions=1, seed=2)
    report = analyze(
        {"image": image, "text": text},
        bootstrap=20,
        seed=0,
        device="cpu",
        k="1,5",
        step=3,
        tags={"lr": "3e-4"},
    ).to_dict()
    worse = copy.deepcopy(report)
    worse["pairs"]["image-text"]["gap"] += 0.1
    a, b = Report.from_dict(report), Report.from_dict(worse)
    return {
        "report-2": (report, report_schema_for("gapscope.report/2")),
        "report-1": (json.loads(V1.read_text()), report_schema_for("gapscope.report/1")),
        "check-1": (check_report(b, a).to_dict(), check_schema()),
        "diff-1": (diff_reports(a, b).to_dict(), diff_schema()),
    }


def paths(value, here=()):
    """Every path into nested dicts and lists."""
    if isinstance(value, dict):
        for key, sub in value.items():
            yield (*here, key)
            yield from paths(sub, (*here, key))
    elif isinstance(value, list):
        for k, sub in enumerate(value):
            yield (*here, k)
            yield from paths(sub, (*here, k))


def mutations(document, rng: random.Random, count: int):
    """``count`` broken copies: a value replaced, a key deleted, or an unknown key added."""
    every = list(paths(document))
    for _ in range(count):
        path = rng.choice(every)
        copied = copy.deepcopy(document)
        parent = copied
        for key in path[:-1]:
            parent = parent[key]
        kind = rng.random()
        if kind < 0.15 and isinstance(parent, dict):
            del parent[path[-1]]
        elif kind < 0.25 and isinstance(parent, dict):
            parent[rng.choice(["zzz", "image->image", "R@x", "gap_ci", "video"])] = rng.choice(
                REPLACEMENTS
            )
        else:
            parent[path[-1]] = rng.choice(REPLACEMENTS)
        yield path, copied


@pytest.mark.parametrize("name", ["report-2", "report-1", "check-1", "diff-1"])
def test_the_real_documents_are_valid(documents, name):
    document, schema = documents[name]
    jsonschema.validate(document, schema)
    assert first_problem(document, schema) is None


@pytest.mark.parametrize(
    ("name", "count"), [("report-2", 500), ("report-1", 300), ("check-1", 150), ("diff-1", 150)]
)
def test_it_agrees_with_jsonschema_on_broken_copies(documents, name, count):
    document, schema = documents[name]
    validator = jsonschema.Draft202012Validator(schema)
    rng = random.Random(f"{name}-{count}")
    invalid = 0
    for path, broken in mutations(document, rng, count):
        ours = first_problem(broken, schema)
        theirs = validator.is_valid(broken)
        assert (ours is None) == theirs, (path, ours, next(validator.iter_errors(broken), None))
        invalid += ours is not None
    assert invalid > count // 4  # the sample does break things


def test_messages_name_the_field():
    schema = report_schema_for("gapscope.report/2")
    assert first_problem({"schema": "gapscope.report/2"}, schema) == (
        "",
        "lacks the required field 'gapscope_version'",
    )
    problems = list(schema_problems({"directions": {"gap": "up"}}, {"properties": schema}))
    assert problems == []  # a sub-schema mapping of schemas is no schema: nothing checked
    sub = schema["properties"]["directions"]
    assert first_problem({"gap": "up"}, sub) == (
        "gap",
        "the string 'up' is not one of 'lower', 'higher'",
    )


def test_an_unsupported_keyword_is_an_error_not_a_pass():
    with pytest.raises(ValueError, match="'uniqueItems' is not supported"):
        first_problem([1, 1], {"uniqueItems": True})


def test_load_report_names_role_file_and_field(tmp_path, documents):
    report, _ = documents["report-2"]
    broken = copy.deepcopy(report)
    broken["pairs"]["image-text"]["recall"]["image->text"]["n_queries"] = -1
    path = tmp_path / "r.json"
    path.write_text(json.dumps(broken))
    with pytest.raises(GapscopeError) as caught:
        load_report(path, "baseline")
    assert str(caught.value) == (
        f"baseline {path}: pairs.image-text.recall.image->text.n_queries: -1 is below the "
        "minimum 0 (schema gapscope.report/2)"
    )
    path.write_text(json.dumps(report).replace('"seed": 0', '"seed": NaN', 1))
    with pytest.raises(GapscopeError, match="NaN is not a JSON number"):
        load_report(path)
    with pytest.raises(GapscopeError, match="is a folder, not a JSON report"):
        load_report(tmp_path, "baseline")
