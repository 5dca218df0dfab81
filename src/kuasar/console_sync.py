"""The blocking driver of a debug-console exec, for one-shot CLI runs: an epoll over the
console socket and raw fds; every protocol rule is in the sans-IO :class:`kuasar.console.ConsoleExec`.

Layer contract: beside :mod:`kuasar.console_session` (the asyncio driver); ``kuasar._poll`` (epoll),
``os`` and ``kuasar.console``. No asyncio, no logging, no protobuf. Output goes to an fd
as it arrives (one write per read); input is read from an fd only once the command has started,
and not while more than :data:`INPUT_HIGH_WATER` bytes wait for the console.

Per chunk the relay costs no more than a C relay (socat) does: reads land in one reused buffer (a
fresh 256 KiB ``recv`` buffer is an mmap, page faults and an mremap per chunk), and once only
output can flow (the command started, no stdin left to relay, nothing queued) the socket is read
blocking, without an epoll round per chunk.
"""

from __future__ import annotations

import os
import time

from kuasar._fdio import write_all_blocking
from kuasar._poll import READ, WRITE, Poller
from kuasar.config import DEFAULT_LIMITS, Limits
from kuasar.console import ConsoleExec, SessionResult
from kuasar.errors import ConnectionClosed, DeadlineExceeded

TYPE_CHECKING = False
if TYPE_CHECKING:
    import _socket

READ_CHUNK = 256 * 1024
#: Queued input above which stdin is not read until the console has taken some.
INPUT_HIGH_WATER = 1024 * 1024


class _Relay:
    def __init__(self, sock: _socket.socket, core: ConsoleExec, output_fd: int) -> None:
        self.sock = sock
        self.core = core
        self.output_fd = output_fd
        self.pending = bytearray()
        self.buffer = bytearray(READ_CHUNK)
        self.view = memoryview(self.buffer)
        self.selector = Poller()
        self.input_fd: int | None = None
        self.input_open = False
        #: stdin cannot be polled (a regular file, /dev/null): it is always ready.
        self.input_always_ready = False

    def queue(self, data: bytes) -> None:
        self.pending += data
        self._interest()

    def _interest(self) -> None:
        self.selector.modify(self.sock.fileno(), READ | (WRITE if self.pending else 0))
        if self.input_fd is not None:
            wanted = self.input_open and self.core.started and len(self.pending) < INPUT_HIGH_WATER
            registered = self.input_fd in self.selector
            if wanted and not registered and not self.input_always_ready:
                try:
                    self.selector.register(self.input_fd, READ)
                except PermissionError:  # epoll refuses regular files: they never block
                    self.input_always_ready = True
            elif registered and not wanted:
                self.selector.unregister(self.input_fd)

    def input_ready_now(self) -> bool:
        """stdin is a file that is read without polling, and input is wanted now."""
        return (
            self.input_always_ready
            and self.input_open
            and self.core.started
            and len(self.pending) < INPUT_HIGH_WATER
        )

    def output_only(self) -> bool:
        """Nothing can go to the console any more: started, no stdin to relay, nothing queued."""
        return self.core.started and not self.input_open and not self.pending

    def receive(self) -> bytes:
        """One read into the reused buffer; empty at EOF or when the connection failed."""
        try:
            size = self.sock.recv_into(self.buffer)
        except (BlockingIOError, TimeoutError):
            raise
        except OSError:
            size = 0
        return bytes(self.view[:size])

    def deliver(self, data: bytes) -> None:
        """Console bytes (empty: EOF) through the core; the command's output to ``output_fd``."""
        out = self.core.receive_data(data) if data else self.core.receive_eof()
        if out:
            write_all_blocking(self.output_fd, out)

    def drain(self, deadline: float | None) -> None:
        """While :meth:`output_only`: blocking reads until the end, or until the core has bytes
        to send (then the socket is non-blocking again, for the poll loop)."""
        self.sock.setblocking(True)
        try:
            while not self.core.finished:
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise DeadlineExceeded("timed out")
                    self.sock.settimeout(remaining)
                try:
                    self.deliver(self.receive())
                except TimeoutError:
                    raise DeadlineExceeded("timed out") from None
                if out := self.core.data_to_send():
                    self.queue(out)
                    return
        finally:
            self.sock.setblocking(False)

    def on_socket(self, events: int) -> None:
        if events & WRITE and self.pending:
            try:
                sent = self.sock.send(self.pending)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                raise ConnectionClosed(
                    f"the debug console connection failed: {exc.strerror or exc}"
                ) from None
            del self.pending[:sent]
        if events & READ:
            try:
                data = self.receive()
            except BlockingIOError:
                return
            self.deliver(data)
            self.queue(self.core.data_to_send())
        else:
            self._interest()

    def on_input(self, escape: int | None) -> bool:
        """Read stdin once; True when the user pressed the escape key."""
        assert self.input_fd is not None
        chunk = os.read(self.input_fd, READ_CHUNK)
        if not chunk:
            self.input_open = False
            self.core.send_eof()
        elif escape is not None and escape in chunk:
            self.core.send_input(chunk[: chunk.index(escape)])
            self.queue(self.core.data_to_send())
            return True
        else:
            self.core.send_input(chunk)
        self.queue(self.core.data_to_send())
        return False


def run(
    sock: _socket.socket,
    core: ConsoleExec,
    *,
    output_fd: int,
    input_fd: int | None = None,
    escape: int | None = None,
    deadline: float | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> SessionResult:
    """Run ``core``'s command over the connected console ``sock`` (closed by the caller).

    Args:
        sock: the console connection, handshake done.
        core: the command, not yet initiated.
        output_fd: where the command's output goes.
        input_fd: stdin to relay (read only once the command has started), or ``None``.
        escape: the detach byte on ``input_fd`` (interactive sessions).
        deadline: a ``time.monotonic()`` bound on the whole run.
        limits: ``console_start_timeout`` bounds the wait for the start marker.

    Raises:
        ConnectionClosed: the console closed before the exit marker arrived.
        DeadlineExceeded: ``deadline`` passed.
        ProtocolError: no start marker within ``limits.console_start_timeout``.
    """
    start_by = time.monotonic() + limits.console_start_timeout
    sock.setblocking(False)
    relay = _Relay(sock, core, output_fd)
    relay.selector.register(sock.fileno(), READ)
    relay.input_fd = input_fd
    relay.input_open = input_fd is not None
    relay.queue(core.initiate())
    try:
        while not core.finished:
            now = time.monotonic()
            timeout = None if deadline is None else deadline - now
            if timeout is not None and timeout <= 0:
                raise DeadlineExceeded("timed out")
            if not core.started:
                if now >= start_by:
                    raise core.start_timeout_error(limits.console_start_timeout)
                timeout = start_by - now if timeout is None else min(timeout, start_by - now)
            if relay.output_only():
                relay.drain(deadline)
                continue
            if relay.input_ready_now():
                timeout = 0
                if relay.on_input(escape):
                    return SessionResult(None, detached=True)
            for fd, events in relay.selector.select(timeout):
                if fd == sock.fileno():
                    relay.on_socket(events)
                elif relay.on_input(escape):
                    return SessionResult(None, detached=True)
    finally:
        relay.selector.close()
    if core.exit_status is None:
        raise core.closed_error()
    return SessionResult(core.exit_status)
