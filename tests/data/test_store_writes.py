"""Writing a store safely: the writer's lock, replacing a store only once its replacement is
complete (keeping the user's files), and the recovery of what a killed writer left."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
from pathlib import Path

import numpy as np
import pytest
from helpers import read_only_folder

from gapscope.data.atomic import KILL_VARIABLE
from gapscope.data.store import EmbeddingStore, StoreLock, StorePaths, store_writer
from gapscope.errors import StoreError

TEMP = ".image.npy.abcd_123.tmp"  # the name an atomic write of image.npy gives its temporary


def _write(path: Path, seed: int = 0, **options) -> EmbeddingStore:
    rng = np.random.default_rng(seed)
    emb = {m: rng.normal(size=(3, 4)).astype(np.float32) for m in ("image", "text")}
    items = {m: [{"id": f"{m}{i}", "source": "", "group": i} for i in range(3)] for m in emb}
    return EmbeddingStore.write(path, emb, items, **options)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


def _fork(function) -> int:
    """Run ``function`` in a forked child; its exit code or minus its signal."""
    pid = os.fork()
    if pid == 0:
        try:
            function()
        finally:
            os._exit(0)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


# ------------------------------------------------------------------ the lock


def test_one_writer_at_a_time(tmp_path):
    path = tmp_path / "store"
    lock = StoreLock.acquire(path)
    holder = f"pid {os.getpid()} on {socket.gethostname()}"
    assert store_writer(path) == holder
    message = f"another gapscope process is writing this store \\({holder}\\)"
    with pytest.raises(StoreError, match=message):
        StoreLock.acquire(path)
    with pytest.raises(StoreError, match="another gapscope process"):
        EmbeddingStore.create(path)
    lock.release()
    assert store_writer(path) is None
    assert _siblings(path) == []  # the lock file goes with the lock
    with StoreLock.acquire(path):
        pass


def test_a_killed_writer_leaves_no_stale_lock(tmp_path):
    path = tmp_path / "store"

    def lock_and_die():
        lock = StoreLock.acquire(path)
        os.kill(os.getpid(), signal.SIGKILL)
        lock.release()  # never reached

    assert _fork(lock_and_die) == -signal.SIGKILL
    assert _siblings(path) == [".store.gapscope-lock"]  # the file stays, the lock does not
    assert store_writer(path) is None
    _write(path)
    assert _siblings(path) == []


def test_a_forked_child_does_not_keep_its_parents_lock(tmp_path):
    """A DataLoader worker is a fork of the writer: alive after the writer was killed, it
    must not keep the store locked."""
    path = tmp_path / "store"
    read_end, write_end = os.pipe()

    def writer_with_a_worker():
        lock = StoreLock.acquire(path)
        if os.fork() == 0:  # the worker: lives on until the test lets it go
            os.read(read_end, 1)
            os._exit(0)
        os.kill(os.getpid(), signal.SIGKILL)
        lock.release()  # never reached

    assert _fork(writer_with_a_worker) == -signal.SIGKILL
    try:
        with StoreLock.acquire(path):  # the worker still runs, and holds no lock
            pass
    finally:
        os.write(write_end, b"x")
        os.close(read_end)
        os.close(write_end)


def test_the_root_folder_is_no_store():
    with pytest.raises(StoreError, match="root folder"):
        StorePaths.of("/")


# ------------------------------------------------------------------ readers


def test_readers_need_no_lock(tmp_path):
    path = tmp_path / "store"
    _write(path)
    with StoreLock.acquire(path):  # e.g. an overwrite building its replacement
        assert EmbeddingStore.open(path).modalities == ["image", "text"]


def test_a_reader_never_mixes_the_old_store_and_its_replacement(tmp_path):
    path = tmp_path / "store"
    _write(path, seed=0)
    reader = EmbeddingStore.open(path)
    old = np.array(reader.embeddings("image"))
    _write(path, seed=1, overwrite=True)  # same shapes, other values
    with pytest.raises(StoreError, match="replaced .* while it was read; open it again"):
        reader.embeddings("image")
    assert not np.array_equal(EmbeddingStore.open(path).embeddings("image"), old)


def _rows(path: Path, seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    emb = {m: rng.normal(size=(n, 4)).astype(np.float32) for m in ("image", "text")}
    items = {m: [{"id": f"{m}{i}", "source": "", "group": i} for i in range(n)] for m in emb}
    EmbeddingStore.write(path, emb, items)


@pytest.mark.parametrize("moment", ["after the manifest", "while the folder is away"])
def test_opening_a_store_in_the_middle_of_its_swap_opens_one_whole_store(
    tmp_path, monkeypatch, moment
):
    """An overwrite swaps folders with two renames while a reader opens the store: the
    reader has read the old manifest when the new files appear (3 rows against 5), or finds
    no folder at all. Either way open() opens a whole store, the new one, not a "damaged"
    one: its writer holds the lock, so the open is tried again."""
    import gapscope.data.store as store_module

    path, new = tmp_path / "store", tmp_path / "new"
    _rows(path, 0, 3)
    _rows(new, 1, 5)
    real_check = store_module.check_manifest
    swapped = []

    def swap_then_check(folder, manifest):
        if not swapped:
            swapped.append(True)
            os.rename(path, tmp_path / "old")
            if moment == "after the manifest":
                os.rename(new, path)
        return real_check(folder, manifest)

    monkeypatch.setattr(store_module, "check_manifest", swap_then_check)
    real_sleep = store_module.time.sleep

    def finish_the_swap(seconds):
        if not path.exists():
            os.rename(new, path)
        real_sleep(seconds)

    monkeypatch.setattr(store_module.time, "sleep", finish_the_swap)
    with StoreLock.acquire(tmp_path / "store"):  # the writer's, held through the swap
        opened = EmbeddingStore.open(path)
        assert opened.info("image")["rows"] == 5
        assert np.asarray(opened.embeddings("image")).shape == (5, 4)
    assert len(swapped) == 1


def test_a_reader_of_a_store_being_written_is_told_so(tmp_path):
    path = tmp_path / "store"
    store = EmbeddingStore.create(path)
    with pytest.raises(StoreError, match="incomplete: another gapscope process is writing it"):
        EmbeddingStore.open(path)
    store.close()
    with pytest.raises(StoreError, match="an extract was interrupted"):
        EmbeddingStore.open(path)


# ------------------------------------------------------------------ overwrite


def test_overwrite_swaps_in_a_complete_store_and_keeps_the_users_files(tmp_path):
    path = tmp_path / "store"
    _write(path, seed=0)
    (path / "report.json").write_text("mine")
    (path / "plots").mkdir()
    (path / "plots" / "gap.png").write_bytes(b"png")
    old = _files(path)

    rng = np.random.default_rng(1)
    new = EmbeddingStore.create(path, overwrite=True)
    assert new.staged and new.path == tmp_path / ".store.gapscope-new"
    new.append("image", rng.normal(size=(2, 4)).astype(np.float32), [{"id": 0, "group": 0}] * 2)
    # Until the replacement is complete, the old store is there, whole and readable.
    assert _files(path) == old and EmbeddingStore.open(path).info("image")["rows"] == 3
    new.finalize()
    assert new.path == path and not new.staged
    assert EmbeddingStore.open(path).modalities == ["image"]
    assert (path / "report.json").read_text() == "mine"
    assert (path / "plots" / "gap.png").read_bytes() == b"png"
    assert _siblings(path) == []


def test_overwrite_never_replaces_a_folder_that_is_not_a_store(tmp_path):
    path = tmp_path / "data"
    path.mkdir()
    (path / "manifest.json").write_text('{"something": "else"}')
    with pytest.raises(StoreError, match="not an embedding store"):
        EmbeddingStore.create(path, overwrite=True)
    assert _files(path) == {"manifest.json": b'{"something": "else"}'}


def test_a_replacement_given_up_leaves_the_old_store(tmp_path):
    path = tmp_path / "store"
    _write(path)
    old = _files(path)
    new = EmbeddingStore.create(path, overwrite=True)
    new.append("image", np.ones((2, 4), np.float32), [{"id": 0, "group": 0}] * 2)
    new.discard()
    assert _files(path) == old and _siblings(path) == []


def test_a_user_file_clashing_with_the_new_store_stops_the_swap(tmp_path):
    path = tmp_path / "store"
    _write(path)  # image and text
    (path / "audio.npy").write_bytes(b"the user's, not the store's")
    old = _files(path)
    new = EmbeddingStore.create(path, overwrite=True)
    new.append("audio", np.ones((2, 4), np.float32), [{"id": 0, "group": 0}] * 2)
    with pytest.raises(StoreError, match="audio.npy: is not part of the store being replaced"):
        new.finalize()
    assert _files(path) == old


def test_someone_elses_folder_in_the_way_of_the_replacement(tmp_path):
    path = tmp_path / "store"
    _write(path)
    (tmp_path / ".store.gapscope-new").mkdir()
    (tmp_path / ".store.gapscope-new" / "notes.txt").write_text("not gapscope's")
    with pytest.raises(StoreError, match="is not gapscope's"):
        EmbeddingStore.create(path, overwrite=True)
    assert (tmp_path / ".store.gapscope-new" / "notes.txt").exists()


# ------------------------------------------------------------------ recovery


def test_a_folder_left_with_only_a_dead_temporary_manifest_is_reused(tmp_path):
    """A kill while a new store's first manifest is written."""
    for overwrite in (False, True):
        path = tmp_path / f"store-{overwrite}"
        path.mkdir()
        (path / ".manifest.json.x1y2z3_4.tmp").write_text("{")
        _write(path, overwrite=overwrite)
        assert sorted(os.listdir(path)) == [
            "fingerprint.stamps.json",
            "image.items.npz",
            "image.npy",
            "manifest.json",
            "text.items.npz",
            "text.npy",
        ]


