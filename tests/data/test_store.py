"""The embedding store: round trips, parts and resume, a clear error for every malformed store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from store_format1 import as_format1

from gapscope.data.store import STAMPS, EmbeddingStore, fingerprint_arrays
from gapscope.errors import StoreError


def _items(prefix: str, n: int, groups=None, labels=None):
    out = []
    for i in range(n):
        item = {
            "id": f"{prefix}{i}",
            "source": f"{prefix}-{i}",
            "group": groups[i] if groups is not None else f"g{i}",
        }
        if labels is not None:
            item["label"] = labels[i]
        out.append(item)
    return out


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    return {
        "image": rng.normal(size=(5, 8)).astype(np.float32),
        "text": rng.normal(size=(10, 8)).astype(np.float32),
    }


@pytest.fixture
def store_path(tmp_path, arrays):
    path = tmp_path / "store"
    items = {
        "image": _items("img", 5, labels=["a", "a", "b", "b", "c"]),
        "text": _items(
            "txt",
            10,
            groups=[f"g{i // 2}" for i in range(10)],
            labels=[c for c in "aabbc" for _ in range(2)],
        ),
    }
    EmbeddingStore.write(path, arrays, items, encoder={"family": "test"}, normalized={"text": True})
    return path


def test_round_trip_memory_mapped(store_path, arrays):
    store = EmbeddingStore.open(store_path)
    assert store.modalities == ["image", "text"]
    for m, a in arrays.items():
        got = store.embeddings(m)
        assert isinstance(got, np.memmap)
        np.testing.assert_array_equal(got, a)
        assert not got.flags.writeable
    assert store.info("text")["normalized"] is True
    assert store.info("image")["normalized"] is False
    assert store.encoder == {"family": "test"}
    # The documented files, readable by any tool.
    np.testing.assert_array_equal(np.load(store_path / "image.npy"), arrays["image"])
    with np.load(store_path / "text.items.npz") as columns:
        offsets, data = columns["group.offsets"], columns["group.data"]
    assert json.loads(data[offsets[3] : offsets[4]].tobytes()) == "g1"


def test_group_and_label_codes_are_shared_across_modalities(store_path):
    store = EmbeddingStore.open(store_path)
    gi, gt = store.groups("image"), store.groups("text")
    assert gi.tolist() == [0, 1, 2, 3, 4]
    assert gt.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert store.labels("image").tolist() == [0, 0, 1, 1, 2]
    assert store.labels("text").tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]


def test_int_and_str_groups_stay_distinct(tmp_path):
    emb = {"image": np.ones((2, 3), np.float32), "text": np.ones((2, 3), np.float32)}
    items = {"image": _items("i", 2, groups=[1, "1"]), "text": _items("t", 2, groups=["1", 1])}
    store = EmbeddingStore.write(tmp_path / "s", emb, items)
    assert store.groups("image").tolist() == [0, 1]
    assert store.groups("text").tolist() == [1, 0]


def test_parts_resume_and_finalize_equal_single_write(tmp_path, arrays):
    items = {"image": _items("img", 5), "text": _items("txt", 10)}
    single = EmbeddingStore.write(tmp_path / "single", arrays, items)

    path = tmp_path / "parts"
    store = EmbeddingStore.create(path)
    store.append("image", arrays["image"][:2], items["image"][:2])
    # While this writer holds the lock, nobody else may append.
    with pytest.raises(StoreError, match="another gapscope process is writing"):
        EmbeddingStore.open(path, allow_incomplete=True).append(
            "image", arrays["image"][2:], items["image"][2:]
        )
    store.close()
    # A second process (a resumed extract) sees the rows written so far.
    again = EmbeddingStore.open(path, allow_incomplete=True)
    assert again.rows_written("image") == 2
    assert [it["id"] for it in again.part_items("image")] == ["img0", "img1"]
    again.append("image", arrays["image"][2:], items["image"][2:])
    for start in range(0, 10, 3):
        again.append("text", arrays["text"][start : start + 3], items["text"][start : start + 3])
    with pytest.raises(StoreError, match="incomplete"):
        EmbeddingStore.open(path)
    again.finalize()
    assert not (path / "parts").exists()
    for m in ("image", "text"):
        a = (single.path / f"{m}.npy").read_bytes()
        b = (path / f"{m}.npy").read_bytes()
        assert a == b
        items_name = f"{m}.items.npz"
        assert (single.path / items_name).read_bytes() == (path / items_name).read_bytes()


def test_append_rejects_mismatched_parts(tmp_path):
    store = EmbeddingStore.create(tmp_path / "s")
    store.append("image", np.ones((2, 4), np.float32), _items("i", 2))
    with pytest.raises(StoreError, match="dim 5"):
        store.append("image", np.ones((2, 5), np.float32), _items("i", 2))
    with pytest.raises(StoreError, match="2 embedding rows but 1 items"):
        store.append("image", np.ones((2, 4), np.float32), _items("i", 1))
    with pytest.raises(StoreError, match="float16 or float32"):
        store.append("image", np.ones((2, 4), np.float64), _items("i", 2))
    for bad in ("Video", "image-text", "a/b", "", "x" * 33):
        with pytest.raises(StoreError, match="use a lowercase identifier"):
            store.append(bad, np.ones((2, 4), np.float32), _items("i", 2))


def test_any_modality_name_round_trips_in_order(tmp_path):
    rng = np.random.default_rng(2)
    arrays = {m: rng.normal(size=(3, 4)).astype(np.float32) for m in ("video", "text", "depth")}
    items = {m: _items(m[0], 3) for m in arrays}
    store = EmbeddingStore.write(tmp_path / "s", arrays, items)
    assert store.modalities == ["text", "depth", "video"]
    for m, a in arrays.items():
        assert np.asarray(store.embeddings(m)).tobytes() == a.tobytes()
    assert store.manifest["fingerprint"] == fingerprint_arrays(arrays)


def test_create_refuses_to_clobber(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious.txt").write_text("keep me")
    with pytest.raises(StoreError, match="not empty"):
        EmbeddingStore.create(tmp_path / "data")
    with pytest.raises(StoreError, match="not an embedding store"):
        EmbeddingStore.create(tmp_path / "data", overwrite=True)
    assert (tmp_path / "data" / "precious.txt").read_text() == "keep me"


def test_fingerprint_changes_with_content(store_path, arrays):
    store = EmbeddingStore.open(store_path)
    assert store.fingerprint() == fingerprint_arrays(arrays)
    changed = dict(arrays, image=arrays["image"].copy())
    changed["image"][0, 0] += 1
    assert fingerprint_arrays(changed) != store.fingerprint()


def _tamper(path: Path, name: str = "image.npy") -> None:
    """Change one byte of a file and give it back its size and mtime."""
    target = path / name
    st = target.stat()
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_fingerprint_is_hashed_once_when_written_and_cached(store_path, arrays, monkeypatch):
    import gapscope.data.store as store_module

    manifest = json.loads((store_path / "manifest.json").read_text())
    # Hashed from the bytes as they were written: the same value as hashing the arrays.
    assert manifest["fingerprint"] == fingerprint_arrays(arrays)
    stamps = json.loads((store_path / STAMPS).read_text())
    assert sorted(stamps) == ["image.npy", "text.npy"]
    assert stamps["text.npy"]["size"] == (store_path / "text.npy").stat().st_size
    calls = []
    original = store_module.fingerprint_arrays
    monkeypatch.setattr(
        store_module, "fingerprint_arrays", lambda a: calls.append(1) or original(a)
    )
    store = EmbeddingStore.open(store_path)
    assert store.fingerprint() == manifest["fingerprint"] and calls == []
    # A new mtime (a copied or touched file): hashed again, same value.
    os.utime(store_path / "text.npy")
    assert store.fingerprint() == manifest["fingerprint"] and calls == [1]
    # verify hashes whatever the stamps say.
    assert store.fingerprint(verify=True) == manifest["fingerprint"] and calls == [1, 1]


def test_verify_finds_bytes_changed_behind_the_stamps(store_path):
    _tamper(store_path)
    store = EmbeddingStore.open(store_path)
    stale = store.fingerprint()  # size and mtime unchanged: the cache is trusted
    assert stale == json.loads((store_path / "manifest.json").read_text())["fingerprint"]
    with pytest.raises(StoreError, match="no longer match the fingerprint"):
        store.fingerprint(verify=True)


def test_stores_without_a_cached_fingerprint_are_hashed(store_path, arrays):
    manifest = json.loads((store_path / "manifest.json").read_text())
    del manifest["fingerprint"]
    (store_path / "manifest.json").write_text(json.dumps(manifest))
    (store_path / STAMPS).unlink()
    store = EmbeddingStore.open(store_path)
    assert store.fingerprint() == store.fingerprint(verify=True) == fingerprint_arrays(arrays)


def test_damaged_stamps_mean_hashing_again(store_path, arrays):
    (store_path / STAMPS).write_text("{not json")
    assert EmbeddingStore.open(store_path).fingerprint() == fingerprint_arrays(arrays)


@pytest.mark.parametrize("value", [42, "abc", {"sha256": "0" * 64}])
def test_a_bad_fingerprint_in_the_manifest_is_one_line(store_path, value):
    _rewrite_manifest(store_path, fingerprint=value)
    with pytest.raises(StoreError, match="'fingerprint' must be a sha256"):
        EmbeddingStore.open(store_path)


def test_analyze_verify_on_the_command_line(store_path):
    from typer.testing import CliRunner

    from gapscope.cli import app

    runner = CliRunner()
    fine = runner.invoke(app, ["analyze", str(store_path), "--verify", "-q", "-f", "json"])
    assert fine.exit_code == 0, fine.output
    _tamper(store_path)
    bad = runner.invoke(app, ["analyze", str(store_path), "--verify", "-q", "-f", "json"])
    assert bad.exit_code == 2
    assert "no longer match the fingerprint" in bad.output


# ------------------------------------------------------------------ malformed stores


def _rewrite_manifest(path: Path, **changes):
    manifest = json.loads((path / "manifest.json").read_text())
    for key, value in changes.items():
        if "." in key:
            top, mod, field = key.split(".")
            manifest[top][mod][field] = value
        else:
            manifest[key] = value
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_missing_store_and_manifest(tmp_path):
    with pytest.raises(StoreError, match="no such store"):
        EmbeddingStore.open(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="no manifest.json"):
        EmbeddingStore.open(tmp_path / "empty")


def test_manifest_not_json(store_path):
    (store_path / "manifest.json").write_text("{oops")
    with pytest.raises(StoreError, match="not valid JSON"):
        EmbeddingStore.open(store_path)


def test_unknown_format_version(store_path):
    _rewrite_manifest(store_path, format_version=99)
    with pytest.raises(StoreError, match="unknown store format version 99"):
        EmbeddingStore.open(store_path)


def test_rows_disagree_with_manifest(store_path):
    _rewrite_manifest(store_path, **{"modalities.text.rows": 11})
    with pytest.raises(StoreError, match="disagrees with the manifest"):
        EmbeddingStore.open(store_path)


def test_truncated_npy(store_path):
    data = (store_path / "text.npy").read_bytes()
    (store_path / "text.npy").write_bytes(data[: len(data) - 40])
    with pytest.raises(StoreError, match="truncated or not a valid .npy"):
        EmbeddingStore.open(store_path)


def test_missing_npy(store_path):
    (store_path / "image.npy").unlink()
    with pytest.raises(StoreError, match="file is missing"):
        EmbeddingStore.open(store_path)


def test_wrong_dtype(store_path):
    np.save(store_path / "image.npy", np.ones((5, 8), np.float64))
    with pytest.raises(StoreError, match="dtype float64"):
        EmbeddingStore.open(store_path)


def test_items_count_mismatch(store_path):
    as_format1(store_path)  # format 2: tests/data/test_store_format2.py
    lines = (store_path / "image.items.jsonl").read_text().splitlines()
    (store_path / "image.items.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(StoreError, match="5 embedding rows but 4 items"):
        EmbeddingStore.open(store_path)


def test_items_bad_json(store_path):
    as_format1(store_path)
    (store_path / "image.items.jsonl").write_text("{bad\n" * 5)
    with pytest.raises(StoreError, match="line 1 is not valid JSON"):
        EmbeddingStore.open(store_path)


def test_partial_labels(store_path):
    as_format1(store_path)
    lines = [json.loads(x) for x in (store_path / "image.items.jsonl").read_text().splitlines()]
    del lines[0]["label"]
    (store_path / "image.items.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    with pytest.raises(StoreError, match="labels on 4 of 5 rows"):
        EmbeddingStore.open(store_path)


def test_different_dims(store_path):
    np.save(store_path / "image.npy", np.ones((5, 7), np.float32))
    _rewrite_manifest(store_path, **{"modalities.image.dim": 7})
    with pytest.raises(StoreError, match="different dims"):
        EmbeddingStore.open(store_path)


def test_empty_store_manifest(tmp_path):
    EmbeddingStore.create(tmp_path / "s")
    _rewrite_manifest(tmp_path / "s", complete=True)
    with pytest.raises(StoreError, match="no modalities"):
        EmbeddingStore.open(tmp_path / "s")


def test_atomic_write_leaves_no_temporary_files(store_path):
    assert not [p for p in store_path.iterdir() if p.name.startswith(".")]
