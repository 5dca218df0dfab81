"""The client side of a ttrpc connection as a state machine with no IO (h11's ``Connection`` shape).

Layer contract: sans-IO; ``kuasar.ttrpc.framing``, ``kuasar.wire`` (the Request/Response envelope)
and ``kuasar.errors``. No asyncio, no sockets, no protobuf. A driver calls :meth:`ClientCore.open`,
:meth:`~ClientCore.send` and :meth:`~ClientCore.close_send`, writes what :meth:`~ClientCore.data_to_send`
returns, and feeds every received chunk to :meth:`~ClientCore.receive_data`, which returns events:

- :class:`Message` — a Data frame's payload on a server-streaming call;
- :class:`Finished` — the call is over: its Response payload (``None`` for a stream that ended with
  a closing Data frame), or the error it ended with (a non-OK status is an ``RPCError``; a reply over
  the size limit is ``RESOURCE_EXHAUSTED``, as Go's client; Data on a unary call is a
  ``ProtocolError``).

Stream ids are odd and increasing (SPEC.md §3); frames for streams that are not open are dropped.
A garbage header sets :attr:`ClientCore.error`: the connection is unusable from then on.
"""

from __future__ import annotations

from kuasar.codes import Code
from kuasar.errors import KuasarError, ProtocolError, RPCError
from kuasar.ttrpc.framing import (
    Flags,
    FrameDecoder,
    FrameType,
    OversizedFrame,
    encode_header,
    oversize_message,
)
from kuasar.wire import KeyValue, Request, Response, request_tail, response_payload

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

_MAX_STREAM_ID = 0xFFFFFFFF
#: Methods whose encoded Request prefix (service and method) is kept.
_PREFIX_CACHE = 256


class _Event:
    """Events are made once per frame: plain slotted classes with their own ``__init__`` (neither
    a dataclass, whose import costs start-up, nor a generic record, whose ``__init__`` costs calls)."""

    __slots__ = ()
    _FIELDS: tuple[str, ...] = ()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._FIELDS)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Event) and type(other) is type(self) and self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._FIELDS)
        return f"{type(self).__name__}({fields})"


class Message(_Event):
    """One streamed message from the server."""

    __slots__ = ("payload", "stream_id")
    _FIELDS = ("stream_id", "payload")

    def __init__(self, stream_id: int, payload: bytes) -> None:
        self.stream_id = stream_id
        self.payload = payload


class Finished(_Event):
    """The call on ``stream_id`` is over: with ``payload`` (a Response), or with ``error``."""

    __slots__ = ("error", "payload", "stream_id")

    def __init__(
        self, stream_id: int, payload: bytes | None = None, error: KuasarError | None = None
    ) -> None:
        self.stream_id = stream_id
        self.payload = payload
        self.error = error


Event = Message | Finished


def _request_flags(client_streaming: bool, server_streaming: bool) -> int:
    """A Request frame's flags (SPEC.md §8): a client stream stays open (its payload is empty and
    its messages follow as Data); a server-only stream is closed from the client's side at once."""
    if client_streaming:
        return Flags.REMOTE_OPEN | Flags.NO_DATA
    return Flags.REMOTE_CLOSED if server_streaming else Flags.NONE


def decode_status(data: bytes) -> bytes:
    """A Response frame's payload, or its non-OK status raised as ``RPCError``."""
    payload = response_payload(data)  # the common success, read without the generic decoder
    if payload is not None:
        return payload
    response = Response.decode(data)
    status = response.status
    if status is not None and status.code != Code.OK:
        raise RPCError(status.code, status.message, list(status.details))
    return response.payload


