"""Stores and arrays at fsspec URLs: fsspec's memory filesystem (read into memory) and
``file://`` (the local file, memory-mapped), compared with the same files read locally."""

from __future__ import annotations

import io
import json
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from store_format1 import FIXTURE
from typer.testing import CliRunner

from gapscope.cli import app
from gapscope.data.embedding_set import EmbeddingSet, load_array
from gapscope.data.remote import RemoteStore, is_url, local_path
from gapscope.data.store import EmbeddingStore
from gapscope.errors import GapscopeError, MissingDependencyError, StoreError

fsspec = pytest.importorskip("fsspec")
runner = CliRunner()
FINGERPRINT = "51f0492e3b95eba84332370516e15718075ed9a98f1a8160e05ba45f370653d9"


@pytest.fixture
def memory():
    """A fresh folder of fsspec's in-memory filesystem: (its URL, the filesystem)."""
    fs = fsspec.filesystem("memory")
    root = f"/gapscope-test-{uuid.uuid4().hex}"
    yield f"memory://{root}", fs
    if fs.exists(root):
        fs.rm(root, recursive=True)


def _upload(folder: Path, url: str, fs) -> str:
    root = url.removeprefix("memory://")
    for path in sorted(folder.iterdir()):
        fs.pipe(f"{root}/{path.name}", path.read_bytes())
    return url


