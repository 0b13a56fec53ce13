"""Datasets and captions files: ordering, labels, groups, formats, and what gets skipped."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gapscope.errors import GapscopeError
from gapscope.extract import scan_dataset
from gapscope.extract.audio import fit_length, load_clip, read_audio, resample
from gapscope.extract.captions import read_captions


def _touch(root, *names):
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_media_order_labels_and_hidden_files(tmp_path):
    _touch(
        tmp_path, "b/2.png", "a/10.JPG", "a/9.png", "a/.hidden.png", ".cache/x.png", "a/notes.txt"
    )
    ds = scan_dataset(images=tmp_path)
    assert [c.id for c in ds.candidates["image"]] == ["a/10.JPG", "a/9.png", "b/2.png"]
    assert [c.label for c in ds.candidates["image"]] == ["a", "a", "b"]
    assert ds.description["labels"] == "first sub-folder"


def test_no_labels_when_some_files_are_at_the_top(tmp_path):
    _touch(tmp_path, "top.png", "a/1.png")
    ds = scan_dataset(images=tmp_path)
    assert all(c.label is None for c in ds.candidates["image"])
    assert "label" not in ds.candidates["image"][0].item()


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_caption_formats_and_groups(tmp_path, fmt):
    _touch(tmp_path, "img/cat/1.png", "img/dog/2.png")
    rows = [
        ("cat/1.png", "a cat"),
        ("./dog/2.png", "a dog"),
        ("cat/1.png", "the same cat"),
        ("dog/missing.png", "gone"),
        ("dog/2.png", "  "),
    ]
    path = tmp_path / f"caps.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps({"Image": f, "Caption": c}) + "\n" for f, c in rows))
    else:
        sep = "," if fmt == "csv" else "\t"
        path.write_text("image" + sep + "caption\n" + "".join(f"{f}{sep}{c}\n" for f, c in rows))
    ds = scan_dataset(images=tmp_path / "img", captions=path)
    texts = ds.candidates["text"]
    assert [(t.id, t.source, t.group, t.label) for t in texts] == [
        ("cat/1.png#0", "a cat", "cat/1.png", "cat"),
        ("dog/2.png#0", "a dog", "dog/2.png", "dog"),
        ("cat/1.png#1", "the same cat", "cat/1.png", "cat"),
    ]
    reasons = {(s["file"], s["reason"]) for s in ds.skipped}
    assert reasons == {("dog/missing.png", "file not found"), ("dog/2.png", "empty caption")}
    assert all(s["line"] for s in ds.skipped)


def test_jsonl_caption_lists_and_quoted_newlines(tmp_path):
    _touch(tmp_path, "a/x.wav")
    (tmp_path / "c.jsonl").write_text(json.dumps({"audio": "a/x.wav", "captions": ["one", "two"]}))
    ds = scan_dataset(audio=tmp_path, captions=tmp_path / "c.jsonl")
    assert [t.id for t in ds.candidates["text"]] == ["a/x.wav#0", "a/x.wav#1"]
    (tmp_path / "c.csv").write_text('file,text\na/x.wav,"line one\nline two"\n')
    rows, problems, columns = read_captions(tmp_path / "c.csv")
    assert rows[0].caption == "line one\nline two" and columns == {
        "file": "file",
        "caption": "text",
    }


def test_absolute_caption_paths_inside_the_folder(tmp_path):
    _touch(tmp_path, "img/a.png")
    path = tmp_path / "c.csv"
    path.write_text(
        f"image,caption\n{tmp_path / 'img' / 'a.png'},an a\n{tmp_path / 'elsewhere.png'},outside\n"
    )
    ds = scan_dataset(images=tmp_path / "img", captions=path)
    assert [t.group for t in ds.candidates["text"]] == ["a.png"]
    assert ds.skipped[0]["reason"] == "file not found"


def test_fingerprint_follows_content_not_location(tmp_path):
    for root in ("one", "two"):
        _touch(tmp_path, f"{root}/a/1.png", f"{root}/b/2.png")
    one, two = scan_dataset(images=tmp_path / "one"), scan_dataset(images=tmp_path / "two")
    assert one.fingerprint == two.fingerprint
    (tmp_path / "two/a/1.png").write_bytes(b"longer")
    assert scan_dataset(images=tmp_path / "two").fingerprint != one.fingerprint


@pytest.mark.parametrize(
    ("setup", "kwargs", "fragment"),
    [
        (None, {}, "give --images DIR or --audio DIR"),
        (None, {"images": "x", "audio": "y"}, "not both"),
        (None, {"images": "/no/such/folder"}, "folder not found"),
        ("empty", {"images": "{tmp}"}, "no png/"),
        ("img", {"images": "{tmp}", "captions": "{tmp}/c.xlsx"}, "unknown format"),
        ("img", {"images": "{tmp}", "captions": "{tmp}/none.csv"}, "file not found"),
        ("nocol", {"images": "{tmp}", "captions": "{tmp}/c.csv"}, "no caption column"),
        ("badjson", {"images": "{tmp}", "captions": "{tmp}/c.jsonl"}, "line 2 is not valid JSON"),
        ("nomatch", {"images": "{tmp}", "captions": "{tmp}/c.csv"}, "none of its 1 captions"),
    ],
)
def test_bad_datasets(tmp_path, setup, kwargs, fragment):
    if setup in ("img", "nocol", "badjson", "nomatch"):
        _touch(tmp_path, "a.png")
    if setup == "nocol":
        (tmp_path / "c.csv").write_text("image,words\na.png,hello\n")
    if setup == "badjson":
        (tmp_path / "c.jsonl").write_text('{"image": "a.png", "caption": "x"}\n{oops\n')
    if setup == "nomatch":
        (tmp_path / "c.csv").write_text("image,caption\nb.png,hello\n")
    kwargs = {k: v.format(tmp=tmp_path) for k, v in kwargs.items()}
    with pytest.raises(GapscopeError, match=fragment):
        scan_dataset(**kwargs)


def test_caption_column_options(tmp_path):
    (tmp_path / "c.csv").write_text("pic,words\na.png,hello\n")
    rows, _, columns = read_captions(tmp_path / "c.csv", file_column="pic", caption_column="Words")
    assert rows[0].file == "a.png" and columns == {"file": "pic", "caption": "words"}
    with pytest.raises(GapscopeError, match="no column 'nope'"):
        read_captions(tmp_path / "c.csv", file_column="nope", caption_column="words")


def test_audio_reading(tmp_path):
    import soundfile

    t = np.arange(22050) / 22050
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.zeros_like(t)], axis=1)
    soundfile.write(tmp_path / "s.wav", stereo, 22050, subtype="FLOAT")
    wave, rate = read_audio(tmp_path / "s.wav")
    assert rate == 22050 and wave.shape == (22050,) and wave.dtype == np.float32
    np.testing.assert_allclose(wave, stereo.mean(axis=1), atol=1e-6)
    clip = load_clip(tmp_path / "s.wav", 16000, 8000)
    assert clip.shape == (8000,)
    np.testing.assert_allclose(clip, resample(wave, 22050, 16000)[:8000])
    short = load_clip(tmp_path / "s.wav", 16000, 40000)  # 1 s repeated twice, then zeros
    np.testing.assert_array_equal(short[16000:32000], short[:16000])
    assert not short[32000:].any()
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(Exception, match="(?i)format|error"):
        read_audio(tmp_path / "empty.wav")
    soundfile.write(tmp_path / "zero.wav", np.zeros((0, 1)), 16000)
    with pytest.raises(ValueError, match="empty audio"):
        read_audio(tmp_path / "zero.wav")


def test_fit_length_keeps_exact_lengths():
    wave = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(fit_length(wave, 10), wave)
