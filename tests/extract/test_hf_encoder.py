"""``--encoder hf``: transformers CLIP, SigLIP and CLAP models from local folders or the hub
cache, checked against the models' own features, through extract, resume and the manifest.

The models are tiny and random, saved to folders by ``hf_testkit``; the hub is never contacted.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import sys

import numpy as np
import pytest
import torch
from extract_testkit import assert_same_store
from hf_testkit import clap_folder, clip_folder, hub_cache, siglip_folder
from PIL import Image

from gapscope.data.store import EmbeddingStore
from gapscope.errors import GapscopeError
from gapscope.extract import extract, load_encoder

CAPTIONS = ["a red square", "two dogs on a beach", "an empty room", "Zebra? 42!"]
BATCH = 4


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    import huggingface_hub.constants as hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf-models")
    return {
        "clip": clip_folder(root / "clip"),
        "siglip": siglip_folder(root / "siglip"),
        "clap": clap_folder(root / "clap"),
    }


@pytest.fixture(scope="module")
def encoders(folders):
    return {k: load_encoder("hf", model=str(v), device="cpu") for k, v in folders.items()}


def _images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)) for _ in range(3)]


def _clips():
    t = np.arange(16000) / 32000  # resampled to the model's 16 kHz
    return [(np.sin(2 * np.pi * f * t), 32000) for f in (300, 700, 1500)]


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_image_text_models_equal_their_own_features(folders, encoders, kind):
    """The embeddings are get_image_features / get_text_features of the model that
    transformers loads from the folder, on inputs its own processor makes."""
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    enc = encoders[kind]
    images, texts = enc.encode_images(_images()), enc.encode_texts(CAPTIONS)
    dim = 16 if kind == "clip" else 32
    assert images.shape == (3, dim) and texts.shape == (4, dim) and enc.embedding_dim == dim
    assert images.dtype == texts.dtype == np.float32

    model = AutoModel.from_pretrained(folders[kind]).eval()
    pixels = AutoImageProcessor.from_pretrained(folders[kind])(
        images=_images(), return_tensors="pt"
    )["pixel_values"]
    tokenizer = AutoTokenizer.from_pretrained(folders[kind])
    if kind == "siglip":  # as trained: padded to 16 tokens, no attention mask
        tokens = {
            "input_ids": tokenizer(CAPTIONS, padding="max_length", return_tensors="pt")["input_ids"]
        }
        assert tokens["input_ids"].shape == (4, 16)
    else:
        tokens = dict(
            tokenizer(CAPTIONS, padding=True, truncation=True, max_length=16, return_tensors="pt")
        )
    with torch.no_grad():
        expected_images = model.get_image_features(pixel_values=pixels).pooler_output.numpy()
        expected_texts = model.get_text_features(**tokens).pooler_output.numpy()
    np.testing.assert_allclose(images, expected_images, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(texts, expected_texts, rtol=1e-5, atol=1e-5)
    # Raw, as the model computes them: gapscope normalises only when it analyses.
    assert not np.allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-3)
    assert enc.normalized("image") is enc.normalized("text") is False
    with pytest.raises(GapscopeError, match="not audio"):
        enc.encode_audio(_clips())


def test_clap_equals_its_raw_projections(folders, encoders):
    """ClapModel's get_*_features normalise; the store keeps the projections before that."""
    from transformers import AutoTokenizer, ClapModel

    enc = encoders["clap"]
    audio, texts = enc.encode_audio(_clips()), enc.encode_texts(CAPTIONS)
    assert audio.shape == (3, 32) and texts.shape == (4, 32)
    model = ClapModel.from_pretrained(folders["clap"]).eval()
    pre = enc.preprocessor("audio")
    batch = pre.collate([pre.load(c) for c in _clips()])
    tokens = dict(
        AutoTokenizer.from_pretrained(folders["clap"])(CAPTIONS, padding=True, return_tensors="pt")
    )
    with torch.no_grad():
        normalised = model.get_audio_features(**batch).pooler_output.numpy()
        raw_audio = model.audio_projection(model.audio_model(**batch).pooler_output).numpy()
        normalised_text = model.get_text_features(**tokens).pooler_output.numpy()
        raw_text = model.text_projection(model.text_model(**tokens).pooler_output).numpy()
    np.testing.assert_allclose(audio, raw_audio, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(texts, raw_text, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        audio / np.linalg.norm(audio, axis=1, keepdims=True), normalised, rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        texts / np.linalg.norm(texts, axis=1, keepdims=True), normalised_text, atol=1e-5
    )
    assert not np.allclose(np.linalg.norm(audio, axis=1), 1, atol=1e-3)
    with pytest.raises(GapscopeError, match="not image"):
        enc.encode_images(_images())


def test_identity_and_description(folders, encoders):
    enc = encoders["clip"]
    identity, description = enc.identity(), enc.description()
    assert identity == {
        "family": "hf",
        "model": None,  # a local folder is known by its content, not its path
        "model_type": "clip",
        "checkpoint_sha256": _sha256(folders["clip"] / "model.safetensors"),
        "config_sha256": _sha256(folders["clip"] / "config.json"),
        "processor_sha256": identity["processor_sha256"],
        "precision": "fp32",
    }
    assert len(identity["processor_sha256"]) == 64
    assert description["model"] == str(folders["clip"].resolve())
    assert description["source"] == "local folder" and description["model_class"] == "CLIPModel"
    assert description["embedding_dim"] == 16
    assert description["preprocessing"]["text_padding"] == "longest"
    assert encoders["siglip"].description()["preprocessing"]["text_inputs"] == ["input_ids"]
    json.dumps(description)  # the manifest holds it


def test_preprocessors_are_picklable(encoders):
    """They travel to DataLoader worker processes."""
    for enc in encoders.values():
        for modality in enc.modalities:
            pre = pickle.loads(pickle.dumps(enc.preprocessor(modality)))
            source = _images()[0] if modality == "image" else _clips()[0]
            sample = pre.load("a caption" if modality == "text" else source)
            assert pre.collate([sample]) is not None


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_extract_then_resume_after_an_interruption(
    folders, encoders, image_data, tmp_path, cli, kind
):
    """Through the CLI, like open_clip: an extract stopped mid-way (Ctrl-C) is resumed by the
    same command and ends byte-identical to one uninterrupted run."""
    folder = folders[kind]
    args = ["--images", image_data.images, "--captions", image_data.captions, "--encoder", "hf"]
    args += ["--model", folder, "--device", "cpu", "--batch-size", BATCH, "-q"]
    reference = tmp_path / "reference"
    cli("extract", *args, "-o", reference)
    store = EmbeddingStore.open(reference)
    assert (
        store.info("image")["rows"] == image_data.n_good
        and store.info("text")["rows"] == image_data.n_captions
    )
    assert store.encoder["family"] == "hf" and store.encoder["model_type"] == kind
    assert store.manifest["extract"]["encoder"] == encoders[kind].identity()
    assert store.manifest["modalities"]["image"]["normalized"] is False
    files = [image_data.images / item["source"] for item in store.items("image")]
    np.testing.assert_allclose(
        store.embeddings("image"), encoders[kind].encode_images(files), rtol=1e-5, atol=1e-5
    )
    captions = [item["source"] for item in store.items("text")]
    np.testing.assert_allclose(
        store.embeddings("text")[:BATCH],
        encoders[kind].encode_texts(captions[:BATCH]),
        rtol=1e-5,
        atol=1e-5,
    )

    out = tmp_path / "stopped"
    encoder = load_encoder("hf", model=str(folder), device="cpu")
    encode = encoder.encode_batch
    calls = {"n": 0}

    def stop_in_the_captions(modality, batch):
        calls["n"] += 1
        if modality == "text" and calls["n"] > 5:
            raise KeyboardInterrupt
        return encode(modality, batch)

    encoder.encode_batch = stop_in_the_captions
    with pytest.raises(KeyboardInterrupt):
        extract(
            out,
            images=image_data.images,
            captions=image_data.captions,
            encoder=encoder,
            batch_size=BATCH,
            workers=0,
            quiet=True,
        )
    stopped = EmbeddingStore.open(out, allow_incomplete=True)
    assert not stopped.complete and 0 < stopped.rows_written("text") < image_data.n_captions
    result = cli("extract", *args, "-o", out)
    assert f"Resumed after {image_data.n_good} image" in result.stdout
    assert_same_store(out, reference)


def test_moved_folder_resumes_and_other_weights_are_refused(folders, image_data, tmp_path, cli):
    """The identity holds the folder's content, not its path."""
    out = tmp_path / "store"
    common = ["--images", image_data.images, "--encoder", "hf", "--device", "cpu", "-q"]
    cli("extract", *common, "--model", folders["clip"], "-o", out)
    moved = shutil.copytree(folders["clip"], tmp_path / "elsewhere" / "renamed")
    result = cli("extract", *common, "--model", moved, "-o", out)
    assert "already complete" in result.stdout

    other = clip_folder(tmp_path / "other-weights", seed=1)
    result = cli("extract", *common, "--model", other, "-o", out, expect=2)
    assert "different arguments (the weights" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

    tokenizer = json.loads((moved / "tokenizer_config.json").read_text())
    tokenizer["model_max_length"] = 8  # captions cut shorter: other embeddings
    (moved / "tokenizer_config.json").write_text(json.dumps(tokenizer))
    result = cli("extract", *common, "--model", moved, "-o", out, expect=2)
    assert "the tokenizer / feature extractor files" in result.stderr


def test_clap_through_extract(folders, encoders, audio_data, tmp_path, cli):
    out = tmp_path / "audio"
    cli(
        "extract",
        "--audio",
        audio_data.audio,
        "--captions",
        audio_data.captions,
        "--encoder",
        "hf",
        "--model",
        folders["clap"],
        "--device",
        "cpu",
        "-q",
        "-o",
        out,
    )
    store = EmbeddingStore.open(out)
    assert (
        store.info("audio")["rows"] == audio_data.n_good
        and store.info("text")["rows"] == audio_data.n_captions
    )
    assert store.encoder["model_type"] == "clap" and store.encoder["model_class"] == "ClapModel"
    files = [audio_data.audio / item["source"] for item in store.items("audio")]
    np.testing.assert_allclose(
        store.embeddings("audio"), encoders["clap"].encode_audio(files), rtol=1e-5, atol=1e-5
    )


def test_bf16_autocast_keeps_fp32_weights(folders, encoders):
    enc = load_encoder("hf", model=str(folders["clip"]), device="cpu", precision="bf16")
    assert next(enc.model.parameters()).dtype == torch.float32
    assert enc.identity()["precision"] == "bf16"
    low, full = enc.encode_texts(CAPTIONS), encoders["clip"].encode_texts(CAPTIONS)
    assert low.dtype == np.float32 and not np.array_equal(low, full)
    np.testing.assert_allclose(low, full, rtol=0.1, atol=0.1)


def test_hub_name_loads_from_the_hub_cache(folders, encoders, tmp_path, monkeypatch):
    """A hub name goes through huggingface_hub's snapshot resolution: offline, the cached
    snapshot; the identity names the repo and holds the same hashes as the folder's."""
    import huggingface_hub.constants as hub

    snapshot = hub_cache(tmp_path / "cache", "gapscope-test/tiny-clip", folders["clip"], "ab" * 20)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "cache"))
    enc = load_encoder("hf", model="gapscope-test/tiny-clip", device="cpu")
    np.testing.assert_array_equal(
        enc.encode_texts(CAPTIONS), encoders["clip"].encode_texts(CAPTIONS)
    )
    local = encoders["clip"].identity()
    assert enc.identity() == {**local, "model": "gapscope-test/tiny-clip"}
    description = enc.description()
    assert description["source"] == "hub" and description["revision"] == "ab" * 20
    assert description["folder"] == str(snapshot.resolve())

    with pytest.raises(GapscopeError) as info:
        load_encoder("hf", model="gapscope-test/not-cached", device="cpu")
    message = str(info.value)
    assert "could not load it from the hub" in message and "--model DIR" in message
    assert "\n" not in message


