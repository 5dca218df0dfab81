"""The local terminal for interactive sessions: raw mode that is always restored, the detach key.

Layer contract: ``kuasar.ctl`` only; termios/tty (imported when a terminal is used: a one-shot
``exec -t`` only parses the detach key) and ``kuasar._signals``. ``raw_terminal`` restores the saved
settings on every exit path: normal return, exception, and SIGTERM/SIGHUP/SIGQUIT (a signal
handler raises :class:`Terminated`, exit 128+N, in the main thread, where the blocking drivers of
``kuasarctl exec`` run, so every ``finally`` runs). A session that ends abnormally also resets the
screen.
"""

from __future__ import annotations

import os
import sys

from kuasar import _signals
from kuasar.errors import KuasarError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import TracebackType
    from typing import Any

#: Ctrl-] — the detach key of telnet and ``virsh console``.
DEFAULT_ESCAPE = "^]"


def parse_escape(text: str) -> int | None:
    """``^]``, ``^X`` or a single character -> its byte; ``none`` disables the detach key."""
    if text.lower() == "none":
        return None
    if len(text) == 2 and text[0] == "^" and 0x3F <= ord(text[1].upper()) <= 0x5F:
        return ord(text[1].upper()) ^ 0x40
    if len(text) == 1 and ord(text) < 0x80:
        return ord(text)
    raise UsageError(
        f"invalid escape key {text!r}",
        hints=["Use ^X notation (e.g. ^] or ^P), one ASCII character, or none."],
    )


def require_tty(fd: int) -> None:
    if not os.isatty(fd):
        raise UsageError(
            "the input device is not a TTY",
            hints=["Drop -t for scripts and pipes (use -i to pass stdin), or run from a terminal."],
        )


def window_size(fd: int) -> tuple[int, int]:
    """(rows, cols) of the terminal on ``fd``; (24, 80) when unknown."""
    import fcntl
    import termios

    try:
        packed = fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
        rows, cols = int.from_bytes(packed[0:2], sys.byteorder), int.from_bytes(packed[2:4], sys.byteorder)
        if rows and cols:
            return rows, cols
    except OSError:
        pass
    return 24, 80


#: What ``tmux detach`` leaves behind, for a session that ended without its program cleaning up:
#: main screen, normal cursor keys and keypad, default colours, visible cursor, no bracketed paste,
#: no mouse or focus reporting.
RESET_SEQUENCE = (
    b"\x1b[?1049l\x1b[?1l\x1b>\x1b[0m\x1b[?25h\x1b[?2004l"
    b"\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l\x1b[?1004l"
)
#: The signals that end an interactive session (restoring the terminal), by name.
_ENDING_SIGNALS: dict[int, str] = {
    _signals.SIGTERM: "SIGTERM",
    _signals.SIGHUP: "SIGHUP",
    _signals.SIGQUIT: "SIGQUIT",
}


class Terminated(KuasarError):
    """kuasarctl itself got SIGTERM, SIGHUP or SIGQUIT during an interactive session."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by {_ENDING_SIGNALS.get(signum, f'signal {signum}')}")
        self.exit_code = 128 + signum


class Screen:
    """The local terminal of a raw session: ``reset()`` undoes what the remote program left on it."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def reset(self) -> None:
        """Write :data:`RESET_SEQUENCE` (detach, lost connection)."""
        try:  # noqa: SIM105 - contextlib is not on the start-up path
            os.write(self.fd, RESET_SEQUENCE)
        except OSError:
            pass


class raw_terminal:
    """``with raw_terminal(fd) as screen``: ``fd``'s terminal in raw mode, restored exactly,
    whatever happens.

    SIGTERM, SIGHUP and SIGQUIT raise :class:`Terminated` where the main thread is (a blocking
    driver's loop). When the block ends by an exception the screen is reset too: the remote
    program had no chance to.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.screen = Screen(sys.stdout.fileno() if os.isatty(sys.stdout.fileno()) else fd)
        self._saved: list[Any] = []
        self._previous: dict[int, object] = {}

    def __enter__(self) -> Screen:
        import termios
        import tty

        self._saved = termios.tcgetattr(self.fd)
        self._previous = {signum: _signals.signal(signum, _raise_terminated) for signum in _ENDING_SIGNALS}
        try:
            tty.setraw(self.fd, termios.TCSANOW)
        except BaseException:
            self._restore()
            raise
        return self.screen

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if error is not None:
            self.screen.reset()
        self._restore()

    def _restore(self) -> None:
        import termios

        try:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
        finally:
            for signum, handler in self._previous.items():
                _signals.signal(signum, handler)  # type: ignore[arg-type]
            sys.stdout.flush()


def _raise_terminated(signum: int, _frame: object) -> None:
    raise Terminated(signum)
