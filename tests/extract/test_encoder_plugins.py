"""Encoder plugins through the ``gapscope.encoders`` entry points: a package installed beside
gapscope (here a distribution written on disk: a package folder and its ``.dist-info`` with
``entry_points.txt``) adds ``--encoder NAME`` without touching gapscope.

The toy encoder's embeddings are simple enough to compute by hand, so the store is checked
against values derived here, not against the plugin's own code.
"""

from __future__ import annotations

import json
import subprocess
import textwrap

import numpy as np
import pytest
from extract_testkit import PYTHON, REPO, offline_env
from PIL import Image

from gapscope.data.store import EmbeddingStore
from gapscope.extract import load_encoder
from gapscope.extract.extraction import ENCODER_FAMILIES
from gapscope.extract.plugins import encoder_plugins

TOY = textwrap.dedent(
    '''
    """A deterministic toy encoder: mean RGB of an image, letter counts of a caption."""

    import numpy as np
    import torch
    from PIL import Image

    from gapscope.engine.devices import EXTRACTION_ACCELERATORS, resolve_device
    from gapscope.extract import Encoder, Preprocessor
    from gapscope.extract.devices import autocast_dtype


    class Pixels(Preprocessor):
        def load(self, source):
            with Image.open(source) as image:
                rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
            return torch.from_numpy(rgb.reshape(-1, 3).mean(axis=0) / 255)

        def collate(self, samples):
            return torch.stack(samples)


    class Letters(Preprocessor):
        def load(self, source):
            text = str(source)
            return torch.tensor(
                [len(text), text.count("a"), text.count(" ")], dtype=torch.float32
            )

        def collate(self, samples):
            return torch.stack(samples)


    class Toy(Encoder):
        family = "toy"
        modalities = ("image", "text")

        def __init__(self, scale, **kwargs):
            super().__init__(**kwargs)
            self.scale = scale

        def preprocessor(self, modality):
            return Pixels() if modality == "image" else Letters()

        def _forward(self, modality, batch):
            return batch * self.scale + 1


    def load(*, model, pretrained, model_config, device, precision, seed, **kwargs):
        scale = float(model or 1)
        options = dict(model=model, pretrained=pretrained, model_config=model_config,
                       device=device, precision=precision, seed=seed, more=sorted(kwargs))
        torch_device = resolve_device(device, accelerators=EXTRACTION_ACCELERATORS)
        identity = {"family": "toy", "scale": scale, "precision": precision}
        return Toy(
            scale,
            device=torch_device,
            autocast_dtype=autocast_dtype(torch_device, precision),
            embedding_dim=3,
            description={**identity, "options": options},
            identity=identity,
        )


    def not_an_encoder(**kwargs):
        return {"family": "toy"}


    def bad_identity(**kwargs):
        encoder = load(**kwargs)
        encoder._identity = {"scale": 1}
        return encoder


    def refuses(**kwargs):
        from gapscope.errors import GapscopeError

        raise GapscopeError("toy: --model must be a number")


    def crashes(**kwargs):
        raise ZeroDivisionError("a bug in the plugin")
    '''
)

ENTRY_POINTS = """\
[gapscope.encoders]
toy = gapscope_toy_encoder.enc:load
notenc = gapscope_toy_encoder.enc:not_an_encoder
noidentity = gapscope_toy_encoder.enc:bad_identity
refuses = gapscope_toy_encoder.enc:refuses
crashes = gapscope_toy_encoder.enc:crashes
broken = gapscope_toy_encoder.missing:load
clap = gapscope_toy_encoder.enc:load
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A folder holding an installed distribution, as pip would lay it out."""
    root = tmp_path_factory.mktemp("site")
    package = root / "gapscope_toy_encoder"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "enc.py").write_text(TOY)
    info = root / "gapscope_toy_encoder-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: gapscope-toy-encoder\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return root


@pytest.fixture
def installed(site, monkeypatch):
    monkeypatch.syspath_prepend(str(site))
    return site


def _expected(image_data, store):
    """The toy embeddings, computed here from the files and captions."""
    images = []
    for item in store.items("image"):
        with Image.open(image_data.images / item["source"]) as image:
            rgb = np.asarray(image.convert("RGB"), dtype=np.float64) / 255
        images.append(rgb.reshape(-1, 3).mean(axis=0) * 2 + 1)
    texts = [
        [len(t) * 2 + 1, t.count("a") * 2 + 1, t.count(" ") * 2 + 1]
        for t in (item["source"] for item in store.items("text"))
    ]
    return np.array(images), np.array(texts, dtype=np.float64)


