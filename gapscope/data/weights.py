"""Whether a store's embeddings came from trained weights, read from its manifest.

``gapscope extract`` records the encoder it used in the manifest (``encoder``). An encoder
built without pretrained weights (no ``--pretrained`` for an open_clip architecture, a CLAP
built from a ``--model-config``, the bundled tiny models) draws them at random from a seed
and records that seed as ``random_init_seed``; trained weights record their tag or the sha256
of their checkpoint instead. The report (``input.model.random_weights``, its notes, the run's
``checkpoint``), ``gapscope info`` and ``gapscope extract`` all read it from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["RANDOM_INIT_SEED", "encoder_name", "random_init_seed"]

#: The manifest's encoder field holding the seed of random weights (``None`` when trained).
RANDOM_INIT_SEED = "random_init_seed"
_NAME_FIELDS = ("model", "family")


def random_init_seed(encoder: Any) -> int | None:
    """The seed the encoder's random weights were drawn with, or ``None`` when the encoder
    description (a manifest's ``encoder``) records trained weights or no encoder at all.

    >>> random_init_seed({"model": "ViT-B-32", "random_init_seed": 0})
    0
    >>> random_init_seed({"model": "ViT-B-32", "pretrained": "openai"}), random_init_seed(None)
    (None, None)
    """
    if not isinstance(encoder, Mapping):
        return None
    seed = encoder.get(RANDOM_INIT_SEED)
    if seed is None or isinstance(seed, bool) or not isinstance(seed, int):
        return None
    return seed


def encoder_name(encoder: Any) -> str | None:
    """The encoder's model name (else its family), or ``None``.

    >>> encoder_name({"family": "open_clip", "model": "ViT-B-32"}), encoder_name(None)
    ('ViT-B-32', None)
    """
    if not isinstance(encoder, Mapping):
        return None
    for field in _NAME_FIELDS:
        if encoder.get(field):
            return str(encoder[field])
    return None
