"""``kuasarctl exec`` over our agent API (``kuasar.agent.v1.Agent/Exec``) on the blocking driver:
stdin, separate stdout and stderr, a PTY with live resize, Ctrl-C forwarded as SIGINT, the detach key.

Layer contract: ``kuasar.ctl`` only; the session's :class:`~kuasar.session._process.BlockingProcess`
(the Exec stream on a probed blocking connection) and an epoll (``kuasar._poll``) over it, stdin and a signal
wake-up pipe; the local terminal. No asyncio, no protobuf. Leaving before the process exited
(detach, timeout, error) sends it SIGKILL.
"""

from __future__ import annotations

import os
import sys
import time

from kuasar import _signals
from kuasar._fdio import write_all_blocking
from kuasar._poll import READ, WRITE, Poller
from kuasar.config import DEFAULT_LIMITS
from kuasar.errors import DeadlineExceeded
from kuasar.remote_exec import STDOUT, exec_start

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kuasar.ctl.quickparse import Namespace
    from kuasar.ctl.terminal import Screen
    from kuasar.session._process import BlockingProcess

READ_CHUNK = 256 * 1024


class _Signals:
    """SIGINT and SIGWINCH as flags, waking the selector through a pipe."""

    def __init__(self, watched: tuple[int, ...]) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)
        self.pending: list[int] = []
        self.watched = watched
        self.previous = {signum: _signals.signal(signum, self._note) for signum in watched}
        self.wakeup = _signals.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)

    def _note(self, signum: int, _frame: object) -> None:
        self.pending.append(signum)

    def take(self) -> list[int]:
        try:  # noqa: SIM105 - contextlib is not on the start-up path
            os.read(self.read_fd, 1024)
        except BlockingIOError:
            pass
        taken, self.pending = self.pending, []
        return taken

    def close(self) -> None:
        _signals.set_wakeup_fd(self.wakeup)
        for signum, handler in self.previous.items():
            _signals.signal(signum, handler)
        os.close(self.read_fd)
        os.close(self.write_fd)


class ApiCommand:
    """exec's command as the agent API runs it: its ``ExecStart`` (built before the connection is
    chosen, so the session can send it with its probe) and the local terminal's part.

    Args:
        args: exec's parsed flags.
        command: the command words (empty: the default shell).
        env: the environment to set.
    """

    def __init__(self, args: Namespace, command: list[str], env: dict[str, str]) -> None:
        from kuasar.commandline import DEFAULT_SHELL, command_argv
        from kuasar.ctl import terminal

        self.args = args
        self.stdin_fd, self.stdout_fd = sys.stdin.fileno(), sys.stdout.fileno()
        self.pty = bool((args.interactive and args.tty) or args.force_tty)
        self.raw = self.pty and args.interactive and os.isatty(self.stdin_fd)
        self.size_fd = self.stdin_fd if self.raw else self.stdout_fd
        if self.pty:
            env.setdefault("TERM", os.environ.get("TERM") or "xterm")
        self.start = exec_start(
            command_argv(command) if command else list(DEFAULT_SHELL),
            env,
            args.workdir,
            user=args.user,
            tty=self.pty,
            container_id=args.container,
            stdin=args.interactive,
            size=terminal.window_size(self.size_fd) if self.pty else None,
        )

    def run(self, process: BlockingProcess, *, escape: int | None, deadline: float | None) -> int:
        """Drive ``process`` (this command's Exec) to its end; the kuasarctl exit code.

        Raises:
            DeadlineExceeded: ``deadline`` (``time.monotonic()``) passed first.
            CommandNotFound, CommandNotExecutable, RPCError: the agent refused to start it.
            ConnectionClosed, ProtocolError: the connection failed.
        """
        from kuasar.ctl import terminal
        from kuasar.ctl.main import exit_code_for
        from kuasar.errors import Interrupted

        watched: tuple[int, ...] = () if self.raw else (_signals.SIGINT,)
        if self.pty and os.isatty(self.size_fd):
            watched += (_signals.SIGWINCH,)
        stdin_fd = self.stdin_fd if self.args.interactive else None
        loop = _Loop(process, watched, stdin_fd, deadline, raw=self.raw, escape=escape)
        if self.raw:
            with terminal.raw_terminal(self.stdin_fd) as screen:
                outcome = loop.drive(self.stdout_fd, self.size_fd, screen)
        else:
            outcome = loop.drive(self.stdout_fd, self.size_fd, None)
        if outcome == "detached":
            sys.stderr.write("\r\n[detached]\r\n")
            return 0
        if outcome == "interrupted":
            return exit_code_for(error=Interrupted("interrupted"))
        assert process.exit is not None
        status = process.exit
        return exit_code_for(
            exit_status=None if status.signal else status.exit_code, signal_number=status.signal
        )


def _write_out(chunks: list[tuple[int, bytes]], stdout_fd: int, stderr_fd: int) -> None:
    """The process's output chunks, each to stdout or stderr as its stream says."""
    for stream, data in chunks:
        write_all_blocking(stdout_fd if stream == STDOUT else stderr_fd, data)


