"""Making untrusted text safe to print on an operator's terminal.

Layer contract: bottom layer; stdlib only, imports nothing from kuasar. Whatever came from the user,
the filesystem or a guest (sandbox IDs, prefixes, paths, directory listings, remote messages) goes
through :func:`printable` before it reaches a terminal, so that no escape sequence is acted on and no
newline splits a one-line message.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import re
    from typing import Any

#: C0 controls, DEL, C1 controls; line/paragraph separators and bidi embeddings, overrides and
#: isolates (they reorder what the operator reads); every surrogate (``surrogateescape`` turns each
#: byte of invalid UTF-8 into U+DC80..U+DCFF).
_UNSAFE = "[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # one byte of invalid UTF-8, as surrogateescape decoded it
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def printable(value: str | bytes) -> str:
    """``value`` with every control character and undecodable byte shown as a visible escape.

    ``\\n``, ``\\r`` and ``\\t`` become those two-character escapes; other C0/C1 controls, DEL and
    invalid UTF-8 bytes become ``\\xNN`` (``\\x1b``, ``\\x7f``, ``\\xff``); line separators and bidi
    controls become ``\\uNNNN``. Printable text, non-ASCII included, is returned unchanged, and so is
    a backslash: the result of ``printable`` is its own fixed point.

    Args:
        value: text (possibly holding ``surrogateescape``'d bytes, as ``os.listdir`` and ``sys.argv``
            give undecodable names) or raw bytes (decoded as UTF-8 with ``surrogateescape``).

    Returns:
        A string holding no control character, safe to write to a terminal on one line.
    """
    text = value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value
    if text.isascii() and text.isprintable():  # nothing to escape (0x20-0x7e only), no re needed
        return text
    return compiled(_UNSAFE).sub(_escape, text)


_PATTERNS: dict[str | bytes, re.Pattern[Any]] = {}


def compiled(pattern: str | bytes) -> re.Pattern[Any]:
    """``re.compile(pattern)``, compiled on first use and kept: ``re`` loads ``enum`` and
    ``functools`` (≈ 5 ms), which the start-up paths of ``kuasarctl`` must not pay for text that
    needs no regular expression."""
    found = _PATTERNS.get(pattern)
    if found is None:
        import re

        found = _PATTERNS[pattern] = re.compile(pattern)
    return found
