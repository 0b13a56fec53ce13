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
from gapscope.report.text import printable

__all__ = [
    "MAX_DEPTH",
    "STDIN_NAME",
    "comparability_warnings",
    "interval_kind",
    "load_report",
    "merged_directions",
    "parse_report",
    "report_identity",
]

#: How messages name a report read from standard input (``gapscope check -``).
STDIN_NAME = "(standard input)"
#: The deepest nesting of objects and arrays a report may have. A real report's deepest value
#: is 7 keys down (``pairs.<pair>.whatif.<scenario>.recall.<direction>.R@1``); a far deeper
#: one is not a report, and its readers (which recurse) would exhaust Python's recursion.
MAX_DEPTH = 32

# Params that change what a metric measures: a difference is worth a warning.
_COMPARABLE_PARAMS = (K.P_UNIFORMITY_T, K.P_ALIGNMENT_ALPHA, K.P_SAMPLE, K.P_SEED)
# Params that change what an interval means, compared when both reports have intervals: a
# 50% interval is narrower than a 95% one, so two levels make non-overlap a different test.
# (The bootstrap's resample count is not among them: more resamples estimate the same
# interval more precisely, they do not change what it covers.)
_INTERVAL_PARAMS = (K.P_CONFIDENCE,)


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
        GapscopeError: empty, not JSON (or not UTF-8), a key repeated in one object, nested
            deeper than :data:`MAX_DEPTH`, a schema this version cannot read, a field that
            breaks the schema, or a ``run`` section with a step or tags that are not valid.

    >>> parse_report("[1, 2]", STDIN_NAME)
    Traceback (most recent call last):
    ...
    gapscope.errors.GapscopeError: report (standard input) has schema None; ...
    """
    if not text.strip():
        raise GapscopeError(f"{role} {name} is not a JSON report (it is empty)")
    data = _parse_json(text, name, role)
    _check_structure(data, name, role)
    schema = data.get(K.SCHEMA_FIELD) if isinstance(data, dict) else None
    if schema not in READABLE_SCHEMAS:
        raise GapscopeError(
            f"{role} {name} has schema {schema!r}; this gapscope {__version__} reads "
            f"{', '.join(READABLE_SCHEMAS)} (analyse it again, or use the gapscope that wrote it)"
        )
    problem = first_problem(data, report_schema_for(schema))
    if problem is not None:
        where, message = problem
        field = f": {printable(where)}:" if where else ""
        raise GapscopeError(f"{role} {name}{field} {message} (schema {schema})")
    try:
        # The step and the tags, which the schema takes more loosely than the report does
        # (JSON Schema counts 1000.0 as an integer): refused here, where the file is known,
        # rather than when a table or a tracker first reads them.
        run_info(data)
    except GapscopeError as exc:
        raise GapscopeError(f"{role} {name}: run: {exc}") from None
    try:
        return Report.from_dict(data)
    except GapscopeError as exc:
        raise GapscopeError(f"{role} {name}: {exc}") from None


def _parse_json(text: str | bytes, name: str, role: str) -> Any:
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return json.loads(
            text,
            object_pairs_hook=_object,
            parse_constant=_not_json,
            parse_float=_finite_float,
            parse_int=_float_sized_int,
        )
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError too
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise GapscopeError(f"{role} {name} is not a JSON report ({reason})") from None


class _Repeated(dict[str, Any]):
    """An object of the JSON text that holds a key twice (Python's json keeps the last value):
    marked while parsing, refused after it, when :func:`_check_structure` knows where it is."""

    repeated: str


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    marked = _Repeated(obj)
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            marked.repeated = key
            break
        seen.add(key)
    return marked


def _check_structure(data: Any, name: str, role: str) -> None:
    """Refuse a key repeated in one object (which value is meant?), and nesting deeper than
    :data:`MAX_DEPTH` (every reader of a report recurses); walked without recursion."""
    stack: list[tuple[tuple[str, ...], Any]] = [((), data)]
    while stack:
        path, value = stack.pop()
        if len(path) > MAX_DEPTH:
            shown = printable(".".join(path[:3]))
            raise GapscopeError(
                f"{role} {name} is not a report: it nests more than {MAX_DEPTH} levels deep "
                f"(under {shown}...)"
            )
        if isinstance(value, _Repeated):
            where = printable(".".join(path)) if path else "the top-level object"
            raise GapscopeError(
                f"{role} {name}: {where} has the key {value.repeated!r} twice; a key may "
                "appear once in an object"
            )
        if isinstance(value, dict):
            stack.extend(((*path, key), item) for key, item in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend(((*path, str(k)), item) for k, item in reversed(list(enumerate(value))))


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


def merged_directions(
    first: Mapping[str, str], second: Mapping[str, str], roles: tuple[str, str]
) -> dict[str, str]:
    """The good direction of each key by two reports' ``directions`` maps: a key one of them
    does not know takes the other's (a report of an older version knows fewer keys).

    Args:
        first, second: the two maps (the baseline's and the report's; A's and B's).
        roles: how messages name the two reports (``("the baseline", "the report")``).

    Raises:
        GapscopeError: the two give one key opposite directions: a change that is a
            regression by one is an improvement by the other, and which is meant is unknown.

    >>> merged_directions({"gap": "lower"}, {"gap": "lower", "R@K": "higher"}, ("A", "B"))
    {'gap': 'lower', 'R@K': 'higher'}
    """
    for key in sorted(set(first) & set(second)):
        if first[key] != second[key]:
            raise GapscopeError(
                f"{roles[0]} and {roles[1]} disagree on the direction of {key!r}: "
                f"{first[key]} is better in {roles[0]}, {second[key]} in {roles[1]}; a change "
                "would count the wrong way by one of them (analyse both with this gapscope)"
            )
    return {**first, **second}


def comparability_warnings(
    base: Mapping[str, Any],
    current: Mapping[str, Any],
    roles: tuple[str, str] = ("in the baseline", "now"),
) -> list[str]:
    """Warnings for two reports that can be compared but maybe should not be: other probe set
    sizes, other metric parameters (t, alpha, sample, seed), intervals at other confidence
    levels or of other kinds (BCa, percentile). ``roles`` say where each value is
    (``("in report A", "in report B")``)."""
    warnings = []
    was, now_in = roles
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
    params_base = base.get(K.PARAMS_SECTION, {})
    params_now = current.get(K.PARAMS_SECTION, {})
    # A report without --bootstrap has no intervals (and no confidence): nothing to compare.
    with_intervals = params_base.get(K.P_BOOTSTRAP) and params_now.get(K.P_BOOTSTRAP)
    for name in _COMPARABLE_PARAMS + (_INTERVAL_PARAMS if with_intervals else ()):
        before, now = params_base.get(name), params_now.get(name)
        if before == now:
            continue
        if name in _INTERVAL_PARAMS:
            warnings.append(
                f"the reports' intervals were made with different {name} ({before} {was}, "
                f"{now} {now_in}): intervals of two levels overlap or not for other reasons "
                "than the change; analyse both at one level"
            )
        else:
            warnings.append(
                f"the reports were analysed with different {name} ({before} {was}, {now} {now_in})"
            )
    if with_intervals:
        kinds = (interval_kind(params_base), interval_kind(params_now))
        if kinds[0] != kinds[1]:
            warnings.append(
                f"the reports' intervals are of different kinds ({kinds[0]} {was}, {kinds[1]} "
                f"{now_in}): a BCa interval corrects the bias a percentile interval keeps, so "
                "they overlap or not for other reasons than the change; analyse both with one "
                "--interval"
            )
    return warnings


def interval_kind(params: Mapping[str, Any]) -> str:
    """The kind of a report's bootstrap intervals: its ``interval`` parameter; for a report
    with intervals made before BCa intervals (which has none), ``"percentile"``; for a report
    without intervals, the default of ``analyze``.

    >>> interval_kind({"bootstrap": 200}), interval_kind({"bootstrap": 200, "interval": "bca"})
    ('percentile', 'bca')
    >>> interval_kind({"bootstrap": None})
    'bca'
    """
    made_before = params.get(K.P_BOOTSTRAP) is not None
    return str(params.get(K.P_INTERVAL, "percentile" if made_before else "bca"))


def _rows(data: Mapping[str, Any]) -> dict[str, Any]:
    modalities = data.get(K.INPUT_SECTION, {}).get(K.MODALITIES_SECTION, {})
    return {m: v.get(K.ROWS) for m, v in modalities.items()}
