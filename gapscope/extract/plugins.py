"""Encoder plugins: encoders that other packages provide through the ``gapscope.encoders``
entry-point group, so a team can extract with its own model without forking gapscope.

A package declares its loader in its ``pyproject.toml``::

    [project.entry-points."gapscope.encoders"]
    myenc = "mypkg.enc:load"

and once it is installed, ``gapscope extract --encoder myenc`` (``extract(..., encoder="myenc")``,
``load_encoder("myenc", ...)``) calls ``load`` with keyword arguments only, the ones every
built-in loader takes::

    def load(*, model, pretrained, model_config, device, precision, seed, **kwargs) -> Encoder

- ``model``, ``pretrained``: the ``--model`` and ``--pretrained`` strings, or ``None``;
  ``model_config``: the ``--model-config`` path as a string, or ``None``; ``device``: ``auto``,
  ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (resolve it with
  :func:`gapscope.engine.devices.resolve_device` and ``EXTRACTION_ACCELERATORS``);
  ``precision``: ``fp32``, ``fp16`` or ``bf16`` (:func:`gapscope.extract.devices.autocast_dtype`
  gives the autocast dtype, or refuses one the device lacks); ``seed``: for random weights.
  Accept ``**kwargs`` so that options added later do not break the plugin.
- It returns an instance of a subclass of :class:`gapscope.extract.Encoder`: ``modalities``
  (some of ``image``, ``text``, ``audio``), a picklable :class:`~gapscope.extract.Preprocessor`
  per modality (``load`` one file or caption, ``collate`` a batch; they run in decoding worker
  processes), ``_forward`` (a batch on the encoder's device -> ``(n, embedding_dim)`` raw
  embeddings), and the constructor's ``embedding_dim``, ``description`` and ``identity``.
- ``identity`` decides whether an existing store may be resumed or merged: equal identities
  must mean equal embeddings. It is a JSON object with a non-empty ``family`` (the entry-point
  name is a good one), the weights by content hash rather than path, and everything else that
  changes the embeddings (precision, preprocessing settings). gapscope records it under the
  manifest's ``extract.encoder``; ``description`` (identity plus what people want to read:
  paths, versions) goes under ``encoder``, with a ``plugin`` entry added by gapscope (name,
  entry point, distribution and version).
- Bad input (a missing file, an unknown model name) is a :class:`gapscope.errors.GapscopeError`:
  one line, exit 2. Any other exception is a crash (exit 3) that names the plugin.

The built-in names (``open_clip``, ``clap``, ``hf``) cannot be taken by a plugin.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from gapscope.errors import GapscopeError
from gapscope.extract.encoder import Encoder

ENTRY_POINT_GROUP = "gapscope.encoders"


def encoder_plugins(reserved: Sequence[str] = ()) -> dict[str, list[EntryPoint]]:
    """Installed plugins by name (names in ``reserved`` left out); a name that two different
    entry points declare keeps both, and :func:`load_plugin_encoder` refuses it."""
    found: dict[str, list[EntryPoint]] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in reserved:
            continue
        same = found.setdefault(entry.name, [])
        if all(e.value != entry.value for e in same):  # one package seen twice on sys.path
            same.append(entry)
    return dict(sorted(found.items()))


def load_plugin_encoder(name: str, builtin: Sequence[str], **options: Any) -> Encoder:
    """Call the loader of the plugin named ``name`` with ``options`` and check what it returns.

    Raises:
        GapscopeError: no such plugin (the message lists ``builtin`` and the installed
            plugins), a name two packages declare, a plugin that cannot be imported or that
            returns something other than a usable :class:`Encoder`.
    """
    plugins = encoder_plugins(builtin)
    if name not in plugins:
        available = ", ".join([*builtin, *plugins])
        raise GapscopeError(f"unknown encoder {name!r}: available encoders are {available}")
    entries = plugins[name]
    if len(entries) > 1:
        sources = ", ".join(f"{e.value} ({_distribution(e)})" for e in entries)
        raise GapscopeError(f"encoder plugin {name!r} is declared twice: {sources}")
    entry = entries[0]
    what = f"encoder plugin {name!r} ({entry.value})"
    try:
        loader = entry.load()
    except Exception as exc:  # an import error inside a third-party package
        raise GapscopeError(f"{what} could not be imported ({_first_line(exc)})") from None
    if not callable(loader):
        raise GapscopeError(f"{what} is not callable")
    if options.get("model_config") is not None:
        options["model_config"] = str(options["model_config"])
    try:
        encoder = loader(**options)
    except GapscopeError:
        raise
    except Exception as exc:
        raise RuntimeError(f"{what} failed: {_first_line(exc)}") from exc
    _check_encoder(encoder, what)
    encoder.extend_description(
        plugin={"name": name, "entry_point": entry.value, "distribution": _distribution(entry)}
    )
    return encoder


def _check_encoder(encoder: Any, what: str) -> None:
    if not isinstance(encoder, Encoder):
        raise GapscopeError(
            f"{what} returned {type(encoder).__name__}, not a gapscope.extract.Encoder"
        )
    if not encoder.modalities or encoder.embedding_dim < 1:
        raise GapscopeError(f"{what} returned an encoder without modalities or embedding_dim")
    identity = encoder.identity()
    family = identity.get("family")
    if not isinstance(family, str) or not family:
        raise GapscopeError(f"{what}: its identity has no 'family' (a non-empty string)")
    for part, value in (("identity", identity), ("description", encoder.description())):
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise GapscopeError(f"{what}: its {part} is not plain JSON ({exc})") from None


def _distribution(entry: EntryPoint) -> str | None:
    dist = getattr(entry, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    line = line if len(line) <= 300 else line[:297] + "..."
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__
