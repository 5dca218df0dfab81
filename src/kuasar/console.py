"""Host side of the debug-console exec protocol, sans-IO: the command line we send, the encoding of
every argument and of stdin, and the stripper that finds the command's exit status in what comes back.

Layer contract: bottom layer; bytes and strings only — no asyncio, no sockets, no protobuf
(``kuasarctl exec`` imports it on its fast path). Drivers (``kuasar.console_session`` on asyncio, a
synchronous one for one-shot commands) move bytes; every protocol rule lives in :class:`ConsoleExec`.
Compatible with Kuasar's vmm-task and kuasar-ctl:

1. send ``KSR_MODE exec\\n`` (the console then turns echo off and sets ``PS1=""``);
2. send one line ``exec sh -c '<wrapper>' sh <each argument single-quoted>``; the wrapper sets the
   terminal byte-transparent (``stty -opost -echo …``; a stock vmm-task leaves output processing on),
   prints ``__KSR_START__:<token>``, runs ``"$@"``, then prints ``__KSR_EXIT__:<token>:<rc>`` (the
   marker format of Kuasar's kuasar-ctl) and exits with ``rc``;
3. everything before the start marker (prompt noise, bracketed-paste escapes of an interactive bash)
   is dropped; everything between the markers is the command's output, byte for byte.

No raw control byte ever travels to the guest's line editor (a stock console is an interactive bash
on a PTY: ``^U`` would erase the line typed so far, ``TAB`` would complete, bytes above 0x7f are
Meta keys in the C locale). The exec line holds printable ASCII only: an argument with any other
byte travels as a ``printf`` format of octal escapes, decoded by the wrapper (POSIX ``printf`` in
``sh``) before the command runs. Piped stdin (:attr:`StdinMode.DATA`) travels the same way, as lines
of at most :data:`STDIN_LINE` encoded bytes, which the wrapper decodes into a pipe to the command:
binary-exact, no terminal line limit, EOF as an empty line. Only interactive keystrokes
(:attr:`StdinMode.TERMINAL`) go raw: there the guest's terminal is meant to act on them.
"""

from __future__ import annotations

import os
import time

from kuasar._record import Named, Record
from kuasar._text import compiled
from kuasar.errors import ConnectionClosed, ProtocolError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import re
    from collections.abc import Mapping, Sequence
    from typing import ClassVar

EXEC_HEADER = b"KSR_MODE exec\n"
START_MARKER = b"__KSR_START__"
EXIT_MARKER = b"__KSR_EXIT__"
#: Terminal settings for byte-exact output and stdin: no output processing, no echo, no CR/LF
#: translation, no signal/flow-control characters; canonical mode stays (lines, ``^D``).
STTY_EXEC = "stty -opost -echo -icrnl -inlcr -igncr -ixon -isig -iexten 2>/dev/null"
#: Longest exec line (newline included) a console shell reads: the PTY line discipline's canonical
#: buffer (N_TTY_BUF_SIZE). A longer line never completes in sh, so it is refused up front.
MAX_EXEC_LINE = 4096
#: Longest encoded stdin line (newline excluded): well inside the canonical buffer.
STDIN_LINE = 1024
#: The wrapper's exit status when ``-w DIR`` cannot be entered (as the agent API's INVALID_ARGUMENT).
CWD_FAILED = 125
#: Bytes kept from before the start marker, shown if the marker never comes (e.g. "sh: not found").
_MAX_PREAMBLE = 64 * 1024
#: Bytes that may travel as themselves in a printf format: printable ASCII but ``%``, ``\\``, ``'``.
_LITERAL = frozenset(range(0x20, 0x7F)) - frozenset(b"%\\'")
#: Each byte's printf-format spelling: itself, ``%%``, or a three-digit octal escape.
_FORMAT = [bytes([b]) if b in _LITERAL else b"%%" if b == 0x25 else b"\\%03o" % b for b in range(256)]


#: The bytes a printf format escapes.
_NOT_LITERAL = rb"[^\x20-\x24\x26\x28-\x5b\x5d-\x7e]"
#: The bytes that stand for themselves, for ``bytes.translate``'s quick check.
_LITERAL_BYTES = bytes(sorted(_LITERAL))


