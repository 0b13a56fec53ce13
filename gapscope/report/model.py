"""The :class:`Report`: everything one ``gapscope analyze`` run found, in one object.

Its JSON form (schema ``gapscope.report/1``, see DESIGN.md) is a contract that dashboards and
``gapscope check`` rely on: keys may be added, the documented key paths never renamed within a
schema version.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from gapscope import __version__
from gapscope.errors import GapscopeError

SCHEMA = "gapscope.report/1"
#: Significant digits kept for every float in the JSON, so reruns are byte-identical even when
#: the last bits of a float32 reduction differ between BLAS builds.
SIGNIFICANT_DIGITS = 8

#: Which way is better, for every metric name that can appear as a leaf key.
DIRECTIONS: dict[str, str] = {
    "gap": "lower",
    "centroid_cosine": "higher",
    "paired_cosine": "higher",
    "unpaired_cosine": "lower",
    "cone": "lower",
    "uniformity": "lower",
    "alignment": "lower",
    "mir": "lower",
    "fd": "lower",
    "R@K": "higher",
    "mAP": "higher",
    "R-precision": "higher",
}


def round_float(value: float, digits: int = SIGNIFICANT_DIGITS) -> float | None:
    """Round to ``digits`` significant digits; NaN and infinities become ``None`` (JSON null)."""
    if value is None or not math.isfinite(value):
        return None
    if value == 0:
        return 0.0
    return float(f"{value:.{digits}g}")


def _clean(value: Any) -> Any:
    """Recursively round floats and turn tuples into lists, for stable JSON."""
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return round_float(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item"):  # numpy / torch scalars
        return _clean(value.item())
    raise TypeError(f"cannot serialise {type(value).__name__} in a report")


def direction_of(metric: str) -> str | None:
    """The good direction of a metric key ('lower' or 'higher'), or None when it has none.

    >>> direction_of("R@5"), direction_of("gap"), direction_of("n_queries")
    ('higher', 'lower', None)
    """
    if metric.startswith("R@"):
        return DIRECTIONS["R@K"]
    return DIRECTIONS.get(metric)


@dataclass
class Report:
    """The result of one analysis.

    Attributes:
        input: what was analysed: ``source``, ``fingerprint`` (sha256 of the embeddings), ``model``
            (the store's encoder description or None) and per-modality ``n``, ``dim``, ``dtype``,
            ``raw_norm_mean``.
        params: the parameters that shaped the numbers (k, seed, t, alpha, sample, metrics, ...).
        modalities: per-modality metrics (``cone``, ``uniformity``).
        pairs: per-pair metrics keyed ``"<first>-<second>"`` in the order image, text, audio.
        notes: plain-words remarks (skipped steps, left-out queries, estimates).
    """

    input: dict[str, Any]
    params: dict[str, Any]
    modalities: dict[str, dict[str, Any]] = field(default_factory=dict)
    pairs: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    schema: str = SCHEMA
    gapscope_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready mapping: floats rounded, keys as in DESIGN.md."""
        return _clean(
            {
                "schema": self.schema,
                "gapscope_version": self.gapscope_version,
                "input": self.input,
                "params": self.params,
                "modalities": self.modalities,
                "pairs": self.pairs,
                "notes": self.notes,
                "directions": DIRECTIONS,
            }
        )

    def to_json(self) -> str:
        """Deterministic JSON text: sorted keys, rounded floats, no timestamps."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """Rebuild a report from its JSON mapping; refuses other schema versions."""
        if not isinstance(data, dict):
            raise GapscopeError("a report must be a JSON object")
        schema = data.get("schema")
        if schema != SCHEMA:
            raise GapscopeError(f"report has schema {schema!r}; this gapscope reads {SCHEMA!r}")
        try:
            return cls(
                input=data["input"],
                params=data["params"],
                modalities=data.get("modalities", {}),
                pairs=data.get("pairs", {}),
                notes=data.get("notes", []),
                schema=schema,
                gapscope_version=data.get("gapscope_version", "unknown"),
            )
        except KeyError as exc:
            raise GapscopeError(f"report lacks the {exc.args[0]!r} section") from None

    @classmethod
    def from_json(cls, text: str) -> Report:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GapscopeError(
                f"report is not valid JSON ({exc.msg} at line {exc.lineno})"
            ) from None
        return cls.from_dict(data)

    def to_flat(self) -> dict[str, float]:
        """One flat ``"<pair or modality>/<metric>[/<detail>]" -> number`` mapping.

        The shape MLflow's ``log_metrics``, Weights & Biases' ``log`` and TensorBoard scalars take
        as they are. Only numbers are kept (no strings, booleans or nulls).
        """
        flat: dict[str, float] = {}
        data = self.to_dict()
        for section in ("modalities", "pairs"):
            for name, metrics in data[section].items():
                _flatten(name, metrics, flat)
        return dict(sorted(flat.items()))


def _flatten(prefix: str, value: Any, out: dict[str, float]) -> None:
    if isinstance(value, dict):
        for key, sub in value.items():
            _flatten(f"{prefix}/{key}", sub, out)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        out[prefix] = value
