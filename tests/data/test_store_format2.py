"""Store format 2: items as memory-mapped columns, equal to what format 1 reads, and format-1
stores (a fixture written by the format-1 code itself) still readable."""

from __future__ import annotations

import json
import mmap
import zipfile

import numpy as np
import pytest
from store_format1 import FIXTURE, write_format1

from gapscope.data import item_columns
from gapscope.data.store import FORMAT_VERSION, EmbeddingStore
from gapscope.errors import StoreError

# What the format-1 code returned for the fixture (recorded when it was written).
FIXTURE_GROUPS = {"image": [0, 1, 2, 3], "text": [0, 1, 2, 4, 3]}
FIXTURE_LABELS = {"image": [0, 0, 1, 1], "text": [0, 0, 1, 1, 1]}
FIXTURE_FINGERPRINT = "51f0492e3b95eba84332370516e15718075ed9a98f1a8160e05ba45f370653d9"


def _fixture_items() -> dict[str, list[dict]]:
    return {
        m: [
            json.loads(line)
            for line in (FIXTURE / f"{m}.items.jsonl").read_text("utf-8").splitlines()
        ]
        for m in ("image", "text")
    }


def _first_appearance(values: list) -> list[int]:
    """Codes by first appearance, values compared by their JSON text (3 and "3" differ)."""
    seen: dict[str, int] = {}
    return [seen.setdefault(json.dumps(v, sort_keys=True), len(seen)) for v in values]


def test_the_format1_fixture_is_still_read_as_before():
    store = EmbeddingStore.open(FIXTURE)
    assert store.format_version == 1
    for m in ("image", "text"):
        assert store.groups(m).tolist() == FIXTURE_GROUPS[m]
        assert store.labels(m).tolist() == FIXTURE_LABELS[m]
        assert store.items(m) == _fixture_items()[m]
    assert store.fingerprint(verify=True) == FIXTURE_FINGERPRINT
    with pytest.raises(StoreError, match="run gapscope upgrade on it"):
        store.item_columns("image")


def test_the_format1_writer_of_the_tests_writes_the_fixture_bytes(tmp_path):
    fixture = EmbeddingStore.open(FIXTURE)
    path = write_format1(
        tmp_path / "again",
        {m: np.asarray(fixture.embeddings(m)) for m in fixture.modalities},
        _fixture_items(),
        encoder=fixture.encoder,
        dataset=fixture.dataset,
        normalized={"image": False, "text": False},
    )
    for name in sorted(p.name for p in FIXTURE.iterdir()):
        if name != "fingerprint.stamps.json":  # mtimes
            assert (path / name).read_bytes() == (FIXTURE / name).read_bytes(), name


def test_format2_reads_what_format1_reads(tmp_path):
    fixture = EmbeddingStore.open(FIXTURE)
    arrays = {m: np.asarray(fixture.embeddings(m)) for m in fixture.modalities}
    store = EmbeddingStore.write(tmp_path / "s", arrays, _fixture_items(), encoder=fixture.encoder)
    assert store.format_version == FORMAT_VERSION == 2
    assert sorted(p.name for p in store.path.iterdir()) == [
        "fingerprint.stamps.json",
        "image.items.npz",
        "image.npy",
        "manifest.json",
        "text.items.npz",
        "text.npy",
    ]
    for m in ("image", "text"):
        assert store.items(m) == _fixture_items()[m]
        assert list(store.item_columns(m)) == _fixture_items()[m]
        assert store.groups(m).tolist() == FIXTURE_GROUPS[m]
        assert store.labels(m).tolist() == FIXTURE_LABELS[m]
    assert store.fingerprint(verify=True) == FIXTURE_FINGERPRINT


