"""Reading process states from ``/proc`` (Linux), for the agent's process bookkeeping.

Layer contract: agent side; os only, read-only. One parser for ``/proc/PID/stat``: its second field
(the command name) may contain spaces and parentheses, so fields are counted from the last ``)``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ProcStat:
    pid: int
    state: str  # R, S, D, Z, T, ...
    ppid: int
    pgrp: int
    session: int


def processes() -> Iterator[ProcStat]:
    """Every process visible in ``/proc`` (those that vanish while we read are skipped)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as file:
                stat = file.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) >= 4:
            yield ProcStat(int(entry), fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[3]))
