"""Hugging Face transformers models as a gapscope :class:`Encoder` (``--encoder hf``).

``--model`` names a hub repository (``openai/clip-vit-base-patch32``,
``google/siglip-base-patch16-224``, ``laion/clap-htsat-unfused``) or a local folder written by
``save_pretrained`` (the model and its processor). The model class follows the folder's
``config.json``: ``model_type`` ``clip`` -> ``CLIPModel`` and ``siglip`` -> ``SiglipModel``
(image and text), ``clap`` -> ``ClapModel`` (audio and text). A hub name is first resolved to a
local snapshot (downloaded, or found in the hub cache when offline), so both kinds of ``--model``
load through the same code and are identified by the same content hashes.

Embeddings are the models' projected features, raw (never L2-normalised by gapscope):
``get_image_features`` / ``get_text_features`` for CLIP and SigLIP, and for CLAP the towers'
pooled outputs through ``audio_projection`` / ``text_projection`` (what ``get_*_features``
computes before it normalises, which would hide the norms that MIR needs).

Text follows each model's training: CLIP captions are padded to the batch's longest with an
attention mask (the causal text tower pools at the end token, so padding changes nothing);
SigLIP captions are padded to ``max_length`` and given without an attention mask, as SigLIP was
trained and as its original tokenizer returned them (the model pools the last position, which
is padding for short captions). Images go through the model's own image processor; audio is
read, made mono, resampled and cut as for ``--encoder clap``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from gapscope.engine.devices import EXTRACTION_ACCELERATORS, resolve_device
from gapscope.errors import GapscopeError, MissingDependencyError
from gapscope.extract.checksums import sha256_file, sha256_files
from gapscope.extract.devices import autocast_dtype
from gapscope.extract.encoder import (
    Encoder,
    Preprocessor,
    check_tokenizer_fits,
    first_line,
    quiet_hub_retries,
)
from gapscope.extras import require

#: ``model_type`` in ``config.json`` -> (transformers model class, modalities).
HF_MODEL_TYPES: dict[str, tuple[str, tuple[str, ...]]] = {
    "clip": ("CLIPModel", ("image", "text")),
    "siglip": ("SiglipModel", ("image", "text")),
    "clap": ("ClapModel", ("audio", "text")),
}

# The files transformers reads for these models; a hub snapshot fetches only these (a repo
# often holds the same weights in several formats, and open_clip or TF/Flax copies besides).
_SAFETENSORS = re.compile(r"model(-\d+-of-\d+)?\.safetensors")
_PYTORCH_BIN = re.compile(r"pytorch_model(-\d+-of-\d+)?\.bin")
_PROCESSOR_FILES = (
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "special_tokens_map.json",
    "added_tokens.json",
)
_TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
)
_HUB_FILES = [
    "config.json",
    *_PROCESSOR_FILES,
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
]
_HUB_BIN_FILES = ["pytorch_model.bin", "pytorch_model-*-of-*.bin", "pytorch_model.bin.index.json"]


def require_transformers() -> Any:
    """Import transformers, or say how to install the hf extra."""
    return require("transformers", "the hf encoder", extra="hf")


class HfImagePreprocessor(Preprocessor):
    """Decode an image file (or take a PIL image) and apply the model's image processor."""

    def __init__(self, image_processor: Any) -> None:
        self.image_processor = image_processor

    def load(self, source: Any) -> torch.Tensor:
        require("PIL", "reading images", extra="hf")
        from PIL import Image

        if isinstance(source, Image.Image):
            image = source.convert("RGB")
        else:
            with Image.open(source) as opened:
                opened.load()  # decode now, inside the worker, so a corrupt file fails here
                image = opened.convert("RGB")
        pixels = self.image_processor(images=image, return_tensors="pt")["pixel_values"]
        return torch.as_tensor(pixels[0])

    def collate(self, samples: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"pixel_values": torch.stack(samples)}


