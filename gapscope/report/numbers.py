"""The one number formatter of every table gapscope prints or renders: the terminal report,
the HTML page and the gate's tables and messages show a value the same way."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["format_change", "format_number", "format_percent"]

# Values whose magnitude lies in this range get four decimals; others four significant digits.
_FIXED_RANGE = (1e-3, 1e5)


def format_number(value: Any) -> str:
    """A metric value: four decimals in [0.001, 100000), else four significant digits;
    integers as they are; booleans as yes/no; ``None`` and non-finite values as ``n/a``.

    >>> format_number(0.61234), format_number(-2.50962), format_number(1.2e-05)
    ('0.6123', '-2.5096', '1.2e-05')
    >>> format_number(None), format_number(12), format_number(True), format_number(0.0)
    ('n/a', '12', 'yes', '0.0000')
    """
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    number = float(value)
    if not math.isfinite(number):
        return "n/a"
    low, high = _FIXED_RANGE
    if number == 0.0 or low <= abs(number) < high:
        return f"{number:.4f}"
    return f"{number:.4g}"


def format_percent(value: Any) -> str:
    """A share in [0, 1] as a percentage with one decimal (``n/a`` for ``None``).

    >>> format_percent(0.6033), format_percent(None)
    ('60.3%', 'n/a')
    """
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{100 * float(value):.1f}%"


def format_change(change: float | None, relative: float | None = None) -> str:
    """A signed change, with its relative size when known (empty for ``None``).

    >>> format_change(0.05, 0.082), format_change(-0.0009, None), format_change(0.0)
    ('+0.0500 (+8.2%)', '-0.0009', '0')
    """
    if change is None:
        return ""
    if change == 0:
        return "0"
    text = format_number(change)
    text = text if text.startswith("-") else f"+{text}"
    if relative is not None:
        text += f" ({100 * relative:+.1f}%)"
    return text
