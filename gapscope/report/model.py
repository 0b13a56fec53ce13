"""The :class:`Report`: everything one analysis found, in one object, and its JSON form.

The JSON form (schema ``gapscope.report/2``, every key in :mod:`gapscope.analysis.keys`) is a
contract that dashboards and ``gapscope check`` rely on. Version policy: additive changes (new
keys) keep the schema version; a breaking change (a renamed or removed key path, a changed
meaning) bumps it, and ``check`` and ``diff`` keep reading the previous version by upgrading
it on reading (:func:`upgrade_report`), so a committed baseline keeps working across an
upgrade.

Schema 2 differs from schema 1 in three places: intra-modal retrieval is stored once, under
its modality (``modalities.<m>.recall.<m>-><m>``) instead of in every pair of that modality;
``gap_direction.coord_top1_share``/``coord_top10_share`` are gone (they repeated
``gap_concentration.top1``/``top10``); ``mir_detail.fd`` has no direction (MIR is its log).

This module imports nothing heavy, so the gate reads reports without loading torch.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gapscope._version import __version__
from gapscope.analysis import keys as K
from gapscope.errors import GapscopeError
from gapscope.report.run import RunInfo, check_step, check_tags, checkpoint_identity, run_info

if TYPE_CHECKING:
    from gapscope.analysis.context import AnalysisContext
    from gapscope.analysis.result import Analysis

__all__ = [
    "READABLE_SCHEMAS",
    "SCHEMA",
    "SCHEMA_V1",
    "SIGNIFICANT_DIGITS",
    "Report",
    "flatten_report",
    "interval_of",
    "json_ready",
    "json_text",
    "round_float",
    "tracker_flat",
    "upgrade_report",
]

SCHEMA = "gapscope.report/2"
SCHEMA_V1 = "gapscope.report/1"
#: Report schemas this version reads: the current one and the previous one (upgraded).
READABLE_SCHEMAS = (SCHEMA, SCHEMA_V1)
#: Significant digits kept for every float in the JSON, so reruns are byte-identical even when
#: the last bits of a float32 reduction differ between BLAS builds.
SIGNIFICANT_DIGITS = 8
_SECTIONS = ("modalities", "pairs", "tuples")
_TRACKER_RECALL = re.compile(r"^R[0-9]+$")


def round_float(value: float | None, digits: int = SIGNIFICANT_DIGITS) -> float | None:
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


@dataclass
class Report:
    """The result of one analysis.

    Attributes:
        input: what was analysed: ``source``, ``fingerprint`` (sha256 of the embeddings),
            ``model`` (the store's encoder description or None) and per-modality ``n``,
            ``dim``, ``dtype``, ``raw_norm_mean``.
        params: the parameters that shaped the numbers (k, seed, t, alpha, sample, metrics, ...).
        modalities: per-modality metrics (``cone``, ``uniformity``, intra-modal ``recall``, ...).
        pairs: per-pair metrics keyed ``"<first>-<second>"`` in the order image, text, audio.
        tuples: metrics of three or more modalities together (GRAM volume), keyed
            ``"image-text-audio"``.
        notes: plain-words remarks (skipped steps, left-out queries, estimates).
        directions: the good direction (``"lower"``/``"higher"``) of each leaf key that has one.
        run: the run the report belongs to, ``{"step", "tags", "checkpoint"}`` (see
            :mod:`gapscope.report.run`); None for a report written before reports had one.
        context: the analysis context the report came from (``None`` for a report read from
            JSON): the views draw plots from it instead of computing anything again.
    """

    input: dict[str, Any]
    params: dict[str, Any]
    modalities: dict[str, dict[str, Any]] = field(default_factory=dict)
    pairs: dict[str, dict[str, Any]] = field(default_factory=dict)
    tuples: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    directions: dict[str, str] = field(default_factory=lambda: dict(K.DIRECTIONS))
    run: dict[str, Any] | None = None
    schema: str = SCHEMA
    gapscope_version: str = __version__
    context: AnalysisContext | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_analysis(
        cls,
        analysis: Analysis,
        *,
        step: int | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> Report:
        """The report of an :class:`~gapscope.analysis.result.Analysis`, with its run fields:
        the training ``step``, the ``tags`` and the checkpoint identity of its input (see
        :mod:`gapscope.report.run`).

        Raises:
            GapscopeError: a step that is not an integer >= 0, a malformed tag.
        """
        run = RunInfo(
            checkpoint=checkpoint_identity(analysis.input),
            step=check_step(step),
            tags=check_tags(tags),
        )
        return cls(
            input=analysis.input,
            params=analysis.params,
            modalities=analysis.modalities,
            pairs=analysis.pairs,
            tuples=analysis.tuples,
            notes=analysis.notes,
            directions=analysis.directions,
            run=run.to_dict(),
            context=analysis.context,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready mapping: floats rounded, keys as in :mod:`gapscope.analysis.keys`.
        ``run`` is written when the report has one (every analysis gives one)."""
        data = {
            K.SCHEMA_FIELD: self.schema,
            K.VERSION_FIELD: self.gapscope_version,
            K.INPUT_SECTION: self.input,
            K.PARAMS_SECTION: self.params,
            K.MODALITIES_SECTION: self.modalities,
            K.PAIRS_SECTION: self.pairs,
            K.TUPLES_SECTION: self.tuples,
            K.NOTES_SECTION: self.notes,
            K.DIRECTIONS_SECTION: self.directions,
        }
        if self.run is not None:
            data[K.RUN_SECTION] = self.run
        return _clean(data)

    def to_json(self) -> str:
        """Deterministic JSON text: sorted keys, rounded floats, no timestamps."""
        return json_text(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """Rebuild a report from its JSON mapping; a schema-1 report is upgraded first
        (:func:`upgrade_report`), any other schema refused."""
        if not isinstance(data, dict):
            raise GapscopeError("a report must be a JSON object")
        schema = data.get(K.SCHEMA_FIELD)
        if schema not in READABLE_SCHEMAS:
            raise GapscopeError(
                f"report has schema {schema!r}; this gapscope reads "
                f"{' and '.join(READABLE_SCHEMAS)}"
            )
        if schema == SCHEMA_V1:
            data = upgrade_report(data)
        try:
            return cls(
                input=data[K.INPUT_SECTION],
                params=data[K.PARAMS_SECTION],
                modalities=data.get(K.MODALITIES_SECTION, {}),
                pairs=data.get(K.PAIRS_SECTION, {}),
                tuples=data.get(K.TUPLES_SECTION, {}),
                notes=data.get(K.NOTES_SECTION, []),
                directions=data.get(K.DIRECTIONS_SECTION) or dict(K.DIRECTIONS),
                run=data.get(K.RUN_SECTION),
                schema=SCHEMA,
                gapscope_version=data.get(K.VERSION_FIELD, "unknown"),
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
        """The metrics as one flat ``"<pair or modality>/<metric>[/<detail>]" -> number``
        mapping, in the spelling every tracker takes (:func:`~gapscope.analysis.keys.tracker_key`:
        ``image-text/recall/image_to_text/R5`` for the JSON path
        ``pairs.image-text.recall.image->text.R@5``), sorted by key.

        The shape MLflow's ``log_metrics``, Weights & Biases' ``log`` and TensorBoard scalars
        take as it is (:meth:`log_to` logs it with the run fields). Only numbers are kept (no
        strings, booleans or nulls). A bootstrap interval ``"gap_ci": [low, high]`` becomes two
        keys, ``".../gap_ci/low"`` and ``".../gap_ci/high"``. The run fields are not metrics
        and are left out (:attr:`run_info`); ``--format flat`` and CSV add them.
        :func:`flatten_report` gives the same mapping keyed by the JSON paths
        (``image-text/recall/image->text/R@5``), the spelling ``check`` and ``diff`` show.

        >>> Report(input={}, params={}, pairs={"image-text": {"recall": {"text->image":
        ...     {"R@5": 0.8}}}}).to_flat()
        {'image-text/recall/text_to_image/R5': 0.8}
        """
        return tracker_flat(flatten_report(self.to_dict()))

    def to_long(self) -> list[dict[str, Any]]:
        """The report as the rows of the tidy long table (``--format long``): one mapping a
        metric with ``pair``, ``modality``, ``direction``, ``metric``, ``k``, ``value``,
        ``ci_low``, ``ci_high``, ``se``, ``step``, ``tags`` and ``checkpoint`` (None for an
        empty cell); every number of :meth:`to_flat` is in exactly one cell. See
        :mod:`gapscope.report.long`, whose ``write_long`` writes them as CSV or Parquet.

        >>> rows = Report(input={}, params={}, pairs={"image-text": {"recall": {"text->image":
        ...     {"R@5": 0.8}}}}).to_long()
        >>> [(r["pair"], r["direction"], r["metric"], r["k"], r["value"]) for r in rows]
        [('image-text', 'text->image', 'recall', 5, 0.8)]
        """
        from gapscope.report.long import long_rows

        return long_rows(self)

    @property
    def run_info(self) -> RunInfo:
        """The run fields: the recorded ``run`` section, or for a report written without one,
        no step, no tags and the checkpoint identity of its ``input``."""
        return run_info(self.to_dict())

    def log_to(self, tracker: Any, *, step: int | None = None) -> Any:
        """Log this report to an experiment tracker: its metrics (:meth:`to_flat`) at its step,
        its run fields (``checkpoint``, ``tag.<key>``) beside them.

        Args:
            tracker: ``"mlflow:<tracking URI>"``, ``"tensorboard:<folder>"``,
                ``"wandb:<project>"`` (or ``"wandb"``), a
                :class:`~gapscope.report.trackers.Tracker`, or a tracker's own object: an
                MLflow run (``mlflow.start_run()``), a TensorBoard ``SummaryWriter`` or a W&B
                run (``wandb.init()``). See :mod:`gapscope.report.trackers`.
            step: the step to log at; default the report's recorded step, else 0.

        Returns:
            A :class:`~gapscope.report.trackers.Logged`: where the values went, at which step.

        Raises:
            MissingDependencyError: the tracker's package is not installed (the message names
                the extra: ``pip install 'gapscope[mlflow]'``).
            GapscopeError: a malformed tracker spec, or the tracker refused the values.
        """
        from gapscope.report.trackers import log_reports

        return log_reports([self], tracker, steps=[step])

    def direction_of(self, flat_key: str) -> str | None:
        """The good direction of a flat key, in either spelling
        (``image-text/recall/text->image/R@5`` or ``image-text/recall/text_to_image/R5``), by
        this report's own ``directions``."""
        leaf = K.metric_leaf(flat_key)
        found = K.direction_of(leaf, self.directions)
        if found is not None:
            return found
        if _TRACKER_RECALL.match(leaf):
            return K.direction_of(K.recall_key(int(leaf[1:])), self.directions)
        names = {K.tracker_key(name): name for name in self.directions}
        return self.directions.get(names.get(leaf, leaf))


def upgrade_report(data: dict[str, Any]) -> dict[str, Any]:
    """A schema-1 report's JSON mapping as schema 2 (a new mapping; ``data`` is not changed).

    Intra-modal retrieval moves from every pair to its modality (the copies were equal);
    the gap-share duplicates leave ``gap_direction``; ``fd`` loses its direction.

    >>> v1 = {"schema": "gapscope.report/1", "input": {}, "params": {},
    ...       "modalities": {"image": {"cone": 0.3}},
    ...       "pairs": {"image-text": {"recall": {"image->image": {"R@1": 0.9},
    ...                                           "image->text": {"R@1": 0.5}}}},
    ...       "directions": {"fd": "lower", "R@K": "higher"}}
    >>> v2 = upgrade_report(v1)
    >>> v2["schema"], v2["modalities"]["image"]["recall"], v2["pairs"]["image-text"]["recall"]
    ('gapscope.report/2', {'image->image': {'R@1': 0.9}}, {'image->text': {'R@1': 0.5}})
    >>> v2["directions"]
    {'R@K': 'higher'}
    """
    out = copy.deepcopy(data)
    out[K.SCHEMA_FIELD] = SCHEMA
    modalities = out.setdefault(K.MODALITIES_SECTION, {})
    for entry in out.get(K.PAIRS_SECTION, {}).values():
        recall = entry.get(K.RECALL.name)
        if isinstance(recall, dict):
            for direction in [d for d in recall if _is_intra(d)]:
                m = direction.split("->")[0]
                target = modalities.setdefault(m, {}).setdefault(K.RECALL.name, {})
                target.setdefault(direction, recall[direction])
                del recall[direction]
        direction_entry = entry.get(K.GAP_DIRECTION.name)
        if isinstance(direction_entry, dict):
            for key in [k for k in direction_entry if k.startswith("coord_top")]:
                del direction_entry[key]
    directions = out.get(K.DIRECTIONS_SECTION)
    if isinstance(directions, dict):
        directions.pop(K.FD.name, None)
    return out


def tracker_flat(flat: Mapping[str, Any]) -> dict[str, Any]:
    """A flat mapping keyed by JSON paths re-keyed in the tracker spelling
    (:func:`~gapscope.analysis.keys.tracker_key`), sorted by key.

    Raises:
        GapscopeError: two keys would share one spelling (two modality names whose retrieval
            directions spell alike, which an analysis refuses:
            :func:`~gapscope.analysis.keys.check_direction_spellings`).

    >>> tracker_flat({"image-text/recall/image->text/R@1": 0.5, "image/cone": 0.3})
    {'image-text/recall/image_to_text/R1': 0.5, 'image/cone': 0.3}
    """
    out: dict[str, Any] = {}
    for key, value in flat.items():
        spelled = K.tracker_key(key)
        if spelled in out:
            raise GapscopeError(
                f"flat keys collide in the tracker spelling: {key!r} -> {spelled!r}"
            )
        out[spelled] = value
    return dict(sorted(out.items()))


def _is_intra(direction: str) -> bool:
    query, _, key = direction.partition("->")
    return bool(key) and query == key


def flatten_report(data: dict[str, Any], *, keep_null: bool = False) -> dict[str, Any]:
    """The flat mapping of a report's JSON mapping (see :meth:`Report.to_flat`), sorted by key.

    With ``keep_null``, metrics that are ``null`` (not defined for this input) are kept as
    ``None`` instead of left out, so a missing metric can be told from an undefined one.

    >>> flatten_report({"modalities": {"image": {"cone": 0.5, "cone_ci": [0.4, 0.6]}},
    ...                 "pairs": {"image-text": {"mir": None}}}, keep_null=True)
    {'image-text/mir': None, 'image/cone': 0.5, 'image/cone_ci/high': 0.6, 'image/cone_ci/low': 0.4}
    """
    flat: dict[str, Any] = {}
    for section in _SECTIONS:
        for name, metrics in data.get(section, {}).items():
            _flatten(name, metrics, flat, keep_null)
    return dict(sorted(flat.items()))


def interval_of(flat: Mapping[str, Any], key: str) -> tuple[float, float] | None:
    """The bootstrap interval of metric ``key`` in a flat mapping, or None when it has none.

    >>> interval_of({"image/cone": 0.5, "image/cone_ci/low": 0.4, "image/cone_ci/high": 0.6},
    ...             "image/cone")
    (0.4, 0.6)
    """
    low, high = flat.get(f"{K.ci_key(key)}/low"), flat.get(f"{K.ci_key(key)}/high")
    if low is None or high is None:
        return None
    return float(low), float(high)


def _flatten(prefix: str, value: Any, out: dict[str, Any], keep_null: bool) -> None:
    if isinstance(value, dict):
        for key, sub in value.items():
            _flatten(f"{prefix}/{key}", sub, out, keep_null)
    elif isinstance(value, list) and prefix.endswith(K.ci_key("")) and len(value) == 2:
        for bound, sub in zip(("low", "high"), value, strict=True):
            _flatten(f"{prefix}/{bound}", sub, out, keep_null)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        out[prefix] = value
    elif value is None and keep_null:
        out[prefix] = None