class HfTextPreprocessor(Preprocessor):
    """Tokenize captions: ``padding`` ``"longest"`` or ``"max_length"``, truncated to
    ``max_length``; ``keys`` are the tokenizer outputs the model is given."""

    def __init__(
        self, tokenizer: Any, max_length: int, padding: str, keys: tuple[str, ...]
    ) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.padding = padding
        self.keys = keys

    def load(self, source: Any) -> str:
        return str(source)

    def collate(self, samples: list[str]) -> dict[str, torch.Tensor]:
        encoded = self.tokenizer(
            samples,
            padding=self.padding,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {key: encoded[key] for key in self.keys}


class HfEncoder(Encoder):
    """A transformers ``CLIPModel``, ``SiglipModel`` or ``ClapModel`` and its processors; raw
    (unnormalised) projected features."""

    family = "hf"

    def __init__(
        self, model: Any, model_type: str, preprocessors: dict[str, Preprocessor], **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.model_type = model_type
        self.modalities = tuple(preprocessors)
        self._preprocessors = dict(preprocessors)

    def preprocessor(self, modality: str) -> Preprocessor:
        self.check_modality(modality)
        return self._preprocessors[modality]

    def _forward(self, modality: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.model_type == "clap":
            # get_*_features of ClapModel normalise; the raw projection is the embedding.
            if modality == "audio":
                pooled = self.model.audio_model(**batch, return_dict=True).pooler_output
                return self.model.audio_projection(pooled)
            pooled = self.model.text_model(**batch, return_dict=True).pooler_output
            return self.model.text_projection(pooled)
        if modality == "image":
            return pooled_features(self.model.get_image_features(**batch))
        return pooled_features(self.model.get_text_features(**batch))


def pooled_features(output: Any) -> torch.Tensor:
    """The embeddings in what ``get_*_features`` returned: a tensor (transformers 4) or an
    output whose ``pooler_output`` holds them (transformers 5)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def load_hf(
    model: str | None = None,
    *,
    pretrained: str | None = None,
    model_config: Any = None,
    device: str = "auto",
    precision: str = "fp32",
    seed: int = 0,
) -> HfEncoder:
    """Build an encoder from a transformers CLIP, SigLIP or CLAP model.

    Args:
        model: a hub name (``openai/clip-vit-base-patch32``) or a local folder written by
            ``model.save_pretrained(DIR)`` and ``processor.save_pretrained(DIR)``.
        pretrained, model_config: not used by this family (the weights and the config come
            from ``model``); giving either is an error rather than silently ignored.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        precision: ``fp32``, ``fp16`` or ``bf16`` (autocast; weights stay fp32).
        seed: unused (the weights are never random); accepted like every encoder loader's.

    Raises:
        GapscopeError: missing ``--model``, a folder without weights, config or processor
            files, an unsupported ``model_type``, weights that do not fit the config, an
            unreachable hub, or the ``hf`` extra is not installed.
    """
    del seed  # the weights always come from the folder
    transformers = require_transformers()
    model = _check_arguments(model, pretrained, model_config)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch_device = resolve_device(device, accelerators=EXTRACTION_ACCELERATORS)
    dtype = autocast_dtype(torch_device, precision)

    folder, hub = _resolve_folder(model)
    model_type = _model_type(folder, model)
    class_name, modalities = HF_MODEL_TYPES[model_type]
    if "image" in modalities:
        require("PIL", "reading images", extra="hf")
    else:
        _require_audio()
    weight_files = _weight_files(folder, model)
    hf_model = _load_model(folder, class_name, model).to(torch_device).eval()
    preprocessors, preprocessing = _preprocessors(folder, model_type, hf_model, model)
    identity = {
        "family": "hf",
        # A local folder is known by its content (below), not its path, so a moved folder
        # still resumes its stores.
        "model": model if hub else None,
        "model_type": model_type,
        "checkpoint_sha256": sha256_files(weight_files),
        "config_sha256": sha256_file(folder / "config.json"),
        "processor_sha256": sha256_files(_processor_files(folder)),
        "precision": precision,
    }
    description = {
        **identity,
        "model": model if hub else str(folder.resolve()),
        "source": "hub" if hub else "local folder",
        "folder": str(folder.resolve()),
        "revision": folder.name if hub else None,
        "model_class": class_name,
        "weights": "pretrained",
        "weight_files": [p.name for p in weight_files],
        "embedding_dim": _embedding_dim(hf_model, model_type, model),
        "preprocessing": preprocessing,
        "transformers_version": transformers.__version__,
    }
    return HfEncoder(
        hf_model,
        model_type,
        preprocessors,
        device=torch_device,
        autocast_dtype=dtype,
        embedding_dim=description["embedding_dim"],
        description=description,
        identity=identity,
    )


def _check_arguments(model: str | None, pretrained: str | None, model_config: Any) -> str:
    if not model:
        raise GapscopeError(
            "--encoder hf needs --model: a hub name (openai/clip-vit-base-patch32) or a folder "
            "written by save_pretrained"
        )
    if pretrained is not None:
        raise GapscopeError(
            "--pretrained cannot be combined with --encoder hf: the weights come from --model "
            "(a hub name or a save_pretrained folder)"
        )
    if model_config is not None:
        raise GapscopeError(
            "--model-config cannot be combined with --encoder hf: the config comes from "
            "--model (its config.json)"
        )
    return model


def _require_audio() -> None:
    from gapscope.extract.audio import require_scipy, require_soundfile

    # Fail here, once, rather than in every decoding worker (where it would read as skips).
    require_soundfile()
    require_scipy()


def _resolve_folder(name: str) -> tuple[Path, bool]:
    """The local folder behind ``--model``, and whether it came from the hub."""
    folder = Path(name).expanduser()
    if folder.is_dir():
        return folder, False
    if folder.exists():
        raise GapscopeError(f"--model {name}: a file; pass a model folder or a hub name")
    # A hub name is "repo" or "org/repo"; anything else that looks like a path is a missing folder.
    if name.startswith((".", "~", "/")) or name.count("/") > 1 or not name.strip("/"):
        raise GapscopeError(f"--model {name}: folder not found")
    from huggingface_hub import snapshot_download

    try:
        with quiet_hub_retries():
            path = Path(snapshot_download(name, allow_patterns=_HUB_FILES))
            if not _weights_in(path):  # an older repo with only pytorch_model.bin
                path = Path(snapshot_download(name, allow_patterns=_HUB_BIN_FILES))
    except Exception as exc:  # any download failure means the same to users
        raise GapscopeError(
            f"--model {name}: no such folder, and could not load it from the hub "
            f"({first_line(exc)}); without network access, save the model and its processor "
            "elsewhere with save_pretrained(DIR) and pass --model DIR"
        ) from None
    return path, True


def _model_type(folder: Path, name: str) -> str:
    config = folder / "config.json"
    if not config.is_file():
        raise GapscopeError(f"--model {name}: no config.json in it (save it with save_pretrained)")
    try:
        raw = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GapscopeError(f"--model {name}: config.json is not readable JSON ({exc})") from None
    model_type = raw.get("model_type") if isinstance(raw, dict) else None
    if model_type not in HF_MODEL_TYPES:
        raise GapscopeError(
            f"--model {name}: model_type {model_type!r} is not supported by --encoder hf "
            f"(supported: {', '.join(HF_MODEL_TYPES)}); another model needs an encoder plugin "
            "(the gapscope.encoders entry point)"
        )
    return str(model_type)


def _weights_in(folder: Path) -> list[Path]:
    """The weight files transformers loads from ``folder``: safetensors first, as it does."""
    files = sorted(p for p in folder.iterdir() if p.is_file())
    safetensors = [p for p in files if _SAFETENSORS.fullmatch(p.name)]
    return safetensors or [p for p in files if _PYTORCH_BIN.fullmatch(p.name)]


def _weight_files(folder: Path, name: str) -> list[Path]:
    files = _weights_in(folder)
    if not files:
        raise GapscopeError(
            f"--model {name}: no weights file (model.safetensors or pytorch_model.bin) in it"
        )
    return files


def _processor_files(folder: Path) -> list[Path]:
    return [folder / f for f in _PROCESSOR_FILES if (folder / f).is_file()]


def _load_model(folder: Path, class_name: str, name: str) -> Any:
    transformers = require_transformers()
    model_class = getattr(transformers, class_name)
    # Weights stay fp32 (--precision autocasts); transformers 5 would otherwise keep the
    # checkpoint's dtype. The keyword is "dtype" since 4.56, "torch_dtype" before.
    major, minor = (int(x) for x in re.findall(r"\d+", transformers.__version__)[:2])
    dtype_kwarg = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    try:
        loaded, info = model_class.from_pretrained(
            folder, output_loading_info=True, **{dtype_kwarg: torch.float32}
        )
    except Exception as exc:  # transformers and safetensors raise many types for a bad folder
        raise GapscopeError(
            f"--model {name}: could not load it as a {class_name} ({first_line(exc)})"
        ) from None
    # transformers fills weights missing from the checkpoint with random values and only
    # logs it; embeddings from such a model would be noise.
    missing = list(info.get("missing_keys") or []) + [
        str(k[0]) if isinstance(k, tuple) else str(k) for k in info.get("mismatched_keys") or []
    ]
    if missing:
        raise GapscopeError(
            f"--model {name}: its weights do not fit its config.json ({len(missing)} missing "
            f"or mismatched, first: {sorted(missing)[0]})"
        )
    return loaded


def _preprocessors(
    folder: Path, model_type: str, model: Any, name: str
) -> tuple[dict[str, Preprocessor], dict[str, Any]]:
    """The preprocessor of each modality, and what the manifest records about them."""
    if not any((folder / f).is_file() for f in _TOKENIZER_FILES):
        raise GapscopeError(
            f"--model {name}: no tokenizer files in it (save the processor with "
            "save_pretrained too)"
        )
    if not (folder / "preprocessor_config.json").is_file():
        what = "feature extractor" if model_type == "clap" else "image processor"
        raise GapscopeError(
            f"--model {name}: no {what} config (preprocessor_config.json; save the processor "
            "with save_pretrained too)"
        )
    tokenizer = _tokenizer(folder, model, name)
    if model_type == "clap":
        return _clap_preprocessors(folder, model, tokenizer, name)
    transformers = require_transformers()
    try:
        image_processor = transformers.AutoImageProcessor.from_pretrained(folder)
    except (OSError, ValueError, TypeError) as exc:
        raise GapscopeError(
            f"--model {name}: could not load its image processor ({first_line(exc)})"
        ) from None
    text_config = model.config.text_config
    limit = int(text_config.max_position_embeddings)
    max_length = int(min(limit, getattr(tokenizer, "model_max_length", limit) or limit))
    if model_type == "siglip":
        text = HfTextPreprocessor(tokenizer, max_length, "max_length", ("input_ids",))
    else:
        text = HfTextPreprocessor(tokenizer, max_length, "longest", ("input_ids", "attention_mask"))
    preprocessing = {
        "image_processor": type(image_processor).__name__,
        "image_processor_config": json.loads(json.dumps(image_processor.to_dict(), default=str)),
        "tokenizer": type(tokenizer).__name__,
        "max_text_tokens": max_length,
        "text_padding": text.padding,
        "text_inputs": list(text.keys),
    }
    return {"image": HfImagePreprocessor(image_processor), "text": text}, preprocessing


def _tokenizer(folder: Path, model: Any, name: str) -> Any:
    transformers = require_transformers()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    except ImportError as exc:  # e.g. SigLIP's SentencePiece tokenizer without sentencepiece
        raise MissingDependencyError(
            f"--model {name}: its tokenizer needs a package that is not installed "
            f"({first_line(exc).split('. ')[0]}): pip install 'gapscope[hf]'"
        ) from None
    except (OSError, ValueError, TypeError) as exc:
        raise GapscopeError(
            f"--model {name}: could not load its tokenizer ({first_line(exc)})"
        ) from None
    check_tokenizer_fits(tokenizer, model.config.text_config, f"--model {name}: its tokenizer")
    return tokenizer


def _clap_preprocessors(
    folder: Path, model: Any, tokenizer: Any, name: str
) -> tuple[dict[str, Preprocessor], dict[str, Any]]:
    from gapscope.extract.clap_encoder import (
        ClapAudioPreprocessor,
        ClapTextPreprocessor,
        max_text_tokens,
    )

    transformers = require_transformers()
    try:
        features = transformers.ClapFeatureExtractor.from_pretrained(folder)
    except (OSError, ValueError, TypeError) as exc:
        raise GapscopeError(
            f"--model {name}: could not load its feature extractor ({first_line(exc)})"
        ) from None
    fusion = bool(getattr(model.config.audio_config, "enable_fusion", False))
    max_length = max_text_tokens(model, tokenizer)
    preprocessing = {
        "sampling_rate": int(features.sampling_rate),
        "clip_samples": int(features.nb_max_samples),
        "clip_seconds": features.nb_max_samples / features.sampling_rate,
        "mel_bins": int(features.feature_size),
        "fusion": fusion,
        "cut": "start",
        "padding": "repeatpad",
        "mono": "mean of channels",
        "resampler": "scipy.signal.resample_poly",
        "tokenizer": type(tokenizer).__name__,
        "max_text_tokens": max_length,
    }
    audio = ClapAudioPreprocessor(features, "fusion" if fusion else "rand_trunc")
    return {"audio": audio, "text": ClapTextPreprocessor(tokenizer, max_length)}, preprocessing


def _embedding_dim(model: Any, model_type: str, name: str) -> int:
    config = model.config
    if model_type != "siglip":
        return int(config.projection_dim)
    # SigLIP has no shared projection: the vision pooler and the text head must agree.
    image = int(config.vision_config.hidden_size)
    text = int(getattr(config.text_config, "projection_size", None) or image)
    if image != text:
        raise GapscopeError(
            f"--model {name}: its image embeddings have {image} dimensions and its text "
            f"embeddings {text}; they must share one space"
        )
    return image
