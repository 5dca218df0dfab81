"""Pieces under both ends of a ttrpc connection: the coalescing frame writer, the bounded
per-stream inbox, the protocol take-over of a stream pair, the handler's side of a server stream
(:class:`ServerStream`) and the server's envelope (``ttrpc.Response``/``Status``) helpers.

Layer contract: asyncio + the generated ``kuasar.proto.ttrpc_pb2``; imports nothing above
``kuasar.ttrpc``. Every write goes through :class:`FrameWriter`: whole frames are queued with no
``await`` between a frame's header and its data, so frames of concurrent streams never
interleave; frames queued in one loop iteration leave together, at most :data:`BATCH` to a
``send()`` (all of them between :meth:`FrameWriter.hold` and :meth:`FrameWriter.release`); and
:meth:`FrameWriter.drain` makes a writer wait while the transport is over its high-water mark, so
a slow peer throttles writers. ``OSError`` from the socket becomes
:class:`~kuasar.errors.ConnectionClosed` here, once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Generic, TypeVar, cast

from google.protobuf.message import DecodeError, Message

from kuasar.errors import ConnectionClosed, KuasarError, ProtocolError, RPCError
from kuasar.proto import ttrpc_pb2
from kuasar.ttrpc.codes import Code
from kuasar.ttrpc.framing import FrameType, encode_header, oversize_message
from kuasar.ttrpc.service import Handler

T = TypeVar("T")

#: Bytes read from the socket at a time.
READ_CHUNK = 256 * 1024


#: Frames with at most this much data are joined with their neighbours into one write.
_COALESCE = 64 * 1024

#: At most this many frames of one loop iteration are joined into one write (outside
#: :meth:`FrameWriter.hold`). Unbounded, the 64 calls in flight of a Python client and server fuse
#: into one batch that goes back and forth, one process idle while the other works (~40k calls/s
#: on both loops); with the client's Requests written 16 at a time, the server starts on the first
#: while the client makes the rest, and both cores work (~70-85k calls/s). The server's answers to
#: one read still leave in one write: splitting them too measured no gain against our client,
#: and would only add wake-ups to a Go client (which writes each Request alone).
BATCH = 16


class FrameWriter:
    """Writes whole frames to a connection, coalescing the small ones of one loop iteration.

    The first write of a loop iteration goes to the transport at once (a lone call pays no
    latency); later ones are joined and written at the end of the iteration, or as soon as
    :data:`BATCH` frames are waiting, so 64 calls made together cost a few ``send()`` calls, not
    64, yet the peer can start on the first while the rest are made; between :meth:`hold` and
    :meth:`release` every write is joined. Writing never waits: :meth:`drain` does, while the
    transport is paused (over its high-water mark).

    Args:
        writer: the connection's stream writer.
        max_message: frames with more data than this are refused before anything is written.
        owned: the caller's own protocol replaced the stream's on the transport and reports
            :meth:`pause`, :meth:`resume` and :meth:`lost`; otherwise the stream's ``drain()`` is used.
    """

    def __init__(self, writer: asyncio.StreamWriter, max_message: int, *, owned: bool = False) -> None:
        self._writer = writer
        self._transport = writer.transport
        self._loop = asyncio.get_running_loop()
        self.max_message = max_message
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._scheduled = False  # a flush at the end of this loop iteration is due
        self._holding = False
        self._owned = owned
        self._paused = False
        self._resumed: asyncio.Future[None] | None = None
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self.error: KuasarError | None = None

    def check_size(self, length: int) -> None:
        """Raise ``RPCError(RESOURCE_EXHAUSTED)`` (Go's text) if ``length`` is over the limit."""
        if length > self.max_message:
            raise RPCError(Code.RESOURCE_EXHAUSTED, oversize_message(length, self.max_message))

    def send(self, data: bytes) -> None:
        """Queue whole encoded frames (never waits; see :meth:`drain`).

        Raises:
            ConnectionClosed: the connection failed earlier (sticky).
        """
        if self.error is not None:
            raise self.error.with_traceback(None)
        if not self._scheduled and not self._holding:
            self._scheduled = True
            self._loop.call_soon(self._flush)
            self._write(data)
        elif len(data) > _COALESCE or self._pending_size > _COALESCE:
            self._write_pending()
            self._write(data)  # bounded: a sender that never yields still reaches the transport
        else:
            pending = self._pending
            pending.append(data)
            self._pending_size += len(data)
            if len(pending) >= BATCH and not self._holding:
                self._write_pending()  # the peer starts on these while the rest are made

    def send_frame(self, stream_id: int, type: int, flags: int, data: bytes) -> None:
        """Queue one frame (header and data; see :meth:`send`)."""
        header = encode_header(len(data), stream_id, type, flags)
        if len(data) <= _COALESCE:
            self.send(header + data)  # one buffer for a small frame, not two
        else:
            self.send(header)
            self.send(data)  # no copy of a large body

    def send_nowait(self, data: bytes) -> None:
        """Best effort: queue whole encoded frames, ignoring every error (for cleanup paths)."""
        if self.error is None and data and not self._transport.is_closing():
            with contextlib.suppress(KuasarError):
                self.send(data)

    def hold(self) -> None:
        """Join every write until :meth:`release` (a batch of answers leaves in one ``send()``)."""
        self._holding = True

    def release(self) -> None:
        """Write what :meth:`hold` kept back."""
        self._holding = False
        self._flush()

    async def drain(self) -> None:
        """Wait while the transport is over its high-water mark.

        Raises:
            ConnectionClosed: the connection failed now or earlier (sticky).
        """
        if self.error is not None:
            raise self.error.with_traceback(None)
        if self._owned:
            while self._paused and self.error is None:
                if self._resumed is None:
                    self._resumed = self._loop.create_future()
                await asyncio.shield(self._resumed)
            if self.error is not None:
                raise self.error.with_traceback(None)
            return
        transport = self._transport
        if not transport.get_write_buffer_size() and not transport.is_closing():
            return  # nothing waiting in the kernel's way: the common case costs no await
        try:
            await self._writer.drain()
        except (OSError, RuntimeError) as exc:
            raise self._failed(exc) from exc

    def own(self) -> None:
        """The caller's protocol now owns the transport (see ``owned``). A transport already over
        its high-water mark told the stream's protocol, not ours: it counts as paused (it will
        tell ours when it drains)."""
        self._owned = True
        transport = self._transport
        with contextlib.suppress(AttributeError, NotImplementedError):
            if transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]:
                self._paused = True

    @property
    def paused(self) -> bool:
        """The transport is over its high-water mark (owned mode)."""
        return self._paused

    def pause(self) -> None:
        """The transport is over its high-water mark (the owning protocol's ``pause_writing``)."""
        self._paused = True

    def resume(self) -> None:
        """The transport drained (the owning protocol's ``resume_writing``)."""
        self._paused = False
        self._wake()

    def lost(self, exc: BaseException | None) -> None:
        """The connection is gone (the owning protocol's ``connection_lost``)."""
        if self.error is None:
            self.error = ConnectionClosed(f"ttrpc: connection lost: {exc or 'closed'}")
            self.error.__cause__ = exc
        self._wake()
        if not self._closed.done():
            self._closed.set_result(None)

    def _wake(self) -> None:
        resumed, self._resumed = self._resumed, None
        if resumed is not None and not resumed.done():
            resumed.set_result(None)

    def _flush(self) -> None:
        self._scheduled = False
        self._write_pending()

    def _write_pending(self) -> None:
        pending = self._pending
        if len(pending) == 1:
            self._write(pending[0])
        elif pending:
            self._write(b"".join(pending))
        pending.clear()
        self._pending_size = 0

    def _write(self, data: bytes) -> None:
        if self.error is not None:
            return
        try:
            self._transport.write(data)
        except (OSError, RuntimeError) as exc:  # RuntimeError: the transport is already closed
            self._failed(exc)

    def _failed(self, exc: BaseException) -> KuasarError:
        if self.error is None:
            self.error = ConnectionClosed(f"ttrpc: connection lost while writing: {exc}")
            self.error.__cause__ = exc
        return self.error

    def close(self) -> None:
        """Write what is queued, then close the underlying transport (idempotent)."""
        self._flush()
        if not self._transport.is_closing():
            self._transport.close()

    async def wait_closed(self) -> None:
        """Wait for the transport to close; errors on the way out do not matter."""
        if self._owned:
            await asyncio.shield(self._closed)
            return
        with contextlib.suppress(OSError, RuntimeError):
            await self._writer.wait_closed()


