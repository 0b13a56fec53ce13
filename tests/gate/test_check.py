"""gapscope check: verdicts in each direction, tolerances, patterns, config files, significance,
thresholds, bad input, and the machine outputs (JSON schema, JUnit XML, GitHub annotations),
through the library and through the CLI's exit codes."""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET

import jsonschema
import pytest
from helpers import make_paired
from report_paths import get_value, set_value, write
from typer.testing import CliRunner

from gapscope import EmbeddingSet, EmbeddingStore, analyze
from gapscope.cli import app
from gapscope.errors import GapscopeError
from gapscope.gate.check import baseline_analysis_params, check_report
from gapscope.gate.config import load_check_config
from gapscope.gate.outputs import check_schema, github_annotations, to_junit_xml
from gapscope.gate.reports import load_report
from gapscope.report import Report
from gapscope.report.model import flatten_report

runner = CliRunner()


@pytest.fixture(autouse=True)
def clean_environment(tmp_path, monkeypatch):
    # Annotations and config files must come from the test, not from where the suite runs.
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def paired():
    image, text, gi, gt, li, lt = make_paired(n=40, d=8, captions=2, seed=11)
    return image, text, gi, gt, li, lt


@pytest.fixture(scope="module")
def base_data(paired):
    image, text, gi, gt, li, lt = paired
    data = EmbeddingSet.from_arrays({"image": image, "text": text[::2]}, labels=li)
    return analyze(data, bootstrap=50, seed=0, device="cpu", k="1,5").to_dict()


@pytest.fixture(scope="module")
def unlabelled_data(paired):
    # Without labels (and one text an image) intra-modal recall has nothing relevant: null.
    image, text, *_ = paired
    return analyze(
        {"image": image, "text": text[::2]}, device="cpu", k="1,5", metrics="gap,retrieval"
    ).to_dict()


def run(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)


