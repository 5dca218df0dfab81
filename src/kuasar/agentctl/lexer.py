"""One ``-c`` command string into its name and arguments, sans-IO.

Layer contract: ``kuasar.agentctl``; stdlib and ``kuasar.errors`` only (no protobuf).

Grammar (a superset of kata-agent-ctl's, whose whitespace split breaks quoted values)::

    command   := NAME argument*
    argument  := "json://" JSON         a JSON document, read raw up to its end (no shell quoting:
                                        json://{"a": "b c"} is one argument)
               | PATH "=" JSON          a JSON object or array value, read raw the same way
               | PATH "=" WORD          a shell word: 'single', "double" (\\ escapes) and \\x quoting
               | WORD                   anything else (file:///p.json, builtin arguments)

``PATH`` is a field name, dotted for nested fields, map keys and list indexes (``process.Args``,
``labels.app``, ``Routes.0.dest``). A ``PATH=[a,b]`` that is not valid JSON is a shell word, typed
later by the descriptor (``compose``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from kuasar.errors import UsageError

_PATH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*(?==)")
_JSON_URI = "json://"
_DECODER = json.JSONDecoder()


@dataclass(frozen=True, slots=True)
class Word:
    """A plain argument, quotes removed."""

    text: str


@dataclass(frozen=True, slots=True)
class JsonDoc:
    """A ``json://`` document."""

    value: Any
    text: str


@dataclass(frozen=True, slots=True)
class Assign:
    """``path=value``: ``value`` is a string, or (``is_json``) a parsed JSON object or array."""

    path: str
    value: Any
    is_json: bool = False

    def __str__(self) -> str:
        return f"{self.path}={json.dumps(self.value) if self.is_json else self.value}"


Token = Word | JsonDoc | Assign


class LexError(UsageError):
    """A command string that does not split (unterminated quote, malformed ``json://``)."""


def _json_at(text: str, start: int) -> tuple[Any, int]:
    """The JSON value starting at ``start`` and the index after it."""
    while start < len(text) and text[start] in " \t":
        start += 1
    return _DECODER.raw_decode(text, start)


def _ends_token(text: str, index: int) -> bool:
    return index >= len(text) or text[index].isspace()


def _shell_word(text: str, i: int) -> tuple[str, int]:
    """A POSIX-shell-style word from ``i``: quotes and backslashes removed, ended by whitespace."""
    out: list[str] = []
    n = len(text)
    while i < n and not text[i].isspace():
        char = text[i]
        if char == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise LexError(f"unterminated ' quote in {text!r}")
            out.append(text[i + 1 : end])
            i = end + 1
        elif char == '"':
            i += 1
            while True:
                if i >= n:
                    raise LexError(f'unterminated " quote in {text!r}')
                char = text[i]
                if char == '"':
                    i += 1
                    break
                if char == "\\" and i + 1 < n and text[i + 1] in '"\\$`\n':
                    out.append(text[i + 1])
                    i += 2
                    continue
                out.append(char)
                i += 1
        elif char == "\\" and i + 1 < n:
            out.append(text[i + 1])
            i += 2
        else:
            out.append(char)
            i += 1
    return "".join(out), i


def split(text: str) -> list[Token]:
    """Split one command string into tokens (the first is the command name, a :class:`Word`).

    Raises:
        LexError: an unterminated quote, or a ``json://`` that is not one JSON document.
    """
    tokens: list[Token] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            return tokens
        if text.startswith(_JSON_URI, i):
            try:
                value, end = _json_at(text, i + len(_JSON_URI))
            except json.JSONDecodeError as exc:
                raise LexError(f"malformed JSON after json://: {exc.msg} at column {exc.colno}") from None
            if not _ends_token(text, end):
                raise LexError(f"unexpected text after a json:// document: {text[end:]!r}")
            tokens.append(JsonDoc(value, text[i:end]))
            i = end
            continue
        match = _PATH.match(text, i)
        if match and match.end() + 1 < n and text[match.end() + 1] in "{[":
            try:
                value, end = _DECODER.raw_decode(text, match.end() + 1)
            except json.JSONDecodeError:
                value, end = None, -1
            if end > 0 and _ends_token(text, end):
                tokens.append(Assign(match.group(), value, is_json=True))
                i = end
                continue
        word, i = _shell_word(text, i)
        tokens.append(_classify(word))


def _classify(word: str) -> Token:
    match = _PATH.match(word)
    if match and match.end() == word.find("="):
        return Assign(match.group(), word[match.end() + 1 :])
    return Word(word)
