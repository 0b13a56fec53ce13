"""gapscope: diagnose the embedding spaces of multimodal contrastive models.

>>> from gapscope import EmbeddingStore, analyze
"""

from __future__ import annotations

__version__ = "0.1.0"

# The function `analyze` shares its name with the module `gapscope.analyze`; importing it here,
# after the module, binds the package attribute to the function.
from gapscope.analyze import analyze  # noqa: E402
from gapscope.errors import EmbeddingError, GapscopeError, StoreError  # noqa: E402
from gapscope.report.model import Report  # noqa: E402
from gapscope.sources import EmbeddingSet  # noqa: E402
from gapscope.store import EmbeddingStore  # noqa: E402

__all__ = [
    "EmbeddingError",
    "EmbeddingSet",
    "EmbeddingStore",
    "GapscopeError",
    "Report",
    "StoreError",
    "__version__",
    "analyze",
]