def exit_2(result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert fragment in lines[0], lines[0]


def changed(base: dict, **moves: float) -> dict:
    """A copy of ``base`` with each metric moved by an amount (``gap=+0.05``); keys use
    ``__`` for ``/`` and ``_to_`` for ``->``."""
    data = copy.deepcopy(base)
    for name, move in moves.items():
        key = name.replace("__", "/").replace("_to_", "->")
        set_value(data, key, get_value(data, key) + move)
    return data


def as_report(data: dict) -> Report:
    return Report.from_dict(copy.deepcopy(data))


GAP = "image-text/gap"
R1 = "image-text/recall/text->image/R@1"


# ----------------------------------------------------------------------------- verdicts


def test_identical_reports_pass_through_the_cli(tmp_path, base_data):
    base = write(tmp_path / "base.json", base_data)
    result = run("check", base, "--baseline", base)
    assert result.exit_code == 0, result.output
    assert "PASS" in result.stdout and "image-text/gap" in result.stdout
    out = run("check", base, "--baseline", base, "--format", "json")
    data = json.loads(out.stdout)
    assert data["status"] == "pass" and data["exit_code"] == 0
    # No settings: the default gate; what it does not gate is tracked.
    assert data["settings"]["gate"] == "default"
    verdicts = {k: v["verdict"] for k, v in data["metrics"].items()}
    assert set(verdicts.values()) == {"pass", "tracked"}
    assert verdicts[GAP] == verdicts[R1] == "pass" and verdicts["image/cone"] == "tracked"
    # Every metric with a direction is compared, and nothing without one.
    assert GAP in data["metrics"] and R1 in data["metrics"] and "image/cone" in data["metrics"]
    assert "image-text/n_pairs" not in data["metrics"]
    assert not any("_ci" in k or k.endswith("_se") for k in data["metrics"])


@pytest.mark.parametrize(
    ("moves", "key", "verdict", "words"),
    [
        ({"image-text__gap": +0.05}, GAP, "regressed", "rose"),  # lower is better
        ({"image-text__gap": -0.05}, GAP, "improved", "fell"),
        ({"image-text__recall__text_to_image__R@1": -0.05}, R1, "regressed", "fell"),  # higher
        ({"image-text__recall__text_to_image__R@1": +0.05}, R1, "improved", "rose"),
        ({"image__cone": +0.05}, "image/cone", "regressed", "rose"),
        ({"image-text__paired_cosine": -0.05}, "image-text/paired_cosine", "regressed", "fell"),
    ],
)
def test_a_move_beyond_the_tolerance_in_each_direction(
    tmp_path, base_data, moves, key, verdict, words
):
    base = write(tmp_path / "base.json", base_data)
    current = write(tmp_path / "current.json", changed(base_data, **moves))
    result = run("check", current, "--baseline", base, "--tolerance", "*=0.02", "-f", "json")
    data = json.loads(result.stdout)
    entry = data["metrics"][key]
    assert entry["verdict"] == verdict
    assert result.exit_code == (1 if verdict == "regressed" else 0)
    b, c = get_value(base_data, key), get_value(changed(base_data, **moves), key)
    assert entry["change"] == pytest.approx(c - b)
    assert entry["message"].startswith(f"{key} {words} from {b:.4f} to {c:.4f}")
    if verdict == "regressed":
        assert "more than the tolerance 0.02" in entry["message"]
        assert entry["limit"] == pytest.approx(b + (0.02 if key in (GAP, "image/cone") else -0.02))
    others = [v["verdict"] for k, v in data["metrics"].items() if k != key]
    assert set(others) == {"pass"}


def test_message_reads_as_the_issue_shows(base_data):
    data = set_value(copy.deepcopy(base_data), GAP, 0.612)
    worse = set_value(copy.deepcopy(base_data), GAP, 0.655)
    result = check_report(as_report(worse), as_report(data), tolerances=[("gap", 0.02)])
    assert result.metrics[GAP].message == (
        "image-text/gap rose from 0.6120 to 0.6550 (+0.0430), more than the tolerance 0.02"
    )
    assert result.exit_code == 1 and result.failures == [result.metrics[GAP]]


@pytest.mark.parametrize(
    ("move", "tolerance", "verdict"),
    [
        (0.019, "0.02", "pass"),
        (0.021, "0.02", "regressed"),
        (0.0, "0", "pass"),
        (1e-6, "0", "regressed"),  # no tolerance: a metric must not get worse at all
        (-1e-6, "0", "improved"),
    ],
)
def test_absolute_tolerance_boundaries(base_data, move, tolerance, verdict):
    current = changed(base_data, image__cone=move)
    result = check_report(
        as_report(current), as_report(base_data), tolerances=[("cone", tolerance)]
    )
    assert result.metrics["image/cone"].verdict == verdict


@pytest.mark.parametrize(("fraction", "verdict"), [(0.04, "pass"), (0.06, "regressed")])
def test_relative_tolerance_is_a_share_of_the_baseline(base_data, fraction, verdict):
    b = get_value(base_data, R1)
    assert b == 0.225
    current = set_value(copy.deepcopy(base_data), R1, b * (1 - fraction))
    result = check_report(as_report(current), as_report(base_data), tolerances=[("R@1", "5%")])
    entry = result.metrics[R1]
    assert entry.verdict == verdict
    assert entry.allowed_change == pytest.approx(0.05 * b)
    assert entry.tolerance == "5%" and entry.tolerance_pattern == "R@1"
    if verdict == "regressed":
        assert "more than the tolerance 5% (0.011" in entry.message  # 5% of 0.225


@pytest.mark.parametrize(
    ("rules", "verdict", "chosen"),
    [
        ([("*", 1.0), ("gap", 0.0)], "regressed", "gap"),  # name beats bare glob
        ([("gap", 0.0), ("image-text/*", 1.0)], "pass", "image-text/*"),  # path glob beats name
        ([("image-text/*", 1.0), ("image-text/g*", 0.0)], "regressed", "image-text/g*"),  # longer
        ([("image-text/g*", 1.0), ("image-text/gap", 0.0)], "regressed", "image-text/gap"),
        ([("gap", 0.0), ("gap", 1.0)], "pass", "gap"),  # tie: the later wins
        ([("gap", 1.0), ("gap", 0.0)], "regressed", "gap"),
    ],
)
def test_the_most_specific_tolerance_wins(base_data, rules, verdict, chosen):
    current = changed(base_data, **{"image-text__gap": 0.01})
    result = check_report(as_report(current), as_report(base_data), tolerances=rules)
    assert result.metrics[GAP].verdict == verdict
    assert result.metrics[GAP].tolerance_pattern == chosen


def test_unused_tolerance_pattern_warns(base_data):
    result = check_report(as_report(base_data), as_report(base_data), tolerances=[("R@7", 0.1)])
    assert any("'R@7' selects no metric" in w for w in result.warnings)


# ----------------------------------------------------------------------------- significance


def test_significant_counts_only_non_overlapping_intervals(tmp_path, base_data):
    b = get_value(base_data, GAP)
    low, high = get_value(base_data, "image-text/gap_ci")
    width = high - low
    base = write(tmp_path / "base.json", base_data)
    # Moved beyond the tolerance but within noise: intervals overlap -> pass.
    near = set_value(
        set_value(copy.deepcopy(base_data), GAP, b + width / 2),
        "image-text/gap_ci",
        [low + width / 2, high + width / 2],
    )
    result = run(
        "check", write(tmp_path / "near.json", near), "-b", base, "--significant", "-f", "json"
    )
    entry = json.loads(result.stdout)["metrics"][GAP]
    assert result.exit_code == 0 and entry["verdict"] == "pass"
    assert entry["significant"] is False and "intervals overlap" in entry["message"]
    # The same without significance (a tolerance of 0, no default gate) is a regression.
    assert run("check", tmp_path / "near.json", "-b", base, "-t", "*=0").exit_code == 1
    # Clearly separated intervals -> a significant regression.
    far = set_value(
        set_value(copy.deepcopy(base_data), GAP, b + 2 * width),
        "image-text/gap_ci",
        [high + width, high + 3 * width],
    )
    result = run(
        "check", write(tmp_path / "far.json", far), "-b", base, "--significant", "-f", "json"
    )
    entry = json.loads(result.stdout)["metrics"][GAP]
    assert result.exit_code == 1 and entry["verdict"] == "regressed"
    assert entry["significant"] is True and "95% intervals do not overlap" in entry["message"]
    # MIR has no interval: judged by its tolerance alone, and says so.
    worse_mir = changed(base_data, **{"image-text__mir": 0.5})
    result = check_report(
        as_report(worse_mir), as_report(base_data), tolerances=[("*", 0)], significant=True
    )
    assert result.metrics["image-text/mir"].verdict == "regressed"
    assert "judged by its tolerance alone" in result.metrics["image-text/mir"].message


def test_significant_without_intervals_is_bad_input(tmp_path, base_data):
    plain = copy.deepcopy(base_data)
    for key in [k for k in flatten_report(plain) if k.endswith("_ci/low")]:
        set_value(plain, key[: -len("/low")], None)
    result = run(
        "check",
        write(tmp_path / "plain.json", plain),
        "-b",
        write(tmp_path / "base.json", base_data),
        "--significant",
    )
    exit_2(result, "--significant needs confidence intervals, but the report has none")


# ----------------------------------------------------------------------------- thresholds


def test_thresholds_gate_without_a_baseline(tmp_path, base_data):
    report = write(tmp_path / "r.json", base_data)
    gap = get_value(base_data, GAP)
    ok = run("check", report, "--threshold", f"image-text/gap<={gap + 0.1}")
    assert ok.exit_code == 0, ok.output
    result = run(
        "check",
        report,
        "--threshold",
        f"gap <= {gap - 0.1:.6f}",
        "--threshold",
        "R@5>=0",
        "-f",
        "json",
    )
    data = json.loads(result.stdout)
    assert result.exit_code == 1 and data["status"] == "fail"
    entry = data["metrics"][GAP]
    assert entry["verdict"] == "failed" and entry["baseline"] is None
    assert entry["message"] == (
        f"image-text/gap is {gap:.4f}, above the threshold gap<={gap - 0.1:g}"
    )
    # A pattern may hold '->'; R@5>=0 selects every direction's R@5 and passes.
    one = run("check", report, "--threshold", "image-text/recall/text->image/R@5>0", "-f", "json")
    assert list(json.loads(one.stdout)["metrics"]) == [R1.replace("R@1", "R@5")]
    r5 = [k for k in data["metrics"] if k.endswith("/R@5")]
    assert len(r5) == 4 and all(data["metrics"][k]["verdict"] == "pass" for k in r5)


def test_threshold_on_an_undefined_metric_is_skipped(unlabelled_data):
    assert get_value(unlabelled_data, "image/recall/image->image/R@1") is None
    result = check_report(as_report(unlabelled_data), thresholds=["*/recall/*/R@1>=0.1"])
    entry = result.metrics["image/recall/image->image/R@1"]
    assert entry.verdict == "skipped" and result.exit_code == 0


@pytest.mark.parametrize(
    ("threshold", "fragment"),
    [
        ("gap=0.9", "expected METRIC<=VALUE"),
        ("gap<=high", "expected METRIC<=VALUE"),
        ("<=0.9", "expected METRIC<=VALUE"),
        ("gapp<=0.9", "selects no metric"),
    ],
)
def test_malformed_thresholds_exit_2(tmp_path, base_data, threshold, fragment):
    exit_2(run("check", write(tmp_path / "r.json", base_data), "--threshold", threshold), fragment)


# ----------------------------------------------------------------------------- bad input


def test_missing_metric_and_schema_mismatch_exit_2(tmp_path, base_data):
    base = write(tmp_path / "base.json", base_data)
    no_mir = copy.deepcopy(base_data)
    del no_mir["pairs"]["image-text"]["mir"]
    exit_2(
        run("check", write(tmp_path / "c.json", no_mir), "-b", base),
        "metric image-text/mir is in the baseline but missing from the report",
    )
    exit_2(
        run("check", base, "-b", tmp_path / "c.json"),
        "metric image-text/mir is in the report but missing from the baseline",
    )
    other = dict(copy.deepcopy(base_data), schema="gapscope.report/3")
    exit_2(
        run("check", base, "-b", write(tmp_path / "v3.json", other)),
        "has schema 'gapscope.report/3'; this gapscope 0.1.0 reads gapscope.report/2, "
        "gapscope.report/1",
    )
    (tmp_path / "broken.json").write_text("{not json")
    exit_2(run("check", base, "-b", tmp_path / "broken.json"), "is not a JSON report")
    exit_2(run("check", base, "-b", tmp_path / "nope.json"), "does not exist")
    exit_2(run("check", base), "nothing to check")
    exit_2(run("check", base, "-b", base, "-t", "gap"), "expected METRIC=VALUE")
    exit_2(run("check", base, "-b", base, "-t", "gap=-1"), "a number >= 0")
    exit_2(run("check", base, "-b", base, "-t", "gap=5 %x"), "a number >= 0")
    exit_2(run("check", base, "-b", base, "--seed", "3"), "--seed applies when analysing")
    exit_2(run("check", base, "-b", base, "-f", "xml"), "unknown format")


def test_other_probe_set_warns_but_does_not_fail(tmp_path, base_data):
    other = copy.deepcopy(base_data)
    other["input"]["modalities"]["text"]["n"] = 999
    other["input"]["fingerprint"] = "0" * 64
    result = run(
        "check", write(tmp_path / "c.json", other), "-b", write(tmp_path / "b.json", base_data)
    )
    assert result.exit_code == 0
    assert "probe sets differ in size (text 40 -> 999 rows)" in result.stdout


# ----------------------------------------------------------------------------- config files


def test_config_from_gapscope_toml(tmp_path, base_data):
    base = write(tmp_path / "base.json", base_data)
    current = write(tmp_path / "c.json", changed(base_data, **{"image-text__gap": 0.01}))
    assert run("check", current, "-b", base, "-t", "gap=0.001").exit_code == 1
    (tmp_path / "gapscope.toml").write_text(
        '[check]\ntolerance = { "gap" = 0.02, "R@1" = "5%" }\n'
        'threshold = ["image-text/gap<=5"]\nsignificant = false\n'
    )
    result = run("check", current, "-b", base, "-f", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["settings"]["tolerances"] == {"gap": "0.02", "R@1": "5%"}
    assert data["settings"]["thresholds"] == ["image-text/gap<=5"]
    # Tolerances configured: every metric is gated, by the file's patterns or at 0.
    assert data["settings"]["gate"] == "config"
    assert data["settings"]["config"] == str(tmp_path / "gapscope.toml")
    assert data["metrics"][GAP]["rule"] == "config" and data["metrics"]["image/cone"]["gated"]
    assert data["metrics"]["image/cone"]["reason"] == "no tolerance pattern selects it: tolerance 0"
    # A command-line tolerance for the same pattern comes later and wins.
    assert run("check", current, "-b", base, "-t", "gap=0.001").exit_code == 1


def test_config_from_pyproject_and_explicit_file(tmp_path, base_data):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.gapscope.check]\ntolerance = { gap = 0.5 }\n'
    )
    config = load_check_config()
    assert [(str(p), str(t)) for p, t in config.tolerances] == [("gap", "0.5")]
    assert config.source.endswith("pyproject.toml [tool.gapscope]")
    # gapscope.toml takes precedence over pyproject.toml.
    (tmp_path / "gapscope.toml").write_text("[check]\nsignificant = true\n")
    assert load_check_config().significant is True and load_check_config().tolerances == ()
    other = tmp_path / "ci" / "gate.toml"
    other.parent.mkdir()
    other.write_text('[check]\nthreshold = "R@5>=0.2"\n')
    assert [str(t) for t in load_check_config(other).thresholds] == ["R@5>=0.2"]
    base = write(tmp_path / "base.json", base_data)
    result = run("check", base, "--config", other, "-f", "json")
    assert result.exit_code == 0 and json.loads(result.stdout)["settings"]["thresholds"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[check]\ntolerances = { gap = 0.1 }\n", "unknown key 'tolerances' in [check]"),
        ("[check]\ntolerance = { gap = -0.1 }\n", "tolerance 'gap': expected a number >= 0"),
        ('[check]\ntolerance = { gap = "lots" }\n', "tolerance 'gap'"),
        ("[check]\ntolerance = 0.1\n", "tolerance must be a table"),
        ('[check]\nthreshold = ["gap=1"]\n', "expected METRIC<=VALUE"),
        ('[check]\nsignificant = "yes"\n', "significant must be true or false"),
        ("[check\n", "not valid TOML"),
    ],
)
def test_bad_config_exits_2(tmp_path, base_data, text, fragment):
    (tmp_path / "gapscope.toml").write_text(text)
    base = write(tmp_path / "base.json", base_data)
    result = run("check", base, "-b", base)
    exit_2(result, fragment)
    assert "gapscope.toml" in result.stderr


