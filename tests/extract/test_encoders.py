"""Encoders: raw outputs, local checkpoint round trips, JSON model configs, clear errors.

A checkpoint that a test saves and loads back by path must give exactly the embeddings of the
in-memory model it came from.
"""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from gapscope.data.store import EmbeddingStore
from gapscope.errors import GapscopeError
from gapscope.extract import TINY_CLAP, TINY_OPEN_CLIP, extract, load_encoder
from gapscope.extract.tiny_models import tiny_clap_dir, tiny_open_clip_config

CAPTIONS = ["a red square", "two dogs on a beach", "an empty room"]


def _images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)) for _ in range(3)]


def _clips():
    t = np.arange(12000) / 24000
    return [(np.sin(2 * np.pi * f * t), 24000) for f in (300, 700, 1500)]


@pytest.fixture(scope="module")
def clip_encoder():
    return load_encoder("open_clip", model=TINY_OPEN_CLIP, device="cpu", seed=3)


@pytest.fixture(scope="module")
def clap_encoder():
    return load_encoder("clap", model=TINY_CLAP, device="cpu", seed=3)


def test_open_clip_raw_outputs(clip_encoder):
    images = clip_encoder.encode_images(_images())
    texts = clip_encoder.encode_texts(CAPTIONS)
    assert images.shape == texts.shape == (3, 32)
    assert images.dtype == np.float32
    expected = (
        clip_encoder.model.encode_image(
            torch.stack([clip_encoder.preprocessor("image").load(i) for i in _images()]),
            normalize=False,
        )
        .detach()
        .numpy()
    )
    # Not bit-equal: inference mode may pick other (fused) kernels than grad mode.
    np.testing.assert_allclose(images, expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(np.linalg.norm(images, axis=1), 1)
    assert clip_encoder.normalized("image") is False
    with pytest.raises(GapscopeError, match="not audio"):
        clip_encoder.encode_audio(_clips())


def test_seeded_random_weights_are_reproducible(clip_encoder):
    again = load_encoder("open_clip", model=TINY_OPEN_CLIP, device="cpu", seed=3)
    other = load_encoder("open_clip", model=TINY_OPEN_CLIP, device="cpu", seed=4)
    np.testing.assert_array_equal(again.encode_texts(CAPTIONS), clip_encoder.encode_texts(CAPTIONS))
    assert not np.allclose(other.encode_texts(CAPTIONS), clip_encoder.encode_texts(CAPTIONS))
    assert torch.initial_seed() is not None  # the global RNG is left alone (fork_rng)


@pytest.mark.parametrize("form", ["state_dict.pt", "module_prefix.pt", "weights.safetensors"])
def test_open_clip_checkpoint_round_trip(clip_encoder, tmp_path, form):
    state = {k: v.clone() for k, v in clip_encoder.model.state_dict().items()}
    path = tmp_path / form
    if form == "module_prefix.pt":
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    elif form.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    loaded = load_encoder("open_clip", model=TINY_OPEN_CLIP, pretrained=str(path), device="cpu")
    np.testing.assert_array_equal(
        loaded.encode_images(_images()), clip_encoder.encode_images(_images())
    )
    np.testing.assert_array_equal(
        loaded.encode_texts(CAPTIONS), clip_encoder.encode_texts(CAPTIONS)
    )
    desc = loaded.description()
    assert desc["weights"] == "pretrained" and desc["random_init_seed"] is None
    assert desc["checkpoint"] == str(path.resolve())
    import hashlib

    assert desc["checkpoint_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_checkpoint_through_extract_and_model_config(clip_encoder, image_data, tmp_path, cli):
    """A custom architecture from --model-config plus a checkpoint file, through the CLI."""
    config = tmp_path / "my-arch.json"
    config.write_text(json.dumps(tiny_open_clip_config()))
    ckpt = tmp_path / "my.pt"
    torch.save(clip_encoder.model.state_dict(), ckpt)
    out = tmp_path / "store"
    cli(
        "extract",
        "--images",
        image_data.images,
        "--model-config",
        config,
        "--pretrained",
        ckpt,
        "--device",
        "cpu",
        "-q",
        "-o",
        out,
    )
    store = EmbeddingStore.open(out)
    assert store.encoder["model"] == "my-arch"
    assert store.encoder["model_config"] == str(config.resolve())
    first = store.items("image")[0]["source"]
    expected = clip_encoder.encode_images([image_data.images / first])
    np.testing.assert_allclose(store.embeddings("image")[:1], expected, rtol=1e-5, atol=1e-6)


def test_hub_style_config_file_is_accepted(tmp_path):
    config = tmp_path / "open_clip_config.json"
    config.write_text(json.dumps({"model_cfg": tiny_open_clip_config(), "preprocess_cfg": {}}))
    enc = load_encoder("open_clip", model_config=config, device="cpu")
    assert enc.embedding_dim == 32 and enc.description()["model"] == "open_clip_config"


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"model": "ViT-Nope-99"}, "unknown open_clip model"),
        ({"model": TINY_OPEN_CLIP, "pretrained": "no_such_tag"}, "neither a file nor a hub tag"),
        ({"model": TINY_OPEN_CLIP, "pretrained": "missing/ckpt.pt"}, "checkpoint file not found"),
        ({"model_config": "/nonexistent/cfg.json"}, "file not found"),
        ({"model": TINY_OPEN_CLIP, "precision": "fp8"}, "unknown precision"),
        ({"model": TINY_OPEN_CLIP, "device": "tpu"}, "unknown device"),
    ],
)
def test_open_clip_bad_arguments(kwargs, fragment):
    with pytest.raises(GapscopeError, match=fragment):
        load_encoder("open_clip", device=kwargs.pop("device", "cpu"), **kwargs)


