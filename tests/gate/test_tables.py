"""The check and diff tables at 80 and 120 columns: every metric name whole (the metric column
used to vanish from check at 80 columns, and diff cut names into 8-character pieces), at a
fixed wide width off a terminal unless COLUMNS says otherwise."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from gapscope import EmbeddingSet, analyze
from gapscope.cli import app
from gapscope.gate.check import check_report
from gapscope.gate.diff import diff_reports
from gapscope.gate.outputs import render_check, render_diff
from gapscope.report.model import Report

WIDTHS = (80, 120)


def three_modality_report(shift: float, bootstrap: int = 20) -> Report:
    rng = np.random.default_rng(0)
    n, d = 48, 10
    labels = rng.integers(0, 3, size=n)
    content = rng.normal(size=(3, d))[labels] + 0.6 * rng.normal(size=(n, d))
    offsets = np.random.default_rng(1).normal(size=(3, d))
    arrays = {
        m: (content + (1 + shift) * offsets[i] + 0.5 * rng.normal(size=(n, d))).astype(np.float32)
        for i, m in enumerate(("image", "text", "audio"))
    }
    data = EmbeddingSet.from_arrays(arrays, labels=labels)
    return analyze(data, device="cpu", bootstrap=bootstrap, seed=0)


@pytest.fixture(scope="module")
def reports() -> tuple[Report, Report]:
    return three_modality_report(0.0), three_modality_report(0.3)


def rendered(render, result, width: int) -> str:
    buffer = io.StringIO()
    render(result, Console(width=width, file=buffer))
    return buffer.getvalue()


@pytest.mark.parametrize("width", WIDTHS)
def test_check_shows_every_metric_name_whole(reports, width):
    base, current = reports
    result = check_report(current, base)
    assert len(result.metrics) > 40
    text = rendered(render_check, result, width)
    for key, m in result.metrics.items():
        assert key in text, (width, key)
        # The name and its verdict share a line (a table row or a block's first line).
        assert re.search(re.escape(key) + r"\b.*\b" + m.verdict, text), key
    assert "…" not in text
    assert all(len(line) <= width for line in text.splitlines())
    assert re.search(r"^(PASS|FAIL): ", text, re.M)


@pytest.mark.parametrize("width", WIDTHS)
def test_diff_shows_every_metric_name_whole(reports, width):
    base, current = reports
    result = diff_reports(base, current, all_keys=True)
    text = rendered(render_diff, result, width)
    for key in result.metrics:
        assert key in text, (width, key)
    assert "…" not in text
    assert all(len(line) <= width for line in text.splitlines())


def test_wide_consoles_get_one_line_a_metric(reports):
    base, current = reports
    result = check_report(current, base)
    text = rendered(render_check, result, 160)
    rows = [line for line in text.splitlines() if line.startswith("│")]
    # A table row a metric: the name between rules, its numbers on the same line.
    for key in result.metrics:
        assert len([row for row in rows if f"│ {key} " in row]) == 1, key
    assert len(rows) == len(result.metrics)


def test_cli_check_off_a_terminal_is_wide_unless_columns_says(reports, tmp_path):
    base, current = reports
    (tmp_path / "base.json").write_text(base.to_json())
    (tmp_path / "current.json").write_text(current.to_json())
    runner = CliRunner()
    args = ["check", str(tmp_path / "current.json"), "--baseline", str(tmp_path / "base.json")]
    wide = runner.invoke(app, args, env={"COLUMNS": None, "GITHUB_ACTIONS": None})
    assert wide.exit_code in (0, 1), wide.output
    assert max(len(line) for line in wide.stdout.splitlines()) > 100  # a table, one line a metric
    assert "┃ metric" in wide.stdout
    narrow = runner.invoke(app, args, env={"COLUMNS": "80", "GITHUB_ACTIONS": None})
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 80
    assert "┃ metric" not in narrow.stdout
    out = tmp_path / "check.txt"
    runner.invoke(app, [*args, "-o", str(out)], env={"COLUMNS": None, "GITHUB_ACTIONS": None})
    assert "┃ metric" in out.read_text()
