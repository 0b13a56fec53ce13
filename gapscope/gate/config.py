"""Settings of ``gapscope check`` from a TOML file: tolerances, thresholds, significance.

Looked up in this order (the first that exists is used; nothing is merged across files):

1. the file given by ``--config PATH`` (a ``pyproject.toml`` is read at ``[tool.gapscope]``,
   any other file at its top level);
2. ``gapscope.toml`` in the current directory;
3. the ``[tool.gapscope]`` table of ``pyproject.toml`` in the current directory.

The ``check`` table::

    # gapscope.toml                        (in pyproject.toml: [tool.gapscope.check])
    [check]
    tolerance = { "gap" = 0.02, "R@1" = "5%", "image-text/recall/*/R@10" = "2%" }
    threshold = ["image-text/gap<=0.9", "R@5>=0.5"]
    significant = false

``tolerance`` maps metric patterns to an absolute amount or a percentage of the baseline
(any tolerance, here or on the command line, replaces the default gate of
:data:`gapscope.gate.rules.DEFAULT_GATE`: every metric is then gated, at 0 where no pattern
selects it); ``threshold`` lists absolute gates; ``significant`` makes a change count only
when the bootstrap intervals do not overlap (unset: the default gate uses them where both
reports have them). Options on the command line come after the file: a
``--tolerance`` for the same pattern replaces the file's, ``--threshold`` adds gates, and
``--significant/--no-significant`` overrides.

A typo never silently loosens a gate: a file given by ``--config``, a ``gapscope.toml`` and
the ``[tool.gapscope]`` table of a ``pyproject.toml`` must hold a ``check`` table and nothing
else (``[chek]`` and a ``[tool.gapscope.check]`` in a file not named ``pyproject.toml`` are
errors), and unknown keys inside ``[check]`` are errors. A ``pyproject.toml`` found in the
current directory without a ``[tool.gapscope]`` table (or whose ``tool`` is not a table) is
another tool's file and is not read; given by ``--config``, it must have the table.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gapscope.errors import GapscopeError
from gapscope.gate.rules import (
    MetricPattern,
    Threshold,
    Tolerance,
    parse_threshold,
    parse_tolerance,
)

__all__ = ["CONFIG_FILE", "CheckConfig", "find_config", "load_check_config"]

CONFIG_FILE = "gapscope.toml"
PYPROJECT = "pyproject.toml"
#: The tables a config file holds (in pyproject.toml, under [tool.gapscope]).
_TABLES = ("check",)
_HOLDS = "the settings of gapscope check go in it"
_CHECK_KEYS = ("tolerance", "threshold", "significant")


@dataclass(frozen=True)
class CheckConfig:
    """The ``[check]`` settings of a config file.

    Attributes:
        tolerances: ``(pattern, tolerance)`` in file order.
        thresholds: absolute gates in file order.
        significant: the file's ``significant`` setting, or ``None`` when it has none.
        source: ``"path"`` or ``"path [tool.gapscope]"``; ``None`` when no file was found.
    """

    tolerances: tuple[tuple[MetricPattern, Tolerance], ...] = ()
    thresholds: tuple[Threshold, ...] = ()
    significant: bool | None = None
    source: str | None = None


def find_config(cwd: Path | None = None) -> Path | None:
    """``gapscope.toml`` in ``cwd`` if it exists, else a ``pyproject.toml`` there that has a
    ``[tool.gapscope]`` table, else ``None``."""
    cwd = Path.cwd() if cwd is None else Path(cwd)
    if (cwd / CONFIG_FILE).is_file():
        return cwd / CONFIG_FILE
    pyproject = cwd / PYPROJECT
    if pyproject.is_file():
        tool = _read_toml(pyproject).get("tool")
        # A `tool` that is not a table breaks someone else's file, not ours: not read.
        if isinstance(tool, dict) and "gapscope" in tool:
            return pyproject
    return None


def load_check_config(path: str | Path | None = None, *, cwd: Path | None = None) -> CheckConfig:
    """Read the ``check`` settings from ``path``, or from the file :func:`find_config` finds.

    Args:
        path: an explicit config file (``--config``); it must exist.
        cwd: where to look when ``path`` is None (default: the current directory).

    Returns:
        A :class:`CheckConfig`; empty when no file was found.

    Raises:
        GapscopeError: a missing explicit file, invalid TOML, a file without a ``check``
            table or with another table or key beside it, or a bad value (the message names
            the file and the table or key).

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "gapscope.toml").write_text('[check]\\ntolerance = {gap = 0.02}\\n')
        >>> config = load_check_config(cwd=folder)
        >>> [(str(p), str(t)) for p, t in config.tolerances]
        [('gap', '0.02')]
    """
    if path is not None:
        path = Path(path)
        if path.is_dir():
            raise GapscopeError(f"config file {path} is a folder; give the TOML file")
        if not path.is_file():
            raise GapscopeError(f"config file {path} does not exist")
    else:
        path = find_config(cwd)
        if path is None:
            return CheckConfig()
    data = _read_toml(path)
    source = str(path)
    if path.name == PYPROJECT:
        data = _gapscope_table(data, source)
        source += " [tool.gapscope]"
    return _parse_check_table(_check_table(data, path, source), source)


def _gapscope_table(data: dict[str, Any], source: str) -> dict[str, Any]:
    """The ``[tool.gapscope]`` table of a pyproject.toml, which must have one: one found in
    the current directory without it is never read (:func:`find_config`)."""
    tool = data.get("tool")
    table = tool.get("gapscope") if isinstance(tool, dict) else None
    if table is None:
        raise GapscopeError(f"{source}: no [tool.gapscope.check] table ({_HOLDS})")
    if not isinstance(table, dict):
        raise GapscopeError(
            f"{source}: tool.gapscope must be a table like [tool.gapscope.check], got {table!r}"
        )
    return table


def _check_table(data: dict[str, Any], path: Path, source: str) -> dict[str, Any]:
    """The ``check`` table of a config file's settings; anything beside it is a typo or a
    misplaced table, refused rather than ignored (ignoring it would loosen the gate)."""
    prefix = "tool.gapscope." if path.name == PYPROJECT else ""
    where = f"[{prefix}check]"
    unknown = sorted(set(data) - set(_TABLES))
    if unknown:
        name = unknown[0]
        found = f"table [{prefix}{name}]" if isinstance(data[name], dict) else f"key {name!r}"
        hint = f"the settings go in a {where} table"
        if name == "tool" and not prefix:
            hint = f"[tool.gapscope] is read only from a file named {PYPROJECT}; write [check]"
        raise GapscopeError(f"{source}: unknown {found}; {hint}")
    if "check" not in data:
        raise GapscopeError(f"{source}: no {where} table ({_HOLDS})")
    table = data["check"]
    if not isinstance(table, dict):
        raise GapscopeError(f"{source}: 'check' must be a table like {where}")
    return table


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise GapscopeError(f"{path}: not valid TOML ({exc})") from None
    except UnicodeDecodeError:
        raise GapscopeError(f"{path}: not valid TOML (not UTF-8 text)") from None


def _parse_check_table(table: dict[str, Any], source: str) -> CheckConfig:
    unknown = sorted(set(table) - set(_CHECK_KEYS))
    if unknown:
        raise GapscopeError(
            f"{source}: unknown key {unknown[0]!r} in [check]; expected {', '.join(_CHECK_KEYS)}"
        )
    tolerance = table.get("tolerance", {})
    if not isinstance(tolerance, dict):
        raise GapscopeError(
            f'{source}: [check] tolerance must be a table like {{ gap = 0.02, "R@1" = "5%" }}'
        )
    tolerances = tuple(
        (
            MetricPattern(str(pattern)),
            parse_tolerance(value, f"{source}: [check] tolerance {pattern!r}"),
        )
        for pattern, value in tolerance.items()
    )
    threshold = table.get("threshold", [])
    if isinstance(threshold, str):
        threshold = [threshold]
    if not isinstance(threshold, list):
        raise GapscopeError(
            f'{source}: [check] threshold must be a list like ["image-text/gap<=0.9"]'
        )
    thresholds = []
    for text in threshold:
        try:
            thresholds.append(parse_threshold(text))
        except GapscopeError as exc:
            raise GapscopeError(f"{source}: [check] {exc}") from None
    significant = table.get("significant")
    if significant is not None and not isinstance(significant, bool):
        raise GapscopeError(
            f"{source}: [check] significant must be true or false, got {significant!r}"
        )
    return CheckConfig(tuple(tolerances), tuple(thresholds), significant, source)
