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
    flags: int = 0  # the kernel's PF_* bits (PF_KTHREAD marks a kernel thread)


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
        if len(fields) >= 7:
            state, ppid, pgrp, session, flags = fields[0], fields[1], fields[2], fields[3], fields[6]
            yield ProcStat(int(entry), state.decode(), int(ppid), int(pgrp), int(session), int(flags))
