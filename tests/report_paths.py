"""Read and edit a report's JSON mapping by flat key, to fake a regression in a test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _parent(data: dict, key: str) -> tuple[dict, str]:
    first, *rest = key.split("/")
    node = data["pairs" if "-" in first else "modalities"][first]
    for part in rest[:-1]:
        node = node[part]
    return node, rest[-1]


def get_value(data: dict, key: str) -> Any:
    """The value at a flat key (``image-text/gap``, ``image/cone``) of a report mapping."""
    node, leaf = _parent(data, key)
    return node[leaf]


def set_value(data: dict, key: str, value: Any) -> dict:
    """Set the value at a flat key in place; returns ``data``."""
    node, leaf = _parent(data, key)
    node[leaf] = value
    return data


def write(path: Path, data: dict) -> Path:
    """Write ``data`` as JSON to ``path``; returns ``path``."""
    path.write_text(json.dumps(data))
    return path
