"""The tidy table of reports (``--format long``): one row a number, in CSV or Parquet.

Each row is one metric of one report, with the columns (:data:`LONG_COLUMNS`):

- ``pair``: the pair (``image-text``) or tuple (``image-text-audio``) of modalities the metric
  belongs to; empty for a metric of one modality;
- ``modality``: the modality a metric of one modality belongs to (``image`` for
  ``modalities.image.cone``), or the modality a value of a pair is about
  (``centroid_norms/image``, ``whatif/centered/uniformity/text``); empty otherwise;
- ``direction``: the retrieval direction, in the report's spelling (``image->text``); empty
  for a metric that is not retrieval;
- ``metric``: what is left of the key path: ``gap``, ``cone``, ``recall`` (with ``k``),
  ``mAP``, ``mean_rank``, ``similarity/auc``, ``whatif/shift_0.5/recall``, ...;
- ``k``: the K of recall@K; empty otherwise;
- ``value``: the number;
- ``ci_low``, ``ci_high``: its bootstrap interval (``analyze --bootstrap``), ``se``: its
  standard error (``--sample``, the separability folds, the mean GRAM volume); empty when
  the report has none;
- ``step``, ``tags``, ``checkpoint``: the run the report belongs to
  (:mod:`gapscope.report.run`); ``tags`` as one string ``key=value;key=value`` sorted by key
  (in a value, ``%`` is written ``%25`` and ``;`` ``%3B``; :func:`parse_long_tags` reads it
  back).

Every number of the report's flat form (:meth:`~gapscope.report.model.Report.to_flat`) is in
exactly one cell: a metric's value in ``value``, its interval bounds and standard error in
``ci_low``, ``ci_high`` and ``se`` of the metric's row (a metric that is ``null`` keeps its
row, with an empty ``value``, when it has an interval). Rows are sorted by the report's key
paths; the same report gives the same bytes. CSV needs only the standard library; Parquet
(typed columns: integers for ``k`` and ``step``, floats for the numbers, nulls for empty
cells) needs the ``parquet`` extra (pyarrow). This module imports nothing heavy.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gapscope.analysis import keys as K
from gapscope.data.atomic import atomic_write_bytes, atomic_write_text
from gapscope.errors import GapscopeError
from gapscope.report.model import Report, flatten_report

__all__ = [
    "LONG_COLUMNS",
    "PARQUET_SUFFIX",
    "long_rows",
    "long_table",
    "parse_long_tags",
    "to_long_csv",
    "to_long_parquet",
    "write_long",
]

#: The columns of the long table, in order.
LONG_COLUMNS = (
    "pair",
    "modality",
    "direction",
    "metric",
    K.P_K,  # the K of R@K, as the report's params call it
    "value",
    "ci_low",
    "ci_high",
    "se",
    K.STEP,
    K.TAGS,
    K.CHECKPOINT,
)
#: A path with this suffix is written as Parquet; any other as CSV.
PARQUET_SUFFIX = ".parquet"

_INTEGER_COLUMNS = (K.P_K, K.STEP)
_FLOAT_COLUMNS = ("value", "ci_low", "ci_high", "se")
_STRING_COLUMNS = ("pair", "modality", "direction", "metric", K.TAGS, K.CHECKPOINT)
_CI_LOW, _CI_HIGH = "low", "high"
_RECALL_METRIC = K.RECALL.name
# A standard error whose key is not "<metric>_se" of the metric it belongs to.
_SE_OWNER = {K.GRAM_VOLUME_SE.name: K.GRAM_VOLUME_MEAN.name}
_TAG_ESCAPES = (("%", "%25"), (";", "%3B"))
_DIGITS = re.compile(r"(\d+)")


def long_rows(report: Report) -> list[dict[str, Any]]:
    """The rows of ``report`` in the long table: one mapping a row, keyed by
    :data:`LONG_COLUMNS` (``None`` for an empty cell), sorted by the report's key paths.

    ``pandas.DataFrame(long_rows(report))`` is the table.

    Raises:
        ValueError: two numbers of the report would share one cell (a bug: the report's
            vocabulary is chosen so that they cannot).

    Example:
        >>> r = Report(input={}, params={}, run={"step": 3, "tags": {"lr": "3e-4"},
        ...     "checkpoint": "ViT-B-32@openai"}, pairs={"image-text": {
        ...     "gap": 0.5, "gap_ci": [0.4, 0.6],
        ...     "recall": {"text->image": {"R@5": 0.8}}}})
        >>> for row in long_rows(r):
        ...     print({k: v for k, v in row.items() if v is not None})
        {'pair': 'image-text', 'metric': 'gap', 'value': 0.5, 'ci_low': 0.4, 'ci_high': 0.6, \
'step': 3, 'tags': 'lr=3e-4', 'checkpoint': 'ViT-B-32@openai'}
        {'pair': 'image-text', 'direction': 'text->image', 'metric': 'recall', 'k': 5, \
'value': 0.8, 'step': 3, 'tags': 'lr=3e-4', 'checkpoint': 'ViT-B-32@openai'}
    """
    data = report.to_dict()
    run = report.run_info
    run_cells = {K.STEP: run.step, K.TAGS: _tags_text(run.tags), K.CHECKPOINT: run.checkpoint}
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    order: dict[tuple[Any, ...], str] = {}
    for section in K.METRIC_SECTIONS:
        for name, entry in data.get(section, {}).items():
            modalities = set(name.split("-")) if section != K.MODALITIES_SECTION else {name}
            for path, value in flatten_report({section: {name: entry}}).items():
                parts = path.split("/")[1:]
                column, parts = _number_column(parts)
                cells = _identify(section, name, parts, modalities)
                ident = tuple(cells[c] for c in ("pair", "modality", "direction", "metric", K.P_K))
                row = rows.get(ident)
                if row is None:
                    row = rows[ident] = dict.fromkeys(LONG_COLUMNS) | cells | run_cells
                    order[ident] = "/".join([name, *parts])
                if row[column] is not None:
                    raise ValueError(f"two numbers of the report share one cell: {path}")
                row[column] = value
    return [rows[i] for i in sorted(rows, key=lambda i: _natural(order[i]))]


def _natural(path: str) -> list[Any]:
    """Sort key of a key path with its numbers as numbers: ``R@5`` before ``R@10``."""
    return [int(p) if p.isdigit() else p for p in _DIGITS.split(path)]


def _number_column(parts: list[str]) -> tuple[str, list[str]]:
    """Which cell a number goes in, and the key path of the metric it belongs to."""
    ci = K.ci_key("")
    if len(parts) >= 2 and parts[-2].endswith(ci) and parts[-1] in (_CI_LOW, _CI_HIGH):
        column = "ci_low" if parts[-1] == _CI_LOW else "ci_high"
        return column, [*parts[:-2], parts[-2][: -len(ci)]]
    se = K.se_key("")
    if parts[-1].endswith(se) and parts[-1] != se:
        owner = _SE_OWNER.get(parts[-1], parts[-1][: -len(se)])
        return "se", [*parts[:-1], owner]
    return "value", parts


def _identify(section: str, name: str, parts: list[str], modalities: set[str]) -> dict[str, Any]:
    """The identifying cells of a metric from its key path below its pair or modality."""
    cells: dict[str, Any] = {"pair": None, "modality": None, "direction": None, K.P_K: None}
    if section == K.MODALITIES_SECTION:
        cells["modality"] = name
    else:
        cells["pair"] = name
    rest = list(parts)
    for i, part in enumerate(rest):
        if "->" in part:
            cells["direction"] = part
            # recall/<direction>/<leaf>: the container says nothing the direction does not.
            before = rest[: i - 1] if i > 0 and rest[i - 1] == _RECALL_METRIC else rest[:i]
            rest = [*before, *rest[i + 1 :]]
            break
    if rest and rest[-1].startswith("R@") and rest[-1][2:].isdigit():
        cells[K.P_K] = int(rest[-1][2:])
        rest[-1] = _RECALL_METRIC
    if section != K.MODALITIES_SECTION and len(rest) > 1 and rest[-1] in modalities:
        cells["modality"] = rest.pop()
    cells["metric"] = "/".join(rest)
    return cells


def _tags_text(tags: Mapping[str, str]) -> str | None:
    """The tags as one string ``key=value;key=value`` sorted by key; None without tags."""
    if not tags:
        return None
    return ";".join(f"{key}={_escape(value)}" for key, value in sorted(tags.items()))


def _escape(value: str) -> str:
    for char, code in _TAG_ESCAPES:
        value = value.replace(char, code)
    return value


def parse_long_tags(text: str | None) -> dict[str, str]:
    """The tags of the long table's ``tags`` cell (empty or None: no tags).

    >>> parse_long_tags("data=coco%3Bval;lr=3e-4")
    {'data': 'coco;val', 'lr': '3e-4'}
    """
    if not text:
        return {}
    tags = {}
    for item in text.split(";"):
        key, _, value = item.partition("=")
        for char, code in reversed(_TAG_ESCAPES):
            value = value.replace(code, char)
        tags[key] = value
    return tags


def _all_rows(reports: Report | Iterable[Report] | Sequence[Mapping[str, Any]]) -> list[Any]:
    """Rows of a report, of several reports (one after the other), or rows as they are."""
    if isinstance(reports, Report):
        return long_rows(reports)
    items: list[Any] = list(reports)
    if all(isinstance(item, Report) for item in items):
        return [row for report in items for row in long_rows(report)]
    return items


def to_long_csv(reports: Report | Iterable[Report] | Sequence[Mapping[str, Any]]) -> str:
    """The long table as CSV text: a header of :data:`LONG_COLUMNS`, then a row a metric
    (floats as Python writes them back exactly, empty cells empty).

    ``reports``: one report, several (their rows one after the other), or rows from
    :func:`long_rows`.

    >>> print(to_long_csv(Report(input={}, params={}, modalities={"image": {"cone": 0.25}},
    ...     run={"step": 3, "tags": {}, "checkpoint": "ViT-B-32@openai"})), end="")
    pair,modality,direction,metric,k,value,ci_low,ci_high,se,step,tags,checkpoint
    ,image,,cone,,0.25,,,,3,,ViT-B-32@openai
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(LONG_COLUMNS)
    for row in _all_rows(reports):
        writer.writerow([_csv_cell(row.get(column)) for column in LONG_COLUMNS])
    return buf.getvalue()


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else value


