"""``gapscope upgrade``: a format-1 store rewritten as format 2, atomically, from every kill
point; the items, codes, embeddings and fingerprint unchanged; refused where it must be."""

from __future__ import annotations

import itertools
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from fork_testkit import KILLED, killed_at, run_forked
from helpers import read_only_folder
from store_format1 import FIXTURE
from typer.testing import CliRunner

from gapscope.cli import app
from gapscope.data.store import STAMPS, EmbeddingStore, StoreLock
from gapscope.data.upgrade import upgrade_store
from gapscope.errors import StoreError

REPORT = b'{"mine": "a report kept beside the store"}\n'
FINGERPRINT = "51f0492e3b95eba84332370516e15718075ed9a98f1a8160e05ba45f370653d9"
runner = CliRunner()


def _old_store(folder: Path) -> Path:
    """A copy of the format-1 fixture with a file of the user's in it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "store"
    shutil.copytree(FIXTURE, path)
    (path / "report.json").write_bytes(REPORT)
    return path


def _files(folder: Path) -> dict[str, bytes]:
    """A store folder's files by name; of the stamps (mtimes) only the sizes."""
    files = {p.name: p.read_bytes() for p in sorted(folder.iterdir())}
    if STAMPS in files:
        sizes = {f: s["size"] for f, s in json.loads(files[STAMPS]).items()}
        files[STAMPS] = json.dumps(sizes, sort_keys=True).encode()
    return files


def _read(store: EmbeddingStore) -> dict:
    return {
        m: (
            store.items(m),
            store.groups(m).tolist(),
            store.labels(m).tolist(),
            np.asarray(store.embeddings(m)).tobytes(),
        )
        for m in store.modalities
    }


def test_upgrade_rewrites_the_items_and_keeps_everything_else(tmp_path):
    path = _old_store(tmp_path)
    before = EmbeddingStore.open(path)
    content, inode = _read(before), os.stat(path / "image.npy").st_ino
    result = upgrade_store(path)
    assert (result.upgraded, result.from_version, result.to_version) == (True, 1, 2)
    assert result.rows == {"image": 4, "text": 5}
    after = EmbeddingStore.open(path)
    assert after.format_version == 2
    assert _read(after) == content
    assert after.fingerprint() == after.fingerprint(verify=True) == FINGERPRINT
    assert after._stamps_hold()
    assert os.stat(path / "image.npy").st_ino == inode  # linked, not copied
    assert sorted(os.listdir(path)) == [
        "fingerprint.stamps.json",
        "image.items.npz",
        "image.npy",
        "manifest.json",
        "report.json",
        "text.items.npz",
        "text.npy",
    ]
    assert os.listdir(tmp_path) == ["store"]  # no lock, replacement or old store left
    manifest = after.manifest
    assert (manifest["format_version"], manifest["upgraded_from"]) == (2, 1)
    assert (manifest["encoder"], manifest["dataset"]) == (before.encoder, before.dataset)
    files = _files(path)
    again = upgrade_store(path)
    assert not again.upgraded and again.to_version == 2
    assert _files(path) == files


def test_upgrade_refuses_embeddings_that_no_longer_match_the_fingerprint(tmp_path):
    path = _old_store(tmp_path)
    data = bytearray((path / "text.npy").read_bytes())
    data[-1] ^= 0xFF
    (path / "text.npy").write_bytes(bytes(data))  # a new mtime: the stamps no longer hold
    files = _files(path)
    with pytest.raises(StoreError, match="no longer match the fingerprint"):
        upgrade_store(path)
    assert _files(path) == files
    assert os.listdir(tmp_path) == ["store"]


