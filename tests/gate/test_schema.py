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


def refusal(tmp_path, data: dict, role: str = "report") -> tuple[Path, str]:
    """The message of load_report refusing ``data`` written to a file, and the file."""
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    with pytest.raises(GapscopeError) as caught:
        load_report(path, role)
    return path, str(caught.value)


def test_load_report_names_role_file_and_field(tmp_path, documents):
    report, _ = documents["report-2"]
    broken = copy.deepcopy(report)
    broken["pairs"]["image-text"]["recall"]["image->text"]["n_queries"] = -1
    path, message = refusal(tmp_path, broken, "baseline")
    assert message == (
        f"baseline {path}: pairs.image-text.recall.image->text.n_queries: -1 is below the "
        "minimum 0 (schema gapscope.report/2)"
    )
    path.write_text(json.dumps(report).replace('"seed": 0', '"seed": NaN', 1))
    with pytest.raises(GapscopeError, match="NaN is not a JSON number"):
        load_report(path)
    with pytest.raises(GapscopeError, match="is a folder, not a JSON report"):
        load_report(tmp_path, "baseline")


# ----------------------------------------------------------------------------- audit fixes


def test_a_name_ending_in_a_newline_breaks_the_pattern(tmp_path, documents):
    # Python's "$" matches before a final newline; JSON Schema's only at the end.
    sub = report_schema_for("gapscope.report/2")["properties"]["modalities"]
    assert first_problem({"image\n": {}}, sub) is not None
    assert first_problem({"image": {}}, sub) is None
    assert first_problem("a\n", {"pattern": "^a$"}) is not None
    assert first_problem("x_ci", {"pattern": "_ci$"}) is None  # still a search, not a full match
    assert first_problem("$", {"pattern": "^[$]$"}) is None  # a "$" in a class is a character
    assert (
        first_problem({"gap_ci\n": 1}, {"patternProperties": {"_ci$": {"type": "string"}}}) is None
    )
    assert first_problem({"gap_ci": 1}, {"patternProperties": {"_ci$": {"type": "string"}}})
    report, _ = documents["report-2"]
    broken = copy.deepcopy(report)
    broken["modalities"]["image\n"] = broken["modalities"].pop("image")
    path, message = refusal(tmp_path, broken)
    assert "\n" not in message and message.startswith(f"report {path}: modalities.image\\n: ")
    assert "is not an allowed name here" in message


def test_a_repeated_key_is_refused_with_where_it_is(tmp_path, documents):
    report, _ = documents["report-2"]
    marked = copy.deepcopy(report)
    marked["pairs"]["image-text"]["MARK"] = 1  # becomes a second "gap" in the text
    path = tmp_path / "r.json"
    path.write_text(json.dumps(marked).replace('"MARK": 1', '"gap": 0.1'))
    with pytest.raises(GapscopeError) as caught:
        load_report(path, "baseline")
    assert str(caught.value) == (
        f"baseline {path}: pairs.image-text has the key 'gap' twice; a key may appear once in "
        "an object"
    )
    path.write_text('{"schema": "gapscope.report/2", "schema": "gapscope.report/2"}')
    with pytest.raises(GapscopeError, match="the top-level object has the key 'schema' twice"):
        load_report(path)


def test_a_step_the_schema_takes_but_the_report_does_not_names_the_file(tmp_path, documents):
    report, _ = documents["report-2"]
    broken = copy.deepcopy(report)
    broken["run"]["step"] = 1000.0  # an integer to JSON Schema, not to a tracker
    path, message = refusal(tmp_path, broken, "baseline")
    assert message == (f"baseline {path}: run: step: expected an integer >= 0, got 1000.0")


def test_a_report_nested_too_deeply_is_bad_input(tmp_path, documents):
    report, _ = documents["report-2"]
    deep: dict = {}
    node = deep
    for _ in range(900):  # parses, but every reader of a report recurses
        node["a"] = {}
        node = node["a"]
    broken = copy.deepcopy(report)
    broken["pairs"]["image-text"]["deep"] = deep
    path = tmp_path / "r.json"
    path.write_text(json.dumps(broken))
    with pytest.raises(GapscopeError) as caught:
        load_report(path)
    assert str(caught.value) == (
        f"report {path} is not a report: it nests more than 32 levels deep (under "
        "pairs.image-text.deep...)"
    )
    load_report(_written(tmp_path / "ok.json", report))  # a real report is far from it


def _written(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_every_command_refuses_bad_reports_in_one_line(tmp_path, documents):
    from typer.testing import CliRunner

    from gapscope.cli import app

    report, _ = documents["report-2"]
    good = _written(tmp_path / "good.json", report)
    deep = copy.deepcopy(report)
    node = deep["pairs"]["image-text"]["deep"] = {}
    for _ in range(900):
        node["a"] = {}
        node = node["a"]
    stepped = copy.deepcopy(report)
    stepped["run"]["step"] = 1000.0
    cases = {
        "deep.json": (deep, "nests more than 32 levels deep"),
        "step.json": (stepped, "run: step: expected an integer >= 0, got 1000.0"),
    }
    for name, (data, fragment) in cases.items():
        bad = _written(tmp_path / name, data)
        for args in (["check", bad, "-b", good], ["diff", good, bad], ["trend", good, bad]):
            result = CliRunner().invoke(app, [str(a) for a in args])
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            assert result.exit_code == 2, (args, result.output)
            assert len(lines) == 1 and name in lines[0] and fragment in lines[0], lines