def test_a_plugin_extracts_in_a_fresh_process(site, image_data, tmp_path):
    """``gapscope extract --encoder toy`` in a new interpreter that finds the distribution on
    its path, as after ``pip install``."""
    out = tmp_path / "store"
    env = {**offline_env(), "PYTHONPATH": f"{site}:{REPO}"}
    command = [PYTHON, "-m", "gapscope", "extract", "--images", image_data.images]
    command += ["--captions", image_data.captions, "--encoder", "toy", "--model", "2"]
    command += ["--model-config", "cfg.json", "--device", "cpu", "-q", "-o", out]
    result = subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    store = EmbeddingStore.open(out)
    images, texts = _expected(image_data, store)
    assert len(images) == image_data.n_good and len(texts) == image_data.n_captions
    np.testing.assert_allclose(store.embeddings("image"), images, rtol=1e-6)
    np.testing.assert_allclose(store.embeddings("text"), texts, rtol=1e-6)

    identity = {"family": "toy", "scale": 2.0, "precision": "fp32"}
    assert store.manifest["extract"]["encoder"] == identity
    assert store.encoder["plugin"] == {
        "name": "toy",
        "entry_point": "gapscope_toy_encoder.enc:load",
        "distribution": "gapscope-toy-encoder 1.0",
    }
    # The loader got every option as a keyword, in the documented types.
    assert store.encoder["options"] == {
        "model": "2",
        "pretrained": None,
        "model_config": "cfg.json",
        "device": "cpu",
        "precision": "fp32",
        "seed": 0,
        "more": [],
    }


def test_resume_identity_comes_from_the_plugin(installed, image_data, tmp_path, cli):
    out = tmp_path / "store"
    args = ["extract", "--images", image_data.images, "--encoder", "toy", "-q", "-o", out]
    cli(*args, "--model", "2")
    assert "already complete" in cli(*args, "--model", "2").stdout
    result = cli(*args, "--model", "3", expect=2)
    assert "different arguments (encoder.scale: store has 2.0, now 3.0)" in result.stderr


def test_unknown_encoder_lists_builtins_and_plugins(installed, image_data, tmp_path, cli):
    result = cli(
        "extract",
        "--images",
        image_data.images,
        "--encoder",
        "dino",
        "-o",
        tmp_path / "s",
        expect=2,
    )
    assert result.stderr.strip() == (
        "Error: unknown encoder 'dino': available encoders are open_clip, clap, hf, broken, "
        "crashes, noidentity, notenc, refuses, toy"
    )
    assert not (tmp_path / "s").exists()


def test_unknown_encoder_without_plugins(image_data, tmp_path, cli):
    result = cli(
        "extract",
        "--images",
        image_data.images,
        "--encoder",
        "dino",
        "-o",
        tmp_path / "s",
        expect=2,
    )
    assert result.stderr.strip() == (
        "Error: unknown encoder 'dino': available encoders are open_clip, clap, hf"
    )


@pytest.mark.parametrize(
    ("name", "code", "line"),
    [
        (
            "broken",
            2,
            "encoder plugin 'broken' (gapscope_toy_encoder.missing:load) could not be "
            "imported (ModuleNotFoundError: No module named 'gapscope_toy_encoder.missing')",
        ),
        (
            "notenc",
            2,
            "encoder plugin 'notenc' (gapscope_toy_encoder.enc:not_an_encoder) "
            "returned dict, not a gapscope.extract.Encoder",
        ),
        ("noidentity", 2, "its identity has no 'family'"),
        ("refuses", 2, "Error: toy: --model must be a number"),
        (
            "crashes",
            3,
            "encoder plugin 'crashes' (gapscope_toy_encoder.enc:crashes) failed: "
            "ZeroDivisionError: a bug in the plugin",
        ),
    ],
)
def test_a_faulty_plugin_is_one_line(installed, image_data, tmp_path, cli, name, code, line):
    result = cli(
        "extract",
        "--images",
        image_data.images,
        "--encoder",
        name,
        "-o",
        tmp_path / "s",
        expect=code,
    )
    assert line in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_builtin_names_cannot_be_taken(installed, monkeypatch):
    import gapscope.extract.clap_encoder as clap

    assert "clap" not in encoder_plugins(ENCODER_FAMILIES)
    assert set(encoder_plugins(ENCODER_FAMILIES)) >= {"toy", "broken"}
    # --encoder clap is still gapscope's CLAP, whatever a plugin declares.
    monkeypatch.setattr(clap, "load_clap", lambda model, **options: f"built-in {model}")
    assert load_encoder("clap", model="m", device="cpu") == "built-in m"


def test_python_api_takes_the_plugin_name(installed):
    enc = load_encoder("toy", model="0.5", device="cpu")
    texts = enc.encode_texts(["a cat", "banana"])
    np.testing.assert_array_equal(texts, [[3.5, 2.0, 1.5], [4.0, 2.5, 1.0]])
    assert json.loads(json.dumps(enc.description()))["plugin"]["name"] == "toy"
