"""``extract --webdataset``: tar shards in img2dataset's layout, written by webdataset itself.

The oracle is the same images and captions as a folder and a captions file: the stores'
arrays must be equal byte for byte, and the rows must be the samples webdataset's own
``WebDataset`` pipeline yields, in its order.
"""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from dataset_testkit import encoded_image, write_shards, write_tar
from extract_testkit import assert_same_store

from gapscope.data.store import EmbeddingStore
from gapscope.errors import GapscopeError
from gapscope.extract import extract
from gapscope.extract.datasets import scan_dataset
from gapscope.extract.webdataset_shards import expand_shards, scan_webdataset

ARGS = {"model": "gapscope-tiny-vit", "device": "cpu", "batch_size": 3, "quiet": True, "workers": 0}


@pytest.fixture(scope="module")
def shard_data(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("wds"))


@pytest.fixture(scope="module")
def folder_store(shard_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("wds-folder") / "store"
    extract(out, images=shard_data.folder, captions=shard_data.captions, **ARGS)
    return out


@pytest.fixture(scope="module")
def shard_store(shard_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("wds-store") / "store"
    extract(out, webdataset=shard_data.pattern, **ARGS)
    return out


def _arrays(path: Path) -> dict[str, bytes]:
    store = EmbeddingStore.open(path)
    return {m: np.asarray(store.embeddings(m)).tobytes() for m in store.modalities}


def test_shards_give_the_rows_of_the_same_folder_byte_for_byte(shard_store, folder_store):
    assert _arrays(shard_store) == _arrays(folder_store)
    assert EmbeddingStore.open(shard_store).modalities == ["image", "text"]


def test_rows_are_the_samples_webdataset_yields(shard_data, shard_store):
    import webdataset as wds

    pipeline = wds.WebDataset(shard_data.pattern, shardshuffle=False).decode()
    samples = [(s["__key__"], s["txt"], s["__url__"]) for s in pipeline]
    store = EmbeddingStore.open(shard_store)
    images, texts = store.items("image"), store.items("text")
    assert [it["id"] for it in images] == [key for key, _, _ in samples] == shard_data.keys
    assert [(it["group"], it["source"]) for it in texts] == [(k, t) for k, t, _ in samples]
    assert [it["id"] for it in texts] == [f"{k}#0" for k, _, _ in samples]
    # source: <shard>/<member>, the shard named relative to the shards' folder
    shard_of = {key: Path(url).name for key, _, url in samples}
    for item in images:
        shard, member = item["source"].split("/")
        assert shard == shard_of[item["id"]] and member.split(".")[0] == item["id"]
        assert item["group"] == item["id"] and "label" not in item
    dataset = store.manifest["dataset"]
    assert dataset["webdataset"] == shard_data.pattern and dataset["shards"] == 3
    assert dataset["samples"] == len(shard_data.keys) and store.manifest["skipped"] == []


def test_decoding_workers_read_the_same_members(shard_data, shard_store, tmp_path):
    """Workers read members by offset in their own processes: the same store, byte for byte."""
    out = tmp_path / "store"
    extract(out, webdataset=shard_data.pattern, **{**ARGS, "workers": 2})
    assert_same_store(out, shard_store)


def test_paths_globs_braces_and_lists_name_shards_in_order(shard_data, monkeypatch):
    root = shard_data.shards[0].parent
    monkeypatch.chdir(root.parent)
    rel = [Path(root.name) / p.name for p in shard_data.shards]
    assert expand_shards(shard_data.pattern) == shard_data.shards
    assert expand_shards(f"{root.name}/*.tar") == rel
    assert expand_shards(f"{root.name}/0000[12].tar") == rel[1:]
    assert expand_shards(f"{rel[2]}::{root.name}/{{00000..00001}}.tar") == [rel[2], *rel[:2]]
    assert expand_shards(str(rel[1])) == [rel[1]]
    # One shard alone keeps its own name as the source's shard part.
    ds = scan_dataset(webdataset=str(rel[1]))
    assert ds.candidates["image"][0].source.startswith("00001.tar/")


def test_a_changed_pattern_that_names_the_same_shards_resumes_as_the_same_dataset(shard_data):
    by_brace = scan_dataset(webdataset=shard_data.pattern)
    by_glob = scan_dataset(webdataset=str(shard_data.shards[0].parent / "*.tar"))
    assert by_brace.fingerprint == by_glob.fingerprint


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("{root}/none-*.tar", "no shard matches"),
        ("{root}/{{00000..00005}}.tar", "00003.tar: no such shard file"),
        ("{root}", "a folder, not a shard file"),
        ("{root}/{{00000", "not a valid pattern"),
        ("https://example.com/{{00000..00002}}.tar", "only local shards are read"),
        ("{root}/00000.tar::{root}/*.tar", "names " + "{root}/00000.tar twice"),
    ],
)
def test_bad_patterns_are_refused(shard_data, pattern, message):
    root = shard_data.shards[0].parent
    with pytest.raises(GapscopeError, match=message.format(root=root).replace("{", r"\{")):
        scan_dataset(webdataset=pattern.format(root=root))


