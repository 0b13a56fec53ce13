"""``gapscope trend``: reports in step order, each later one judged against the first as
``check`` judges a report against its baseline (values chosen here, so which points regress
is known by hand), a table that keeps every metric name whole at 80 and 120 columns, JSON and
the long table, bad input as one line, and the HTML page rendered by headless Chromium."""

from __future__ import annotations

import copy
import html
import io
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from chromium_testkit import needs_chromium, probe, screenshot
from helpers import REPO, make_paired
from rich.console import Console
from typer.testing import CliRunner

from gapscope import analyze
from gapscope.cli import app
from gapscope.errors import GapscopeError
from gapscope.gate.trend import trend_reports
from gapscope.gate.trend_outputs import _nice_ticks, render_trend, render_trend_html
from gapscope.report.long import LONG_COLUMNS
from gapscope.report.model import Report

runner = CliRunner()
ANSI = re.compile(r"\x1b\[[0-9;]*m")
CLEAN_ENV = {"COLUMNS": None, "NO_COLOR": None, "FORCE_COLOR": None, "GITHUB_ACTIONS": None}
GAP = "image-text/gap"
R1 = "image-text/recall/image->text/R@1"
CONE = "image/cone"

#: step -> (gap, image->text R@1, image cone), in the order the files are given. Against the
#: first report (step 100) by the default gate (tolerance 0.02 for the gap and retrieval; the
#: cone tracked): step 200 R@1 fell 0.05 (regressed), gap +0.015 (within); step 300 gap +0.06
#: (regressed); step 400 gap -0.03 (improved), R@1 +0.03 (improved); the cone moves a lot
#: and never regresses (tracked).
VALUES = {
    300: (0.56, 0.61, 0.40),
    100: (0.50, 0.60, 0.30),
    200: (0.515, 0.55, 0.60),
    400: (0.47, 0.63, 0.90),
}
REGRESSED = {(GAP, 300), (R1, 200)}


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    # trend reads check's config file from the current directory: the test's, not the suite's.
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def base() -> dict:
    """A real, schema-valid report of small arrays, as JSON data."""
    image, text, *_ = make_paired(n=40, d=8, captions=1, seed=4)
    return analyze(
        {"image": image, "text": text}, metrics="gap,cosine,retrieval,cone", k="1,5", device="cpu"
    ).to_dict()


def variant(base: dict, step: int | None, gap: float, r1: float, cone: float) -> dict:
    data = copy.deepcopy(base)
    data["run"]["step"] = step
    data["pairs"]["image-text"]["gap"] = gap
    data["pairs"]["image-text"]["recall"]["image->text"]["R@1"] = r1
    data["modalities"]["image"]["cone"] = cone
    return data


@pytest.fixture
def files(base, tmp_path) -> list[str]:
    paths = []
    for step, values in VALUES.items():
        path = tmp_path / f"step-{step}.json"
        path.write_text(json.dumps(variant(base, step, *values)))
        paths.append(str(path))
    return paths


def run(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env={**CLEAN_ENV, **(env or {})})


def load(paths):
    return [Report.from_json(open(p).read()) for p in paths]


def test_reports_follow_their_steps_and_regressions_are_judged_against_the_first(files):
    result = trend_reports(load(files), files)
    assert result.xs == [100, 200, 300, 400] and result.axis == "step"
    assert [r["name"].rsplit("-", 1)[1] for r in result.reports] == [
        "100.json",
        "200.json",
        "300.json",
        "400.json",
    ]
    assert result.order == [1, 2, 0, 3]
    steps = sorted(VALUES)
    for key, column in ((GAP, 0), (R1, 1), (CONE, 2)):
        points = result.metrics[key].points
        assert [p.value for p in points] == [VALUES[s][column] for s in steps]
    found = {(key, result.xs[i]) for key, i in result.regressions}
    assert found == REGRESSED
    assert [p.verdict for p in result.metrics[GAP].points] == [
        "first",
        "pass",
        "regressed",
        "improved",
    ]
    assert [p.verdict for p in result.metrics[R1].points][1:] == ["regressed", "pass", "improved"]
    assert {p.verdict for p in result.metrics[CONE].points[1:]} == {"tracked"}
    assert not result.metrics[CONE].gated and result.metrics[GAP].gated
    assert "rose from 0.5000 to 0.5600" in result.metrics[GAP].points[2].message


