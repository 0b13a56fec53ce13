"""gapscope extract --classes --templates: the prompts encoded by the tiny open_clip model's
text tower, ensembled as CLIP does, stored, and read by analyze."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gapscope import analyze
from gapscope.data.class_prompts import read_store_classes
from gapscope.data.store import EmbeddingStore
from gapscope.extract import TINY_OPEN_CLIP, load_encoder

TEMPLATES = ("a photo of a {}.", "a blurry photo of a {c}.", "{} in a picture")


@pytest.fixture(scope="module")
def class_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("classes")
    (root / "classes.txt").write_text("cat\ndog\n\n", encoding="utf-8")
    (root / "templates.txt").write_text("\n".join(TEMPLATES) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def store_with_classes(image_data, class_files, tmp_path_factory, cli):
    out = tmp_path_factory.mktemp("zs") / "store"
    cli(
        "extract", "--images", image_data.images, "--captions", image_data.captions,
        "--model", "gapscope-tiny-vit", "--device", "cpu", "--workers", "0",
        "--classes", class_files / "classes.txt", "--templates", class_files / "templates.txt",
        "-o", out,
    )  # fmt: skip
    return out


def test_prompts_are_clip_s_ensemble_of_the_text_tower(store_with_classes):
    store = EmbeddingStore.open(store_with_classes)
    prompts = read_store_classes(store_with_classes, store.encoder)
    assert prompts is not None
    assert prompts.names == ("cat", "dog") and prompts.modality == "text"
    assert prompts.templates == TEMPLATES
    encoder = load_encoder("open_clip", model=TINY_OPEN_CLIP, device="cpu")
    expected = []
    for name in ("cat", "dog"):
        filled = [t.replace("{}", name).replace("{c}", name) for t in TEMPLATES]
        e = encoder.encode_texts(filled).astype(np.float64)
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        mean = e.mean(axis=0)
        expected.append(mean / np.linalg.norm(mean))
    stored = np.load(store_with_classes / "classes.npy")
    assert stored.dtype == np.float32
    np.testing.assert_allclose(stored, np.array(expected), rtol=0, atol=1e-6)
    meta = json.loads((store_with_classes / "classes.json").read_text())
    assert meta["encoder"] == store.encoder and meta["format"] == "gapscope.classes"


def test_info_lists_the_class_prompts(store_with_classes, cli):
    out = " ".join(cli("info", store_with_classes).stdout.split())
    assert f"class prompts: 2 classes (cat, dog), {len(TEMPLATES)} templates ensembled" in out
    assert "by the text encoder" in out


def test_analyze_classifies_the_images(store_with_classes, image_data):
    report = analyze(store_with_classes, metrics="zeroshot,whatif", device="cpu")
    entry = report.pairs["image-text"]["zeroshot"]
    assert entry["classified"] == "image" and entry["n_classes"] == 2
    assert entry["n_queries"] == image_data.n_good
    assert entry["top5_accuracy"] is None  # two classes
    assert "zeroshot" in report.pairs["image-text"]["whatif"]["shift_0.5"]


def test_a_rerun_adds_prompts_to_a_finished_store(image_data, class_files, tmp_path, cli):
    out = tmp_path / "store"
    common = [
        "extract", "--images", image_data.images, "--captions", image_data.captions,
        "--model", "gapscope-tiny-vit", "--device", "cpu", "--workers", "0", "-o", out,
    ]  # fmt: skip
    cli(*common)
    assert not (out / "classes.npy").exists()
    fingerprint = EmbeddingStore.open(out).fingerprint()
    result = cli(*common, "--classes", class_files / "classes.txt")
    assert "already complete" in result.stdout and "2 class prompts" in result.stdout
    assert EmbeddingStore.open(out).fingerprint() == fingerprint
    prompts = read_store_classes(out, EmbeddingStore.open(out).encoder)
    assert prompts is not None and prompts.templates == ("a photo of a {}.",)


def test_stale_prompts_are_refused(store_with_classes, tmp_path, cli):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(store_with_classes, copy)
    meta = json.loads((copy / "classes.json").read_text())
    meta["encoder"]["model"] = "another-model"
    (copy / "classes.json").write_text(json.dumps(meta))
    result = cli("analyze", copy, "--metrics", "zeroshot", expect=2)
    assert "encoded by another model" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_class_options_are_one_line_exit_2(image_data, class_files, tmp_path, cli):
    base = ["extract", "--images", image_data.images, "--model", "gapscope-tiny-vit"]
    result = cli(
        *base, "-o", tmp_path / "a", "--templates", class_files / "templates.txt", expect=2
    )
    assert "--templates fills in class names: give --classes too" in result.stderr
    bad = tmp_path / "bad-templates.txt"
    bad.write_text("a photo\n")
    result = cli(
        *base, "-o", tmp_path / "b", "--classes", class_files / "classes.txt",
        "--templates", bad, expect=2,
    )  # fmt: skip
    assert "'a photo' has no {} (or {c})" in result.stderr
    result = cli(*base, "-o", tmp_path / "c", "--classes", tmp_path / "none.txt", expect=2)
    assert "class names: no such file" in result.stderr
    for r in (result,):
        assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_labels_outside_the_classes_are_refused(image_data, tmp_path, cli):
    """Before any encoding, with the line ``analyze`` would give the store: nothing written."""
    names = tmp_path / "classes.txt"
    names.write_text("cat\ncow\n")
    out = tmp_path / "store"
    result = cli(
        "extract", "--images", image_data.images, "--model", "gapscope-tiny-vit",
        "--device", "cpu", "--workers", "0", "--classes", names, "-o", out, expect=2,
    )  # fmt: skip
    assert f"--classes {names}: image labels: row" in result.stderr
    assert "'dog', which is not a class (cat, cow)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_add_class_prompts_to_a_finished_store(image_data, class_files, tmp_path, cli):
    from gapscope.errors import GapscopeError
    from gapscope.extract import add_class_prompts

    out = tmp_path / "store"
    cli(
        "extract", "--images", image_data.images, "--captions", image_data.captions,
        "--model", "gapscope-tiny-vit", "--device", "cpu", "--workers", "0", "-o", out,
    )  # fmt: skip
    with pytest.raises(GapscopeError, match="another encoder"):
        add_class_prompts(out, class_files / "classes.txt", model=TINY_OPEN_CLIP, seed=1)
    assert not (out / "classes.npy").exists()
    written = add_class_prompts(
        out, class_files / "classes.txt", class_files / "templates.txt", model=TINY_OPEN_CLIP,
        device="cpu",
    )  # fmt: skip
    assert written["n_classes"] == 2 and written["n_templates"] == len(TEMPLATES)
    report = analyze(out, metrics="zeroshot", device="cpu")
    assert report.pairs["image-text"]["zeroshot"]["n_queries"] == image_data.n_good
