"""analyze(): every number in the report against the full-matrix references, and the contract."""

from __future__ import annotations

import json
import warnings

import jsonschema
import numpy as np
import pytest
import reference as ref
from helpers import leaves, make_paired

from gapscope import EmbeddingSet, EmbeddingStore, analyze
from gapscope.errors import GapscopeError
from gapscope.report import Report, report_schema


@pytest.fixture(scope="module")
def paired_store(tmp_path_factory):
    image, text, gi, gt, li, lt = make_paired()
    items = {
        "image": [
            {"id": f"i{i}", "source": "", "group": int(g), "label": int(lab)}
            for i, (g, lab) in enumerate(zip(gi, li, strict=True))
        ],
        "text": [
            {"id": f"t{i}", "source": "", "group": int(g), "label": int(lab)}
            for i, (g, lab) in enumerate(zip(gt, lt, strict=True))
        ],
    }
    path = tmp_path_factory.mktemp("a") / "store"
    EmbeddingStore.write(path, {"image": image, "text": text}, items)
    return path, (image, text, gi, gt, li, lt)


def test_store_report_matches_references(paired_store):
    path, (image, text, gi, gt, li, lt) = paired_store
    report = analyze(path, device="cpu", block_size=7)
    pair = report.pairs["image-text"]
    tol = dict(rel=1e-5, abs=1e-5)
    assert pair["gap"] == pytest.approx(ref.gap(image, text), **tol)
    paired, unpaired = ref.paired_unpaired_cosine(image, text, gi, gt)
    assert pair["paired_cosine"] == pytest.approx(paired, **tol)
    assert pair["unpaired_cosine"] == pytest.approx(unpaired, **tol)
    assert pair["n_pairs"] == len(gt)
    assert pair["alignment"] == pytest.approx(ref.alignment(image, text, gi, gt), **tol)
    for m, x in (("image", image), ("text", text)):
        assert report.modalities[m]["cone"] == pytest.approx(ref.cone(x), **tol)
        assert report.modalities[m]["uniformity"] == pytest.approx(ref.uniformity(x), **tol)
    assert pair["uniformity"] == pytest.approx(
        (ref.uniformity(image) + ref.uniformity(text)) / 2, **tol
    )
    assert pair["mir"] == pytest.approx(ref.mir(image, text), rel=1e-4)
    recall = pair["recall"]
    for direction, (q, kk, gq, gk) in {
        "image->text": (image, text, gi, gt),
        "text->image": (text, image, gt, gi),
    }.items():
        expected = ref.cross_recall(q, kk, gq, gk, (1, 5, 10))
        for k, v in expected.items():
            assert recall[direction][f"R@{k}"] == pytest.approx(v, abs=1e-12)
    # Labels are present, so intra-modal relevance comes from them; stored once, by modality.
    assert set(recall) == {"image->text", "text->image"}
    for m, x, codes in (("image", image, li), ("text", text, lt)):
        intra = report.modalities[m]["recall"][f"{m}->{m}"]
        expected = ref.intra_retrieval(x, codes, (1, 5, 10))
        assert intra["relevance"] == "labels"
        for key, v in expected.items():
            assert intra[key] == pytest.approx(v, abs=1e-9), (m, key)


def test_plain_arrays_pair_row_by_row():
    image, text, *_ = make_paired(n=40, captions=1)
    report = analyze({"image": image, "text": text}, device="cpu")
    gi = np.arange(40)
    assert report.pairs["image-text"]["gap"] == pytest.approx(ref.gap(image, text), abs=1e-6)
    expected = ref.cross_recall(image, text, gi, gi, (1, 5, 10))
    assert report.pairs["image-text"]["recall"]["image->text"]["R@1"] == pytest.approx(expected[1])
    # Without labels, intra-modal image->image has nothing relevant: not measured, counted.
    intra = report.modalities["image"]["recall"]["image->image"]
    assert intra["n_queries"] == 0 and intra["n_skipped"] == 40 and intra["R@1"] is None
    assert any("image->image" in note for note in report.notes)


