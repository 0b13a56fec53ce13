"""Serialise a :class:`Report` in the output formats the CLI offers.

``json`` is the nested, versioned document. ``flat`` is one JSON object: the run fields
(``checkpoint``, ``step``, ``tag.<key>``; keys without a ``/``) and the metrics in the tracker
spelling (``image-text/recall/image_to_text/R5``; see
:func:`~gapscope.analysis.keys.tracker_key`), so that ``pandas.DataFrame`` of many such
objects is one row a report. ``csv`` is a long table, one row a metric: ``metric,value``
followed by the run fields as columns (``step,checkpoint,tag.<key>...``), so that the CSVs of
many reports concatenate into one table (``pandas.concat(map(pandas.read_csv, files))``).
``long`` is the tidy table of :mod:`gapscope.report.long`: one row a metric with its pair,
modality, retrieval direction, K, value, interval, standard error and run fields, as CSV text
(or Parquet, written by :func:`gapscope.report.long.write_long` to a ``.parquet`` file).
"""

from __future__ import annotations

import csv
import io
import json
from importlib import resources
from typing import Any

from gapscope.analysis import keys as K
from gapscope.report.model import Report

FORMATS = ("table", "json", "flat", "csv", "long")


def report_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``gapscope.report/2``, shipped in the package."""
    text = resources.files("gapscope.report").joinpath("schemas/report-2.json").read_text("utf-8")
    return json.loads(text)


#: The first two columns of the CSV; the run fields follow them.
CSV_METRIC = "metric"
CSV_VALUE = "value"


def flat_row(report: Report) -> dict[str, Any]:
    """The run fields and the metrics of ``report`` in one flat mapping (``--format flat``).

    >>> r = Report(input={}, params={}, pairs={"image-text": {"gap": 0.5}},
    ...            run={"step": 3, "tags": {"lr": "3e-4"}, "checkpoint": "ViT-B-32@openai"})
    >>> flat_row(r)
    {'checkpoint': 'ViT-B-32@openai', 'step': 3, 'tag.lr': '3e-4', 'image-text/gap': 0.5}
    """
    return {**report.run_info.flat(), **report.to_flat()}


def to_flat_json(report: Report) -> str:
    """The flat mapping (:func:`flat_row`) as deterministic JSON text, sorted keys."""
    return json.dumps(flat_row(report), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def to_csv(report: Report) -> str:
    """The metrics as CSV rows sorted by metric, each with the run fields: columns
    ``metric,value,step,checkpoint`` and ``tag.<key>`` a tag (``step`` empty when the report
    has none).

    >>> r = Report(input={}, params={}, modalities={"image": {"cone": 0.5}},
    ...            run={"step": 3, "tags": {"lr": "3e-4"}, "checkpoint": "ViT-B-32@openai"})
    >>> print(to_csv(r), end="")
    metric,value,step,checkpoint,tag.lr
    image/cone,0.5,3,ViT-B-32@openai,3e-4
    """
    run = report.run_info
    tags = run.tag_fields()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([CSV_METRIC, CSV_VALUE, K.STEP, K.CHECKPOINT, *tags])
    fields = ["" if run.step is None else run.step, run.checkpoint, *tags.values()]
    for key, value in report.to_flat().items():
        writer.writerow([key, repr(value) if isinstance(value, float) else value, *fields])
    return buf.getvalue()


def render_text(report: Report, fmt: str) -> str:
    """Text of ``report`` in a machine format: ``json``, ``flat``, ``csv`` or ``long`` (its
    CSV text)."""
    if fmt == "json":
        return report.to_json()
    if fmt == "flat":
        return to_flat_json(report)
    if fmt == "csv":
        return to_csv(report)
    if fmt == "long":
        from gapscope.report.long import to_long_csv

        return to_long_csv(report)
    raise ValueError(f"no text rendering for format {fmt!r}")
