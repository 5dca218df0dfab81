"""Rust's ``{:?}`` of a ``str`` and ``String::from_utf8_lossy``, as the guest stand-ins need them.

Facts (rust-lang/rust ``library/core``, as of Rust 1.85, Kuasar's ``rust-toolchain.toml``):

- ``impl Debug for str`` writes ``"``, then every char through ``char::escape_debug_ext`` with
  ``escape_grapheme_extended: true, escape_single_quote: false, escape_double_quote: true``, then ``"``;
- ``escape_debug_ext``: ``\\0`` ``\\t`` ``\\r`` ``\\n`` ``\\\\`` ``\\"`` get a backslash escape; a
  Grapheme_Extend char, or one that is not printable, becomes ``\\u{hex}`` (lower-case hex, no leading
  zeros); everything else (``'`` included) is written as is;
- not printable (``core/src/unicode/printable.py``): general category Cc, Cf, Cs, Co, Cn, Zl, Zp, or
  Zs other than U+0020;
- Grapheme_Extend = Mn + Me + Other_Grapheme_Extend (Unicode PropList.txt);
- ``String::from_utf8_lossy`` replaces each maximal ill-formed subsequence with one U+FFFD, which is
  what Python's ``errors="replace"`` UTF-8 decoder does too.

Not reproduced exactly: Python's ``unicodedata`` tables (Unicode 14.0 on 3.11) stand in for Rust
1.85's (Unicode 16.0), so a char assigned in between is escaped here and not there.
"""

from __future__ import annotations

import unicodedata

__all__ = ["lossy", "rust_debug_str"]

_SHORT = {"\0": "\\0", "\t": "\\t", "\r": "\\r", "\n": "\\n", "\\": "\\\\", '"': '\\"'}
_NOT_PRINTABLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"})

# Other_Grapheme_Extend, PropList-17.0.0.txt (inclusive ranges).
_OTHER_GRAPHEME_EXTEND = (
    (0x09BE, 0x09BE), (0x09D7, 0x09D7), (0x0B3E, 0x0B3E), (0x0B57, 0x0B57), (0x0BBE, 0x0BBE),
    (0x0BD7, 0x0BD7), (0x0CC0, 0x0CC0), (0x0CC2, 0x0CC2), (0x0CC7, 0x0CC8), (0x0CCA, 0x0CCB),
    (0x0CD5, 0x0CD6), (0x0D3E, 0x0D3E), (0x0D57, 0x0D57), (0x0DCF, 0x0DCF), (0x0DDF, 0x0DDF),
    (0x1715, 0x1715), (0x1734, 0x1734), (0x1B35, 0x1B35), (0x1B3B, 0x1B3B), (0x1B3D, 0x1B3D),
    (0x1B43, 0x1B44), (0x1BAA, 0x1BAA), (0x1BF2, 0x1BF3), (0x200C, 0x200C), (0x302E, 0x302F),
    (0xA953, 0xA953), (0xA9C0, 0xA9C0), (0xFF9E, 0xFF9F), (0x111C0, 0x111C0), (0x11235, 0x11235),
    (0x1133E, 0x1133E), (0x1134D, 0x1134D), (0x11357, 0x11357), (0x113B8, 0x113B8), (0x113C2, 0x113C2),
    (0x113C5, 0x113C5), (0x113C7, 0x113C9), (0x113CF, 0x113CF), (0x114B0, 0x114B0), (0x114BD, 0x114BD),
    (0x115AF, 0x115AF), (0x116B6, 0x116B6), (0x11930, 0x11930), (0x1193D, 0x1193D), (0x11F41, 0x11F41),
    (0x16FF0, 0x16FF1), (0x1D165, 0x1D166), (0x1D16D, 0x1D172), (0xE0020, 0xE007F),
)  # fmt: skip


def _grapheme_extend(ch: str) -> bool:
    if unicodedata.category(ch) in ("Mn", "Me"):
        return True
    code = ord(ch)
    return any(low <= code <= high for low, high in _OTHER_GRAPHEME_EXTEND)


def _printable(ch: str) -> bool:
    return ch == " " or unicodedata.category(ch) not in _NOT_PRINTABLE


def _escape(ch: str) -> str:
    short = _SHORT.get(ch)
    if short is not None:
        return short
    if " " <= ch <= "~":
        return ch  # printable ASCII: the common case, never escaped
    if _grapheme_extend(ch) or not _printable(ch):
        return f"\\u{{{ord(ch):x}}}"
    return ch


def rust_debug_str(text: str) -> str:
    """``format!("{:?}", text)`` for a Rust ``&str``: quoted and escaped."""
    return '"' + "".join(_escape(ch) for ch in text) + '"'


def lossy(data: bytes) -> str:
    """``String::from_utf8_lossy(data)``."""
    return data.decode("utf-8", errors="replace")