def test_intervals_decide_where_both_reports_have_them(base):
    def at(step, gap, ci):
        data = variant(base, step, gap, 0.6, 0.3)
        data["pairs"]["image-text"]["gap_ci"] = ci
        return Report.from_dict(data)

    reports = [
        at(1, 0.50, [0.48, 0.52]),
        at(2, 0.56, [0.53, 0.59]),  # the intervals do not overlap: regressed
        at(3, 0.58, [0.50, 0.66]),  # worse by more than 0.02, but they overlap: not
    ]
    gap = trend_reports(reports).metrics[GAP]
    assert [p.verdict for p in gap.points] == ["first", "regressed", "pass"]
    assert [p.rule for p in gap.points] == [None, "significant", "significant"]
    assert gap.points[2].ci == (0.50, 0.66)
    # Tolerances instead of the default gate: gap=0.1 lets 0.56 and 0.58 pass.
    configured = trend_reports(reports, tolerances=[("gap", "0.1")], significant=False)
    assert [p.verdict for p in configured.metrics[GAP].points] == ["first", "pass", "pass"]


def test_equal_steps_keep_their_order_and_no_steps_mean_positions(base):
    a, b, c = (Report.from_dict(variant(base, 5, g, 0.6, 0.3)) for g in (0.5, 0.6, 0.4))
    result = trend_reports([a, b, c], ["a", "b", "c"])
    assert [r["name"] for r in result.reports] == ["a", "b", "c"]
    unstepped = [Report.from_dict(variant(base, None, g, 0.6, 0.3)) for g in (0.5, 0.4)]
    result = trend_reports(unstepped, ["x", "y"])
    assert result.axis == "position" and result.xs == [1, 2]
    assert result.label(1) == "#2"
    with pytest.raises(GapscopeError, match="y records no step while x records step 5"):
        trend_reports([a, unstepped[1]], ["x", "y"])


