"""Metrics: one public function a metric, on numpy arrays or torch tensors, no I/O.

Every function accepts arrays (memory maps included) or tensors of shape ``(n, d)``,
validates them first (an already validated :class:`~gapscope.engine.validation.Embeddings`
is not scanned again), and L2-normalises rows itself, except MIR, which needs the raw rows.
The O(n^2) metrics are thin over the passes of :mod:`gapscope.engine.passes`, which
``gapscope analyze`` runs too, so a function here and the report agree on the same input.
"""

from gapscope.engine.ranking import RetrievalResult
from gapscope.metrics.alignment import alignment
from gapscope.metrics.cone import cone_effect
from gapscope.metrics.cosine import PairCosine, paired_cosine
from gapscope.metrics.gap import ModalityGap, modality_gap
from gapscope.metrics.kernel_distance import cross_modal_uniformity, mmd2
from gapscope.metrics.mir import MIRResult, modality_integration_rate
from gapscope.metrics.retrieval import cross_modal_retrieval, intra_modal_retrieval
from gapscope.metrics.uniformity import uniformity, uniformity_sampled

__all__ = [
    "MIRResult",
    "ModalityGap",
    "PairCosine",
    "RetrievalResult",
    "alignment",
    "cone_effect",
    "cross_modal_retrieval",
    "cross_modal_uniformity",
    "intra_modal_retrieval",
    "mmd2",
    "modality_gap",
    "modality_integration_rate",
    "paired_cosine",
    "uniformity",
    "uniformity_sampled",
]
