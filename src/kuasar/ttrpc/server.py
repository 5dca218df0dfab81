"""ttrpc server: an explicit handler map, a task per request, a fixed error policy.

Layer contract: knows ttrpc only. It serves connections it is handed
(:meth:`Server.handle_connection` fits ``asyncio.start_unix_server``); it never listens or dials
itself and imports nothing from transport, agent, ctl or sandbox.

Per connection: one reader task decodes frames and routes Data frames into the bounded inbox of
their call; when an inbox is full (``limits.stream_queue``) the reader waits, which stalls every
call on that connection (head-of-line blocking: ttrpc has no flow control). Frames are queued
whole through the connection's :class:`~kuasar.ttrpc._conn.FrameWriter` (answers of one loop
iteration leave in one ``send()``); while the client does not read, streaming handlers wait in
:meth:`ServerStream.send` and the reader stops taking requests, so a slow client throttles both.
A unary request is decoded by the reader and answered by a lean task (no timeout scope unless the
request carries ``timeout_nano``).

Policy (Go's texts, so clients see the same errors as from a containerd shim):
- even stream id → ``INVALID_ARGUMENT "StreamID must be odd for client initiated streams"``;
  a reused or decreasing id → ``INVALID_ARGUMENT "StreamID cannot be re-used and must increment"``.
- oversized frame → ``RESOURCE_EXHAUSTED "message length N exceed maximum message size of M"`` on
  that stream; the body is discarded and the connection keeps working.
- undecodable Request → ``INVALID_ARGUMENT "unmarshal request error: ..."``; unknown service →
  ``UNIMPLEMENTED "service <svc>"``; unknown method → ``UNIMPLEMENTED "method <m>"`` (payload not
  decoded); undecodable payload → ``INTERNAL "ttrpc: error unmarshalling payload: ..."``.
- handler raises ``RPCError`` → that status; ``timeout_nano`` expires (``asyncio.timeout``) or the
  handler raises ``TimeoutError`` → ``DEADLINE_EXCEEDED``; any other exception → ``UNKNOWN``
  (``log.exception``, no traceback on the wire). Cancellation propagates.
- unknown frame types are ignored; a garbage header closes that connection only.
- streaming ends with Data ``0x05`` (empty) on success and a Response frame on error (SPEC.md §8).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Iterable
from typing import Any

from google.protobuf.message import DecodeError, Message

from kuasar._log import get_logger
from kuasar.config import DEFAULT_LIMITS, Limits
from kuasar.errors import DeadlineExceeded, KuasarError, ProtocolError, RPCError
from kuasar.proto import ttrpc_pb2
from kuasar.ttrpc._conn import READ_CHUNK, FrameWriter, Inbox, ok_response, status_response
from kuasar.ttrpc.codes import Code
from kuasar.ttrpc.framing import Flags, Frame, FrameDecoder, FrameType, OversizedFrame
from kuasar.ttrpc.service import CallContext, Cardinality, Handler, HandlerMap, merge_handlers

_log = get_logger("kuasar.ttrpc.server")
_conn_ids = itertools.count(1)


def _decode_payload(message_type: Any, data: bytes) -> Any:
    try:
        return message_type.FromString(data)
    except DecodeError as exc:
        raise RPCError(Code.INTERNAL, f"ttrpc: error unmarshalling payload: {exc}") from exc


class ServerStream:
    """The handler's side of a streaming call: :meth:`send` responses, :meth:`recv` requests."""

    def __init__(
        self, conn: _Connection, stream_id: int, handler: Handler, inbox: Inbox[bytes] | None
    ) -> None:
        self._conn = conn
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
        writer = self._conn.writer
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
        return _decode_payload(self._handler.request_type, data)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        while (message := await self.recv()) is not None:
            yield message


class _Call:
    __slots__ = ("inbox", "task")

    def __init__(self, inbox: Inbox[bytes] | None) -> None:
        self.inbox = inbox
        self.task: asyncio.Task[None] | None = None


