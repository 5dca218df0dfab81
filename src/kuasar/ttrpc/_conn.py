"""Pieces shared by both ends of a ttrpc connection: the locked frame writer, the bounded
per-stream inbox, and the server's envelope (``ttrpc.Response``/``Status``) helpers.

Layer contract: asyncio + the generated ``kuasar.proto.ttrpc_pb2``; imports nothing above
``kuasar.ttrpc``. Every write goes through :class:`FrameWriter` (one lock per connection, then
``drain()``), so frames of concurrent streams never interleave and a slow peer throttles writers.
``OSError`` from the socket becomes :class:`~kuasar.errors.ConnectionClosed` here, once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import Generic, TypeVar

from kuasar.errors import ConnectionClosed, KuasarError, RPCError
from kuasar.proto import ttrpc_pb2
from kuasar.ttrpc.codes import Code
from kuasar.ttrpc.framing import Frame, FrameType, encode_header, oversize_message

T = TypeVar("T")

#: Bytes read from the socket at a time.
READ_CHUNK = 256 * 1024


#: Frames with at most this much data are written with their header in one piece.
_COALESCE = 64 * 1024


class FrameWriter:
    """Writes whole frames under one per-connection lock, then drains.

    Args:
        writer: the connection's stream writer.
        max_message: frames with more data than this are refused before anything is written.
    """

    def __init__(self, writer: asyncio.StreamWriter, max_message: int) -> None:
        self._writer = writer
        self.max_message = max_message
        self.lock = asyncio.Lock()
        self.error: KuasarError | None = None

    def check_size(self, length: int) -> None:
        """Raise ``RPCError(RESOURCE_EXHAUSTED)`` (Go's text) if ``length`` is over the limit."""
        if length > self.max_message:
            raise RPCError(Code.RESOURCE_EXHAUSTED, oversize_message(length, self.max_message))

    async def write(self, frame: Frame) -> None:
        """Take the lock, write ``frame``, drain."""
        self.check_size(len(frame.data))
        async with self.lock:
            await self.write_locked(frame)

    async def write_locked(self, frame: Frame) -> None:
        """Write ``frame`` and drain; the caller holds :attr:`lock`.

        Raises:
            ConnectionClosed: the connection failed now or earlier (sticky).
        """
        if self.error is not None:
            raise self.error.with_traceback(None)
        try:
            header = encode_header(len(frame.data), frame.stream_id, frame.type, frame.flags)
            if len(frame.data) <= _COALESCE:
                self._writer.write(header + frame.data)  # one send() for a small frame, not two
            else:
                self._writer.write(header)
                self._writer.write(frame.data)  # no copy of a large body
            await self._writer.drain()
        except (OSError, RuntimeError) as exc:  # RuntimeError: the transport is already closed
            if self.error is None:
                self.error = ConnectionClosed(f"ttrpc: connection lost while writing: {exc}")
                self.error.__cause__ = exc
            raise self.error from exc

    async def write_bytes_locked(self, data: bytes) -> None:
        """Write whole frames already encoded (by a sans-IO core) and drain; the caller holds
        :attr:`lock`.

        Raises:
            ConnectionClosed: the connection failed now or earlier (sticky).
        """
        if self.error is not None:
            raise self.error.with_traceback(None)
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (OSError, RuntimeError) as exc:  # RuntimeError: the transport is already closed
            if self.error is None:
                self.error = ConnectionClosed(f"ttrpc: connection lost while writing: {exc}")
                self.error.__cause__ = exc
            raise self.error from exc

    def write_bytes_nowait(self, data: bytes) -> None:
        """Best effort, without waiting: queue whole encoded frames (errors ignored)."""
        if self.error is not None or self._writer.is_closing() or not data:
            return
        with contextlib.suppress(OSError, RuntimeError):
            self._writer.write(data)

    def write_nowait(self, frame: Frame) -> None:
        """Best effort, without waiting: queue a small frame whole (no drain, errors ignored).

        Safe without the lock: header and data are written with no ``await`` in between, so they
        cannot interleave with another frame. For cleanup paths that must not block.
        """
        if self.error is not None or self._writer.is_closing():
            return
        with contextlib.suppress(OSError, RuntimeError):
            self._writer.write(
                encode_header(len(frame.data), frame.stream_id, frame.type, frame.flags) + frame.data
            )

    def close(self) -> None:
        """Close the underlying transport (idempotent)."""
        if not self._writer.is_closing():
            self._writer.close()

    async def wait_closed(self) -> None:
        """Wait for the transport to close; errors on the way out do not matter."""
        with contextlib.suppress(OSError, RuntimeError):
            await self._writer.wait_closed()


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

    async def put(self, item: T) -> None:
        """Queue ``item``, waiting while the inbox is full. Dropped after finish/abandon."""
        while len(self._items) >= self._maxsize and not (self._done or self._abandoned):
            self._writable.clear()
            await self._writable.wait()
        if self._done or self._abandoned:
            return
        self._items.append(item)
        self._readable.set()

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


def status_frame(stream_id: int, code: int, message: str) -> Frame:
    """A Response frame carrying a non-OK status and no payload."""
    response = ttrpc_pb2.Response(status=ttrpc_pb2.Status(code=int(code), message=message))
    return Frame(stream_id, FrameType.RESPONSE, 0, response.SerializeToString())


def ok_frame(stream_id: int, payload: bytes) -> Frame:
    """A success Response frame. Like Go, ``status`` is left out."""
    return Frame(stream_id, FrameType.RESPONSE, 0, ttrpc_pb2.Response(payload=payload).SerializeToString())