@pytest.mark.parametrize("columns", [80, 120])
def test_table_keeps_every_name_whole(files, columns):
    result = run("trend", *files, env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert not ANSI.search(out)
    assert max(len(line) for line in out.splitlines()) <= columns
    assert "…" not in out
    names = trend_reports(load(files), files).metrics
    for name in names:
        assert re.search(rf"(^|[ │]){re.escape(name)}([ │]|$)", out, re.M), name
    # The marker follows exactly the regressed values.
    assert sorted(re.findall(r"(\d\.\d{4}) !", out)) == ["0.5500", "0.5600"]
    assert "regressed at step 200: image-text/recall/image->text/R@1 fell" in " ".join(out.split())
    assert "2 regressed points in 2 of" in out


def test_colour_on_a_terminal_and_none_with_no_color(files):
    result = trend_reports(load(files), files)
    buffer = io.StringIO()
    render_trend(result, Console(file=buffer, force_terminal=True, color_system="standard"))
    coloured = buffer.getvalue()
    assert re.search(r"\x1b\[1;31m\s*0\.5600 !", coloured), coloured[:3000]
    buffer = io.StringIO()
    render_trend(result, Console(file=buffer, force_terminal=True, no_color=True, width=120))
    plain = buffer.getvalue()
    assert "0.5600 !" in plain and not re.search(r"\x1b\[(?:\d+;)*3\dm", plain)


def test_metrics_option_selects_and_json_is_deterministic(files, tmp_path):
    out = run("trend", *files, "--metrics", "gap,R@1", "-f", "json")
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["schema"] == "gapscope.trend/1" and doc["axis"] == "step"
    # Intra-modal recall is null without labels: left out.
    assert set(doc["metrics"]) == {GAP, R1, "image-text/recall/text->image/R@1"}
    assert [r["step"] for r in doc["reports"]] == [100, 200, 300, 400]
    assert {(r["metric"], r["x"]) for r in doc["regressions"]} == REGRESSED
    assert doc["metrics"][GAP]["points"][2]["verdict"] == "regressed"
    again = run("trend", *reversed(files), "--metrics", "gap,R@1", "-f", "json")
    # The files in another order: the same steps, the same document, byte for byte.
    assert again.stdout == out.stdout


def test_json_follows_its_shipped_schema(files, base):
    from gapscope.gate.schema import first_problem
    from gapscope.gate.trend import trend_schema

    schema = trend_schema()
    unstepped = [Report.from_dict(variant(base, None, g, 0.6, 0.3)) for g in (0.5, 0.4)]
    for result in (trend_reports(load(files), files), trend_reports(unstepped)):
        doc = json.loads(result.to_json())
        assert first_problem(doc, schema) is None
        jsonschema = pytest.importorskip("jsonschema")
        jsonschema.validate(doc, schema)
    broken = json.loads(trend_reports(load(files), files).to_json())
    broken["metrics"][GAP]["points"][1]["verdict"] = "worse"
    assert first_problem(broken, schema) is not None


def test_long_format_has_every_report_in_step_order(files, tmp_path):
    out = run("trend", *files, "-f", "long")
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert lines[0] == ",".join(LONG_COLUMNS)
    steps = [int(line.split(",")[9]) for line in lines[1:]]
    assert steps == sorted(steps) and set(steps) == set(VALUES)
    parquet = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "trend.parquet"
    assert run("trend", *files, "-f", "long", "-o", path).exit_code == 0
    table = parquet.read_table(path).to_pylist()
    gaps = [(r["step"], r["value"]) for r in table if r["pair"] and r["metric"] == "gap"]
    assert gaps == [(s, VALUES[s][0]) for s in sorted(VALUES)]


def test_bad_input_is_one_line_and_exit_2(files, base, tmp_path):
    image, _, *_ = make_paired(n=40, d=8, captions=1, seed=4)
    other = analyze(
        {"image": image, "audio": image + 0.1},
        metrics="gap,cosine,retrieval,cone",
        k="1,5",
        device="cpu",
    ).to_dict()
    other["run"]["step"] = 900
    (tmp_path / "audio.json").write_text(json.dumps(other))
    (tmp_path / "broken.json").write_text("{not json")
    nostep = tmp_path / "nostep.json"
    nostep.write_text(json.dumps(variant(base, None, 0.5, 0.6, 0.3)))
    cases = {
        (files[0],): "a trend needs two reports or more, got 1",
        (files[0], str(tmp_path / "none.json")): "none.json does not exist",
        (files[0], str(tmp_path / "broken.json")): "is not a JSON report",
        (files[0], str(tmp_path / "audio.json")): "a trend follows reports of the same",
        (files[0], str(nostep)): "records no step while",
        (*files, "--metrics", "nosuch"): "--metrics 'nosuch' selects no metric",
        (*files, "--tolerance", "gap"): "expected METRIC=VALUE",
        (*files, "-f", "xml"): "unknown format 'xml'",
        (*files, "-o", str(tmp_path / "t.parquet")): "Parquet is written by --format long only",
    }
    for args, fragment in cases.items():
        result = run("trend", *args)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.exit_code == 2, (args, result.output)
        assert len(lines) == 1 and lines[0].startswith("Error: "), (args, result.stderr)
        assert fragment in lines[0], (args, lines)


def test_html_page_is_self_contained_with_a_plot_a_metric(files, tmp_path):
    page_path = tmp_path / "trend.html"
    result = run("trend", *files, "--html", page_path, "-o", tmp_path / "table.txt")
    assert result.exit_code == 0, result.output
    page = page_path.read_text("utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    lowered = page.lower()
    assert "http://" not in lowered and "https://" not in lowered
    assert re.findall(r"<script[^>]*>", lowered) == ["<script>"]
    assert "default-src 'none'" in page
    trend = trend_reports(load(files), files)
    assert page.count("<figure") == len(trend.metrics)
    assert len(re.findall(r"<svg viewBox=\"0 0 \d+ \d+\" role=\"img\"", page)) == len(trend.metrics)
    # A red ringed point a regression, in the right plots.
    assert page.count('r="8.5"') == len(REGRESSED)
    for key in (GAP, R1):
        figure = page.split(f'id="plot-{html.escape(key)}"')[1].split("</figure>")[0]
        assert figure.count('r="8.5"') == 1
    assert "2 regressed points" in page


def test_html_draws_intervals_as_whiskers(base):
    reports = []
    for step, gap in ((1, 0.5), (2, 0.6)):
        data = variant(base, step, gap, 0.6, 0.3)
        data["pairs"]["image-text"]["gap_ci"] = [gap - 0.01, gap + 0.01]
        reports.append(Report.from_dict(data))
    page = render_trend_html(trend_reports(reports, metrics=["gap"]))
    figure = page.split("<figure")[1]
    # Two whiskers: a vertical line and two caps each.
    assert figure.count('<g stroke="') == 2 and figure.count("<line x1=") >= 6


_PROBE = """<script>
window.addEventListener("load", function () {
  var width = window.innerWidth, wide = [];
  document.querySelectorAll("body *").forEach(function (el) {
    if (el.getBoundingClientRect().right > width + 0.5) { wide.push(el.tagName); }
  });
  var svg = document.querySelector("figure svg").getBoundingClientRect();
  var out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({width: width, scroll: document.documentElement.scrollWidth,
    wide: wide, plot: svg.width});
  document.body.appendChild(out);
});
</script>"""


@needs_chromium
@pytest.mark.parametrize("width", [800, 1280])
def test_html_fits_the_window_in_headless_chromium(files, base, tmp_path, width):
    # Twenty-four reports: the values stay in tables a few reports wide.
    many = []
    for i in range(24):
        path = tmp_path / f"many-{i}.json"
        path.write_text(json.dumps(variant(base, 1000 * (i + 1), 0.5 + 0.01 * i, 0.6, 0.3)))
        many.append(path)
    wide = tmp_path / "many.html"
    assert run("trend", *many, "--html", wide, "-o", tmp_path / "many.txt").exit_code == 0
    facts = probe(wide, width, tmp_path, _PROBE)
    assert facts["scroll"] <= width and facts["wide"] == [], facts
    assert wide.read_text("utf-8").count("<h2>Values</h2>") == 1
    page = tmp_path / "trend.html"
    assert (
        run("trend", *files, "--html", page, "-f", "json", "-o", tmp_path / "t.json").exit_code == 0
    )
    facts = probe(page, width, tmp_path, _PROBE)
    assert facts["width"] == width and facts["scroll"] <= width, facts
    assert facts["wide"] == [] and facts["plot"] > 250, facts
    rgb = screenshot(page, width, 2400, tmp_path)
    # The header band has the page's navy (#1d3557): the inline stylesheet applied.
    header = np.median(rgb[10:50, width // 2 : width - 20].reshape(-1, 3), axis=0)
    assert np.all(np.abs(header - np.array([29, 53, 87])) <= 6), header
    # The regressed points and their rings are drawn in the page's red (#b3261e).
    red = np.all(np.abs(rgb - np.array([179, 38, 30])) < 30, axis=2)
    assert red.sum() > 150, red.sum()


def test_the_readme_trend_section_runs_as_shown(tmp_path):
    """Every command of the README's trend section, run in order: each output line the README
    shows (but the ``...`` that stand for more) is in the command's output."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### `gapscope trend`") : readme.index("### `gapscope plot`")]
    (block,) = re.findall(r"```console\n(.*?)```", section, re.DOTALL)
    (tmp_path / "examples").symlink_to(REPO / "examples")
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    commands = 0
    for chunk in re.split(r"^\$ ", block, flags=re.MULTILINE)[1:]:
        command, *shown = chunk.splitlines()
        commands += 1
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, (command, done.stderr)
        output = " ".join((done.stdout + done.stderr).split())
        for line in shown:
            assert " ".join(line.split()) in output, (command, line)
    assert commands == 7
    assert (tmp_path / "trend.html").is_file() and (tmp_path / "trend.parquet").is_file()


def test_help_has_a_runnable_example():
    result = run("trend", "--help", env={"COLUMNS": "120"})
    assert result.exit_code == 0
    assert "Example:" in result.stdout and "gapscope trend step-*.json" in result.stdout


# ----------------------------------------------------------------------------- check's settings

#: Tolerances that let every move pass but the gap's rise at step 300, and a threshold that
#: step 200's R@1 (0.55) fails: the default gate would judge both otherwise.
SETTINGS = (
    'tolerance = { "*" = 1.0, "gap" = 0.05 }\n'
    'threshold = ["image-text/recall/image->text/R@1>=0.56"]\n'
    "significant = false\n"
)


@pytest.mark.parametrize("where", ["gapscope.toml", "pyproject.toml", "--config"])
def test_trend_judges_with_the_config_of_check_as_check_does(files, tmp_path, where):
    extra: list[str] = []
    if where == "gapscope.toml":
        (tmp_path / "gapscope.toml").write_text("[check]\n" + SETTINGS)
    elif where == "pyproject.toml":
        (tmp_path / "pyproject.toml").write_text(
            '[project]\nname = "x"\n\n[tool.gapscope.check]\n' + SETTINGS
        )
    else:
        (tmp_path / "ci").mkdir()
        (tmp_path / "ci" / "gate.toml").write_text("[check]\n" + SETTINGS)
        extra = ["--config", str(tmp_path / "ci" / "gate.toml")]
    out = run("trend", *files, *extra, "-f", "json")
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert where in doc["settings"]["config"] or where == "--config"
    first = tmp_path / "step-100.json"
    for i, step in enumerate(sorted(VALUES)[1:], start=1):
        checked = run("check", tmp_path / f"step-{step}.json", "-b", first, *extra, "-f", "json")
        assert checked.exit_code in (0, 1), checked.output
        verdicts = json.loads(checked.stdout)["metrics"]
        for key, metric in doc["metrics"].items():
            assert metric["points"][i]["verdict"] == verdicts[key]["verdict"], (step, key)
    points = {key: [p["verdict"] for p in m["points"]] for key, m in doc["metrics"].items()}
    assert points[GAP] == ["first", "pass", "regressed", "pass"]
    assert points[R1] == ["first", "failed", "pass", "pass"]
    assert {(r["metric"], r["x"]) for r in doc["regressions"]} == {(GAP, 300), (R1, 200)}
    table = run("trend", *files, *extra, env={"COLUMNS": "200"})
    text = " ".join(table.stdout.split())
    assert "gate: tolerances from " in text and "the default gate" not in text
    assert "failed at step 200: image-text/recall/image->text/R@1" in text
    assert "thresholds on every report but the first" in text


def test_a_bad_config_stops_trend_as_it_stops_check(files, tmp_path):
    (tmp_path / "gapscope.toml").write_text("[chek]\n" + SETTINGS)
    for command in (["trend", *files], ["check", files[0], "-b", files[1]]):
        result = run(*command)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1, result.output
        assert "gapscope.toml: unknown table [chek]" in lines[0]


# ----------------------------------------------------------------------------- metrics shown


def test_a_metric_the_first_reports_version_did_not_know_is_shown_skipped(base, tmp_path):
    old = variant(base, 100, 0.5, 0.6, 0.3)
    for modality in old["modalities"].values():
        modality.pop("cone")
    del old["directions"]["cone"]  # as a report of a version before the cone
    newer = [variant(base, step, 0.5, 0.6, cone) for step, cone in ((200, 0.4), (300, 0.35))]
    result = trend_reports([Report.from_dict(d) for d in (old, *newer)])
    cone = result.metrics[CONE]
    assert [p.value for p in cone.points] == [None, 0.4, 0.35]
    assert [p.verdict for p in cone.points] == ["skipped"] * 3 and not cone.gated
    assert "did not know it" in cone.points[1].message
    paths = []
    for data in (old, *newer):
        paths.append(tmp_path / f"step-{data['run']['step']}.json")
        paths[-1].write_text(json.dumps(data))
    out = run("trend", *paths, "--metrics", "cone", "-f", "json")
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert [p["value"] for p in doc["metrics"][CONE]["points"]] == [None, 0.4, 0.35]


def test_a_metric_undefined_in_every_report_is_named_in_the_footer(base, tmp_path):
    paths = []
    for step in (1, 2):
        data = variant(base, step, 0.5, 0.6, 0.3)
        for modality in data["modalities"].values():
            modality["cone"] = None
        paths.append(tmp_path / f"step-{step}.json")
        paths[-1].write_text(json.dumps(data))
    table = run("trend", *paths, "--metrics", "cone", env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    text = " ".join(table.stdout.split())
    # No table without a row: a line says so, and the footer names the metrics left out,
    # not as tracked ones.
    assert "no metric has a value in any of these reports" in text
    assert "┏" not in table.stdout  # no table drawn
    assert "left out, undefined (null) in every report (2): cone" in text
    assert "tracked, not gated" not in text and "in 0 metrics" not in text
    assert text.endswith("nothing to follow: no metric has a value")
    doc = json.loads(run("trend", *paths, "--metrics", "cone", "-f", "json").stdout)
    assert doc["metrics"] == {} and doc["undefined"] == [CONE, "text/cone"]


# ----------------------------------------------------------------------------- plots at the limits


def test_html_plots_values_near_the_float_limits(base, tmp_path):
    paths = []
    for step, cone in ((1, 1.7e308), (2, -1.7e308)):
        paths.append(tmp_path / f"step-{step}.json")
        paths[-1].write_text(json.dumps(variant(base, step, 0.5, 0.6, cone)))
    page_path = tmp_path / "trend.html"
    result = run("trend", *paths, "--metrics", CONE, "--html", page_path)
    assert result.exit_code == 0, result.output
    figure = page_path.read_text("utf-8").split(f'id="plot-{CONE}"')[1].split("</figure>")[0]
    # Both points drawn, inside the plot.
    centres = [float(v) for v in re.findall(r'<circle cx="[^"]+" cy="([^"]+)"', figure)]
    assert len(centres) == 2 and all(0 <= y <= 240 for y in centres), centres


def test_ticks_end_when_their_step_is_below_the_values_precision():
    # Reports round their values, so only a TrendResult made by hand plots values one ulp
    # apart; the ticks of such a range once never ended. A thread, so a regression fails here
    # rather than hanging the suite.
    found: list[list[float]] = []
    worker = threading.Thread(
        target=lambda: found.append(_nice_ticks(1.0, 1.0000000000000004)), daemon=True
    )
    worker.start()
    worker.join(30)
    assert found == [[1.0]]
    assert _nice_ticks(-1.7e308, 1.7e308, 3) == [-1e308, 0.0, 1e308]


def test_a_threshold_on_an_interval_bound_is_marked_as_check_fails_it(base):
    # check gates a bound a threshold names; the trend shows that point and marks it.
    reports = []
    for step, high in ((1, 0.40), (2, 0.45), (3, 0.70)):
        data = variant(base, step, 0.3, 0.6, 0.3)
        data["pairs"]["image-text"]["gap_ci"] = [0.2, high]
        reports.append(Report.from_dict(data))
    result = trend_reports(reports, ["a", "b", "c"], thresholds=["image-text/gap_ci/high<=0.5"])
    bound = result.metrics["image-text/gap_ci/high"]
    assert [p.verdict for p in bound.points] == ["first", "pass", "failed"]
    assert ("image-text/gap_ci/high", 2) in result.regressions


def test_trend_reads_a_report_from_standard_input_and_never_replaces_one(files, tmp_path):
    piped = runner.invoke(
        app,
        ["trend", *files[:-1], "-", "-f", "json"],
        input=Path(files[-1]).read_text(),
        env=CLEAN_ENV,
    )
    assert piped.exit_code == 0, piped.output
    names = [r["name"] for r in json.loads(piped.stdout)["reports"]]
    assert "(standard input)" in names and len(names) == len(files)
    before = Path(files[0]).read_text()
    for args in (["-o", files[0]], ["--html", files[1]], ["--html", "t.html", "-o", "t.html"]):
        result = run("trend", *files, *args)
        assert result.exit_code == 2, result.output
        assert "which it would replace" in result.stderr or "both" in result.stderr
    assert Path(files[0]).read_text() == before
    twice = run("trend", files[0], "-", "/dev/stdin")
    assert twice.exit_code == 2 and "cannot both be read from standard input" in twice.stderr