def _is_env_name(key: str) -> bool:
    """``[A-Za-z_][A-Za-z0-9_]*``: a name ``sh`` takes in ``export NAME=...``."""
    return key.isascii() and (key[:1].isalpha() or key[:1] == "_") and key.replace("_", "a").isalnum()


def _is_printable_ascii(data: bytes) -> bool:
    """Only bytes 0x20-0x7e (an empty string too)."""
    return data.isascii() and data.decode().isprintable()


#: Decodes the positional parameters flagged ``1`` in ``$1`` (the mask): ``printf`` turns each
#: format back into its bytes; the ``x`` on both ends keeps ``printf`` from reading an option and
#: ``$(…)`` from eating trailing newlines.
_DECODE_ARGS = (
    'm=$1; shift; n=$#; for a; do case $m in 1*) a=$(printf "x${a}x"); a=${a#x}; a=${a%x};; esac; '
    'm=${m#?}; set -- "$@" "$a"; done; shift "$n"; '
)
#: Reads encoded stdin lines until an empty one and writes their bytes to the command's pipe.
_DECODE_STDIN = 'while IFS= read -r l && [ -n "$l" ]; do printf "$l"; done'


class StdinMode(Named):
    """What the remote command's stdin is."""

    #: ``/dev/null``.
    NONE: ClassVar[StdinMode]
    #: A pipe fed with the bytes given to :meth:`ConsoleExec.send_input`, exactly (encoded lines).
    DATA: ClassVar[StdinMode]
    #: The console's terminal itself: keystrokes, sent raw, for interactive programs.
    TERMINAL: ClassVar[StdinMode]


StdinMode.define(NONE="none", DATA="data", TERMINAL="terminal")


class TerminalSetup(Record):
    """The client's terminal, reproduced on the console's PTY for an interactive command.

    Attributes:
        rows: window height.
        cols: window width.
        term: the ``TERM`` to set (empty: keep the console's).
    """

    rows: int = 24
    cols: int = 80
    term: str = ""


def new_token() -> str:
    """A token unique to this call: ``<pid>-<nanoseconds>``."""
    return f"{os.getpid()}-{time.time_ns()}"


def shell_quote(arg: str) -> str:
    """Single-quote ``arg`` for sh: ``'`` becomes ``'\\''``."""
    return "'" + arg.replace("'", "'\\''") + "'"


def encode_format(data: bytes) -> bytes:
    """``data`` as a printf format of printable ASCII that prints exactly ``data``."""
    if not data.translate(None, _LITERAL_BYTES):  # nothing to escape: no ``re`` at start-up
        return data
    return compiled(_NOT_LITERAL).sub(_format_byte, data)


def _format_byte(match: re.Match[bytes]) -> bytes:
    return _FORMAT[match[0][0]]


def _as_bytes(value: str | bytes) -> bytes:
    data = value if isinstance(value, bytes) else os.fsencode(value)
    if b"\0" in data:
        raise UsageError(
            f"an argument contains a NUL byte: {data[:40]!r}",
            hints=["No command line can carry a NUL byte; pass such data on stdin."],
        )
    return data


def _env_items(env: Mapping[str, str | bytes]) -> list[bytes]:
    items = []
    for key, value in env.items():
        if not _is_env_name(key):
            raise UsageError(
                f"environment variable name {key!r} cannot be set over the debug console",
                hints=["The console's sh exports only names of letters, digits and _; the agent API can."],
            )
        items.append(key.encode() + b"=" + _as_bytes(value))
    return items


def _wrapper(token: str, *, stdin: StdinMode, terminal: TerminalSetup | None, cwd: bool, envs: int) -> str:
    """The ``sh -c`` script: positional parameters are ``[rows cols term] [cwd] [env…] argv…``."""
    steps = [
        "trap : INT QUIT",  # a Ctrl-C that kills the command must not kill the wrapper (exit 130)
        STTY_EXEC,
        f"printf '%s:%s\\n' '{START_MARKER.decode()}' '{token}'",
    ]
    exit_marker = f"printf '%s:%s:%s\\n' '{EXIT_MARKER.decode()}' '{token}' \"$rc\"; exit \"$rc\""
    if terminal is not None:
        steps.append('stty sane rows "$1" cols "$2" 2>/dev/null; unset PS1 PS2')
        steps.append('[ -z "$3" ] || export TERM="$3"; shift 3')
    if cwd:
        steps.append(f'cd -- "$1" || {{ rc={CWD_FAILED}; {exit_marker}; }}; shift')
    steps.extend(['export "$1"; shift'] * envs)
    run = '"$@"'
    if stdin is StdinMode.NONE:
        run += " </dev/null"
    if stdin is StdinMode.DATA:
        # The marker is printed as soon as the command ends, while the decoder may still wait for
        # input; the client then closes the console, which ends the decoder with the session.
        return "; ".join(steps) + f"; {_DECODE_STDIN} | {{ {run}; rc=$?; {exit_marker}; }}"
    return "; ".join([*steps, f"{run}; rc=$?", exit_marker])


