"""Exceptions that gapscope raises for bad input, and for another process's failure.

The CLI turns a :class:`GapscopeError` into a one-line message and exit code 2, and a
:class:`ProcessCrashedError` into one line and exit code 3; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations


class GapscopeError(ValueError):
    """Bad input or bad usage: the message is shown to the user as it is, on one line."""


class StoreError(GapscopeError):
    """An embedding store is missing, malformed or inconsistent."""


class EmbeddingError(GapscopeError):
    """Embeddings have the wrong shape, dtype or values (NaN, Inf, zero rows, ...)."""


class MissingDependencyError(GapscopeError):
    """An optional dependency is missing; the message names the extra that brings it."""


class ProcessFailedError(GapscopeError):
    """Another process sharing the analysis (``torchrun``, ``srun``) failed on its input: a
    :class:`GapscopeError` or an operating-system error there. Its own message says why."""


class ProcessCrashedError(RuntimeError):
    """Another process sharing the analysis crashed (any other error there, running out of
    memory included). Its own message says why."""
