"""Shards then merge equal a single run; merge refuses shards that do not belong together."""

from __future__ import annotations

import json

import pytest
from extract_testkit import assert_same_store, write_images
from hypothesis import given
from hypothesis import strategies as st

from gapscope.data.store import EmbeddingStore
from gapscope.errors import GapscopeError, StoreError
from gapscope.extract import extract, merge_stores, parse_shard, plan_batches
from gapscope.extract.shards import Shard

ARGS = {"model": "gapscope-tiny-vit", "device": "cpu", "batch_size": 3, "quiet": True, "workers": 0}


@pytest.fixture(scope="module")
def shard_run(image_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    single = root / "single"
    extract(single, images=image_data.images, captions=image_data.captions, **ARGS)
    shards = []
    for i in range(3):
        shards.append(root / f"shard-{i}")
        summary = extract(
            shards[-1],
            images=image_data.images,
            captions=image_data.captions,
            shard=f"{i}/3",
            **ARGS,
        )
        assert summary.shard == f"{i}/3"
    return root, single, shards


def test_shards_then_merge_equal_a_single_run(shard_run, cli):
    root, single, shards = shard_run
    # Shards given out of order: merge orders them by index.
    result = cli("merge", root / "merged", shards[2], shards[0], shards[1])
    assert "merged from 3 shards" in result.stdout
    assert_same_store(root / "merged", single)


def test_shards_are_disjoint_contiguous_slices(shard_run):
    from gapscope.data.store import EmbeddingStore

    _, single, shards = shard_run
    whole = EmbeddingStore.open(single)
    for modality in whole.modalities:
        ids = [it["id"] for s in shards for it in EmbeddingStore.open(s).items(modality)]
        assert ids == [it["id"] for it in whole.items(modality)]


def test_merge_refuses_bad_sets(shard_run, image_data, tmp_path):
    root, single, shards = shard_run
    with pytest.raises(GapscopeError, match=r"missing shard\(s\) 1/3"):
        merge_stores(tmp_path / "a", [shards[0], shards[2]])
    with pytest.raises(GapscopeError, match="given twice"):
        merge_stores(tmp_path / "b", [shards[0], shards[0], shards[1], shards[2]])
    with pytest.raises(GapscopeError, match="not a shard store"):
        merge_stores(tmp_path / "c", [single])
    other = tmp_path / "other-0"
    extract(
        other,
        images=image_data.images,
        captions=image_data.captions,
        shard="0/3",
        **{**ARGS, "seed": 7},
    )
    with pytest.raises(GapscopeError, match="different extracts.*--seed"):
        merge_stores(tmp_path / "d", [other, shards[1], shards[2]])
    before = (other / "image.npy").read_bytes()
    with pytest.raises(GapscopeError, match="not empty: it holds a finished store of another"):
        merge_stores(other, shards)
    assert (other / "image.npy").read_bytes() == before


def test_merge_into_its_own_finished_result_changes_nothing(shard_run):
    """A finished store of the same extract at OUT (a merge killed at its very end, or the
    unsharded run) already holds what the merge would write."""
    root, single, shards = shard_run
    before = {p.name: p.stat().st_mtime_ns for p in single.iterdir()}
    merged = merge_stores(single, shards)
    assert merged.path == single
    assert {p.name: p.stat().st_mtime_ns for p in single.iterdir()} == before


def test_merge_refuses_an_out_that_is_a_shard(shard_run, cli):
    """merge --overwrite OUT OUT other used to delete the shard OUT."""
    root, single, shards = shard_run
    before = {p.name: p.read_bytes() for p in shards[0].iterdir()}
    # OUT is a shard, lies inside one, or holds them.
    for out in (shards[0], shards[0] / "inside", root):
        result = cli("merge", "--overwrite", out, *shards, expect=2)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ")
        assert "is one of the shards" in lines[0] or "overlaps the shard" in lines[0]
    assert {p.name: p.read_bytes() for p in shards[0].iterdir()} == before
    assert not [p for p in shards[0].parent.iterdir() if ".gapscope-" in p.name]


def test_merge_refuses_an_unfinished_shard(shard_run, tmp_path, cli):
    from gapscope.data.store import EmbeddingStore

    _, _, shards = shard_run
    unfinished = tmp_path / "unfinished"
    store = EmbeddingStore.create(unfinished, extract={"shard": "1/3"})
    del store
    result = cli("merge", tmp_path / "m", shards[0], unfinished, shards[2], expect=2)
    assert "incomplete" in result.stderr


def test_more_shards_than_batches(tmp_path, cli):
    """Shard 0/2 of one batch holds none: it is finished with no rows, and the merge equals
    one process's extract (as torchrun with more ranks than batches needs)."""
    data = write_images(tmp_path, per_class=1, classes=("x",), broken=False)
    extract(tmp_path / "single", images=data.images, **ARGS)
    shards = [tmp_path / f"s{i}" for i in range(2)]
    for i, shard in enumerate(shards):
        extract(shard, images=data.images, shard=f"{i}/2", **ARGS)  # 1 batch, in 1/2
    empty = EmbeddingStore.open(shards[0])
    assert empty.is_shard and empty.modalities == [] and empty.complete
    shown = " ".join(cli("info", shards[0]).stdout.split())
    assert "shard 0/2 of an extract with no rows" in shown
    assert "shard 1/2 of an extract:" in " ".join(cli("info", shards[1]).stdout.split())
    assert "has no embeddings; need at least two" in cli("analyze", shards[0], expect=2).stderr
    merge_stores(tmp_path / "merged", shards)
    assert_same_store(tmp_path / "merged", tmp_path / "single")


def test_only_a_shard_may_be_finished_without_rows(tmp_path):
    store = EmbeddingStore.create(tmp_path / "s", encoder={}, dataset={})
    with pytest.raises(StoreError, match="nothing to finalise, no rows were written"):
        store.finalize()
    shard = EmbeddingStore.create(tmp_path / "t", encoder={}, dataset={}, extract={"shard": "1/2"})
    shard.finalize()
    assert EmbeddingStore.open(tmp_path / "t").modalities == []
    # The same empty manifest without the shard record is not a store.
    manifest = tmp_path / "t" / "manifest.json"
    record = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**record, "extract": {"shard": None}}))
    with pytest.raises(StoreError, match="store has no modalities"):
        EmbeddingStore.open(tmp_path / "t")


