"""Trace lines and spans for ``kuasarctl -v``, without importing ``logging`` until someone asks.

Layer contract: leaf; stdlib ``time`` only (``logging`` lazily). Library code calls ``trace(...)`` for
the few events an operator wants to see with ``-v`` (``* CONNECT 1024 -> OK 1073741825``). The CLI
sets a sink with :func:`set_sink` (``None``: tracing off) and so never loads ``logging`` on its
fast paths; without a sink set (the agent, library users), trace lines go to the ``kuasar.trace``
logger at DEBUG, as before.

A traced operation that has a duration and a size (a ttrpc call or stream) checks :func:`tracing`
once when it starts and, only when that is true, keeps a :class:`Span` of its bytes, messages and
time; with ``-v`` off nothing is counted or formatted.
"""

from __future__ import annotations

import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from collections.abc import Callable

TRACE_LOGGER = "kuasar.trace"
_UNSET = object()
_sink: object = _UNSET


def set_sink(sink: Callable[[str], None] | None) -> None:
    """Where trace lines go (each already formatted, without the ``* `` prefix); ``None``: off."""
    global _sink  # noqa: PLW0603 - the process's one trace switch
    _sink = sink


def tracing() -> bool:
    """True when trace lines are printed (``kuasarctl -v``). Check it once per operation."""
    if _sink is not _UNSET:
        return _sink is not None
    return _logger().isEnabledFor(10)  # logging.DEBUG


_loggers: list[logging.Logger] = []


def _logger() -> logging.Logger:
    """The trace logger (looked up once: ``logging.getLogger`` takes a lock per call)."""
    if not _loggers:
        import logging

        _loggers.append(logging.getLogger(TRACE_LOGGER))
    return _loggers[0]


def trace(message: str, *args: object) -> None:
    """One line for ``kuasarctl -v`` (printed as ``* message``). Cheap when -v is off."""
    if _sink is None:
        return
    if _sink is not _UNSET:
        _sink(message % args if args else message)  # type: ignore[operator]
        return
    log = _logger()
    if log.isEnabledFor(10):  # logging.DEBUG
        log.debug(message, *args)


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


def _msgs(count: int) -> str:
    return f"{count} msg" if count == 1 else f"{count} msgs"


class Span:
    """One traced operation: what it moved and since when, for the ``-v`` line that ends it.

    Create one only when :func:`tracing` is true. :meth:`end` traces ``<name> -> <outcome>
    (2 B in, 5 B out, 1.3 ms)``, or for a span of ``messages`` (a stream) ``(3 msgs/120 B in,
    1 msg/10 B out, 1.20 s)``.

    Args:
        name: what the operation is, e.g. ``ttrpc /grpc.Health/Check``; callers may extend it
            (``stream 1``) once they know more.
        messages: count messages too, not only bytes.

    Attributes:
        name: as given, or as extended since.
        bytes_in: payload bytes received.
        bytes_out: payload bytes sent.
        messages_in: messages received.
        messages_out: messages sent.
    """

    __slots__ = ("_messages", "_started", "bytes_in", "bytes_out", "messages_in", "messages_out", "name")

    def __init__(self, name: str, *, messages: bool = False) -> None:
        self.name = name
        self._messages = messages
        self._started = time.monotonic()
        self.bytes_in = self.bytes_out = self.messages_in = self.messages_out = 0

    def received(self, size: int) -> None:
        """Count one message of ``size`` bytes received."""
        self.messages_in += 1
        self.bytes_in += size

    def sent(self, size: int) -> None:
        """Count one message of ``size`` bytes sent."""
        self.messages_out += 1
        self.bytes_out += size

    def totals(self) -> str:
        """Bytes (and messages) each way, and the time since the span began."""
        elapsed = _duration(time.monotonic() - self._started)
        if not self._messages:
            return f"{self.bytes_in} B in, {self.bytes_out} B out, {elapsed}"
        received = f"{_msgs(self.messages_in)}/{self.bytes_in} B in"
        return f"{received}, {_msgs(self.messages_out)}/{self.bytes_out} B out, {elapsed}"

    def end(self, outcome: str) -> None:
        """Trace the closing line: ``<name> -> <outcome> (<totals>)``."""
        trace("%s -> %s (%s)", self.name, outcome, self.totals())
