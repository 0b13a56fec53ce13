"""Metrics: pure functions on embedding arrays, one concept a module, no I/O.

Every function accepts numpy arrays (memory maps included) or torch tensors of shape (n, d),
validates them first, and L2-normalises rows itself, except MIR which needs the raw rows.
"""

from gapscope.metrics.cone import cone_effect
from gapscope.metrics.cosine import PairCosine, paired_cosine
from gapscope.metrics.gap import ModalityGap, modality_gap
from gapscope.metrics.mir import MIRResult, modality_integration_rate
from gapscope.metrics.retrieval import (
    RetrievalResult,
    cross_modal_retrieval,
    intra_modal_retrieval,
)
from gapscope.metrics.uniformity import alignment, uniformity, uniformity_sampled

__all__ = [
    "MIRResult",
    "ModalityGap",
    "PairCosine",
    "RetrievalResult",
    "alignment",
    "cone_effect",
    "cross_modal_retrieval",
    "intra_modal_retrieval",
    "modality_gap",
    "modality_integration_rate",
    "paired_cosine",
    "uniformity",
    "uniformity_sampled",
]
