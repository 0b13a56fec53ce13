"""Gap-closing what-ifs and the diagnostics: analytic effects, wiring, determinism."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import reference
from helpers import leaves

from gapscope import analyze
from gapscope.analysis.whatif import center_modality, gap_closing_whatif, shift_along_gap
from gapscope.data.embedding_set import EmbeddingSet
from gapscope.engine.unit_rows import UnitRows
from gapscope.errors import EmbeddingError, GapscopeError
from gapscope.metrics.cka import linear_cka
from gapscope.metrics.effective_rank import dimensional_collapse
from gapscope.metrics.gram_volume import gram_volume
from gapscope.metrics.uniformity import uniformity
from gapscope.report.html import pair_matrix


def unit(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def gapped(n=80, d=10, seed=0, captions=1):
    rng = np.random.default_rng(seed)
    content = rng.normal(size=(n, d))
    labels = rng.integers(0, 4, n)
    content += 2.0 * rng.normal(size=(4, d))[labels]
    x = content + 2.0 * rng.normal(size=d) + 0.6 * rng.normal(size=(n, d))
    y = np.repeat(content, captions, axis=0) + 2.0 * rng.normal(size=d)
    y = y + 0.6 * rng.normal(size=y.shape)
    gx = np.arange(n)
    return (
        x.astype(np.float32),
        y.astype(np.float32),
        gx,
        np.repeat(gx, captions),
        labels,
        np.repeat(labels, captions),
    )


# --------------------------------------------------------------------------- transforms


def test_mean_centring_makes_the_gap_exactly_zero():
    x, y, *_ = gapped(seed=1, captions=3)
    cx, cy = center_modality(x), center_modality(y)
    np.testing.assert_allclose(cx.mean(axis=0), 0.0, atol=1e-15)
    np.testing.assert_allclose(cy.mean(axis=0), 0.0, atol=1e-15)
    assert np.linalg.norm(cx.mean(axis=0) - cy.mean(axis=0)) < 1e-15
    # Centring is a translation of the unit rows: differences between rows are kept.
    np.testing.assert_allclose(cx[1] - cx[0], unit(x)[1] - unit(x)[0], atol=1e-15)


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5, 1.0])
def test_shift_removes_that_fraction_of_the_gap(fraction):
    x, y, *_ = gapped(seed=2, captions=2)
    g = unit(x).mean(0) - unit(y).mean(0)
    xs, ys = shift_along_gap(x, y, fraction)
    remaining = xs.mean(0) - ys.mean(0)
    np.testing.assert_allclose(remaining, (1 - fraction) * g, atol=1e-14)
    np.testing.assert_allclose(
        xs - unit(x), np.broadcast_to(-fraction / 2 * g, xs.shape), atol=1e-15
    )


def test_transforms_refuse_rows_without_direction():
    with pytest.raises(EmbeddingError, match="row 0 equals its modality's mean"):
        center_modality(np.ones((4, 3)))
    with pytest.raises(EmbeddingError, match="origin"):
        shift_along_gap(np.array([[1.0, 0.0]]), np.array([[-1.0, 0.0]]), 1.0)
    with pytest.raises(GapscopeError, match="finite"):
        shift_along_gap(np.eye(2), np.eye(2), math.inf)


# --------------------------------------------------------------------------- what-ifs


def scenarios(result) -> dict:
    """The scenarios by their report name, each as a plain mapping."""
    out = {}
    for s in result:
        name = (
            "original"
            if s.fraction is None and not s.centered
            else ("centered" if s.centered else f"shift_{s.fraction!r}")
        )
        recall = {}
        for (q, k), r in s.recall.items():
            entry = {f"R@{c}": v for c, v in r.recall.items()}
            if q == k:
                entry["mAP"] = r.mean_average_precision
            recall[f"{q}->{k}"] = entry
        out[name] = {
            "gap": s.gap,
            "gap_before_renormalization": s.gap_before_renormalization,
            "recall": recall,
            "uniformity": s.uniformity,
        }
    return out


def test_whatif_original_matches_the_reference_metrics():
    x, y, gx, gy, lx, ly = gapped(n=50, captions=2, seed=3)
    r = scenarios(
        gap_closing_whatif(
            x,
            y,
            gx,
            gy,
            relevance_x=lx,
            relevance_y=ly,
            names=("image", "text"),
            k=(1, 5),
            shift_fractions=(0.5,),
        )
    )
    assert list(r) == ["original", "centered", "shift_0.5"]
    original = r["original"]
    assert original["gap"] == pytest.approx(reference.gap(x, y), rel=1e-9)
    assert original["recall"]["image->text"] == pytest.approx(
        {f"R@{k}": v for k, v in reference.cross_recall(x, y, gx, gy, (1, 5)).items()}
    )
    assert original["recall"]["text->image"] == pytest.approx(
        {f"R@{k}": v for k, v in reference.cross_recall(y, x, gy, gx, (1, 5)).items()}
    )
    intra = reference.intra_retrieval(x, lx, (1, 5))
    assert original["recall"]["image->image"] == pytest.approx(
        {"R@1": intra["R@1"], "R@5": intra["R@5"], "mAP": intra["mAP"]}
    )
    assert original["uniformity"]["text"] == pytest.approx(reference.uniformity(y), rel=1e-5)


def test_whatif_scenarios_measure_the_transformed_rows():
    x, y, gx, gy, lx, ly = gapped(n=50, seed=4)
    r = scenarios(
        gap_closing_whatif(
            x, y, gx, gy, relevance_x=lx, relevance_y=ly, k=(1,), shift_fractions=(1.0,)
        )
    )
    cx, cy = center_modality(x), center_modality(y)
    centered = r["centered"]
    assert centered["gap_before_renormalization"] < 1e-14
    assert centered["gap"] == pytest.approx(reference.gap(cx, cy), rel=1e-9)
    assert centered["gap"] < 0.25 * r["original"]["gap"]
    assert centered["recall"]["x->y"]["R@1"] == pytest.approx(
        reference.cross_recall(cx, cy, gx, gy, (1,))[1]
    )
    assert centered["uniformity"]["x"] == pytest.approx(reference.uniformity(cx), rel=1e-5)
    # Centring spreads the cone, so each modality becomes more uniform (lower is better).
    assert centered["uniformity"]["x"] < r["original"]["uniformity"]["x"]
    xs, ys = shift_along_gap(x, y, 1.0)
    assert r["shift_1.0"]["gap"] == pytest.approx(reference.gap(xs, ys), rel=1e-9)
    assert r["shift_1.0"]["recall"]["y->x"]["R@1"] == pytest.approx(
        reference.cross_recall(ys, xs, gy, gx, (1,))[1]
    )


def test_zero_shift_equals_the_original_even_when_sampled():
    x, y, gx, gy, lx, ly = gapped(n=60, seed=5)

    def run():
        return scenarios(
            gap_closing_whatif(
                x,
                y,
                gx,
                gy,
                relevance_x=lx,
                relevance_y=ly,
                k=(1, 5),
                shift_fractions=(0.0,),
                max_queries=20,
                seed=9,
            )
        )

    r = run()
    shifted, original = r["shift_0.0"], r["original"]
    assert shifted["recall"] == original["recall"]
    assert shifted["uniformity"] == pytest.approx(original["uniformity"], rel=1e-12)
    assert r == run()
    # Sampled uniformity is an estimate of the exact value.
    exact = uniformity(x)
    assert original["uniformity"]["x"] == pytest.approx(exact, abs=0.3)


def test_original_reuses_the_analysis_and_equals_the_report(example_store):
    # The "original" scenario reads the analysis's own passes: its values are the report's.
    report = analyze(example_store, device="cpu", metrics="uniformity,retrieval,whatif")
    original = report.pairs["image-text"]["whatif"]["original"]
    pair = report.pairs["image-text"]
    assert original["gap"] == pytest.approx(
        analyze(example_store, metrics="gap").pairs["image-text"]["gap"], rel=1e-12
    )
    assert original["recall"]["image->text"]["R@1"] == pair["recall"]["image->text"]["R@1"]
    intra = report.modalities["text"]["recall"]["text->text"]
    assert original["recall"]["text->text"]["mAP"] == intra["mAP"]
    assert original["uniformity"]["image"] == report.modalities["image"]["uniformity"]


# --------------------------------------------------------------------------- diagnostics


def test_diagnostics_on_the_example_store(example_store):
    report = analyze(example_store, seed=0, device="cpu", metrics="diagnostics,whatif")
    d = json.loads(report.to_json())
    assert set(d["modalities"]) == {"image", "text"}
    assert set(d["pairs"]) == {"image-text"} and d["tuples"] == {}
    for path, value in leaves(d["pairs"]):
        assert value is None or type(value) in (int, float, bool, str), (path, type(value))

    data = EmbeddingSet.from_store(example_store)
    image = data.embeddings["image"]
    collapse = dimensional_collapse(image, (1, 10))
    assert report.modalities["image"]["effective_rank"] == pytest.approx(
        collapse.effective_rank, rel=1e-12
    )
    assert report.modalities["image"]["variance_top10"] == pytest.approx(
        collapse.variance_share[10], rel=1e-12
    )
    pair = report.pairs["image-text"]
    cka = linear_cka(image, data.embeddings["text"], data.groups["image"], data.groups["text"])
    assert pair["cka"] == cka.cka
    assert pair["separability"] == 1.0  # the example store has a large gap
    assert set(pair["whatif"]) == {
        "original",
        "centered",
        "shift_-1.0",
        "shift_-0.5",
        "shift_0.5",
        "shift_1.0",
    }
    assert pair["similarity"]["n_positive"] == 600
    assert pair["gap_direction"]["axis_cosine_image"] is not None
    assert not any(k.startswith("coord_top") for k in pair["gap_direction"])
    for key in ("effective_rank", "separability", "cka", "auc", "overlap", "gram_volume_mean"):
        assert d["directions"][key] in ("higher", "lower")


def test_diagnostics_three_modalities_and_determinism():
    rng = np.random.default_rng(6)
    content = rng.normal(size=(40, 8))
    arrays = {
        m: content + 1.5 * rng.normal(size=8) + 0.5 * rng.normal(size=(40, 8))
        for m in ("image", "text", "audio")
    }
    data = EmbeddingSet.from_arrays(arrays, labels=rng.integers(0, 3, 40))
    report = analyze(data, device="cpu", metrics="diagnostics")
    assert list(report.pairs) == ["image-text", "image-audio", "text-audio"]
    assert list(report.tuples) == ["image-text-audio"]
    gv = gram_volume([arrays["image"], arrays["text"], arrays["audio"]])
    assert report.tuples["image-text-audio"]["gram_volume_mean"] == pytest.approx(gv.mean)
    assert report.tuples["image-text-audio"]["n_tuples"] == 40
    assert "whatif" not in report.pairs["image-text"]
    assert analyze(data, device="cpu", metrics="diagnostics").to_json() == report.to_json()

    m = pair_matrix(report.pairs, ("cka",), data.modalities)
    assert [m[i][i] for i in range(3)] == [None, None, None]
    assert m[0][1] == m[1][0] == report.pairs["image-text"]["cka"]
    assert m[2][1] == report.pairs["text-audio"]["cka"]
    auc = pair_matrix(report.pairs, ("similarity", "auc"), data.modalities, diagonal=1.0)
    assert auc[1][2] == report.pairs["text-audio"]["similarity"]["auc"] and auc[0][0] == 1.0
    assert pair_matrix(report.pairs, ("missing",), data.modalities)[0][1] is None


def test_diagnostics_notes_pairs_without_shared_groups():
    rng = np.random.default_rng(7)
    data = EmbeddingSet(
        embeddings={
            "image": rng.normal(size=(10, 4)),
            "text": rng.normal(size=(12, 4)),
            "audio": rng.normal(size=(8, 4)),
        },
        groups={"image": np.arange(10), "text": np.arange(12) % 10, "audio": np.arange(100, 108)},
    )
    report = analyze(data, device="cpu", bootstrap=20)
    assert "cka" not in report.pairs["image-audio"]
    # The cosines and the alignment are about positive pairs too: left out, not an error.
    assert "paired_cosine" not in report.pairs["image-audio"]
    assert "alignment_ci" not in report.pairs["image-audio"]
    assert report.pairs["image-text"]["alignment_ci"] is not None
    assert "gap" in report.pairs["image-audio"]
    assert "similarity" not in report.pairs["image-audio"]
    assert "whatif" not in report.pairs["text-audio"]
    assert "whatif" in report.pairs["image-text"]
    assert report.tuples == {}
    assert "gap_direction" in report.pairs["image-audio"]
    assert any(n.startswith("image-audio: no image row shares a group") for n in report.notes)
    assert any("GRAM volume: not computed" in n for n in report.notes)


def test_diagnostics_reject_bad_input():
    data = EmbeddingSet(
        embeddings={"image": np.eye(3), "text": np.eye(4)[:3]},
        groups={"image": np.arange(3), "text": np.arange(3)},
    )
    with pytest.raises(EmbeddingError, match="dims differ"):
        analyze(data, metrics="diagnostics")


def test_scenario_sums_come_from_the_unit_rows_read_alike_in_memory_and_streamed(monkeypatch):
    # Each scenario takes its gaps' sums from the rows its unit rows read (one read a
    # modality): held in memory or streamed, the sums are the same bits as a read of their own.
    from gapscope.analysis import whatif

    x, y, gx, gy, lx, ly = gapped(n=60, seed=2)

    def run() -> dict:
        return scenarios(
            gap_closing_whatif(x, y, gx, gy, relevance_x=lx, relevance_y=ly, k=(1,), max_queries=20)
        )

    in_memory = run()
    monkeypatch.setattr(whatif, "fits_in_memory", lambda *args: False)
    streamed = run()
    for name, scenario in in_memory.items():
        for key in ("gap", "gap_before_renormalization"):
            assert streamed[name][key] == scenario[key], (name, key)
        # Streamed rows: the same exact ranks; uniformity to float32 rounding.
        assert streamed[name]["recall"] == scenario["recall"], name
        assert streamed[name]["uniformity"] == pytest.approx(scenario["uniformity"], rel=1e-6)
    # The sums fed by the read that makes the unit rows and by a read of their own: the same
    # 16-row chunks, the same bits.
    shifted = whatif._TransformedSums(x.shape[1], np.full(x.shape[1], 0.05), "x", "")
    whatif._SumsOfEveryFix([shifted]).read(x, chunk_rows=16)
    sums = whatif._TransformedSums(x.shape[1], np.full(x.shape[1], 0.05), "x", "")
    UnitRows(x, on_rows=whatif._SumsOfEveryFix([sums]).add, chunk_rows=16)
    assert np.array_equal(shifted.sum_w, sums.sum_w)
    assert np.array_equal(shifted.sum_unit, sums.sum_unit)
    # Two modalities' reads in one scan (their chunks side by side): each feed's bits are
    # those of a read of its own, chunks of different sizes included.
    pair = [
        whatif._TransformedSums(x.shape[1], np.full(x.shape[1], f), "x", "") for f in (0.05, -0.1)
    ]
    alone = [
        whatif._TransformedSums(x.shape[1], np.full(x.shape[1], f), "x", "") for f in (0.05, -0.1)
    ]
    whatif.read_sums(
        [(whatif._SumsOfEveryFix([pair[0]]), x, 16), (whatif._SumsOfEveryFix([pair[1]]), y, 7)]
    )
    whatif._SumsOfEveryFix([alone[0]]).read(x, chunk_rows=16)
    whatif._SumsOfEveryFix([alone[1]]).read(y, chunk_rows=7)
    for together, own in zip(pair, alone, strict=True):
        assert np.array_equal(together.sum_w, own.sum_w)
        assert np.array_equal(together.sum_unit, own.sum_unit)


@pytest.mark.parametrize("part", [1, 3, 7, 1000])
def test_scenario_sums_made_in_parts_equal_sums_over_the_whole_chunk(monkeypatch, part):
    # A chunk's sums are made a few rows at a time, carried from part to part: the bits of
    # each scenario's sum down the whole chunk (numpy adds along the first axis in row order),
    # and the first row a scenario sends to the origin, wherever its part.
    from gapscope.analysis import whatif
    from gapscope.engine.normalization import unit_rows

    monkeypatch.setattr(whatif, "_part_rows", lambda dim: part)
    rng = np.random.default_rng(part)
    x = (rng.normal(size=(40, 6)) * np.exp(rng.normal(size=(40, 1)) * 4)).astype(np.float32)
    unit = unit_rows(x)
    offsets = [None, rng.normal(size=6) * 0.2, unit[29].copy(), -rng.normal(size=6) * 0.05]
    feed = whatif._SumsOfEveryFix([whatif._TransformedSums(6, p, "x", "why") for p in offsets])
    terms = feed.chunk_terms(x)
    for p, span in zip(offsets, feed.spans, strict=True):
        w = unit if p is None else unit - p
        norms = np.sqrt(np.einsum("ij,ij->i", w, w))
        if p is offsets[2]:
            # Row 29 lands on the origin: no sums, the row named.
            assert terms[span].tolist() == [29.0] + [0.0] * 12
            continue
        expected = np.concatenate([[-1.0], w.sum(axis=0), (w / norms[:, None]).sum(axis=0)])
        assert np.array_equal(terms[span], expected)


def test_shared_sums_cut_the_rows_where_the_unit_rows_read_does(monkeypatch):
    # Processes sharing the passes make the scenarios' sums in a read of their own; it cuts the
    # rows where the unit rows' read cuts them (here 16-row chunks, whatever the what-ifs' own
    # default), so the sums have the bits of one process's. The stand-in share says two
    # processes but makes every chunk itself.
    from types import SimpleNamespace

    from gapscope.analysis import whatif
    from gapscope.engine import unit_rows
    from gapscope.engine.distributed import Share

    x, y, gx, gy, lx, ly = gapped(n=60, seed=2)
    monkeypatch.setattr(unit_rows, "STREAM_CHUNK_ROWS", 16)

    def run() -> dict:
        return scenarios(gap_closing_whatif(x, y, gx, gy, k=(1,), max_queries=20))

    alone = run()
    two = SimpleNamespace(world=2, in_order=Share().in_order)
    monkeypatch.setattr(whatif, "current_share", lambda: two)
    shared = run()
    for name, scenario in alone.items():
        for key in ("gap", "gap_before_renormalization"):
            assert shared[name][key] == scenario[key], (name, key)


def test_whatifs_read_the_analysis_unit_rows_when_it_holds_them(monkeypatch):
    # Rows a pass made and holds in memory in float32: the what-ifs read the analysis's own
    # unit rows (no second copy), with the same report as when they make their own. In
    # bfloat16 the analysis's copy is not the rows the what-ifs measure: they make their own.
    from gapscope.analysis import whatif

    x, y, gx, gy, lx, ly = gapped(n=60, seed=4)
    data = EmbeddingSet(embeddings={"image": x, "text": y}, groups={"image": gx, "text": gy})
    made = []
    unit_rows = whatif.UnitRows

    def counted(*args, **kwargs):
        made.append(kwargs.get("name"))
        return unit_rows(*args, **kwargs)

    monkeypatch.setattr(whatif, "UnitRows", counted)
    shared = analyze(data, metrics="uniformity,whatif", device="cpu").to_json()
    assert made == []
    analyze(data, metrics="uniformity,whatif", device="cpu", precision="bf16")
    assert made == ["image", "text"]
    # Without a pass that made them first, the what-ifs make their own (freed after them):
    # the analysis makes none for them.
    made.clear()
    analyze(data, metrics="whatif", device="cpu")
    assert made == ["image", "text"]
    monkeypatch.setattr(whatif, "_held_unit_rows", lambda ctx, m: None)
    made.clear()
    own = analyze(data, metrics="uniformity,whatif", device="cpu")
    assert made == ["image", "text"]
    assert own.to_json() == shared


def test_the_first_fix_that_fails_names_the_error():
    # Measured together, the fixes still report the error that measuring them one by one
    # meets first: here the centring's class prompt, before the shift's row at the origin.
    x = np.array([[1.0, 0.0], [-1.0, 0.0]])
    y = np.array([[1.0, 1e-4], [1.0, -1e-4]])
    with pytest.raises(EmbeddingError, match="classes: row 0 equals its modality's mean"):
        gap_closing_whatif(x, y, classes=np.eye(2), class_labels=[0, 1], shift_fractions=(2.0,))