def test_mismatched_checkpoint(tmp_path):
    path = tmp_path / "wrong.pt"
    torch.save({"visual.nothing": torch.zeros(3)}, path)
    with pytest.raises(GapscopeError, match="does not fit model"):
        load_encoder("open_clip", model=TINY_OPEN_CLIP, pretrained=str(path), device="cpu")


def test_unreachable_hub_gives_one_line_and_suggests_a_path(monkeypatch):
    import open_clip

    def offline(*args, **kwargs):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(open_clip, "download_pretrained", offline)
    with pytest.raises(GapscopeError) as info:
        load_encoder("open_clip", model="ViT-B-32", pretrained="laion2b_s34b_b79k", device="cpu")
    message = str(info.value)
    assert "could not download" in message and "--pretrained PATH" in message
    assert "\n" not in message


def test_unreachable_hub_for_real_offline(monkeypatch):
    """With the hub switched off (as it is here), loading a tag fails fast and clearly."""
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    with pytest.raises(GapscopeError, match="could not download.*--pretrained PATH"):
        load_encoder("open_clip", model="ViT-B-32", pretrained="laion2b_s34b_b79k", device="cpu")


def test_clap_raw_outputs(clap_encoder):
    audio = clap_encoder.encode_audio(_clips())
    texts = clap_encoder.encode_texts(CAPTIONS)
    assert audio.shape == texts.shape == (3, 32)
    assert not np.allclose(np.linalg.norm(audio, axis=1), 1)
    assert clap_encoder.normalized("audio") is False
    # Equal to the towers' projections that transformers' get_*_features would then normalise.
    model = clap_encoder.model
    batch = clap_encoder.preprocessor("text").collate(CAPTIONS)
    with torch.no_grad():
        normalised = model.get_text_features(**batch)
    normalised = getattr(normalised, "pooler_output", normalised).numpy()
    np.testing.assert_allclose(
        texts / np.linalg.norm(texts, axis=1, keepdims=True), normalised, rtol=1e-5, atol=1e-6
    )


def test_clap_local_folder_and_state_dict_round_trip(clap_encoder, tmp_path):
    folder = tmp_path / "my-clap"
    clap_encoder.model.save_pretrained(folder)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "preprocessor_config.json"):
        shutil.copy(tiny_clap_dir() / name, folder / name)
    from_folder = load_encoder("clap", model=str(folder), device="cpu")
    np.testing.assert_array_equal(
        from_folder.encode_audio(_clips()), clap_encoder.encode_audio(_clips())
    )
    np.testing.assert_array_equal(
        from_folder.encode_texts(CAPTIONS), clap_encoder.encode_texts(CAPTIONS)
    )
    assert from_folder.description()["checkpoint_sha256"] is not None

    state = tmp_path / "clap.pt"
    torch.save(clap_encoder.model.state_dict(), state)
    from_state = load_encoder("clap", model=TINY_CLAP, pretrained=str(state), device="cpu")
    np.testing.assert_array_equal(
        from_state.encode_texts(CAPTIONS), clap_encoder.encode_texts(CAPTIONS)
    )
    assert from_state.description()["weights"] == "pretrained"


def test_clap_folder_without_tokenizer_is_refused(clap_encoder, tmp_path):
    folder = tmp_path / "no-tokenizer"
    clap_encoder.model.save_pretrained(folder)
    with pytest.raises(GapscopeError, match="no tokenizer files"):
        load_encoder("clap", model=str(folder), device="cpu")


def test_clap_unreachable_hub(monkeypatch):
    from transformers import ClapModel

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(ClapModel, "from_pretrained", offline)
    with pytest.raises(GapscopeError, match="from the hub.*--model DIR"):
        load_encoder("clap", model="laion/clap-htsat-unfused", device="cpu")


def test_preprocessors_are_picklable(clip_encoder, clap_encoder):
    """They travel to DataLoader worker processes."""
    for enc in (clip_encoder, clap_encoder):
        for modality in enc.modalities:
            pickle.loads(pickle.dumps(enc.preprocessor(modality)))


def test_bf16_on_cpu(image_data, tmp_path):
    summary = extract(
        tmp_path / "bf16",
        images=image_data.images,
        model=TINY_OPEN_CLIP,
        device="cpu",
        precision="bf16",
        quiet=True,
        workers=0,
    )
    store = EmbeddingStore.open(summary.store)
    assert store.embeddings("image").dtype == np.float32
    assert store.encoder["precision"] == "bf16"
    assert np.isfinite(store.embeddings("image")).all()


def test_wrong_encoder_for_the_modality(audio_data, tmp_path):
    with pytest.raises(GapscopeError, match="cannot encode audio"):
        extract(
            tmp_path / "x",
            audio=audio_data.audio,
            encoder="open_clip",
            model=TINY_OPEN_CLIP,
            device="cpu",
            quiet=True,
        )


def test_missing_audio_extra_is_explained(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "transformers", None)  # "import transformers" now fails
    with pytest.raises(GapscopeError, match=r"pip install 'gapscope\[audio\]'"):
        load_encoder("clap", model=TINY_CLAP, device="cpu")
    monkeypatch.setitem(sys.modules, "soundfile", None)
    from gapscope.extract.audio import read_audio

    with pytest.raises(GapscopeError, match=r"gapscope\[audio\]"):
        read_audio("any.wav")
