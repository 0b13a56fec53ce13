"""The run a report belongs to: its training step, its tags and the checkpoint behind it.

A report records them in its ``run`` section (``{"step", "tags", "checkpoint"}``) and every
flat output repeats them (``--format flat``, CSV, the trackers), so that the reports of many
checkpoints combine into one table:

- ``step``: the training step the embeddings were taken at (``analyze --step N``), an integer
  >= 0, or null;
- ``tags``: ``key -> value`` labels (``analyze --tag lr=3e-4``), strings; keys of letters,
  digits, ``_``, ``-`` and ``.``;
- ``checkpoint``: which weights produced the embeddings, from the store's manifest
  (:func:`checkpoint_identity`), or the embeddings' fingerprint when no encoder is recorded.

In flat outputs the run fields are the keys without a ``/``: ``step``, ``checkpoint`` and
``tag.<key>`` a tag; every metric key has a ``/``.

This module imports nothing heavy.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gapscope.analysis import keys as K
from gapscope.data.weights import random_init_seed
from gapscope.errors import GapscopeError
from gapscope.report.text import printable

__all__ = [
    "RunInfo",
    "check_step",
    "check_tags",
    "checkpoint_identity",
    "has_random_weights",
    "parse_tags",
    "run_info",
]

# Matched whole (fullmatch): "$" would also let a key end in a newline.
_TAG_KEY = re.compile(r"[A-Za-z0-9_.\-]+")
# Fields of a store's encoder description (the manifest's "encoder"), written by extract/.
_FAMILY = "family"
_PRETRAINED = "pretrained"
_CHECKPOINT_SHA256 = "checkpoint_sha256"


@dataclass(frozen=True)
class RunInfo:
    """The run fields of one report.

    Attributes:
        checkpoint: the checkpoint identity (:func:`checkpoint_identity`).
        step: the training step, or None.
        tags: ``key -> value`` labels, sorted by key.
    """

    checkpoint: str
    step: int | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The report's ``run`` section."""
        return {
            K.STEP: self.step,
            K.TAGS: dict(sorted(self.tags.items())),
            K.CHECKPOINT: self.checkpoint,
        }

    def flat(self) -> dict[str, Any]:
        """The run fields as flat keys: ``checkpoint``, ``step`` (when known), ``tag.<key>``.

        >>> RunInfo("ViT-B-32@laion2b_s34b_b79k", 3, {"lr": "3e-4"}).flat()
        {'checkpoint': 'ViT-B-32@laion2b_s34b_b79k', 'step': 3, 'tag.lr': '3e-4'}
        """
        out: dict[str, Any] = {K.CHECKPOINT: self.checkpoint}
        if self.step is not None:
            out[K.STEP] = self.step
        out.update(self.tag_fields())
        return out

    def fields(self) -> dict[str, str]:
        """The string run fields, what trackers log beside the metrics: ``checkpoint`` and
        ``tag.<key>`` (the step is the tracker's own step)."""
        return {K.CHECKPOINT: self.checkpoint, **self.tag_fields()}

    def tag_fields(self) -> dict[str, str]:
        """The tags as flat keys ``tag.<key>``, sorted."""
        return {f"{K.TAG_PREFIX}{key}": value for key, value in sorted(self.tags.items())}


#: The largest step: trackers (TensorBoard, W&B, MLflow's database) keep steps as int64.
_MAX_STEP = 2**63 - 1
#: The longest tag key and value, MLflow's limits for a run tag.
_MAX_TAG_KEY = 250
_MAX_TAG_VALUE = 8000


def check_step(step: Any) -> int | None:
    """``step`` as an integer >= 0 (None stays None).

    >>> check_step(1000), check_step(None)
    (1000, None)
    >>> check_step(-1)
    Traceback (most recent call last):
    ...
    gapscope.errors.GapscopeError: step: expected an integer >= 0, got -1
    """
    if step is None:
        return None
    problem = GapscopeError(f"step: expected an integer >= 0, got {step!r}")
    if isinstance(step, bool):
        raise problem
    try:
        value = operator.index(step)
    except TypeError:
        raise problem from None
    if value < 0:
        raise problem
    if value > _MAX_STEP:
        raise GapscopeError(
            f"step: expected an integer from 0 to 2^63 - 1 (trackers keep steps as 64-bit "
            f"integers), got {step!r}"
        )
    return value


