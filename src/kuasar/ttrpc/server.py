"""ttrpc server: an explicit handler map, a task per request that may wait, a fixed error policy.

Layer contract: knows ttrpc only. It serves connections it is handed
(:meth:`Server.handle_connection` fits ``asyncio.start_unix_server``); it never listens or dials
itself and imports nothing from transport, agent, ctl or sandbox.

Per connection: the server's own protocol takes over the stream pair's transport
(:func:`~kuasar.ttrpc._conn.adopt`: bytes already buffered are served first, none lost), reads into
one reused buffer and decodes frames as they arrive; Data frames go into the bounded inbox of their
call. When an inbox is full (``limits.stream_queue``) reading pauses until it has room, which
stalls every call on that connection (head-of-line blocking: ttrpc has no flow control). Frames
are queued whole through the connection's :class:`~kuasar.ttrpc._conn.FrameWriter` (the answers
to one read leave in one ``send()``); while the client does not read, streaming handlers wait in
:meth:`ServerStream.send` and reading pauses, so a slow client throttles both. A unary handler
that cannot suspend (:func:`~kuasar.ttrpc.service.never_suspends`: no ``await`` in its body) runs
inline, in a context of its own but outside any task (``asyncio.current_task()`` is ``None``);
any other call gets a task (a unary one without a timeout scope unless the request carries
``timeout_nano``).

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
import collections
import contextlib
import contextvars
import itertools
from collections.abc import Awaitable, Coroutine, Iterable
from typing import Any, cast

from google.protobuf.message import DecodeError, Message

from kuasar._log import get_logger
from kuasar.config import DEFAULT_LIMITS, Limits
from kuasar.errors import ConnectionClosed, DeadlineExceeded, KuasarError, ProtocolError, RPCError
from kuasar.proto import ttrpc_pb2
from kuasar.ttrpc._conn import (
    READ_CHUNK,
    FrameWriter,
    Inbox,
    ServerStream,
    adopt,
    decode_payload,
    ok_response,
    status_response,
)
from kuasar.ttrpc.codes import Code
from kuasar.ttrpc.framing import Flags, Frame, FrameDecoder, FrameType, OversizedFrame
from kuasar.ttrpc.service import CallContext, Cardinality, Handler, HandlerMap, merge_handlers, never_suspends

__all__ = ["Server", "ServerStream"]

_log = get_logger("kuasar.ttrpc.server")
_conn_ids = itertools.count(1)


class _Call:
    __slots__ = ("inbox", "task")

    def __init__(self, inbox: Inbox[bytes] | None) -> None:
        self.inbox = inbox
        self.task: asyncio.Task[None] | None = None


class _Connection(asyncio.BufferedProtocol):
    """One served connection: the transport's protocol from :meth:`serve` on (see :func:`adopt`)."""

    def __init__(self, server: Server, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.handlers = server.handlers
        self.inline = server.inline
        self.writer = FrameWriter(writer, server.limits.max_message, owned=True)
        self.transport = cast(asyncio.Transport, writer.transport)
        self.log = _log.child(conn=next(_conn_ids))
        self.calls: dict[int, _Call] = {}
        self.last_id = 0
        self.closing = False
        self.loop = asyncio.get_running_loop()
        self._decoder = FrameDecoder(server.limits.max_message)
        self._buffer = memoryview(bytearray(READ_CHUNK))
        self._backlog: collections.deque[Frame] = collections.deque()  # decoded, not yet acted on
        self._adopting: list[bytes] | None = []  # bytes that came while the stream's were taken over
        self._blocked: asyncio.Task[None] | None = None  # waiting for a full inbox
        self._garbage: ProtocolError | None = None
        self._eof = False
        self._over: asyncio.Future[None] = self.loop.create_future()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            leftover, lost = await adopt(reader, writer, self)
            self.writer.own()
            held, self._adopting = self._adopting or [], None
            if lost:
                self.writer.lost(None)
                self._stop()
            for data in (leftover, *held):
                if data:
                    self._feed(data)
            if not self._over.done():
                self.transport.resume_reading()
            await asyncio.wait({self._over})
        finally:
            await self._teardown()

    # -- the transport's protocol ----------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        data = bytes(self._buffer[:nbytes])
        if self._adopting is not None:
            self._adopting.append(data)
        else:
            self._feed(data)

    def eof_received(self) -> bool:
        self.log.debug("client closed the connection")
        self._eof = True
        if not self._backlog:
            self._stop()
        return True  # keep the transport: teardown closes it once the calls are over

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self.log.debug("connection lost: %s", exc)
        self.writer.lost(exc)
        self._stop()

    def pause_writing(self) -> None:
        self.writer.pause()
        self._pause_reading()  # a client that does not read its answers stops its requests

    def resume_writing(self) -> None:
        self.writer.resume()
        if self._blocked is None and not self._backlog:
            self._resume_reading()

    # -- lifecycle ---------------------------------------------------------------------------

    def begin_shutdown(self) -> None:
        self.closing = True
        self._maybe_stop()

    def abort(self) -> None:
        self._stop()

    def _maybe_stop(self) -> None:
        if self.closing and not self.calls:
            self._stop()

    def _stop(self) -> None:
        """Take no more frames; :meth:`serve` tears the connection down."""
        if not self._over.done():
            self._over.set_result(None)
            self._backlog.clear()
            self._pause_reading()

    def _pause_reading(self) -> None:
        with contextlib.suppress(RuntimeError, AttributeError):  # closed, or closing
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if not self._over.done():
            with contextlib.suppress(RuntimeError, AttributeError):
                self.transport.resume_reading()

    async def _teardown(self) -> None:
        if self._blocked is not None:
            self._blocked.cancel()
        tasks = [call.task for call in self.calls.values() if call.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=self.server.limits.shutdown_grace)
        self.writer.close()
        await self.writer.wait_closed()

    # -- frames ------------------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        if self._over.done():
            return
        frames: list[Frame] = []
        try:
            frames = self._decoder.feed(data)
            self._decoder.check()  # garbage after this chunk's frames: they are still acted on
        except ProtocolError as exc:
            self._garbage = exc
        self._backlog.extend(frames)
        if self._blocked is None:
            self._work()

    def _work(self) -> None:
        """Act on the backlog until it is empty or a stream's inbox is full (then reading pauses
        and a task waits for room: head-of-line blocking)."""
        backlog = self._backlog
        writer = self.writer
        writer.hold()
        try:
            while backlog and not self._over.done():
                blocked = self._dispatch(backlog.popleft())
                if blocked is not None:
                    self._pause_reading()
                    self._blocked = self.loop.create_task(self._unblock(blocked))
                    return
        except ConnectionClosed as exc:
            self.log.debug("connection lost: %s", exc)
            self._stop()
        finally:
            writer.release()
        if self._garbage is not None:
            self.log.warning("closing connection: %s", self._garbage)
            self._stop()
        elif self._eof:
            self._stop()

    async def _unblock(self, blocked: Awaitable[None]) -> None:
        await blocked
        self._blocked = None
        self._work()
        if self._blocked is None and not self.writer.paused:
            self._resume_reading()

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
                message = decode_payload(handler.request_type, request.payload)
            except RPCError as exc:
                self._reply(sid, exc.code, exc.message)
                return
            if handler.func in self.inline:
                self._unary_inline(sid, handler, message, ctx)
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

    def _ok(self, result: Message) -> bytes:
        data = result.SerializeToString()
        self.writer.check_size(len(data))
        return ok_response(data)

    def _failure(self, exc: Exception, ctx: CallContext) -> bytes:
        """The error policy: the Response data a handler's exception becomes (called while
        handling it, so ``log.exception`` has the traceback)."""
        if isinstance(exc, RPCError):
            return status_response(exc.code, exc.message)
        if isinstance(exc, TimeoutError | DeadlineExceeded):
            return status_response(Code.DEADLINE_EXCEEDED, "context deadline exceeded")
        self.log.exception("handler /%s/%s failed", ctx.service, ctx.method)
        return status_response(Code.UNKNOWN, "internal error")

    def _unary_inline(self, sid: int, handler: Handler, message: Any, ctx: CallContext) -> None:
        """Run a handler that cannot suspend (:func:`never_suspends`) to its end, here and now: the
        same answer as from a task, without one (and in a context of its own, as in a task)."""
        coro = cast(Coroutine[Any, Any, Any], handler.func(message, ctx))
        try:
            contextvars.copy_context().run(coro.send, None)
        except StopIteration as done:
            try:
                reply = self._ok(done.value)
            except Exception as exc:
                reply = self._failure(exc, ctx)
        except asyncio.CancelledError:
            return  # as a task that was cancelled: no answer
        except Exception as exc:
            reply = self._failure(exc, ctx)
        else:  # pragma: no cover - never_suspends() ruled this out
            coro.close()
            raise RuntimeError(f"handler /{ctx.service}/{ctx.method} suspended")
        self._answer(sid, 0, reply)

    async def _unary(self, sid: int, handler: Handler, message: Any, ctx: CallContext) -> None:
        try:
            try:
                if ctx.deadline is None:  # the common case: no timeout context to enter
                    result = await handler.func(message, ctx)
                else:
                    async with asyncio.timeout_at(ctx.deadline):
                        result = await handler.func(message, ctx)
                reply = self._ok(result)
            except Exception as exc:
                reply = self._failure(exc, ctx)
            self._answer(sid, 0, reply)
        finally:
            self.calls.pop(sid, None)
            self._maybe_stop()

    async def _stream(
        self, sid: int, handler: Handler, payload: bytes, ctx: CallContext, call: _Call
    ) -> None:
        stream = ServerStream(self.writer, sid, handler, call.inbox)
        flags = 0
        try:
            try:
                async with asyncio.timeout_at(ctx.deadline):
                    if handler.cardinality is Cardinality.SERVER_STREAMING:
                        request = decode_payload(handler.request_type, payload)
                        result = await handler.func(request, stream, ctx)
                    else:
                        result = await handler.func(stream, ctx)
                if handler.cardinality.server_streaming:
                    flags, reply = Flags.REMOTE_CLOSED | Flags.NO_DATA, b""
                else:
                    reply = self._ok(result)
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
        #: Unary handlers that cannot suspend: run inline by the connection, no task each.
        self.inline = frozenset(
            h.func
            for h in self.handlers.values()
            if h.cardinality is Cardinality.UNARY and never_suspends(h.func)
        )
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
        if self._closing:
            writer.close()
            with contextlib.suppress(OSError, RuntimeError):
                await writer.wait_closed()
            return
        conn = _Connection(self, writer)
        self._connections.add(conn)
        self._idle.clear()
        try:
            await conn.serve(reader, writer)
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
