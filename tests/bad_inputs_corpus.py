"""The files of the bad-input corpus (``tests/test_bad_inputs.py``), generated in one folder.

Every file is made here from a seed, none is committed: arrays (broken in each way an array
can be), stores (each broken in one place), reports (each breaking the shipped JSON Schema in
one place), gate configs, an image folder with broken captions files, symbolic-link traps,
checkpoints and model configs, and two shard stores of one tiny extract.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
# The image writer of the extraction tests; appended, so that tests/ keeps its module names.
if str(REPO / "tests" / "extract") not in sys.path:
    sys.path.append(str(REPO / "tests" / "extract"))
EXAMPLE_STORE = REPO / "examples" / "example-store"
#: The payload of every pickle in the corpus creates this file: if any of them ran, it exists.
PWNED = "PWNED"


class Payload:
    """Unpickling this runs code: it creates the file ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def build_corpus(root: Path) -> Path:
    """Write every corpus file under ``root``; return ``root``."""
    payload = Payload(root / PWNED)
    _arrays(root / "arrays", payload)
    _stores(root / "stores")
    _reports(root / "reports")
    _configs(root / "configs")
    _media(root / "media")
    _shards(root / "shards", root / "media")
    _checkpoints(root / "weights", payload)
    _clip_retrieval(root / "clip")
    _datasets(root / "datasets")
    return root


