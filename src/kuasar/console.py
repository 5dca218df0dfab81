"""Host side of the debug-console exec protocol, sans-IO: the command line we send and the stripper
that finds the command's exit status in what comes back.

Layer contract: bottom layer; bytes and strings only — no asyncio, no sockets, no protobuf
(``kuasarctl exec`` imports it on its fast path). Compatible with Kuasar's vmm-task and kuasar-ctl:

1. send ``KSR_MODE exec\\n`` (the console then turns echo off and sets ``PS1=""``);
2. send one line ``exec sh -c '<wrapper>' sh <each argument single-quoted>``; the wrapper sets the
   terminal byte-transparent (``stty -opost -echo …``; a stock vmm-task leaves output processing on),
   prints ``__KSR_START__:<token>``, runs ``"$@"``, then prints ``__KSR_EXIT__:<token>:<rc>`` (the
   marker format of Kuasar's kuasar-ctl) and exits with ``rc``;
3. everything before the start marker (prompt noise, bracketed-paste escapes of an interactive bash)
   is dropped; everything between the markers is the command's output, byte for byte.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence

from kuasar.errors import UsageError

EXEC_HEADER = b"KSR_MODE exec\n"
START_MARKER = b"__KSR_START__"
EXIT_MARKER = b"__KSR_EXIT__"
#: Terminal settings for byte-exact output and stdin: no output processing, no echo, no CR/LF
#: translation, no signal/flow-control characters; canonical mode stays (``^D`` ends stdin).
STTY_EXEC = "stty -opost -echo -icrnl -inlcr -igncr -ixon -isig -iexten 2>/dev/null"
#: Longest exec line (newline included) a console shell reads: the PTY line discipline's canonical
#: buffer (N_TTY_BUF_SIZE). A longer line never completes in sh, so it is refused up front.
MAX_EXEC_LINE = 4096
#: Bytes kept from before the start marker, shown if the marker never comes (e.g. "sh: not found").
_MAX_PREAMBLE = 64 * 1024
_SHELL_SYNTAX = re.compile(r"[\s;&|<>()$`\\\"'*?\[\]#~=%{}!]")


def new_token() -> str:
    """A token unique to this call: ``<pid>-<nanoseconds>``."""
    return f"{os.getpid()}-{time.time_ns()}"


def shell_quote(arg: str) -> str:
    """Single-quote ``arg`` for sh: ``'`` becomes ``'\\''``."""
    return "'" + arg.replace("'", "'\\''") + "'"


def command_argv(argv: Sequence[str]) -> list[str]:
    """The argv to run: a single argument with spaces or shell syntax is a shell command line
    (``exec -t pod "ls -la && ps aux"``), as in the original kuasarctl."""
    if len(argv) == 1 and _SHELL_SYNTAX.search(argv[0]):
        return ["sh", "-c", argv[0]]
    return list(argv)


def build_exec_line(argv: Sequence[str], token: str, *, stdin: bool) -> bytes:
    """The one line that runs ``argv`` under the marker wrapper.

    Args:
        argv: the command; see ``command_argv`` for the one-string form.
        token: from ``new_token()``; it must not contain ``'``.
        stdin: keep the console as the command's stdin; otherwise it reads ``/dev/null``.

    Raises:
        UsageError: the line would be longer than ``MAX_EXEC_LINE`` bytes.
        ValueError: ``token`` contains a single quote.
    """
    if "'" in token:
        raise ValueError("token must not contain a single quote")
    redirect = "" if stdin else " </dev/null"
    wrapper = (
        f"{STTY_EXEC}; printf '%s:%s\\n' '{START_MARKER.decode()}' '{token}'; "
        f'"$@"{redirect}; rc=$?; '
        f"printf '%s:%s:%s\\n' '{EXIT_MARKER.decode()}' '{token}' \"$rc\"; exit \"$rc\""
    )
    words = " ".join(shell_quote(arg) for arg in command_argv(argv))
    line = f"exec sh -c {shell_quote(wrapper)} sh {words}\n".encode()
    if len(line) > MAX_EXEC_LINE:
        raise UsageError(
            f"command too long for the debug console ({len(line)} bytes quoted, at most {MAX_EXEC_LINE})",
            hints=["The console is a terminal line; the agent API (port 1024) has no such limit."],
        )
    return line


class MarkerStripper:
    """Feeds on console output; emits the command's bytes and finds its exit status.

    ``feed`` returns what may be written out now; it holds back only a tail that could be the start
    of a marker. Before the start marker nothing is emitted (it is kept, bounded, for ``finish``).
    After the exit marker line, ``exit_status`` is set and further bytes are dropped.
    """

    def __init__(self, token: str) -> None:
        self._start_line = re.compile(re.escape(START_MARKER + b":" + token.encode()) + rb"\r?\n")
        self._exit = EXIT_MARKER + b":" + token.encode() + b":"
        self._exit_line = re.compile(re.escape(self._exit) + rb"(\d{1,3})\r?\n")
        self._buffer = bytearray()
        self.started = False
        self.exit_status: int | None = None

    def feed(self, data: bytes) -> bytes:
        if self.exit_status is not None:
            return b""
        self._buffer += data
        if not self.started:
            match = self._start_line.search(self._buffer)  # \r\n: a console whose stty failed
            if match is None:
                self._trim_preamble()
                return b""
            del self._buffer[: match.end()]
            self.started = True
        return self._take_output()

    def _trim_preamble(self) -> None:
        excess = len(self._buffer) - _MAX_PREAMBLE
        if excess > 0:
            del self._buffer[:excess]

    def _take_output(self) -> bytes:
        match = self._exit_line.search(self._buffer)
        if match is not None:
            out = bytes(self._buffer[: match.start()])
            self.exit_status = int(match.group(1))
            self._buffer.clear()
            return out
        keep = self._partial_marker_length()
        out = bytes(self._buffer[: len(self._buffer) - keep])
        del self._buffer[: len(self._buffer) - keep]
        return out

    def _partial_marker_length(self) -> int:
        """How many trailing bytes could still grow into an exit marker line."""
        index = self._buffer.rfind(self._exit)
        if index >= 0:
            tail = self._buffer[index + len(self._exit) :]
            if len(tail) <= 5 and re.fullmatch(rb"\d{0,3}\r?", bytes(tail)):
                return len(self._buffer) - index
        for length in range(min(len(self._exit) - 1, len(self._buffer)), 0, -1):
            if self._buffer.endswith(self._exit[:length]):
                return length
        return 0

    def finish(self) -> bytes:
        """At EOF: whatever is still held (everything, if the start marker never came)."""
        out = bytes(self._buffer) if self.exit_status is None else b""
        self._buffer.clear()
        return out
