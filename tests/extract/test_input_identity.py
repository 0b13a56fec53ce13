"""Inputs are identified by their content, read once each, and never dropped in silence.

- A resume refuses (one line, exit 2) when an image changed between the interruption and the
  rerun, even for another image of the same byte size and modification time.
- A symbolic-link loop or a second path to an image is read once and listed as skipped.
- A captions file whose unterminated quote swallows the rows after it is refused with its
  file and line; a caption with a comma must be quoted; a quoted line break is kept.
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from extract_testkit import tiny_extract_args

from gapscope.data.store import EmbeddingStore
from gapscope.errors import GapscopeError
from gapscope.extract import extract, load_encoder
from gapscope.extract.captions import MAX_FIELD_CHARS, read_captions
from gapscope.extract.datasets import content_digest, scan_dataset

BATCH = 2


def write_bmps(folder: Path, n: int = 8, seed: int = 0) -> list[Path]:
    """Uncompressed BMPs: every one of a size has the same number of bytes, whatever its
    pixels, so a replaced image keeps its byte size."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for k in range(n):
        path = folder / ("cat" if k % 2 else "dog") / f"{k:02d}.bmp"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, size=(24, 24, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def replace_keeping_size_and_time(path: Path, seed: int) -> None:
    """Other pixels, the same byte size and modification time."""
    from PIL import Image

    stat = path.stat()
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, size=(24, 24, 3), dtype=np.uint8)).save(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns


def interrupted_extract(images: Path, out: Path, after_batches: int = 1) -> None:
    """An extract stopped by Ctrl-C after ``after_batches`` batches, as the CLI would run it."""
    encoder = load_encoder("open_clip", model="gapscope-tiny-vit", device="cpu")
    encode = encoder.encode_batch
    calls = []

    def encode_then_stop(modality, batch):
        if len(calls) == after_batches:
            raise KeyboardInterrupt
        calls.append(modality)
        return encode(modality, batch)

    encoder.encode_batch = encode_then_stop  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        extract(out, images=images, encoder=encoder, batch_size=BATCH, workers=0, quiet=True)
    store = EmbeddingStore.open(out, allow_incomplete=True)
    assert not store.complete and store.rows_written("image") == BATCH * after_batches


def folder_hashes(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def resume_args(images: Path, out: Path) -> list[str | Path]:
    return tiny_extract_args(out, "--images", images, batch_size=BATCH)


@pytest.mark.parametrize("which", [0, -1], ids=["already-encoded", "not-yet-encoded"])
def test_a_resume_refuses_an_image_replaced_by_one_of_the_same_size(tmp_path, cli, which):
    images = tmp_path / "images"
    paths = sorted(write_bmps(images), key=lambda p: p.relative_to(images).as_posix())
    out = tmp_path / "store"
    interrupted_extract(images, out)
    replace_keeping_size_and_time(paths[which], seed=99)
    before = folder_hashes(out)
    result = cli(*resume_args(images, out), expect=2)
    [line] = result.stderr.splitlines()
    assert line.startswith("Error: ") and "holds an interrupted extract" in line
    assert "the dataset (its files, captions or columns changed)" in line
    assert folder_hashes(out) == before  # refused before touching the store


def test_an_unchanged_dataset_resumes(tmp_path, cli):
    images = tmp_path / "images"
    write_bmps(images)
    out = tmp_path / "store"
    interrupted_extract(images, out)
    os.utime(next(images.rglob("*.bmp")))  # a new modification time alone changes nothing
    cli(*resume_args(images, out), expect=0)
    assert EmbeddingStore.open(out).info("image")["rows"] == 8


def test_the_fingerprint_follows_content_not_size_or_time(tmp_path):
    paths = write_bmps(tmp_path / "images", n=4)
    first = scan_dataset(images=tmp_path / "images")
    os.utime(paths[1], ns=(1, 1))
    assert scan_dataset(images=tmp_path / "images").fingerprint == first.fingerprint
    replace_keeping_size_and_time(paths[1], seed=7)
    again = scan_dataset(images=tmp_path / "images")
    assert again.fingerprint != first.fingerprint
    pairs = zip(first.candidates["image"], again.candidates["image"], strict=True)
    changed = [a.id for a, b in pairs if a != b]
    assert changed == [paths[1].relative_to(tmp_path / "images").as_posix()]
    for c in again.candidates["image"]:
        data = (tmp_path / "images" / c.id).read_bytes()
        assert c.content == hashlib.sha256(data).hexdigest()


def test_an_unreadable_file_is_kept_to_be_reported(tmp_path):
    (tmp_path / "images").mkdir()
    write_bmps(tmp_path / "images", n=2)
    os.symlink("nowhere.bmp", tmp_path / "images" / "dangling.bmp")
    assert content_digest(tmp_path / "images" / "dangling.bmp").startswith("unreadable: ")
    ds = scan_dataset(images=tmp_path / "images")
    assert "dangling.bmp" in [c.id for c in ds.candidates["image"]]


def test_a_symlink_loop_and_a_second_path_are_read_once_and_listed(tmp_path, cli):
    images = tmp_path / "images"
    write_bmps(images, n=4)
    os.symlink("..", images / "cat" / "loop")  # cat/loop/cat/loop/... for ever
    os.symlink("cat", images / "kitten")  # the cat folder again
    os.symlink("../cat/01.bmp", images / "dog" / "also-01.bmp")  # one image, two paths
    ds = scan_dataset(images=images)
    kept = [c.id for c in ds.candidates["image"]]
    assert kept == ["cat/01.bmp", "cat/03.bmp", "dog/00.bmp", "dog/02.bmp"]
    reasons = {s["source"]: s["reason"] for s in ds.skipped}
    assert reasons == {
        "cat/loop": "symlink loop: links back to '.', a folder that contains it",
        "kitten": "the same folder as 'cat', already read",
        "dog/also-01.bmp": "the same file as 'cat/01.bmp', already read",
    }
    out = tmp_path / "store"
    result = cli(*resume_args(images, out), expect=0)
    store = EmbeddingStore.open(out)
    assert store.info("image")["rows"] == 4
    assert sorted(s["source"] for s in store.manifest["skipped"]) == sorted(reasons)
    assert "Skipped 3 image" in result.stdout and "symlink loop" in result.stdout


def test_file_links_in_a_loop_are_skipped_and_an_output_through_one_is_refused(tmp_path, cli):
    """a.bmp -> b.bmp -> a.bmp: both are unreadable files, skipped and listed (they crashed
    the extract on Python 3.11, whose Path.resolve raises on a loop); an output path through
    a loop of links is one line, exit 2."""
    images = tmp_path / "images"
    write_bmps(images, n=4)
    os.symlink("b.bmp", images / "cat" / "a.bmp")
    os.symlink("a.bmp", images / "cat" / "b.bmp")
    out = tmp_path / "store"
    cli(*resume_args(images, out), expect=0)
    store = EmbeddingStore.open(out)
    assert store.info("image")["rows"] == 4
    loops = {s["source"]: s["reason"] for s in store.manifest["skipped"]}
    reason = f"OSError: [Errno {errno.ELOOP}] {os.strerror(errno.ELOOP)}"
    assert loops == {"cat/a.bmp": reason, "cat/b.bmp": reason}
    os.symlink("loop2", tmp_path / "loop1")
    os.symlink("loop1", tmp_path / "loop2")
    for target in (tmp_path / "loop1", tmp_path / "loop1" / "sub"):
        result = cli(*resume_args(images, target), expect=2)
        assert result.stderr.strip() == f"Error: {target}: a loop of symbolic links"


def test_names_that_are_not_utf8_are_skipped_and_listed(tmp_path, cli):
    """A store keeps ids, sources and labels as UTF-8 text: a file or class folder whose name
    is other bytes is skipped and listed (its name written with ``\\x`` escapes)."""
    images = tmp_path / "images"
    write_bmps(images, n=4)
    os.link(images / "cat" / "01.bmp", os.fsencode(images / "cat") + b"/caf\xe9.bmp")
    os.mkdir(os.fsencode(images) + b"/b\xfe_rd")
    os.link(images / "dog" / "00.bmp", os.fsencode(images) + b"/b\xfe_rd/00.bmp")
    (images / "cat" / os.fsdecode(b"notes\xff.txt")).write_text("not media: not listed")
    out = tmp_path / "store"
    result = cli(*resume_args(images, out), expect=0)
    store = EmbeddingStore.open(out)
    assert store.info("image")["rows"] == 4
    assert store.manifest["skipped"] == [
        {"modality": "image", "source": "b\\xfe_rd", "reason": "its name is not valid UTF-8"},
        {
            "modality": "image",
            "source": "cat/caf\\xe9.bmp",
            "reason": "its name is not valid UTF-8",
        },
    ]
    assert "Skipped 2 image" in result.stdout


def test_a_link_to_a_folder_around_the_media_folder_is_a_loop(tmp_path):
    images = tmp_path / "data" / "images"
    write_bmps(images, n=2)
    os.symlink("../..", images / "up")  # tmp_path, and everything in it
    ds = scan_dataset(images=images)
    assert [c.id for c in ds.candidates["image"]] == ["cat/01.bmp", "dog/00.bmp"]
    assert ds.skipped == [
        {
            "modality": "image",
            "source": "up",
            "reason": "symlink loop: links to a folder that contains the media folder",
        }
    ]


def test_the_real_path_is_kept_over_a_link_that_sorts_first(tmp_path):
    images = tmp_path / "images"
    write_bmps(images, n=2)
    os.symlink("dog/00.bmp", images / "a-link.bmp")
    ds = scan_dataset(images=images)
    assert [c.id for c in ds.candidates["image"]] == ["cat/01.bmp", "dog/00.bmp"]
    assert ds.skipped[0]["source"] == "a-link.bmp"


# ----------------------------------------------------------------------------- captions


def write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_an_unterminated_quote_is_refused_with_file_and_line(tmp_path):
    rows = [f"img/{k:02d}.png,caption number {k}" for k in range(48)]
    rows[2] = 'img/02.png,"caption number 2 with an unterminated quote'
    path = write(tmp_path / "c.csv", "image,caption", *rows)
    with pytest.raises(GapscopeError) as caught:
        read_captions(path)
    message = str(caught.value)
    assert str(path) in message and "line 4: a quoted field runs to line 49" in message
    assert "unterminated quote" in message


def test_a_quoted_line_break_is_a_caption_with_a_line_break(tmp_path):
    path = write(tmp_path / "c.csv", "image,caption", 'a.png,"one line\nand another"', "b.png,x")
    rows, problems, _ = read_captions(path)
    assert [(r.file, r.caption, r.line) for r in rows] == [
        ("a.png", "one line\nand another", 2),
        ("b.png", "x", 4),
    ]
    assert problems == []


def test_an_unquoted_comma_is_refused_not_cut(tmp_path):
    path = write(tmp_path / "c.csv", "image,caption", "a.png,fine", "b.png,a cat, sitting")
    with pytest.raises(GapscopeError, match="line 3 has 3 fields but the header has 2"):
        read_captions(path)
    tsv = write(tmp_path / "c.tsv", "image\tcaption", "a.png\tone\ttwo")
    with pytest.raises(GapscopeError, match="a caption with a tab in it must be quoted"):
        read_captions(tsv)
    # An empty extra field (a trailing comma) cuts nothing.
    rows, _, _ = read_captions(write(tmp_path / "t.csv", "image,caption", "a.png,x,"))
    assert [r.caption for r in rows] == ["x"]


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_a_caption_past_a_sane_length_is_refused(tmp_path, suffix):
    long = "word " * (MAX_FIELD_CHARS // 5 + 1)
    if suffix == "csv":
        path = write(tmp_path / "c.csv", "image,caption", "a.png,short", f"b.png,{long}")
    else:
        path = write(
            tmp_path / "c.jsonl",
            '{"image": "a.png", "caption": "short"}',
            f'{{"image": "b.png", "caption": ["ok", "{long}"]}}',
        )
    line = 3 if suffix == "csv" else 2  # the CSV header is line 1
    with pytest.raises(GapscopeError, match=f"line {line}: the 'caption' value has"):
        read_captions(path)


def test_a_csv_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path / "c.csv", "image,caption", "a.png,x", f'b.png,"{"y" * 200_000}')
    with pytest.raises(GapscopeError, match="line 3: field larger than field limit"):
        read_captions(path)


def test_a_file_changed_while_the_extract_runs_is_skipped_not_encoded(tmp_path, monkeypatch):
    """The scan took each file's sha256; a file changed before its batch is decoded does not
    match it, and is skipped and listed instead of encoded under the scan's identity."""
    import gapscope.extract.extraction as extraction

    images = tmp_path / "images"
    write_bmps(images, n=4)
    real_scan = extraction.scan_dataset

    def scan_then_change(*args, **kwargs):
        dataset = real_scan(*args, **kwargs)
        (images / "dog" / "02.bmp").write_bytes((images / "cat" / "01.bmp").read_bytes())
        return dataset

    monkeypatch.setattr(extraction, "scan_dataset", scan_then_change)
    out = tmp_path / "store"
    encoder = load_encoder("open_clip", model="gapscope-tiny-vit", device="cpu")
    extract(out, images=images, encoder=encoder, batch_size=BATCH, workers=0, quiet=True)
    store = EmbeddingStore.open(out)
    assert [i["id"] for i in store.items("image")] == ["cat/01.bmp", "cat/03.bmp", "dog/00.bmp"]
    assert store.manifest["skipped"] == [
        {
            "modality": "image",
            "source": "dog/02.bmp",
            "reason": "ValueError: changed since the extract started",
        }
    ]