def _datasets(folder: Path) -> None:
    """webdataset shards (one good, one truncated) and a saved Hugging Face DatasetDict."""
    from dataset_testkit import write_hf_images, write_shards

    folder.mkdir(parents=True)
    data = write_shards(folder, shards=1, per_shard=2)
    good = data.shards[0].read_bytes()
    (folder / "shards" / "truncated.tar").write_bytes(good[: len(good) // 3])
    write_hf_images(folder, rows=2)


def _clip_retrieval(folder: Path) -> None:
    """clip-retrieval output folders (img_emb/, text_emb/, metadata/), broken in one place."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def good(root: Path, parts: int = 2, rows: int = 4) -> None:
        rng = np.random.default_rng(3)
        for sub in ("img_emb", "text_emb", "metadata"):
            (root / sub).mkdir(parents=True)
        for i in range(parts):
            for sub in ("img_emb", "text_emb"):
                np.save(root / sub / f"{sub}_{i}.npy", rng.normal(size=(rows, 8)).astype("<f2"))
            table = pa.table({"caption": [f"c{r}" for r in range(rows)], "key": list("abcd")})
            pq.write_table(table, root / "metadata" / f"metadata_{i}.parquet")

    broken = {
        "image_only": lambda r: shutil.rmtree(r / "text_emb"),
        "rows_differ": lambda r: np.save(r / "text_emb" / "text_emb_0.npy", np.ones((3, 8), "<f2")),
        "dims_differ": lambda r: np.save(r / "text_emb" / "text_emb_1.npy", np.ones((4, 6), "<f2")),
        "part_missing": lambda r: (r / "text_emb" / "text_emb_1.npy").unlink(),
        "metadata_rows": lambda r: pq.write_table(
            pa.table({"caption": ["x"]}), r / "metadata" / "metadata_0.parquet"
        ),
        "metadata_garbage": lambda r: (r / "metadata" / "metadata_1.parquet").write_text("no"),
        "object_npy": lambda r: np.save(
            r / "img_emb" / "img_emb_0.npy", np.array([[None] * 8] * 4, dtype=object)
        ),
    }
    good(folder / "good")
    for name, breaker in broken.items():
        good(folder / name)
        breaker(folder / name)


def _arrays(folder: Path, payload: Payload) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    good = rng.normal(size=(10, 4)).astype(np.float32)
    np.save(folder / "good.npy", good)
    np.save(folder / "other.npy", good + 0.5)
    arrays = {
        "rows9": good[:9],
        "nan": _with(good, (3, 1), np.nan),
        "inf": _with(good, (2, 0), np.inf),
        "zero": _with(good, 5, 0.0),
        "flat": good[:, 0],
        "dim3": good[:, :3],
        "ints": np.ones((10, 4), np.int32),
        "cube": good.reshape(10, 2, 2),
        "norows": np.zeros((0, 4), np.float32),
        "nodims": np.zeros((10, 0), np.float32),
        "complex": good.astype(np.complex64),
        "bools": good > 0,
        "strings": np.array([["a"] * 4] * 10),
        "scalar": np.float32(1.0),
        "structured": np.zeros(10, dtype=[("a", "f4"), ("b", "f4")]),
    }
    for name, value in arrays.items():
        np.save(folder / f"{name}.npy", value)
    # Python objects: np.save pickles them; loading them would run the payload.
    np.save(folder / "objects.npy", np.array([payload] * 10, dtype=object), allow_pickle=True)
    (folder / "pickle.npy").write_bytes(pickle.dumps([payload] * 10))
    torch.save({"image": payload}, folder / "payload.pt")
    # Protocol 4: torch warns about it on loading, which must not add a line to the error.
    torch.save({"image": payload}, folder / "payload4.pt", pickle_protocol=4)
    torch.save([1, 2, 3], folder / "list.pt")
    torch.save({"a": torch.zeros(10, 4), "b": torch.ones(10, 4)}, folder / "two.pt")
    data = (folder / "good.npy").read_bytes()
    (folder / "truncated.npy").write_bytes(data[:-20])
    (folder / "empty.npy").write_bytes(b"")
    (folder / "text.npy").write_text("hello, not an array")
    (folder / "random.pt").write_bytes(rng.bytes(3000))
    (folder / "random.safetensors").write_bytes(rng.bytes(300))
    (folder / "notes.txt").write_text("hello")
    (folder / "folder.npy").mkdir()
    labels = {
        "labels_ok": np.array(["a", "b"] * 5),
        "labels_short": np.array(["a", "b"] * 4),
        "labels_2d": np.zeros((10, 2), np.int64),
        "labels_nan": np.array([1.0, np.nan] * 5),
    }
    for name, value in labels.items():
        np.save(folder / f"{name}.npy", value)
    np.save(
        folder / "labels_objects.npy", np.array([payload, "b"] * 5, dtype=object), allow_pickle=True
    )
    (folder / "labels_pickle.npy").write_bytes(pickle.dumps(["a", payload] * 5))


def _with(array: np.ndarray, where, value) -> np.ndarray:
    out = array.copy()
    out[where] = value
    return out


def _stores(folder: Path) -> None:
    folder.mkdir(parents=True)
    small = folder / "good"
    _small_store(small)
    broken = {
        "manifest_not_json": lambda s: (s / "manifest.json").write_text("{not json"),
        "manifest_list": lambda s: (s / "manifest.json").write_text("[1, 2]"),
        "manifest_missing": lambda s: (s / "manifest.json").unlink(),
        "manifest_version": lambda s: _edit_manifest(s, format_version=99),
        "manifest_format": lambda s: _edit_manifest(s, format="something.else"),
        "manifest_incomplete": lambda s: _edit_manifest(s, complete=False),
        "manifest_modalities_list": lambda s: _edit_manifest(s, modalities=["image", "text"]),
        "manifest_rows": lambda s: _edit_manifest(s, modalities=_rows(s, 29)),
        "truncated_npy": lambda s: _truncate(s / "text.npy"),
        "missing_npy": lambda s: (s / "text.npy").unlink(),
        "items_not_json": lambda s: _append(s / "image.items.jsonl", "{oops\n"),
        "items_not_utf8": lambda s: (s / "image.items.jsonl").open("ab").write(b"\xff\n"),
        "items_no_id": lambda s: _rewrite_items(s, lambda item: item.pop("id")),
        "items_short": lambda s: _drop_last_item(s / "image.items.jsonl"),
        "dim_mismatch": lambda s: np.save(s / "text.npy", np.ones((60, 63), np.float32)),
        "nan_rows": lambda s: np.save(s / "text.npy", _nan_text(s)),
        "manifest_modalities_null": lambda s: _edit_manifest(s, modalities=None),
        "manifest_file_number": lambda s: _edit_entry(s, file=3),
        "manifest_items_null": lambda s: _edit_entry(s, items=None),
        "manifest_file_outside": lambda s: _edit_entry(s, file="../good/image.npy"),
        "manifest_encoder_list": lambda s: _edit_manifest(s, encoder=["open_clip"]),
        "manifest_complete_text": lambda s: _edit_manifest(s, complete="yes"),
        "manifest_skipped_text": lambda s: _edit_manifest(s, skipped="lots"),
        "items_label_object": lambda s: _rewrite_items(s, lambda item: item.update(label={})),
    }
    for name, breaker in broken.items():
        shutil.copytree(small, folder / name)
        breaker(folder / name)
    (folder / "empty").mkdir()
    (folder / "a_file").write_text("not a store")


def _small_store(path: Path, images: int = 30) -> None:
    """The example store cut to its first ``images`` images and their captions (each file
    is hashed before and after every case: small keeps the corpus fast)."""
    shutil.copytree(EXAMPLE_STORE, path)
    manifest = json.loads((path / "manifest.json").read_text())
    image_items = (path / "image.items.jsonl").read_text().splitlines(keepends=True)[:images]
    groups = {json.loads(line)["group"] for line in image_items}
    text_lines = (path / "text.items.jsonl").read_text().splitlines(keepends=True)
    keep = [k for k, line in enumerate(text_lines) if json.loads(line)["group"] in groups]
    rows = {"image": list(range(images)), "text": keep}
    items = {"image": image_items, "text": [text_lines[k] for k in keep]}
    for m in ("image", "text"):
        np.save(path / f"{m}.npy", np.load(path / f"{m}.npy")[rows[m]])
        (path / f"{m}.items.jsonl").write_text("".join(items[m]))
        manifest["modalities"][m]["rows"] = len(rows[m])
    (path / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _edit_manifest(store: Path, **fields) -> None:
    manifest = json.loads((store / "manifest.json").read_text())
    manifest.update(fields)
    (store / "manifest.json").write_text(json.dumps(manifest))


def _edit_entry(store: Path, **fields) -> None:
    """Change fields of the image entry of the manifest's ``modalities``."""
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["modalities"]["image"].update(fields)
    (store / "manifest.json").write_text(json.dumps(manifest))


def _rows(store: Path, rows: int) -> dict:
    manifest = json.loads((store / "manifest.json").read_text())
    modalities = manifest["modalities"]
    modalities["image"]["rows"] = rows
    return modalities


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _append(path: Path, text: str) -> None:
    with open(path, "a") as fh:
        fh.write(text)


def _rewrite_items(store: Path, change) -> None:
    path = store / "image.items.jsonl"
    items = [json.loads(line) for line in path.read_text().splitlines()]
    change(items[7])
    path.write_text("".join(json.dumps(i) + "\n" for i in items))


def _drop_last_item(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))


def _nan_text(store: Path) -> np.ndarray:
    text = np.load(store / "text.npy").copy()
    text[17, 3] = np.nan  # a text row: 60 of them in the small store
    return text


def good_report() -> dict:
    """A real report of small arrays (gap and retrieval), as JSON data."""
    from gapscope import analyze

    rng = np.random.default_rng(3)
    image = rng.normal(size=(30, 8)).astype(np.float32)
    text = (image + 0.5 * rng.normal(size=(30, 8))).astype(np.float32)
    return analyze(
        {"image": image, "text": text}, metrics="gap,cosine,retrieval", k="1,5", device="cpu"
    ).to_dict()


#: Reports that break the shipped schema in one place: name -> (path in the report, value).
#: ``None`` as value deletes the key.
REPORT_BREAKS: dict[str, tuple[tuple[str, ...], object]] = {
    "pairs_list": (("pairs",), [1, 2]),
    "no_pairs": (("pairs",), None),
    "no_input": (("input",), None),
    "no_params": (("params",), None),
    "no_directions": (("directions",), None),
    "modalities_list": (("modalities",), ["image"]),
    "bogus_direction": (("directions", "gap"), "sideways"),
    "directions_list": (("directions",), ["lower"]),
    "gap_string": (("pairs", "image-text", "gap"), "big"),
    "gap_object": (("pairs", "image-text", "gap"), {"value": 1}),
    "gap_true": (("pairs", "image-text", "gap"), True),
    # Any lowercase identifier names a modality (analyze --modality video=FILE): these do not.
    "unknown_pair": (("pairs", "image+sound"), {"gap": 0.1}),
    "unknown_modality": (("modalities", "Video"), {"cone": 0.1}),
    "pair_list": (("pairs", "image-text"), [0.1]),
    "recall_string": (("pairs", "image-text", "recall", "image->text", "R@1"), "high"),
    "recall_bad_direction": (("pairs", "image-text", "recall", "image=>text"), {}),
    "recall_negative_queries": (
        ("pairs", "image-text", "recall", "image->text", "n_queries"),
        -3,
    ),
    "recall_no_queries": (("pairs", "image-text", "recall", "image->text", "n_queries"), None),
    "relevance_bogus": (("pairs", "image-text", "recall", "image->text", "relevance"), "vibes"),
    "ci_three": (("pairs", "image-text", "gap_ci"), [0.1, 0.2, 0.3]),
    "ci_strings": (("pairs", "image-text", "gap_ci"), ["a", "b"]),
    "fingerprint_short": (("input", "fingerprint"), "abc"),
    "fingerprint_missing": (("input", "fingerprint"), None),
    "rows_zero": (("input", "modalities", "image", "n"), 0),
    "rows_string": (("input", "modalities", "image", "n"), "ten"),
    "k_empty": (("params", "k"), []),
    "k_strings": (("params", "k"), ["one"]),
    "k_zero": (("params", "k"), [0]),
    "seed_float": (("params", "seed"), 1.5),
    "confidence_two": (("params", "confidence"), 2),
    "precision_fp8": (("params", "precision"), "fp8"),
    "notes_string": (("notes",), "a note"),
    "version_number": (("gapscope_version",), 1),
    "tuples_list": (("tuples",), [1]),
    "mir_detail_no_fd": (("pairs", "image-text", "mir_detail"), {"scale": 1.0}),
}


def broken_report(base: dict, path: tuple[str, ...], value: object) -> dict:
    """A copy of ``base`` with ``value`` at ``path`` (``None`` deletes the key)."""
    data = copy.deepcopy(base)
    node = data
    for key in path[:-1]:
        node = node.setdefault(key, {})
    if value is None:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return data


def _reports(folder: Path) -> None:
    folder.mkdir(parents=True)
    base = good_report()
    _write(folder / "good.json", base)
    worse = copy.deepcopy(base)
    worse["pairs"]["image-text"]["gap"] += 0.5
    _write(folder / "worse.json", worse)
    for name, (path, value) in REPORT_BREAKS.items():
        _write(folder / f"{name}.json", broken_report(base, path, value))
    v1 = json.loads((REPO / "tests" / "report" / "data" / "example-report-v1.json").read_text())
    _write(folder / "v1.json", v1)
    _write(folder / "v1_pairs_list.json", {**v1, "pairs": [1]})
    _write(folder / "schema_3.json", {**base, "schema": "gapscope.report/3"})
    _write(folder / "no_schema.json", {k: v for k, v in base.items() if k != "schema"})
    _write(folder / "array.json", [base])
    (folder / "broken.json").write_text("{not json")
    (folder / "empty.json").write_text("")
    (folder / "latin1.json").write_bytes('{"schema": "caf\xe9"}'.encode("latin-1"))
    text = json.dumps(base)
    (folder / "nan.json").write_text(text.replace('"seed": 0', '"seed": NaN', 1))
    (folder / "infinity.json").write_text(text.replace('"seed": 0', '"seed": Infinity', 1))
    (folder / "huge_number.json").write_text(text.replace('"seed": 0', '"seed": 1e400', 1))
    huge_integer = '"seed": 1' + "0" * 400  # an int for Python, no float holds it
    (folder / "huge_integer.json").write_text(text.replace('"seed": 0', huge_integer, 1))
    longest = '"seed": 1' + "0" * 5000  # beyond Python's 4,300 digits for int()
    (folder / "longest_integer.json").write_text(text.replace('"seed": 0', longest, 1))
    (folder / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (folder / "report.txt").write_text(text)
    (folder / "a_folder.json").mkdir()
    missing_metric = copy.deepcopy(base)
    del missing_metric["pairs"]["image-text"]["gap"]
    _write(folder / "missing_gap.json", missing_metric)


def _write(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=1))


def _configs(folder: Path) -> None:
    folder.mkdir(parents=True)
    files = {
        "not_toml.toml": "[check\nx = 1",
        "check_not_table.toml": "check = 3\n",
        "tolerance_bad.toml": '[check]\ntolerance = {gap = "lots"}\n',
        "tolerance_list.toml": "[check]\ntolerance = [1, 2]\n",
        "threshold_bad.toml": '[check]\nthreshold = "gap<<1"\n',
        "significant_str.toml": '[check]\nsignificant = "yes"\n',
        "unknown_key.toml": "[check]\ntolerence = 1\n",
    }
    for name, text in files.items():
        (folder / name).write_text(text)
    (folder / "binary.toml").write_bytes(b"\xff\xfe\x00garbage")


def _media(folder: Path) -> None:
    from extract_testkit import write_images

    data = write_images(folder, per_class=2, broken=False)
    images, captions = data.images, data.captions
    (folder / "empty").mkdir()
    (folder / "no_images").mkdir()
    (folder / "no_images" / "readme.txt").write_text("no images here")
    good_lines = captions.read_text().splitlines()
    variants = {
        "unterminated.csv": [*good_lines[:2], 'cat/001.jpg,"a cat, unterminated', *good_lines[2:]],
        "extra_fields.csv": [good_lines[0], "cat/000.png,a cat,sitting on a mat"],
        "no_columns.csv": ["name,words", "cat/000.png,a cat"],
        "header_only.csv": [good_lines[0]],
        "no_file_named.csv": [good_lines[0], "elephant.png,an elephant"],
        "long_field.csv": [good_lines[0], f"cat/000.png,{'a' * 20_000}"],
        "huge_field.csv": [good_lines[0], f'cat/000.png,"{"b" * 200_000}'],
    }
    for name, lines in variants.items():
        (folder / name).write_text("\n".join(lines) + "\n")
    (folder / "bad_line.jsonl").write_text('{"image": "cat/000.png", "caption": "x"}\n{oops\n')
    (folder / "not_object.jsonl").write_text('["cat/000.png", "x"]\n')
    (folder / "latin1.csv").write_bytes("image,caption\ncat/000.png,caf\xe9\n".encode("latin-1"))
    (folder / "captions.xlsx").write_text("not a spreadsheet")
    # The images are in cat/ and dog/: these names leave dog out.
    (folder / "classes_without_dog.txt").write_text("cat\nfox\n")
    (folder / "captions_dir.csv").mkdir()
    (folder / "demo").mkdir()
    (folder / "demo" / "image-text").write_text("a file where the demo would put a store")
    config = {"embed_dim": 8, "vision_cfg": {}}
    (folder / "config_incomplete.json").write_text(json.dumps(config))
    (folder / "config_broken.json").write_text("{not json")
    # A copy of the images with a symlink loop and a second path to one image.
    looped = folder / "looped"
    shutil.copytree(images, looped)
    os.symlink("..", looped / "cat" / "loop")
    os.symlink("000.png", looped / "cat" / "alias.png")


def _checkpoints(folder: Path, payload: Payload) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(5)
    (folder / "random.pt").write_bytes(rng.bytes(3000))
    (folder / "not_zip.pt").write_bytes(b"PK\x03\x04garbage")
    (folder / "empty.pt").write_bytes(b"")
    (folder / "random.safetensors").write_bytes(rng.bytes(200))
    torch.save({"visual.proj": payload}, folder / "payload.pt")
    torch.save({"visual.proj": payload}, folder / "payload4.pt", pickle_protocol=4)
    torch.save({"a": torch.zeros(3)}, folder / "wrong_keys.pt")
    (folder / "a_folder.pt").mkdir()


def _shards(folder: Path, media: Path) -> None:
    """Both shards of one tiny extract (``0of2``, ``1of2``) and a shard of another (``other``)."""
    from gapscope.extract import extract

    common = dict(
        images=media / "images",
        captions=media / "captions.csv",
        model="gapscope-tiny-vit",
        device="cpu",
        batch_size=2,
        workers=0,
        quiet=True,
    )
    for k in range(2):
        extract(folder / f"{k}of2", shard=f"{k}/2", **common)
    extract(folder / "other", shard="1/2", **{**common, "batch_size": 3})
