"""``-c`` commands into steps: agent calls and the builtins, all checked before anything is sent.

Layer contract: ``kuasar.agentctl``; ``catalog``, ``lexer`` and ``compose``; no IO (a ``file://``
argument is read through ``compose``'s ``read_file``).

Builtins, as kata-agent-ctl has them (lower case; everything else names a method):

======================  ==========================================================================
``echo WORDS...``       print the words
``sleep DURATION``      pause: ``5``, ``1.5s``, ``250ms``, ``1m30s`` (fractions allowed)
``repeat N [COMMAND]``  run COMMAND (or, alone, the next command) N times; ``-1``: until a failure
                        or Ctrl-C
``quit`` / ``exit``     stop here
``help`` / ``list``     the builtins and every method's name
======================  ==========================================================================
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from kuasar.agentctl import lexer
from kuasar.agentctl.compose import ArgumentError, ReadFile, Request, compose, words
from kuasar.errors import UsageError

if TYPE_CHECKING:
    from kuasar.agentctl.catalog import Catalog, Method

#: ``repeat N``'s N for "forever".
FOREVER = -1
BUILTINS = ("echo", "sleep", "repeat", "quit", "exit", "help", "list")

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "": 1.0,
    "s": 1.0,
    "sec": 1.0,
    "secs": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "mins": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
}
_PART = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zµ]*)", re.IGNORECASE)


def parse_duration(text: str) -> float:
    """Seconds in ``text``: humantime-style (``5s``, ``1m30s``, ``250ms``, ``1.5h``; a bare number
    is seconds). Zero is allowed.

    Raises:
        UsageError: not a duration.
    """
    total, position, stripped = 0.0, 0, text.strip()
    if not stripped:
        raise UsageError("empty duration (e.g. 5s, 250ms, 1m30s)")
    while position < len(stripped):
        match = _PART.match(stripped, position)
        unit = match.group(2).lower() if match else ""
        bare_number_in_a_sum = match is not None and not unit and (position or match.end() < len(stripped))
        if match is None or unit not in _UNITS or bare_number_in_a_sum:
            raise UsageError(f"not a duration: {text!r} (e.g. 5s, 250ms, 1m30s)")
        total += float(match.group(1)) * _UNITS[unit]
        position = match.end()
    return total


@dataclass(frozen=True)
class Call:
    """An agent call, composed for every method its name may mean (the guest kind picks one).

    Attributes:
        text: the command as given.
        name: the method name as given.
        requests: the composed request, per candidate method (in preference order).
        count: how many times to run it (``FOREVER``: until a failure or Ctrl-C).
    """

    text: str
    name: str
    requests: tuple[Request, ...]
    count: int = 1

    @property
    def candidates(self) -> tuple[Method, ...]:
        return tuple(request.method for request in self.requests)

    def request_for(self, method: Method) -> Request:
        return next(r for r in self.requests if r.method == method)


@dataclass(frozen=True)
class Echo:
    text: str
    count: int = 1


@dataclass(frozen=True)
class Sleep:
    seconds: float
    count: int = 1


@dataclass(frozen=True)
class Quit:
    count: int = 1


@dataclass(frozen=True)
class Help:
    count: int = 1


Step = Call | Echo | Sleep | Quit | Help


@dataclass
class Planner:
    """Turns command strings into steps (one at a time for ``-i``, a list for ``-c``).

    Attributes:
        catalog: where method names are looked up.
        read_file: reads ``file://`` arguments.
        pending_repeat: a ``repeat N`` on its own waits for the next command.
    """

    catalog: Catalog
    read_file: ReadFile | None = None
    pending_repeat: int | None = field(default=None)

    def parse(self, text: str) -> Step | None:
        """The step ``text`` makes, or ``None`` for a ``repeat N`` that prefixes the next command.

        Raises:
            UsageError: an unknown method (with the closest names), a bad argument, a bad builtin.
        """
        try:
            tokens = lexer.split(text)
        except lexer.LexError as exc:
            raise lexer.LexError(f"{text.split(maxsplit=1)[0]}: {exc}") from None
        if not tokens:
            raise UsageError("empty command")
        step = self._step(text, tokens)
        if step is None:
            return None
        if self.pending_repeat is not None:
            step = replace(step, count=self.pending_repeat)
            self.pending_repeat = None
        return step

    def parse_all(self, commands: Sequence[str]) -> list[Step]:
        """Every command's step, in order.

        Raises:
            UsageError: as :meth:`parse`, naming the command; or a ``repeat N`` with nothing after it.
        """
        steps: list[Step] = []
        for text in commands:
            step = self.parse(text)
            if step is not None:
                steps.append(step)
        if self.pending_repeat is not None:
            raise UsageError("repeat: no command after it to repeat")
        return steps

    def _step(self, text: str, tokens: list[lexer.Token]) -> Step | None:
        first, args = tokens[0], tokens[1:]
        if not isinstance(first, lexer.Word):
            word = text.split(maxsplit=1)[0]
            raise UsageError(f"a command starts with a method name or a builtin, not {word!r}")
        name = first.text
        if name == "repeat":
            return self._repeat(text, args)
        if name == "echo":
            return Echo(" ".join(words(args)))
        if name == "sleep":
            if len(args) != 1:
                raise UsageError("sleep: give one duration (e.g. sleep 2s)")
            return Sleep(parse_duration(words(args)[0]))
        if name in ("quit", "exit", "help", "list"):
            if args:
                raise UsageError(f"{name}: takes no arguments")
            return Help() if name in ("help", "list") else Quit()
        return self._call(text, name, args)

    def _repeat(self, text: str, args: list[lexer.Token]) -> Step | None:
        count_text = words(args[:1])
        try:
            count = int(count_text[0]) if count_text else 0
        except ValueError:
            count = 0
        if count == 0 or count < FOREVER:
            raise UsageError(f"repeat: give a count (1, 2, ... or -1 for ever), not {' '.join(count_text)!r}")
        if len(args) == 1:
            self.pending_repeat = count
            return None
        step = self._step(text, args[1:])
        return None if step is None else replace(step, count=count)

    def _call(self, text: str, name: str, args: list[lexer.Token]) -> Call:
        candidates = self.catalog.candidates(name)
        requests: list[Request] = []
        first_error: ArgumentError | None = None
        for method in candidates:
            try:
                if self.read_file is None:
                    requests.append(compose(method, args))
                else:
                    requests.append(compose(method, args, read_file=self.read_file))
            except ArgumentError as exc:
                first_error = first_error or exc
        if not requests:
            assert first_error is not None
            raise first_error
        return Call(text, name, tuple(requests))


def calls(steps: Sequence[Step]) -> list[Call]:
    """The agent calls among ``steps``."""
    return [step for step in steps if isinstance(step, Call)]
