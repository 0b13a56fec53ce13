"""Resume works for webdataset shards and saved Hugging Face datasets as for folders.

- An extract killed (SIGKILL, in a forked child) at every kill point it crosses, then run
  again, gives the store one uninterrupted run gives, byte for byte, with no stray file: the
  whole matrix of ``test_kill_boundaries.py``'s plain extract, on a few samples of each input.
- Between a kill and the rerun, a changed image in a shard, or a dataset saved again with a
  changed image, is refused with one line; a changed ``.json`` member (metadata, not read) and
  a dataset saved again with the same content resume.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from dataset_testkit import encoded_image, write_hf_images, write_shards, write_tar
from extract_testkit import assert_same_store
from fork_testkit import KILLED, killed_at, one_thread, run_forked

from gapscope.data.store import EmbeddingStore
from gapscope.extract import extract, load_encoder

BATCH = 2


@pytest.fixture(scope="module", autouse=True)
def _fast_and_deterministic():
    with one_thread(fsync=False):
        yield


@pytest.fixture(scope="module")
def encoder():
    return load_encoder("open_clip", model="gapscope-tiny-vit", device="cpu")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, dict[str, object]]:
    """The extract arguments of each input: 4 samples in 2 shards, 3 rows with 6 captions."""
    shards = write_shards(tmp_path_factory.mktemp("resume-wds"), shards=2, per_shard=2)
    hf = write_hf_images(tmp_path_factory.mktemp("resume-hf"), rows=3)
    return {
        "webdataset": {"webdataset": shards.pattern},
        "hf-dataset": {
            "hf_dataset": hf.dataset,
            "split": "train",
            "image_column": "image",
            "text_column": "captions",
        },
    }


def _command(out: Path, encoder, **options) -> Callable[[], object]:
    # Every batch its own part: a kill point between every two batches.
    args = {"batch_size": BATCH, "workers": 0, "quiet": True, "part_rows": 1}
    return lambda: extract(out, encoder=encoder, **args, **options)


def _assert_finished(work: Path, reference: Path, where: str) -> None:
    assert sorted(os.listdir(work)) == ["out"], f"{where}: stray files {os.listdir(work)}"
    assert_same_store(work / "out", reference)
    store = EmbeddingStore.open(work / "out")
    store.validate()
    assert store.fingerprint() == store.fingerprint(verify=True), where


@pytest.mark.parametrize("kind", ["webdataset", "hf-dataset"])
def test_killed_at_every_kill_point_resumes_exactly(kind, inputs, encoder, tmp_path):
    options = inputs[kind]
    reference = tmp_path / "reference" / "out"
    _command(reference, encoder, **options)()
    points = []
    for k in itertools.count(1):
        work = tmp_path / f"kill-{k}"
        work.mkdir()
        log = tmp_path / f"kill-{k}.log"
        status = run_forked(_command(work / "out", encoder, **options), kill_at=f"*@{k}", log=log)
        if status == 0:  # past the last kill point: an uninterrupted run
            _assert_finished(work, reference, "no kill")
            break
        assert status == KILLED, log.read_text()[-3000:]
        points.append(killed_at(log))
        _command(work / "out", encoder, **options)()
        _assert_finished(work, reference, f"after a kill at {points[-1]} and a rerun")
        shutil.rmtree(work)
    # Both modalities were cut between parts, and the finalisation at each of its writes.
    assert points.count("atomic:replaced:00000000.npy") == 2
    assert points.count("atomic:replaced:00000001.npy") == 2
    assert {"store:locked", "atomic:replaced:image.npy", "remove:done:parts"} <= set(points)


def _killed_after_one_part(out: Path, encoder, options: dict[str, object]) -> None:
    status = run_forked(_command(out, encoder, **options), kill_at="atomic:replaced:00000000.npy@1")
    assert status == KILLED
    store = EmbeddingStore.open(out, allow_incomplete=True)
    assert not store.complete and store.rows_written("image") == BATCH


def _cli_args(options: dict[str, object], out: Path) -> list[str]:
    args = ["extract", "-o", str(out), "--model", "gapscope-tiny-vit", "--device", "cpu"]
    args += ["--batch-size", str(BATCH), "--workers", "0", "-q"]
    for name, value in options.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    return args


def _rewrite_shard(shard: Path, change: str) -> None:
    """The shard written again with its second image's pixels, or its metadata, changed."""
    with tarfile.open(shard) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]
    images = [k for k, (name, _) in enumerate(members) if name.endswith((".jpg", ".png"))]
    jsons = [k for k, (name, _) in enumerate(members) if name.endswith(".json")]
    if change == "image":
        name, _ = members[images[1]]
        members[images[1]] = (name, encoded_image(np.random.default_rng(99), name[-3:]))
    else:
        name, _ = members[jsons[1]]
        members[jsons[1]] = (name, b'{"status": "ok", "note": "metadata edited after the kill"}')
    write_tar(shard, members)


@pytest.mark.parametrize("change", ["image", "metadata"])
def test_a_changed_shard_is_refused_and_changed_metadata_resumes(
    change, encoder, tmp_path, tmp_path_factory, cli
):
    data = write_shards(tmp_path_factory.mktemp("changed-wds"), shards=2, per_shard=2)
    options = {"webdataset": data.pattern}
    reference = tmp_path / "reference"
    _command(reference, encoder, **options)()
    out = tmp_path / "out"
    _killed_after_one_part(out, encoder, options)
    _rewrite_shard(data.shards[1], change)
    if change == "image":
        result = cli(*_cli_args(options, out), expect=2)
        [line] = result.stderr.splitlines()
        assert line.startswith(f"Error: {out}: holds an interrupted extract made with different")
        assert "the dataset (its files, captions or columns changed)" in line
        assert not EmbeddingStore.open(out, allow_incomplete=True).complete
    else:
        cli(*_cli_args(options, out))
        assert_same_store(out, reference)


@pytest.mark.parametrize("change", ["image", "nothing"])
def test_a_dataset_saved_again_is_refused_if_changed_and_resumes_if_not(
    change, encoder, tmp_path, cli
):
    import datasets

    data = write_hf_images(tmp_path / "data", rows=3)
    options = {
        "hf_dataset": data.dataset,
        "split": "train",
        "image_column": "image",
        "text_column": "captions",
    }
    reference = tmp_path / "reference"
    _command(reference, encoder, **options)()
    out = tmp_path / "out"
    _killed_after_one_part(out, encoder, options)
    # Saved again by datasets (new Arrow files, a new state.json), with or without a change.
    loaded = datasets.load_from_disk(str(data.dataset))
    if change == "image":
        from PIL import Image

        def other_picture(row, index):
            if index == 2:
                row["image"] = Image.new("RGB", (36, 36), (200, 10, 10))
            return row

        loaded["train"] = loaded["train"].map(other_picture, with_indices=True)
    loaded.save_to_disk(str(tmp_path / "saved-again"))
    shutil.rmtree(data.dataset)
    os.rename(tmp_path / "saved-again", data.dataset)
    if change == "image":
        result = cli(*_cli_args(options, out), expect=2)
        [line] = result.stderr.splitlines()
        assert "holds an interrupted extract made with different arguments" in line
        assert "the dataset (its files, captions or columns changed)" in line
    else:
        cli(*_cli_args(options, out))
        assert_same_store(out, reference)
