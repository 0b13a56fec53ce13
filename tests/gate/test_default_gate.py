"""The default gate of gapscope check: with no tolerance configured, the gap, the cosines,
alignment, uniformity and retrieval are gated (by their bootstrap intervals when both reports
have them, else by a tolerance on the scale of each family), every other metric is tracked;
the outputs (table, JSON document, JUnit) say which metric was gated and why."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest
from helpers import make_paired
from report_paths import get_value, set_value, write
from typer.testing import CliRunner

from gapscope import EmbeddingSet, analyze
from gapscope.cli import app
from gapscope.gate.check import check_report
from gapscope.gate.outputs import check_schema, to_junit_xml
from gapscope.gate.rules import DEFAULT_GATE, default_family
from gapscope.gate.schema import first_problem
from gapscope.report import Report
from gapscope.report.model import flatten_report

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]
GAP = "image-text/gap"
R1 = "image-text/recall/text->image/R@1"


@pytest.fixture(autouse=True)
def clean_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.chdir(tmp_path)  # no gapscope.toml or pyproject.toml from where tests run


@pytest.fixture(scope="module")
def with_intervals():
    image, text, gi, gt, li, lt = make_paired(n=40, d=8, captions=2, seed=11)
    data = EmbeddingSet.from_arrays({"image": image, "text": text[::2]}, labels=li)
    return analyze(data, bootstrap=50, seed=0, device="cpu", k="1,5").to_dict()


@pytest.fixture(scope="module")
def plain(with_intervals):
    """The same report without intervals (as analysed without --bootstrap)."""
    data = copy.deepcopy(with_intervals)
    for key in [k for k in flatten_report(data) if k.endswith("_ci/low")]:
        set_value(data, key[: -len("/low")], None)
    return data


def run(*args, **kwargs):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False, **kwargs)


def moved(data: dict, key: str, by: float) -> dict:
    return set_value(copy.deepcopy(data), key, get_value(data, key) + by)


def gate(current: dict, base: dict, **options) -> object:
    return check_report(Report.from_dict(current), Report.from_dict(base), **options)


# ----------------------------------------------------------------------------- which family


@pytest.mark.parametrize(
    ("key", "family", "tolerance", "worse"),
    [
        (GAP, "gap", 0.02, +1),
        ("image-text/centroid_cosine", "cosines", 0.02, -1),
        ("image-text/paired_cosine", "cosines", 0.02, -1),
        ("image-text/unpaired_cosine", "cosines", 0.02, +1),
        ("image-text/alignment", "alignment", 0.04, +1),
        ("image/uniformity", "uniformity", 0.04, +1),
        ("image-text/uniformity", "uniformity", 0.04, +1),
        (R1, "retrieval", 0.02, -1),
        ("image/recall/image->image/R@5", "retrieval", 0.02, -1),
        ("image/recall/image->image/mAP", "retrieval", 0.02, -1),
        ("text/recall/text->text/R-precision", "retrieval", 0.02, -1),
    ],
)
def test_each_family_has_its_tolerance_without_intervals(plain, key, family, tolerance, worse):
    assert default_family(key).name == family
    within = gate(moved(plain, key, worse * (tolerance - 0.001)), plain)
    beyond = gate(moved(plain, key, worse * (tolerance + 0.001)), plain)
    better = gate(moved(plain, key, -worse * (tolerance + 0.001)), plain)
    entry = beyond.metrics[key]
    assert within.metrics[key].verdict == "pass" and within.exit_code == 0
    assert entry.verdict == "regressed" and beyond.exit_code == 1
    assert better.metrics[key].verdict == "improved" and better.exit_code == 0
    assert (entry.rule, entry.tolerance, entry.tolerance_pattern) == (
        "default",
        f"{tolerance:g}",
        None,
    )
    assert entry.reason.startswith(f"default gate ({family}): tolerance {tolerance:g}, ")
    assert f"more than the tolerance {tolerance:g}" in entry.message
    assert entry.limit == pytest.approx(get_value(plain, key) + worse * tolerance)
    # Every other metric stayed where it was: nothing else fails.
    assert [m.metric for m in beyond.failures] == [key]


@pytest.mark.parametrize(
    "key",
    [
        "image/cone",
        "image-text/mir",
        "image-text/cka",
        "image/effective_rank",
        "image/variance_top1",
        "image-text/separability",
        "image-text/similarity/auc",
        "image-text/recall/text->image/mean_rank",
    ],
)
def test_metrics_outside_the_families_are_tracked_not_gated(plain, key):
    direction = plain["directions"][key.rsplit("/", 1)[-1]]
    worse = 1.0 if direction == "lower" else -1.0
    result = gate(moved(plain, key, worse * 0.5), plain)
    entry = result.metrics[key]
    assert default_family(key) is None
    assert entry.verdict == "tracked" and not entry.gated and entry.rule == "tracked"
    assert entry.change == pytest.approx(worse * 0.5)  # still compared and shown
    assert entry.tolerance is None and entry.limit is None and entry.message == ""
    assert result.exit_code == 0 and result.summary["tracked"] > 0
    # The same report with any configured tolerance: every metric gated, as before.
    strict = gate(moved(plain, key, worse * 0.5), plain, tolerances=[("gap", 0.02)])
    assert strict.metrics[key].verdict == "regressed" and strict.metrics[key].rule == "config"
    assert strict.exit_code == 1 and strict.settings["gate"] == "config"


def test_every_directional_metric_is_gated_or_tracked(plain):
    result = gate(plain, plain)
    rules = {key: m.rule for key, m in result.metrics.items()}
    assert set(rules.values()) == {"default", "tracked"}
    for key, rule in rules.items():
        assert (rule == "default") == (default_family(key) is not None), key
    assert result.settings["gate"] == "default" and result.settings["significant"] is False
    assert [f["family"] for f in result.settings["default_gate"]] == [
        "gap",
        "cosines",
        "alignment",
        "uniformity",
        "retrieval",
        "zero-shot",
    ]


# ----------------------------------------------------------------------------- intervals


def shifted(data: dict, key: str, by: float) -> dict:
    """``data`` with ``key`` and its interval moved by ``by``."""
    out = moved(data, key, by)
    low, high = get_value(data, f"{key}_ci")
    return set_value(out, f"{key}_ci", [low + by, high + by])


def test_with_intervals_a_change_counts_when_they_do_not_overlap(with_intervals):
    low, high = get_value(with_intervals, f"{GAP}_ci")
    width = high - low
    assert width > 0.02  # so that within the intervals is beyond the default tolerance
    near = gate(shifted(with_intervals, GAP, width / 2), with_intervals)
    entry = near.metrics[GAP]
    assert entry.rule == "significant" and entry.verdict == "pass" and near.exit_code == 0
    assert entry.significant is False and entry.tolerance is None and entry.limit is None
    assert entry.message.endswith("within noise: the 95% intervals overlap")
    assert "both reports have its 95% interval" in entry.reason
    far = gate(shifted(with_intervals, GAP, 1.5 * width), with_intervals)
    assert far.metrics[GAP].verdict == "regressed" and far.exit_code == 1
    assert far.metrics[GAP].message.endswith("; the 95% intervals do not overlap")
    assert far.settings["significant"] is True
    # --no-significant: the default tolerances instead, so the near move regresses.
    tolerant = gate(shifted(with_intervals, GAP, width / 2), with_intervals, significant=False)
    assert tolerant.metrics[GAP].rule == "default" and tolerant.exit_code == 1


def test_intervals_on_one_side_only_fall_back_to_the_tolerances(with_intervals, plain):
    result = gate(moved(plain, GAP, 0.03), with_intervals)
    assert result.metrics[GAP].rule == "default" and result.metrics[GAP].verdict == "regressed"
    assert result.settings["significant"] is False


def test_a_config_with_only_significant_keeps_the_default_gate(tmp_path, with_intervals, plain):
    (tmp_path / "gapscope.toml").write_text("[check]\nsignificant = true\n")
    base = write(tmp_path / "base.json", with_intervals)
    data = json.loads(run("check", base, "-b", base, "-f", "json").stdout)
    assert data["settings"]["gate"] == "default" and data["settings"]["significant"] is True
    assert data["metrics"][GAP]["rule"] == "significant"
    result = run("check", write(tmp_path / "plain.json", plain), "-b", base)
    assert result.exit_code == 2 and "--significant needs confidence intervals" in result.stderr


def test_a_threshold_gates_a_tracked_metric(plain):
    cka = get_value(plain, "image-text/cka")
    result = gate(plain, plain, thresholds=[f"image-text/cka>={cka + 0.1}"])
    entry = result.metrics["image-text/cka"]
    assert entry.rule == "threshold" and entry.gated and entry.verdict == "failed"
    assert entry.baseline == cka  # the comparison is still shown
    assert "the default gate only tracks it" in entry.reason and result.exit_code == 1
    gap = gate(plain, plain, thresholds=["image-text/gap<=100"]).metrics[GAP]
    assert gap.rule == "default" and gap.reason.endswith("; and the threshold image-text/gap<=100")


# ----------------------------------------------------------------------------- outputs


def test_the_outputs_say_what_was_gated_and_why(tmp_path, plain, with_intervals):
    base = write(tmp_path / "base.json", plain)
    current = write(tmp_path / "c.json", moved(moved(plain, GAP, 0.05), "image-text/cka", -0.5))
    table = run("check", current, "-b", base, "--junit", tmp_path / "j.xml", "--json", "out.json")
    assert table.exit_code == 1
    out = " ".join(table.stdout.split())  # lines are wrapped at the width of a CI log
    assert "gate: the default gate (no tolerances configured) gates the gap, the cosines" in out
    assert "by the default tolerances (gap 0.02, cosines 0.02, alignment 0.04, uniformity" in out
    assert "tracked, not gated" in out and "cka" in out
    assert "FAIL: 1 regressed" in out and "tracked" in out
    # The document, written beside the table with --json, validates and names each rule.
    document = json.loads((tmp_path / "out.json").read_text())
    jsonschema.validate(document, check_schema())
    assert first_problem(document, check_schema()) is None
    gap = document["metrics"][GAP]
    assert (gap["rule"], gap["gated"], gap["verdict"]) == ("default", True, "regressed")
    assert document["metrics"]["image-text/cka"]["verdict"] == "tracked"
    assert document["metrics"]["image-text/cka"]["gated"] is False
    assert document["summary"]["tracked"] == sum(
        m["verdict"] == "tracked" for m in document["metrics"].values()
    )
    # JUnit: gated metrics are test cases naming their rule; tracked ones are skipped.
    root = ET.parse(tmp_path / "j.xml").getroot()
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert cases[GAP].find("failure") is not None
    assert "rule default: default gate (gap): tolerance 0.02" in cases[GAP].find("failure").text
    skipped = cases["image-text/cka"].find("skipped")
    assert skipped is not None and skipped.get("message").startswith("tracked, not gated")
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert props["gate"] == "default"
    # With intervals, the limit column says the intervals decide.
    both = write(tmp_path / "ci.json", with_intervals)
    assert "CI overlap" in run("check", both, "-b", both).stdout
    xml = to_junit_xml(gate(with_intervals, with_intervals))
    assert "rule significant: default gate (gap): both reports have its 95% interval" in xml


def test_the_check_document_carries_the_checkpoints(tmp_path, plain):
    other = copy.deepcopy(plain)
    other["run"] = {"step": 2000, "tags": {}, "checkpoint": "ViT-B-32@sha256:abc"}
    result = run(
        "check", write(tmp_path / "c.json", other), "-b", write(tmp_path / "b.json", plain)
    )
    shown = " ".join(result.stdout.split())
    assert (
        "checkpoints: report ViT-B-32@sha256:abc (step 2000), baseline embeddings@sha256:" in shown
    )
    data = json.loads(
        run("check", tmp_path / "c.json", "-b", tmp_path / "b.json", "-f", "json").stdout
    )
    assert data["report"]["checkpoint"] == "ViT-B-32@sha256:abc" and data["report"]["step"] == 2000
    assert data["baseline"]["checkpoint"].startswith("embeddings@sha256:")


def test_the_readme_lists_the_default_tolerances():
    readme = (REPO / "README.md").read_text()
    for family in DEFAULT_GATE:
        names = ", ".join(f"`{p}`" for p in family.patterns)
        row = f"| {family.name} | {names} | {family.tolerance} |"
        assert row in readme, row


def test_the_readme_check_section_runs_as_shown(tmp_path):
    """Every command of the README's check section, run in order: each output line the README
    shows (but the ``...`` that stand for more) is in the command's output, and ``echo $?``
    shows the exit code."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### `gapscope check`") : readme.index("### `gapscope diff`")]
    blocks = re.findall(r"```console\n(.*?)```", section, re.DOTALL)
    (tmp_path / "examples").symlink_to(REPO / "examples")
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "GITHUB_ACTIONS")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    last = None
    commands = 0
    for block in blocks:
        for chunk in re.split(r"^\$ ", block, flags=re.MULTILINE)[1:]:
            command, *shown = chunk.splitlines()
            commands += 1
            if command == "echo $?":
                assert last is not None and shown == [str(last.returncode)]
                continue
            last = subprocess.run(
                ["bash", "-c", command],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            output = " ".join((last.stdout + last.stderr).split())
            for line in shown:
                if line.strip() != "...":
                    assert " ".join(line.split()) in output, (command, line)
    assert commands >= 8