def build_exec_line(
    argv: Sequence[str | bytes],
    token: str,
    *,
    stdin: StdinMode = StdinMode.NONE,
    env: Mapping[str, str | bytes] | None = None,
    cwd: str | bytes = "",
    terminal: TerminalSetup | None = None,
) -> bytes:
    """The one line that runs ``argv`` under the marker wrapper, printable ASCII only.

    Args:
        argv: the command, exactly as it must reach ``execve`` (``str`` items are encoded with the
            filesystem encoding, so surrogate-escaped command-line bytes come back exact).
        token: from ``new_token()``; it must not contain ``'``.
        stdin: what the command reads (see :class:`StdinMode`).
        env: variables to export first.
        cwd: directory to change to first (the wrapper exits :data:`CWD_FAILED` if it cannot).
        terminal: for an interactive command: the PTY's size and ``TERM``, and a sane terminal.

    Raises:
        UsageError: the line would be longer than ``MAX_EXEC_LINE`` bytes, an argument holds a NUL
            byte, or an environment name is not a shell name.
        ValueError: ``token`` contains a single quote.
    """
    if "'" in token or not _is_printable_ascii(token.encode()):
        raise ValueError("token must be printable and must not contain a single quote")
    params: list[bytes] = []
    if terminal is not None:
        params += [str(terminal.rows).encode(), str(terminal.cols).encode(), _as_bytes(terminal.term)]
    cwd_bytes = _as_bytes(cwd)
    env_items = _env_items(env or {})
    wrapper = _wrapper(token, stdin=stdin, terminal=terminal, cwd=bool(cwd_bytes), envs=len(env_items))
    line = f"exec {_sh_c(wrapper, [*params, *([cwd_bytes] if cwd_bytes else []), *env_items], argv)}\n"
    data = line.encode("ascii")
    if len(data) > MAX_EXEC_LINE:
        raise UsageError(
            f"command too long for the debug console ({len(data)} bytes quoted, at most {MAX_EXEC_LINE})",
            hints=[
                "The console is a terminal line; bytes outside printable ASCII take 4 bytes each.",
                "The agent API (port 1024) has no such limit.",
            ],
        )
    return data


def _sh_c(script: str, params: Sequence[bytes], argv: Sequence[str | bytes]) -> str:
    """``sh -c '<script>' sh <params> <argv>``, printable ASCII: parameters holding other bytes go as
    printf formats, which a decoding prologue in front of ``script`` turns back into their bytes."""
    words = [*params, *(_as_bytes(arg) for arg in argv)]
    encoded = [not _is_printable_ascii(word) for word in words]
    if any(encoded):
        script = _DECODE_ARGS + script
        words = [b"".join(b"1" if flag else b"0" for flag in encoded)] + [
            encode_format(word) if flag else word for word, flag in zip(words, encoded, strict=True)
        ]
    quoted = " ".join(shell_quote(word.decode("ascii")) for word in words)
    return f"sh -c {shell_quote(script)} sh {quoted}"


def shell_command(
    argv: Sequence[str | bytes], *, env: Mapping[str, str | bytes] | None = None, cwd: str | bytes = ""
) -> str:
    """A printable-ASCII shell command line that runs ``argv`` exactly (after ``cd``/``export``), for
    paths that hand a string to a guest's shell, e.g. ``ExecVMProcess``'s ``bash -c <command>``.

    Raises:
        UsageError: an argument holds a NUL byte, or an environment name is not a shell name.
    """
    cwd_bytes = _as_bytes(cwd)
    env_items = _env_items(env or {})
    steps = []
    if cwd_bytes:
        steps.append('cd -- "$1" || exit 1; shift')
    steps.extend(['export "$1"; shift'] * len(env_items))
    steps.append('exec "$@"')
    return "exec " + _sh_c("; ".join(steps), [*([cwd_bytes] if cwd_bytes else []), *env_items], argv)


