"""open_clip models (CLIP, SigLIP, ...) as a gapscope image/text :class:`Encoder`.

Weights come from an open_clip hub tag (``--pretrained laion2b_s34b_b79k``), a local checkpoint
file (``--pretrained model.pt``: a state dict, a checkpoint dict, ``module.``-prefixed keys or
``.safetensors``), an ``hf-hub:`` / ``local-dir:`` model name, or nowhere (random weights,
seeded). A custom architecture comes from ``--model-config`` (open_clip's JSON model config),
so no hub is needed to build it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import types
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gapscope.data.embedding_set import load_failure, quiet_weights_only
from gapscope.engine.devices import EXTRACTION_ACCELERATORS, resolve_device
from gapscope.errors import GapscopeError
from gapscope.extract.checksums import sha256_file, sha256_files
from gapscope.extract.devices import autocast_dtype
from gapscope.extract.encoder import (
    Encoder,
    Preprocessor,
    first_line,
    quiet_hub_retries,
)
from gapscope.extract.tiny_models import TINY_OPEN_CLIP, tiny_open_clip_config_path
from gapscope.extras import require

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")


class ImagePreprocessor(Preprocessor):
    """Decode an image file (or take a PIL image) and apply the model's eval transform."""

    def __init__(self, transform: Any) -> None:
        self.transform = transform

    def load(self, source: Any) -> torch.Tensor:
        require_pillow()
        from PIL import Image

        if isinstance(source, Image.Image):
            return self.transform(source.convert("RGB"))
        with Image.open(source) as image:
            image.load()  # decode now, inside the worker, so a corrupt file fails here
            return self.transform(image.convert("RGB"))

    def collate(self, samples: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(samples)


class OpenClipTextPreprocessor(Preprocessor):
    """Tokenize captions with the model's open_clip tokenizer."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def load(self, source: Any) -> str:
        return str(source)

    def collate(self, samples: list[str]) -> torch.Tensor:
        return self.tokenizer(samples)


class OpenClipEncoder(Encoder):
    """An open_clip model's image and text towers; raw (unnormalised) ``encode_*`` outputs."""

    family = "open_clip"
    modalities = ("image", "text")

    def __init__(self, model: torch.nn.Module, transform: Any, tokenizer: Any, **kwargs: Any):
        super().__init__(**kwargs)
        # open_clip's towers are methods the Module type does not declare.
        self.model: Any = model
        self._image = ImagePreprocessor(transform)
        self._text = OpenClipTextPreprocessor(tokenizer)

    def preprocessor(self, modality: str) -> Preprocessor:
        self.check_modality(modality)
        return self._image if modality == "image" else self._text

    def _forward(self, modality: str, batch: torch.Tensor) -> torch.Tensor:
        if modality == "image":
            return self.model.encode_image(batch, normalize=False)
        return self.model.encode_text(batch, normalize=False)


def require_open_clip() -> Any:
    """Import open_clip, or say how to install the extract extra."""
    try:
        return require("open_clip", "open_clip models")
    except RuntimeError as exc:
        # The CPU-torch guard, the only one in gapscope. A CPU-only torch (e.g. 2.13.0+cpu)
        # beside the torchvision that PyPI pairs with it (0.28.0, built for CUDA torch) makes
        # "import torchvision" die while registering meta kernels of its detection ops
        # ("operator torchvision::nms does not exist"); open_clip never uses those ops. Only
        # then: drop what the failed import left half-done, stub that one torchvision module and
        # import again. Where torchvision imports fine this never runs. Decoding workers are
        # forked (Linux), so they inherit the stub; spawned workers would not.
        if "torchvision::" not in str(exc):
            raise
        for name in [m for m in sys.modules if m.split(".")[0] in ("torchvision", "open_clip")]:
            del sys.modules[name]
        stub = "torchvision._meta_registrations"
        sys.modules[stub] = types.ModuleType(stub)
        return require("open_clip", "open_clip models")


def require_pillow() -> Any:
    """Import Pillow (the image decoder), or say how to install the extract extra."""
    return require("PIL", "reading images")


def register_tiny_model() -> None:
    """Make ``gapscope-tiny-vit`` known to open_clip (idempotent)."""
    open_clip = require_open_clip()

    if TINY_OPEN_CLIP not in open_clip.list_models():
        open_clip.add_model_config(tiny_open_clip_config_path())


def load_open_clip(
    model: str | None = None,
    *,
    pretrained: str | None = None,
    model_config: str | os.PathLike[str] | None = None,
    device: str = "auto",
    precision: str = "fp32",
    seed: int = 0,
) -> OpenClipEncoder:
    """Build an open_clip encoder.

    Args:
        model: an open_clip architecture name (``ViT-B-32``), ``hf-hub:org/repo``,
            ``local-dir:PATH`` or ``gapscope-tiny-vit``. Defaults to the ``--model-config``
            file's name, else ``ViT-B-32``.
        pretrained: an open_clip hub tag (``openai``, ``laion2b_s34b_b79k``) or a local
            checkpoint file; ``None`` gives random weights drawn with ``seed``.
        model_config: a local open_clip JSON model config (``{"embed_dim", "vision_cfg",
            "text_cfg"}``, or a hub ``open_clip_config.json`` with ``model_cfg``).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        precision: ``fp32``, ``fp16`` or ``bf16`` (autocast; weights stay fp32).
        seed: seed of the random initialisation (used only without pretrained weights).

    Raises:
        GapscopeError: unknown model or tag, missing or mismatched checkpoint, hub unreachable,
            or the ``extract`` extra is not installed.
    """
    open_clip = require_open_clip()
    # Fail here, once, rather than in every decoding worker (where it would read as skips).
    require_pillow()

    register_tiny_model()
    torch_device = resolve_device(device, accelerators=EXTRACTION_ACCELERATORS)
    dtype = autocast_dtype(torch_device, precision)
    config_info: dict[str, Any] = {}
    if model_config is not None:
        name, config_info = _register_model_config(Path(model_config), model)
        display_name = model or Path(model_config).stem
    else:
        name = display_name = model or "ViT-B-32"
        if name == TINY_OPEN_CLIP:  # its architecture is ours, so a config change must show
            path = tiny_open_clip_config_path()
            config_info = {"path": str(path), "sha256": sha256_file(path)}
        if name.startswith(("hf-hub:", "local-dir:")) and pretrained:
            raise GapscopeError(
                f"--pretrained cannot be combined with --model {name}: the weights come from there"
            )
        if not name.startswith(("hf-hub:", "local-dir:")) and name not in open_clip.list_models():
            raise GapscopeError(
                f"unknown open_clip model {name!r}: see open_clip.list_models(), or pass a JSON "
                "model config with --model-config"
            )
    weights = _resolve_weights(name, pretrained)

    with _quiet_open_clip(), quiet_weights_only(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # random weights are reproducible, so a resume gets the same
        try:
            clip, _, transform = open_clip.create_model_and_transforms(
                name, pretrained=weights["open_clip_arg"], device="cpu"
            )
        except RuntimeError as exc:
            raise GapscopeError(_load_failure(display_name, weights, exc)) from None
        except Exception as exc:
            # With a checkpoint, torch's and safetensors' many exception types for a corrupt or
            # pickled file are bad input; without one, an error is a bug.
            if not weights["path"]:
                raise
            raise GapscopeError(
                f"checkpoint {weights['path']}: not a readable checkpoint ({load_failure(exc)})"
            ) from None
    clip = clip.to(torch_device).eval()
    tokenizer = open_clip.get_tokenizer(name)

    embedding_dim = _embedding_dim(clip)
    preprocessing = {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in dict(clip.visual.preprocess_cfg).items()
    }
    preprocessing["context_length"] = int(getattr(tokenizer, "context_length", 0) or 0)
    preprocessing["tokenizer"] = type(tokenizer).__name__
    random_init = weights["checkpoint_sha256"] is None
    identity = {
        "family": "open_clip",
        "model": display_name,
        "pretrained": weights["tag"],
        "checkpoint_sha256": weights["checkpoint_sha256"],
        "model_config_sha256": config_info.get("sha256"),
        "random_init_seed": seed if random_init else None,
        "precision": precision,
    }
    description = {
        **identity,
        "checkpoint": weights["path"],
        "model_config": config_info.get("path"),
        "weights": f"random (seed {seed})" if random_init else "pretrained",
        "embedding_dim": embedding_dim,
        "preprocessing": preprocessing,
        "open_clip_version": getattr(open_clip, "__version__", None),
    }
    return OpenClipEncoder(
        clip,
        transform,
        tokenizer,
        device=torch_device,
        autocast_dtype=dtype,
        embedding_dim=embedding_dim,
        description=description,
        identity=identity,
    )


def _embedding_dim(clip: Any) -> int:
    # open_clip models do not agree on one attribute for it; one forward pass always works.
    with torch.inference_mode():
        tokens = torch.zeros(1, getattr(clip, "context_length", 77) or 77, dtype=torch.long)
        try:
            return int(clip.encode_text(tokens.to(next(clip.parameters()).device)).shape[-1])
        except Exception:  # fall back on the projection's shape
            return int(np.asarray(clip.text_projection.shape)[-1])


def _register_model_config(path: Path, model: str | None) -> tuple[str, dict[str, Any]]:
    """Register a JSON model config with open_clip under a private, content-derived name."""
    open_clip = require_open_clip()

    if not path.is_file():
        raise GapscopeError(f"--model-config {path}: file not found")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GapscopeError(f"--model-config {path}: not a readable JSON file ({exc})") from None
    if isinstance(config, dict) and "model_cfg" in config:  # a hub open_clip_config.json
        config = config["model_cfg"]
    missing = [
        k
        for k in ("embed_dim", "vision_cfg", "text_cfg")
        if not isinstance(config, dict) or k not in config
    ]
    if missing:
        raise GapscopeError(
            f"--model-config {path}: not an open_clip model config (lacks {', '.join(missing)})"
        )
    digest = sha256_file(path)
    # A private name: never shadows a built-in architecture or another config in this process.
    name = f"gapscope-config-{digest[:16]}"
    if name not in open_clip.list_models():
        with tempfile.TemporaryDirectory() as tmp:
            file = Path(tmp) / f"{name}.json"
            file.write_text(json.dumps(config), encoding="utf-8")
            open_clip.add_model_config(file)  # read now; the temporary file may then go
    return name, {"path": str(path.resolve()), "sha256": digest, "requested_as": model}


def _resolve_weights(name: str, pretrained: str | None) -> dict[str, Any]:
    """Find the checkpoint file behind ``pretrained`` (downloading a tag) and hash it."""
    open_clip = require_open_clip()

    none = {"open_clip_arg": None, "tag": None, "path": None, "checkpoint_sha256": None}
    if name.startswith("local-dir:"):
        folder = Path(name[len("local-dir:") :])
        if not folder.is_dir():
            raise GapscopeError(f"--model {name}: folder not found")
        files = sorted(p for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES)
        if not files:
            return none
        return {**none, "path": str(folder.resolve()), "checkpoint_sha256": sha256_files(files)}
    if name.startswith("hf-hub:"):
        from open_clip.pretrained import download_pretrained_from_hf

        repo = name[len("hf-hub:") :]
        try:
            with quiet_hub_retries():
                path = download_pretrained_from_hf(repo)
        except Exception as exc:  # any download failure means the same to users
            raise GapscopeError(_unreachable(f"open_clip model {name}", exc)) from None
        return {**none, "path": str(path), "checkpoint_sha256": sha256_file(path)}
    if not pretrained:
        return none
    candidate = Path(pretrained).expanduser()
    if candidate.exists():
        if not candidate.is_file():
            raise GapscopeError(f"--pretrained {pretrained}: a folder; pass the checkpoint file")
        return {
            "open_clip_arg": str(candidate),
            "tag": None,
            "path": str(candidate.resolve()),
            "checkpoint_sha256": sha256_file(candidate),
        }
    tags = open_clip.list_pretrained_tags_by_model(name)
    if pretrained not in tags:
        looks_like_path = os.sep in pretrained or candidate.suffix in _WEIGHT_SUFFIXES
        if looks_like_path:
            raise GapscopeError(f"--pretrained {pretrained}: checkpoint file not found")
        known = ", ".join(tags) if tags else "none"
        raise GapscopeError(
            f"--pretrained {pretrained!r} is neither a file nor a hub tag of {name} "
            f"(known tags: {known})"
        )
    try:
        with quiet_hub_retries():
            path = open_clip.download_pretrained(open_clip.get_pretrained_cfg(name, pretrained))
    except Exception as exc:
        raise GapscopeError(_unreachable(f"{name} weights {pretrained!r}", exc)) from None
    if not path:
        raise GapscopeError(_unreachable(f"{name} weights {pretrained!r}", None))
    return {
        "open_clip_arg": pretrained,
        "tag": pretrained,
        "path": str(path),
        "checkpoint_sha256": sha256_file(path),
    }


def _unreachable(what: str, exc: BaseException | None) -> str:
    reason = f" ({first_line(exc)})" if exc is not None else ""
    return (
        f"could not download {what} from the hub{reason}; without network access, download "
        "the checkpoint elsewhere and pass its local path with --pretrained PATH"
    )


def _load_failure(model: str, weights: dict[str, Any], exc: BaseException) -> str:
    if weights["path"] and "PytorchStreamReader" in str(exc):  # not a torch zip archive
        return f"checkpoint {weights['path']}: not a readable checkpoint ({load_failure(exc)})"
    if weights["path"]:
        return f"checkpoint {weights['path']} does not fit model {model}: {load_failure(exc)}"
    return f"could not build open_clip model {model}: {first_line(exc)}"


@contextmanager
def _quiet_open_clip():
    # open_clip logs through the root logger ("No pretrained weights loaded ..."); gapscope
    # says the same thing in its own summary, so hide it without touching the user's logging.
    previous = logging.root.manager.disable
    logging.disable(max(previous, logging.WARNING))
    try:
        yield
    finally:
        logging.disable(previous)
