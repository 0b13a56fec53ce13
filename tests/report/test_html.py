"""The HTML report: self-contained (nothing fetched), complete, escaped, and rendered by a real
browser (headless Chromium, skipped with a reason where it is not installed)."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess

import numpy as np
import pytest

from gapscope import analyze
from gapscope.data.embedding_set import EmbeddingSet
from gapscope.report.html import render_html, write_html_report
from gapscope.report.model import Report

URL_ATTRIBUTE = re.compile(
    r"""(?:src|href|action|poster|data)\s*=\s*["']?\s*(?!data:)[a-z]+:""", re.IGNORECASE
)


@pytest.fixture(scope="module")
def example(example_store):
    return analyze(example_store, device="cpu")


@pytest.fixture(scope="module")
def full_page(example, tmp_path_factory):
    """The example store's report with diagnostics and plots, written once for the module."""
    pytest.importorskip("matplotlib", reason="plots need the optional matplotlib")
    return write_html_report(tmp_path_factory.mktemp("html") / "report.html", example)


def assert_self_contained(page: str) -> None:
    lowered = page.lower()
    assert "http://" not in lowered and "https://" not in lowered
    assert not re.search(r"""(?:src|href)\s*=\s*["']?//""", page, re.IGNORECASE)
    assert not URL_ATTRIBUTE.search(page)
    for tag in ("<script", "<link", "<iframe", "<object", "<embed", "@import", "url("):
        assert tag not in lowered, tag


def test_html_is_self_contained_with_tables_and_plots(example, full_page):
    report = example
    page = full_page.read_text("utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert_self_contained(page)
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 4  # projection, gap dimensions, histogram, recall curves
    for payload in images:
        assert base64.b64decode(payload)[:8] == b"\x89PNG\r\n\x1a\n"
    pair = report.to_dict()["pairs"]["image-text"]
    for text in (
        f"{pair['gap']:.4f}",
        f"{pair['paired_cosine']:.4f}",
        f"{100 * pair['recall']['text->image']['R@5']:.1f}%",
        f"{pair['cka']:.4f}",
        "What if the gap were closed?",
        "shift_1.0",
        "effective_rank",
        # The terminal's readings come along.
        "large: modalities occupy separate cones",
    ):
        assert text in page, text


def test_html_from_json_has_no_plots_and_escapes_strings(example):
    report = example
    doc = report.to_dict()
    doc["input"]["source"] = '<script>alert("x")</script>'
    doc["notes"] = ["a & b <i>"]
    page = render_html(Report.from_dict(doc))
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "a &amp; b &lt;i&gt;" in page
    assert "<img" not in page and "Plots" not in page
    assert_self_contained(page)


def test_html_says_how_to_get_plots_without_matplotlib(example, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    page = render_html(example)
    assert "<img" not in page and "gapscope[plot]" in page


def test_html_three_modalities_shows_matrices_and_gram_volume():
    rng = np.random.default_rng(0)
    content = rng.normal(size=(30, 6))
    arrays = {
        m: content + rng.normal(size=6) + 0.5 * rng.normal(size=(30, 6))
        for m in ("image", "text", "audio")
    }
    data = EmbeddingSet.from_arrays(arrays)
    report = analyze(data, device="cpu", metrics="gap,cosine,diagnostics")
    page = render_html(Report.from_json(report.to_json()))
    assert "Every pair of modalities" in page and "GRAM volume" in page
    assert "image-text-audio" in page
    gap = report.to_dict()["pairs"]["text-audio"]["gap"]
    assert page.count(f"{gap:.4f}") >= 3  # the pair table, the summary and the matrix (twice)
    assert_self_contained(page)


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    chromium() is None,
    reason="headless Chromium is not installed "
    "(Debian: apt-get install chromium); .ci/run installs it",
)
def test_html_renders_in_headless_chromium(full_page, tmp_path):
    image = pytest.importorskip("PIL.Image")
    page = full_page
    shot = tmp_path / "screenshot.png"
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1200,1600",
        page.resolve().as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert shot.is_file(), done.stderr[-2000:]
    rgb = np.asarray(image.open(shot).convert("RGB"), dtype=np.int16)
    assert rgb.shape == (1600, 1200, 3)
    # Not blank: the header band is dark, the page light, and tables and plots add colours.
    assert rgb.std() > 20
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 200
    # The header band has the stylesheet's background (#1d3557), so the inline CSS applied.
    header = np.median(rgb[10:90, 600:1180].reshape(-1, 3), axis=0)
    assert np.all(np.abs(header - np.array([29, 53, 87])) <= 6), header
    # The plots render: the projection's image points (#1f77b4) appear on screen.
    blue = np.all(np.abs(rgb - np.array([31, 119, 180])) < 40, axis=2)
    assert blue.sum() > 200
