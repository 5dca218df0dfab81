"""The time format of container logs: RFC 3339 in UTC with nanoseconds, as docker's json-file writes it.

Layer contract: neutral bottom-layer module shared by the guest agent (its log store writes and
reads these stamps) and the host CLI (``kuasarctl logs --timestamps`` prints them); stdlib only,
imports nothing from kuasar.
"""

from __future__ import annotations

import calendar
import time


def format_time(timestamp_ns: int) -> str:
    """``2026-11-22T10:00:00.123456789Z`` for a unix time in nanoseconds."""
    seconds, nanos = divmod(timestamp_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


def parse_time(text: str) -> int:
    """Inverse of :func:`format_time` (also accepts fewer fraction digits and no fraction).

    Raises:
        ValueError: ``text`` is not in this format.
    """
    head, _, frac = text.rstrip("Z").partition(".")
    seconds = calendar.timegm(time.strptime(head, "%Y-%m-%dT%H:%M:%S"))
    nanos = int((frac + "000000000")[:9]) if frac else 0
    return seconds * 1_000_000_000 + nanos


__all__ = ["format_time", "parse_time"]
