"""``extract --hf-dataset``: a Hugging Face dataset saved with ``save_to_disk``, written by
``datasets`` itself (Image and Audio features, a DatasetDict with splits, a Dataset without).

The oracle is the same media bytes and captions as a folder and a captions file: the stores'
arrays must be equal byte for byte.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dataset_testkit import write_hf_audio, write_hf_images
from extract_testkit import assert_same_store

from gapscope.data.store import EmbeddingStore
from gapscope.errors import GapscopeError
from gapscope.extract import extract
from gapscope.extract.datasets import scan_dataset

ARGS = {"model": "gapscope-tiny-vit", "device": "cpu", "batch_size": 3, "quiet": True, "workers": 0}
COLUMNS = {"split": "train", "image_column": "image", "text_column": "captions"}


@pytest.fixture(scope="module")
def hf_images(tmp_path_factory):
    return write_hf_images(tmp_path_factory.mktemp("hf"))


@pytest.fixture(scope="module")
def hf_store(hf_images, tmp_path_factory):
    out = tmp_path_factory.mktemp("hf-store") / "store"
    extract(out, hf_dataset=hf_images.dataset, **COLUMNS, **ARGS)
    return out


def _arrays(path: Path) -> dict[str, bytes]:
    store = EmbeddingStore.open(path)
    return {m: np.asarray(store.embeddings(m)).tobytes() for m in store.modalities}


def test_a_saved_dataset_gives_the_rows_of_the_same_folder_byte_for_byte(
    hf_images, hf_store, tmp_path
):
    folder = tmp_path / "folder-store"
    extract(folder, images=hf_images.folder, captions=hf_images.captions, **ARGS)
    assert _arrays(hf_store) == _arrays(folder)
    store = EmbeddingStore.open(hf_store)
    assert [it["id"] for it in store.items("image")] == [str(i) for i in range(hf_images.rows)]
    assert store.items("image")[2] == {"id": "2", "source": "image[2]", "group": "2"}
    # Two captions a row (a list column), paired with their row by its index.
    texts = store.items("text")
    assert [it["id"] for it in texts[:3]] == ["0#0", "0#1", "1#0"]
    assert texts[3] == {"id": "1#1", "source": "another caption of row 1", "group": "1"}
    dataset = store.manifest["dataset"]
    assert dataset["split"] == "train" and dataset["hf_dataset"] == str(hf_images.dataset)
    assert dataset["columns"] == {"image": "image", "text": "captions"}


def test_decoding_workers_read_the_same_cells(hf_images, hf_store, tmp_path):
    out = tmp_path / "store"
    extract(out, hf_dataset=hf_images.dataset, **COLUMNS, **{**ARGS, "workers": 2})
    assert_same_store(out, hf_store)


def test_the_other_split(hf_images, tmp_path):
    summary = extract(
        tmp_path / "store", hf_dataset=hf_images.dataset, **{**COLUMNS, "split": "test"}, **ARGS
    )
    assert summary.rows == {"image": 2, "text": 2}


def test_an_audio_dataset_equals_its_files_with_clap(tmp_path):
    data = write_hf_audio(tmp_path)
    clap = {**ARGS, "model": "gapscope-tiny-clap"}
    extract(
        tmp_path / "hf", hf_dataset=data.dataset, audio_column="clip", text_column="text", **clap
    )
    extract(tmp_path / "folder", audio=data.folder, captions=data.captions, **clap)
    assert _arrays(tmp_path / "hf") == _arrays(tmp_path / "folder")
    store = EmbeddingStore.open(tmp_path / "hf")
    assert store.modalities == ["text", "audio"] and store.info("audio")["rows"] == data.rows
    assert store.manifest["encoder"]["family"] == "clap"


def test_rows_without_media_or_caption_are_skipped_and_listed(tmp_path, cli):
    from dataset_testkit import encoded_image
    from datasets import Dataset, Features, Image, Value

    rng = np.random.default_rng(2)
    good = [{"bytes": encoded_image(rng, "png"), "path": None} for _ in range(4)]
    rows = {
        "picture": [good[0], None, good[1], {"bytes": b"garbage", "path": None}, good[2], good[3]],
        "caption": ["fine", "no picture", None, "a corrupt picture", "   ", "fine too"],
    }
    features = Features({"picture": Image(), "caption": Value("string")})
    Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "ds"))
    out = tmp_path / "store"
    result = cli(
        *("extract", "--hf-dataset", tmp_path / "ds", "--image-column", "picture"),
        *("--text-column", "caption", "-o", out, "--model", "gapscope-tiny-vit"),
        *("--device", "cpu", "--batch-size", "2", "--workers", "0"),
    )
    store = EmbeddingStore.open(out)
    skipped = {s["source"]: s["reason"] for s in store.manifest["skipped"]}
    assert skipped.pop("picture[3]").startswith("UnidentifiedImageError")
    assert skipped == {
        "picture[1]": "a null cell",
        "picture[2]": "no caption in this row",
        "picture[4]": "an empty caption",
    }
    assert [it["id"] for it in store.items("image")] == ["0", "5"]
    assert [it["id"] for it in store.items("text")] == ["0#0", "3#0", "5#0"]
    assert "Skipped 4 image" in result.stdout


def test_binary_and_string_columns(tmp_path):
    """Raw encoded bytes work as an image column; an empty caption beside others is listed."""
    from dataset_testkit import encoded_image
    from datasets import Dataset

    rng = np.random.default_rng(5)
    Dataset.from_dict(
        {
            "png": [encoded_image(rng, "png") for _ in range(2)],
            "texts": [["one", ""], ["two", None, "three"]],
        }
    ).save_to_disk(str(tmp_path / "ds"))
    ds = scan_dataset(hf_dataset=tmp_path / "ds", image_column="png", text_column="texts")
    assert [c.id for c in ds.candidates["text"]] == ["0#0", "1#0", "1#1"]
    assert ds.skipped == [
        {"modality": "text", "source": "texts[0]", "reason": "an empty caption"},
        {"modality": "text", "source": "texts[1]", "reason": "a null caption in the list"},
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"image_column": "image"}, "holds the splits test, train: choose one with --split"),
        ({**COLUMNS, "split": "validation"}, "--split validation: no such split"),
        ({**COLUMNS, "image_column": "picture"}, "--image-column picture: no such column"),
        ({**COLUMNS, "image_column": "captions"}, "a column of list of string, not of images"),
        ({**COLUMNS, "text_column": "image"}, "a column of Image, not of captions"),
        ({"split": "train"}, "name its media column with --image-column or --audio-column"),
        ({**COLUMNS, "audio_column": "image"}, "give --image-column or --audio-column, not both"),
        ({**COLUMNS, "audio_column": "image", "image_column": None}, "not of audio"),
    ],
)
def test_bad_columns_and_splits_are_refused(hf_images, options, message):
    with pytest.raises(GapscopeError, match=message):
        scan_dataset(hf_dataset=hf_images.dataset, **options)


def test_a_folder_that_is_not_a_saved_dataset_is_refused(hf_images, tmp_path):
    with pytest.raises(GapscopeError, match="not a dataset saved with save_to_disk"):
        scan_dataset(hf_dataset=hf_images.folder, image_column="image")
    with pytest.raises(GapscopeError, match="folder not found"):
        scan_dataset(hf_dataset=tmp_path / "none", image_column="image")
    with pytest.raises(GapscopeError, match="leave --split out"):
        scan_dataset(hf_dataset=write_hf_audio(tmp_path).dataset, audio_column="clip", split="x")


def test_shards_then_merge_equal_one_run(hf_images, hf_store, tmp_path):
    from gapscope.extract import merge_stores

    parts = []
    for i in range(2):
        parts.append(tmp_path / f"part-{i}")
        extract(parts[-1], hf_dataset=hf_images.dataset, shard=f"{i}/2", **COLUMNS, **ARGS)
    merge_stores(tmp_path / "merged", parts)
    assert_same_store(tmp_path / "merged", hf_store)