def test_json_validates_and_is_byte_identical(paired_store):
    path, _ = paired_store
    first = analyze(path, device="cpu").to_json()
    second = analyze(path, device="cpu").to_json()
    assert first == second
    data = json.loads(first)
    jsonschema.validate(data, report_schema())
    assert data["schema"] == "gapscope.report/2"
    # The key paths docs/architecture.md promises to dashboards.
    pair = data["pairs"]["image-text"]
    for key in (
        "gap",
        "centroid_cosine",
        "paired_cosine",
        "unpaired_cosine",
        "alignment",
        "uniformity",
        "mir",
    ):
        assert isinstance(pair[key], float), key
    assert set(pair["mir_detail"]) >= {"fd", "scale", "outliers", "full_rank"}
    assert set(pair["recall"]) == {"image->text", "text->image"}
    assert "mAP" in data["modalities"]["image"]["recall"]["image->image"]
    assert data["directions"]["gap"] == "lower" and data["directions"]["R@K"] == "higher"
    assert len(data["input"]["fingerprint"]) == 64


def test_round_trip_and_flat(paired_store):
    path, _ = paired_store
    report = analyze(path, device="cpu", metrics="gap,retrieval")
    again = Report.from_json(report.to_json())
    assert again.to_json() == report.to_json()
    flat = report.to_flat()
    assert flat["image-text/gap"] == report.to_dict()["pairs"]["image-text"]["gap"]
    assert "image-text/recall/text_to_image/R5" in flat
    assert all(isinstance(v, int | float) for v in flat.values())
    # Only the selected metrics.
    assert "cone" not in report.modalities["image"]
    assert "mir" not in report.pairs["image-text"]


def test_sample_gives_estimates_with_standard_errors(paired_store):
    path, (image, text, gi, gt, li, lt) = paired_store
    report = analyze(path, device="cpu", sample=40, seed=3)
    exact = analyze(path, device="cpu")
    pair, exact_pair = report.pairs["image-text"], exact.pairs["image-text"]
    # O(n d) metrics stay exact.
    assert pair["gap"] == exact_pair["gap"]
    assert "uniformity_se" in report.modalities["text"]
    r = pair["recall"]["text->image"]
    assert r["n_queries"] == 40 and r["R@1_se"] >= 0
    assert abs(r["R@5"] - exact_pair["recall"]["text->image"]["R@5"]) <= 4 * r["R@5_se"] + 1e-9
    jsonschema.validate(json.loads(report.to_json()), report_schema())
    # Seeded: the same seed draws the same queries.
    assert analyze(path, device="cpu", sample=40, seed=3).to_json() == report.to_json()


def _numbers(value):
    return ((path, v) for path, v in leaves(value) if isinstance(v, float))


def test_sampled_store_too_big_for_memory_streams_to_the_same_report(tmp_path, monkeypatch):
    # A budget of 0 bytes: every sampled modality's unit rows are normalised block by block
    # from the memory-mapped arrays (as a million-row store would be), what-ifs included.
    from gapscope.engine import unit_rows as _rows

    image, text, *_ = make_paired(n=90, captions=1)
    np.save(tmp_path / "image.npy", image.astype(np.float16))
    np.save(tmp_path / "text.npy", text.astype(np.float16))
    arrays = {m: np.load(tmp_path / f"{m}.npy", mmap_mode="r") for m in ("image", "text")}
    held = analyze({m: np.array(a) for m, a in arrays.items()}, device="cpu", sample=30, seed=2)
    monkeypatch.setattr(_rows, "IN_MEMORY_BUDGET_BYTES", 0)
    monkeypatch.setattr(_rows, "STREAM_CHUNK_ROWS", 16)
    streamed = analyze(arrays, device="cpu", sample=30, seed=2)
    a, b = json.loads(held.to_json()), json.loads(streamed.to_json())
    assert a["notes"] == b["notes"]
    got = dict(_numbers(b))
    for path, value in _numbers(a):
        assert got[path] == pytest.approx(value, abs=1e-6), path
    # --sample bounds the diagnostics' samples too (separability rows, what-if queries).
    assert any("separability: a logistic regression on 30 rows" in note for note in a["notes"])
    # Retrieval counts are exact whichever way the rows were read.
    for direction, entry in a["pairs"]["image-text"]["recall"].items():
        assert entry == b["pairs"]["image-text"]["recall"][direction]


