"""Zero-shot classification of a store's labelled rows against --classes prompts given on the
command line: the same numbers as the plain arrays with --labels, and prompts of another width
refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import make_paired
from store_format1 import write_format1
from typer.testing import CliRunner

from gapscope.cli import app
from gapscope.data.class_prompts import ClassPrompts
from gapscope.data.embedding_set import EmbeddingSet
from gapscope.data.store import EmbeddingStore
from gapscope.errors import EmbeddingError

runner = CliRunner()
METRICS = "gap,retrieval,zeroshot"
NAMES = ("ant", "bee", "cat", "dog", "elk", "fox")


def _items(prefix, groups, labels):
    return [
        {"id": f"{prefix}{i}", "source": f"{prefix}-{i}", "group": int(g), "label": lab}
        for i, (g, lab) in enumerate(zip(groups, labels, strict=True))
    ]


def _write(tmp_path, *, names: bool, fmt: int):
    """A store of paired rows with labels (class names or class indices), the same rows as
    arrays, and class prompts of the store's width."""
    image, text, gi, gt, li, lt = make_paired(classes=len(NAMES))
    as_label = (lambda c: NAMES[c]) if names else int
    items = {
        "image": _items("i", gi, [as_label(c) for c in li]),
        "text": _items("t", gt, [as_label(c) for c in lt]),
    }
    arrays = {"image": image, "text": text}
    store = tmp_path / "store"
    if fmt == 1:
        write_format1(store, arrays, items, encoder={"family": "test"})
    else:
        EmbeddingStore.write(store, arrays, items, encoder={"family": "test"})
    files = {
        "image.npy": image,
        "text.npy": text,
        "gi.npy": gi,
        "gt.npy": gt,
        "li.npy": np.array([as_label(c) for c in li]),
        "lt.npy": np.array([as_label(c) for c in lt]),
        "classes.npy": np.random.default_rng(1).normal(size=(len(NAMES), image.shape[1])),
        "narrow.npy": np.random.default_rng(2).normal(size=(len(NAMES), image.shape[1] // 2)),
    }
    for name, arr in files.items():
        np.save(tmp_path / name, arr)
    (tmp_path / "names.txt").write_text("\n".join(NAMES) + "\n")
    return store


def _analyze(*args):
    result = runner.invoke(
        app,
        ["analyze", *map(str, args), "--metrics", METRICS, "--device", "cpu", "-q", "-f", "json"],
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _array_args(tmp_path):
    return [
        "--image",
        tmp_path / "image.npy",
        "--text",
        tmp_path / "text.npy",
        "--groups",
        f"image={tmp_path / 'gi.npy'}",
        "--groups",
        f"text={tmp_path / 'gt.npy'}",
        "--labels",
        f"image={tmp_path / 'li.npy'}",
        "--labels",
        f"text={tmp_path / 'lt.npy'}",
    ]


@pytest.mark.parametrize("fmt", [1, 2])
@pytest.mark.parametrize("names", [False, True])
def test_store_with_labels_and_classes_matches_the_arrays(tmp_path, names, fmt):
    store = _write(tmp_path, names=names, fmt=fmt)
    classes = ["--classes", tmp_path / "classes.npy"]
    if names:
        classes += ["--class-names", tmp_path / "names.txt"]
    from_store = _analyze(store, *classes)
    from_arrays = _analyze(*_array_args(tmp_path), *classes)
    got = from_store["pairs"]["image-text"]["zeroshot"]
    assert got == from_arrays["pairs"]["image-text"]["zeroshot"]
    assert got["classified"] == "image" and got["n_queries"] == 60
    assert not any("no labels" in note for note in from_store.get("notes", []))


def test_classes_given_to_a_store_set_classify_its_labelled_rows(tmp_path):
    store = _write(tmp_path, names=True, fmt=2)
    prompts = ClassPrompts(np.load(tmp_path / "classes.npy"), NAMES)
    data = EmbeddingSet.from_store(store).with_classes(prompts)
    _, _, _, _, li, _ = make_paired(classes=len(NAMES))
    assert set(data.class_labels) == {"image"}
    np.testing.assert_array_equal(data.class_labels["image"], li)


@pytest.mark.parametrize("source", ["store", "arrays", "arrays without labels"])
def test_classes_of_another_width_are_refused_naming_both(tmp_path, source):
    store = _write(tmp_path, names=False, fmt=2)
    if source == "store":
        args = [store]
    elif source == "arrays":
        args = _array_args(tmp_path)
    else:  # nothing to classify: the prompts were dropped without a word before
        args = _array_args(tmp_path)[:8]
    result = runner.invoke(
        app, ["analyze", *map(str, args), "--classes", str(tmp_path / "narrow.npy"), "-q"]
    )
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert (
        "classes: dim 8 differs from the embeddings' 16" in lines[0]
        and "Traceback" not in result.output
    )


def test_with_classes_checks_the_width_without_labels():
    rows = np.ones((3, 4), np.float32)
    data = EmbeddingSet.from_arrays({"image": rows, "text": rows})
    with pytest.raises(EmbeddingError, match="classes: dim 5 differs from the embeddings' 4"):
        data.with_classes(ClassPrompts(np.eye(5)[:3]))
