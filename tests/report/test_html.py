"""The HTML report: self-contained (nothing fetched), complete, escaped, reading like the
terminal (readings beside the values, a summary in words, a random-weights banner), sortable,
and rendered by a real browser at 800 and 1280 px without sideways scrolling (headless
Chromium, skipped with a reason where it is not installed)."""

from __future__ import annotations

import base64
import html
import re

import numpy as np
import pytest
from chromium_testkit import needs_chromium, probe, screenshot

from gapscope import analyze
from gapscope.data.embedding_set import EmbeddingSet
from gapscope.data.store import EmbeddingStore
from gapscope.report.html import render_html, write_html_report
from gapscope.report.model import Report
from gapscope.report.terminal import pair_lines

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
    for tag in ("<link", "<iframe", "<object", "<embed", "@import", "url(", "fetch(", "xmlhttp"):
        assert tag not in lowered, tag
    # One script, inline (no src), and a policy that forbids fetching anything at all.
    assert re.findall(r"<script[^>]*>", lowered) == ["<script>"]
    assert "default-src 'none'; img-src data:;" in page


def test_html_is_self_contained_with_tables_and_plots(example, full_page):
    report = example
    page = full_page.read_text("utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert_self_contained(page)
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    # projection, gap dimensions, histogram, recall curves, what-if sweep
    assert len(images) == 5
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
    assert '<script>alert("x")' not in page and "&lt;script&gt;alert" in page
    assert "a &amp; b &lt;i&gt;" in page
    assert "<img" not in page and "Plots" not in page
    assert_self_contained(page)


def test_html_says_how_to_get_plots_without_matplotlib(example, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    page = render_html(example)
    assert "<img" not in page and "gapscope[plot]" in page


def test_analyze_html_without_matplotlib_says_so_on_stderr(example_store, tmp_path, monkeypatch):
    """The page is written, exit 0, and one warning line says it has no plots."""
    import sys

    from typer.testing import CliRunner

    from gapscope.cli import app

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    page = tmp_path / "r.html"
    args = ["analyze", str(example_store), "-q", "--metrics", "gap", "--html", str(page)]
    result = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "t.txt")])
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == (
        f"warning: {page} has no plots: matplotlib is not installed (pip install 'gapscope[plot]')"
    )
    assert "gapscope[plot]" in page.read_text()


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


def test_html_reads_like_the_terminal(example, full_page):
    page = full_page.read_text("utf-8")
    # The plain-words reading of every row, beside its value, and its tone as a class.
    for pair in example.pairs:
        for line in pair_lines(example, pair):
            if line.reading:
                assert html.escape(line.reading, quote=True) in page, line.label
    gap = example.pairs["image-text"]["gap"]
    assert re.search(
        rf'data-value="{gap:.8g}" title="{gap:.8g} \(large: [^"]*\)" class="num worrying"', page
    )
    # A summary in words: what looks good and what is worth a look.
    assert '<h3 class="good">Looks good</h3>' in page
    assert '<h3 class="worrying">Worth a look</h3>' in page
    assert "modality gap" in page.split("Worth a look")[1].split("</ul>")[0]
    assert "pair AUC" in page.split("Looks good")[1].split("</ul>")[0]
    # Sortable tables, exact values on hover, what-ifs coloured against "as is".
    assert 'class="sortable stack"' in page and 'th.addEventListener("click", sort)' in page
    assert len(re.findall(r'<td data-label="[^"]*" data-value="', page)) > 50
    assert 'class="up"' in page and "than as is:" in page
    # Names break only after a slash.
    assert "gap_concentration/<wbr>top1" in page
    assert 'class="banner"' not in page  # trained (synthetic) embeddings: no banner
    assert_self_contained(page)


@pytest.fixture(scope="module")
def random_page(tmp_path_factory):
    """The page of a store whose encoder had random weights (no --pretrained)."""
    rng = np.random.default_rng(0)
    content = rng.normal(size=(30, 8)).astype(np.float32)
    items = [{"id": str(i), "source": f"{i}.png", "group": i, "label": i % 3} for i in range(30)]
    store = EmbeddingStore.write(
        tmp_path_factory.mktemp("random") / "store",
        {"image": content + 2.0, "text": content + rng.normal(size=(30, 8)).astype(np.float32)},
        {"image": items, "text": items},
        encoder={"family": "open_clip", "model": "ViT-B-32", "random_init_seed": 0},
    )
    return write_html_report(store.path.parent / "random.html", analyze(store, device="cpu"))


