"""Optional dependencies: which extra of gapscope brings which package, and one clear error
when one is missing.

The core install (``pip install gapscope``) analyses, checks and diffs; extraction, audio,
plots, the separability diagnostic and each experiment tracker need an extra each. A feature
that needs one calls :func:`require`, which imports the package or raises a
:class:`~gapscope.errors.MissingDependencyError` naming the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from gapscope.errors import MissingDependencyError

__all__ = ["EXTRAS", "require"]

#: Import name -> (package to install, the extra of gapscope that brings it).
EXTRAS: dict[str, tuple[str, str]] = {
    "open_clip": ("open_clip_torch", "extract"),
    "PIL": ("pillow", "extract"),
    "safetensors": ("safetensors", "extract"),
    "transformers": ("transformers", "audio"),
    "soundfile": ("soundfile", "audio"),
    "scipy": ("scipy", "audio"),
    "matplotlib": ("matplotlib", "plot"),
    "umap": ("umap-learn", "umap"),
    "pyarrow": ("pyarrow", "parquet"),
    "mlflow": ("mlflow-skinny", "mlflow"),
    "sqlalchemy": ("sqlalchemy", "mlflow"),
    "alembic": ("alembic", "mlflow"),
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
    "lightning": ("lightning", "lightning"),
    "accelerate": ("accelerate", "huggingface"),
    "webdataset": ("webdataset", "webdataset"),
    "datasets": ("datasets", "hf-datasets"),
    "fsspec": ("fsspec", "remote"),
}


def require(module: str, purpose: str, *, extra: str | None = None) -> ModuleType:
    """Import ``module`` for ``purpose`` (a few words, e.g. "the separability diagnostic");
    ``extra`` names the extra to install instead of ``EXTRAS``' (for a package that several
    extras bring).

    Raises:
        MissingDependencyError: the module is not installed; the message names the package
            and the extra (``pip install 'gapscope[plot]'``).

    >>> require("json", "a doctest").__name__
    'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        package, listed = EXTRAS.get(module, (module, None))
        extra = extra or listed
        how = f"pip install 'gapscope[{extra}]'" if extra else f"pip install {package}"
        raise MissingDependencyError(
            f"{package}, needed for {purpose}, is not installed: {how}"
        ) from None
