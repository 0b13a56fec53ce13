"""The numeric precision of an extraction (the device comes from
:func:`gapscope.engine.devices.resolve_device` with ``EXTRACTION_ACCELERATORS``)."""

from __future__ import annotations

import warnings

import torch

from gapscope.errors import GapscopeError

PRECISIONS = ("fp32", "fp16", "bf16")
_AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


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
