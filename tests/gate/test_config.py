"""The config file of gapscope check (and trend): a misspelled or misplaced table is refused,
never ignored (ignoring it would loosen the gate), and another tool's pyproject.toml is not
ours to judge."""

from __future__ import annotations

import pytest
from helpers import make_paired
from report_paths import write
from typer.testing import CliRunner

from gapscope import analyze
from gapscope.cli import app
from gapscope.gate.config import find_config, load_check_config

runner = CliRunner()

#: A threshold the report fails: read, it makes check exit 1; ignored, check passes.
STRICT = 'threshold = ["image-text/gap<=0.01"]\n'


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    # Config files must come from the test, not from where the suite runs.
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def report_data() -> dict:
    image, text, *_ = make_paired(n=30, d=8, captions=1, seed=5)
    return analyze({"image": image, "text": text}, metrics="gap,cone", device="cpu").to_dict()


def check(tmp_path, data, *args):
    base = write(tmp_path / "base.json", data)
    return runner.invoke(app, ["check", str(base), "-b", str(base), *map(str, args)])


def exit_2(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_a_strict_config_is_read(tmp_path, report_data):
    # The files below differ from this one only by a typo or a place: it fails the check.
    (tmp_path / "ci.toml").write_text("[check]\n" + STRICT)
    assert check(tmp_path, report_data, "--config", tmp_path / "ci.toml").exit_code == 1


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[chek]\n" + STRICT, "unknown table [chek]; the settings go in a [check] table"),
        (STRICT, "unknown key 'threshold'; the settings go in a [check] table"),
        (
            "[tool.gapscope.check]\n" + STRICT,
            "unknown table [tool]; [tool.gapscope] is read only from a file named pyproject.toml",
        ),
        ("[check]\n" + STRICT + "[analyze]\nk = 5\n", "unknown table [analyze]"),
        ("# no settings\n", "no [check] table"),
    ],
)
def test_a_misspelled_or_misplaced_table_exits_2(tmp_path, report_data, text, fragment):
    (tmp_path / "ci.toml").write_text(text)
    exit_2(check(tmp_path, report_data, "--config", tmp_path / "ci.toml"), "ci.toml: ", fragment)
    # Found in the current directory as gapscope.toml, the same file is refused alike.
    (tmp_path / "gapscope.toml").write_text(text)
    exit_2(check(tmp_path, report_data), "gapscope.toml: ", fragment)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            "[tool.gapscope.chek]\n" + STRICT,
            "unknown table [tool.gapscope.chek]; the settings go in a [tool.gapscope.check] table",
        ),
        ('[tool.gapscope]\nthreshold = ["gap<=0.01"]\n', "unknown key 'threshold'"),
        ("[tool.gapscope]\n", "no [tool.gapscope.check] table"),
        ('[tool]\ngapscope = "x"\n', "tool.gapscope must be a table like [tool.gapscope.check]"),
    ],
)
def test_a_bad_gapscope_table_in_pyproject_exits_2(tmp_path, report_data, text, fragment):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n' + text)
    exit_2(check(tmp_path, report_data), "pyproject.toml", fragment)


@pytest.mark.parametrize(
    "text",
    ["tool = 1\n", '[project]\nname = "x"\n\n[tool.ruff]\nline-length = 100\n', ""],
)
def test_another_tools_pyproject_is_not_read(tmp_path, report_data, text):
    (tmp_path / "pyproject.toml").write_text(text)
    assert find_config(tmp_path) is None
    assert load_check_config().source is None
    result = check(tmp_path, report_data)
    assert result.exit_code == 0, result.output
    # Given by --config it must have the table: the user meant it to hold settings.
    exit_2(
        check(tmp_path, report_data, "--config", tmp_path / "pyproject.toml"),
        "no [tool.gapscope.check] table",
    )