class _Connection:
    def __init__(self, server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.handlers = server.handlers
        self.reader = reader
        self.writer = FrameWriter(writer, server.limits.max_message)
        self.log = _log.child(conn=next(_conn_ids))
        self.calls: dict[int, _Call] = {}
        self.last_id = 0
        self.read_task: asyncio.Task[None] | None = None
        self.closing = False
        self.loop = asyncio.get_running_loop()

    async def serve(self) -> None:
        read_task = self.loop.create_task(self._read_loop())
        self.read_task = read_task
        try:
            await asyncio.wait({read_task})
        finally:
            read_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({read_task})
            await self._teardown()

    def begin_shutdown(self) -> None:
        self.closing = True
        self._maybe_stop()

    def abort(self) -> None:
        if self.read_task is not None:
            self.read_task.cancel()

    def _maybe_stop(self) -> None:
        if self.closing and not self.calls and self.read_task is not None:
            self.read_task.cancel()

    async def _teardown(self) -> None:
        tasks = [call.task for call in self.calls.values() if call.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=self.server.limits.shutdown_grace)
        self.writer.close()
        await self.writer.wait_closed()

    async def _read_loop(self) -> None:
        decoder = FrameDecoder(self.server.limits.max_message)
        read = self.reader.read
        dispatch = self._dispatch
        writer = self.writer
        try:
            while True:
                chunk = await read(READ_CHUNK)
                if not chunk:
                    self.log.debug("client closed the connection")
                    return
                for frame in decoder.feed(chunk):
                    blocked = dispatch(frame)
                    if blocked is not None:
                        await blocked  # a full inbox: this reader, so the connection, waits
                decoder.check()
                await writer.drain()  # a client that does not read its answers stops its requests
        except ProtocolError as exc:
            self.log.warning("closing connection: %s", exc)
        except (OSError, KuasarError) as exc:
            self.log.debug("connection lost: %s", exc)

    def _reply(self, stream_id: int, code: int, message: str) -> None:
        self.writer.send_frame(stream_id, FrameType.RESPONSE, 0, status_response(code, message))

    def _dispatch(self, frame: Frame) -> Awaitable[None] | None:
        """Act on one frame; returns what the reader must await when a stream's inbox is full."""
        if isinstance(frame, OversizedFrame):
            call = self.calls.get(frame.stream_id)
            if frame.type == FrameType.DATA and call is not None and call.inbox is not None:
                call.inbox.fail(RPCError(Code.RESOURCE_EXHAUSTED, frame.message))
            elif frame.type == FrameType.REQUEST:
                self._reply(frame.stream_id, Code.RESOURCE_EXHAUSTED, frame.message)
            return None
        if frame.type == FrameType.REQUEST:
            self._on_request(frame)
        elif frame.type == FrameType.DATA:
            return self._on_data(frame)
        else:
            self.log.debug("ignoring frame type %s on stream %d", frame.type, frame.stream_id)
        return None

    def _on_request(self, frame: Frame) -> None:
        sid = frame.stream_id
        if sid % 2 == 0:
            self._reply(sid, Code.INVALID_ARGUMENT, "StreamID must be odd for client initiated streams")
            return
        if sid <= self.last_id:
            self._reply(sid, Code.INVALID_ARGUMENT, "StreamID cannot be re-used and must increment")
            return
        self.last_id = sid
        if self.closing:
            self._reply(sid, Code.UNAVAILABLE, "ttrpc: server shutting down")
            return
        try:
            request = ttrpc_pb2.Request.FromString(frame.data)
        except DecodeError as exc:
            self._reply(sid, Code.INVALID_ARGUMENT, f"unmarshal request error: {exc}")
            return
        service = request.service
        method = request.method
        handler = self.handlers.get((service, method))
        if handler is None:
            if service not in self.server.services:
                self._reply(sid, Code.UNIMPLEMENTED, f"service {service}")
            else:
                self._reply(sid, Code.UNIMPLEMENTED, f"method {method}")
            return
        deadline = None
        if request.timeout_nano > 0:
            deadline = self.loop.time() + request.timeout_nano / 1e9
        metadata = [(kv.key, kv.value) for kv in request.metadata] if request.metadata else []
        ctx = CallContext(service, method, metadata, deadline, sid)
        cardinality = handler.cardinality
        call: _Call
        if cardinality is Cardinality.UNARY:
            try:
                message = _decode_payload(handler.request_type, request.payload)
            except RPCError as exc:
                self._reply(sid, exc.code, exc.message)
                return
            call = self.calls[sid] = _Call(None)
            call.task = self.loop.create_task(self._unary(sid, handler, message, ctx))
            return
        inbox: Inbox[bytes] | None = None
        if cardinality.client_streaming:
            inbox = Inbox(self.server.limits.stream_queue)
            # Go: the payload is a first message if non-empty; Rust: unless NO_DATA. Honour both.
            if request.payload and not frame.flags & Flags.NO_DATA:
                inbox.offer(request.payload)  # a new inbox has room
            if not frame.flags & Flags.REMOTE_OPEN:
                inbox.finish()
        call = self.calls[sid] = _Call(inbox)
        call.task = self.loop.create_task(self._stream(sid, handler, request.payload, ctx, call))

    def _on_data(self, frame: Frame) -> Awaitable[None] | None:
        call = self.calls.get(frame.stream_id)
        if call is None:
            if frame.stream_id % 2 == 1 and frame.stream_id <= self.last_id:
                self._reply(frame.stream_id, Code.INVALID_ARGUMENT, "StreamID is no longer active")
            return None
        inbox = call.inbox
        if inbox is None or inbox.done:
            self.log.debug("ignoring data for stream %d: its input is closed", frame.stream_id)
            return None
        closing = frame.flags & Flags.REMOTE_CLOSED
        if closing and (not frame.data or frame.flags & Flags.NO_DATA):
            inbox.finish()
        elif not inbox.offer(frame.data):
            return _put_then(inbox, frame.data, bool(closing))
        elif closing:
            inbox.finish()
        return None

    def _answer(self, sid: int, flags: int, reply: bytes) -> None:
        """Queue a call's last frame (a Response, or Data for a stream's clean end)."""
        kind = FrameType.DATA if flags else FrameType.RESPONSE
        if len(reply) > self.writer.max_message:
            reply = status_response(Code.RESOURCE_EXHAUSTED, f"response of {len(reply)} bytes is too large")
            kind = FrameType.RESPONSE
        with contextlib.suppress(KuasarError):
            self.writer.send_frame(sid, kind, flags, reply)

    def _failure(self, exc: Exception, ctx: CallContext) -> bytes:
        """The error policy: the Response data a handler's exception becomes (called while
        handling it, so ``log.exception`` has the traceback)."""
        if isinstance(exc, RPCError):
            return status_response(exc.code, exc.message)
        if isinstance(exc, TimeoutError | DeadlineExceeded):
            return status_response(Code.DEADLINE_EXCEEDED, "context deadline exceeded")
        self.log.exception("handler /%s/%s failed", ctx.service, ctx.method)
        return status_response(Code.UNKNOWN, "internal error")

    async def _unary(self, sid: int, handler: Handler, message: Any, ctx: CallContext) -> None:
        try:
            try:
                if ctx.deadline is None:  # the common case: no timeout context to enter
                    result = await handler.func(message, ctx)
                else:
                    async with asyncio.timeout_at(ctx.deadline):
                        result = await handler.func(message, ctx)
                data = result.SerializeToString()
                self.writer.check_size(len(data))
                reply = ok_response(data)
            except Exception as exc:
                reply = self._failure(exc, ctx)
            self._answer(sid, 0, reply)
        finally:
            self.calls.pop(sid, None)
            self._maybe_stop()

    async def _stream(
        self, sid: int, handler: Handler, payload: bytes, ctx: CallContext, call: _Call
    ) -> None:
        stream = ServerStream(self, sid, handler, call.inbox)
        flags = 0
        try:
            try:
                async with asyncio.timeout_at(ctx.deadline):
                    if handler.cardinality is Cardinality.SERVER_STREAMING:
                        request = _decode_payload(handler.request_type, payload)
                        result = await handler.func(request, stream, ctx)
                    else:
                        result = await handler.func(stream, ctx)
                if handler.cardinality.server_streaming:
                    flags, reply = Flags.REMOTE_CLOSED | Flags.NO_DATA, b""
                else:
                    data = result.SerializeToString()
                    self.writer.check_size(len(data))
                    reply = ok_response(data)
            except Exception as exc:
                reply = self._failure(exc, ctx)
            self._answer(sid, flags, reply)
        finally:
            if call.inbox is not None:
                call.inbox.abandon()
            self.calls.pop(sid, None)
            self._maybe_stop()


async def _put_then(inbox: Inbox[bytes], data: bytes, finish: bool) -> None:
    await inbox.put(data)
    if finish:
        inbox.finish()


class Server:
    """A ttrpc server: serves any number of connections with one handler map.

    Args:
        handlers: a map ``{(service, method): Handler}`` or an iterable of such maps (merged;
            a duplicate is an error).
        limits: ``max_message``, ``stream_queue`` and ``shutdown_grace`` are used.

    Raises:
        ValueError: duplicate or malformed handler registrations.
    """

    def __init__(
        self, handlers: HandlerMap | Iterable[HandlerMap], *, limits: Limits = DEFAULT_LIMITS
    ) -> None:
        self.handlers = merge_handlers(handlers)
        self.services = frozenset(service for service, _ in self.handlers)
        self.limits = limits
        self._connections: set[_Connection] = set()
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()

    async def handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection until it closes (usable as an ``asyncio.start_unix_server`` callback)."""
        conn = _Connection(self, reader, writer)
        if self._closing:
            conn.writer.close()
            await conn.writer.wait_closed()
            return
        self._connections.add(conn)
        self._idle.clear()
        try:
            await conn.serve()
        finally:
            self._connections.discard(conn)
            if not self._connections:
                self._idle.set()

    def close(self) -> None:
        """Stop taking new calls (they get ``UNAVAILABLE``); connections close once idle."""
        self._closing = True
        for conn in list(self._connections):
            conn.begin_shutdown()

    async def wait_closed(self) -> None:
        """Wait for in-flight calls to finish, at most ``limits.shutdown_grace``; then cancel the
        rest and close every connection."""
        try:
            await asyncio.wait_for(self._idle.wait(), self.limits.shutdown_grace)
        except TimeoutError:
            for conn in list(self._connections):
                conn.abort()
            try:
                await asyncio.wait_for(self._idle.wait(), self.limits.shutdown_grace * 2)
            except TimeoutError:
                _log.warning("%d connection(s) did not close in time", len(self._connections))
