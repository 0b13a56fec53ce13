"""The library's entry point: :func:`analyze` a store or arrays into a :class:`Report`."""

from __future__ import annotations

from gapscope.analysis.orchestrator import analyze

__all__ = ["analyze"]