def encode_stdin(data: bytes) -> bytes:
    """Piped stdin as the wrapper's decoder reads it: lines of printf formats, none empty."""
    lines = []
    step = STDIN_LINE // 4  # an encoded byte takes at most 4
    for start in range(0, len(data), step):
        line = encode_format(data[start : start + step])
        if line[:1] == b"-":  # printf would read it as an option
            line = b"\\055" + line[1:]
        lines.append(line)
    return b"\n".join(lines) + b"\n" if lines else b""


#: The end of piped stdin: an empty line.
STDIN_EOF = b"\n"


def marker_line(
    buffer: bytes | bytearray, marker: bytes, *, status: bool = False
) -> tuple[int, int, int | None] | None:
    """The first line ``marker`` [``status``: 1-3 ASCII digits] ``\\r?\\n`` in ``buffer``, as
    (start, end, the digits' value or ``None``); ``None`` when there is none yet. Whole-buffer
    ``bytes.find``, no ``re`` (the same matches as ``re.search(re.escape(marker) + rb"\\r?\\n")``,
    or ``rb"(\\d{1,3})\\r?\\n"`` after it)."""
    at = buffer.find(marker)
    while at >= 0:
        end = digits = at + len(marker)
        if status:
            while end < len(buffer) and end - digits < 3 and 0x30 <= buffer[end] <= 0x39:
                end += 1
        if end > digits or not status:
            for newline in (b"\n", b"\r\n"):
                if buffer.startswith(newline, end):
                    return at, end + len(newline), int(buffer[digits:end]) if status else None
        at = buffer.find(marker, at + 1)
    return None


def _tail_marker_length(data: bytes | bytearray, marker: bytes) -> int:
    """The length of the longest end of ``data`` that ``marker`` starts with (shorter than it)."""
    at = data.find(marker[:1], max(len(data) - len(marker) + 1, 0))
    while at >= 0:
        if marker.startswith(data[at:]):
            return len(data) - at
        at = data.find(marker[:1], at + 1)
    return 0


class MarkerStripper:
    """Feeds on console output; emits the command's bytes and finds its exit status.

    ``feed`` returns what may be written out now; it holds back only a tail that could be the start
    of a marker. Before the start marker nothing is emitted (it is kept, bounded, for ``finish``).
    After the exit marker line, ``exit_status`` is set and further bytes are dropped.
    """

    def __init__(self, token: str) -> None:
        self._start = START_MARKER + b":" + token.encode()
        self._exit = EXIT_MARKER + b":" + token.encode() + b":"
        self._buffer = bytearray()
        self.started = False
        self.exit_status: int | None = None

    def feed(self, data: bytes) -> bytes:
        if self.exit_status is not None:
            return b""
        if self.started and not self._buffer and self._plain(data):
            return data  # the common chunk: no marker, nothing held back, no copy
        self._buffer += data
        if not self.started:
            line = marker_line(self._buffer, self._start)  # \r\n: a console whose stty failed
            if line is None:
                self._trim_preamble()
                return b""
            del self._buffer[: line[1]]
            self.started = True
        return self._take_output()

    def _plain(self, data: bytes) -> bool:
        """``data`` holds no exit marker, whole or begun at its end."""
        return self._exit not in data and _tail_marker_length(data, self._exit) == 0

    def _trim_preamble(self) -> None:
        excess = len(self._buffer) - _MAX_PREAMBLE
        if excess > 0:
            del self._buffer[:excess]

    def _take_output(self) -> bytes:
        line = marker_line(self._buffer, self._exit, status=True)
        if line is not None:
            out = bytes(self._buffer[: line[0]])
            self.exit_status = line[2]
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
            if len(tail) <= 5 and _digits_then_cr(bytes(tail)):
                return len(self._buffer) - index
        return _tail_marker_length(self._buffer, self._exit)

    def finish(self) -> bytes:
        """At EOF: whatever is still held (everything, if the start marker never came)."""
        out = bytes(self._buffer) if self.exit_status is None else b""
        self._buffer.clear()
        return out


def _digits_then_cr(tail: bytes) -> bool:
    """``\\d{0,3}\\r?`` whole: up to three ASCII digits, then an optional CR."""
    digits = tail[:-1] if tail.endswith(b"\r") else tail
    return len(digits) <= 3 and all(0x30 <= byte <= 0x39 for byte in digits)


