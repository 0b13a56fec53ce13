"""gapscope: diagnose the embedding spaces of multimodal contrastive models.

>>> from gapscope import EmbeddingStore, analyze

The public names are imported on first use, so ``import gapscope`` (and commands that only
compare JSON reports, such as ``gapscope check``) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gapscope._version import __version__
from gapscope.errors import (
    EmbeddingError,
    GapscopeError,
    ProcessCrashedError,
    ProcessFailedError,
    StoreError,
)

if TYPE_CHECKING:
    from gapscope.api import analyze
    from gapscope.data.embedding_set import EmbeddingSet
    from gapscope.data.store import EmbeddingStore
    from gapscope.integrations.metric import GapMetric
    from gapscope.report.model import Report

_LAZY = {
    "analyze": "gapscope.api",
    "EmbeddingSet": "gapscope.data.embedding_set",
    "EmbeddingStore": "gapscope.data.store",
    "GapMetric": "gapscope.integrations.metric",
    "Report": "gapscope.report.model",
}

__all__ = [
    "EmbeddingError",
    "EmbeddingSet",
    "EmbeddingStore",
    "GapMetric",
    "GapscopeError",
    "ProcessCrashedError",
    "ProcessFailedError",
    "Report",
    "StoreError",
    "__version__",
    "analyze",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gapscope' has no attribute {name!r}")
