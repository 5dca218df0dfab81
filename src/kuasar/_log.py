"""Logging with context, and trace spans for ``kuasarctl -v``.

Layer contract: bottom layer; stdlib ``logging`` and ``time`` only. Library code calls ``trace(...)``
for the few events an operator wants to see with ``-v`` (``* CONNECT 1024 -> OK 1073741825``) and
``get_logger(name, **context)`` for everything else. Only ``kuasar.ctl`` and ``kuasar.agent.main``
configure handlers.

A traced operation that has a duration and a size (a ttrpc call or stream) checks :func:`tracing`
once when it starts and, only when that is true, keeps a :class:`Span` of its bytes, messages and
time; with ``-v`` off nothing is counted or formatted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import MutableMapping
from typing import Any

TRACE_LOGGER = "kuasar.trace"
_trace_log = logging.getLogger(TRACE_LOGGER)


class ContextAdapter(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every message with ``[key=value ...]`` context, e.g. ``[conn=3 stream=7]``."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = self.extra or {}
        if not extra:
            return msg, kwargs
        context = " ".join(f"{key}={value}" for key, value in extra.items())
        return f"[{context}] {msg}", kwargs

    def child(self, **context: object) -> ContextAdapter:
        """A logger with this one's context plus ``context``."""
        merged = dict(self.extra or {})
        merged.update(context)
        return ContextAdapter(self.logger, merged)


def get_logger(name: str, **context: object) -> ContextAdapter:
    return ContextAdapter(logging.getLogger(name), context)


def trace(message: str, *args: object) -> None:
    """One line for ``kuasarctl -v`` (printed as ``* message``). Cheap when -v is off."""
    if _trace_log.isEnabledFor(logging.DEBUG):
        _trace_log.debug(message, *args)


def tracing() -> bool:
    """True when trace lines are printed (``kuasarctl -v``). Check it once per operation."""
    return _trace_log.isEnabledFor(logging.DEBUG)


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
