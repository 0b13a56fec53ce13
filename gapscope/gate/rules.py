"""The vocabulary of ``gapscope check``: metric patterns, tolerances and absolute thresholds.

Metrics are named by the keys of the flat report (:meth:`gapscope.report.Report.to_flat`),
e.g. ``image-text/gap``, ``image-text/recall/text->image/R@5``, ``image/cone``. A *pattern*
selects metrics:

- a full key (``image-text/gap``) selects that metric;
- a pattern with a ``/`` is a shell-style glob over the whole key
  (``image-text/recall/*/R@1``; ``*`` also matches ``/``);
- a pattern without a ``/`` matches the key's last component: ``gap`` selects every pair's
  gap, ``R@5`` every direction's recall@5, ``R@*`` every recall@K, ``*`` every metric.

When several tolerance patterns select one metric the most specific wins: a full key, then a
path glob (the one with more literal characters first), then a bare name, then a bare glob;
between equally specific patterns the one given last wins (the command line comes after the
config file).

A *tolerance* is how far a metric may move in its bad direction: an absolute amount (``0.02``)
or a percentage of the baseline value (``"5%"``). A *threshold* is an absolute gate that
needs no baseline: ``image-text/gap<=0.9``, ``R@5>=0.5`` (operators ``<=``, ``>=``, ``<``, ``>``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase

from gapscope.errors import GapscopeError
from gapscope.report.numbers import format_number

__all__ = [
    "MetricPattern",
    "Threshold",
    "Tolerance",
    "parse_threshold",
    "parse_tolerance",
    "parse_tolerance_option",
]

_GLOB_CHARS = re.compile(r"\[[^\]]*\]|[*?]")
# The pattern may itself hold '>' (image-text/recall/text->image/R@5>=0.5): the lazy pattern
# group leaves the operator to the last '<', '>', '<=' or '>=' that a value follows.
_THRESHOLD = re.compile(r"^\s*(?P<pattern>.+?)\s*(?P<op><=|>=|<|>)\s*(?P<value>[^<>=]+?)\s*$")


@dataclass(frozen=True)
class MetricPattern:
    """A pattern that selects flat report keys (see the module docstring).

    >>> MetricPattern("R@5").matches("image-text/recall/image->text/R@5")
    True
    >>> MetricPattern("image-text/recall/*/R@1").matches("image-text/recall/text->text/R@1")
    True
    >>> MetricPattern("gap").matches("image-text/gap_concentration/top1")
    False
    """

    text: str

    def __post_init__(self) -> None:
        if not self.text or self.text != self.text.strip():
            raise GapscopeError(f"metric pattern {self.text!r} is empty or has spaces around it")

    @property
    def is_glob(self) -> bool:
        return bool(_GLOB_CHARS.search(self.text))

    def matches(self, key: str) -> bool:
        """Whether ``key`` (a flat report key) is selected by this pattern."""
        if "/" in self.text:
            return fnmatchcase(key, self.text)
        return fnmatchcase(key.rsplit("/", 1)[-1], self.text)

    def specificity(self) -> tuple[int, int]:
        """Sort key, smaller is more specific: (tier, minus the count of literal characters).

        >>> sorted(["*", "gap", "image-text/*", "image-text/gap", "R@*"],
        ...        key=lambda p: MetricPattern(p).specificity())
        ['image-text/gap', 'image-text/*', 'gap', 'R@*', '*']
        """
        path = "/" in self.text
        tier = (0 if not self.is_glob else 1) if path else (2 if not self.is_glob else 3)
        return tier, -len(_GLOB_CHARS.sub("", self.text))

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Tolerance:
    """How far a metric may move in its bad direction before it counts as a regression.

    Attributes:
        value: the amount: absolute, or a percentage of ``|baseline|`` when ``relative``.
        relative: whether ``value`` is a percentage.

    >>> Tolerance(5.0, relative=True).allowed(0.8)
    0.04
    >>> str(Tolerance(0.02)), str(Tolerance(5.0, relative=True))
    ('0.02', '5%')
    """

    value: float
    relative: bool = False

    def allowed(self, baseline: float) -> float:
        """The largest allowed change, as an absolute amount, for this baseline value."""
        return abs(baseline) * self.value / 100.0 if self.relative else self.value

    def __str__(self) -> str:
        return f"{self.value:g}%" if self.relative else f"{self.value:g}"


@dataclass(frozen=True)
class Threshold:
    """An absolute gate ``<pattern> <op> <value>`` on the current report.

    >>> t = parse_threshold("image-text/gap<=0.9")
    >>> t.holds(0.85), t.holds(0.95), str(t)
    (True, False, 'image-text/gap<=0.9')
    """

    pattern: MetricPattern
    op: str
    value: float

    def holds(self, current: float) -> bool:
        """Whether ``current`` satisfies the gate."""
        return {
            "<=": current <= self.value,
            ">=": current >= self.value,
            "<": current < self.value,
            ">": current > self.value,
        }[self.op]

    def describe_violation(self, key: str, current: float) -> str:
        """A sentence for a failed gate.

        >>> parse_threshold("R@5>=0.5").describe_violation("image-text/recall/t->i/R@5", 0.42)
        'image-text/recall/t->i/R@5 is 0.4200, below the threshold R@5>=0.5'
        """
        side = "above" if self.op in ("<=", "<") else "below"
        return f"{key} is {format_number(current)}, {side} the threshold {self}"

    def __str__(self) -> str:
        return f"{self.pattern}{self.op}{self.value:g}"


def parse_tolerance(value: object, where: str = "tolerance") -> Tolerance:
    """Parse a tolerance value: a number >= 0 (absolute) or a string like ``"5%"``.

    Strings holding a plain number (``"0.02"``, as from the command line) are absolute.

    >>> parse_tolerance(0.02), parse_tolerance("5%"), parse_tolerance("0.5")
    (Tolerance(value=0.02, relative=False), Tolerance(value=5.0, relative=True), \
Tolerance(value=0.5, relative=False))
    >>> parse_tolerance("-1")
    Traceback (most recent call last):
    ...
    gapscope.errors.GapscopeError: tolerance: expected a number >= 0 or ... got '-1'
    """
    problem = GapscopeError(
        f"{where}: expected a number >= 0 or a percentage like '5%', got {value!r}"
    )
    relative = False
    if isinstance(value, bool):
        raise problem
    if isinstance(value, str):
        text = value.strip()
        relative = text.endswith("%")
        try:
            number = float(text[:-1] if relative else text)
        except ValueError:
            raise problem from None
    elif isinstance(value, int | float):
        number = float(value)
    else:
        raise problem
    if not math.isfinite(number) or number < 0:
        raise problem
    return Tolerance(number, relative)


def parse_tolerance_option(option: str) -> tuple[MetricPattern, Tolerance]:
    """Parse a ``--tolerance`` option, ``PATTERN=VALUE``.

    >>> pattern, tol = parse_tolerance_option("R@1=5%")
    >>> str(pattern), str(tol)
    ('R@1', '5%')
    """
    pattern, sep, value = option.rpartition("=")
    if not sep or not pattern.strip():
        raise GapscopeError(f"tolerance {option!r}: expected METRIC=VALUE, e.g. gap=0.02 or R@1=5%")
    return MetricPattern(pattern.strip()), parse_tolerance(value, f"tolerance {option!r}")


def parse_threshold(text: str) -> Threshold:
    """Parse an absolute gate like ``image-text/gap<=0.9`` or ``R@5 >= 0.5``.

    >>> parse_threshold("R@5 >= 0.5")
    Threshold(pattern=MetricPattern(text='R@5'), op='>=', value=0.5)
    >>> str(parse_threshold("image-text/recall/text->image/R@5>=0.5").pattern)
    'image-text/recall/text->image/R@5'
    >>> parse_threshold("gap=0.9")
    Traceback (most recent call last):
    ...
    gapscope.errors.GapscopeError: threshold 'gap=0.9': expected METRIC<=VALUE, METRIC>=VALUE, \
METRIC<VALUE or METRIC>VALUE, e.g. image-text/gap<=0.9
    """
    if not isinstance(text, str):
        raise GapscopeError(f"threshold {text!r}: expected a string like 'image-text/gap<=0.9'")
    match = _THRESHOLD.match(text)
    problem = GapscopeError(
        f"threshold {text!r}: expected METRIC<=VALUE, METRIC>=VALUE, METRIC<VALUE or "
        "METRIC>VALUE, e.g. image-text/gap<=0.9"
    )
    if match is None:
        raise problem
    try:
        value = float(match["value"])
    except ValueError:
        raise problem from None
    if not math.isfinite(value):
        raise problem
    return Threshold(MetricPattern(match["pattern"]), match["op"], value)
