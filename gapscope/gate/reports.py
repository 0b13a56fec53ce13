"""Reading the reports the gate compares: from a file, with the schemas this version reads."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gapscope._version import __version__
from gapscope.analysis import keys as K
from gapscope.errors import GapscopeError
from gapscope.gate.schema import first_problem, report_schema_for
from gapscope.report.model import READABLE_SCHEMAS, Report
from gapscope.report.run import run_info

__all__ = [
    "STDIN_NAME",
    "comparability_warnings",
    "load_report",
    "parse_report",
    "report_identity",
]

#: How messages name a report read from standard input (``gapscope check -``).
STDIN_NAME = "(standard input)"

# Params that change what a metric measures: a difference is worth a warning.
_COMPARABLE_PARAMS = (K.P_UNIFORMITY_T, K.P_ALIGNMENT_ALPHA, K.P_SAMPLE, K.P_SEED)


def load_report(path: str | os.PathLike[str], role: str = "report") -> Report:
    """Read a JSON report from ``path``, check it against the JSON Schema of its version (the
    ``report-<n>.json`` the package ships); a report of the previous schema is upgraded.

    Raises:
        GapscopeError: no such file, a folder, not JSON (NaN and infinities are not JSON),
            a schema this version cannot read, or a field that breaks the schema (the message
            names ``role``, the file and the field).
    """
    path = Path(path)
    if path.is_dir():
        raise GapscopeError(
            f"{role} {path} is a folder, not a JSON report (write one with: gapscope analyze "
            f"{path} --json report.json)"
        )
    if not path.exists():
        raise GapscopeError(f"{role} {path} does not exist")
    # Bytes, so that a FIFO or /dev/stdin is read once, and a decoding error is bad input.
    return parse_report(path.read_bytes(), str(path), role)


def parse_report(text: str | bytes, name: str, role: str = "report") -> Report:
    """A report from its JSON text, checked like :func:`load_report` checks a file: ``name``
    says where it came from in messages (a path, or :data:`STDIN_NAME`).

    Raises:
        GapscopeError: empty, not JSON (or not UTF-8), a schema this version cannot read,
            or a field that breaks the schema.

    >>> parse_report("[1, 2]", STDIN_NAME)
    Traceback (most recent call last):
    ...
    gapscope.errors.GapscopeError: report (standard input) has schema None; ...
    """
    if not text.strip():
        raise GapscopeError(f"{role} {name} is not a JSON report (it is empty)")
    data = _parse_json(text, name, role)
    schema = data.get(K.SCHEMA_FIELD) if isinstance(data, dict) else None
    if schema not in READABLE_SCHEMAS:
        raise GapscopeError(
            f"{role} {name} has schema {schema!r}; this gapscope {__version__} reads "
            f"{', '.join(READABLE_SCHEMAS)} (analyse it again, or use the gapscope that wrote it)"
        )
    problem = first_problem(data, report_schema_for(schema))
    if problem is not None:
        where, message = problem
        field = f": {where}:" if where else ""
        raise GapscopeError(f"{role} {name}{field} {message} (schema {schema})")
    try:
        return Report.from_dict(data)
    except GapscopeError as exc:
        raise GapscopeError(f"{role} {name}: {exc}") from None


def _parse_json(text: str | bytes, name: str, role: str) -> Any:
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return json.loads(
            text, parse_constant=_not_json, parse_float=_finite_float, parse_int=_float_sized_int
        )
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError too
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise GapscopeError(f"{role} {name} is not a JSON report ({reason})") from None


def _not_json(constant: str) -> Any:
    # Python's json reads NaN and Infinity, which JSON does not have; gapscope writes null.
    raise ValueError(f"{constant} is not a JSON number; a report has null for undefined values")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: a number no float holds
        raise ValueError(f"{text} is beyond the range of a float")
    return value


def _float_sized_int(text: str) -> int:
    # Every value of a report is compared (and logged) as a float; the length test first
    # spares int() the digits of a huge literal (Python refuses more than 4,300 of them).
    if len(text.lstrip("-")) <= 309:
        value = int(text)
        try:
            float(value)
            return value
        except OverflowError:
            pass
    raise ValueError(f"the integer {text[:20]}... is beyond the range of a float")


def report_identity(data: Mapping[str, Any]) -> dict[str, Any]:
    """``{"source", "fingerprint", "checkpoint", "step"}`` of a report's JSON mapping: which
    data it describes, and which checkpoint (and training step) made it (its ``run``, or for
    a report without one the identity of its input, see :mod:`gapscope.report.run`)."""
    inp = data.get(K.INPUT_SECTION, {})
    run = run_info(data)
    return {
        K.SOURCE: inp.get(K.SOURCE),
        K.FINGERPRINT: inp.get(K.FINGERPRINT),
        K.CHECKPOINT: run.checkpoint,
        K.STEP: run.step,
    }


def comparability_warnings(base: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Warnings for two reports that can be compared but maybe should not be: other probe set
    sizes, other metric parameters (t, alpha, sample, seed)."""
    warnings = []
    rows_base = {
        m: v.get(K.ROWS)
        for m, v in base.get(K.INPUT_SECTION, {}).get(K.MODALITIES_SECTION, {}).items()
    }
    rows_now = {
        m: v.get(K.ROWS)
        for m, v in current.get(K.INPUT_SECTION, {}).get(K.MODALITIES_SECTION, {}).items()
    }
    if rows_base != rows_now:
        listed = ", ".join(
            f"{m} {rows_base.get(m)} -> {rows_now.get(m)}"
            for m in sorted(set(rows_base) | set(rows_now))
            if rows_base.get(m) != rows_now.get(m)
        )
        warnings.append(
            f"the probe sets differ in size ({listed} rows): changes may come from the data, "
            "not the model; gate on one fixed probe set"
        )
    for name in _COMPARABLE_PARAMS:
        before, now = (
            base.get(K.PARAMS_SECTION, {}).get(name),
            current.get(K.PARAMS_SECTION, {}).get(name),
        )
        if before != now:
            warnings.append(
                f"the reports were analysed with different {name} "
                f"({before} in the baseline, {now} now)"
            )
    return warnings


def _rows(data: Mapping[str, Any]) -> dict[str, Any]:
    modalities = data.get(K.INPUT_SECTION, {}).get(K.MODALITIES_SECTION, {})
    return {m: v.get(K.ROWS) for m, v in modalities.items()}
