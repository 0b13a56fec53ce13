"""What a training-loop callback must have logged: the flat report of the batches it saw,
computed directly with ``analyze`` and the preset's metrics and sample."""

from __future__ import annotations

import torch

from gapscope import analyze
from gapscope.integrations.metric import PRESETS


def expected(pairs, preset: str) -> dict[str, float]:
    """The flat values of ``preset`` on the ``(image, text, ...)`` batches ``pairs``."""
    image = torch.cat([p[0] for p in pairs])
    text = torch.cat([p[1] for p in pairs])
    chosen = PRESETS[preset]
    report = analyze(
        {"image": image, "text": text}, metrics=chosen.metrics, sample=chosen.sample, device="cpu"
    )
    return {k: float(v) for k, v in report.to_flat().items()}