def _remove(name):
    return lambda folder: (folder / name).unlink()


def _model_type(value):
    def edit(folder):
        config = json.loads((folder / "config.json").read_text())
        config["model_type"] = value
        (folder / "config.json").write_text(json.dumps(config))

    return edit


def _drop_a_tensor(folder):
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / "model.safetensors"))
    state.pop("visual_projection.weight")
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _truncate_weights(folder):
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (_remove("model.safetensors"), "no weights file"),
        (_remove("config.json"), "no config.json"),
        (_remove("tokenizer.json"), "no tokenizer files"),
        (_remove("preprocessor_config.json"), "no image processor config"),
        (_model_type("blip"), "model_type 'blip' is not supported by --encoder hf"),
        (_drop_a_tensor, "weights do not fit its config.json"),
        (_truncate_weights, "could not load it as a CLIPModel"),
    ],
)
def test_broken_folders_are_one_line(folders, tmp_path, edit, fragment):
    folder = shutil.copytree(folders["clip"], tmp_path / "model")
    edit(folder)
    with pytest.raises(GapscopeError, match=fragment) as info:
        load_encoder("hf", model=str(folder), device="cpu")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({}, "--encoder hf needs --model"),
        ({"model": "./no/such/folder"}, "folder not found"),
        ({"model": "CLIP", "pretrained": "x.pt"}, "--pretrained cannot be combined"),
        ({"model": "CLIP", "model_config": "c.json"}, "--model-config cannot be combined"),
    ],
)
def test_bad_arguments(kwargs, fragment):
    with pytest.raises(GapscopeError, match=fragment):
        load_encoder("hf", device="cpu", **kwargs)


