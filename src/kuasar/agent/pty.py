"""PTY primitives for the agent: open a pair, set its modes, get and set its window size.

Layer contract: agent side, stdlib only (os, termios, fcntl, struct); no processes. Spawning on a
PTY (a new session with the slave as its controlling terminal) and the kill policy live in the one
spawner, :mod:`kuasar.agent.process`.
"""

from __future__ import annotations

import fcntl
import os
import struct
import termios
from dataclasses import dataclass

DEFAULT_ROWS = 24
DEFAULT_COLS = 80


@dataclass(frozen=True, slots=True)
class PtyMode:
    """Terminal behaviour: ``echo`` (local echo), ``opost`` (output processing, e.g. LF -> CRLF)."""

    echo: bool = True
    opost: bool = True
    raw_input: bool = False  # no CR/LF translation, no signal or flow-control characters


def open_pty(
    mode: PtyMode = PtyMode(), rows: int = DEFAULT_ROWS, cols: int = DEFAULT_COLS
) -> tuple[int, int]:
    """A new (master, slave) pair with ``mode`` and size applied; both close-on-exec."""
    master, slave = os.openpty()
    try:
        apply_mode(slave, mode)
        set_window_size(master, rows, cols)
    except BaseException:
        os.close(master)
        os.close(slave)
        raise
    return master, slave


def apply_mode(fd: int, mode: PtyMode) -> None:
    """Set ``mode``'s echo, output-processing and input flags on the terminal ``fd`` (TCSANOW)."""
    attrs = termios.tcgetattr(fd)
    iflag, oflag, lflag = attrs[0], attrs[1], attrs[3]
    lflag = (
        lflag | termios.ECHO | termios.ECHOE | termios.ECHOK
        if mode.echo
        else lflag & ~(termios.ECHO | termios.ECHOE | termios.ECHOK | termios.ECHONL)
    )
    oflag = oflag | termios.OPOST if mode.opost else oflag & ~termios.OPOST
    if mode.raw_input:
        iflag &= ~(termios.ICRNL | termios.INLCR | termios.IGNCR | termios.IXON)
        lflag &= ~(termios.ISIG | termios.IEXTEN)
    attrs[0], attrs[1], attrs[3] = iflag, oflag, lflag
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


def set_window_size(fd: int, rows: int, cols: int) -> None:
    """One TIOCSWINSZ; the kernel sends SIGWINCH to the foreground process group."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def get_window_size(fd: int) -> tuple[int, int]:
    """``(rows, cols)`` of the terminal ``fd`` (TIOCGWINSZ)."""
    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    return rows, cols