def _store(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    arrays = {"image": rng.normal(size=(6, 4)).astype(np.float32)}
    arrays["text"] = rng.normal(size=(12, 4)).astype(np.float16)
    items = {
        "image": [
            {"id": f"i{k}", "source": f"i{k}.jpg", "group": k, "label": k % 2} for k in range(6)
        ],
        "text": [
            {"id": f"t{k}", "source": "a caption", "group": k // 2, "label": k // 2 % 2}
            for k in range(12)
        ],
    }
    EmbeddingStore.write(tmp_path / "store", arrays, items, encoder={"family": "test"})
    return tmp_path / "store"


def _same_set(a: EmbeddingSet, b: EmbeddingSet) -> None:
    assert a.modalities == b.modalities
    for m in a.modalities:
        np.testing.assert_array_equal(np.asarray(a.embeddings[m]), np.asarray(b.embeddings[m]))
        np.testing.assert_array_equal(a.groups[m], b.groups[m])
        np.testing.assert_array_equal(a.labels[m], b.labels[m])
    assert a.fingerprint() == b.fingerprint()


def test_url_or_path():
    assert is_url("s3://b/x") and is_url("hf://datasets/x") and not is_url("x/y.npy")
    assert not is_url(Path("memory://b"))  # a Path folded the // already: a local path
    assert local_path("file:///tmp/x") == Path("/tmp/x") and local_path("memory://x") is None


@pytest.mark.parametrize("fmt", [2, 1])
def test_a_store_in_memory_reads_as_the_local_one(tmp_path, memory, fmt):
    local = _store(tmp_path) if fmt == 2 else FIXTURE
    url = _upload(local, f"{memory[0]}/store", memory[1])
    store = EmbeddingStore.open(url)
    assert isinstance(store, RemoteStore) and store.format_version == fmt
    assert str(store.path) == url
    here = EmbeddingStore.open(local)
    for m in here.modalities:
        assert store.items(m) == here.items(m)
        assert not isinstance(store.embeddings(m), np.memmap)  # read into memory
    _same_set(EmbeddingSet.from_store(url), EmbeddingSet.from_store(local))
    if fmt == 1:
        assert EmbeddingSet.from_store(url).fingerprint() == FINGERPRINT


def test_a_remote_fingerprint_is_hashed_from_the_bytes_read(tmp_path, memory):
    local = _store(tmp_path)
    url = _upload(local, f"{memory[0]}/store", memory[1])
    expected = EmbeddingStore.open(local).fingerprint(verify=True)
    store = EmbeddingStore.open(url)
    assert not store._stamps_hold()  # the stamps are never trusted at a URL
    assert store.fingerprint() == store.fingerprint(verify=True) == expected
    # The same bytes but other embeddings: the manifest's value is not what gets reported.
    rows = np.load(local / "image.npy")
    rows[0, 0] += 1
    buffer = io.BytesIO()
    np.save(buffer, rows)
    memory[1].pipe(f"{url.removeprefix('memory://')}/image.npy", buffer.getvalue())
    changed = EmbeddingSet.from_store(url)
    assert changed.fingerprint() != expected
    with pytest.raises(StoreError, match="no longer match the fingerprint"):
        EmbeddingSet.from_store(url, verify=True)


def test_a_file_url_is_the_local_store_memory_mapped(tmp_path):
    local = _store(tmp_path)
    store = EmbeddingStore.open(f"file://{local}")
    assert not isinstance(store, RemoteStore) and store.path == local
    assert isinstance(store.embeddings("image"), np.memmap)
    assert store._stamps_hold()
    _same_set(EmbeddingSet.from_store(f"file://{local}"), EmbeddingSet.from_store(local))


def test_remote_stores_are_read_only_and_refused_in_one_line(tmp_path, memory):
    url = _upload(_store(tmp_path), f"{memory[0]}/store", memory[1])
    store = EmbeddingStore.open(url)
    with pytest.raises(StoreError, match="stores at URLs are read-only"):
        store.update_manifest(note="x")
    for target in (url, "s3://bucket/new", f"file://{tmp_path}/new"):
        with pytest.raises(StoreError, match="writes stores to local folders only"):
            EmbeddingStore.create(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]
    with pytest.raises(StoreError, match="not an embedding store"):
        EmbeddingStore.open(f"{memory[0]}/nothing")
    memory[1].rm(f"{url.removeprefix('memory://')}/text.items.npz")
    with pytest.raises(StoreError, match="text.items.npz: file is missing"):
        EmbeddingStore.open(url)


def _write_arrays(folder: Path, rows: np.ndarray) -> dict[str, Path]:
    """The same rows as .npy, .pt, .safetensors and a Parquet list column."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from safetensors.numpy import save_file

    folder.mkdir()
    np.save(folder / "e.npy", rows)
    torch.save(torch.from_numpy(rows), folder / "e.pt")
    save_file({"image": rows}, folder / "e.safetensors")
    column = pa.array(list(rows), type=pa.list_(pa.float32()))
    pq.write_table(
        pa.table({"emb": column, "label": [f"c{k % 3}" for k in range(len(rows))]}),
        folder / "t.parquet",
    )
    return {"npy": folder / "e.npy", "pt": folder / "e.pt", "st": folder / "e.safetensors"}


def test_arrays_at_urls_equal_the_local_files(tmp_path, memory):
    rows = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    folder = tmp_path / "arrays"
    _write_arrays(folder, rows)
    url = _upload(folder, memory[0], memory[1])
    for name in ("e.npy", "e.pt", "e.safetensors", "t.parquet:emb"):
        np.testing.assert_array_equal(load_array(f"{url}/{name}", "image"), rows)
        np.testing.assert_array_equal(load_array(f"file://{folder}/{name}", "image"), rows)
    labels = load_array(f"{url}/t.parquet:label", "labels", allow_1d=True)
    assert labels.tolist() == ["c0", "c1", "c2", "c0", "c1"]
    assert isinstance(load_array(f"file://{folder}/e.npy", "image"), np.memmap)
    memory[1].pipe(f"{url.removeprefix('memory://')}/o.npy", _object_npy())
    with pytest.raises(GapscopeError, match="holds Python objects"):
        load_array(f"{url}/o.npy", "image")
    with pytest.raises(GapscopeError, match="image: no such file memory://"):
        load_array(f"{url}/missing.npy", "image")
    with pytest.raises(GapscopeError, match="has no column 'nope'"):
        load_array(f"{url}/t.parquet:nope", "image")


def _object_npy() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return buffer.getvalue()


def test_analyze_reads_arrays_and_stores_at_urls(tmp_path, memory):
    rng = np.random.default_rng(2)
    folder = tmp_path / "arrays"
    folder.mkdir()
    np.save(folder / "img.npy", rng.normal(size=(8, 4)).astype(np.float32))
    np.save(folder / "txt.npy", rng.normal(size=(8, 4)).astype(np.float32))
    url = _upload(folder, memory[0], memory[1])
    outputs = []
    for image, text in [
        (f"{url}/img.npy", f"{url}/txt.npy"),
        (str(folder / "img.npy"), f"file://{folder}/txt.npy"),
    ]:
        result = runner.invoke(
            app,
            ["analyze", "--image", image, "--text", text, "--metrics", "gap", "-f", "json", "-q"],
        )
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        outputs.append((report["input"]["fingerprint"], report["pairs"], report["modalities"]))
    assert outputs[0] == outputs[1]
    store_url = _upload(_store(tmp_path), f"{memory[0]}/store", memory[1])
    for command in (["analyze", store_url, "--metrics", "gap", "-q"], ["info", store_url]):
        result = runner.invoke(app, command)
        assert result.exit_code == 0, result.output
        assert store_url in result.output


def test_a_missing_package_is_one_line_naming_what_to_install(monkeypatch, tmp_path):
    if "s3fs" not in sys.modules:
        try:
            import s3fs  # noqa: F401
        except ImportError:
            result = runner.invoke(
                app, ["analyze", "--image", "s3://b/i.npy", "--text", "s3://b/t.npy"]
            )
            assert result.exit_code == 2
            assert "needs s3fs, which is not installed: pip install s3fs" in result.output
            assert len(result.output.strip().splitlines()) == 1
    monkeypatch.setitem(sys.modules, "fsspec", None)
    monkeypatch.setitem(sys.modules, "fsspec.core", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'gapscope\[remote\]'"):
        EmbeddingStore.open("memory://anything/store")
    result = runner.invoke(app, ["info", "memory://anything/store"])
    assert result.exit_code == 2 and "gapscope[remote]" in result.output
    # file:// needs no fsspec.
    assert EmbeddingStore.open(f"file://{FIXTURE}").format_version == 1


def test_an_unknown_protocol_is_one_line(memory):
    with pytest.raises(GapscopeError, match="fsspec knows no protocol 'nope'"):
        load_array("nope://bucket/x.npy", "image")


def test_class_prompts_of_a_remote_store_are_read_as_the_local_ones(tmp_path, memory):
    from gapscope.data.class_prompts import ClassPrompts, write_store_classes

    local = _store(tmp_path)
    prompts = ClassPrompts(np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]), names=("0", "1"))
    write_store_classes(local, prompts, EmbeddingStore.open(local).encoder)
    url = _upload(local, f"{memory[0]}/store", memory[1])
    here, there = EmbeddingSet.from_store(local), EmbeddingSet.from_store(url)
    assert there.classes is not None and there.classes.names == ("0", "1")
    np.testing.assert_array_equal(there.classes.embeddings, here.classes.embeddings)
    for m in here.class_labels:
        np.testing.assert_array_equal(there.class_labels[m], here.class_labels[m])
    # A store without prompts reads none, remote or not.
    memory[1].rm(f"{url.removeprefix('memory://')}/classes.json")
    memory[1].rm(f"{url.removeprefix('memory://')}/classes.npy")
    assert EmbeddingSet.from_store(url).classes is None
