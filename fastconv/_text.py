"""Text that is safe to print on a terminal."""
from __future__ import annotations


def printable(text):
    """`text` with every non-printable character escaped the way repr() writes it:
    control characters (ESC, so no ANSI sequence), newlines, carriage returns, tabs and
    other separators or format characters become \\n, \\r, \\t, \\xNN or \\uNNNN, and
    surrogates from undecodable file names \\udcNN (which would otherwise fail to
    encode). Letters of any script, digits, punctuation, backslashes and the space are
    left alone, so an ordinary name prints as itself. For file names, class names and
    any text read from a file that is printed as text (JSON output is already escaped)."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
