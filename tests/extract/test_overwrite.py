"""Overwriting never loses a store or a user's file: ``extract --overwrite`` builds the new
store beside the old one and swaps it in once complete, keeping the folder's other files;
input that fails leaves the old store; a rerun cleans what a kill left; ``demo --out DIR``
never overwrites a file it did not write."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from extract_testkit import ImageData, assert_same_store, tiny_extract_args, write_images

from gapscope.data.store import EmbeddingStore

REPORT = '{"kept": "a report beside the store"}\n'


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> ImageData:
    return write_images(tmp_path_factory.mktemp("overwrite-data"), per_class=2, broken=False)


def _extract_args(data: ImageData, out: Path, *more: str | Path) -> list[str | Path]:
    return [*tiny_extract_args(out, "--images", data.images, "--captions", data.captions), *more]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    return lines[0]


def test_overwrite_replaces_the_store_and_keeps_other_files(small, tmp_path, cli):
    out = tmp_path / "store"
    cli(*_extract_args(small, out, "--batch-size", "3"))
    (out / "report.json").write_text(REPORT)
    cli(*_extract_args(small, out, "--batch-size", "2", "--overwrite"))
    assert (out / "report.json").read_text() == REPORT
    assert EmbeddingStore.open(out).manifest["extract"]["batch_size"] == 2
    cli(*_extract_args(small, tmp_path / "fresh", "--batch-size", "2"))
    (tmp_path / "fresh" / "report.json").write_text(REPORT)
    assert_same_store(out, tmp_path / "fresh")
    assert sorted(os.listdir(tmp_path)) == ["fresh", "store"]


def test_overwrite_with_input_that_fails_keeps_the_old_store(small, tmp_path, cli):
    """Every image unreadable: the error, and the old store as it was (it used to be gone)."""
    out = tmp_path / "store"
    cli(*_extract_args(small, out))
    (out / "report.json").write_text(REPORT)
    before = _files(out)
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("a.png", "b.png"):
        (broken / name).write_bytes(b"not an image")
    args = ["extract", "--images", broken, "--model", "gapscope-tiny-vit", "--workers", "0"]
    result = cli(*args, "-q", "--overwrite", "-o", out, expect=2)
    assert "no readable image files" in _one_error_line(result.stderr)
    assert _files(out) == before
    EmbeddingStore.open(out).validate()
    assert sorted(os.listdir(tmp_path)) == ["broken", "store"]


@pytest.mark.parametrize("given", ["absent", "empty folder"])
def test_a_new_store_refused_for_its_input_leaves_nothing(tmp_path, cli, given):
    """Every image unreadable, every caption read: refused, and no unfinished store left
    (the same arguments would fail again, and fixed files change the fingerprint, so it could
    never be resumed); a folder given empty stays, empty."""
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("a.png", "b.png"):
        (broken / name).write_bytes(b"not an image")
    captions = tmp_path / "captions.csv"
    captions.write_text("file,caption\na.png,a cat\nb.png,a dog\n")
    out = tmp_path / "store"
    if given == "empty folder":
        out.mkdir()
    args = ["extract", "--images", broken, "--captions", captions, "--model", "gapscope-tiny-vit"]
    for _ in range(2):  # and again: the same refusal, not an "interrupted extract"
        result = cli(*args, "--workers", "0", "-q", "-o", out, expect=2)
        assert "no readable image files: all 2 were skipped" in _one_error_line(result.stderr)
        assert sorted(os.listdir(tmp_path)) == sorted(
            ["broken", "captions.csv", *(["store"] if given == "empty folder" else [])]
        )
    if given == "empty folder":
        assert not os.listdir(out)


def test_a_folder_left_by_a_kill_in_the_first_manifest_write_is_reused(small, tmp_path, cli):
    """It held only ``.manifest.json.*.tmp``: "folder is not empty" without --overwrite, and
    "not an embedding store" with it."""
    for overwrite in ([], ["--overwrite"]):
        out = tmp_path / f"store{len(overwrite)}"
        out.mkdir()
        (out / ".manifest.json.a1b2c3d4.tmp").write_text('{"format": "gaps')
        cli(*_extract_args(small, out, *overwrite))
        assert not [name for name in os.listdir(out) if name.startswith(".")]
        EmbeddingStore.open(out).validate()


def test_a_rerun_removes_what_a_kill_left_in_a_finished_store(small, tmp_path, cli):
    out = tmp_path / "store"
    cli(*_extract_args(small, out))
    expected = sorted(os.listdir(out))
    (out / ".image.npy.z9y8x7w6.tmp").write_bytes(b"\0" * 4096)  # a kill at finalize's start
    (out / "parts" / "text").mkdir(parents=True)  # a kill while parts/ was removed
    (out / "parts" / "text" / "00000003.npy").write_bytes(b"old part")
    result = cli(*_extract_args(small, out))
    assert "already complete" in result.stdout
    assert sorted(os.listdir(out)) == expected


def test_overwrite_refuses_a_folder_that_is_not_a_store(small, tmp_path, cli):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"jpeg")
    result = cli(*_extract_args(small, out, "--overwrite"), expect=2)
    assert "not an embedding store" in _one_error_line(result.stderr)
    assert _files(out) == {"holiday.jpg": b"jpeg"}


# ------------------------------------------------------------------ demo --out DIR


def test_demo_never_overwrites_a_users_file(tmp_path, cli):
    """``demo --out DIR`` used to overwrite DIR/data/images.csv and exit 0."""
    folder = tmp_path / "demo"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "images.csv").write_text("image,caption\nmine.png,my own captions\n")
    result = cli("demo", "--out", folder, "-q", expect=2)
    line = _one_error_line(result.stderr)
    assert "images.csv" in line and "not the demo's" in line
    assert (folder / "data" / "images.csv").read_text().startswith("image,caption\nmine.png")
    assert sorted(p.name for p in folder.rglob("*")) == ["data", "images.csv"]


def test_demo_never_replaces_a_folder_or_store_it_did_not_write(small, tmp_path, cli):
    folder = tmp_path / "demo"
    (folder / "image-text").mkdir(parents=True)
    (folder / "image-text" / "notes.txt").write_text("mine")
    result = cli("demo", "--out", folder, "-q", expect=2)
    assert "image-text: exists and is not a demo store" in _one_error_line(result.stderr)
    assert sorted(p.name for p in folder.rglob("*")) == ["image-text", "notes.txt"]

    (folder / "image-text" / "notes.txt").unlink()
    cli(*_extract_args(small, folder / "image-text"))  # a store of the user's data
    before = _files(folder / "image-text")
    result = cli("demo", "--out", folder, "-q", expect=2)
    assert "holds a store the demo did not write" in _one_error_line(result.stderr)
    assert _files(folder / "image-text") == before
