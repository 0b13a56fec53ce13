"""Strings from stores and reports shown as one line of plain text.

A model name, a source path, a tag or a report key comes from a file gapscope did not write
itself; printed as it is, its control characters would reach the terminal (which runs them:
an escape sequence can clear the screen or forge a line of output) or break a one-line
message, and its invisible format characters (bidirectional overrides, zero-width spaces)
would make it read as another name ("Trojan Source", CVE-2021-42574). :func:`printable`
shows them as escapes. JSON outputs keep the exact values.
"""

from __future__ import annotations

import unicodedata

__all__ = ["printable"]

# Every C0 control character, DEL and every C1 control character, as an escape of its own.
_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})
# Format characters (bidirectional controls, zero-width spaces and joiners, the byte order
# mark, tag characters) and the line and paragraph separators: invisible, or a line break.
_INVISIBLE = ("Cf", "Zl", "Zp")


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def printable(text: object) -> str:
    """``text`` as a string with every control and invisible format character shown as its
    escape, for a terminal.

    C0 controls (ESC, BEL, backspace, line breaks, tabs...), DEL and the C1 controls (CSI
    ``\\x9b``...) would otherwise reach the terminal, which runs them: a model name could
    clear the screen or forge a line of output. A line break is shown too: one name, one line.
    Unicode format characters (category Cf: the bidirectional overrides and isolates, which
    reorder what follows them, zero-width spaces and joiners, the byte order mark) and the
    line and paragraph separators (Zl, Zp) are shown as ``\\uXXXX``, so that two names that
    differ only in them do not look alike. Other characters, accented or not Latin, are kept.

    >>> printable("ViT-B-32"), printable("evil\\x1b[2J\\nname")
    ('ViT-B-32', 'evil\\\\x1b[2J\\\\nname')
    >>> printable("ckpt\\u202egnp.exe"), printable("café 日本")
    ('ckpt\\\\u202egnp.exe', 'café 日本')
    """
    out = str(text).translate(_ESCAPES)
    if out.isascii():
        return out
    return "".join(
        _escape(char) if unicodedata.category(char) in _INVISIBLE else char for char in out
    )