@pytest.mark.parametrize("seed", range(4))
def test_codes_match_an_independent_reference_on_random_items(tmp_path, seed):
    rng = np.random.default_rng(seed)
    pool = [1, "1", 2.5, [1, "a"], ["a", 1], "ü", 0, "0", [], "x y"]
    rows = {"image": int(rng.integers(1, 40)), "text": int(rng.integers(1, 40))}
    with_labels = bool(seed % 2)
    items = {}
    for m, n in rows.items():
        items[m] = []
        for i in range(n):
            item = {"id": f"{m}{i}", "group": pool[int(rng.integers(len(pool)))]}
            if rng.random() < 0.8:
                item["source"] = f'src {i}\n"quoted"'
            if with_labels:
                item["label"] = pool[int(rng.integers(len(pool)))]
            if rng.random() < 0.2:
                item["extra"] = {"k": i}
            items[m].append(item)
    arrays = {m: rng.normal(size=(n, 3)).astype(np.float32) for m, n in rows.items()}
    store = EmbeddingStore.write(tmp_path / "s", arrays, items)
    groups = _first_appearance([it["group"] for m in rows for it in items[m]])
    assert np.concatenate([store.groups(m) for m in rows]).tolist() == groups
    if with_labels:
        labels = _first_appearance([it["label"] for m in rows for it in items[m]])
        assert np.concatenate([store.labels(m) for m in rows]).tolist() == labels
    else:
        assert store.labels("image") is None
    for m in rows:
        # A key named like a column ("extra") is still an item's own key.
        assert store.items(m) == [dict(sorted(it.items())) for it in items[m]]
        columns = store.item_columns(m)
        assert columns[-1] == dict(sorted(items[m][-1].items()))
        assert columns[1:3] == [dict(sorted(it.items())) for it in items[m][1:3]]


def test_columns_are_memory_mapped_and_checked_without_decoding(tmp_path, monkeypatch):
    arrays = {m: np.ones((3, 2), np.float32) for m in ("image", "text")}
    items = {m: [{"id": f"{m}{i}", "source": "", "group": i} for i in range(3)] for m in arrays}
    EmbeddingStore.write(tmp_path / "s", arrays, items)

    def refuse(*args, **kwargs):
        raise AssertionError("an item was decoded")

    monkeypatch.setattr(item_columns.ItemColumns, "_row", refuse)
    monkeypatch.setattr(item_columns.JsonColumn, "__getitem__", refuse)
    store = EmbeddingStore.open(tmp_path / "s")  # validates
    assert store.groups("text").tolist() == [0, 1, 2]
    codes = store.item_columns("text").group_codes
    base = codes
    while not isinstance(base, mmap.mmap) and base is not None:
        base = getattr(base, "base", None)
    assert isinstance(base, mmap.mmap)


def test_the_analysis_never_decodes_an_item(tmp_path, monkeypatch):
    from gapscope import analyze

    rng = np.random.default_rng(0)
    arrays = {m: rng.normal(size=(20, 8)).astype(np.float32) for m in ("image", "text")}
    items = {
        m: [{"id": f"{m}{i}", "source": "", "group": i, "label": i % 3} for i in range(20)]
        for m in arrays
    }
    EmbeddingStore.write(tmp_path / "s", arrays, items)

    def refuse(*args, **kwargs):
        raise AssertionError("an item was decoded")

    monkeypatch.setattr(item_columns.ItemColumns, "_row", refuse)
    monkeypatch.setattr(EmbeddingStore, "items", refuse)
    report = analyze(tmp_path / "s", metrics="gap,retrieval", device="cpu")
    modalities = report.to_dict()["input"]["modalities"]
    assert {m: (v["n"], v["has_labels"]) for m, v in modalities.items()} == {
        "image": (20, True),
        "text": (20, True),
    }


def test_the_archive_is_a_plain_npz_with_aligned_members_and_fixed_bytes(tmp_path):
    members = [
        ("a.offsets", np.arange(5, dtype=np.int64)),
        ("a.data", np.arange(7, dtype=np.uint8)),
    ]
    members += [("empty", np.zeros(0, np.int64)), ("b", np.arange(3, dtype=np.int64) - 1)]
    item_columns.write_npz(tmp_path / "x.npz", members)
    item_columns.write_npz(tmp_path / "y.npz", members)
    assert (tmp_path / "x.npz").read_bytes() == (tmp_path / "y.npz").read_bytes()
    with np.load(tmp_path / "x.npz") as npz:
        assert npz.files == [name for name, _ in members]
        for name, arr in members:
            np.testing.assert_array_equal(npz[name], arr)
    mapped, starts = item_columns._local_members(tmp_path / "x.npz")
    assert sorted(starts) == ["a.data", "a.offsets", "b"]  # the empty one is not mapped
    assert all(offset % 64 == 0 for offset in starts.values())
    for name, arr in members:
        np.testing.assert_array_equal(mapped[name], arr)


