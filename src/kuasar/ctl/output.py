"""What ``kuasarctl`` writes to stderr: one-line errors with hints, and ``-v`` trace lines.

Layer contract: top layer (``kuasar.ctl`` only); stdlib only.
"""

from __future__ import annotations

import logging
import sys

from kuasar._log import TRACE_LOGGER
from kuasar.errors import KuasarError


def print_error(exc: KuasarError) -> None:
    """``Error: <message>`` then each hint on its own line, as the original tool printed them."""
    lines = [f"Error: {exc}", *exc.hints]
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()


class _TraceFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if record.name == TRACE_LOGGER:
            return f"* {record.getMessage()}"
        return f"{record.levelname.lower()}: {record.name}: {record.getMessage()}"


def configure_logging(verbosity: int) -> None:
    """``-v`` prints trace spans (``* CONNECT 1025 -> OK ...``), ``-vv`` the debug log too."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_TraceFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbosity >= 2 else logging.WARNING)
    logging.getLogger(TRACE_LOGGER).setLevel(logging.DEBUG if verbosity >= 1 else logging.WARNING)
