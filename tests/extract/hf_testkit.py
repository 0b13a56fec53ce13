"""Tiny, randomly initialised transformers models saved as local folders, built offline.

Each folder is what ``model.save_pretrained(DIR)`` plus ``processor.save_pretrained(DIR)``
write for a real hub model, only small: a CLIP (byte-level BPE tokenizer built from a vocabulary
written here, no merges), a SigLIP (a SentencePiece model trained here on a few sentences) and
a CLAP (gapscope's tiny CLAP config and tokenizer files). Nothing is downloaded.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import torch

from gapscope.extract.tiny_models import _bytes_to_unicode, tiny_clap_dir

SENTENCES = [
    "a photo of a cat",
    "two dogs on a beach",
    "an empty room with a red chair",
    "the quick brown fox jumps over the lazy dog",
    "tone clip noise sound picture variant number",
]


def clip_folder(folder: Path, seed: int = 0) -> Path:
    """A CLIPModel (embedding dim 16, 32x32 images, 16 text tokens) with its processor."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    chars = _bytes_to_unicode()
    vocab = {chars[b]: b for b in range(256)}
    vocab.update({chars[b] + "</w>": 256 + b for b in range(256)})
    vocab.update({"<|startoftext|>": 512, "<|endoftext|>": 513})
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab),
            max_position_embeddings=16,
            bos_token_id=512,
            eos_token_id=513,
            pad_token_id=513,
            **small,
        ),
        vision_config=dict(image_size=32, patch_size=8, **small),
        projection_dim=16,
    )
    _save(CLIPModel, config, folder, seed)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(folder)
    return folder


def siglip_folder(folder: Path, seed: int = 0) -> Path:
    """A SiglipModel (embedding dim 32, 32x32 images, 16 text tokens) with its processor."""
    import sentencepiece
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(SENTENCES * 4),
        model_writer=model,
        vocab_size=60,
        model_type="unigram",
        character_coverage=1.0,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        minloglevel=2,
        num_threads=1,
    )
    spiece = folder / "spiece.model"
    spiece.write_bytes(model.getvalue())
    tokenizer = SiglipTokenizer(vocab_file=str(spiece), model_max_length=16)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    config = SiglipConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            max_position_embeddings=16,
            bos_token_id=1,
            eos_token_id=1,
            pad_token_id=1,
            **small,
        ),
        vision_config=dict(image_size=32, patch_size=8, **small),
    )
    _save(SiglipModel, config, folder, seed)
    tokenizer.save_pretrained(folder)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def clap_folder(folder: Path, seed: int = 0) -> Path:
    """A ClapModel from gapscope's tiny CLAP config, with its tokenizer and feature extractor."""
    from transformers import ClapConfig, ClapModel

    config = ClapConfig.from_pretrained(tiny_clap_dir())
    _save(ClapModel, config, folder, seed)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "preprocessor_config.json"):
        shutil.copy(tiny_clap_dir() / name, folder / name)
    return folder


def _save(model_class, config, folder: Path, seed: int) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config).eval()
    model.save_pretrained(folder)


def hub_cache(cache: Path, repo: str, folder: Path, commit: str = "0" * 40) -> Path:
    """Lay ``folder`` out as the hub cache holds a downloaded snapshot of ``repo``."""
    org, name = repo.split("/")
    root = cache / f"models--{org}--{name}"
    snapshot = root / "snapshots" / commit
    shutil.copytree(folder, snapshot)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    return snapshot