def test_dead_temporary_files_and_parts_of_a_finished_store_are_removed(tmp_path):
    """A kill at the start of finalize used to leave a full-size temporary file forever."""
    path = tmp_path / "store"
    _write(path)
    expected = sorted(os.listdir(path))
    (path / TEMP).write_bytes(b"x" * 1000)
    (path / "parts" / "image").mkdir(parents=True)
    (path / "parts" / "image" / "00000000.npy").write_bytes(b"left by a kill")
    (path / ".mine.tmp").write_text("not a gapscope name")
    live = path / ".text.npy.live_123.tmp"
    live.write_text("being written")
    with open(live, "rb+") as held:
        import fcntl

        fcntl.flock(held, fcntl.LOCK_EX)  # a live writer holds its temporary file
        with StoreLock.acquire(path):
            pass
    assert sorted(os.listdir(path)) == sorted([*expected, ".mine.tmp", live.name])


def test_a_swap_killed_between_its_renames_is_finished(tmp_path):
    path = tmp_path / "store"
    _write(path, seed=0)
    _write(tmp_path / "new", seed=1)
    new = _files(tmp_path / "new")
    # The state a kill leaves after the old store was moved aside.
    os.rename(path, tmp_path / ".store.gapscope-old")
    os.rename(tmp_path / "new", tmp_path / ".store.gapscope-new")
    with pytest.raises(StoreError, match="interrupted while it was swapped in"):
        EmbeddingStore.open(path)
    with StoreLock.acquire(path):
        pass
    assert _files(path) == new and _siblings(path) == []