def test_missing_explicit_config_exits_2(tmp_path, base_data):
    base = write(tmp_path / "base.json", base_data)
    exit_2(run("check", base, "-b", base, "--config", tmp_path / "none.toml"), "does not exist")


# ----------------------------------------------------------------------------- machine outputs


def test_json_validates_and_junit_has_one_case_a_metric(tmp_path, base_data):
    base = write(tmp_path / "base.json", base_data)
    current = write(
        tmp_path / "c.json", changed(base_data, **{"image-text__gap": 0.05, "image__cone": -0.05})
    )
    result = run(
        "check",
        current,
        "-b",
        base,
        "-t",
        "*=0.01",
        "--threshold",
        "mir<=100",
        "-f",
        "json",
        "-o",
        tmp_path / "check.json",
        "--junit",
        tmp_path / "j.xml",
    )
    assert result.exit_code == 1
    data = json.loads((tmp_path / "check.json").read_text())
    jsonschema.validate(data, check_schema())
    assert data["summary"] == {
        "regressed": 1,
        "failed": 0,
        "improved": 1,
        "skipped": 0,
        "tracked": 0,
        "pass": len(data["metrics"]) - 2,
    }
    root = ET.parse(tmp_path / "j.xml").getroot()
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert sorted(c.get("name") for c in cases) == sorted(data["metrics"])
    assert suite.get("tests") == str(len(data["metrics"])) and suite.get("failures") == "1"
    failed = [c for c in cases if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == [GAP]
    assert failed[0].find("failure").get("message") == data["metrics"][GAP]["message"]
    assert failed[0].get("classname") == "gapscope.image-text"
    # Deterministic: the same check writes the same files.
    run(
        "check",
        current,
        "-b",
        base,
        "-t",
        "*=0.01",
        "--threshold",
        "mir<=100",
        "-f",
        "json",
        "-o",
        tmp_path / "again.json",
        "--junit",
        tmp_path / "again.xml",
    )
    assert (tmp_path / "again.json").read_text() == (tmp_path / "check.json").read_text()
    assert (tmp_path / "again.xml").read_text() == (tmp_path / "j.xml").read_text()


def test_junit_marks_skipped_metrics(unlabelled_data):
    result = check_report(as_report(unlabelled_data), thresholds=["R@1>=0"])
    root = ET.fromstring(to_junit_xml(result))
    skipped = [c.get("name") for c in root.iter("testcase") if c.find("skipped") is not None]
    assert skipped == ["image/recall/image->image/R@1", "text/recall/text->text/R@1"]
    assert root.get("skipped") == "2"


def test_github_annotations_only_under_github_actions(tmp_path, base_data):
    base = write(tmp_path / "base.json", base_data)
    current = write(tmp_path / "c.json", changed(base_data, **{"image-text__gap": 0.05}))
    plain = run("check", current, "-b", base, "-t", "gap=0")
    assert plain.exit_code == 1 and "::error" not in plain.output
    github = run("check", current, "-b", base, "-t", "gap=0", env={"GITHUB_ACTIONS": "true"})
    errors = [line for line in github.stdout.splitlines() if line.startswith("::error")]
    assert errors == [f"::error title=gapscope check::{github_annotations_message(base_data)}"]
    assert "::notice title=gapscope check::FAIL: 1 regressed" in github.stdout
    # With JSON on stdout the workflow commands go to stderr, so stdout stays one document.
    as_json = run(
        "check", current, "-b", base, "-t", "gap=0", "-f", "json", env={"GITHUB_ACTIONS": "true"}
    )
    json.loads(as_json.stdout)
    assert "::error title=gapscope check::" in as_json.stderr


def github_annotations_message(base_data) -> str:
    b = get_value(base_data, GAP)
    return (
        f"image-text/gap rose from {b:.4f} to {b + 0.05:.4f} (+0.0500), more than the tolerance 0"
    )


def test_annotation_messages_are_escaped(base_data):
    result = check_report(as_report(base_data), as_report(base_data))
    result.warnings.append("50% more\nrows")
    assert "::warning title=gapscope check::50%25 more%0Arows" in github_annotations(result)


# ----------------------------------------------------------------------------- stores and arrays


@pytest.fixture(scope="module")
def store(tmp_path_factory, paired):
    image, text, gi, gt, li, lt = paired
    items = {
        "image": [{"id": f"i{i}", "source": "", "group": int(g)} for i, g in enumerate(gi)],
        "text": [{"id": f"t{i}", "source": "", "group": int(g)} for i, g in enumerate(gt)],
    }
    path = tmp_path_factory.mktemp("check") / "store"
    EmbeddingStore.write(path, {"image": image, "text": text}, items)
    return path


def test_check_a_store_analyses_with_the_baseline_parameters(tmp_path, store):
    baseline = analyze(store, k="1,3", seed=5, bootstrap=20, metrics="gap,retrieval", device="cpu")
    base = write(tmp_path / "base.json", baseline.to_dict())
    result = run(
        "check", store, "-b", base, "--save-report", tmp_path / "new.json", "-q", "--significant"
    )
    assert result.exit_code == 0, result.output
    saved = load_report(tmp_path / "new.json")
    assert saved.params["k"] == [1, 3] and saved.params["seed"] == 5
    assert saved.params["bootstrap"] == 20 and saved.params["metrics"] == ["gap", "retrieval"]
    assert saved.to_json() == baseline.to_json()
    # An override changes the analysis: other K values are missing metrics -> exit 2.
    exit_2(run("check", store, "-b", base, "--k", "1,5", "-q"), "missing from the")


def test_check_arrays_against_thresholds(tmp_path, paired):
    import numpy as np

    image, text, *_ = paired
    np.save(tmp_path / "img.npy", image)
    np.save(tmp_path / "txt.npy", text[::2])
    result = run(
        "check",
        "--image",
        tmp_path / "img.npy",
        "--text",
        tmp_path / "txt.npy",
        "--threshold",
        "gap<=2",
        "--metrics",
        "gap",
        "-q",
    )
    assert result.exit_code == 0, result.output
    result = run(
        "check",
        "--image",
        tmp_path / "img.npy",
        "--text",
        tmp_path / "txt.npy",
        "--threshold",
        "gap<=0.01",
        "--metrics",
        "gap",
        "-q",
    )
    assert result.exit_code == 1
    exit_2(
        run("check", tmp_path / "img.npy", "--threshold", "gap<=1"),
        "neither a JSON report nor a store folder",
    )


def test_baseline_analysis_params_defaults_and_overrides():
    assert baseline_analysis_params(None)["k"] == [1, 5, 10]
    assert baseline_analysis_params(None, bootstrap=200)["bootstrap"] == 200
    with pytest.raises(GapscopeError, match="nothing to check"):
        check_report(Report(input={}, params={}))


def test_metrics_new_in_this_version_are_shown_not_gated(tmp_path, example_store):
    # A baseline written before mean_rank existed: its directions do not know the key, so the
    # report's mean ranks are new in this version, not a sign of different options.
    import json

    from typer.testing import CliRunner

    from gapscope import analyze
    from gapscope.cli import app

    report = analyze(example_store, metrics="gap,retrieval", device="cpu").to_dict()
    old = json.loads(json.dumps(report))
    for section in ("modalities", "pairs"):
        for entry in old[section].values():
            for direction in entry.get("recall", {}).values():
                direction.pop("mean_rank"), direction.pop("median_rank")
    (tmp_path / "now.json").write_text(json.dumps(report))
    stale = dict(
        old,
        directions={
            k: v for k, v in old["directions"].items() if k not in ("mean_rank", "median_rank")
        },
    )
    (tmp_path / "old.json").write_text(json.dumps(stale))
    runner = CliRunner()
    args = ["check", str(tmp_path / "now.json"), "--baseline", str(tmp_path / "old.json")]
    result = runner.invoke(app, [*args, "-f", "json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert not any("mean_rank" in key for key in document["metrics"])
    assert any("new in this version" in w for w in document["warnings"])
    # The same keys missing from a baseline whose version knew them: different options.
    (tmp_path / "odd.json").write_text(json.dumps(old))
    odd = runner.invoke(
        app, ["check", str(tmp_path / "now.json"), "--baseline", str(tmp_path / "odd.json")]
    )
    assert odd.exit_code == 2 and "missing from the baseline" in odd.output


# ----------------------------------------------------------------------------- audit fixes


@pytest.mark.parametrize(
    ("key", "before", "after", "beyond", "tolerances"),
    [
        # 0.85 - 0.83 is 0.020000000000000018 in floats: exactly the tolerance all the same.
        (R1, 0.85, 0.83, 0.82999999, []),  # the default gate's retrieval tolerance, 0.02
        (GAP, 0.60, 0.62, 0.62000001, [("gap", "0.02")]),
        (GAP, 0.5, 0.55, 0.55000001, [("gap", "10%")]),  # 0.55 - 0.5 = 0.050000000000000044
    ],
)
def test_a_change_of_exactly_the_tolerance_passes(
    base_data, key, before, after, beyond, tolerances
):
    from gapscope.gate.trend import trend_reports

    base = as_report(set_value(copy.deepcopy(base_data), key, before))
    # ``beyond`` is one unit of the 8th significant digit (what a report stores) further.
    for value, verdict in ((after, "pass"), (beyond, "regressed")):
        current = as_report(set_value(copy.deepcopy(base_data), key, value))
        result = check_report(current, base, tolerances=tolerances, significant=False)
        assert result.metrics[key].verdict == verdict, result.metrics[key].message
        assert result.exit_code == (1 if verdict == "regressed" else 0)
        # trend judges its points by the same comparison.
        trend = trend_reports([base, current], tolerances=tolerances, significant=False)
        assert trend.metrics[key].points[1].verdict == verdict


def test_a_change_of_exactly_the_tolerance_passes_through_the_cli(tmp_path, base_data):
    base = write(tmp_path / "b.json", set_value(copy.deepcopy(base_data), R1, 0.85))
    current = write(tmp_path / "c.json", set_value(copy.deepcopy(base_data), R1, 0.83))
    result = run("check", current, "-b", base, "--no-significant")
    assert result.exit_code == 0, result.output
    assert "regressed" not in result.stdout


def flipped_gap(data: dict) -> dict:
    """A copy whose ``directions`` say a higher gap is better."""
    out = copy.deepcopy(data)
    out["directions"]["gap"] = "higher"
    return out


def test_reports_that_disagree_on_a_direction_are_refused(tmp_path, base_data):
    from gapscope.gate.diff import diff_reports
    from gapscope.gate.trend import trend_reports

    worse = changed(base_data, **{"image-text__gap": +0.1})
    flipped = flipped_gap(worse)
    # Not a silent improvement (the report's direction used to win): bad input, both named.
    with pytest.raises(GapscopeError, match="disagree on the direction of 'gap'") as caught:
        check_report(as_report(flipped), as_report(base_data))
    assert "lower is better in the baseline, higher in the report" in str(caught.value)
    with pytest.raises(GapscopeError, match="higher is better in the baseline, lower in the"):
        check_report(as_report(worse), as_report(flipped_gap(base_data)))
    with pytest.raises(GapscopeError, match="lower is better in report A, higher in report B"):
        diff_reports(as_report(base_data), as_report(flipped))
    with pytest.raises(GapscopeError, match="disagree on the direction of 'gap'"):
        trend_reports([as_report(base_data), as_report(flipped)])
    base = write(tmp_path / "b.json", base_data)
    current = write(tmp_path / "c.json", flipped)
    exit_2(run("check", current, "-b", base), "disagree on the direction of 'gap'")
    exit_2(run("diff", base, current), "disagree on the direction of 'gap'")


def at_confidence(data: dict, confidence: float) -> dict:
    out = copy.deepcopy(data)
    out["params"]["confidence"] = confidence
    return out


def test_intervals_at_another_confidence_warn_and_messages_name_both(tmp_path, base_data):
    from gapscope.gate.diff import diff_reports

    assert base_data["params"]["confidence"] == 0.95
    # Far beyond the intervals: the default gate judges the gap by them.
    far = at_confidence(changed(base_data, **{"image-text__gap": +0.5}), 0.5)
    low, high = get_value(far, "image-text/gap_ci")
    set_value(far, "image-text/gap_ci", [low + 0.5, high + 0.5])
    result = check_report(as_report(far), as_report(base_data))
    gap = result.metrics[GAP]
    assert gap.rule == "significant" and gap.verdict == "regressed"
    assert gap.message.endswith("; the 95% (baseline) and 50% (report) intervals do not overlap")
    assert "both reports have its 95% (baseline) and 50% (report) interval" in gap.reason
    warning = "intervals were made with different confidence (0.95 in the baseline, 0.5 now)"
    assert any(warning in w for w in result.warnings), result.warnings
    diffed = diff_reports(as_report(base_data), as_report(far)).warnings
    # diff has no baseline: its warning names the two reports.
    assert any("(0.95 in report A, 0.5 in report B)" in w for w in diffed), diffed
    cli = run("check", write(tmp_path / "c.json", far), "-b", write(tmp_path / "b.json", base_data))
    assert cli.exit_code == 1 and "different confidence" in " ".join(cli.stdout.split())
    # The same level: no warning and one level named.
    same = check_report(as_report(at_confidence(far, 0.95)), as_report(base_data))
    assert not any("confidence" in w for w in same.warnings)
    assert same.metrics[GAP].message.endswith("; the 95% intervals do not overlap")
    # A report without intervals records no confidence: nothing to warn of.
    plain = copy.deepcopy(far)
    plain["params"]["bootstrap"] = None
    del plain["params"]["confidence"]
    result = check_report(as_report(plain), as_report(base_data))
    assert not any("confidence" in w for w in result.warnings), result.warnings


def test_a_check_that_compares_nothing_is_bad_input(tmp_path, base_data):
    empty = dict(copy.deepcopy(base_data), pairs={}, modalities={}, tuples={})
    with pytest.raises(GapscopeError, match="no metric to compare: neither the report nor"):
        check_report(as_report(empty), as_report(empty))
    path = write(tmp_path / "empty.json", empty)
    exit_2(run("check", path, "-b", path), "no metric to compare")


@pytest.mark.parametrize(
    ("threshold", "selected"),
    [
        ("image-text/gap_ci/high<=100", ["image-text/gap_ci/high"]),
        # The tracker spelling names the same bound.
        ("image-text/recall/text_to_image/R1_ci/low>=0", [f"{R1}_ci/low"]),
        ("*/R@1_ci/low>=0", [f"{R1}_ci/low", "image-text/recall/image->text/R@1_ci/low"]),
        ("separability_se<=100", ["image-text/separability_se"]),
        # The key's last components, as a bare name is its last: every pair's bound.
        ("gap_ci/high<=100", ["image-text/gap_ci/high"]),
        ("text->image/R@1_ci/low>=0", [f"{R1}_ci/low"]),
    ],
)
def test_a_threshold_may_name_an_interval_bound_or_a_standard_error(
    tmp_path, base_data, threshold, selected
):
    assert get_value(base_data, "image-text/separability_se") is not None
    result = check_report(as_report(base_data), thresholds=[threshold])
    for key in selected:
        entry = result.metrics[key]
        assert entry.rule == "threshold" and entry.verdict == "pass" and entry.direction is None
    assert set(selected) <= set(result.metrics)
    # Only what the pattern names: the metrics' own values are not selected with them.
    assert not any(k in result.metrics for k in (GAP, R1))
    document = run(
        "check", write(tmp_path / "r.json", base_data), "--threshold", threshold, "-f", "json"
    )
    assert document.exit_code == 0, document.output
    jsonschema.validate(json.loads(document.stdout), check_schema())


def test_a_full_key_selects_its_metric_alone_and_a_tail_every_pairs(base_data):
    """No key of a report is the tail of another, so matching a pattern's components
    against a key's last ones leaves full keys as they were."""
    from gapscope.gate.rules import MetricPattern

    keys = list(flatten_report(base_data))
    for key in keys:
        assert [k for k in keys if MetricPattern(key).matches(k)] == [key]
    three = {
        k.replace("image-text", "audio-text", 1): v for k, v in flatten_report(base_data).items()
    }
    both = [*keys, *three]
    assert [k for k in both if MetricPattern("gap_ci/high").matches(k)] == [
        "image-text/gap_ci/high",
        "audio-text/gap_ci/high",
    ]
    assert not MetricPattern("recall/text->image").matches(R1)  # components, not text


def test_a_threshold_on_an_interval_bound_fails_the_check_and_globs_select_no_bound(
    tmp_path, base_data
):
    low, _ = get_value(base_data, f"{R1}_ci")
    result = run(
        "check", write(tmp_path / "r.json", base_data), "--threshold", f"{R1}_ci/low>={low + 0.01}"
    )
    assert (
        result.exit_code == 1 and f"{R1}_ci/low is {low:.4f}, below the threshold" in result.stdout
    )
    # A glob over metrics selects no bound, no standard error and no what-if value.
    everything = check_report(as_report(base_data), thresholds=["*>=-1000"])
    assert GAP in everything.metrics
    assert not any("_ci/" in k or k.endswith("_se") or "/whatif/" in k for k in everything.metrics)
    with pytest.raises(GapscopeError, match="selects no metric"):
        check_report(as_report(base_data), thresholds=["image-text/whatif/centered/gap<=9"])
    # With a baseline, the bound's baseline value is shown beside the current one.
    bound = check_report(
        as_report(base_data), as_report(base_data), thresholds=[f"{R1}_ci/low>=0"]
    ).metrics[f"{R1}_ci/low"]
    assert bound.baseline == bound.current == low and bound.rule == "threshold"


def test_a_trend_refuses_later_reports_that_disagree_on_a_direction(base_data):
    from gapscope.gate.trend import trend_reports

    # The first report does not know the key, so each later one agrees with it; the two later
    # ones disagree with each other, which the trend's merged directions refuse.
    first = copy.deepcopy(base_data)
    del first["directions"]["gap"]
    reports = [as_report(first), as_report(base_data), as_report(flipped_gap(base_data))]
    with pytest.raises(GapscopeError, match="reports before c and c disagree on the direction"):
        trend_reports(reports, ["a", "b", "c"])
    assert trend_reports(reports[:2], ["a", "b"]).metrics  # agreeing reports trend