def test_a_file_as_model(tmp_path):
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"")
    with pytest.raises(GapscopeError, match="a file; pass a model folder"):
        load_encoder("hf", model=str(file), device="cpu")


def test_missing_transformers_names_the_extra(monkeypatch, image_data, tmp_path, cli):
    monkeypatch.setitem(sys.modules, "transformers", None)  # "import transformers" now fails
    with pytest.raises(
        GapscopeError, match=r"transformers, needed for the hf encoder.*gapscope\[hf\]"
    ):
        load_encoder("hf", model="openai/clip-vit-base-patch32", device="cpu")
    result = cli(
        "extract",
        "--images",
        image_data.images,
        "--encoder",
        "hf",
        "--model",
        "m",
        "-o",
        tmp_path / "s",
        "-q",
        expect=2,
    )
    assert result.stderr.strip() == (
        "Error: transformers, needed for the hf encoder, is not installed: "
        "pip install 'gapscope[hf]'"
    )


def test_a_tokenizer_without_its_package_names_the_extra(folders, monkeypatch):
    import transformers

    def no_sentencepiece(*args, **kwargs):
        raise ImportError(
            "SiglipTokenizer requires the SentencePiece library but it was not found in your "
            "environment. Check out the instructions on the\ninstallation page"
        )

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", no_sentencepiece)
    with pytest.raises(GapscopeError) as info:
        load_encoder("hf", model=str(folders["siglip"]), device="cpu")
    assert str(info.value) == (
        f"--model {folders['siglip']}: its tokenizer needs a package that is not installed "
        "(SiglipTokenizer requires the SentencePiece library but it was not found "
        "in your environment): pip install 'gapscope[hf]'"
    )
