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

from gapscope._version import __version__
from gapscope.errors import GapscopeError

SCHEMA = "gapscope.report/1"
#: Significant digits kept for every float in the JSON, so reruns are byte-identical even when
#: the last bits of a float32 reduction differ between BLAS builds.
SIGNIFICANT_DIGITS = 8

#: Good direction of the extra diagnostics' leaf keys (see :mod:`gapscope.analysis.diagnostics`); their
#: other keys describe rather than judge.
DIAGNOSTIC_DIRECTIONS: dict[str, str] = {
    "effective_rank": "higher",
    "effective_rank_ratio": "higher",
    "variance_top1": "lower",
    "variance_top10": "lower",
    "separability": "lower",
    "cka": "higher",
    "overlap": "lower",
    "negatives_above_median_positive": "lower",
    "auc": "higher",
    "gram_volume_mean": "lower",
    "gram_volume_median": "lower",
}

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
    **DIAGNOSTIC_DIRECTIONS,
}


def round_float(value: float, digits: int = SIGNIFICANT_DIGITS) -> float | None:
    """Round to ``digits`` significant digits; NaN and infinities become ``None`` (JSON null)."""
    if value is None or not math.isfinite(value):
        return None
    if value == 0:
        return 0.0
    return float(f"{value:.{digits}g}")


def json_ready(value: Any) -> Any:
    """Recursively round floats (:func:`round_float`) and turn tuples into lists, for stable
    JSON; used by every JSON document gapscope writes.

    >>> json_ready({"gap": 0.123456789123, "ci": (1, float("nan"))})
    {'gap': 0.12345679, 'ci': [1, None]}
    """
    return _clean(value)


def json_text(data: Any) -> str:
    """Deterministic JSON text of any gapscope document: rounded floats, sorted keys, indented.

    >>> print(json_text({"b": 1, "a": 0.1234567891}), end="")
    {
      "a": 0.12345679,
      "b": 1
    }
    """
    return json.dumps(_clean(data), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _clean(value: Any) -> Any:
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
        tuples: metrics of three or more modalities together (GRAM volume), keyed
            ``"image-text-audio"``.
        notes: plain-words remarks (skipped steps, left-out queries, estimates).
    """

    input: dict[str, Any]
    params: dict[str, Any]
    modalities: dict[str, dict[str, Any]] = field(default_factory=dict)
    pairs: dict[str, dict[str, Any]] = field(default_factory=dict)
    tuples: dict[str, dict[str, Any]] = field(default_factory=dict)
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
                "tuples": self.tuples,
                "notes": self.notes,
                "directions": DIRECTIONS,
            }
        )

    def to_json(self) -> str:
        """Deterministic JSON text: sorted keys, rounded floats, no timestamps."""
        return json_text(self.to_dict())

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
                tuples=data.get("tuples", {}),
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
        as they are. Only numbers are kept (no strings, booleans or nulls). A bootstrap interval
        ``"gap_ci": [low, high]`` becomes two keys, ``".../gap_ci/low"`` and
        ``".../gap_ci/high"``.
        """
        return flatten_report(self.to_dict())


def flatten_report(data: dict[str, Any], *, keep_null: bool = False) -> dict[str, Any]:
    """The flat mapping of a report's JSON mapping (see :meth:`Report.to_flat`), sorted by key.

    With ``keep_null``, metrics that are ``null`` (not defined for this input) are kept as
    ``None`` instead of left out, so a missing metric can be told from an undefined one.

    >>> flatten_report({"modalities": {"image": {"cone": 0.5, "cone_ci": [0.4, 0.6]}},
    ...                 "pairs": {"image-text": {"mir": None}}}, keep_null=True)
    {'image-text/mir': None, 'image/cone': 0.5, 'image/cone_ci/high': 0.6, 'image/cone_ci/low': 0.4}
    """
    flat: dict[str, Any] = {}
    for section in ("modalities", "pairs", "tuples"):
        for name, metrics in data.get(section, {}).items():
            _flatten(name, metrics, flat, keep_null)
    return dict(sorted(flat.items()))


def metric_leaf(key: str) -> str:
    """The metric name of a flat key: its last component, what :func:`direction_of` takes.

    >>> metric_leaf("image-text/recall/text->image/R@5")
    'R@5'
    """
    return key.rsplit("/", 1)[-1]


def is_detail_key(key: str) -> bool:
    """Whether a flat key is a number *about* a metric (an interval bound, a standard error)
    or a hypothetical what-if rather than a metric of the checkpoint.

    >>> is_detail_key("image-text/gap_ci/low"), is_detail_key("image/uniformity_se")
    (True, True)
    >>> is_detail_key("image-text/gap"), is_detail_key("image-text/whatif/centered/gap")
    (False, True)
    """
    parts = key.split("/")
    # What-if values describe a hypothetical fix, not the checkpoint: never gate on them.
    if "whatif" in parts:
        return True
    return (len(parts) >= 2 and parts[-2].endswith("_ci")) or parts[-1].endswith(("_ci", "_se"))


def interval_of(flat: dict[str, Any], key: str) -> tuple[float, float] | None:
    """The bootstrap interval of metric ``key`` in a flat mapping, or None when it has none.

    >>> interval_of({"image/cone": 0.5, "image/cone_ci/low": 0.4, "image/cone_ci/high": 0.6},
    ...             "image/cone")
    (0.4, 0.6)
    """
    low, high = flat.get(f"{key}_ci/low"), flat.get(f"{key}_ci/high")
    if low is None or high is None:
        return None
    return float(low), float(high)


def _flatten(prefix: str, value: Any, out: dict[str, Any], keep_null: bool) -> None:
    if isinstance(value, dict):
        for key, sub in value.items():
            _flatten(f"{prefix}/{key}", sub, out, keep_null)
    elif isinstance(value, list) and prefix.endswith("_ci") and len(value) == 2:
        for bound, sub in zip(("low", "high"), value, strict=True):
            _flatten(f"{prefix}/{bound}", sub, out, keep_null)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        out[prefix] = value
    elif value is None and keep_null:
        out[prefix] = None