def test_a_sample_smaller_than_the_folds_fits_the_probe_with_fewer_folds():
    """``--sample 3`` caps the separability probe at 3 rows a modality: it then runs 3 folds
    (not the 5 it would need 5 rows for), the same as the metric function asked directly."""
    from gapscope.metrics.separability import modality_separability

    image, text, *_ = make_paired(n=40, captions=1)
    pair = analyze({"image": image, "text": text}, metrics="diagnostics", sample=3, seed=4)
    entry = pair.to_dict()["pairs"]["image-text"]
    want = modality_separability(image, text, folds=3, max_rows=3, seed=4)
    assert entry["separability_rows"] == 3
    assert entry["separability"] == pytest.approx(want.accuracy, abs=1e-7)
    assert any("3-fold cross-validated" in note for note in pair.to_dict()["notes"])


def test_bf16_precision_is_recorded_noted_and_close(paired_store):
    path, _ = paired_store
    fp = analyze(path, device="cpu", metrics="uniformity,retrieval")
    bf = analyze(path, device="cpu", metrics="uniformity,retrieval", precision="bf16")
    assert (fp.params["precision"], bf.params["precision"]) == ("fp32", "bf16")
    assert any("bfloat16" in note for note in bf.notes)
    assert not any("bfloat16" in note for note in fp.notes)
    jsonschema.validate(json.loads(bf.to_json()), report_schema())
    for m in ("image", "text"):
        assert bf.modalities[m]["uniformity"] == pytest.approx(
            fp.modalities[m]["uniformity"], abs=5e-3
        )
    with pytest.raises(GapscopeError, match="precision must be one of fp32, bf16"):
        analyze(path, device="cpu", precision="fp16")


def test_three_modalities_give_three_pairs():
    rng = np.random.default_rng(1)
    arrays = {m: rng.normal(size=(30, 8)).astype(np.float32) for m in ("audio", "image", "text")}
    report = analyze(arrays, device="cpu", metrics="gap,mir")
    assert list(report.pairs) == ["image-text", "image-audio", "text-audio"]
    # MIR is text-centric: the text-audio pair scales by the text rows' norms.
    assert report.pairs["text-audio"]["mir_detail"]["scale_from"] == "text"
    s = 1 / np.linalg.norm(arrays["text"].astype(np.float64), axis=1).mean()
    assert report.pairs["text-audio"]["mir_detail"]["scale"] == pytest.approx(s, rel=1e-6)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (
            {"image": np.ones((4, 3), np.float32), "text": np.ones((5, 3), np.float32)},
            "row counts differ",
        ),
        (
            {"image": np.ones((4, 3), np.float32), "text": np.ones((4, 2), np.float32)},
            "dims differ",
        ),
        (
            {"image": np.array([[1, np.nan, 0]] * 4, np.float32), "text": np.ones((4, 3))},
            "NaN or Inf",
        ),
        ({"image": np.zeros((4, 3), np.float32), "text": np.ones((4, 3))}, "zero vector"),
        ({"image": np.ones(4, np.float32), "text": np.ones(4, np.float32)}, "2-D"),
        ({"image": np.ones((4, 3), np.int64), "text": np.ones((4, 3), np.int64)}, "dtype"),
        ({"image": np.ones((4, 3), np.float32)}, "at least two modalities"),
        ({"image": np.ones((1, 3), np.float32), "text": np.ones((1, 3))}, "at least 2 rows"),
    ],
)
def test_bad_arrays_raise_one_clear_error(arrays, message):
    with pytest.raises(GapscopeError, match=message):
        analyze(arrays, device="cpu")


def test_bad_options():
    arrays = {"image": np.eye(4, dtype=np.float32), "text": np.eye(4, dtype=np.float32)}
    with pytest.raises(GapscopeError, match="unknown metric 'gapp'"):
        analyze(arrays, metrics="gapp")
    with pytest.raises(GapscopeError, match="k must be positive"):
        analyze(arrays, k="0,5")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_cuda_asked_for_without_a_gpu():
    arrays = {"image": np.eye(4, dtype=np.float32), "text": np.eye(4, dtype=np.float32)}
    with pytest.raises(GapscopeError, match="no CUDA device is available"):
        analyze(arrays, device="cuda")


