"""A VMM-faithful hybrid vsock server: the local sandbox's (and the tests') Cloud Hypervisor.

Layer contract: knows ``asyncio`` streams, the sans-IO handshake of :mod:`kuasar.transport.hvsock`
and the dial/listen helpers of :mod:`kuasar.transport.unix` and :mod:`kuasar.transport.vsock`.
Imports nothing above ``kuasar.transport``.

Behaviour, as Cloud Hypervisor's muxer (``virtio-devices/src/vsock/unix/muxer.rs``) and better:

- The first line is read byte by byte, bounded by ``Limits.handshake_line``; it must start with
  exactly ``CONNECT `` or ``connect `` (mixed case is rejected); the port is trimmed and parsed as
  a u32.
- Success: connect to the guest-side listener for that port, then reply ``OK <host_port>\\n`` with
  host ports allocated from 2^30 upward, then relay bytes both ways.
- No listener for the port (the resolver says ``None`` or connecting fails), a malformed, oversize
  or incomplete first line, or no line within ``Limits.handshake_timeout``: close without a reply.
  Never crash (unlike CH #6798/#6621), and never let one client disturb another.
- Half-close propagates both ways (CH PR #8372): EOF from one side becomes ``write_eof`` on the
  other while the opposite direction keeps flowing until it ends too.
- Relays read 64 KiB at a time and drain before reading again, so memory per connection is bounded.
- Each connection runs in a task the server owns (not asyncio's callback task): ``close`` cancels
  it and the cancellation propagates, so the task ends cancelled; nothing converts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import stat
from collections.abc import Callable
from types import TracebackType

from kuasar import _log
from kuasar.address import Address, HvsockAddress, UnixAddress, VsockAddress
from kuasar.config import DEFAULT_LIMITS, Limits
from kuasar.errors import HandshakeError, KuasarError
from kuasar.transport import unix, vsock
from kuasar.transport._handshake import (
    FIRST_HOST_PORT,
    HandshakeReader,
    describe,
    next_host_port,
    parse_connect_line,
)

__all__ = ["HvsockServer", "PortResolver", "port_directory_resolver"]

#: Maps a guest vsock port to the address of the guest-side listener, or ``None`` if none listens.
PortResolver = Callable[[int], Address | None]

_CHUNK = 64 * 1024

log = _log.get_logger("kuasar.transport.hvsock_server")


def port_directory_resolver(directory: str) -> PortResolver:
    """A resolver for guest listeners laid out as ``DIRECTORY/<port>.sock`` UNIX sockets.

    Returns:
        A function mapping port ``P`` to ``UnixAddress(f"{directory}/{P}.sock")`` when that file
        exists and is a socket, else ``None``.
    """

    def resolve(port: int) -> Address | None:
        path = os.path.join(directory, f"{port}.sock")
        try:
            st = os.stat(path)
        except OSError:
            return None
        return UnixAddress(path) if stat.S_ISSOCK(st.st_mode) else None

    return resolve


async def _dial_guest(
    address: Address, connect_timeout: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if isinstance(address, UnixAddress):
        return await unix.dial(address, connect_timeout)
    if isinstance(address, VsockAddress):
        return await vsock.dial(address, connect_timeout)
    raise HandshakeError(f"guest listener {address} is not a unix:// or vsock:// address")


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> int:
    """Copy ``source`` to ``sink`` until EOF, then half-close ``sink``. Returns the byte count."""
    total = 0
    while chunk := await source.read(_CHUNK):
        sink.write(chunk)
        await sink.drain()
        total += len(chunk)
    if sink.can_write_eof() and not sink.is_closing():
        sink.write_eof()
    return total


async def _close_all(writers: list[asyncio.StreamWriter], grace: float) -> None:
    """Close every writer; one whose peer will not take its buffered bytes is aborted after ``grace``."""
    for writer in writers:
        writer.close()
    try:
        async with asyncio.timeout(grace):
            for writer in writers:
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
    except OSError:  # TimeoutError included: a peer that does not read
        _abort(writers)
    except BaseException:
        _abort(writers)
        raise


def _abort(writers: list[asyncio.StreamWriter]) -> None:
    for writer in writers:
        writer.transport.abort()


class HvsockServer:
    """Serve hybrid vsock on a UNIX socket and forward each ``CONNECT <port>`` to the guest.

    Args:
        path: the socket file to create (created with ``mode``, removed on close).
        resolve_port: maps a vsock port to the guest-side listener's address, or ``None``.
        limits: ``handshake_line`` and ``handshake_timeout`` bound the first line;
            ``connect_timeout`` bounds the connect to the guest listener.
        first_host_port: the first host port handed out in ``OK <host_port>``.
        mode: permission bits of the socket file.

    Use as ``async with HvsockServer(...):`` or ``await start()`` … ``close()``,
    ``await wait_closed()``.
    """

    def __init__(
        self,
        path: str,
        resolve_port: PortResolver,
        *,
        limits: Limits = DEFAULT_LIMITS,
        first_host_port: int = FIRST_HOST_PORT,
        mode: int = 0o600,
    ) -> None:
        self.path = path
        self._resolve = resolve_port
        self._limits = limits
        self._mode = mode
        self._next_host_port = first_host_port
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self._closed = False

    @property
    def address(self) -> UnixAddress:
        """The UNIX address clients connect to."""
        return UnixAddress(self.path)

    def hvsock_address(self, port: int) -> HvsockAddress:
        """The ``hvsock://PATH:PORT`` a client dials to reach guest port ``port`` through us."""
        return HvsockAddress(self.path, port)

    async def start(self) -> None:
        """Create the socket file and start accepting.

        Raises:
            TransportError: the path cannot be bound.
        """
        if self._server is not None:
            raise RuntimeError("HvsockServer already started")
        self._server = await unix.listen(self.address, self._handle, mode=self._mode)
        log.debug("hybrid vsock server listening on %s", self.path)

    def close(self) -> None:
        """Stop accepting, tear down every relay, remove the socket file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
            self._remove_socket()
        for task in self._tasks:
            task.cancel()

    async def wait_closed(self) -> None:
        """Wait until the listener and every connection task have finished."""
        if self._server is not None:
            await self._server.wait_closed()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def __aenter__(self) -> HvsockServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
        await self.wait_closed()

    def _remove_socket(self) -> None:
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                os.unlink(self.path)

    def _allocate_host_port(self) -> int:
        port = self._next_host_port
        self._next_host_port = next_host_port(port)
        return port

    async def _read_request(self, reader: asyncio.StreamReader) -> int:
        """The requested port; raises HandshakeError/TimeoutError/ConnectionError on a bad client."""
        line_reader = HandshakeReader(self._limits.handshake_line)
        async with asyncio.timeout(self._limits.handshake_timeout):
            while True:
                byte = await reader.read(1)
                if not byte:
                    raise HandshakeError(
                        f"closed before a complete line (received {describe(line_reader.received)})"
                    )
                line, _ = line_reader.feed(byte)
                if line is not None:
                    return parse_connect_line(line)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """asyncio's per-connection callback: hand the connection to a task of our own and return.

        The connection task is the server's (``close`` cancels it, ``wait_closed`` awaits it), so
        its cancellation propagates and ends it as a cancelled task; asyncio 3.11's stream server
        would log a cancelled callback task as an error.
        """
        if self._closed:
            writer.transport.abort()
            return
        task = asyncio.ensure_future(self._connection(reader, writer, log.child(conn=next(self._ids))))
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("hybrid vsock connection failed", exc_info=exc)

    async def _connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: _log.ContextAdapter
    ) -> None:
        guest_writer: asyncio.StreamWriter | None = None
        try:
            try:
                port = await self._read_request(reader)
            except (HandshakeError, TimeoutError, ConnectionError) as exc:
                conn.debug("dropped without reply: %s", exc or "no request line in time")
                return
            target = self._resolve(port)
            if target is None:
                conn.debug("CONNECT %d: no listener, closing without reply", port)
                return
            try:
                guest_reader, guest_writer = await _dial_guest(target, self._limits.connect_timeout)
            except KuasarError as exc:
                conn.debug("CONNECT %d: %s, closing without reply", port, exc)
                return
            host_port = self._allocate_host_port()
            writer.write(b"OK %d\n" % host_port)
            await writer.drain()
            conn.debug("CONNECT %d -> OK %d (%s)", port, host_port, target)
            await self._relay(conn, reader, writer, guest_reader, guest_writer)
        except (ConnectionError, OSError) as exc:
            conn.debug("connection ended: %s", exc)
        finally:
            await _close_all(
                [writer] if guest_writer is None else [writer, guest_writer], self._limits.shutdown_grace
            )

    async def _relay(
        self,
        conn: _log.ContextAdapter,
        host_reader: asyncio.StreamReader,
        host_writer: asyncio.StreamWriter,
        guest_reader: asyncio.StreamReader,
        guest_writer: asyncio.StreamWriter,
    ) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                up = group.create_task(_pump(host_reader, guest_writer))
                down = group.create_task(_pump(guest_reader, host_writer))
        except* (ConnectionError, OSError) as errors:
            conn.debug("relay aborted: %s", errors.exceptions[0])
        else:
            conn.debug("relay done: %d bytes to the guest, %d bytes to the host", up.result(), down.result())
