"""clip-retrieval output folders: read in place, imported as a store, refused when broken."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from gapscope import analyze  # noqa: E402
from gapscope.data.clip_retrieval import import_folder, is_clip_retrieval_folder  # noqa: E402
from gapscope.data.embedding_set import EmbeddingSet  # noqa: E402
from gapscope.data.store import EmbeddingStore, fingerprint_arrays  # noqa: E402
from gapscope.errors import EmbeddingError, StoreError  # noqa: E402

DIM = 16


def write_folder(root: Path, rows: list[int], *, metadata: bool = True, seed: int = 0) -> dict:
    """A folder as ``clip-retrieval inference`` writes it: per partition i (zero-padded to the
    width of the partition count), ``img_emb/img_emb_{i}.npy``, ``text_emb/text_emb_{i}.npy``
    (unit rows, float16) and ``metadata/metadata_{i}.parquet`` (image_path, caption and the
    flattened metadata columns). Returns what was written, for the oracle."""
    rng = np.random.default_rng(seed)
    width = int(math.log10(len(rows))) + 1
    for sub in ("img_emb", "text_emb", "metadata"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    written = {"image": [], "text": [], "keys": [], "paths": [], "captions": []}
    sample = 0
    for part, n in enumerate(rows):
        tag = str(part).zfill(width)
        image = rng.normal(size=(n, DIM))
        text = image + rng.normal(size=(n, DIM))
        image = (image / np.linalg.norm(image, axis=1, keepdims=True)).astype(np.float16)
        text = (text / np.linalg.norm(text, axis=1, keepdims=True)).astype(np.float16)
        np.save(root / "img_emb" / f"img_emb_{tag}.npy", image)
        np.save(root / "text_emb" / f"text_emb_{tag}.npy", text)
        keys = [f"{sample + r:09d}" for r in range(n)]
        paths = [f"images/{k}.jpg" for k in keys]
        captions = [f"a photo number {sample + r}" for r in range(n)]
        if metadata:
            table = pa.table(
                {
                    "image_path": paths,
                    "caption": captions,
                    "url": [f"https://example.com/{k}.jpg" for k in keys],
                    "key": keys,
                    "width": [256] * n,
                }
            )
            pq.write_table(table, root / "metadata" / f"metadata_{tag}.parquet")
        written["image"].append(image)
        written["text"].append(text)
        written["keys"] += keys
        written["paths"] += paths
        written["captions"] += captions
        sample += n
    written["image"] = np.concatenate(written["image"])
    written["text"] = np.concatenate(written["text"])
    return written


@pytest.mark.parametrize("rows", [[7, 5, 9], [3] * 11])
def test_import_keeps_every_row_pair_and_caption(tmp_path, rows):
    written = write_folder(tmp_path / "cr", rows)
    assert is_clip_retrieval_folder(tmp_path / "cr")
    store = import_folder(tmp_path / "cr", tmp_path / "store")
    for m in ("image", "text"):
        assert np.asarray(store.embeddings(m)).tobytes() == written[m].tobytes()
        assert store.info(m)["dtype"] == "float16"
        assert store.info(m)["normalized"] is True
    images, texts = store.items("image"), store.items("text")
    assert [i["id"] for i in images] == written["keys"]
    assert [i["source"] for i in images] == written["paths"]
    assert [t["source"] for t in texts] == written["captions"]
    # Row r of image and text is one sample: the same group.
    assert (store.groups("image") == store.groups("text")).all()
    assert len(set(store.groups("image").tolist())) == sum(rows)
    manifest = store.manifest
    assert manifest["dataset"]["format"] == "clip-retrieval"
    assert manifest["dataset"]["partitions"] == len(rows)
    assert manifest["fingerprint"] == fingerprint_arrays(
        {"image": written["image"], "text": written["text"]}
    )


def test_analyze_reads_the_folder_as_the_imported_store(tmp_path):
    write_folder(tmp_path / "cr", [40, 25, 35])
    import_folder(tmp_path / "cr", tmp_path / "store")
    metrics = "gap,cosine,alignment,cone,uniformity,mir,retrieval"
    direct = analyze(tmp_path / "cr", metrics=metrics, device="cpu").to_dict()
    stored = analyze(tmp_path / "store", metrics=metrics, device="cpu").to_dict()
    assert direct["input"]["fingerprint"] == stored["input"]["fingerprint"]
    assert direct["pairs"] == stored["pairs"]
    assert direct["modalities"] == stored["modalities"]


def test_without_metadata_rows_are_named_by_partition(tmp_path):
    written = write_folder(tmp_path / "cr", [2, 3], metadata=False)
    store = import_folder(tmp_path / "cr", tmp_path / "store")
    assert [i["id"] for i in store.items("image")] == ["0:0", "0:1", "1:0", "1:1", "1:2"]
    assert np.asarray(store.embeddings("text")).tobytes() == written["text"].tobytes()
    data = EmbeddingSet.from_store(tmp_path / "cr")
    assert data.modalities == ["image", "text"]


def test_a_null_key_is_named_by_partition_and_row(tmp_path):
    """A sample whose metadata key is null gets ``<partition>:<row>``, not the text "None"."""
    write_folder(tmp_path / "cr", [2, 3])
    path = tmp_path / "cr" / "metadata" / "metadata_1.parquet"
    table = pq.read_table(path)
    keys = table.column("key").to_pylist()
    keys[1] = None
    table = table.set_column(table.schema.get_field_index("key"), "key", pa.array(keys))
    pq.write_table(table, path)
    store = import_folder(tmp_path / "cr", tmp_path / "store")
    ids = [i["id"] for i in store.items("image")]
    assert ids == ["000000000", "000000001", "000000002", "1:1", "000000004"]


def _drop(path: Path) -> None:
    path.unlink()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda r: _drop(r / "text_emb" / "text_emb_1.npy"), "partition 1 has no text_emb/"),
        (
            lambda r: np.save(r / "text_emb" / "text_emb_0.npy", np.zeros((6, DIM), np.float16)),
            "partition 0 has image 7, text 6 rows",
        ),
        (
            lambda r: np.save(r / "text_emb" / "text_emb_2.npy", np.zeros((9, 8), np.float16)),
            "different dimensions",
        ),
        (lambda r: _drop(r / "metadata" / "metadata_2.parquet"), "embeddings or metadata"),
        (
            lambda r: pq.write_table(
                pa.table({"caption": ["x"]}), r / "metadata" / "metadata_0.parquet"
            ),
            "1 metadata rows for 7 embeddings",
        ),
        (
            lambda r: (r / "metadata" / "metadata_1.parquet").write_bytes(b"not parquet"),
            "not a readable Parquet table",
        ),
        (
            lambda r: np.save(
                r / "img_emb" / "img_emb_0.npy", np.array([["a"] * DIM] * 7, dtype=object)
            ),
            "not a readable .npy array",
        ),
        (lambda r: [_drop(p) for p in (r / "text_emb").iterdir()], "needs both img_emb/"),
    ],
)
def test_broken_folders_are_one_line_and_write_nothing(tmp_path, damage, message):
    root = tmp_path / "cr"
    write_folder(root, [7, 5, 9])
    damage(root)
    with pytest.raises(EmbeddingError, match=message):
        import_folder(root, tmp_path / "store")
    assert not (tmp_path / "store").exists()


def test_a_failed_import_leaves_the_old_store_whole(tmp_path, monkeypatch):
    write_folder(tmp_path / "cr", [4, 4])
    old = import_folder(tmp_path / "cr", tmp_path / "store")
    before = json.loads((tmp_path / "store" / "manifest.json").read_text())
    import gapscope.data.clip_retrieval as cr

    def broken(self, modality, part):
        if part == 1:
            raise OSError("disk went away")
        return original(self, modality, part)

    original = cr.ClipRetrievalFolder.items
    monkeypatch.setattr(cr.ClipRetrievalFolder, "items", broken)
    with pytest.raises(OSError):
        import_folder(tmp_path / "cr", tmp_path / "store", overwrite=True)
    after = EmbeddingStore.open(tmp_path / "store")
    assert after.manifest == before
    assert after.fingerprint(verify=True) == old.fingerprint()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cr", "store"]


def test_an_existing_store_is_not_replaced_without_overwrite(tmp_path):
    write_folder(tmp_path / "cr", [3])
    import_folder(tmp_path / "cr", tmp_path / "store")
    with pytest.raises(StoreError):
        import_folder(tmp_path / "cr", tmp_path / "store")


def test_import_on_the_command_line(tmp_path):
    from typer.testing import CliRunner

    from gapscope.cli import app

    write_folder(tmp_path / "cr", [6, 6])
    runner = CliRunner()
    done = runner.invoke(app, ["import", str(tmp_path / "cr"), "-o", str(tmp_path / "s"), "-q"])
    assert done.exit_code == 0, done.output
    assert "image 12, text 12" in done.output
    report = runner.invoke(app, ["analyze", str(tmp_path / "cr"), "-q", "-f", "json"])
    assert report.exit_code == 0, report.output
    bad = runner.invoke(app, ["import", str(tmp_path / "nowhere"), "-o", str(tmp_path / "t")])
    assert bad.exit_code == 2
    assert "needs both img_emb/" in bad.output and "Traceback" not in bad.output


def test_files_left_out_and_missing_partitions_are_listed(tmp_path):
    """Partitions 0 and 2 of three, and files whose names no partition has: the import reads
    what is there, and lists the rest in the manifest and on stderr, never silently."""
    from typer.testing import CliRunner

    from gapscope.cli import app

    folder = tmp_path / "cr"
    write_folder(folder, [4, 5, 6])
    for sub, prefix, suffix in (
        ("img_emb", "img_emb_", ".npy"),
        ("text_emb", "text_emb_", ".npy"),
        ("metadata", "metadata_", ".parquet"),
    ):
        (folder / sub / f"{prefix}1{suffix}").unlink()
    (folder / "img_emb" / "img_emb_extra.npy").write_bytes(b"not read")
    (folder / "text_emb" / "notes.txt").write_text("not read")
    (folder / "text_emb" / ".hidden").write_text("left out of the list")
    store = import_folder(folder, tmp_path / "s")
    assert store.info("image")["rows"] == 4 + 6
    dataset = store.manifest["dataset"]
    assert dataset["ignored"] == ["img_emb/img_emb_extra.npy", "text_emb/notes.txt"]
    assert dataset["missing_partitions"] == [1]
    done = CliRunner().invoke(app, ["import", str(folder), "-o", str(tmp_path / "t"), "-q"])
    assert done.exit_code == 0, done.output
    assert (
        "Note: 2 files not read, not a partition: img_emb/img_emb_extra.npy, text_emb/notes.txt"
        in done.stderr
    )
    assert "Note: partition 1 missing" in done.stderr
    # Read in place, the report says the same.
    notes = analyze(folder, metrics="gap", device="cpu").to_dict()["notes"]
    assert notes[:2] == [
        f"clip-retrieval folder {folder}: 2 files not read, not a partition: "
        "img_emb/img_emb_extra.npy, text_emb/notes.txt",
        f"clip-retrieval folder {folder}: partition 1 missing (numbered from 0 without gaps)",
    ]


def test_a_whole_folder_lists_nothing(tmp_path):
    write_folder(tmp_path / "cr", [3, 3])
    store = import_folder(tmp_path / "cr", tmp_path / "s")
    assert "ignored" not in store.manifest["dataset"]
    assert "missing_partitions" not in store.manifest["dataset"]
    notes = analyze(tmp_path / "cr", metrics="gap", device="cpu").to_dict()["notes"]
    assert not any("clip-retrieval folder" in note for note in notes)


def test_partitions_of_mixed_float_types_import_widened(tmp_path):
    """Partition 0 float16, partition 1 float32: the store holds float32, every value as
    written (float16 widens exactly), as analyze FOLDER reads the folder."""
    written = write_folder(tmp_path / "cr", [2, 3])
    wide = np.load(tmp_path / "cr" / "img_emb" / "img_emb_1.npy").astype(np.float32)
    np.save(tmp_path / "cr" / "img_emb" / "img_emb_1.npy", wide)
    store = import_folder(tmp_path / "cr", tmp_path / "store")
    image = np.asarray(store.embeddings("image"))
    assert image.dtype == np.float32
    assert image.tobytes() == written["image"].astype(np.float32).tobytes()
    assert np.asarray(store.embeddings("text")).dtype == np.float16  # all float16: kept
    folder = EmbeddingSet.from_store(tmp_path / "cr")
    assert np.asarray(folder.embeddings["image"]).tobytes() == image.tobytes()
