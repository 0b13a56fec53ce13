"""A kill at any instant of an extract or a merge, then the same command again, gives the store
one uninterrupted run gives, byte for byte, and leaves no stray file.

The kill points (``gapscope.data.atomic.kill_point``) sit at every boundary between two writes:
before and after the rename of every atomic write (manifests, every part's items and array,
the finalised files), after the lock is taken and the folder made, part-way through and after
removing ``parts/`` or a replaced store, and at every step of an overwrite's swap. Each test
runs its command once per kill point, killed there by SIGKILL in a forked child (``*@k``: the
k-th kill point reached), until a run reaches no more kill points; so every boundary the
command crosses is covered, and a new write gets covered without touching this file.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from extract_testkit import ImageData, write_images
from fork_testkit import KILLED, killed_at, one_thread, run_forked

from gapscope.data.store import STAMPS, EmbeddingStore
from gapscope.errors import StoreError
from gapscope.extract import extract, load_encoder, merge_stores

BATCH = 2
REPORT = b'{"mine": "a report kept beside the store"}\n'


@pytest.fixture(scope="module", autouse=True)
def _fast_and_deterministic():
    """Every run of this module on one torch thread (forked children inherit it), fsync off."""
    with one_thread(fsync=False):
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> ImageData:
    # 3 images (one corrupt: a skip recorded in the manifest), 5 captions: 2 + 3 batches.
    return write_images(tmp_path_factory.mktemp("kill-data"), per_class=1)


@pytest.fixture(scope="module")
def encoder():
    return load_encoder("open_clip", model="gapscope-tiny-vit", device="cpu")


def _extract(out: Path, data: ImageData, encoder, **options) -> Callable[[], object]:
    # Every batch its own part: a kill point between every two batches.
    args = {"batch_size": BATCH, "workers": 0, "quiet": True, "part_rows": 1, **options}
    return lambda: extract(out, images=data.images, captions=data.captions, encoder=encoder, **args)


@pytest.fixture(scope="module")
def reference(data, encoder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kill-reference") / "store"
    _extract(out, data, encoder)()
    return out


@pytest.fixture(scope="module")
def old_store(data, encoder, tmp_path_factory) -> Path:
    """A finished store of another extract (another batch size), with a file of the user's."""
    out = tmp_path_factory.mktemp("kill-old") / "store"
    _extract(out, data, encoder, batch_size=3)()
    (out / "report.json").write_bytes(REPORT)
    return out


