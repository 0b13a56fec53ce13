"""Reports of modalities named on the command line (``analyze --modality video=FILE``) are
reports like any other: ``check``, ``diff`` and ``trend`` read them, and ``check`` still
tells a regression from a pass."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from gapscope.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    folder = tmp_path_factory.mktemp("named")
    rng = np.random.default_rng(3)
    video = rng.normal(size=(40, 8)).astype(np.float32)
    for name, noise in (("close", 0.2), ("far", 2.0)):
        np.save(folder / f"video_{name}.npy", video)
        text = video + noise * rng.normal(size=video.shape).astype(np.float32)
        np.save(folder / f"text_{name}.npy", text)
        result = runner.invoke(
            app,
            [
                "analyze",
                "--modality",
                f"video={folder / f'video_{name}.npy'}",
                "--modality",
                f"depth_map={folder / f'text_{name}.npy'}",
                "--metrics",
                "gap,retrieval",
                "-q",
                "-f",
                "json",
                "-o",
                str(folder / f"{name}.json"),
            ],
        )
        assert result.exit_code == 0, result.output
    return folder


def test_the_report_keys_carry_the_names(reports):
    report = json.loads((reports / "close.json").read_text())
    assert set(report["input"]["modalities"]) == {"video", "depth_map"}
    # Names other than image, text and audio pair in alphabetical order.
    assert set(report["pairs"]) == {"depth_map-video"}
    assert set(report["pairs"]["depth_map-video"]["recall"]) == {
        "video->depth_map",
        "depth_map->video",
    }


def test_check_diff_and_trend_read_them(reports):
    close, far = str(reports / "close.json"), str(reports / "far.json")
    same = runner.invoke(app, ["check", close, "--baseline", close, "-q"])
    assert same.exit_code == 0, same.output
    worse = runner.invoke(app, ["check", far, "--baseline", close, "-q"])
    assert worse.exit_code == 1, worse.output
    diff = runner.invoke(app, ["diff", close, far, "-f", "json"])
    assert diff.exit_code == 0, diff.output
    metrics = json.loads(diff.output)["metrics"]
    assert metrics["depth_map-video/gap"]["b"] > metrics["depth_map-video/gap"]["a"]
    trend = runner.invoke(app, ["trend", close, far])
    assert trend.exit_code == 0, trend.output
