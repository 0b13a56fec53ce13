"""Check a JSON document against the JSON Schemas gapscope ships, without ``jsonschema``.

The core install has no ``jsonschema`` (a dev dependency), and ``check``/``diff`` must read a
report that a person or a script may have edited. This validator covers the subset of JSON
Schema (draft 2020-12) that gapscope's own schemas use (``report-1.json``, ``report-2.json``,
``check-1.json``, ``diff-1.json``): ``type``, ``const``, ``enum``, ``required``,
``properties``, ``patternProperties``, ``additionalProperties``, ``propertyNames``,
``items``, ``minItems``, ``maxItems``, ``minimum``, ``maximum``, ``exclusiveMinimum``,
``exclusiveMaximum``, ``pattern``, ``oneOf`` and local ``$ref`` (``#/$defs/...``). Other
keywords are annotations here (``title``, ``description``) or unknown; an unknown keyword
raises ``ValueError`` so a schema that grows past this subset is noticed by the tests, not
skipped in silence.

The first problem found is reported, as ``(path, message)``: ``pairs`` /
``expected an object, got an array``.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterator
from importlib import resources
from typing import Any

__all__ = ["SchemaProblem", "first_problem", "report_schema_for", "schema_problems"]

_ANNOTATIONS = frozenset({"$schema", "$id", "$defs", "title", "description", "$comment"})
_KEYWORDS = frozenset(
    {
        "type",
        "const",
        "enum",
        "required",
        "properties",
        "patternProperties",
        "additionalProperties",
        "propertyNames",
        "items",
        "minItems",
        "maxItems",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "pattern",
        "oneOf",
        "$ref",
    }
)
_TYPE_NAMES = {
    "object": "an object",
    "array": "an array",
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "true or false",
    "null": "null",
}
#: The report schemas gapscope reads, by the report's ``schema`` field.
_REPORT_SCHEMA_FILES = {"gapscope.report/2": "report-2.json", "gapscope.report/1": "report-1.json"}

SchemaProblem = tuple[str, str]


@functools.cache
def _report_schema_text(file: str) -> str:
    return resources.files("gapscope.report").joinpath(f"schemas/{file}").read_text("utf-8")


def report_schema_for(schema_name: str) -> dict[str, Any]:
    """The shipped JSON Schema of a report schema name (``gapscope.report/2`` or ``/1``).

    Raises:
        KeyError: a schema name gapscope does not read.
    """
    return json.loads(_report_schema_text(_REPORT_SCHEMA_FILES[schema_name]))


def first_problem(instance: Any, schema: dict[str, Any]) -> SchemaProblem | None:
    """The first place where ``instance`` breaks ``schema``, or ``None`` when it is valid.

    >>> first_problem({"a": [1, "x"]}, {"properties": {"a": {"items": {"type": "integer"}}}})
    ('a.1', "expected an integer, got the string 'x'")
    >>> first_problem({"a": 1}, {"required": ["a", "b"]})
    ('', "lacks the required field 'b'")
    """
    return next(schema_problems(instance, schema), None)


def schema_problems(instance: Any, schema: dict[str, Any]) -> Iterator[SchemaProblem]:
    """Every problem of ``instance`` against ``schema``, as ``(dotted path, message)``."""
    yield from _check(instance, schema, schema, ())


def _check(
    value: Any, schema: Any, root: dict[str, Any], path: tuple[str, ...]
) -> Iterator[SchemaProblem]:
    if schema is True or schema == {}:
        return
    if schema is False:
        yield _at(path, "is not allowed here")
        return
    unknown = set(schema) - _KEYWORDS - _ANNOTATIONS
    if unknown:
        raise ValueError(f"schema keyword {sorted(unknown)[0]!r} is not supported")
    if "$ref" in schema:
        yield from _check(value, _resolve(root, schema["$ref"]), root, path)
    for check in (_check_type, _check_value, _check_number, _check_string):
        problem = check(value, schema)
        if problem is not None:
            yield _at(path, problem)
            return
    if "oneOf" in schema:
        yield from _check_one_of(value, schema["oneOf"], root, path)
    if isinstance(value, dict):
        yield from _check_object(value, schema, root, path)
    elif isinstance(value, list):
        yield from _check_array(value, schema, root, path)


def _at(path: tuple[str, ...], message: str) -> SchemaProblem:
    return ".".join(path), message


def _resolve(root: dict[str, Any], ref: str) -> Any:
    if not ref.startswith("#/"):
        raise ValueError(f"only local $ref is supported, not {ref!r}")
    target: Any = root
    for part in ref[2:].split("/"):
        target = target[part.replace("~1", "/").replace("~0", "~")]
    return target


def _is_type(value: Any, name: str) -> bool:
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if name == "string":
        return isinstance(value, str)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    # JSON Schema counts 1.0 as an integer; NaN and infinities are not JSON numbers at all.
    if name == "integer":
        return isinstance(value, int) or (math.isfinite(value) and value == int(value))
    return name == "number" and (isinstance(value, int) or math.isfinite(value))


def describe(value: Any) -> str:
    """A short description of a JSON value for a message: ``the string 'x'``, ``an array``.

    >>> describe([1, 2]), describe("up"), describe(None), describe(2.5)
    ('an array', "the string 'up'", 'null', '2.5')
    """
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {shown!r}"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _check_type(value: Any, schema: dict[str, Any]) -> str | None:
    types = schema.get("type")
    if types is None:
        return None
    names = [types] if isinstance(types, str) else list(types)
    if any(_is_type(value, name) for name in names):
        return None
    wanted = " or ".join(_TYPE_NAMES.get(n, n) for n in names)
    return f"expected {wanted}, got {describe(value)}"


def _check_value(value: Any, schema: dict[str, Any]) -> str | None:
    if "const" in schema and not _equal(value, schema["const"]):
        return f"expected {schema['const']!r}, got {describe(value)}"
    if "enum" in schema and not any(_equal(value, option) for option in schema["enum"]):
        options = ", ".join(repr(o) for o in schema["enum"])
        return f"{describe(value)} is not one of {options}"
    return None


def _equal(a: Any, b: Any) -> bool:
    # JSON equality: true is not 1.
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


def _check_number(value: Any, schema: dict[str, Any]) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if "minimum" in schema and not value >= schema["minimum"]:
        return f"{value!r} is below the minimum {schema['minimum']!r}"
    if "maximum" in schema and not value <= schema["maximum"]:
        return f"{value!r} is above the maximum {schema['maximum']!r}"
    if "exclusiveMinimum" in schema and not value > schema["exclusiveMinimum"]:
        return f"{value!r} must be greater than {schema['exclusiveMinimum']!r}"
    if "exclusiveMaximum" in schema and not value < schema["exclusiveMaximum"]:
        return f"{value!r} must be less than {schema['exclusiveMaximum']!r}"
    return None


def _check_string(value: Any, schema: dict[str, Any]) -> str | None:
    pattern = schema.get("pattern")
    if isinstance(value, str) and pattern is not None and not _search(pattern, value):
        return f"{describe(value)} does not match {pattern!r}"
    return None


def _search(pattern: str, text: str) -> bool:
    """Whether ``pattern`` matches somewhere in ``text``, as JSON Schema reads a pattern.

    >>> _search("^[a-z]+$", "image"), _search("^[a-z]+$", "image\\n"), _search("_ci$", "gap_ci")
    (True, False, True)
    """
    return _regex(pattern).search(text) is not None


@functools.cache
def _regex(pattern: str) -> re.Pattern[str]:
    """``pattern`` compiled with JSON Schema's (ECMA-262's) ``$``, the end of the text only.
    Python's ``$`` also matches before a final newline (``image`` + newline would pass
    ``^[a-z]+$``): each ``$`` that is not escaped nor in a character class becomes ``\\Z``."""
    out: list[str] = []
    escaped = in_class = False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "$":
            char = r"\Z"
        out.append(char)
    return re.compile("".join(out))


def _check_one_of(
    value: Any, options: list[Any], root: dict[str, Any], path: tuple[str, ...]
) -> Iterator[SchemaProblem]:
    problems = [next(_check(value, option, root, path), None) for option in options]
    matched = sum(problem is None for problem in problems)
    if matched == 1:
        return
    if matched == 0:
        # The option that got furthest (the longest path) says the most.
        yield max((p for p in problems if p is not None), key=lambda p: len(p[0]))
    else:
        yield _at(path, f"{describe(value)} matches {matched} of the allowed forms, not one")


def _check_object(
    value: dict[str, Any], schema: dict[str, Any], root: dict[str, Any], path: tuple[str, ...]
) -> Iterator[SchemaProblem]:
    for name in schema.get("required", []):
        if name not in value:
            yield _at(path, f"lacks the required field {name!r}")
            return
    names = schema.get("propertyNames")
    properties = schema.get("properties", {})
    patterns = schema.get("patternProperties", {})
    for key, item in value.items():
        where = (*path, key)
        if names is not None:
            problem = next(_check(key, names, root, where), None)
            if problem is not None:
                yield _at(where, f"is not an allowed name here ({problem[1]})")
                continue
        matched = False
        if key in properties:
            matched = True
            yield from _check(item, properties[key], root, where)
        for pattern, sub in patterns.items():
            if _search(pattern, key):
                matched = True
                yield from _check(item, sub, root, where)
        if not matched and "additionalProperties" in schema:
            yield from _check(item, schema["additionalProperties"], root, where)


def _check_array(
    value: list[Any], schema: dict[str, Any], root: dict[str, Any], path: tuple[str, ...]
) -> Iterator[SchemaProblem]:
    if "minItems" in schema and len(value) < schema["minItems"]:
        yield _at(path, f"has {len(value)} items, fewer than {schema['minItems']}")
        return
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        yield _at(path, f"has {len(value)} items, more than {schema['maxItems']}")
        return
    if "items" in schema:
        for k, item in enumerate(value):
            yield from _check(item, schema["items"], root, (*path, str(k)))
