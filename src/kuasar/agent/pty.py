"""PTYs for the agent: open a pair, set its modes and size, spawn a session leader on it.

Layer contract: agent side, stdlib only (os, termios, fcntl, asyncio subprocess). The child gets a
new session *and* the PTY as its controlling terminal (``start_new_session`` alone gives no
controlling terminal: the slave is inherited, not opened after ``setsid``), so job control, ``^C``
and ``/dev/tty`` work. ``kill_session`` ends everything the session started, including job-control
process groups of an interactive shell; only processes that called ``setsid()`` themselves escape.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import struct
import termios
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kuasar.agent.procfs import processes

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


def _take_controlling_terminal() -> None:
    """In the child, after setsid(): make stdin (the PTY slave) the controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


async def spawn_on_pty(
    argv: Sequence[str],
    slave: int,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> asyncio.subprocess.Process:
    """Start ``argv`` as a session leader with ``slave`` as stdin/stdout/stderr and controlling tty.

    Raises:
        FileNotFoundError, PermissionError: from exec, raised here in the parent.
    """
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        start_new_session=True,
        preexec_fn=_take_controlling_terminal,
    )


#: Passes of ``kill_session``: a process forking while we scan is caught by the next pass.
_KILL_PASSES = 8


def session_members(sid: int) -> set[int]:
    """Live (non-zombie) processes whose session ID is ``sid``."""
    return {proc.pid for proc in processes() if proc.session == sid and proc.state != "Z"}


def kill_session(sid: int) -> int:
    """SIGKILL the process group ``sid`` and every other process of session ``sid``.

    Safe after the session leader is reaped: Linux does not reuse a PID while a session or process
    group still carries it. Returns how many processes were signalled (by PID).
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(sid, signal.SIGKILL)
    killed: set[int] = set()
    for _ in range(_KILL_PASSES):
        fresh = session_members(sid) - killed
        if not fresh:
            break
        for pid in fresh:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        killed |= fresh
    return len(killed)
