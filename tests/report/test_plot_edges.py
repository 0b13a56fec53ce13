"""Edges of ``gapscope plot``: every plot not drawn is listed with its reason, ``--points 0``
draws the linked pairs alone, and a bad ``--out`` is refused before any analysis."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from helpers import read_only_folder
from typer.testing import CliRunner

pytest.importorskip("matplotlib", reason="plots need the optional matplotlib (gapscope[plot])")

from gapscope import analyze  # noqa: E402
from gapscope.cli import app  # noqa: E402
from gapscope.cli import plot as plot_cli  # noqa: E402
from gapscope.data.embedding_set import EmbeddingSet  # noqa: E402
from gapscope.errors import GapscopeError  # noqa: E402
from gapscope.report import plots  # noqa: E402

runner = CliRunner()


def pair_set(n: int = 24, d: int = 6, *, same_images: bool = False) -> EmbeddingSet:
    """Image and text rows paired one to one; ``same_images``: every image row the same, so
    centring sends each to the origin and the what-ifs are undefined."""
    rng = np.random.default_rng(0)
    text = rng.normal(size=(n, d))
    image = np.tile(rng.normal(size=d), (n, 1)) if same_images else text + rng.normal(size=d)
    return EmbeddingSet(
        embeddings={"image": image.astype(np.float32), "text": text.astype(np.float32)},
        groups={"image": np.arange(n), "text": np.arange(n)},
        labels={},
    )


def save_arrays(folder: Path, data: EmbeddingSet) -> list[str]:
    args = []
    for m in ("image", "text"):
        np.save(folder / f"{m}.npy", data.embeddings[m])
        args += [f"--{m}", str(folder / f"{m}.npy")]
    return args


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


# --------------------------------------------------------------------------- skipped what-ifs


def test_undefined_whatifs_are_listed_as_skipped(tmp_path):
    report = analyze(pair_set(same_images=True), metrics="gap,whatif", device="cpu")
    result = plots.plot_all(report, tmp_path, points=10, links=5, umap=False)
    assert "whatif-image-text" not in [p.name for p in result.plots]
    (line,) = [s for s in result.skipped if "what-if" in s]
    assert line.startswith("image-text: the what-ifs are undefined for this input (image: row")
    assert line.endswith("): what-if sweep skipped")


def test_whatifs_not_measured_are_listed_as_skipped():
    report = analyze(pair_set(), metrics="gap", device="cpu")
    result = plots.plot_all(report, points=10, links=5, umap=False)
    assert result.skipped == [
        "image-text: the analysis did not measure the what-ifs (add whatif to its metrics): "
        "what-if sweep skipped"
    ]


def test_a_pair_without_positive_pairs_lists_the_whatif_too():
    data = pair_set()
    data.groups["text"] = data.groups["text"] + 1000  # no text row shares an image's group
    report = analyze(data, metrics="gap,whatif", device="cpu")
    result = plots.plot_all(report, points=10, links=5, umap=False)
    assert [p.name for p in result.plots] == ["projection-pca", "gap-dimensions-image-text"]
    (line,) = [s for s in result.skipped if s.startswith("image-text")]
    assert "cosine histograms, recall curves and what-if sweep skipped" in line


def test_plot_command_reports_the_skipped_whatif(tmp_path):
    args = save_arrays(tmp_path, pair_set(same_images=True))
    out = tmp_path / "plots"
    result = runner.invoke(app, ["plot", *args, "--out", str(out), "--no-umap", "-q"])
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in out.iterdir())
    assert "whatif-image-text.png" not in written and "recall-image-text.png" in written
    skipped = [line for line in result.stderr.splitlines() if line.startswith("Skipped ")]
    assert len(skipped) == 1 and "what-if sweep skipped" in skipped[0], result.stderr


# --------------------------------------------------------------------------- --points 0


def test_points_zero_draws_the_linked_pairs_alone(tmp_path, monkeypatch):
    drawn: list[plots.PlotSet] = []
    plot_all = plots.plot_all

    def recording(*args, **kwargs):
        drawn.append(plot_all(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(plots, "plot_all", recording)
    args = save_arrays(tmp_path, pair_set())
    result = runner.invoke(
        app, ["plot", *args, "-o", str(tmp_path / "p"), "--points", "0", "--links", "4", "-q"]
    )
    assert result.exit_code == 0, result.output
    (projection,) = [p for p in drawn[0].plots if p.name == "projection-pca"]
    links = projection.data["links"]
    assert len(links) == 4
    for m in ("image", "text"):
        assert projection.data["rows"][m].tolist() == sorted(link[m] for link in links)


def test_points_and_links_both_zero_are_refused_before_the_analysis(tmp_path, monkeypatch):
    monkeypatch.setattr(plot_cli, "embedding_source", fail_if_called)
    result = runner.invoke(
        app, ["plot", "--out", str(tmp_path / "p"), "--points", "0", "--links", "0"]
    )
    assert "give one of them above 0" in one_error_line(result)
    assert not (tmp_path / "p").exists()


def test_the_library_projection_refuses_nothing_to_draw():
    ctx = analyze(pair_set(), metrics="gap", device="cpu").context
    with pytest.raises(GapscopeError, match="no row to draw"):
        plots.plot_projection(ctx, points=0, links=0)
    with pytest.raises(GapscopeError, match="points: expected 0 or more, got -1"):
        plots.plot_projection(ctx, points=-1)
    assert plots.plot_projection(ctx, points=0, links=3).data["rows"]["text"].size == 3


def test_plot_all_lists_an_empty_projection_as_skipped():
    data = pair_set()
    data.groups["text"] = data.groups["text"] + 1000  # nothing to link
    report = analyze(data, metrics="gap", device="cpu")
    result = plots.plot_all(report, points=0, links=5, umap=False)
    assert [p.name for p in result.plots] == ["gap-dimensions-image-text"]
    assert result.skipped[0] == (
        "projection-pca: points is 0 and no two modalities share a group to link, so there is "
        "no row to draw: projection skipped"
    )


# --------------------------------------------------------------------------- bad --out


def fail_if_called(*args, **kwargs):
    raise AssertionError("the analysis ran although --out was bad")


@pytest.fixture
def no_analysis(monkeypatch, tmp_path):
    """Make reading the data or analysing it a crash (exit 3), never a quiet pass."""
    monkeypatch.setattr(plot_cli, "embedding_source", fail_if_called)
    # A crash writes its traceback to the temporary folder: keep it in the test's own.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(plot_cli, "analyse_with_status", fail_if_called)


def run_with_out(tmp_path: Path, out: Path):
    args = save_arrays(tmp_path, pair_set())
    return runner.invoke(app, ["plot", *args, "--out", str(out), "--no-umap"])


def test_out_that_is_a_file_is_refused_before_the_analysis(tmp_path, no_analysis):
    out = tmp_path / "file.png"
    out.write_bytes(b"not a folder")
    line = one_error_line(run_with_out(tmp_path, out))
    assert f"--out {out} exists and is not a folder" in line
    assert out.read_bytes() == b"not a folder"


def test_out_under_a_file_is_refused_before_the_analysis(tmp_path, no_analysis):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "deeper" / "plots"
    line = one_error_line(run_with_out(tmp_path, out))
    assert f"--out {out}: {tmp_path / 'file'} is a file, not a folder" in line


def test_out_that_is_a_dangling_link_is_refused_before_the_analysis(tmp_path, no_analysis):
    out = tmp_path / "link"
    out.symlink_to(tmp_path / "gone")
    assert "is a link to a path that does not exist" in one_error_line(run_with_out(tmp_path, out))


@pytest.mark.parametrize("exists", [True, False], ids=["folder", "missing-under-folder"])
def test_out_in_an_unwritable_folder_is_refused_before_the_analysis(
    tmp_path, no_analysis, monkeypatch, exists
):
    locked = tmp_path / "locked"
    locked.mkdir()
    out = locked if exists else locked / "new" / "plots"
    with read_only_folder(locked, monkeypatch):
        line = one_error_line(run_with_out(tmp_path, out))
    assert f"--out {out}: the folder {locked} is not writable" in line
    assert list(locked.iterdir()) == []


def test_a_good_out_still_reaches_the_analysis(tmp_path, no_analysis):
    # The other side of the tests above: with a writable --out the analysis is reached (and
    # here crashes on purpose), so their exit 2 did come from the --out check.
    result = run_with_out(tmp_path, tmp_path / "new" / "plots")
    assert result.exit_code == 3, result.output
    assert "the analysis ran although --out was bad" in result.stderr
    assert not (tmp_path / "new").exists()
