"""The encoder interface that the extraction loop drives (open_clip, CLAP, transformers models
and encoder plugins implement it).

An encoder is split in two so that decoding never makes the model wait: a picklable
:class:`Preprocessor` per modality (decode a file or take a caption, then stack samples into a
batch) runs in DataLoader worker processes, and :meth:`Encoder.encode_batch` runs the model on
those batches on the chosen device. ``encode_images`` / ``encode_texts`` / ``encode_audio`` chain
the two for callers who just want embeddings of a few inputs.
"""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from gapscope.errors import GapscopeError


class Preprocessor(ABC):
    """Turns one source (a file path or a caption) into a sample and stacks samples into a batch.

    Runs in DataLoader worker processes: keep it picklable and free of model weights. ``load``
    may raise any exception for a file that cannot be decoded; the extraction then skips that
    file and records the exception as the reason.
    """

    @abstractmethod
    def load(self, source: Any) -> Any:
        """One model-ready sample from ``source``."""

    @abstractmethod
    def collate(self, samples: list[Any]) -> Any:
        """A batch (a tensor or a mapping of tensors) from samples returned by :meth:`load`."""


class Encoder(ABC):
    """A contrastive model's encoders for the modalities it supports, on one device.

    Subclasses set :attr:`family` and :attr:`modalities` and implement :meth:`preprocessor` and
    :meth:`_forward`. Embeddings come back as float32 numpy arrays, exactly as the model computes
    them (not normalised by gapscope; :meth:`normalized` says whether the model already did).
    """

    family: str = ""
    modalities: tuple[str, ...] = ()

    def __init__(
        self,
        *,
        device: torch.device,
        autocast_dtype: torch.dtype | None,
        embedding_dim: int,
        description: Mapping[str, Any],
        identity: Mapping[str, Any],
    ) -> None:
        self.device = device
        self.autocast_dtype = autocast_dtype
        self._embedding_dim = int(embedding_dim)
        self._description = dict(description)
        self._identity = dict(identity)

    @property
    def embedding_dim(self) -> int:
        """Dimension of the shared embedding space."""
        return self._embedding_dim

    def description(self) -> dict[str, Any]:
        """What the store's manifest records under ``encoder`` (family, model, weights, sha256,
        embedding dim, preprocessing, precision)."""
        return dict(self._description)

    def extend_description(self, **fields: Any) -> None:
        """Add ``fields`` to :meth:`description` (never to the identity): where the encoder came
        from, for people reading the manifest; the embeddings do not depend on them."""
        self._description.update(fields)

    def identity(self) -> dict[str, Any]:
        """The fields that decide the embeddings: equal identities give equal embeddings.

        Paths are left out (a checkpoint is identified by its sha256), so a store can be resumed
        or merged after the files moved.
        """
        return dict(self._identity)

    def normalized(self, modality: str) -> bool:
        """Whether the model already L2-normalises this modality's outputs."""
        return False

    @abstractmethod
    def preprocessor(self, modality: str) -> Preprocessor:
        """The picklable preprocessor for ``modality``."""

    @abstractmethod
    def _forward(self, modality: str, batch: Any) -> torch.Tensor:
        """Embeddings of a batch already on :attr:`device`."""

    def check_modality(self, modality: str) -> None:
        if modality not in self.modalities:
            raise GapscopeError(
                f"{self.family} encodes {' and '.join(self.modalities)}, not {modality}"
            )

    def encode_batch(self, modality: str, batch: Any) -> np.ndarray:
        """Embeddings ``(n, embedding_dim)`` float32 of a batch made by the preprocessor."""
        self.check_modality(modality)
        batch = _to_device(batch, self.device)
        autocast = (
            torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            out = self._forward(modality, batch)
        return np.ascontiguousarray(out.float().cpu().numpy(), dtype=np.float32)

    def _encode_sources(self, modality: str, sources: Sequence[Any]) -> np.ndarray:
        self.check_modality(modality)
        if len(sources) == 0:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        pre = self.preprocessor(modality)
        return self.encode_batch(modality, pre.collate([pre.load(s) for s in sources]))

    def encode_images(self, images: Sequence[Any]) -> np.ndarray:
        """Embeddings of images given as paths or PIL images, one batch."""
        return self._encode_sources("image", images)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of captions, one batch."""
        return self._encode_sources("text", list(texts))

    def encode_audio(self, clips: Sequence[Any]) -> np.ndarray:
        """Embeddings of audio clips given as paths or ``(waveform, sample_rate)`` pairs."""
        return self._encode_sources("audio", clips)

    def __repr__(self) -> str:
        model = self._description.get("model")
        return f"{type(self).__name__}({model!r}, dim={self.embedding_dim}, device={self.device})"


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


@contextlib.contextmanager
def quiet_hub_retries() -> Iterator[None]:
    """Silence huggingface_hub's per-retry warnings while a hub download is tried.

    Offline, the hub client logs a line for every retry of every file (a dozen lines) before it
    gives up; our one-line error says what happened and what to do instead.
    """
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type when it has none), at most 300
    characters: what a one-line error says of a failure inside a loader.

    >>> first_line(ValueError("bad config\\nat line 3"))
    'bad config'
    """
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 300 else line[:297] + "..."


def check_tokenizer_fits(
    tokenizer: Any, text_config: Any, what: str, tower: str = "the text tower"
) -> None:
    """Refuse a tokenizer that does not belong to the text tower: transformers can hand back
    a near-empty tokenizer when its files are missing, and captions must never be encoded
    with one, nor with one whose ids the tower has no embedding rows for. ``what`` names the
    tokenizer in the message, ``tower`` the text tower."""
    vocab_size = int(text_config.vocab_size)
    if len(tokenizer) <= 5 or len(tokenizer) > vocab_size:
        raise GapscopeError(
            f"{what} has {len(tokenizer)} tokens but {tower} has {vocab_size}: they do not "
            "belong together"
        )
