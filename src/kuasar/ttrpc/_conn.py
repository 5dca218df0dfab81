"""Pieces shared by both ends of a ttrpc connection: the coalescing frame writer, the bounded
per-stream inbox, and the server's envelope (``ttrpc.Response``/``Status``) helpers.

Layer contract: asyncio + the generated ``kuasar.proto.ttrpc_pb2``; imports nothing above
``kuasar.ttrpc``. Every write goes through :class:`FrameWriter`: whole frames are queued with no
``await`` between a frame's header and its data, so frames of concurrent streams never
interleave; frames queued in one loop iteration leave in one ``send()``; and :meth:`FrameWriter.drain`
makes a writer wait while the transport is over its high-water mark, so a slow peer throttles
writers. ``OSError`` from the socket becomes :class:`~kuasar.errors.ConnectionClosed` here, once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import Generic, TypeVar

from kuasar.errors import ConnectionClosed, KuasarError, RPCError
from kuasar.proto import ttrpc_pb2
from kuasar.ttrpc.codes import Code
from kuasar.ttrpc.framing import encode_header, oversize_message

T = TypeVar("T")

#: Bytes read from the socket at a time.
READ_CHUNK = 256 * 1024


#: Frames with at most this much data are joined with their neighbours into one write.
_COALESCE = 64 * 1024


class FrameWriter:
    """Writes whole frames to a connection, coalescing the small ones of one loop iteration.

    The first write of a loop iteration goes to the transport at once (a lone call pays no
    latency); later ones are joined and written at the end of the iteration, so 64 calls answered
    together cost one ``send()``, not 64. Writing never waits: :meth:`drain` does, while the
    transport is paused (over its high-water mark).

    Args:
        writer: the connection's stream writer.
        max_message: frames with more data than this are refused before anything is written.
    """

    def __init__(self, writer: asyncio.StreamWriter, max_message: int) -> None:
        self._writer = writer
        self._transport = writer.transport
        self._loop = asyncio.get_running_loop()
        self.max_message = max_message
        self._pending: list[bytes] | None = None  # None: nothing written in this loop iteration
        self._pending_size = 0
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
        pending = self._pending
        if pending is None:
            self._pending = []
            self._loop.call_soon(self._flush)
            self._write(data)
        elif len(data) > _COALESCE or self._pending_size > _COALESCE:
            self._flush_pending(pending)
            self._write(data)  # bounded: a sender that never yields still reaches the transport
        else:
            pending.append(data)
            self._pending_size += len(data)

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
        if self.error is None and data and not self._writer.is_closing():
            with contextlib.suppress(KuasarError):
                self.send(data)

    async def drain(self) -> None:
        """Wait while the transport is over its high-water mark.

        Raises:
            ConnectionClosed: the connection failed now or earlier (sticky).
        """
        if self.error is not None:
            raise self.error.with_traceback(None)
        transport = self._transport
        if not transport.get_write_buffer_size() and not transport.is_closing():
            return  # nothing waiting in the kernel's way: the common case costs no await
        try:
            await self._writer.drain()
        except (OSError, RuntimeError) as exc:
            raise self._failed(exc) from exc

    def _flush(self) -> None:
        pending = self._pending
        self._pending = None
        if pending:
            self._flush_pending(pending)

    def _flush_pending(self, pending: list[bytes]) -> None:
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


def status_response(code: int, message: str) -> bytes:
    """A Response frame's data carrying a non-OK status and no payload."""
    return ttrpc_pb2.Response(status=ttrpc_pb2.Status(code=int(code), message=message)).SerializeToString()


def ok_response(payload: bytes) -> bytes:
    """A success Response frame's data. Like Go, ``status`` is left out."""
    return ttrpc_pb2.Response(payload=payload).SerializeToString()
