"""The local terminal for interactive sessions: raw mode that is always restored, the detach key.

Layer contract: ``kuasar.ctl`` only; termios/tty/signal. ``raw_terminal`` restores the saved
settings on every exit path: normal return, exception, cancellation, and SIGTERM/SIGHUP/SIGQUIT
(turned into ``KeyboardInterrupt``-free exits by the caller's loop; here the handlers just raise
``SystemExit`` so ``finally`` blocks run).
"""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import sys
import termios
import tty
from collections.abc import Iterator
from types import FrameType

from kuasar.errors import UsageError

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
    try:
        import fcntl

        packed = fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
        rows, cols = struct.unpack("HHHH", packed)[:2]
        if rows and cols:
            return rows, cols
    except OSError:
        pass
    return 24, 80


def _raise_exit(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """Put ``fd``'s terminal in raw mode; restore it exactly, whatever happens."""
    saved = termios.tcgetattr(fd)
    previous = {
        sig: signal.signal(sig, _raise_exit) for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
    }
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sys.stdout.flush()
