"""Serialise a :class:`Report` in the output formats the CLI offers.

``json`` is the nested, versioned document; ``flat`` is one ``"path" -> number`` JSON object
(what MLflow, Weights & Biases and TensorBoard take); ``csv`` is the flat mapping as rows.
"""

from __future__ import annotations

import csv
import io
import json
from importlib import resources
from typing import Any

from gapscope.report.model import Report

FORMATS = ("table", "json", "flat", "csv")


def report_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``gapscope.report/2``, shipped in the package."""
    text = resources.files("gapscope.report").joinpath("schemas/report-2.json").read_text("utf-8")
    return json.loads(text)


def to_flat_json(report: Report) -> str:
    """The flat mapping as deterministic JSON text."""
    return json.dumps(report.to_flat(), indent=2, sort_keys=True) + "\n"


def to_csv(report: Report) -> str:
    """The flat mapping as CSV rows ``metric,value``, sorted by metric path.

    >>> r = Report(input={}, params={}, modalities={"image": {"cone": 0.5}})
    >>> print(to_csv(r), end="")
    metric,value
    image/cone,0.5
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["metric", "value"])
    for key, value in report.to_flat().items():
        writer.writerow([key, repr(value) if isinstance(value, float) else value])
    return buf.getvalue()


def render_text(report: Report, fmt: str) -> str:
    """Text of ``report`` in a machine format: ``json``, ``flat`` or ``csv``."""
    if fmt == "json":
        return report.to_json()
    if fmt == "flat":
        return to_flat_json(report)
    if fmt == "csv":
        return to_csv(report)
    raise ValueError(f"no text rendering for format {fmt!r}")