async def adopt(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, protocol: asyncio.BaseProtocol
) -> tuple[bytes, bool]:
    """Put ``protocol`` on the stream pair's transport in place of the stream's own.

    Reading pauses, the protocol is swapped, and what the stream had already buffered (bytes a
    handshake left behind, or early requests) is returned for the caller to process *before*
    resuming reading, so no byte is lost or reordered. The reader and writer must be the two
    halves of one transport, as ``open_connection``/``start_server`` make them.

    Returns:
        ``(leftover, lost)``: the buffered bytes, and whether the stream had already failed or
        closed (then ``protocol`` hears nothing more: the caller treats the connection as lost).
    """
    transport = cast(asyncio.Transport, writer.transport)
    transport.pause_reading()
    transport.set_protocol(protocol)
    if reader.exception() is not None or transport.is_closing():
        return b"", True
    reader.feed_eof()  # nothing more comes to this reader: read() below returns what it holds
    return await reader.read(), False


class Inbox(Generic[T]):
    """A bounded FIFO from the connection's reader task to one stream's consumer.

    When it is full, :meth:`put` waits: that pauses the connection's single reader, and so every
    other stream on the connection (head-of-line blocking; ttrpc has no per-stream flow control).
    """

    def __init__(self, maxsize: int) -> None:
        self._items: collections.deque[T] = collections.deque()
        self._maxsize = maxsize
        self._done = False
        self._abandoned = False
        self._exc: BaseException | None = None
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    @property
    def done(self) -> bool:
        """No more items will be accepted."""
        return self._done

    def offer(self, item: T) -> bool:
        """Queue ``item`` if there is room (dropped after finish/abandon); ``False`` when full."""
        if self._done or self._abandoned:
            return True
        if len(self._items) >= self._maxsize:
            return False
        self._items.append(item)
        self._readable.set()
        return True

    async def put(self, item: T) -> None:
        """Queue ``item``, waiting while the inbox is full. Dropped after finish/abandon."""
        while not self.offer(item):
            await self.wait_writable()

    async def wait_writable(self) -> None:
        """Wait until the inbox has room (or is finished or abandoned)."""
        while len(self._items) >= self._maxsize and not (self._done or self._abandoned):
            self._writable.clear()
            await self._writable.wait()

    def finish(self, exc: BaseException | None = None) -> None:
        """End the input: after the queued items, :meth:`get` returns ``None`` or raises ``exc``."""
        if self._done:
            return
        self._done = True
        self._exc = exc
        self._readable.set()
        self._writable.set()

    def fail(self, exc: BaseException) -> None:
        """End the input with ``exc`` right away, dropping queued items."""
        self._items.clear()
        self._done = True
        self._exc = exc
        self._readable.set()
        self._writable.set()

    def abandon(self) -> None:
        """The consumer is gone: drop everything and never block the reader again."""
        self._abandoned = True
        self._items.clear()
        self._writable.set()

    async def get(self) -> T | None:
        """The next item; ``None`` once finished cleanly; raises the finishing exception."""
        while not self._items:
            if self._done:
                if self._exc is not None:
                    # a sticky error is raised again and again: don't let its traceback grow
                    raise self._exc.with_traceback(None)
                return None
            self._readable.clear()
            await self._readable.wait()
        item = self._items.popleft()
        self._writable.set()
        return item