@pytest.mark.parametrize("magnitude", [1e300, 1e-300])
def test_extreme_magnitudes_give_the_same_report_as_ordinary_ones(magnitude):
    # Every metric but the raw norms is scale-free (MIR scales by the text norms), so rows of
    # 1e300 or 1e-300 must give the report of the same rows near 1: no overflow to inf, no
    # underflow to zero, no warning.
    rng = np.random.default_rng(14)
    x, y = rng.normal(size=(120, 12)), rng.normal(size=(120, 12))
    metrics = "gap,cosine,alignment,cone,uniformity,mir,retrieval,diagnostics"
    base = analyze({"image": x, "text": y}, metrics=metrics, device="cpu").to_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        big = analyze(
            {"image": x * magnitude, "text": y * magnitude}, metrics=metrics, device="cpu"
        ).to_dict()
    raw = big["input"]["modalities"]["image"]["raw_norm_mean"]
    assert raw == pytest.approx(base["input"]["modalities"]["image"]["raw_norm_mean"] * magnitude)
    for key in ("gap", "paired_cosine", "alignment", "uniformity", "mir"):
        assert big["pairs"]["image-text"][key] == pytest.approx(
            base["pairs"]["image-text"][key], rel=1e-6, abs=1e-9
        ), key


def test_json_is_byte_identical_whatever_the_block_size_and_thread_count():
    # Near-ties (duplicated directions, rows one rounding step apart) are where a block shape
    # could reorder two keys; with labels, every retrieval path (count, sort, exact
    # re-scoring) runs. Only params.block_size may differ.
    import torch

    rng = np.random.default_rng(21)
    base = rng.normal(size=(60, 16)).astype(np.float32)
    x = np.concatenate([base, base[:20] * np.float32(1.0 + 2**-20), base[:10]])
    y = np.concatenate([base + 0.3 * rng.normal(size=base.shape), base[:30]]).astype(np.float32)
    groups = {"image": np.arange(len(x)) % 60, "text": np.arange(len(y)) % 60}
    labels = {"image": rng.integers(0, 7, len(x)), "text": rng.integers(0, 7, len(y))}
    rows = EmbeddingSet(embeddings={"image": x, "text": y}, groups=groups, labels=labels)
    metrics = "gap,cosine,alignment,cone,uniformity,mir,retrieval"
    reports = set()
    threads = torch.get_num_threads()
    try:
        for n_threads in (1, 2):
            torch.set_num_threads(n_threads)
            for block_size in (None, 1, 7, 33, 64):
                data = analyze(
                    rows,
                    metrics=metrics,
                    block_size=block_size,
                    device="cpu",
                ).to_dict()
                data["params"].pop("block_size")
                reports.add(json.dumps(data, sort_keys=True))
    finally:
        torch.set_num_threads(threads)
    assert len(reports) == 1


def test_mean_raw_norm_is_summed_in_slices_of_65536_rows():
    # The mean raw norm comes from the norms MIR reads too; it is summed as it always was
    # (row norms a slice of 65,536 rows, each slice's sum added), so reports keep their bits.
    from gapscope.analysis.context import _mean_in_slices
    from gapscope.engine.normalization import row_norms
    from gapscope.metrics.mir import raw_norms
    from gapscope.report.model import round_float

    rng = np.random.default_rng(4)
    image = rng.normal(size=(70_000, 4)).astype(np.float16)
    text = rng.normal(size=(70_000, 4)).astype(np.float16)
    report = analyze({"image": image, "text": text}, device="cpu", metrics="gap,mir")
    for name, rows in (("image", image), ("text", text)):
        old = float(row_norms(rows[:65536]).sum()) + float(row_norms(rows[65536:]).sum())
        expected = old / rows.shape[0]
        assert _mean_in_slices(raw_norms(rows).norms) == expected
        assert report.to_dict()["input"]["modalities"][name]["raw_norm_mean"] == round_float(
            expected
        )


class _CountingRows(np.ndarray):
    """An ndarray that counts the rows read out of it by slicing or fancy indexing (views
    cut out of it carry no count of their own)."""

    read: list[int]

    def __getitem__(self, index):
        out = super().__getitem__(index)
        if isinstance(out, np.ndarray) and out.ndim == 2 and "read" in self.__dict__:
            self.read.append(out.shape[0])
        return out


def _counting(rows: np.ndarray) -> _CountingRows:
    out = rows.view(_CountingRows)
    out.read = []
    return out