#: Queued output to the agent above which stdin is not read until the socket has taken some.
_HIGH_WATER = 1024 * 1024


class _Loop:
    """The selector loop: the agent's socket (read, and write while bytes wait), stdin (once the
    process has started, while the queue is short), and the signal pipe."""

    def __init__(
        self,
        process: BlockingProcess,
        watched: tuple[int, ...],
        stdin_fd: int | None,
        deadline: float | None,
        *,
        raw: bool,
        escape: int | None,
    ) -> None:
        self.process = process
        self.watched = watched
        self.stdin_fd = stdin_fd
        self.stdin_open = stdin_fd is not None
        self.stdin_always_ready = False  # a regular file: epoll refuses it, reads never block
        self.deadline = deadline
        self.raw = raw
        self.escape = escape
        self.selector = Poller()
        self.interrupted_at: float | None = None

    def drive(self, stdout_fd: int, size_fd: int, screen: Screen | None) -> str:
        """Run the loop, then end the process unless it exited (the screen reset on a detach);
        the signal handlers (installed here) are restored on every path."""
        self.signals = _Signals(self.watched)
        try:
            _write_out(self.process.attach(), stdout_fd, sys.stderr.fileno())  # came with the probe
            outcome = self.run(stdout_fd, sys.stderr.fileno(), size_fd)
        except BaseException:
            self.process.kill()
            raise
        finally:
            self.signals.close()
        if outcome != "exited":
            self.process.kill()
            if screen is not None and outcome == "detached":
                screen.reset()
        return outcome

    def run(self, stdout_fd: int, stderr_fd: int, size_fd: int) -> str:
        """``exited``, ``detached`` or ``interrupted``."""
        self.selector.register(self.process.fileno(), READ)
        self.selector.register(self.signals.read_fd, READ)
        try:
            while not self.process.ended:
                self._interest()
                timeout = self._timeout()
                if self._stdin_wanted() and self.stdin_always_ready:
                    timeout = 0
                    if (outcome := self._read_stdin()) is not None:
                        return outcome
                for fd, events in self.selector.select(timeout):
                    if fd == self.process.fileno():
                        chunks = self.process.on_ready(
                            readable=bool(events & READ), writable=bool(events & WRITE)
                        )
                        _write_out(chunks, stdout_fd, stderr_fd)
                    elif fd == self.signals.read_fd:
                        if (outcome := self._on_signals(size_fd)) is not None:
                            return outcome
                    elif (outcome := self._read_stdin()) is not None:
                        return outcome
                if self.interrupted_at is not None and time.monotonic() >= self._grace_end():
                    return "interrupted"
        finally:
            self.selector.close()
        return "interrupted" if self.interrupted_at is not None else "exited"

    def _stdin_wanted(self) -> bool:
        return self.stdin_open and bool(self.process.pid) and self.process.backlog < _HIGH_WATER

    def _interest(self) -> None:
        events = READ | (WRITE if self.process.wants_write() else 0)
        self.selector.modify(self.process.fileno(), events)
        if self.stdin_fd is None or self.stdin_always_ready:
            return
        registered = self.stdin_fd in self.selector
        if self._stdin_wanted() and not registered:
            try:
                self.selector.register(self.stdin_fd, READ)
            except PermissionError:
                self.stdin_always_ready = True
        elif registered and not self._stdin_wanted():
            self.selector.unregister(self.stdin_fd)

    def _on_signals(self, size_fd: int) -> str | None:
        from kuasar.ctl import terminal

        for signum in self.signals.take():
            if signum == _signals.SIGWINCH:
                rows, cols = terminal.window_size(size_fd)
                self.process.resize(rows, cols)
            elif self.interrupted_at is not None:
                return "interrupted"  # the second Ctrl-C: stop waiting
            else:
                self.interrupted_at = time.monotonic()
                self.process.send_signal(_signals.SIGINT)
        return None

    def _read_stdin(self) -> str | None:
        """Forward one read of stdin; ``detached`` on the detach key."""
        assert self.stdin_fd is not None
        chunk = os.read(self.stdin_fd, READ_CHUNK)
        if not chunk:
            self.stdin_open = False
            if self.stdin_fd in self.selector:
                self.selector.unregister(self.stdin_fd)
            if not self.raw:
                self.process.close_stdin()
            return None
        if self.raw and self.escape is not None and self.escape in chunk:
            self.process.write(chunk[: chunk.index(self.escape)])
            return "detached"
        self.process.write(chunk)
        return None

    def _grace_end(self) -> float:
        assert self.interrupted_at is not None
        return self.interrupted_at + DEFAULT_LIMITS.interrupt_grace

    def _timeout(self) -> float | None:
        now = time.monotonic()
        bounds = []
        if self.deadline is not None:
            if now >= self.deadline:
                raise DeadlineExceeded("timed out")
            bounds.append(self.deadline - now)
        if self.interrupted_at is not None:
            bounds.append(max(self._grace_end() - now, 0))
        return min(bounds) if bounds else None