def test_upgrade_refuses_an_incomplete_store_a_locked_one_and_another_replacement(tmp_path):
    incomplete = tmp_path / "incomplete"
    store = EmbeddingStore.create(incomplete)
    store.append("image", np.ones((1, 2), np.float32), [{"id": "a", "group": 0}])
    store.close()
    with pytest.raises(StoreError, match="store is incomplete"):
        upgrade_store(incomplete)

    path = _old_store(tmp_path / "locked")
    with StoreLock.acquire(path), pytest.raises(StoreError, match="another gapscope process"):
        upgrade_store(path)
    assert EmbeddingStore.open(path).format_version == 1

    path = _old_store(tmp_path / "staged")
    staging = path.with_name(".store.gapscope-new")
    staging.mkdir()
    manifest = {"format": "gapscope.store", "format_version": 2, "complete": False}
    (staging / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="another command is building"):
        upgrade_store(path)
    assert (staging / "manifest.json").is_file()
    assert EmbeddingStore.open(path).format_version == 1


def _assert_whole(out: Path, old: dict[str, bytes], new: dict[str, bytes], point: str) -> None:
    """Right after a kill: the old store or the new one, whole (or, in the instant between
    the two renames of the swap, none, with a message saying the next run finishes it)."""
    if point == "swap:moved-old":
        with pytest.raises(StoreError, match="interrupted while it was swapped in"):
            EmbeddingStore.open(out)
        return
    store = EmbeddingStore.open(out)
    assert _files(out) in (old, new), f"killed at {point}: a store that is neither"
    assert store.items("text")[3]["id"] == "dog/ü.jpg#1"


def test_upgrade_killed_anywhere_leaves_a_whole_store_and_finishes_when_run_again(tmp_path):
    reference = _old_store(tmp_path / "reference")
    old = _files(reference)
    upgrade_store(reference)
    new = _files(reference)
    points = []
    for k in itertools.count(1):
        work = tmp_path / f"kill-{k}"
        out, log = _old_store(work), tmp_path / f"kill-{k}.log"
        status = run_forked(lambda out=out: upgrade_store(out), kill_at=f"*@{k}", log=log)
        if status == 0:
            assert _files(out) == new
            break
        assert status == KILLED, log.read_text()[-3000:]
        point = killed_at(log)
        points.append(point)
        _assert_whole(out, old, new, point)
        upgrade_store(out)  # the same command again
        assert _files(out) == new, f"after a kill at {point} and a rerun"
        assert os.listdir(work) == ["store"], f"after a kill at {point}: {os.listdir(work)}"
        shutil.rmtree(work)
    assert set(points) >= {
        "store:locked",
        "upgrade:folder-made",
        "atomic:replaced:manifest.json",
        "upgrade:linked:image.npy",
        "atomic:written:text.items.npz",
        "atomic:replaced:fingerprint.stamps.json",
        "swap:carried:report.json",
        "swap:moved-old",
        "swap:moved-new",
        "remove:done:old",
    }, points


def test_the_command_says_what_it_did_and_refuses_in_one_line(tmp_path):
    path = _old_store(tmp_path)
    first = runner.invoke(app, ["upgrade", str(path)])
    assert first.exit_code == 0, first.output
    assert "upgraded from format 1 to 2 (image 4, text 5)" in first.output
    second = runner.invoke(app, ["upgrade", str(path)])
    assert second.exit_code == 0 and "already format 2; nothing to do" in second.output
    for target, message in [
        (tmp_path / "nothing", "no such store"),
        ("s3://bucket/store", "writes stores to local folders only"),
    ]:
        result = runner.invoke(app, ["upgrade", str(target)])
        assert result.exit_code == 2, result.output
        assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not Path("s3:").exists()


def test_a_read_only_store_is_refused_before_any_work(tmp_path, monkeypatch):
    """``chmod a-w store``: one line, exit 2, and the store is left in format 1 with
    nothing beside it (the swap would otherwise happen and its cleanup fail)."""
    store = _old_store(tmp_path / "store")
    before = _files(store)
    with read_only_folder(store, monkeypatch):
        result = CliRunner().invoke(app, ["upgrade", str(store)])
        assert result.exit_code == 2, result.output
        assert "store folder is not writable" in result.stderr
        assert _files(store) == before
        assert sorted(p.name for p in store.parent.iterdir()) == ["store"]
