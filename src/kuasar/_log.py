"""Logging with context, and trace spans for ``kuasarctl -v``.

Layer contract: bottom layer; stdlib ``logging`` only. Library code calls ``trace(...)`` for the
few events an operator wants to see with ``-v`` (``* CONNECT 1024 -> OK 1073741825``) and
``get_logger(name, **context)`` for everything else. Only ``kuasar.ctl`` and ``kuasar.agent.main``
configure handlers.
"""

from __future__ import annotations

import logging
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
