"""ttrpc streaming calls: :class:`Stream`, one streaming call on a :class:`~kuasar.ttrpc.Client`,
and the per-call state both unary calls and streams keep on the connection.

Layer contract: knows ttrpc only, like :mod:`kuasar.ttrpc.client` (which opens streams and routes
their events here); imports nothing from transport, agent, ctl or sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import types
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, Self, TypeVar

from google.protobuf.message import DecodeError

from kuasar._log import Span, trace, tracing
from kuasar.errors import DeadlineExceeded, KuasarError, ProtocolError, RPCError
from kuasar.ttrpc._client_core import Event, Finished
from kuasar.ttrpc._conn import Inbox
from kuasar.ttrpc._trace import KINDS as _KINDS
from kuasar.ttrpc._trace import outcome as _outcome

if TYPE_CHECKING:
    from kuasar.ttrpc.client import Client

M = TypeVar("M", bound="Message")


class Message(Protocol):
    """What the client needs of a message: protobuf's generated classes, or :mod:`kuasar.wire`'s."""

    def SerializeToString(self) -> bytes:
        """The message's wire bytes."""
        ...

    @classmethod
    def FromString(cls, data: bytes, /) -> Self:
        """Parse wire bytes."""
        ...


Metadata = Sequence[tuple[str, str]]


