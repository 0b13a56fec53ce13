"""The tiny, randomly initialised models that ship with gapscope (no download needed).

They exist so that ``gapscope demo``, the tests and a first try on your own folder run offline in
seconds. Their weights are random (seeded), so their embeddings carry no meaning.

- ``gapscope-tiny-vit``: an open_clip ViT (image + text), embedding dim 32, 32x32 images,
  open_clip's own BPE tokenizer (which ships inside open_clip).
- ``gapscope-tiny-clap``: a transformers ``ClapModel`` (audio + text), embedding dim 32, one-second
  clips at 16 kHz, and a byte-level BPE tokenizer with no merges (one token per byte), which
  is enough to turn any caption into ids without downloading RoBERTa's vocabulary.

The files under ``gapscope/extract/assets/`` are written by :func:`write_tiny_model_assets`;
a test checks that the shipped files equal what it writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TINY_OPEN_CLIP = "gapscope-tiny-vit"
TINY_CLAP = "gapscope-tiny-clap"


def assets_dir() -> Path:
    """The folder that holds the shipped tiny model files."""
    return Path(__file__).resolve().parent / "assets"


def tiny_open_clip_config_path() -> Path:
    """Path of the tiny open_clip model config (open_clip's JSON model config format)."""
    return assets_dir() / f"{TINY_OPEN_CLIP}.json"


def tiny_clap_dir() -> Path:
    """Folder with the tiny CLAP's config, feature-extractor and tokenizer files (no weights)."""
    return assets_dir() / TINY_CLAP


def tiny_open_clip_config() -> dict[str, Any]:
    """open_clip model config of ``gapscope-tiny-vit`` (about 3.4 M parameters, mostly token
    embeddings because it keeps open_clip's 49408-token vocabulary)."""
    return {
        "embed_dim": 32,
        "vision_cfg": {
            "image_size": 32,
            "layers": 2,
            "width": 64,
            "patch_size": 8,
            "head_width": 32,
        },
        "text_cfg": {
            "context_length": 16,
            "vocab_size": 49408,
            "width": 64,
            "heads": 2,
            "layers": 2,
        },
    }


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2's reversible byte -> printable character map, which byte-level BPE vocabularies use.
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def tiny_clap_vocab() -> dict[str, int]:
    """RoBERTa-style byte-level vocabulary: the special tokens plus one token per byte."""
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    byte_chars = _bytes_to_unicode()
    for b in range(256):
        vocab[byte_chars[b]] = len(vocab)
    vocab["<mask>"] = len(vocab)
    return vocab


def tiny_clap_files() -> dict[str, str]:
    """File name -> text of every file in the ``gapscope-tiny-clap`` folder."""
    vocab = tiny_clap_vocab()
    config = {
        "model_type": "clap",
        "projection_dim": 32,
        "text_config": {
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "max_position_embeddings": 72,
        },
        # spec_size must stay 256 (the HTSAT patch layout assumes it); the rest is made small.
        "audio_config": {
            "hidden_size": 128,
            "depths": [1, 1, 1, 1],
            "num_attention_heads": [2, 2, 2, 2],
            "window_size": 8,
            "num_mel_bins": 64,
            "spec_size": 256,
            "patch_size": 4,
            "patch_embeds_hidden_size": 16,
            "enable_fusion": False,
        },
    }
    feature_extractor = {
        "feature_extractor_type": "ClapFeatureExtractor",
        "sampling_rate": 16000,
        "max_length_s": 1,
        "feature_size": 64,
        "hop_length": 160,
        "fft_window_size": 1024,
        "frequency_min": 0,
        "frequency_max": 8000,
        "truncation": "rand_trunc",
        "padding": "repeatpad",
    }
    tokenizer = {"tokenizer_class": "RobertaTokenizer", "model_max_length": 64}
    return {
        "config.json": _dump(config),
        "preprocessor_config.json": _dump(feature_extractor),
        "tokenizer_config.json": _dump(tokenizer),
        "vocab.json": json.dumps(vocab, ensure_ascii=False, sort_keys=True) + "\n",
        # No merges: every byte stays its own token, which any caption can be split into.
        "merges.txt": "#version: 0.2\n",
    }


def _dump(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def write_tiny_model_assets(folder: Path | None = None) -> Path:
    """(Re)write the tiny models' files into ``folder`` (default: the package's assets folder)."""
    folder = Path(folder) if folder is not None else assets_dir()
    (folder / TINY_CLAP).mkdir(parents=True, exist_ok=True)
    (folder / f"{TINY_OPEN_CLIP}.json").write_text(_dump(tiny_open_clip_config()), "utf-8")
    for name, text in tiny_clap_files().items():
        (folder / TINY_CLAP / name).write_text(text, "utf-8")
    return folder


if __name__ == "__main__":  # python -m gapscope.extract.tiny_models
    print(write_tiny_model_assets())