def _damaged(root: Path, good: Path) -> dict[str, tuple[Path, str]]:
    data = good.read_bytes()
    with tarfile.open(good) as tar:
        members = tar.getmembers()
    boundary = members[3].offset  # the header of the second sample's first member
    cases = {
        "cut at a member boundary": (data[:boundary], "without the end-of-archive marker"),
        "cut inside a member": (data[: members[0].offset_data + 100], "unexpected end of data"),
        "cut inside a header": (data[: boundary + 200], "not a readable tar file"),
        "not a tar file": (b"<html>not found</html>\n" * 40, "not a readable tar file"),
        "empty file": (b"", "not a readable tar file"),
    }
    out = {}
    for i, (name, (payload, message)) in enumerate(cases.items()):
        path = root / f"damaged-{i}.tar"
        path.write_bytes(payload)
        out[name] = (path, message)
    gz = root / "compressed.tar.gz"
    import gzip

    gz.write_bytes(gzip.compress(data))
    out["gzip"] = (gz, "a gzip-compressed shard")
    return out


def test_damaged_or_compressed_shards_are_refused_naming_the_shard(shard_data, tmp_path, cli):
    for name, (path, message) in _damaged(tmp_path, shard_data.shards[0]).items():
        with pytest.raises(GapscopeError, match=message) as raised:
            scan_dataset(webdataset=f"{shard_data.shards[1]}::{path}")
        assert str(path) in str(raised.value), name
    # Through the CLI: one line, exit 2, nothing written.
    broken = tmp_path / "damaged-0.tar"
    result = cli(
        "extract",
        "--webdataset",
        broken,
        "-o",
        tmp_path / "out",
        "-q",
        "--model",
        "gapscope-tiny-vit",
        expect=2,
    )
    [line] = result.stderr.splitlines()
    assert line.startswith(f"Error: --webdataset {broken}: not a readable tar file")
    assert not (tmp_path / "out").exists()


def _broken_shards(root: Path) -> tuple[str, dict[str, str]]:
    """Two shards with every kind of sample that is skipped, and what each skip says."""
    rng = np.random.default_rng(7)
    image = encoded_image(rng, "jpg")
    meta = json.dumps({"status": "ok"}).encode()
    first = [
        ("a0001.jpg", image),
        ("a0001.txt", b"a good sample"),
        ("a0001.json", meta),
        ("a0002.jpg", b"not an image at all"),  # decodes badly: skipped at extraction
        ("a0002.txt", b"the caption of a corrupt image"),
        ("a0003.png", encoded_image(rng, "png")),  # no caption
        ("a0003.json", meta),
        ("a0004.txt", b"a caption without an image"),
        ("a0005.jpg", encoded_image(rng, "jpg")),
        ("a0005.txt", b"   \n"),  # empty caption
        ("a0006.jpg", encoded_image(rng, "jpg")),
        ("a0006.txt", "caf\xe9".encode("latin-1")),  # not UTF-8
        ("a0007.jpg", encoded_image(rng, "jpg")),
        ("a0007.txt", b"x" * 50_000),  # far too long for a caption
        ("__meta__/info.json", meta),  # webdataset skips metadata members: not a sample
    ]
    second = [
        ("a0001.jpg", encoded_image(rng, "jpg")),  # a key already read in the first shard
        ("a0001.txt", b"a duplicate key"),
        ("b0001.webp", encoded_image(rng, "jpg")),  # a .webp that is really a JPEG: fine
        ("b0001.txt", b"another good sample"),
    ]
    folder = root / "broken"
    folder.mkdir()
    write_tar(folder / "00000.tar", first)
    write_tar(folder / "00001.tar", second)
    expected = {
        "00000.tar/a0003.png": "no caption (.txt) in the sample",
        "00000.tar/a0004": "no image in the sample (members: txt)",
        "00000.tar/a0005.jpg": "its caption (.txt) is empty",
        "00000.tar/a0006.jpg": "its caption (.txt) is not UTF-8 text",
        "00000.tar/a0007.jpg": "its caption (.txt) is longer than 10,000 characters",
        "00001.tar/a0001.jpg": "key 'a0001' already read in 00000.tar",
    }
    return str(folder / "0000{0,1}.tar"), expected


def test_samples_without_image_or_caption_are_skipped_and_listed(tmp_path, cli):
    pattern, expected = _broken_shards(tmp_path)
    out = tmp_path / "store"
    result = cli(
        *("extract", "--webdataset", pattern, "-o", out, "--model", "gapscope-tiny-vit"),
        *("--device", "cpu", "--batch-size", "2", "--workers", "0"),
    )
    store = EmbeddingStore.open(out)
    skipped = {s["source"]: s["reason"] for s in store.manifest["skipped"]}
    corrupt = skipped.pop("00000.tar/a0002.jpg")
    assert corrupt.startswith("UnidentifiedImageError: cannot identify image file")
    assert "0x" not in corrupt  # no object address: the same reason on every run
    assert skipped == expected
    assert all(s["modality"] == "image" for s in store.manifest["skipped"])
    assert [it["id"] for it in store.items("image")] == ["a0001", "b0001"]
    # The corrupt image's caption stays, as a folder's would.
    assert [it["id"] for it in store.items("text")] == ["a0001#0", "a0002#0", "b0001#0"]
    assert "Skipped 7 image" in result.stdout
    assert "00000.tar/a0004: no image in the sample" in result.stdout