class CallState:
    """A call's place on the connection: a unary call waits on one future (its answer, or
    ``None`` when the connection failed); a stream reads a bounded inbox."""

    __slots__ = ("future", "inbox", "stream_id")

    def __init__(self, maxsize: int | None, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.inbox: Inbox[Event] | None = None if maxsize is None else Inbox(maxsize)
        # ``loop``: the connection's, passed by a unary call (get_running_loop() is a getpid() each)
        self.future: asyncio.Future[Event | None] | None = (
            (loop or asyncio.get_running_loop()).create_future() if maxsize is None else None
        )
        self.stream_id = 0


def decode_message(response_type: type[M], data: bytes) -> M:
    """Parse a response; undecodable bytes are a ``ProtocolError``."""
    try:
        return response_type.FromString(data)
    except DecodeError as exc:
        raise ProtocolError(f"ttrpc: cannot decode {response_type.__name__}: {exc}") from exc


class Stream(Generic[M]):
    """One streaming call on a :class:`Client` (SPEC.md §8).

    Wire behaviour: server-streaming sends its Request with flags ``REMOTE_CLOSED`` (0x01) and
    the request message; client-streaming and bidi send ``REMOTE_OPEN|NO_DATA`` (0x06) with an
    empty payload, then Data frames; :meth:`close_send` sends Data ``0x05`` with no data.
    Leaving the ``async with`` block releases the stream id whatever happened.
    """

    def __init__(
        self,
        client: Client,
        *,
        service: str,
        method: str,
        response_type: type[M],
        client_streaming: bool,
        server_streaming: bool,
        request: Message | None,
        timeout: float | None,
        metadata: Metadata | None,
    ) -> None:
        self._client = client
        self._service = service
        self._method = method
        self._response_type = response_type
        self._client_streaming = client_streaming
        self._server_streaming = server_streaming
        self._request = request
        self._timeout = timeout
        self._metadata = metadata
        self._deadline: float | None = None
        self._state = CallState(client._limits.stream_queue)
        assert self._state.inbox is not None
        self._inbox: Inbox[Event] = self._state.inbox
        self._stream_id = 0
        self._send_closed = not client_streaming
        self._ended = False
        self._span: Span | None = None  # only while tracing (kuasarctl -v)
        self._failure: str | None = None  # the status a traced stream ended with, if not OK

    @property
    def stream_id(self) -> int:
        """The ttrpc stream id (0 before the stream is opened)."""
        return self._stream_id

    async def __aenter__(self) -> Stream[M]:
        span = self._span = (
            Span(f"ttrpc /{self._service}/{self._method}", messages=True) if tracing() else None
        )
        if self._timeout is not None:
            self._deadline = asyncio.get_running_loop().time() + self._timeout
        payload = b""
        if not self._client_streaming and self._request is not None:
            payload = self._request.SerializeToString()
        opening = self._client._open(
            self._state,
            self._service,
            self._method,
            payload,
            timeout=self._timeout,
            metadata=self._metadata,
            client_streaming=self._client_streaming,
            server_streaming=self._server_streaming,
        )
        try:
            self._stream_id = await self._bounded(opening)
            if span is not None:
                span.name += f" stream {self._stream_id}"
                if not self._client_streaming:
                    span.sent(len(payload))
                trace("%s open (%s)", span.name, _KINDS[2 * self._client_streaming + self._server_streaming])
            if self._client_streaming and self._request is not None:
                await self.send(self._request)
        except BaseException as exc:
            self._client._release(self._state)
            if span is not None:
                self._trace_close(span, exc)
            raise
        return self

    def _trace_close(self, span: Span, exc: BaseException | None) -> None:
        outcome = "OK" if self._ended else _outcome(exc) if exc else "closed by the client before the end"
        span.end(self._failure or outcome)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        try:
            if not self._send_closed and not self._client.closed and self._stream_id:
                if exc_type is None:
                    with contextlib.suppress(KuasarError):
                        await self.close_send()
                else:  # don't block an error path; still tell the server no more input follows
                    self._send_closed = True
                    self._client._send_nowait(self._stream_id)
        finally:
            self._client._release(self._state)
            if self._span is not None:
                self._trace_close(self._span, exc)

    async def _bounded(self, awaitable: Any) -> Any:
        try:
            async with asyncio.timeout_at(self._deadline):
                return await awaitable
        except TimeoutError as exc:
            if isinstance(exc, KuasarError):
                raise
            raise DeadlineExceeded(
                f"ttrpc: /{self._service}/{self._method} timed out after {self._timeout}s"
            ) from None

    async def send(self, message: Message) -> None:
        """Send one message (client-streaming and bidi calls).

        Raises:
            ProtocolError: the call is not client-streaming, or :meth:`close_send` was called.
            RPCError: ``RESOURCE_EXHAUSTED`` when the message is over the size limit.
            ConnectionClosed: the connection is gone.
        """
        if self._send_closed:
            raise ProtocolError("ttrpc: send on a stream whose sending side is closed")
        data = message.SerializeToString()
        await self._bounded(self._client._send(self._stream_id, data))
        if self._span is not None:
            self._span.sent(len(data))

    async def close_send(self) -> None:
        """Half-close: tell the server no more messages follow (Data ``0x05``, empty).

        A no-op when the sending side is already closed (always so for server-streaming calls).
        """
        if self._send_closed:
            return
        self._send_closed = True
        await self._bounded(self._client._send(self._stream_id, None))

    async def recv(self) -> M | None:
        """The next message from the server, or ``None`` when the server ended the stream.

        Raises:
            RPCError: the server ended the call with a non-OK status.
            DeadlineExceeded: the call's timeout expired.
            ConnectionClosed: the connection is gone.
        """
        while not self._ended:
            event = await self._bounded(self._inbox.get())
            if event is None:
                self._ended = True
                break
            if isinstance(event, Finished):
                self._ended = True
                payload = self._payload(event)  # raises the status
                return self._message(payload) if payload else None
            return self._message(event.payload)
        return None

    def _payload(self, event: Finished) -> bytes:
        """A finished call's payload; its error is raised (and a status kept for the ``-v`` line)."""
        if event.error is not None:
            if self._span is not None and isinstance(event.error, RPCError):
                self._failure = _outcome(event.error)
            raise event.error
        return event.payload or b""

    def _message(self, data: bytes) -> M:
        if self._span is not None:
            self._span.received(len(data))
        return decode_message(self._response_type, data)

    def __aiter__(self) -> AsyncIterator[M]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[M]:
        while (message := await self.recv()) is not None:
            yield message

    async def response(self) -> M:
        """The single response of a client-streaming (or unary) call; closes sending first.

        Raises:
            RPCError: the server answered with a non-OK status.
            ProtocolError: the server sent stream data or ended without a response.
        """
        await self.close_send()
        event = await self._bounded(self._inbox.get())
        self._ended = True
        if event is None:
            raise ProtocolError("ttrpc: stream ended without a response")
        if not isinstance(event, Finished):
            raise ProtocolError("ttrpc: received data from non-streaming server")
        return self._message(self._payload(event))