def test_a_recompressed_archive_is_still_read(tmp_path):
    arrays = {m: np.ones((2, 2), np.float32) for m in ("image", "text")}
    items = {m: [{"id": f"{m}{i}", "group": i} for i in range(2)] for m in arrays}
    EmbeddingStore.write(tmp_path / "s", arrays, items)
    path = tmp_path / "s" / "text.items.npz"
    with np.load(path) as npz:
        content = {name: npz[name] for name in npz.files}
    np.savez_compressed(path, **content)
    with zipfile.ZipFile(path) as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_DEFLATED}
    assert EmbeddingStore.open(tmp_path / "s").items("text") == items["text"]


@pytest.fixture
def store2(tmp_path):
    arrays = {m: np.ones((5, 2), np.float32) for m in ("image", "text")}
    items = {
        m: [
            {"id": f"{m}{i}", "source": f"s{i}", "group": i, "label": "ab"[i % 2]} for i in range(5)
        ]
        for m in arrays
    }
    EmbeddingStore.write(tmp_path / "s", arrays, items)
    return tmp_path / "s"


def _rewrite(path, **changes):
    with np.load(path) as npz:
        content = {name: npz[name] for name in npz.files}
    for name, value in changes.items():
        name = name.replace("__", ".")
        if value is None:
            del content[name]
        else:
            content[name] = value
    item_columns.write_npz(path, content.items())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"group__codes": None}, "member group.codes is missing"),
        ({"id__offsets": np.array([0, 2, 4, 6, 8], np.int64)}, "has 5 entries, expected 6"),
        ({"group__codes": np.array([0, 1, -2, 3, 4], np.int64)}, "group.codes of item 2"),
        ({"group__codes": np.zeros(5, np.int32)}, "must be 1-D int64"),
        ({"label__codes": np.array([0, 1, -1, 1, 0], np.int64)}, "labels on 4 of 5 rows"),
        ({"source__offsets": np.array([0, 4, 2, 12, 16, 20], np.int64)}, "item 1 has a negative"),
        ({"id__offsets": np.array([0, 8, 8, 16, 24, 40], np.int64)}, "item 1 lacks its 'id'"),
        ({"id__offsets": np.array([0, 8, 16, 24, 32, 39], np.int64)}, "must run from 0 to 40"),
    ],
)
def test_damaged_columns_are_refused_in_one_line(store2, change, message):
    _rewrite(store2 / "image.items.npz", **change)
    with pytest.raises(StoreError, match=message) as info:
        EmbeddingStore.open(store2)
    assert "\n" not in str(info.value)
    assert "image.items.npz" in str(info.value)


def test_a_truncated_archive_is_refused(store2):
    path = store2 / "text.items.npz"
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(StoreError, match="text.items.npz: not a readable .npz archive"):
        EmbeddingStore.open(store2)


def test_bad_json_in_a_column_is_refused_when_the_row_is_read(store2):
    path = store2 / "image.items.npz"
    with np.load(path) as npz:
        data = npz["source.data"].copy()
    data[0] = ord("{")  # row 0's source, "s0", becomes {s0"
    _rewrite(path, source__data=data)
    store = EmbeddingStore.open(store2)  # the text is not decoded to open the store
    assert store.item_columns("image")[1]["source"] == "s1"
    with pytest.raises(StoreError, match="source of row 0 is not valid JSON"):
        store.items("image")


def test_partial_labels_are_written_but_refused_when_read(tmp_path):
    arrays = {m: np.ones((5, 2), np.float32) for m in ("image", "text")}
    items = {m: [{"id": f"{m}{i}", "group": i, "label": "a"} for i in range(5)] for m in arrays}
    del items["image"][0]["label"]
    store = EmbeddingStore.create(tmp_path / "s")
    for m in arrays:
        store.append(m, arrays[m], items[m])
    store.finalize()
    with pytest.raises(StoreError, match="labels on 4 of 5 rows"):
        EmbeddingStore.open(tmp_path / "s")


def test_an_object_in_a_group_is_refused_when_written(tmp_path):
    arrays = {m: np.ones((1, 2), np.float32) for m in ("image", "text")}
    items = {m: [{"id": m, "group": {"a": 1}}] for m in arrays}
    with pytest.raises(StoreError, match="item 0 has an object inside its group"):
        EmbeddingStore.write(tmp_path / "s", arrays, items)
    assert not (tmp_path / "s").exists()


def test_an_unknown_format_version_names_the_readable_ones(store2):
    manifest = json.loads((store2 / "manifest.json").read_text())
    manifest["format_version"] = 3
    (store2 / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="unknown store format version 3 .*reads versions 1 and 2"):
        EmbeddingStore.open(store2)
