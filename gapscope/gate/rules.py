"""The vocabulary of ``gapscope check``: metric patterns, tolerances and absolute thresholds.

Metrics are named by their JSON key paths joined with ``/``
(:func:`gapscope.report.model.flatten_report`), e.g. ``image-text/gap``,
``image-text/recall/text->image/R@5``, ``image/cone``: the names the check and diff documents
and tables show. A pattern may also be written in the tracker spelling of the flat outputs
(:meth:`gapscope.report.Report.to_flat`, ``--format flat``, CSV; see
:func:`gapscope.analysis.keys.tracker_key`): ``image-text/recall/text_to_image/R5`` and
``R5`` select what ``image-text/recall/text->image/R@5`` and ``R@5`` select. A *pattern*
selects metrics:

- a full key (``image-text/gap``) selects that metric;
- a pattern with a ``/`` is a shell-style glob over the whole key
  (``image-text/recall/*/R@1``; ``*`` also matches ``/``), or over the key's last
  components, as many as the pattern has: ``gap_ci/high`` selects the upper bound of every
  pair's gap interval, ``text->image/R@5`` every pair's recall@5 from text to image (no full
  key of a report is the tail of another, so a full key still selects that metric alone);
- a pattern without a ``/`` matches the key's last component: ``gap`` selects every pair's
  gap, ``R@5`` every direction's recall@5, ``R@*`` every recall@K, ``*`` every metric.

When several tolerance patterns select one metric the most specific wins: a full key, then a
path glob (the one with more literal characters first), then a bare name, then a bare glob;
between equally specific patterns the one given last wins (the command line comes after the
config file).

A *tolerance* is how far a metric may move in its bad direction: an absolute amount (``0.02``)
or a percentage of the baseline value (``"5%"``). A *threshold* is an absolute gate that
needs no baseline: ``image-text/gap<=0.9``, ``R@5>=0.5`` (operators ``<=``, ``>=``, ``<``, ``>``).

The *default gate* (:data:`DEFAULT_GATE`) applies when no tolerance is configured: it gates
the families of metrics that say whether a checkpoint got better (the gap, the cosines,
alignment, uniformity, retrieval, zero-shot accuracy), each by its bootstrap intervals when
both reports have them and else by a tolerance on the scale of the metric, and tracks every
other metric without gating it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase

from gapscope.analysis import keys as K
from gapscope.analysis.keys import tracker_key
from gapscope.errors import GapscopeError
from gapscope.report.numbers import format_number

__all__ = [
    "DEFAULT_GATE",
    "DefaultFamily",
    "MetricPattern",
    "Threshold",
    "Tolerance",
    "parse_threshold",
    "parse_tolerance",
    "default_family",
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
    >>> MetricPattern("image-text/recall/*/R5").matches("image-text/recall/image->text/R@5")
    True
    >>> MetricPattern("gap_ci/high").matches("image-audio/gap_ci/high")
    True
    """

    text: str

    def __post_init__(self) -> None:
        if not self.text or self.text != self.text.strip():
            raise GapscopeError(f"metric pattern {self.text!r} is empty or has spaces around it")

    @property
    def is_glob(self) -> bool:
        return bool(_GLOB_CHARS.search(self.text))

    def matches(self, key: str) -> bool:
        """Whether ``key`` (a flat report key, ``image-text/recall/text->image/R@5``) is
        selected by this pattern, written in that spelling or in the tracker spelling
        (``image-text/recall/text_to_image/R5``)."""
        return any(self._matches(spelling) for spelling in (key, tracker_key(key)))

    def _matches(self, key: str) -> bool:
        if "/" not in self.text:
            return fnmatchcase(key.rsplit("/", 1)[-1], self.text)
        if fnmatchcase(key, self.text):
            return True
        # Or the key's last components, as many as the pattern has: gap_ci/high is the upper
        # bound of every pair's gap, as gap is every pair's gap.
        depth = self.text.count("/") + 1
        parts = key.split("/")
        return len(parts) > depth and fnmatchcase("/".join(parts[-depth:]), self.text)

    def specificity(self) -> tuple[int, int]:
        """Sort key, smaller is more specific: (tier, minus the count of literal characters).

        >>> sorted(["*", "gap", "image-text/*", "image-text/gap", "R@*"],
        ...        key=lambda p: MetricPattern(p).specificity())
        ['image-text/gap', 'image-text/*', 'gap', 'R@*', '*']
        """
        path = "/" in self.text
        tier = (0 if not self.is_glob else 1) if path else (2 if not self.is_glob else 3)
        # Counted in the tracker spelling, so that R@5 and R5 are equally specific.
        return tier, -len(tracker_key(_GLOB_CHARS.sub("", self.text)))

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