@pytest.mark.parametrize("metrics", ["gap,cone", "gap,mir", "diagnostics", "retrieval"])
def test_validation_reads_the_raw_norms_and_unit_sums_once(metrics):
    # One read of each modality checks its rows and makes its raw norms (the report's mean
    # raw norm, MIR) and, for the metrics that start from them, its unit-row sums: the same
    # bits as reading them apart.
    from gapscope.analysis.context import AnalysisContext, AnalysisOptions
    from gapscope.engine.moments import unit_sums
    from gapscope.metrics.mir import raw_norms

    image, text, *_ = make_paired(n=300, captions=1)
    rows = {"image": _counting(image.astype(np.float16)), "text": _counting(text)}
    ctx = AnalysisContext(EmbeddingSet.from_arrays(rows), AnalysisOptions.parse(metrics=metrics))
    for m, a in rows.items():
        assert sum(a.read) == 300
        norms = ctx.raw_norms(m)
        expected = raw_norms(np.asarray(a))
        assert norms.norms.tobytes() == expected.norms.tobytes()
        assert norms.rounding == expected.rounding
        if metrics != "retrieval":
            sums = ctx.unit_sums(m)
            plain = unit_sums(np.asarray(a))
            assert sums.total.tobytes() == plain.total.tobytes()
            assert (sums.squares, sums.n) == (plain.squares, plain.n)
        assert sum(a.read) == 300  # nothing read again
    assert ("image" in ctx._sums) == (metrics != "retrieval")


def test_rows_checked_before_the_analysis_are_read_for_their_norms():
    # Embeddings already checked are not scanned again at the boundary, so their norms and
    # sums are made when first asked for, with the same bits.
    from gapscope.engine.moments import unit_sums
    from gapscope.engine.validation import check_embeddings

    image, text, *_ = make_paired(n=120, captions=1)
    checked = {m: check_embeddings(a, m) for m, a in (("image", image), ("text", text))}
    a = analyze(checked, device="cpu", metrics="gap,mir")
    b = analyze({"image": image, "text": text}, device="cpu", metrics="gap,mir")
    assert a.to_dict()["pairs"] == b.to_dict()["pairs"]
    assert a.to_dict()["input"]["modalities"] == b.to_dict()["input"]["modalities"]
    assert unit_sums(image).total.tobytes() == unit_sums(checked["image"]).total.tobytes()


def test_every_family_that_reads_unit_sums_declares_it():
    # A family that reads ctx.unit_sums (or the scatter, from their mean) without declaring
    # reads_unit_sums would read every modality a second time: the context says so when it
    # makes the sums after validation.
    from gapscope.analysis.context import METRICS, AnalysisOptions
    from gapscope.analysis.orchestrator import run_analysis

    image, text, gi, gt, labels, _ = make_paired(n=80, captions=2)
    data = EmbeddingSet(
        embeddings={"image": image, "text": text},
        groups={"image": gi, "text": gt},
        labels={"image": labels},
    )
    for selector in METRICS:
        said = []
        run_analysis(
            data,
            AnalysisOptions.parse(metrics=selector, device="cpu"),
            progress=said.append,
        )
        assert not [m for m in said if m.endswith("unit-row sums")], selector


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_fortran_ordered_rows_give_the_same_report(dtype):
    # A row's unit vector and norm are summed along a row-major copy whatever the input's
    # layout (a transposed tensor, np.load of a saved x.T), so the report is byte-identical.
    image, text, gi, gt, labels, _ = make_paired(n=150, captions=2)
    rows = {"image": image.astype(dtype), "text": text.astype(dtype)}

    def run(layout):
        data = EmbeddingSet(
            embeddings={m: layout(a) for m, a in rows.items()},
            groups={"image": gi, "text": gt},
            labels={"image": labels},
        )
        return analyze(data, device="cpu", seed=1).to_json()

    assert run(np.asfortranarray) == run(np.ascontiguousarray)