def test_an_unfinished_replacement_is_resumed_by_its_owner(tmp_path):
    path = tmp_path / "store"
    _write(path)
    new = EmbeddingStore.create(path, overwrite=True, extract={"run": 2})
    new.append("image", np.ones((2, 4), np.float32), [{"id": 0, "group": 0}] * 2)
    new.close()  # as if killed
    with StoreLock.acquire(path) as lock:
        staged = EmbeddingStore.reopen(path, lock=lock, staged=True)
        assert staged is not None and staged.manifest["extract"] == {"run": 2}
        assert staged.rows_written("image") == 2
        staged.finalize()
    assert EmbeddingStore.open(path).info("image")["rows"] == 2
    assert _siblings(path) == []


def test_kill_points_kill(tmp_path):
    """GAPSCOPE_KILL_AT kills the process (SIGKILL: nothing is cleaned up) at the named point."""
    path = tmp_path / "store"

    def write_killed():
        os.environ[KILL_VARIABLE] = "atomic:written:manifest.json"
        _write(path)

    assert _fork(write_killed) == -signal.SIGKILL
    assert [n for n in os.listdir(path) if n.startswith(".manifest.json.")]  # its temporary
    assert KILL_VARIABLE not in os.environ
    _write(path)
    assert json.loads((path / "manifest.json").read_text())["complete"] is True
    assert not [n for n in os.listdir(path) if n.startswith(".")]
    shutil.rmtree(path)


def test_a_read_only_store_is_not_overwritten(tmp_path, monkeypatch):
    """Refused before anything is written: the swap could put the new store in but not
    remove the old one's files."""
    path = tmp_path / "store"
    _write(path)
    old = _files(path)
    with read_only_folder(path, monkeypatch):
        with pytest.raises(StoreError, match="store folder is not writable"):
            EmbeddingStore.create(path, overwrite=True)
        assert _files(path) == old and _siblings(path) == []


def test_a_store_the_file_system_refuses_is_not_overwritten(tmp_path, monkeypatch):
    """A network mount can grant by its mode bits what its server refuses (root squashed to
    nobody): os.access says yes, and the trial file made in the folder says no."""
    import gapscope.data.store as store_module

    path = tmp_path / "store"
    _write(path)
    old = _files(path)
    real_mkstemp = store_module.tempfile.mkstemp

    def refusing(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == path:
            raise PermissionError(13, "Permission denied")
        return real_mkstemp(*args, dir=dir, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(store_module.tempfile, "mkstemp", refusing)
        with pytest.raises(StoreError, match="store folder is not writable.*: Permission denied"):
            EmbeddingStore.create(path, overwrite=True)
        assert _files(path) == old and _siblings(path) == []
    EmbeddingStore.create(path, overwrite=True).close()  # allowed, and abandoned
    assert _files(path) == old  # the trial file is removed


def test_a_store_path_through_a_file_names_the_file(tmp_path):
    _write(tmp_path / "store")
    target = tmp_path / "store" / "manifest.json" / "x"
    with pytest.raises(StoreError, match=r"manifest.json is a file, not a folder$"):
        EmbeddingStore.create(target)
