"""Arrays of any modality name, groups and labels from files and Parquet columns, on the
command line and in Python."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from gapscope import EmbeddingSet, EmbeddingStore, analyze
from gapscope.cli import app
from gapscope.errors import EmbeddingError, GapscopeError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

METRICS = "gap,cosine,alignment,cone,uniformity,mir,retrieval"
runner = CliRunner()


def _five_captions(seed: int = 0, n: int = 24, d: int = 8):
    rng = np.random.default_rng(seed)
    video = rng.normal(size=(n, d)).astype(np.float32)
    text = (np.repeat(video, 5, axis=0) + rng.normal(size=(5 * n, d))).astype(np.float32)
    return video, text, np.arange(n), np.repeat(np.arange(n), 5)


def test_any_names_come_in_one_order_whatever_order_they_were_given_in():
    rng = np.random.default_rng(1)
    rows = {m: rng.normal(size=(40, 6)).astype(np.float32) for m in ("video", "depth", "text")}
    first = analyze(rows, metrics=METRICS, device="cpu")
    again = analyze(dict(reversed(list(rows.items()))), metrics=METRICS, device="cpu")
    assert first.to_json() == again.to_json()
    assert list(first.pairs) == ["text-depth", "text-video", "depth-video"]
    # MIR scales by text when the pair has it, else by the pair's first modality.
    details = {p: v["mir_detail"]["scale_from"] for p, v in first.pairs.items()}
    assert details == {"text-depth": "text", "text-video": "text", "depth-video": "depth"}


@pytest.mark.parametrize("name", ["Video", "video-text", "a/b", "1st", "v" * 33, ""])
def test_bad_modality_names_are_refused(name):
    rows = {name: np.eye(3, dtype=np.float32), "text": np.eye(3, dtype=np.float32)}
    with pytest.raises(GapscopeError, match="use a lowercase identifier"):
        EmbeddingSet.from_arrays(rows)


def test_groups_pair_many_to_one_as_a_store_does(tmp_path):
    video, text, gv, gt = _five_captions()
    labels_v = np.arange(len(video)) % 4
    items = {
        "video": [
            {"id": f"v{i}", "source": "", "group": int(g), "label": int(lab)}
            for i, (g, lab) in enumerate(zip(gv, labels_v, strict=True))
        ],
        "text": [
            {"id": f"t{i}", "source": "", "group": int(g), "label": int(labels_v[g])}
            for i, g in enumerate(gt)
        ],
    }
    store = EmbeddingStore.write(tmp_path / "s", {"video": video, "text": text}, items)
    arrays = EmbeddingSet.from_arrays(
        {"video": video, "text": text},
        groups={"video": [f"id{g}" for g in gv], "text": [f"id{g}" for g in gt]},
        labels={"video": labels_v, "text": labels_v[gt]},
    )
    a = analyze(arrays, metrics=METRICS, device="cpu").to_dict()
    b = analyze(store, metrics=METRICS, device="cpu").to_dict()
    assert a["pairs"] == b["pairs"] and a["modalities"] == b["modalities"]
    assert a["pairs"]["text-video"]["n_pairs"] == len(text)


_GROUPS = {"video": np.arange(24), "text": np.repeat(np.arange(24), 5)}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"groups": {"video": np.arange(24)}}, GapscopeError, "every modality or none"),
        ({"groups": {"video": np.arange(23), "text": np.arange(120)}}, EmbeddingError, "24"),
        ({}, EmbeddingError, "or give groups"),
        ({"groups": _GROUPS, "labels": np.arange(24)}, GapscopeError, "give labels a modality"),
        ({"groups": _GROUPS, "labels": {"audio": [0] * 24}}, GapscopeError, "no modality 'audio'"),
        (
            {"groups": {"video": [np.nan] * 24, "text": np.zeros(120)}},
            EmbeddingError,
            "values must be finite",
        ),
    ],
)
def test_bad_groups_and_labels(kwargs, error, match):
    video, text, *_ = _five_captions()
    with pytest.raises(error, match=match):
        EmbeddingSet.from_arrays({"video": video, "text": text}, **kwargs)


def _parquet(path, video, text, gt, *, fixed: bool = False):
    values = pa.array(text.reshape(-1).astype(np.float64))
    column = (
        pa.FixedSizeListArray.from_arrays(values, text.shape[1])
        if fixed
        else pa.array([list(map(float, r)) for r in text])
    )
    pq.write_table(pa.table({"embedding": column, "clip": [f"c{g}" for g in gt]}), path)


@pytest.mark.parametrize("fixed", [False, True])
def test_command_line_matches_python(tmp_path, fixed):
    video, text, gv, gt = _five_captions()
    np.save(tmp_path / "video.npy", video)
    np.save(tmp_path / "video_ids.npy", np.array([f"c{g}" for g in gv]))
    _parquet(tmp_path / "captions.parquet", video, text, gt, fixed=fixed)
    result = runner.invoke(
        app,
        [
            "analyze",
            "--modality",
            f"video={tmp_path / 'video.npy'}",
            "--modality",
            f"text={tmp_path / 'captions.parquet'}:embedding",
            "--groups",
            f"video={tmp_path / 'video_ids.npy'}",
            "--groups",
            f"text={tmp_path / 'captions.parquet'}:clip",
            "--metrics",
            METRICS,
            "--device",
            "cpu",
            "-q",
            "-f",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    got = json.loads(result.output)
    # The Parquet column holds float64 values of the float32 rows: the same unit rows.
    want = analyze(
        EmbeddingSet.from_arrays(
            {"video": video, "text": text.astype(np.float64)},
            groups={"video": gv, "text": gt},
        ),
        metrics=METRICS,
        device="cpu",
    ).to_dict()
    assert got["pairs"] == want["pairs"] and got["modalities"] == want["modalities"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--modality", "video"], "--modality: expected NAME=PATH, got 'video'"),
        (["--modality", "Video=v.npy"], "use a lowercase identifier"),
        (["--image", "v.npy", "--modality", "image=v.npy"], "image is given twice"),
        (["--modality", "video=v.npy", "--text", "v.npy", "--groups", "v=x"], "every modality"),
        (["--modality", "video=c.parquet", "--text", "v.npy"], "name the column of c.parquet"),
        (["--modality", "video=c.parquet:nope", "--text", "v.npy"], "has no column 'nope'"),
        (["--modality", "video=c.parquet:clip", "--text", "v.npy"], "not lists of floats"),
        (["--modality", "video=c.parquet:ragged", "--text", "v.npy"], "row 1 has 2 values"),
        (["--modality", "video=c.parquet:ints", "--text", "v.npy"], "not floats"),
        (["--modality", "video=c.parquet:holes", "--text", "v.npy"], "has 1 nulls"),
        (["--text", "v.npy", "--image", "v.npy", "--labels", "a=x", "--labels", "y"], "or NAME"),
    ],
)
def test_bad_specs_are_one_line(tmp_path, monkeypatch, args, fragment):
    monkeypatch.chdir(tmp_path)
    np.save("v.npy", np.eye(3, dtype=np.float32))
    table = {
        "clip": ["a", "b", "c"],
        "ragged": [[1.0, 0.0, 0.0], [1.0, 2.0], [0.0, 0.0, 1.0]],
        "ints": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
        "holes": [[1.0, 0.0, 0.0], None, [0.0, 0.0, 1.0]],
    }
    pq.write_table(pa.table(table), "c.parquet")
    result = runner.invoke(app, ["analyze", *args, "-q"])
    assert result.exit_code == 2, result.output
    assert fragment in result.output and "Traceback" not in result.output
