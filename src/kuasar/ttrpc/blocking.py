"""A ttrpc client on a blocking socket, for one-shot CLI runs: the sans-IO
:class:`~kuasar.ttrpc._client_core.ClientCore` driven with plain ``send``/``recv``.

Layer contract: inside ``kuasar.ttrpc``; ``socket``, ``time`` and the core. No asyncio, no protobuf
(payloads are bytes: callers encode with :mod:`kuasar.wire`). Every wait is bounded by a deadline.
``OSError`` from the socket becomes :class:`~kuasar.errors.ConnectionClosed` here, once.
"""

from __future__ import annotations

import time

from kuasar._tracing import Span, tracing
from kuasar.config import DEFAULT_LIMITS, Limits
from kuasar.errors import ConnectionClosed, DeadlineExceeded, Translating
from kuasar.ttrpc._client_core import ClientCore, Event, Finished

TYPE_CHECKING = False
if TYPE_CHECKING:
    import _socket
    from types import TracebackType

READ_CHUNK = 256 * 1024


class BlockingClient:
    """A client connection on ``sock`` (connected; the client owns and closes it).

    Args:
        sock: the connected socket.
        limits: ``max_message`` bounds frames both ways.
    """

    def __init__(self, sock: _socket.socket, *, limits: Limits = DEFAULT_LIMITS) -> None:
        self.sock = sock
        self.limits = limits
        self.core = ClientCore(limits.max_message)
        self._pending: dict[int, _Pending] = {}
        self._finished: dict[int, Finished] = {}
        self._early: list[Event] = []

    def close(self) -> None:
        self.sock.close()

    def flush(self, deadline: float | None = None) -> None:
        """Write everything the core has queued.

        Raises:
            ConnectionClosed: the peer is gone.
            DeadlineExceeded: the socket did not take it before ``deadline``.
        """
        data = self.core.data_to_send()
        if data:
            with _bounded(self.sock, deadline, "the peer did not take the request in time"):
                self.sock.sendall(data)

    def receive(self, deadline: float | None = None) -> list[Event]:
        """Read once (blocking until data, EOF or ``deadline``) and return the events it completes.

        Raises:
            ConnectionClosed: EOF or a reset.
            DeadlineExceeded: nothing arrived before ``deadline``.
            ProtocolError: the peer broke the framing.
        """
        with _bounded(self.sock, deadline, "no answer in time"):
            data = self.sock.recv(READ_CHUNK)
        if not data:
            raise ConnectionClosed("ttrpc: connection closed by peer")
        events = self.core.receive_data(data)
        if self.core.error is not None and not events:
            raise self.core.error
        return events

    def call(self, service: str, method: str, payload: bytes = b"", *, timeout: float | None = None) -> bytes:
        """A unary call: the response payload.

        Raises:
            RPCError: a non-OK status.
            DeadlineExceeded: ``timeout`` expired.
            ConnectionClosed, ProtocolError: the connection failed.
        """
        return self.result(self.start(service, method, payload, timeout=timeout))

    def start(self, service: str, method: str, payload: bytes = b"", *, timeout: float | None = None) -> int:
        """Queue a unary call's request and return its stream id: calls started one after another
        leave in one write and share one round trip. :meth:`result` sends what is queued and
        reads an answer (in any order); :meth:`abandon` drops one nobody will read.

        Raises:
            RPCError: ``RESOURCE_EXHAUSTED``, the request is over the size limit.
            ProtocolError: the connection's stream ids are used up.
        """
        pending = _Pending(service, method, len(payload), timeout)
        try:
            pending.stream_id = self.core.open(service, method, payload, timeout=timeout)
        except BaseException as exc:
            self._end(pending, exc)
            raise
        self._pending[pending.stream_id] = pending
        return pending.stream_id

    def result(self, stream_id: int) -> bytes:
        """The answer of a call :meth:`start` sent, waiting for it until the call's timeout.

        Raises:
            RPCError, DeadlineExceeded, ConnectionClosed, ProtocolError: as :meth:`call`.
        """
        pending = self._pending[stream_id]
        try:
            self.flush(pending.deadline)
            event = self._wait(stream_id, pending.deadline)
        except DeadlineExceeded:
            raise self._timed_out(pending) from None
        except BaseException as exc:
            self._end(pending, exc)
            raise
        if event.error is not None:
            self._end(pending, event.error)
            raise event.error
        reply = event.payload or b""
        self._end(pending, "OK", len(reply))
        return reply

    def _wait(self, stream_id: int, deadline: float | None) -> Finished:
        while stream_id not in self._finished:
            for event in self.receive(deadline):
                if event.stream_id not in self._pending:  # a stream opened beside these calls
                    self._early.append(event)
                elif isinstance(event, Finished):
                    self._finished[event.stream_id] = event
        return self._finished[stream_id]

    def take_early(self, stream_id: int) -> list[Event]:
        """The events of ``stream_id`` (a stream the caller drives itself, opened on the core while
        unary calls were waited for) that arrived during those waits, in order."""
        taken = [event for event in self._early if event.stream_id == stream_id]
        self._early = [event for event in self._early if event.stream_id != stream_id]
        return taken

    def abandon(self, stream_id: int) -> None:
        """Forget a call :meth:`start` sent: its answer, come or to come, is dropped."""
        pending = self._pending.get(stream_id)
        if pending is not None:
            self._end(pending, "not read (the client did not need it)")

    def _timed_out(self, pending: _Pending) -> DeadlineExceeded:
        error = DeadlineExceeded(f"ttrpc: /{pending.method} timed out after {pending.timeout}s")
        self._end(pending, error)
        return error

    def _end(self, pending: _Pending, how: str | BaseException, received: int = 0) -> None:
        """Forget ``pending`` (later frames for it are dropped) and trace how it ended (in words,
        or the exception it ended with)."""
        self._pending.pop(pending.stream_id, None)
        self._finished.pop(pending.stream_id, None)
        self.core.abandon(pending.stream_id)
        if pending.span is not None:
            from kuasar.ttrpc._trace import outcome, trace_call

            text = how if isinstance(how, str) else outcome(how)
            trace_call(pending.span, pending.stream_id, pending.sent, received, text)


class _Pending:
    """A unary call sent and not yet read."""

    __slots__ = ("deadline", "method", "sent", "span", "stream_id", "timeout")

    def __init__(self, service: str, method: str, sent: int, timeout: float | None) -> None:
        self.method = f"{service}/{method}"
        self.span = Span(f"ttrpc /{self.method}") if tracing() else None
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.sent = sent
        self.stream_id = 0


class _bounded(Translating):
    """A blocking socket operation bounded by ``deadline``; its OSError mapped once."""

    chain = False

    def __init__(self, sock: _socket.socket, deadline: float | None, late: str) -> None:
        self.sock = sock
        self.deadline = deadline
        self.late = late

    def __enter__(self) -> None:
        self.sock.settimeout(_remaining(self.deadline))

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.sock.settimeout(None)
        super().__exit__(kind, exc, traceback)

    def translate(self, exc: BaseException) -> BaseException | None:
        if isinstance(exc, TimeoutError):
            return DeadlineExceeded(f"ttrpc: {self.late}")
        if isinstance(exc, OSError):
            return ConnectionClosed(f"ttrpc: connection lost: {exc.strerror or exc}")
        return None


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    return max(deadline - time.monotonic(), 0.001)