def test_html_random_weights_banner(random_page):
    page = random_page.read_text("utf-8")
    banner = re.search(r'<div class="banner" role="alert">(.*?)</div>', page)
    assert banner and "ViT-B-32 was not pretrained" in banner.group(1)
    assert "seed 0" in banner.group(1) and "untrained network" in banner.group(1)
    worth = page.split("Worth a look")[1].split("</ul>")[0]
    assert "<strong>random weights</strong>" in worth
    assert "random weights: ViT-B-32 was not pretrained" in page  # the note
    assert_self_contained(page)


# Appended to a copy of a page: opens every <details>, clicks a heading to sort, and writes
# what the layout measured into the DOM that --dump-dom prints.
_PROBE = """<script>
window.addEventListener("load", function () {
  document.querySelectorAll("details").forEach(function (d) { d.open = true; });
  var width = window.innerWidth, wide = [];
  document.querySelectorAll("body *").forEach(function (el) {
    if (el.getBoundingClientRect().right > width + 0.5) { wide.push(el.tagName); }
  });
  var table = document.querySelector("section[id^=pair-] table.sortable");
  var heading = table.tHead.rows[0].cells[1];
  heading.click();
  var up = Array.prototype.map.call(table.tBodies[0].rows, function (r) {
    return r.cells[1].getAttribute("data-value"); });
  heading.click();
  var down = Array.prototype.map.call(table.tBodies[0].rows, function (r) {
    return r.cells[1].getAttribute("data-value"); });
  var out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({width: width,
    scroll: document.documentElement.scrollWidth, wide: wide, up: up, down: down,
    sorted: heading.getAttribute("aria-sort")});
  document.body.appendChild(out);
});
</script>"""


@needs_chromium
@pytest.mark.parametrize("width", [800, 1280])
def test_html_fits_the_window_and_sorts(full_page, random_page, tmp_path, width):
    for page in (full_page, random_page):
        facts = probe(page, width, tmp_path, _PROBE)
        # No sideways scrolling: nothing reaches past the window, every <details> open.
        assert facts["width"] == width and facts["scroll"] <= width, facts
        assert facts["wide"] == [], facts
        # A click on a heading sorts by the exact values; a second click reverses.
        up = [float(v) for v in facts["up"] if v is not None]
        down = [float(v) for v in facts["down"] if v is not None]
        assert len(up) > 5 and up == sorted(up) and down == sorted(down, reverse=True)
        assert facts["sorted"] == "descending"


@needs_chromium
@pytest.mark.parametrize("width", [800, 1280])
def test_html_renders_in_headless_chromium(full_page, random_page, tmp_path, width):
    rgb = screenshot(full_page, width, 2600, tmp_path)
    # Not blank: the header band is dark, the page light, and tables and plots add colours.
    assert rgb.std() > 20
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 200
    # The header band has the stylesheet's background (#1d3557), so the inline CSS applied.
    header = np.median(rgb[10:60, width // 2 : width - 20].reshape(-1, 3), axis=0)
    assert np.all(np.abs(header - np.array([29, 53, 87])) <= 6), header
    # The plots render: the projection's image points (#1f77b4, scaled down and blended at
    # 800 px) appear on screen; nothing else on the page is that blue.
    blue = (rgb[..., 2] - rgb[..., 0] > 80) & (rgb[..., 2] > 150)
    assert blue.sum() > 200
    # The summary's worrying values are red (#b3261e), its good ones green (#1e7b34).
    for colour in ([179, 38, 30], [30, 123, 52]):
        assert np.all(np.abs(rgb - np.array(colour)) < 30, axis=2).sum() > 20, colour
    # A random-weights page shows its banner (#fdecea inside a #b3261e border) at the top.
    top = screenshot(random_page, width, 900, tmp_path)[:450]
    band = np.all(np.abs(top - np.array([253, 236, 234])) <= 3, axis=2)
    assert band.sum() > 0.3 * width * 40, band.sum()