def check_tags(tags: Mapping[str, Any] | None) -> dict[str, str]:
    """``tags`` as ``key -> string``, sorted by key: keys of letters, digits, ``_``, ``-`` and
    ``.``; values strings, or integers and finite floats (written as ``str`` writes them).

    >>> check_tags({"lr": 0.0003, "data": "coco-val"})
    {'data': 'coco-val', 'lr': '0.0003'}
    >>> check_tags({"a/b": "x"})
    Traceback (most recent call last):
    ...
    gapscope.errors.GapscopeError: tag 'a/b': a key may hold letters, digits, '_', '-' and '.' only
    """
    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise GapscopeError(f"tags: expected a mapping of key to value, got {type(tags).__name__}")
    out: dict[str, str] = {}
    for key, value in tags.items():
        if not isinstance(key, str) or not _TAG_KEY.fullmatch(key):
            raise GapscopeError(
                f"tag {key!r}: a key may hold letters, digits, '_', '-' and '.' only"
            )
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise GapscopeError(
                f"tag {key!r}: expected a string or a number as its value, got {value!r}"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise GapscopeError(f"tag {key!r}: the value {value!r} is not a finite number")
        text = value if isinstance(value, str) else str(value)
        # MLflow's limits, the tightest of the trackers: refused here, before any run is
        # made, rather than cut short or refused by the tracker half-way through a log.
        if len(key) > _MAX_TAG_KEY:
            raise GapscopeError(
                f"tag {key[:40]!r}...: a key has at most {_MAX_TAG_KEY} characters, this one "
                f"{len(key)}"
            )
        if len(text) > _MAX_TAG_VALUE:
            raise GapscopeError(
                f"tag {key!r}: a value has at most {_MAX_TAG_VALUE} characters, this one "
                f"{len(text)}"
            )
        out[key] = text
    return dict(sorted(out.items()))


def parse_tags(options: Sequence[str] | None) -> dict[str, str]:
    """The tags of ``--tag KEY=VALUE`` options (the value may be empty or hold ``=``).

    >>> parse_tags(["lr=3e-4", "note=a=b"])
    {'lr': '3e-4', 'note': 'a=b'}
    >>> parse_tags(["lr"])
    Traceback (most recent call last):
    ...
    gapscope.errors.GapscopeError: --tag 'lr': expected KEY=VALUE, e.g. --tag lr=3e-4
    """
    tags: dict[str, str] = {}
    for option in options or ():
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise GapscopeError(f"--tag {option!r}: expected KEY=VALUE, e.g. --tag lr=3e-4")
        if key in tags:
            raise GapscopeError(f"--tag {key!r} is given twice")
        tags[key] = value
    return check_tags(tags)


def checkpoint_identity(input_section: Mapping[str, Any]) -> str:
    """Which weights produced the embeddings, from a report's ``input`` section.

    From the store's encoder description (the manifest's ``encoder``): ``<model>@<weights>``,
    where the weights are the pretrained tag, else ``sha256:<hash>`` of the checkpoint file,
    else ``random-seed-<n>`` for random weights; the model name alone when the encoder records
    no weights. Plain arrays (no encoder recorded): ``embeddings@sha256:<fingerprint>``, the
    embeddings' own hash.

    >>> checkpoint_identity({"model": {"model": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"}})
    'ViT-B-32@laion2b_s34b_b79k'
    >>> checkpoint_identity({"model": {"model": "ViT-B-32", "checkpoint_sha256": "9f2c"}})
    'ViT-B-32@sha256:9f2c'
    >>> checkpoint_identity({"model": None, "fingerprint": "c6a1"})
    'embeddings@sha256:c6a1'

    Control characters in the names are shown as escapes (:func:`~gapscope.report.text.printable`):
    the identity is one line.
    """
    encoder = input_section.get(K.MODEL)
    if isinstance(encoder, Mapping):
        name = encoder.get(K.MODEL) or encoder.get(_FAMILY)
        weights = None
        if encoder.get(_PRETRAINED):
            weights = str(encoder[_PRETRAINED])
        elif encoder.get(_CHECKPOINT_SHA256):
            weights = f"sha256:{encoder[_CHECKPOINT_SHA256]}"
        elif random_init_seed(encoder) is not None:
            weights = f"random-seed-{random_init_seed(encoder)}"
        # One line whatever the manifest holds: a newline or an escape sequence in a model
        # name would break every table, CSV row and message that names the checkpoint.
        parts = [printable(p) for p in (name, weights) if p]
        if parts:
            return "@".join(parts)
    fingerprint = input_section.get(K.FINGERPRINT)
    return f"embeddings@sha256:{fingerprint}" if fingerprint else "unknown"


def has_random_weights(input_section: Mapping[str, Any]) -> bool:
    """Whether the embeddings of a report came from an encoder with random weights: its
    ``input.model.random_weights``, or for a report written before that field, the
    ``random_init_seed`` of the encoder description (what ``checkpoint_identity`` writes as
    ``random-seed-<n>``).

    >>> has_random_weights({"model": {"model": "ViT-B-32", "random_init_seed": 0}})
    True
    >>> has_random_weights({"model": {"model": "ViT-B-32", "random_weights": False}})
    False
    >>> has_random_weights({"model": None})
    False
    """
    encoder = input_section.get(K.MODEL)
    if not isinstance(encoder, Mapping):
        return False
    recorded = encoder.get(K.RANDOM_WEIGHTS)
    if isinstance(recorded, bool):
        return recorded
    return random_init_seed(encoder) is not None


def run_info(data: Mapping[str, Any]) -> RunInfo:
    """The run fields of a report's JSON mapping: its ``run`` section, or for a report written
    without one, no step, no tags and the checkpoint identity of its ``input``."""
    run = data.get(K.RUN_SECTION)
    if isinstance(run, Mapping):
        checkpoint = run.get(K.CHECKPOINT)
        return RunInfo(
            checkpoint=checkpoint
            if isinstance(checkpoint, str) and checkpoint
            else checkpoint_identity(data.get(K.INPUT_SECTION) or {}),
            step=check_step(run.get(K.STEP)),
            tags=check_tags(run.get(K.TAGS)),
        )
    return RunInfo(checkpoint=checkpoint_identity(data.get(K.INPUT_SECTION) or {}))
