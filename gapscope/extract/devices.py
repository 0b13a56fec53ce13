"""Choosing the device and the numeric precision of an extraction."""

from __future__ import annotations

import warnings

import torch

from gapscope.errors import GapscopeError

PRECISIONS = ("fp32", "fp16", "bf16")
_AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` into an available torch device.

    ``auto`` picks CUDA, then Apple's MPS, then the CPU.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    name = name.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise GapscopeError(
            f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise GapscopeError("--device cuda: no CUDA device is available (use cpu or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise GapscopeError(
                f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) available"
            )
    elif device.type == "mps":
        if not _mps_available():
            raise GapscopeError("--device mps: Apple MPS is not available (use cpu or auto)")
    elif device.type != "cpu":
        raise GapscopeError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    return device


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The dtype to autocast to for ``precision`` on ``device`` (``None`` for fp32).

    Raises :class:`GapscopeError` when the device cannot compute in that precision.

    >>> autocast_dtype(torch.device("cpu"), "fp32") is None
    True
    """
    if precision not in PRECISIONS:
        raise GapscopeError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return None
    dtype = _AUTOCAST_DTYPES[precision]
    if device.type == "cuda" and dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise GapscopeError(f"--precision bf16: {torch.cuda.get_device_name(device)} lacks bf16")
    # Ask the device itself rather than keeping a table that goes stale with torch releases.
    # torch either raises or warns ("... Disabling autocast") when a dtype is unsupported.
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with torch.autocast(device_type=device.type, dtype=dtype):
                probe = torch.ones(2, 2, device=device)
                (probe @ probe).sum().item()
    except (RuntimeError, TypeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise GapscopeError(
            f"--precision {precision} is not supported on {device.type} ({reason}); use fp32"
        ) from None
    if any("autocast" in str(w.message).lower() for w in caught):
        raise GapscopeError(f"--precision {precision} is not supported on {device.type}; use fp32")
    return dtype
