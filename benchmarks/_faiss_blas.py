"""Which kernels the OpenBLAS bundled with the faiss-cpu wheel runs on this CPU.

faiss's exact search is a BLAS product, so the faiss baseline is only as fair as the BLAS
under it. The wheel bundles its own OpenBLAS (``faiss_cpu.libs/libopenblas*``, 0.3.15 in
faiss-cpu 1.15.1), which picks its kernels from the CPU's model number at load time; on a CPU
newer than it knows it falls back to generic SSE3 kernels ("Prescott"), several times slower
than the AVX-512 ones (``docs/performance.md``, "Every reference point in one run").
``OPENBLAS_CORETYPE`` (e.g. ``SkylakeX``) chooses the kernels instead.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
from typing import TextIO

#: OpenBLAS's targets without AVX2: on a CPU that has AVX2 or AVX-512 they mean the library
#: did not recognise it.
GENERIC_CORES = frozenset(
    (
        "Katmai",
        "Coppermine",
        "Northwood",
        "Prescott",
        "Banias",
        "Core2",
        "Penryn",
        "Dunnington",
        "Nehalem",
        "Atom",
    )
)


def faiss_blas() -> dict[str, str] | None:
    """``{"config": ..., "core": ...}`` of the OpenBLAS that faiss loaded (its
    ``openblas_get_config`` and ``openblas_get_corename``), or ``None`` where faiss is not
    installed or links another BLAS."""
    try:
        import faiss
    except ImportError:
        return None
    folder = os.path.join(os.path.dirname(os.path.dirname(faiss.__file__)), "faiss_cpu.libs")
    found = sorted(glob.glob(os.path.join(folder, "libopenblas*")))
    if not found:
        return None
    # Loaded by faiss already: this opens the same library, with the kernels it chose.
    lib = ctypes.CDLL(found[0])
    out = {}
    for key, name in (("config", "openblas_get_config"), ("core", "openblas_get_corename")):
        function = getattr(lib, name, None)
        if function is None:
            return None
        function.restype = ctypes.c_char_p
        out[key] = function().decode()
    return out


def _has_avx2() -> bool:
    """Whether this CPU says it has AVX2 (Linux's ``/proc/cpuinfo``; ``False`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return any(line.startswith("flags") and " avx2" in line for line in f)
    except OSError:
        return False


def blas_warning(blas: dict[str, str] | None) -> str | None:
    """One line to print when faiss's OpenBLAS runs generic kernels on a CPU with AVX2."""
    if blas is None or blas["core"] not in GENERIC_CORES or not _has_avx2():
        return None
    return (
        f"warning: faiss's bundled OpenBLAS runs its generic {blas['core']} kernels on this "
        "CPU, so the faiss figure is slow; OPENBLAS_CORETYPE=SkylakeX (or the newest target "
        "this CPU supports) chooses others"
    )


def checked_faiss_blas(stream: TextIO = sys.stdout) -> dict[str, str] | None:
    """:func:`faiss_blas`, after printing :func:`blas_warning` to ``stream`` when it has one;
    what the benchmarks record beside their faiss figures."""
    blas = faiss_blas()
    warning = blas_warning(blas)
    if warning:
        print(warning, file=stream)
    return blas
