"""The one place that turns a device name (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``)
into an available torch device.

``auto`` means the first available accelerator *that the task supports*, else the CPU. The
similarity passes support CUDA (their float64 bookkeeping stays on the host, and MPS has no
float64), so analysis asks for ``accelerators=("cuda",)``; extraction runs encoders, which
Apple's MPS also runs, and asks for ``("cuda", "mps")``. An explicit ``mps`` is always
accepted when the backend is there.
"""

from __future__ import annotations

import torch

from gapscope.errors import GapscopeError

__all__ = ["ANALYSIS_ACCELERATORS", "EXTRACTION_ACCELERATORS", "resolve_device"]

#: What ``auto`` may pick for the similarity passes, and for extraction, in order.
ANALYSIS_ACCELERATORS = ("cuda",)
EXTRACTION_ACCELERATORS = ("cuda", "mps")

_CHOICES = "auto, cpu, cuda, cuda:N or mps"


def _available(kind: str) -> bool:
    if kind == "cuda":
        return torch.cuda.is_available()
    backend = getattr(torch.backends, kind, None)
    return bool(backend is not None and backend.is_available())


def resolve_device(
    device: str | torch.device | None = "auto",
    *,
    accelerators: tuple[str, ...] = ANALYSIS_ACCELERATORS,
) -> torch.device:
    """An available torch device for ``device``; ``None`` or ``"auto"`` picks the first
    available of ``accelerators``, else the CPU.

    Raises:
        GapscopeError: an unknown name, or a device this machine does not have.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, torch.device):
        name = str(device)
    else:
        name = "auto" if device is None else str(device).strip().lower()
    if name == "auto":
        for kind in accelerators:
            if _available(kind):
                return torch.device(kind)
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise GapscopeError(f"unknown device {name!r}: use {_CHOICES}") from None
    if dev.type == "cuda":
        if not _available("cuda"):
            raise GapscopeError("device cuda: no CUDA device is available (use cpu or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise GapscopeError(
                f"device {name}: only {torch.cuda.device_count()} CUDA device(s) available"
            )
    elif dev.type == "mps":
        if not _available("mps"):
            raise GapscopeError("device mps: Apple MPS is not available (use cpu or auto)")
    elif dev.type != "cpu":
        raise GapscopeError(f"unknown device {name!r}: use {_CHOICES}")
    return dev
