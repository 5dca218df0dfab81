"""A ttrpc client on a blocking socket, for one-shot CLI runs: the sans-IO
:class:`~kuasar.ttrpc._client_core.ClientCore` driven with plain ``send``/``recv``.

Layer contract: inside ``kuasar.ttrpc``; ``socket``, ``time`` and the core. No asyncio, no protobuf
(payloads are bytes: callers encode with :mod:`kuasar.wire`). Every wait is bounded by a deadline.
``OSError`` from the socket becomes :class:`~kuasar.errors.ConnectionClosed` here, once.
"""

from __future__ import annotations

import contextlib
import time

from kuasar._tracing import Span, tracing
from kuasar.config import DEFAULT_LIMITS, Limits
from kuasar.errors import ConnectionClosed, DeadlineExceeded
from kuasar.ttrpc._client_core import ClientCore, Event, Finished
from kuasar.ttrpc._trace import outcome, trace_call

TYPE_CHECKING = False
if TYPE_CHECKING:
    import _socket
    from collections.abc import Iterator

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
        span = Span(f"ttrpc /{service}/{method}") if tracing() else None
        deadline = None if timeout is None else time.monotonic() + timeout
        stream_id = 0
        try:
            stream_id = self.core.open(service, method, payload, timeout=timeout)
            self.flush(deadline)
            reply = self._reply(stream_id, deadline)
        except DeadlineExceeded:
            self.core.abandon(stream_id)
            error = DeadlineExceeded(f"ttrpc: /{service}/{method} timed out after {timeout}s")
            if span is not None:
                trace_call(span, stream_id, len(payload), 0, outcome(error))
            raise error from None
        except BaseException as exc:
            if span is not None:
                trace_call(span, stream_id, len(payload), 0, outcome(exc))
            raise
        if span is not None:
            trace_call(span, stream_id, len(payload), len(reply), "OK")
        return reply

    def _reply(self, stream_id: int, deadline: float | None) -> bytes:
        while True:
            for event in self.receive(deadline):
                if isinstance(event, Finished) and event.stream_id == stream_id:
                    if event.error is not None:
                        raise event.error
                    return event.payload or b""


@contextlib.contextmanager
def _bounded(sock: _socket.socket, deadline: float | None, late: str) -> Iterator[None]:
    """A blocking socket operation bounded by ``deadline``; its OSError mapped once."""
    try:
        sock.settimeout(_remaining(deadline))
        yield
    except TimeoutError:
        raise DeadlineExceeded(f"ttrpc: {late}") from None
    except OSError as exc:
        raise ConnectionClosed(f"ttrpc: connection lost: {exc.strerror or exc}") from None
    finally:
        sock.settimeout(None)


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    return max(deadline - time.monotonic(), 0.001)
