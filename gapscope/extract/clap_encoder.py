"""CLAP (contrastive language-audio pretraining) as a gapscope audio/text :class:`Encoder`.

Uses transformers' ``ClapModel`` (e.g. ``laion/clap-htsat-unfused``), loaded from the hub or
from a local folder written by ``save_pretrained``; or built from a ``ClapConfig`` JSON
(``--model-config``) with random, seeded weights or a state dict given by ``--pretrained``.
Audio is read with soundfile, made mono, resampled to the feature extractor's rate with scipy
and cut or repeat-padded to its clip length before the log-mel features are computed.

Embeddings are the raw projections (``audio_projection`` / ``text_projection`` of the towers'
pooled outputs): recent transformers' ``get_*_features`` L2-normalise them, which would hide
the norms that MIR needs, so gapscope calls the towers itself.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gapscope.data.embedding_set import load_failure, load_weights_only
from gapscope.engine.devices import EXTRACTION_ACCELERATORS, resolve_device
from gapscope.errors import GapscopeError
from gapscope.extract.audio import (
    fit_length,
    load_clip,
    require_scipy,
    require_soundfile,
    resample,
)
from gapscope.extract.checksums import sha256_file, sha256_files
from gapscope.extract.devices import autocast_dtype
from gapscope.extract.encoder import (
    Encoder,
    Preprocessor,
    check_tokenizer_fits,
    first_line,
    quiet_hub_retries,
)
from gapscope.extract.tiny_models import TINY_CLAP, tiny_clap_dir
from gapscope.extras import require

DEFAULT_CLAP = "laion/clap-htsat-unfused"
_TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
)
_FEATURE_FILES = ("preprocessor_config.json", "processor_config.json")
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")


def require_transformers() -> Any:
    """Import transformers, or say how to install the audio extra."""
    return require("transformers", "the CLAP encoder")


class ClapAudioPreprocessor(Preprocessor):
    """File (or ``(waveform, rate)``) -> mono, resampled, fixed-length clip -> log-mel features."""

    def __init__(self, feature_extractor: Any, truncation: str) -> None:
        self.feature_extractor = feature_extractor
        self.rate = int(feature_extractor.sampling_rate)
        self.length = int(feature_extractor.nb_max_samples)
        self.truncation = truncation

    def load(self, source: Any) -> np.ndarray:
        if isinstance(source, tuple):
            wave, rate = source
            wave = fit_length(
                resample(np.asarray(wave, np.float32), int(rate), self.rate), self.length
            )
        else:
            wave = load_clip(source, self.rate, self.length)
        features = self.feature_extractor(
            wave,
            sampling_rate=self.rate,
            truncation=self.truncation,
            padding="repeatpad",
            return_tensors="np",
        )["input_features"][0]
        return np.asarray(features, dtype=np.float32)

    def collate(self, samples: list[np.ndarray]) -> dict[str, torch.Tensor]:
        features = torch.from_numpy(np.stack(samples))
        # Every clip was cut to the clip length, so none is "longer"; the feature extractor
        # would otherwise mark a random clip of each batch as longer for fused models.
        is_longer = torch.zeros((len(samples), 1), dtype=torch.bool)
        return {"input_features": features, "is_longer": is_longer}


class ClapTextPreprocessor(Preprocessor):
    """Tokenize captions with the CLAP tokenizer (padded to the batch's longest caption)."""

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def load(self, source: Any) -> str:
        return str(source)

    def collate(self, samples: list[str]) -> dict[str, torch.Tensor]:
        encoded = self.tokenizer(
            samples, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


class ClapEncoder(Encoder):
    """A ``ClapModel``'s audio and text towers with their projections (raw, not normalised)."""

    family = "clap"
    modalities = ("audio", "text")

    def __init__(self, model: Any, feature_extractor: Any, tokenizer: Any, **kwargs: Any):
        super().__init__(**kwargs)
        self.model = model
        fusion = bool(getattr(model.config.audio_config, "enable_fusion", False))
        self._audio = ClapAudioPreprocessor(feature_extractor, "fusion" if fusion else "rand_trunc")
        self._text = ClapTextPreprocessor(tokenizer, max_text_tokens(model, tokenizer))

    def preprocessor(self, modality: str) -> Preprocessor:
        self.check_modality(modality)
        return self._audio if modality == "audio" else self._text

    def _forward(self, modality: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if modality == "audio":
            pooled = self.model.audio_model(**batch, return_dict=True).pooler_output
            return self.model.audio_projection(pooled)
        pooled = self.model.text_model(**batch, return_dict=True).pooler_output
        return self.model.text_projection(pooled)


def load_clap(
    model: str | None = None,
    *,
    pretrained: str | os.PathLike[str] | None = None,
    model_config: str | os.PathLike[str] | None = None,
    device: str = "auto",
    precision: str = "fp32",
    seed: int = 0,
) -> ClapEncoder:
    """Build a CLAP encoder.

    Args:
        model: a hub name (``laion/clap-htsat-unfused``, the default), a local folder written by
            ``ClapModel.save_pretrained`` + ``ClapProcessor.save_pretrained``, or
            ``gapscope-tiny-clap`` (bundled, random weights).
        pretrained: a local weights file (``.safetensors``, ``.bin``, ``.pt`` state dict)
            loaded into the model instead of the weights that come with ``model``.
        model_config: a local ``ClapConfig`` JSON; builds the architecture without the hub,
            with random weights drawn with ``seed`` unless ``pretrained`` is given. The
            tokenizer and feature extractor files are read from ``model`` when it is a folder,
            else from the config's folder.
        device, precision, seed: as for :func:`gapscope.extract.load_open_clip`.

    Raises:
        GapscopeError: missing extra, unreachable hub, missing tokenizer, mismatched weights.
    """
    transformers = require_transformers()
    # Fail here, once, rather than in every decoding worker (where it would read as skips).
    require_soundfile()
    require_scipy()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch_device = resolve_device(device, accelerators=EXTRACTION_ACCELERATORS)
    dtype = autocast_dtype(torch_device, precision)

    if model == TINY_CLAP and model_config is None:
        model_config = tiny_clap_dir() / "config.json"
    display = model or (Path(model_config).stem if model_config else DEFAULT_CLAP)
    if model_config is not None:
        config_path = Path(model_config)
        processor_source = (
            str(model)
            if model and Path(model).is_dir() and model != TINY_CLAP
            else str(config_path.parent)
        )
        if model == TINY_CLAP:
            display = TINY_CLAP
        clap, config_sha = _build_from_config(config_path, seed)
        base_sha = None
    else:
        name = model or DEFAULT_CLAP
        processor_source = name
        clap, base_sha = _from_pretrained(name)
        config_sha = None
    weights_sha = base_sha
    weights_path = None
    if pretrained is not None:
        weights_path = Path(pretrained)
        _load_weights(clap, weights_path)
        weights_sha = sha256_file(weights_path)

    feature_extractor, tokenizer, processor_sha = _load_processor(processor_source, clap)
    clap = clap.to(torch_device).eval()
    audio_cfg = clap.config.audio_config
    embedding_dim = int(clap.config.projection_dim)
    random_init = weights_sha is None
    identity = {
        "family": "clap",
        "model": display,
        "checkpoint_sha256": weights_sha,
        "model_config_sha256": config_sha,
        "processor_sha256": processor_sha,
        "random_init_seed": seed if random_init else None,
        "precision": precision,
    }
    description = {
        **identity,
        "checkpoint": str(weights_path.resolve()) if weights_path else None,
        "model_config": str(Path(model_config).resolve()) if model_config else None,
        "weights": f"random (seed {seed})" if random_init else "pretrained",
        "embedding_dim": embedding_dim,
        "preprocessing": {
            "sampling_rate": int(feature_extractor.sampling_rate),
            "clip_samples": int(feature_extractor.nb_max_samples),
            "clip_seconds": feature_extractor.nb_max_samples / feature_extractor.sampling_rate,
            "mel_bins": int(feature_extractor.feature_size),
            "fusion": bool(getattr(audio_cfg, "enable_fusion", False)),
            "cut": "start",
            "padding": "repeatpad",
            "mono": "mean of channels",
            "resampler": "scipy.signal.resample_poly",
            "tokenizer": type(tokenizer).__name__,
            "max_text_tokens": max_text_tokens(clap, tokenizer),
        },
        "transformers_version": transformers.__version__,
    }
    return ClapEncoder(
        clap,
        feature_extractor,
        tokenizer,
        device=torch_device,
        autocast_dtype=dtype,
        embedding_dim=embedding_dim,
        description=description,
        identity=identity,
    )


def _build_from_config(path: Path, seed: int) -> tuple[Any, str]:
    require_transformers()
    from transformers import ClapConfig, ClapModel

    if not path.is_file():
        raise GapscopeError(f"--model-config {path}: file not found")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict) or raw.get("model_type", "clap") != "clap":
            raise ValueError("model_type is not 'clap'")
        config = ClapConfig.from_dict(raw)
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise GapscopeError(
            f"--model-config {path}: not a CLAP config ({first_line(exc)})"
        ) from None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # random weights are reproducible, so a resume gets the same
        clap = ClapModel(config)
    return clap, sha256_file(path)


def _from_pretrained(name: str) -> tuple[Any, str | None]:
    require_transformers()
    from transformers import ClapModel

    folder = Path(name).expanduser()
    if folder.is_dir():
        weights = sorted(p for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES)
        if not weights:
            raise GapscopeError(f"--model {name}: no weights file (model.safetensors) in it")
        try:
            clap = ClapModel.from_pretrained(folder)
        except (OSError, ValueError, RuntimeError) as exc:
            raise GapscopeError(
                f"--model {name}: not a CLAP model folder ({first_line(exc)})"
            ) from None
        return clap, sha256_files(weights)
    # A hub name is "org/repo"; anything else that looks like a path is a missing folder.
    if name.startswith((".", "~", "/")) or name.count("/") > 1:
        raise GapscopeError(f"--model {name}: folder not found")
    try:
        with quiet_hub_retries():
            clap = ClapModel.from_pretrained(name)
    except OSError as exc:
        raise GapscopeError(
            f"could not load CLAP model {name!r} from the hub ({first_line(exc)}); without "
            "network access, save it elsewhere with ClapModel/ClapProcessor.save_pretrained(DIR) "
            "and pass --model DIR"
        ) from None
    return clap, _cached_hub_weights_sha(name)


def _cached_hub_weights_sha(name: str) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in _WEIGHT_FILES:
        path = try_to_load_from_cache(name, filename)
        if isinstance(path, str) and Path(path).is_file():
            return sha256_file(path)
    return None


def _load_weights(clap: Any, path: Path) -> None:
    if not path.is_file():
        raise GapscopeError(f"--pretrained {path}: checkpoint file not found")
    if path.suffix == ".safetensors":  # outside the try: a missing package is not a bad file
        require("safetensors", "reading .safetensors checkpoints")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = load_weights_only(path)
    except Exception as exc:  # torch and safetensors raise many types for a bad file
        raise GapscopeError(
            f"--pretrained {path}: not a readable checkpoint ({load_failure(exc)})"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise GapscopeError(f"--pretrained {path}: not a state dict")
    state = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()}
    try:
        clap.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise GapscopeError(
            f"checkpoint {path} does not fit the CLAP model: {first_line(exc)}"
        ) from None


def _load_processor(source: str, clap: Any) -> tuple[Any, Any, str | None]:
    require_transformers()
    from transformers import AutoTokenizer, ClapFeatureExtractor

    folder = Path(source).expanduser()
    digest = None
    if folder.is_dir():
        if not any((folder / f).is_file() for f in _TOKENIZER_FILES):
            raise GapscopeError(
                f"{folder}: no tokenizer files (save them with ClapProcessor.save_pretrained)"
            )
        if not any((folder / f).is_file() for f in _FEATURE_FILES):
            raise GapscopeError(
                f"{folder}: no feature extractor config (preprocessor_config.json; save it with "
                "ClapProcessor.save_pretrained)"
            )
        files = sorted(
            p
            for p in folder.iterdir()
            if p.name in _TOKENIZER_FILES + _FEATURE_FILES
            or p.name in ("merges.txt", "tokenizer_config.json", "special_tokens_map.json")
        )
        digest = sha256_files(files)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        feature_extractor = ClapFeatureExtractor.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise GapscopeError(
            f"could not load the CLAP tokenizer / feature extractor from {source} "
            f"({first_line(exc)})"
        ) from None
    check_tokenizer_fits(
        tokenizer,
        clap.config.text_config,
        f"the tokenizer from {source}",
        tower="the model's text tower",
    )
    return feature_extractor, tokenizer, digest


def max_text_tokens(clap: Any, tokenizer: Any) -> int:
    """The most tokens a caption keeps: the tokenizer's limit within the text tower's."""
    # RoBERTa positions start after the padding index, hence the 2 positions kept back.
    limit = int(clap.config.text_config.max_position_embeddings) - 2
    model_max = getattr(tokenizer, "model_max_length", limit) or limit
    return int(min(limit, model_max))