def test_parse_shard_errors():
    assert parse_shard("2/3") == Shard(2, 3)
    for bad in ("3/3", "1", "a/b", "-1/2", "0/0"):
        with pytest.raises(GapscopeError, match="--shard"):
            parse_shard(bad)


@given(rows=st.integers(0, 200), batch=st.integers(1, 17), count=st.integers(1, 9))
def test_plan_batches_partition_the_rows(rows, batch, count):
    whole = plan_batches(rows, batch)
    pieces = [b for i in range(count) for b in plan_batches(rows, batch, Shard(i, count))]
    assert pieces == whole
    assert [r for b in whole for r in b] == list(range(rows))
    assert all(b.start % batch == 0 for b in whole)


def test_torchrun_ranks_are_shards_merged_by_rank_0(shard_run, image_data, tmp_path):
    """Real torchrun, two CPU processes talking over gloo on localhost."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed beside this Python")
    _, single, _ = shard_run
    out = tmp_path / "store"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "gapscope",
            "extract",
            "--images",
            str(image_data.images),
            "--captions",
            str(image_data.captions),
            "--model",
            "gapscope-tiny-vit",
            "--device",
            "cpu",
            "--batch-size",
            "3",
            "--workers",
            "0",
            "-q",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # Two shards merged equal the single run, and the shard folders are gone.
    assert_same_store(out, single)
    assert not (tmp_path / "store.shards").exists()


def test_a_torchrun_rank_whose_slice_is_all_unreadable_ends_as_one_process(tmp_path):
    """Real torchrun, two gloo ranks: rank 1's slice (c, d) is all unreadable and has no
    caption to keep. The run succeeds and its store equals one process's extract, skipped
    files listed, as it would with any number of ranks."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed beside this Python")
    images, _ = _unreadable_halves(tmp_path)
    args = {**ARGS, "batch_size": 2}
    extract(tmp_path / "single", images=images, **args)
    command = [torchrun, "--standalone", "--nproc-per-node", "2", "-m", "gapscope", "extract"]
    proc = subprocess.run(
        [
            *command,
            *("--images", str(images), "--model", "gapscope-tiny-vit", "--device", "cpu"),
            *("--batch-size", "2", "--workers", "0", "-q", "-o", str(tmp_path / "store")),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_same_store(tmp_path / "store", tmp_path / "single")
    assert len(EmbeddingStore.open(tmp_path / "store").manifest["skipped"]) == 2
    # Rank 0 shows the merged store, and the files rank 1 skipped (rank 0 skipped none).
    shown = " ".join(proc.stdout.split())
    assert "store: image 2 (merged from 2 torchrun ranks)" in shown, proc.stdout
    assert "Skipped 2 image" in shown and "c.png" in shown and "d.png" in shown


def _unreadable_halves(root):
    """Four images with captions: the first two decode, the last two are garbage bytes."""
    import numpy as np
    from PIL import Image

    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(
            images / f"{name}.png"
        )
    for name in ("c", "d"):
        (images / f"{name}.png").write_bytes(b"not an image")
    captions = root / "captions.csv"
    captions.write_text("file,caption\na.png,one\nb.png,two\nc.png,three\nd.png,four\n")
    return images, captions


def test_a_shard_whose_images_are_all_unreadable_still_merges_as_one_run(tmp_path):
    """Batches of 2: shard 1/2 holds c and d, both unreadable. It keeps their captions and
    lists them, and the merge equals one process's extract; the whole-dataset rule (some
    image must be readable) is the merge's."""
    images, captions = _unreadable_halves(tmp_path)
    args = {**ARGS, "batch_size": 2}
    extract(tmp_path / "single", images=images, captions=captions, **args)
    shards = [tmp_path / f"s{i}" for i in range(2)]
    for i, shard in enumerate(shards):
        extract(shard, images=images, captions=captions, shard=f"{i}/2", **args)
    merge_stores(tmp_path / "merged", shards)
    assert_same_store(tmp_path / "merged", tmp_path / "single")
    # Without a caption to keep, the slice makes no row at all: the shard is finished with
    # none, its skipped files listed, and the merge still equals one process's extract.
    extract(tmp_path / "bare_single", images=images, **args)
    bare = [tmp_path / f"bare{i}" for i in range(2)]
    for i, shard in enumerate(bare):
        extract(shard, images=images, shard=f"{i}/2", **args)
    empty = EmbeddingStore.open(bare[1])
    assert empty.modalities == []
    assert [e["source"] for e in empty.manifest["skipped"]] == ["c.png", "d.png"]
    merge_stores(tmp_path / "bare_merged", bare)
    assert_same_store(tmp_path / "bare_merged", tmp_path / "bare_single")


def test_a_merge_of_shards_without_one_readable_image_is_refused(tmp_path):
    images, captions = _unreadable_halves(tmp_path)
    for name in ("a", "b"):
        (images / f"{name}.png").write_bytes(b"not an image either")
    args = {**ARGS, "batch_size": 2}
    with pytest.raises(GapscopeError, match="no readable image files: all 4 were skipped"):
        extract(tmp_path / "single", images=images, captions=captions, **args)
    shards = [tmp_path / f"s{i}" for i in range(2)]
    for i, shard in enumerate(shards):
        extract(shard, images=images, captions=captions, shard=f"{i}/2", **args)
    with pytest.raises(GapscopeError, match="no readable image files: all 4 were skipped"):
        merge_stores(tmp_path / "merged", shards)
    assert not [p.name for p in tmp_path.iterdir() if "merged" in p.name]  # nor its lock
