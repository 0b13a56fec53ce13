"""The command line: formats, files, and bad input -> one line on stderr, exit 2, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gapscope.cli import app
from gapscope.data.store import EmbeddingStore
from gapscope.report import report_schema

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def assert_one_line_error(result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output


def test_analyze_example_store_table(example_store):
    result = run("analyze", example_store, "--quiet")
    assert result.exit_code == 0, result.output
    assert "image-text" in result.stdout
    assert "modality gap" in result.stdout
    assert "image->text" in result.stdout and "R@10" in result.stdout


def test_analyze_json_stdout_and_file(example_store, tmp_path):
    result = run(
        "analyze", example_store, "--format", "json", "--quiet", "--json", tmp_path / "r.json"
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    jsonschema.validate(data, report_schema())
    assert (tmp_path / "r.json").read_text() == result.stdout
    again = run("analyze", example_store, "--format", "json", "--quiet")
    assert again.stdout == result.stdout


def test_flat_and_csv(example_store, tmp_path):
    flat = run("analyze", example_store, "-f", "flat", "-q", "--metrics", "gap,cone")
    data = json.loads(flat.stdout)
    assert set(data) == {
        "checkpoint",
        "image-text/gap",
        "image-text/centroid_cosine",
        "image-text/centroid_norms/image",
        "image-text/centroid_norms/text",
        "image-text/gap_concentration/top1",
        "image-text/gap_concentration/top10",
        "image/cone",
        "text/cone",
    }
    assert data["checkpoint"] == "gapscope example generator"
    out = tmp_path / "r.csv"
    csv = run("analyze", example_store, "-f", "csv", "-q", "--metrics", "gap", "-o", out)
    assert csv.exit_code == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "metric,value,step,checkpoint"
    assert any(line.startswith("image-text/gap,") for line in lines)


def test_plain_arrays_in_three_formats(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 8)).astype(np.float32)
    np.save(tmp_path / "img.npy", x)
    torch.save(torch.from_numpy(x + 0.1), tmp_path / "txt.pt")
    from safetensors.numpy import save_file

    save_file({"audio": x - 0.1}, str(tmp_path / "aud.safetensors"))
    np.save(tmp_path / "labels.npy", np.array(["a", "b"] * 10))
    result = run(
        "analyze",
        "--image",
        tmp_path / "img.npy",
        "--text",
        tmp_path / "txt.pt",
        "--audio",
        tmp_path / "aud.safetensors",
        "--labels",
        tmp_path / "labels.npy",
        "-f",
        "json",
        "-q",
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data["pairs"]) == {"image-text", "image-audio", "text-audio"}
    assert data["modalities"]["image"]["recall"]["image->image"]["relevance"] == "labels"


def test_info(example_store):
    result = run("info", example_store)
    assert result.exit_code == 0
    assert "600" in result.stdout and "text" in result.stdout
    manifest = json.loads(run("info", example_store, "--json").stdout)
    assert manifest["format_version"] == 1


@pytest.fixture
def arrays_dir(tmp_path):
    rng = np.random.default_rng(0)
    good = rng.normal(size=(10, 4)).astype(np.float32)
    np.save(tmp_path / "good.npy", good)
    np.save(tmp_path / "rows9.npy", good[:9])
    nan = good.copy()
    nan[3, 1] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    inf = good.copy()
    inf[2, 0] = np.inf
    np.save(tmp_path / "inf.npy", inf)
    zero = good.copy()
    zero[5] = 0
    np.save(tmp_path / "zero.npy", zero)
    np.save(tmp_path / "flat.npy", good[:, 0])
    np.save(tmp_path / "dim3.npy", good[:, :3])
    np.save(tmp_path / "ints.npy", np.ones((10, 4), np.int32))
    data = (tmp_path / "good.npy").read_bytes()
    (tmp_path / "truncated.npy").write_bytes(data[:-20])
    (tmp_path / "notes.txt").write_text("hello")
    return tmp_path


@pytest.mark.parametrize(
    ("other", "fragment"),
    [
        ("rows9.npy", "row counts differ"),
        ("nan.npy", "row 3 contains NaN or Inf"),
        ("inf.npy", "row 2 contains NaN or Inf"),
        ("zero.npy", "row 5 is a zero vector"),
        ("flat.npy", "expected (rows, dim)"),
        ("dim3.npy", "dims differ"),
        ("ints.npy", "dtype int32"),
        ("truncated.npy", "cannot read"),
        ("notes.txt", "unknown suffix"),
        ("missing.npy", "no such file"),
    ],
)
def test_bad_arrays_exit_2_with_one_line(arrays_dir, other, fragment):
    result = run("analyze", "--image", arrays_dir / "good.npy", "--text", arrays_dir / other, "-q")
    assert_one_line_error(result, fragment)


def test_bad_store_and_usage(tmp_path, example_store):
    assert_one_line_error(run("analyze", tmp_path / "nope", "-q"), "no such store")
    EmbeddingStore.create(tmp_path / "empty")
    assert_one_line_error(run("analyze", tmp_path / "empty", "-q"), "incomplete")
    assert_one_line_error(run("analyze", "-q"), "give a store folder")
    assert_one_line_error(run("analyze", example_store, "-f", "xml"), "unknown format")
    assert_one_line_error(run("analyze", example_store, "--k", "a"), "k must be positive")
    assert_one_line_error(run("analyze", example_store, "--metrics", "gapp"), "unknown metric")


def test_truncated_store_file(tmp_path, example_store):
    import shutil

    copy = tmp_path / "store"
    shutil.copytree(example_store, copy)
    data = (copy / "text.npy").read_bytes()
    (copy / "text.npy").write_bytes(data[: len(data) // 2])
    assert_one_line_error(run("analyze", copy, "-q"), "truncated")


def test_real_process_exit_code_and_no_traceback(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((3, 4), np.float32))
    np.save(tmp_path / "b.npy", np.ones((4, 4), np.float32))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gapscope",
            "analyze",
            "--image",
            str(tmp_path / "a.npy"),
            "--text",
            str(tmp_path / "b.npy"),
            "-q",
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("Error: ")
    assert "Traceback" not in proc.stderr
    version = subprocess.run(
        [sys.executable, "-m", "gapscope", "--version"], capture_output=True, text=True, timeout=120
    )
    assert version.returncode == 0 and version.stdout.startswith("gapscope ")


def test_unwritable_output_is_one_line(example_store, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = run(
        "analyze",
        example_store,
        "-q",
        "--metrics",
        "gap",
        "-f",
        "json",
        "-o",
        blocker / "report.json",
    )
    assert_one_line_error(result, str(blocker))
    assert blocker.read_text() == "not a folder"


def test_a_crash_is_one_line_and_exit_3(monkeypatch, tmp_path):
    # A bug deep in the library (simulated): exit 3 and one line naming the file that holds
    # the traceback (in the temporary folder), the traceback on stderr on request.
    import tempfile

    import gapscope.api

    crashes = tmp_path / "tmp"
    crashes.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(crashes))

    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(gapscope.api, "analyze", broken)
    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", rng.normal(size=(5, 3)).astype(np.float32))
    args = ["analyze", "--image", str(tmp_path / "a.npy"), "--text", str(tmp_path / "a.npy"), "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 3
    assert result.stderr.count("\n") == 1
    assert "ZeroDivisionError: division by zero" in result.stderr and "GAPSCOPE_TRACEBACK" in (
        result.stderr
    )
    [crash_file] = crashes.glob("gapscope-crash-*.txt")
    assert str(crash_file) in result.stderr
    text = crash_file.read_text()
    assert "Traceback (most recent call last)" in text and "def broken" not in result.stderr
    assert "ZeroDivisionError: division by zero" in text and "in broken" in text
    assert crash_file.stat().st_mode & 0o077 == 0  # private: tracebacks show paths and data
    monkeypatch.setenv("GAPSCOPE_TRACEBACK", "1")
    assert isinstance(runner.invoke(app, args).exception, ZeroDivisionError)