class ClientCore:
    """One client connection's streams.

    Args:
        max_message: the largest frame data accepted or sent (ttrpc's 4 MiB by default).
    """

    def __init__(self, max_message: int) -> None:
        self.max_message = max_message
        self._decoder = FrameDecoder(max_message)
        self._out = bytearray()
        self._next_id = 1
        self._server_streaming: dict[int, bool] = {}
        self._prefixes: dict[tuple[str, str], bytes] = {}
        #: Set once the peer sent a garbage frame header.
        self.error: ProtocolError | None = None

    def open(
        self,
        service: str,
        method: str,
        payload: bytes,
        *,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        client_streaming: bool = False,
        server_streaming: bool = False,
    ) -> int:
        """Start a call; returns its stream id.

        Raises:
            RPCError: ``RESOURCE_EXHAUSTED`` when the request is over the size limit (nothing queued).
            ProtocolError: the connection's stream ids are used up.
        """
        # Fields 1-2 (service, method) are encoded once per method; fields 3-5 follow. Protobuf
        # writes fields in number order, so the two parts joined are the whole Request's bytes.
        prefix = self._prefixes.get((service, method))
        if prefix is None:
            if len(self._prefixes) >= _PREFIX_CACHE:
                self._prefixes.clear()
            prefix = self._prefixes[service, method] = Request(service=service, method=method).encode()
        timeout_nano = 0 if timeout is None else max(1, int(timeout * 1e9))
        if metadata:
            entries = tuple(KeyValue(key=key, value=value) for key, value in metadata)
            tail = Request(payload=payload, timeout_nano=timeout_nano, metadata=entries).encode()
        else:
            tail = request_tail(payload, timeout_nano)
        request = prefix + tail
        self._check_size(len(request))
        stream_id = self._next_id
        if stream_id > _MAX_STREAM_ID:
            raise ProtocolError("ttrpc: stream ids exhausted on this connection")
        self._next_id += 2
        self._server_streaming[stream_id] = server_streaming
        self._frame(stream_id, FrameType.REQUEST, _request_flags(client_streaming, server_streaming), request)
        return stream_id

    def send(self, stream_id: int, payload: bytes) -> None:
        """Queue one message of a client-streaming call."""
        self._check_size(len(payload))
        self._frame(stream_id, FrameType.DATA, Flags.NONE, payload)

    def close_send(self, stream_id: int) -> None:
        """Queue the half-close of a client-streaming call (Data, flags 0x05, empty)."""
        self._frame(stream_id, FrameType.DATA, Flags.REMOTE_CLOSED | Flags.NO_DATA, b"")

    def abandon(self, stream_id: int) -> None:
        """Forget a call: later frames for it are dropped."""
        self._server_streaming.pop(stream_id, None)

    def unsend(self, data: bytes) -> None:
        """Put bytes a driver took but could not write back at the front of the queue (frames must
        reach the socket whole and in order)."""
        self._out[:0] = data

    def data_to_send(self) -> bytes:
        """Everything queued for the socket."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes) -> list[Event]:
        """Bytes from the socket in; the events they complete.

        A garbage frame header sets :attr:`error` (the events of the frames before it are still
        returned); the connection is unusable from then on.

        Raises:
            ProtocolError: called again after :attr:`error` was set, or a garbage header before any
                frame of this chunk.
        """
        if self.error is not None:
            raise self.error
        events: list[Event] = []
        for frame in self._decoder.feed(data):
            streaming = self._server_streaming.get(frame.stream_id)
            if streaming is None or frame.type not in (FrameType.RESPONSE, FrameType.DATA):
                continue
            if isinstance(frame, OversizedFrame):
                events.append(
                    self._finish(frame.stream_id, error=RPCError(Code.RESOURCE_EXHAUSTED, frame.message))
                )
            elif frame.type == FrameType.RESPONSE:
                try:
                    events.append(self._finish(frame.stream_id, payload=decode_status(frame.data)))
                except KuasarError as exc:
                    events.append(self._finish(frame.stream_id, error=exc))
            elif not streaming:
                error = ProtocolError("ttrpc: received data from non-streaming server")
                events.append(self._finish(frame.stream_id, error=error))
            else:
                closing = frame.flags & Flags.REMOTE_CLOSED
                if not closing or (frame.data and not frame.flags & Flags.NO_DATA):
                    events.append(Message(frame.stream_id, frame.data))  # an empty message is one too
                if closing:
                    events.append(self._finish(frame.stream_id))
        try:
            self._decoder.check()
        except ProtocolError as exc:
            self.error = exc
        return events

    def _finish(
        self, stream_id: int, *, payload: bytes | None = None, error: KuasarError | None = None
    ) -> Finished:
        self._server_streaming.pop(stream_id, None)
        return Finished(stream_id, payload, error)

    def _check_size(self, length: int) -> None:
        if length > self.max_message:
            raise RPCError(Code.RESOURCE_EXHAUSTED, oversize_message(length, self.max_message))

    def _frame(self, stream_id: int, kind: int, flags: int, data: bytes) -> None:
        self._out += encode_header(len(data), stream_id, kind, flags)
        self._out += data
