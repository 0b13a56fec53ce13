"""Strings from stores and reports shown as one line of plain text.

A model name, a source path, a tag or a report key comes from a file gapscope did not write
itself; printed as it is, its control characters would reach the terminal (which runs them:
an escape sequence can clear the screen or forge a line of output) or break a one-line
message. :func:`printable` shows them as escapes. JSON outputs keep the exact values.
"""

from __future__ import annotations

__all__ = ["printable"]

# Every C0 control character, DEL and every C1 control character, as an escape of its own.
_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})


def printable(text: object) -> str:
    """``text`` as a string with every control character shown as its escape, for a terminal.

    C0 controls (ESC, BEL, backspace, line breaks, tabs...), DEL and the C1 controls (CSI
    ``\\x9b``...) would otherwise reach the terminal, which runs them: a model name could
    clear the screen or forge a line of output. A line break is shown too: one name, one line.

    >>> printable("ViT-B-32"), printable("evil\\x1b[2J\\nname")
    ('ViT-B-32', 'evil\\\\x1b[2J\\\\nname')
    """
    return str(text).translate(_ESCAPES)
