"""Logging with context; the trace spans of ``kuasarctl -v`` live in :mod:`kuasar._tracing` and are
re-exported here.

Layer contract: bottom layer; stdlib ``logging`` and :mod:`kuasar._tracing`. Library code calls
``get_logger(name, **context)``; only ``kuasar.ctl`` and ``kuasar.agent.main`` configure handlers.
Paths that must not pay for ``logging`` (``kuasarctl exec``) import :mod:`kuasar._tracing` alone.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

from kuasar._tracing import TRACE_LOGGER, Span, trace, tracing

__all__ = ["TRACE_LOGGER", "ContextAdapter", "Span", "get_logger", "trace", "tracing"]


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