def decode_payload(message_type: Any, data: bytes) -> Any:
    """Parse a request payload; a failure is ``INTERNAL`` with Go's text."""
    try:
        return message_type.FromString(data)
    except DecodeError as exc:
        raise RPCError(Code.INTERNAL, f"ttrpc: error unmarshalling payload: {exc}") from exc


class ServerStream:
    """The handler's side of a streaming call: :meth:`send` responses, :meth:`recv` requests."""

    def __init__(
        self, writer: FrameWriter, stream_id: int, handler: Handler, inbox: Inbox[bytes] | None
    ) -> None:
        self._writer = writer
        self._stream_id = stream_id
        self._handler = handler
        self._inbox = inbox

    async def send(self, message: Message) -> None:
        """Send one response message (server-streaming and bidi calls).

        Raises:
            RPCError: ``RESOURCE_EXHAUSTED`` when the message is over the size limit.
            ConnectionClosed: the client is gone.
        """
        if not self._handler.cardinality.server_streaming:
            raise ProtocolError("ttrpc: send on a call that is not server-streaming")
        writer = self._writer
        data = message.SerializeToString()
        writer.check_size(len(data))
        writer.send_frame(self._stream_id, FrameType.DATA, 0, data)
        await writer.drain()

    async def recv(self) -> Any:
        """The next request message, or ``None`` once the client closed its side.

        Raises:
            RPCError: the client sent an oversized or undecodable message.
        """
        if self._inbox is None:
            return None
        data = await self._inbox.get()
        if data is None:
            return None
        return decode_payload(self._handler.request_type, data)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        while (message := await self.recv()) is not None:
            yield message


def status_response(code: int, message: str) -> bytes:
    """A Response frame's data carrying a non-OK status and no payload."""
    return ttrpc_pb2.Response(status=ttrpc_pb2.Status(code=int(code), message=message)).SerializeToString()


def ok_response(payload: bytes) -> bytes:
    """A success Response frame's data. Like Go, ``status`` is left out."""
    return ttrpc_pb2.Response(payload=payload).SerializeToString()
