"""``gapscope extract`` without pretrained weights says so in one line on stderr (exit 0),
except for the bundled tiny models, which are random by design."""

from __future__ import annotations

import json

import pytest

from gapscope.cli.extract import _warn_random_weights
from gapscope.extract.tiny_models import TINY_CLAP, TINY_OPEN_CLIP, tiny_open_clip_config

WARNING = (
    "warning: {name} got random weights (seed {seed}; no --pretrained), so its embeddings "
    "carry no meaning: give --pretrained a hub tag or a checkpoint file"
)


@pytest.mark.parametrize(
    ("encoder", "warned"),
    [
        ({"family": "open_clip", "model": "ViT-B-32", "random_init_seed": 0}, "ViT-B-32"),
        ({"family": "clap", "model": "my-clap", "random_init_seed": 3}, "my-clap"),
        ({"family": "myenc", "random_init_seed": 5}, "myenc"),  # a plugin's, by its family
        ({"family": "open_clip", "model": "ViT-B-32", "pretrained": "openai"}, None),
        ({"family": "open_clip", "model": "ViT-B-32", "random_init_seed": None}, None),
        ({"family": "hf", "model": "openai/clip-vit-base-patch32"}, None),
        ({"family": "open_clip", "model": TINY_OPEN_CLIP, "random_init_seed": 0}, None),
        ({"family": "clap", "model": TINY_CLAP, "random_init_seed": 0}, None),
    ],
)
def test_one_warning_line_for_random_weights(encoder, warned, capsys):
    _warn_random_weights(encoder)
    captured = capsys.readouterr()
    assert captured.out == ""
    if warned is None:
        assert captured.err == ""
    else:
        seed = encoder["random_init_seed"]
        assert captured.err == WARNING.format(name=warned, seed=seed) + "\n"


def test_extract_warns_in_one_line_and_succeeds(image_data, tmp_path, cli):
    config = tmp_path / "my-arch.json"  # the tiny architecture under a name of its own
    config.write_text(json.dumps(tiny_open_clip_config()))
    common = ["--images", image_data.images, "--device", "cpu", "--workers", "0", "-q"]
    result = cli("extract", *common, "--model-config", config, "-o", tmp_path / "s1")
    assert result.stderr.splitlines() == [WARNING.format(name="my-arch", seed=0)]
    tiny = cli("extract", *common, "--model", TINY_OPEN_CLIP, "-o", tmp_path / "s2")
    assert "warning:" not in tiny.stderr
