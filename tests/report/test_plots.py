"""Plots: valid PNGs of the documented size, drawing exactly the data they return, and the
``gapscope plot`` command. Skipped as a whole where matplotlib (the plot extra) is absent."""

from __future__ import annotations

import io
import struct
import sys

import numpy as np
import pytest
import reference
from typer.testing import CliRunner

pytest.importorskip("matplotlib", reason="plots need the optional matplotlib (gapscope[plot])")

from gapscope import analyze  # noqa: E402
from gapscope.cli import app  # noqa: E402
from gapscope.data.embedding_set import EmbeddingSet  # noqa: E402
from gapscope.errors import GapscopeError  # noqa: E402
from gapscope.report import plots  # noqa: E402


def png_size(payload: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, read by hand (independent of any image library)."""
    assert payload[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", payload[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", payload[16:24])


def pixels(payload: bytes) -> np.ndarray:
    image = pytest.importorskip("PIL.Image")
    return np.asarray(image.open(io.BytesIO(payload)).convert("RGB"))


def assert_drawn(plot: plots.Plot) -> None:
    assert png_size(plot.png) == plots.PIXELS
    rgb = pixels(plot.png)
    assert rgb.shape == (plots.PIXELS[1], plots.PIXELS[0], 3)
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 20  # not a blank canvas
    if plot.path is not None:
        assert plot.path.read_bytes() == plot.png


def small_set(n=60, d=8, seed=0, captions=2, labels=True):
    rng = np.random.default_rng(seed)
    content = rng.normal(size=(n, d))
    image = content + 1.5 * rng.normal(size=d) + 0.4 * rng.normal(size=(n, d))
    text = np.repeat(content, captions, axis=0) + 1.5 * rng.normal(size=d)
    text = text + 0.4 * rng.normal(size=text.shape)
    lab = rng.integers(0, 3, n)
    return EmbeddingSet(
        embeddings={"image": image.astype(np.float32), "text": text.astype(np.float32)},
        groups={"image": np.arange(n), "text": np.repeat(np.arange(n), captions)},
        labels={"image": lab, "text": np.repeat(lab, captions)} if labels else {},
    )


def context(data: EmbeddingSet, **options):
    """The analysis context the plots draw from (gap and retrieval, exact)."""
    return analyze(data, metrics="gap,retrieval", device="cpu", **options).context


def unit(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_similarity_histogram_counts_come_from_the_data(tmp_path):
    data = small_set()
    x, y = data.embeddings["image"], data.embeddings["text"]
    gx, gy = data.groups["image"], data.groups["text"]
    plot = plots.plot_similarity_histogram(context(data), "image", "text", tmp_path / "h.png")
    assert_drawn(plot)
    s = unit(x) @ unit(y).T
    pos = gx[:, None] == gy[None, :]
    edges = np.linspace(-1, 1, 201)
    np.testing.assert_array_equal(plot.data["positive_counts"], np.histogram(s[pos], edges)[0])
    np.testing.assert_array_equal(plot.data["negative_counts"], np.histogram(s[~pos], edges)[0])
    assert plot.data["positive_counts"].sum() == 120
    assert plot.name == "similarity-image-text"


def test_gap_dimensions_are_the_squared_gap_shares(tmp_path):
    data = small_set(d=12)
    x, y = data.embeddings["image"], data.embeddings["text"]
    plot = plots.plot_gap_dimensions(context(data), "image", "text", tmp_path / "g.png", top=5)
    assert_drawn(plot)
    g = unit(x).mean(0) - unit(y).mean(0)
    expected = g**2 / (g @ g)
    np.testing.assert_allclose(plot.data["shares"], expected, rtol=1e-10)
    np.testing.assert_array_equal(plot.data["dimensions"], np.argsort(-expected)[:5])
    assert plot.data["cumulative"][-1] == pytest.approx(np.sort(expected)[::-1][:5].sum())


def test_recall_curves_match_the_reference(tmp_path):
    data = small_set()
    x, y = data.embeddings["image"], data.embeddings["text"]
    gx, gy = data.groups["image"], data.groups["text"]
    ks = (1, 2, 5, 10)
    plot = plots.plot_recall_curves(context(data), "image", "text", tmp_path / "r.png", ks=ks)
    assert_drawn(plot)
    curves = plot.data["curves"]
    assert plot.data["k"] == list(ks)
    assert curves["image->text"] == pytest.approx(
        list(reference.cross_recall(x, y, gx, gy, ks).values())
    )
    assert curves["text->image"] == pytest.approx(
        list(reference.cross_recall(y, x, gy, gx, ks).values())
    )
    intra = reference.intra_retrieval(x, data.labels["image"], ks)
    assert curves["image->image"] == pytest.approx([intra[f"R@{k}"] for k in ks])


def test_recall_curves_leave_out_undefined_directions():
    data = small_set(captions=1, labels=False)
    plot = plots.plot_recall_curves(context(data), "image", "text", ks=(1, 5))
    # Without labels every image is its own group: image->image has no relevant row.
    assert plot.data["curves"]["image->image"] == [None, None]
    assert_drawn(plot)


def test_projection_is_pca_with_pairs_linked(tmp_path):
    data = small_set(n=50)
    plot = plots.plot_projection(context(data, seed=1), tmp_path / "p.png", points=30, links=10)
    assert_drawn(plot)
    d = plot.data
    assert d["method"] == "pca" and len(d["links"]) == 10
    for link in d["links"]:
        assert data.groups["image"][link["image"]] == data.groups["text"][link["text"]]
        assert link["image"] in d["rows"]["image"] and link["text"] in d["rows"]["text"]
    # Coordinates are the PCA of the drawn unit rows (up to each axis's sign).
    pooled = np.concatenate([unit(data.embeddings[m][d["rows"][m]]) for m in ("image", "text")])
    centred = pooled - pooled.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    expected = centred @ vt[:2].T
    got = np.concatenate([d["coordinates"]["image"], d["coordinates"]["text"]])
    np.testing.assert_allclose(np.abs(got), np.abs(expected), atol=1e-9)
    assert d["explained_variance_ratio"] == pytest.approx(list(s[:2] ** 2 / (s**2).sum()))
    # Each link's end points are the coordinates of its rows.
    link, segment = d["links"][0], d["link_coordinates"][0]
    row = np.searchsorted(d["rows"]["image"], link["image"])
    np.testing.assert_array_equal(segment[0], d["coordinates"]["image"][row])


def test_plots_are_deterministic():
    data = small_set(n=40)
    a = plots.plot_projection(context(data, seed=3), points=20, links=5)
    b = plots.plot_projection(context(data, seed=3), points=20, links=5)
    assert a.png == b.png
    c = plots.plot_projection(context(data, seed=4), points=20, links=5)
    assert c.data["links"] != a.data["links"]


def test_umap_projection_needs_umap_learn():
    ctx = context(small_set(n=30))
    if plots.umap_available():
        plot = plots.plot_projection(ctx, method="umap", points=30, links=5)
        assert plot.data["coordinates"]["image"].shape == (30, 2)
    else:
        with pytest.raises(GapscopeError, match="umap-learn"):
            plots.plot_projection(ctx, method="umap")
    with pytest.raises(GapscopeError, match="unknown projection"):
        plots.plot_projection(ctx, method="tsne")


def test_plot_all_writes_every_file(tmp_path):
    rng = np.random.default_rng(2)
    data = small_set(n=30)
    data.embeddings["audio"] = rng.normal(size=(20, 8)).astype(np.float32)
    data.groups["audio"] = np.arange(100, 120)  # shares no group with the others
    report = analyze(data, metrics="gap", device="cpu")
    result = plots.plot_all(report, tmp_path / "out", points=20, links=5, umap=False)
    names = sorted(p.path.name for p in result.plots)
    assert names == sorted(
        [
            "projection-pca.png",
            "gap-dimensions-image-text.png",
            "similarity-image-text.png",
            "recall-image-text.png",
            "gap-dimensions-image-audio.png",
            "gap-dimensions-text-audio.png",
        ]
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == names
    # image-text: no what-ifs in a gap-only analysis; the audio pairs: no positive pairs.
    assert len(result.skipped) == 3 and "image-audio" in result.skipped[1]
    assert result.skipped[0].startswith("image-text") and "what-if" in result.skipped[0]
    for plot in result.plots:
        assert png_size(plot.path.read_bytes()) == plots.PIXELS


def test_missing_matplotlib_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(GapscopeError, match=r"pip install 'gapscope\[plot\]'"):
        plots.require_matplotlib()


def test_recall_curve_is_the_report_s_own_numbers(example_store):
    # The curve reads the passes the report's table came from: exact where the table is,
    # sampled on the same queries where it is sampled.
    for sample in (None, 100):
        report = analyze(example_store, metrics="retrieval", device="cpu", sample=sample)
        plot = plots.plot_recall_curves(report.context, "image", "text", ks=(1, 5, 10))
        for direction, values in plot.data["curves"].items():
            q = direction.split("->")[0]
            section = (
                report.modalities[q]
                if q == direction.split("->")[1]
                else report.pairs["image-text"]
            )
            entry = section["recall"][direction]
            assert values == [entry["R@1"], entry["R@5"], entry["R@10"]], (sample, direction)


def test_plots_need_the_analysis_itself(example_store):
    report = analyze(example_store, metrics="gap", device="cpu")
    from gapscope.report.model import Report

    with pytest.raises(GapscopeError, match="analysis itself"):
        plots.plot_all(Report.from_json(report.to_json()))


def make_app():
    return app


def test_plot_command_on_the_example_store(example_store, tmp_path):
    out = tmp_path / "plots"
    result = CliRunner().invoke(
        make_app(), ["plot", str(example_store), "--out", str(out), "--points", "200", "--no-umap"]
    )
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in out.iterdir())
    assert written == [
        "gap-dimensions-image-text.png",
        "projection-pca.png",
        "recall-image-text.png",
        "similarity-image-text.png",
        "whatif-image-text.png",
    ]
    assert sorted(line.rsplit("/", 1)[-1] for line in result.stdout.split()) == written


def test_plot_command_with_arrays_and_bad_input(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "img.npy", rng.normal(size=(20, 4)).astype(np.float32))
    np.save(tmp_path / "txt.npy", rng.normal(size=(20, 4)).astype(np.float32))
    np.save(tmp_path / "short.npy", rng.normal(size=(5, 4)).astype(np.float32))
    runner = CliRunner()
    ok = runner.invoke(
        make_app(),
        [
            "plot",
            "--image",
            str(tmp_path / "img.npy"),
            "--text",
            str(tmp_path / "txt.npy"),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "o" / "similarity-image-text.png").is_file()
    for args, fragment in (
        ([], "give a store folder"),
        (
            ["--image", str(tmp_path / "img.npy"), "--text", str(tmp_path / "short.npy")],
            "row counts differ",
        ),
        ([str(tmp_path / "nowhere")], "nowhere"),
    ):
        bad = runner.invoke(make_app(), ["plot", *args, "--out", str(tmp_path / "b")])
        assert bad.exit_code == 2, bad.output
        lines = [line for line in bad.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error: ") and fragment in lines[0]