def test_shards_without_captions_extract_images_only(tmp_path):
    rng = np.random.default_rng(3)
    members = [(f"{k:04d}.jpg", encoded_image(rng, "jpg")) for k in range(3)]
    write_tar(tmp_path / "only.tar", [*members, ("0003.json", b"{}")])
    ds = scan_dataset(webdataset=str(tmp_path / "only.tar"))
    assert ds.modalities == ("image",)
    assert [c.id for c in ds.candidates["image"]] == ["0000", "0001", "0002"]
    assert [s["source"] for s in ds.skipped] == ["only.tar/0003"]


def test_audio_shards_extract_with_clap(tmp_path, audio_data):
    """Samples of audio and captions (no image member) make an audio/text dataset."""
    clips = sorted(p for p in audio_data.audio.rglob("*") if p.suffix in (".wav", ".flac"))
    clips = [p for p in clips if p.stat().st_size > 0]
    members = []
    for k, clip in enumerate(clips):
        members += [(f"{k:03d}{clip.suffix}", clip.read_bytes()), (f"{k:03d}.txt", b"a sound")]
    write_tar(tmp_path / "audio.tar", members)
    summary = extract(
        tmp_path / "store",
        webdataset=str(tmp_path / "audio.tar"),
        **{**ARGS, "model": "gapscope-tiny-clap"},
    )
    assert summary.rows == {"audio": len(clips), "text": len(clips)}
    store = EmbeddingStore.open(tmp_path / "store")
    assert store.manifest["encoder"]["family"] == "clap"


def test_a_sample_with_two_images_of_one_name_is_refused(tmp_path):
    rng = np.random.default_rng(4)
    path = write_tar(
        tmp_path / "dup.tar",
        [("k.jpg", encoded_image(rng, "jpg")), ("k.jpg", encoded_image(rng, "jpg"))],
    )
    with pytest.raises(GapscopeError, match=r"dup.tar: k.jpg: a second member with this name"):
        scan_webdataset(str(path))


def test_shards_then_merge_equal_one_run(shard_data, shard_store, tmp_path, cli):
    parts = []
    for i in range(2):
        parts.append(tmp_path / f"part-{i}")
        extract(parts[-1], webdataset=shard_data.pattern, shard=f"{i}/2", **ARGS)
    cli("merge", tmp_path / "merged", *parts)
    assert_same_store(tmp_path / "merged", shard_store)


def test_a_member_read_at_extraction_is_checked_against_the_scan(shard_data, tmp_path):
    """A shard rewritten between the scan and the read of a member: the member is skipped
    with a reason, never encoded under the identity of the old bytes."""
    ds = scan_dataset(webdataset=str(shard_data.shards[0]))
    ref = ds.candidates["image"][0].load
    assert ref.read()[:2] in (b"\xff\xd8", b"\x89P")
    copy = tmp_path / "copy.tar"
    shutil.copy(shard_data.shards[0], copy)
    moved = type(ref)(str(copy), ref.offset, ref.size, ref.name, ref.sha256)
    with open(copy, "r+b") as fh:
        fh.seek(ref.offset + 10)
        fh.write(b"\0\0\0\0")
    with pytest.raises(ValueError, match="changed since the extract started"):
        moved.read()


def test_a_second_image_of_a_sample_is_listed_not_dropped(tmp_path):
    """A sample with a .png and a .jpg: the first member is its image, the other is listed
    as skipped; a member of the other media kind (audio in image shards) is listed too."""
    rng = np.random.default_rng(5)
    members = [
        ("k0.png", encoded_image(rng, "png")),
        ("k0.jpg", encoded_image(rng, "jpg")),
        ("k0.txt", b"a caption"),
        ("k1.jpg", encoded_image(rng, "jpg")),
        ("k1.wav", b"RIFF"),
        ("k1.txt", b"another caption"),
    ]
    ds = scan_webdataset(str(write_tar(tmp_path / "two.tar", members)))
    assert [(c.id, c.source) for c in ds.candidates["image"]] == [
        ("k0", "two.tar/k0.png"),
        ("k1", "two.tar/k1.jpg"),
    ]
    assert ds.skipped == [
        {
            "modality": "image",
            "source": "two.tar/k0.jpg",
            "reason": "another image member of sample 'k0' (k0.png is the one read)",
        },
        {
            "modality": "audio",
            "source": "two.tar/k1.wav",
            "reason": "another audio member of sample 'k1' (k1.jpg is the one read)",
        },
    ]