def long_table(reports: Report | Iterable[Report] | Sequence[Mapping[str, Any]]) -> Any:
    """The long table as a ``pyarrow.Table``: strings, ``int64`` ``k`` and ``step``,
    ``float64`` numbers, nulls for empty cells (``.to_pandas()`` for a DataFrame).

    Raises:
        MissingDependencyError: pyarrow is not installed (the ``parquet`` extra).
    """
    from gapscope.extras import require

    pa = require("pyarrow", "the Parquet long table")
    rows = _all_rows(reports)
    types = {
        **dict.fromkeys(_STRING_COLUMNS, pa.string()),
        **dict.fromkeys(_INTEGER_COLUMNS, pa.int64()),
        **dict.fromkeys(_FLOAT_COLUMNS, pa.float64()),
    }
    schema = pa.schema([(column, types[column]) for column in LONG_COLUMNS])
    arrays = [
        pa.array([_typed(row.get(column), column) for row in rows], type=types[column])
        for column in LONG_COLUMNS
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def _typed(value: Any, column: str) -> Any:
    if value is None:
        return None
    return float(value) if column in _FLOAT_COLUMNS else value


def to_long_parquet(reports: Report | Iterable[Report] | Sequence[Mapping[str, Any]]) -> bytes:
    """The long table as the bytes of a Parquet file (see :func:`long_table`): the same
    rows give the same bytes with the same pyarrow.

    Raises:
        MissingDependencyError: pyarrow is not installed (the ``parquet`` extra).
    """
    from gapscope.extras import require

    pa = require("pyarrow", "the Parquet long table")
    parquet = require("pyarrow.parquet", "the Parquet long table", extra="parquet")
    sink = pa.BufferOutputStream()
    parquet.write_table(long_table(reports), sink)
    return bytes(sink.getvalue().to_pybytes())


def write_long(
    path: str | os.PathLike[str],
    reports: Report | Iterable[Report] | Sequence[Mapping[str, Any]],
) -> Path:
    """Write the long table to ``path`` atomically: Parquet when the name ends in
    ``.parquet``, else CSV. Returns the path.

    Raises:
        MissingDependencyError: a ``.parquet`` path without pyarrow (the ``parquet`` extra).
        GapscopeError: no rows to write.
    """
    out = Path(path)
    rows = _all_rows(reports)
    if not rows:
        raise GapscopeError(f"{out}: the reports hold no numbers to write")
    if is_parquet_path(out):
        atomic_write_bytes(out, to_long_parquet(rows))
    else:
        atomic_write_text(out, to_long_csv(rows))
    return out


def is_parquet_path(path: str | os.PathLike[str] | None) -> bool:
    """Whether ``path`` names a Parquet file (its name ends in ``.parquet``, any case).

    >>> is_parquet_path("metrics.parquet"), is_parquet_path("metrics.csv"), is_parquet_path(None)
    (True, False, False)
    """
    return path is not None and Path(path).suffix.lower() == PARQUET_SUFFIX