@pytest.mark.parametrize("outliers", [False, True])
def test_mir_reads_no_row_for_its_covariance(monkeypatch, outliers):
    # The validating read makes each modality's raw mean and scatter: MIR reads no row for its
    # covariance (rows without norm outliers are read once in all); with outliers it gathers
    # them and takes the medians, but reads no block of rows for its moments.
    import gapscope.metrics.mir as mir

    rng = np.random.default_rng(12)
    rows = {}
    for m, shift in (("image", 1.0), ("text", -0.5)):
        a = rng.normal(size=(400, 16)) + shift
        a *= rng.uniform(0.9, 1.1, size=(400, 1)) / np.linalg.norm(a, axis=1, keepdims=True)
        if outliers:
            a[::50] *= 3.0
        rows[m] = _counting(a.astype(np.float32))
    blocks = []
    monkeypatch.setattr(mir, "_mean_cov", lambda *a: blocks.append(1))
    report = analyze(rows, metrics="mir", device="cpu").to_dict()
    assert not blocks
    detail = report["pairs"]["image-text"]["mir_detail"]
    assert (detail["outliers"]["image"] == 8) == outliers
    if not outliers:
        assert [sum(a.read) for a in rows.values()] == [400, 400]


def _outlying_float16(n: int, normalised_head: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(21)
    rows = {}
    for m, shift in (("image", 0.5), ("text", -0.5)):
        a = (rng.normal(size=(n, 8)) + shift) * rng.uniform(0.5, 2.0, size=(n, 1))
        a[:normalised_head] /= np.linalg.norm(a[:normalised_head], axis=1, keepdims=True)
        rows[m] = a.astype(np.float16)
    return rows


@pytest.mark.parametrize("normalised_head", [0, 256])
def test_mir_medians_of_float16_rows_come_from_the_validating_read(monkeypatch, normalised_head):
    # Float16 rows whose medians would take one read of their own (at least 32,768 rows):
    # the validating read counts their patterns, and MIR reads no row for its medians, with
    # the same report as reading them. Rows whose first 256 norms are 1 (as if normalised) are
    # not counted: MIR reads their medians itself, as before, with the same numbers.
    import gapscope.analysis.context as context
    import gapscope.metrics.mir as mir

    rows = _outlying_float16(33_001, normalised_head)
    counted = {m: _counting(a) for m, a in rows.items()}
    medians = []
    original = mir.column_medians
    monkeypatch.setattr(mir, "column_medians", lambda a: medians.append(1) or original(a))
    made = analyze(counted, metrics="gap,mir", device="cpu").to_json()
    outliers = json.loads(made)["pairs"]["image-text"]["mir_detail"]["outliers"]
    assert min(outliers.values()) > 100
    # The first 256 rows tell whether the norms vary, one read checks and measures, and MIR
    # gathers the outlier rows (and reads the medians when they were not counted).
    medians_read = 33_001 if normalised_head else 0
    assert [sum(a.read) for a in counted.values()] == [
        33_001 + 256 + outliers[m] + medians_read for m in counted
    ]
    assert len(medians) == (2 if normalised_head else 0)
    medians.clear()
    monkeypatch.setattr(context.PatternCounts, "applies", lambda *a: False)
    read = analyze(rows, metrics="gap,mir", device="cpu").to_json()
    assert len(medians) == 2 and made == read


@pytest.mark.parametrize("metrics", ["uniformity,retrieval", "retrieval", None])
def test_streamed_cross_directions_ride_on_the_modality_passes(monkeypatch, metrics):
    # Sampled queries against keys normalised on the fly (as at a million rows): each
    # cross-modal direction is counted from the chunks of keys that its keys' modality pass
    # reads anyway, and the pair's retrieval reads no key of its own: one read of each
    # modality fewer (where the pass sweeps its keys), the same report. With retrieval alone
    # no pass sweeps its keys (one block holds every sampled query: the intra-modal ranks
    # read the keys once by rows), so each direction is ranked as before, inside the pass.
    from gapscope.analysis.context import AnalysisContext
    from gapscope.engine import passes, unit_rows

    monkeypatch.setattr(unit_rows, "IN_MEMORY_BUDGET_BYTES", 0)
    monkeypatch.setattr(passes, "key_chunk_columns", lambda n_queries: 97)
    image, text, gi, gt, labels, _ = make_paired(n=600, captions=2)

    def run():
        rows = {"image": _counting(image), "text": _counting(text)}
        data = EmbeddingSet(
            embeddings=rows, groups={"image": gi, "text": gt}, labels={"image": labels}
        )
        report = analyze(data, device="cpu", metrics=metrics, sample=150, seed=3).to_json()
        return report, [sum(a.read) for a in rows.values()]

    riding, reads = run()
    monkeypatch.setattr(AnalysisContext, "_riders", lambda self, m: [])
    alone, reads_alone = run()
    assert riding == alone
    saved = [0, 0] if metrics == "retrieval" else [600, 1200]
    assert [a - b for a, b in zip(reads_alone, reads, strict=True)] == saved


def test_cross_directions_counted_in_the_passes_are_the_pairs_cross_pass(monkeypatch):
    # Once both modality passes counted the directions into them, the pair's cross pass is
    # there (the what-ifs reuse it) and makes no product of its own.
    import gapscope.analysis.context as context
    from gapscope.analysis.context import AnalysisContext, AnalysisOptions
    from gapscope.engine import unit_rows

    monkeypatch.setattr(unit_rows, "IN_MEMORY_BUDGET_BYTES", 0)
    image, text, gi, gt, _, _ = make_paired(n=300, captions=2)
    data = EmbeddingSet(embeddings={"image": image, "text": text}, groups={"image": gi, "text": gt})
    options = AnalysisOptions.parse(metrics="uniformity,retrieval", sample=100, device="cpu")
    ctx = AnalysisContext(data, options)
    assert not ctx.has_cross_pass("image", "text")
    ctx.modality_pass("image")
    assert not ctx.has_cross_pass("image", "text")  # text's queries against image only
    ctx.modality_pass("text")
    assert ctx.has_cross_pass("image", "text")
    monkeypatch.setattr(context, "cross_pair_pass", lambda *a, **k: pytest.fail("a product"))
    image_to_text, text_to_image = ctx.cross_pass("image", "text")
    assert image_to_text.n_queries == 100 and text_to_image.n_queries == 100


def test_mir_moments_of_rows_far_apart_in_one_slice_are_those_of_the_rows(monkeypatch):
    # The validating read scales each slice by its largest norm, not its first: rows 1e200
    # apart in one slice (text as large, so that MIR's scaled rows stay in range) give the
    # MIR of reading the rows, without reading them.
    import gapscope.metrics.mir as mir

    rng = np.random.default_rng(15)
    image = rng.normal(size=(200, 8)) + 1.0
    image[1::2] *= 1e200
    text = rng.normal(size=(200, 8)) * 1e200
    reads = []
    original = mir._mean_cov
    monkeypatch.setattr(mir, "_mean_cov", lambda *a: reads.append(1) or original(*a))
    made = analyze({"image": image, "text": text}, metrics="mir", device="cpu").to_dict()
    assert not reads
    fd = made["pairs"]["image-text"]["mir_detail"]["fd"]
    read = mir.modality_integration_rate(image, text).fd
    assert reads == [1, 1]
    assert np.isfinite(read) and fd == pytest.approx(read, rel=1e-7)


@pytest.mark.parametrize(
    ("metrics", "alpha", "close", "from_total"),
    [
        ("cosine,alignment", 2.0, False, True),
        ("alignment", 2.0, False, False),  # no cosines made: alignment reads the rows
        ("cosine,alignment", 1.5, False, False),  # another exponent: the differences
        ("cosine,alignment", 2.0, True, False),  # nearly equal pairs: the differences
    ],
)
def test_alignment_comes_from_the_cosines_where_it_can(
    monkeypatch, metrics, alpha, close, from_total
):
    # With the cosines made and alpha = 2, alignment is 2 - 2 times their total's mean and
    # reads no row (one read of each modality fewer); it agrees with reading the pairs.
    import importlib

    # The module, not gapscope.metrics' function of the same name.
    alignment_module = importlib.import_module("gapscope.metrics.alignment")

    image, text, gi, gt, _, _ = make_paired(n=300, captions=2)
    if close:
        text = np.repeat(image, 2, axis=0) + 1e-3 * text
    rows = EmbeddingSet(embeddings={"image": image, "text": text}, groups={"image": gi, "text": gt})
    calls = []
    original = alignment_module.alignment
    monkeypatch.setattr(
        alignment_module, "alignment", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    report = analyze(rows, metrics=metrics, alignment_alpha=alpha, device="cpu").to_dict()
    assert calls == ([] if from_total else [1])
    value = report["pairs"]["image-text"]["alignment"]
    direct = original(image, text, gi, gt, alpha=alpha)
    assert value == pytest.approx(direct, rel=1e-7)
    if from_total:
        paired = report["pairs"]["image-text"]["paired_cosine"]
        assert value == pytest.approx(2 - 2 * paired, rel=1e-7)
