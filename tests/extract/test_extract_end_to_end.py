"""End to end through the CLI: generated files -> gapscope extract -> store -> gapscope analyze.

Covers both encoders (tiny open_clip for image/text, tiny CLAP for audio/text), the broken
inputs (a corrupt image, an empty audio file, a caption naming a missing file), and reruns.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from extract_testkit import run_module

from gapscope.data.store import EmbeddingStore


def _skips(store: EmbeddingStore) -> dict[str, str]:
    return {(s.get("file") or s["source"]): s["reason"] for s in store.manifest["skipped"]}


@pytest.fixture(scope="module")
def image_store(image_data, tmp_path_factory, cli):
    out = tmp_path_factory.mktemp("e2e") / "image-store"
    result = cli(
        "extract",
        "--images",
        image_data.images,
        "--captions",
        image_data.captions,
        "--model",
        "gapscope-tiny-vit",
        "--batch-size",
        "5",
        "--device",
        "cpu",
        "-o",
        out,
    )
    return out, result


@pytest.fixture(scope="module")
def audio_store(audio_data, tmp_path_factory, cli):
    out = tmp_path_factory.mktemp("e2e") / "audio-store"
    result = cli(
        "extract",
        "--audio",
        audio_data.audio,
        "--captions",
        audio_data.captions,
        "--model",
        "gapscope-tiny-clap",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "-o",
        out,
    )
    return out, result


def test_image_text_store(image_store, image_data):
    out, result = image_store
    store = EmbeddingStore.open(out)
    assert store.modalities == ["image", "text"]
    assert store.info("image")["rows"] == image_data.n_good
    assert store.info("text")["rows"] == image_data.n_captions
    assert store.embeddings("image").shape == (image_data.n_good, 32)
    assert store.embeddings("image").dtype == np.float32
    # Raw encoder outputs: not unit norm, and recorded as not normalised.
    norms = np.linalg.norm(store.embeddings("image"), axis=1)
    assert not np.allclose(norms, 1.0)
    assert store.info("image")["normalized"] is False
    # Ordered by relative path; class sub-folders are labels; captions share their image's group.
    image_items = store.items("image")
    assert [it["id"] for it in image_items] == sorted(it["id"] for it in image_items)
    assert {it["label"] for it in image_items} == {"cat", "dog"}
    text_items = store.items("text")
    assert text_items[0] == {
        "id": "cat/000.png#0",
        "source": "a photo of cat number 0",
        "group": "cat/000.png",
        "label": "cat",
    }
    assert text_items[1]["group"] == "cat/000.png" and text_items[1]["id"] == "cat/000.png#1"
    groups = {it["group"] for it in image_items}
    assert all(it["group"] in groups for it in text_items if "corrupt" not in it["group"])
    enc = store.encoder
    assert enc["family"] == "open_clip" and enc["model"] == "gapscope-tiny-vit"
    assert enc["weights"] == "random (seed 0)" and enc["embedding_dim"] == 32
    assert store.manifest["extract"]["batch_size"] == 5


def test_broken_inputs_are_skipped_and_reported(image_store, audio_store):
    out, result = image_store
    skips = _skips(EmbeddingStore.open(out))
    assert "cat/corrupt.png" in skips and "UnidentifiedImageError" in skips["cat/corrupt.png"]
    assert skips["dog/missing.png"] == "file not found"
    assert skips["dog/000.png"] == "empty caption"
    assert "Skipped" in result.stdout and "cat/corrupt.png" in result.stdout
    assert "dog/missing.png" in result.stdout
    assert "random weights" in result.stdout

    out, result = audio_store
    skips = _skips(EmbeddingStore.open(out))
    assert "tone/empty.wav" in skips
    assert skips["noise/missing.wav"] == "file not found"
    assert "tone/empty.wav" in result.stdout


def test_audio_text_store(audio_store, audio_data):
    out, _ = audio_store
    store = EmbeddingStore.open(out)
    assert store.modalities == ["text", "audio"]
    assert store.info("audio")["rows"] == audio_data.n_good
    assert store.info("text")["rows"] == audio_data.n_captions
    assert store.encoder["family"] == "clap"
    assert store.encoder["preprocessing"]["sampling_rate"] == 16000
    assert store.info("audio")["normalized"] is False
    norms = np.linalg.norm(store.embeddings("audio"), axis=1)
    assert not np.allclose(norms, 1.0)
    # JSONL lists of captions: two text rows for one clip, one group.
    text = store.items("text")
    assert [t["group"] for t in text[:2]] == ["tone/00.wav", "tone/00.wav"]
    assert {t["label"] for t in text} == {"tone", "noise"}


@pytest.mark.parametrize("which", ["image_store", "audio_store"])
def test_analyze_through_the_cli(which, request):
    out, _ = request.getfixturevalue(which)
    result = run_module("gapscope", "analyze", out, "--format", "json", "--quiet")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    pair = "image-text" if which == "image_store" else "text-audio"
    assert pair in report["pairs"]
    assert np.isfinite(report["pairs"][pair]["gap"])


def test_rerun_of_a_finished_store_does_nothing(image_store, image_data, cli):
    out, _ = image_store
    before = (out / "image.npy").read_bytes()
    result = cli(
        "extract",
        "--images",
        image_data.images,
        "--captions",
        image_data.captions,
        "--model",
        "gapscope-tiny-vit",
        "--batch-size",
        "5",
        "-o",
        out,
    )
    assert "already complete" in result.stdout
    assert (out / "image.npy").read_bytes() == before


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (["--batch-size", "4"], "--batch-size: store has 5, now 4"),
        (["--seed", "1"], "--seed: store has 0, now 1"),
        (["--precision", "bf16"], "--precision: store has fp32, now bf16"),
        (["--shard", "0/2"], "--shard: store has none, now 0/2"),
    ],
)
def test_different_arguments_are_refused(image_store, image_data, cli, change, fragment):
    out, _ = image_store
    args = {"--batch-size": "5"}
    args.update(dict(zip(change[::2], change[1::2], strict=True)))
    flat = [x for kv in args.items() for x in kv]
    result = cli(
        "extract",
        "--images",
        image_data.images,
        "--captions",
        image_data.captions,
        "--model",
        "gapscope-tiny-vit",
        *flat,
        "-o",
        out,
        expect=2,
    )
    line = result.stderr.strip()
    assert line.startswith("Error: ") and "\n" not in line
    assert fragment in line and "--overwrite" in line


def test_overwrite_and_workers_give_the_same_store(image_store, image_data, cli, tmp_path):
    """Decoding in worker processes or in this one, the store is the same."""
    from extract_testkit import assert_same_store

    out, _ = image_store
    copy = tmp_path / "again"
    cli(
        "extract",
        "--images",
        image_data.images,
        "--captions",
        image_data.captions,
        "--model",
        "gapscope-tiny-vit",
        "--batch-size",
        "5",
        "--workers",
        "0",
        "-q",
        "-o",
        copy,
    )
    assert_same_store(out, copy, manifest=False)
    cli(
        "extract",
        "--images",
        image_data.images,
        "--captions",
        image_data.captions,
        "--model",
        "gapscope-tiny-vit",
        "--batch-size",
        "5",
        "--workers",
        "2",
        "-q",
        "--overwrite",
        "-o",
        copy,
    )
    assert_same_store(out, copy)


def test_dataset_change_is_refused(tmp_path, cli):
    from extract_testkit import write_images

    data = write_images(tmp_path, per_class=2, broken=False)
    out = tmp_path / "store"
    args = ["extract", "--images", data.images, "--model", "gapscope-tiny-vit", "-q", "-o", out]
    cli(*args)
    (data.images / "cat" / "extra.png").write_bytes((data.images / "cat" / "000.png").read_bytes())
    result = cli(*args, expect=2)
    assert "the dataset" in result.stderr and "changed" in result.stderr


def test_images_only_store(tmp_path, cli):
    from extract_testkit import write_images

    data = write_images(tmp_path, per_class=2, classes=("a",), broken=False)
    # Every image in one sub-folder: still a label; no captions: an image-only store.
    cli(
        "extract",
        "--images",
        data.images,
        "--model",
        "gapscope-tiny-vit",
        "-q",
        "-o",
        tmp_path / "s",
    )
    store = EmbeddingStore.open(tmp_path / "s")
    assert store.modalities == ["image"] and store.info("image")["rows"] == 2
