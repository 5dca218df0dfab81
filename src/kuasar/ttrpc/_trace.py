"""The ``kuasarctl -v`` lines of ttrpc calls: how a call ended, in words, and the span's last line.

Layer contract: inside ``kuasar.ttrpc``; ``kuasar._log`` (spans), ``kuasar.errors`` and the status
codes' names. The client decides when to trace (once per call); this module only formats.
"""

from __future__ import annotations

from kuasar._tracing import Span
from kuasar.codes import CODE_NAMES
from kuasar.errors import DeadlineExceeded, RPCError

#: For ``-v`` lines: a stream's shape, by ``2 * client_streaming + server_streaming``; status names.
KINDS = ("unary", "server-streaming", "client-streaming", "bidi")


def outcome(exc: BaseException) -> str:
    """How a traced call ended, for its ``-v`` line: the remote status, or what failed locally."""
    if isinstance(exc, RPCError):
        name = CODE_NAMES.get(exc.code, f"status {exc.code}")
        return f"{name}: {exc.message}" if exc.message else name
    if isinstance(exc, DeadlineExceeded):
        return "DEADLINE_EXCEEDED (local timeout)"
    if type(exc).__name__ == "CancelledError":  # asyncio's, without importing asyncio here
        return "CANCELLED (local)"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def trace_call(span: Span, stream_id: int, sent: int, received: int, outcome: str) -> None:
    span.name += f" stream {stream_id}" if stream_id else ""
    span.sent(sent)
    span.received(received)
    span.end(outcome)