@dataclass(frozen=True)
class DefaultFamily:
    """A family of metrics the default gate gates, and the tolerance it applies without
    bootstrap intervals.

    Attributes:
        name: the family's name in outputs (``gap``, ``cosines``, ...).
        patterns: the leaf patterns that select its metrics.
        tolerance: how far a metric of the family may move in its bad direction when the two
            reports do not both have its interval.
        why: where the tolerance comes from, in a few words.
    """

    name: str
    patterns: tuple[MetricPattern, ...]
    tolerance: Tolerance
    why: str

    def matches(self, key: str) -> bool:
        """Whether the flat key ``key`` is a metric of this family."""
        return any(p.matches(key) for p in self.patterns)


def _leaves(*names: str) -> tuple[MetricPattern, ...]:
    return tuple(MetricPattern(name) for name in names)


#: What ``gapscope check`` gates when no tolerance is configured. A metric of these families
#: is judged by its bootstrap intervals when both reports have them (a change counts when the
#: intervals do not overlap) and else by the family's tolerance; every other metric with a
#: direction (the cone, MIR, ranks and the diagnostics) is tracked: compared and shown, never
#: failing the check. The tolerances are 1% of the range each geometric metric can take (a
#: shift smaller than that has not been shown to matter), and two points of retrieval (the
#: binomial standard error of R@K = 0.5 on 625 queries: a probe set of a few hundred queries
#: moves a point with a handful of them).
DEFAULT_GATE: tuple[DefaultFamily, ...] = (
    DefaultFamily("gap", _leaves(K.GAP.name), Tolerance(0.02), "1% of its range [0, 2]"),
    DefaultFamily(
        "cosines",
        _leaves(K.CENTROID_COSINE.name, K.PAIRED_COSINE.name, K.UNPAIRED_COSINE.name),
        Tolerance(0.02),
        "1% of the range of a cosine [-1, 1]",
    ),
    DefaultFamily(
        "alignment",
        _leaves(K.ALIGNMENT.name),
        Tolerance(0.04),
        "1% of its range [0, 4] (alpha 2); 2 x the cosines', as alignment = 2 - 2 cos",
    ),
    DefaultFamily(
        "uniformity",
        _leaves(K.UNIFORMITY.name),
        Tolerance(0.04),
        "1% of its range [-4, 0] (t 2)",
    ),
    DefaultFamily(
        "retrieval",
        _leaves("R@*", K.MAP.name, K.R_PRECISION.name),
        Tolerance(0.02),
        "2 points: one binomial standard error of R@K = 0.5 on 625 queries",
    ),
    DefaultFamily(
        "zero-shot",
        _leaves(K.TOP1_ACCURACY.name, K.TOP5_ACCURACY.name, K.BALANCED_ACCURACY.name),
        Tolerance(0.02),
        "2 points, as retrieval: an accuracy is a hit rate over the labelled rows",
    ),
)


def default_family(key: str) -> DefaultFamily | None:
    """The family of the default gate that gates the flat key ``key``, or None (tracked).

    >>> default_family("image-text/recall/text->image/R@5").name
    'retrieval'
    >>> default_family("image-text/gap").tolerance
    Tolerance(value=0.02, relative=False)
    >>> default_family("image-text/cka") is None, default_family("image/cone") is None
    (True, True)
    """
    return next((family for family in DEFAULT_GATE if family.matches(key)), None)


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
