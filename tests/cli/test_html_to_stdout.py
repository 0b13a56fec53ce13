"""``--html -`` writes the page to standard output, as ``-o -`` and ``--json -`` write there,
and never together with another output on standard output; no file named ``-`` is made."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from gapscope.cli import app

runner = CliRunner()
CLEAN_ENV = {"COLUMNS": None, "NO_COLOR": None, "FORCE_COLOR": None, "GITHUB_ACTIONS": None}


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    # A file named "-" would land in the current folder: the test's own.
    monkeypatch.chdir(tmp_path)


def run(*args):
    return runner.invoke(app, [str(a) for a in args], env=CLEAN_ENV)


def assert_refused(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: --html -"), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output


def is_page(text: str) -> bool:
    return text.lstrip().lower().startswith("<!doctype html") and text.rstrip().endswith("</html>")


@pytest.fixture(scope="module")
def reports(example_store, tmp_path_factory):
    folder = tmp_path_factory.mktemp("reports")
    paths = []
    for step in (100, 200):
        path = folder / f"step-{step}.json"
        result = runner.invoke(
            app,
            ["analyze", str(example_store), "-q", "--metrics", "gap", "--step", str(step)]
            + ["-f", "json", "-o", str(path)],
        )
        assert result.exit_code == 0, result.output
        paths.append(path)
    return paths


def test_analyze_html_dash_writes_the_page_to_stdout(example_store, tmp_path):
    table = tmp_path / "table.txt"
    result = run("analyze", example_store, "-q", "--metrics", "gap", "--html", "-", "-o", table)
    assert result.exit_code == 0, result.output
    assert is_page(result.stdout), result.stdout[:200]
    assert "modality gap" in table.read_text()
    assert not (tmp_path / "-").exists()


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ([], "no --output"),
        (["-o", "-"], "--output -"),
        (["-f", "json"], "no --output"),
        (["-o", "t.txt", "--json", "-"], "--json -"),
        (["-o", "/dev/stdout"], "--output /dev/stdout"),
    ],
)
def test_analyze_refuses_two_outputs_on_stdout(example_store, tmp_path, extra, named):
    result = run("analyze", example_store, "-q", "--metrics", "gap", "--html", "-", *extra)
    assert_refused(result, named, "standard output")
    assert result.stdout == ""  # refused before any work
    assert not (tmp_path / "-").exists()


def test_analyze_html_file_and_json_dash_still_work(example_store, tmp_path):
    page = tmp_path / "r.html"
    result = run("analyze", example_store, "-q", "--metrics", "gap", "--html", page, "-f", "json")
    assert result.exit_code == 0, result.output
    assert is_page(page.read_text()) and result.stdout.startswith("{")


def test_trend_html_dash_writes_the_page_to_stdout(reports, tmp_path):
    table = tmp_path / "trend.txt"
    result = run("trend", *reports, "--html", "-", "-o", table)
    assert result.exit_code == 0, result.output
    assert is_page(result.stdout), result.stdout[:200]
    assert "gapscope trend" in table.read_text()
    assert not (tmp_path / "-").exists()


@pytest.mark.parametrize("extra", [[], ["-o", "-"], ["-f", "json"], ["-f", "long"]])
def test_trend_refuses_two_outputs_on_stdout(reports, tmp_path, extra):
    result = run("trend", *reports, "--html", "-", *extra)
    assert_refused(result, "standard output")
    assert result.stdout == ""
    assert not (tmp_path / "-").exists()


@pytest.mark.parametrize(
    "args, named",
    [
        (["--json", "-"], "the --format output (no --output) and --json -"),
        (["-o", "-", "--junit", "/dev/stdout"], "--output - and --junit /dev/stdout"),
        (["-o", "t.txt", "--json", "-", "--save-report", "-"], "--json - and --save-report -"),
    ],
)
def test_check_refuses_two_outputs_on_stdout(tmp_path, args, named):
    from gapscope import analyze

    rng = np.random.default_rng(0)
    report = analyze(
        {"image": rng.normal(size=(8, 4)), "text": rng.normal(size=(8, 4))}, metrics="gap"
    )
    path = tmp_path / "r.json"
    path.write_text(report.to_json())
    result = runner.invoke(app, ["check", str(path), "-b", str(path), *args])
    assert result.exit_code == 2, result.output
    assert f"{named} would both go to standard output" in result.stderr
    assert result.stdout == ""