@pytest.fixture(scope="module")
def shards(data, encoder, tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("kill-shards")
    paths = [root / f"shard-{i}" for i in range(2)]
    for i, path in enumerate(paths):
        _extract(path, data, encoder, shard=f"{i}/2")()
    return paths


@dataclass
class Scenario:
    """A command, the state it starts from, and what must hold after a kill and a rerun."""

    command: Callable[[Path], Callable[[], object]]  # out -> what the child runs
    expected: Path  # the store an uninterrupted run writes
    old: Path | None = None  # a store at out before the command (overwrite)
    points: list[str] = field(default_factory=list)  # kill points crossed, in order

    def prepare(self, out: Path) -> None:
        if self.old is not None:
            shutil.copytree(self.old, out)

    @property
    def user_files(self) -> dict[str, bytes]:
        return {"report.json": REPORT} if self.old is not None else {}


def _store_files(folder: Path) -> dict[str, bytes]:
    """The files of a store folder (not its sub-folders), by name; of the fingerprint stamps,
    which record each file's mtime, only the sizes (the mtimes are those of the last run)."""
    files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
    if STAMPS in files:
        sizes = {f: stamp["size"] for f, stamp in json.loads(files[STAMPS]).items()}
        files[STAMPS] = json.dumps(sizes, sort_keys=True).encode()
    return files


def _assert_finished(work: Path, out: Path, scenario: Scenario, point: str) -> None:
    where = f"after a kill at {point} and a rerun"
    assert sorted(os.listdir(work)) == ["out"], f"{where}: stray files {os.listdir(work)}"
    expected = {**_store_files(scenario.expected), **scenario.user_files}
    got = _store_files(out)
    assert sorted(os.listdir(out)) == sorted(expected), f"{where}: {sorted(os.listdir(out))}"
    for name, payload in expected.items():
        assert got[name] == payload, f"{where}: {name} differs"
    store = EmbeddingStore.open(out)
    store.validate()
    # The stamps are those of the files on disk, and the fingerprint the manifest keeps is
    # that of their bytes.
    assert store._stamps_hold(), f"{where}: stale stamps"
    assert store.fingerprint() == store.fingerprint(verify=True)


def _assert_whole(out: Path, scenario: Scenario, point: str) -> None:
    """Right after a kill: a store that reads as finished is the old one or the new one, whole,
    and the user's files are where they were."""
    if point == "swap:moved-old":  # the one instant between the two renames of a swap
        assert not out.exists()
        with pytest.raises(StoreError, match="interrupted while it was swapped in"):
            EmbeddingStore.open(out)
        return
    try:
        store = EmbeddingStore.open(out)
    except StoreError:
        assert scenario.old is None, f"killed at {point}: the old store is gone"
        return
    fresh = {**_store_files(scenario.expected), **scenario.user_files}
    old = _store_files(scenario.old) if scenario.old is not None else None
    assert _store_files(out) in (fresh, old), f"killed at {point}: a store that is neither"
    assert store.complete


def _every_kill_point(tmp_path: Path, scenario: Scenario) -> list[str]:
    for k in itertools.count(1):
        work = tmp_path / f"kill-{k}"
        work.mkdir()
        out, log = work / "out", tmp_path / f"kill-{k}.log"
        scenario.prepare(out)
        status = run_forked(scenario.command(out), kill_at=f"*@{k}", log=log)
        if status == 0:  # past the last kill point: an uninterrupted run
            _assert_finished(work, out, scenario, "no point")
            return scenario.points
        assert status == KILLED, log.read_text()[-3000:]
        point = killed_at(log)
        scenario.points.append(point)
        _assert_whole(out, scenario, point)
        scenario.command(out)()  # the same command again, here (it must not be killed)
        _assert_finished(work, out, scenario, point)
        shutil.rmtree(work)
    raise AssertionError("unreachable")


# The boundaries every extract and merge crosses; the test checks they were all among the
# kill points (so a renamed or lost kill point cannot make the test pass vacuously).
_WRITE_POINTS = {
    "store:locked",
    "store:folder-made",
    "atomic:written:manifest.json",
    "atomic:replaced:manifest.json",
    "atomic:written:00000000.items.jsonl",
    "atomic:replaced:00000000.items.jsonl",
    "atomic:written:00000000.npy",
    "atomic:replaced:00000000.npy",
    "atomic:written:image.npy",
    "atomic:replaced:image.npy",
    "atomic:written:text.items.npz",
    "atomic:replaced:text.items.npz",
    "remove:partly:parts",
    "remove:done:parts",
}
_SWAP_POINTS = {
    "swap:carried:report.json",
    "swap:moved-old",
    "swap:moved-new",
    "remove:partly:old",
    "remove:done:old",
}


def test_extract_killed_anywhere_resumes_exactly(tmp_path, data, encoder, reference):
    scenario = Scenario(lambda out: _extract(out, data, encoder), reference)
    points = _every_kill_point(tmp_path, scenario)
    assert set(points) >= _WRITE_POINTS, _WRITE_POINTS - set(points)
    # 2 image parts and 3 text parts, each two atomic writes.
    assert points.count("atomic:replaced:00000000.npy") == 2
    assert points.count("atomic:replaced:00000002.npy") == 1


def test_extract_overwrite_killed_anywhere_keeps_a_whole_store(
    tmp_path, data, encoder, reference, old_store
):
    scenario = Scenario(lambda out: _extract(out, data, encoder, overwrite=True), reference)
    scenario.old = old_store
    points = _every_kill_point(tmp_path, scenario)
    assert set(points) >= (_WRITE_POINTS | _SWAP_POINTS)


def test_merge_killed_anywhere_merges_exactly(tmp_path, shards, reference):
    scenario = Scenario(lambda out: lambda: merge_stores(out, shards), reference)
    points = _every_kill_point(tmp_path, scenario)
    assert set(points) >= _WRITE_POINTS


def test_merge_overwrite_killed_anywhere_keeps_a_whole_store(
    tmp_path, shards, reference, old_store
):
    scenario = Scenario(lambda out: lambda: merge_stores(out, shards, overwrite=True), reference)
    scenario.old = old_store
    points = _every_kill_point(tmp_path, scenario)
    assert set(points) >= (_WRITE_POINTS | _SWAP_POINTS)


@pytest.mark.parametrize(
    "first",
    [
        "store:locked",  # a stale lock file
        "atomic:written:image.npy",  # a dead temporary file in the replacement
        "swap:moved-old",  # the store moved aside, the replacement not yet in
        "remove:partly:old",  # the replaced store half removed
    ],
)
def test_a_rerun_killed_while_it_recovers_still_finishes(
    tmp_path, shards, reference, old_store, first
):
    """The next writer's recovery (stale lock, dead temporary files, a half-done swap) is
    itself killed at each of its first kill points; a third run still finishes exactly."""
    scenario = Scenario(lambda out: lambda: merge_stores(out, shards, overwrite=True), reference)
    scenario.old = old_store
    for j in range(1, 5):
        work = tmp_path / f"{j}"
        work.mkdir()
        out, log = work / "out", tmp_path / f"{j}.log"
        scenario.prepare(out)
        assert run_forked(scenario.command(out), kill_at=f"{first}@1", log=log) == KILLED
        status = run_forked(scenario.command(out), kill_at=f"*@{j}", log=log)
        assert status in (KILLED, 0), log.read_text()[-3000:]
        second = killed_at(log) if status == KILLED else "no point"
        scenario.command(out)()
        _assert_finished(work, out, scenario, f"{first}, then {second}")