class SessionResult(Record):
    """How a console session ended.

    Attributes:
        exit_status: the remote command's status from the exit marker, or None (detach).
        detached: the user pressed the escape key.
    """

    exit_status: int | None
    detached: bool = False


class ConsoleExec:
    """One command over a debug console, as a state machine with no IO (h11's ``Connection`` shape).

    A driver writes :meth:`initiate`'s bytes, then feeds everything the console sends to
    :meth:`receive_data` (writing out what it returns), and calls :meth:`receive_eof` at EOF. Input
    goes through :meth:`send_input` / :meth:`send_eof`; what they return is held back until the
    command has started (before that the console's own shell may still be reading its line: a
    readline would swallow type-ahead and ``^D``), then comes out of :meth:`data_to_send`.

    Args:
        argv: the command (see :func:`build_exec_line`).
        stdin: what the command reads.
        env: variables to export first.
        cwd: directory to change to first.
        terminal: the client's terminal, for an interactive command.
        token: the marker token (default: a new one).
    """

    def __init__(
        self,
        argv: Sequence[str | bytes],
        *,
        stdin: StdinMode = StdinMode.NONE,
        env: Mapping[str, str | bytes] | None = None,
        cwd: str | bytes = "",
        terminal: TerminalSetup | None = None,
        token: str | None = None,
    ) -> None:
        self.token = token or new_token()
        self.stdin = stdin
        self._line = build_exec_line(argv, self.token, stdin=stdin, env=env, cwd=cwd, terminal=terminal)
        self._stripper = MarkerStripper(self.token)
        self._pending = bytearray()
        self.input_closed = False
        self.eof_received = False

    @property
    def started(self) -> bool:
        """The start marker arrived: the command runs and may take input."""
        return self._stripper.started

    @property
    def exit_status(self) -> int | None:
        """The command's exit status, once its exit marker arrived."""
        return self._stripper.exit_status

    @property
    def finished(self) -> bool:
        """Nothing more will come: the exit marker or EOF arrived."""
        return self.exit_status is not None or self.eof_received

    def initiate(self) -> bytes:
        """The first bytes to send: the exec-mode header and the exec line."""
        return EXEC_HEADER + self._line

    def receive_data(self, data: bytes) -> bytes:
        """Console output in; the command's output bytes to write out now."""
        return self._stripper.feed(data)

    def receive_eof(self) -> bytes:
        """The console closed; what is still held (everything, if the command never started)."""
        self.eof_received = True
        return self._stripper.finish()

    def send_input(self, data: bytes) -> None:
        """Queue stdin bytes (encoded for :attr:`StdinMode.DATA`, raw for a terminal)."""
        if self.stdin is StdinMode.NONE or self.input_closed:
            return
        self._pending += encode_stdin(data) if self.stdin is StdinMode.DATA else data

    def send_eof(self) -> None:
        """Queue the end of stdin (a terminal gets none: its user ends the program)."""
        if self.stdin is StdinMode.DATA and not self.input_closed:
            self._pending += STDIN_EOF
        self.input_closed = True

    @property
    def input_backlog(self) -> int:
        """Bytes queued and not yet handed out (a driver stops reading stdin while this is large)."""
        return len(self._pending)

    def closed_error(self) -> ConnectionClosed:
        """The error for a console that ended before the exit marker (drivers raise it)."""
        if self.started:
            return ConnectionClosed(
                "the debug console closed before the command finished (no exit status received)",
                hints=["The guest may have stopped or its shell was killed; `kuasarctl ps` shows its state."],
            )
        return ConnectionClosed(
            "the debug console closed before the command started",
            hints=["The console's shell may not be sh-compatible, or it exited at once."],
        )

    def start_timeout_error(self, seconds: float) -> ProtocolError:
        """The error when no start marker came within ``seconds`` (drivers keep the clock)."""
        return ProtocolError(
            f"the debug console did not start the command within {seconds:g} s (no start marker)",
            hints=["Is a POSIX shell behind that port? A Kata console is on -p 1026."],
        )

    def data_to_send(self) -> bytes:
        """Queued input that may go out now."""
        if not self.started or not self._pending or self.finished:
            return b""
        out = bytes(self._pending)
        self._pending.clear()
        return out
