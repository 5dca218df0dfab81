"""Reaping orphans when the agent is PID 1 (or a child subreaper), without stealing exit statuses.

Layer contract: agent side; os and asyncio, ``kuasar.config`` for its scan delay. The agent's own
children are reaped by whoever started them (a ``Process``, asyncio's child watcher, the container
manager); orphans re-parented to us are not. On each SIGCHLD (debounced) we list our zombie
children from ``/proc`` and reap only those that are not claimed by an owner and were already
zombies at the previous scan — an owner's ``waitpid`` wins any race, so a status is never taken
from under it. ``waitpid(-1)`` is never called.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable

from kuasar._log import get_logger
from kuasar.agent.procfs import processes
from kuasar.config import DEFAULT_LIMITS, Limits

log = get_logger("kuasar.agent.reaper")


def zombie_children(parent: int) -> set[int]:
    """PIDs of ``parent``'s children that are zombies."""
    return {proc.pid for proc in processes() if proc.ppid == parent and proc.state == "Z"}


class OrphanReaper:
    """Reaps orphaned zombies; ``is_owned(pid)`` tells which children someone else will wait for.

    Args:
        is_owned: True for a child whose owner reaps it.
        limits: ``orphan_scan_delay`` is the debounce after SIGCHLD.
    """

    def __init__(
        self, is_owned: Callable[[int], bool] = lambda _pid: False, *, limits: Limits = DEFAULT_LIMITS
    ) -> None:
        self._is_owned = is_owned
        self._delay = limits.orphan_scan_delay
        self._seen: set[int] = set()
        self._scheduled: asyncio.TimerHandle | None = None
        self.reaped = 0

    def start(self) -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGCHLD, self._schedule)

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGCHLD)
        if self._scheduled is not None:
            self._scheduled.cancel()

    def _schedule(self) -> None:
        if self._scheduled is None:
            self._scheduled = asyncio.get_running_loop().call_later(self._delay, self.scan)

    def scan(self) -> None:
        self._scheduled = None
        zombies = {pid for pid in zombie_children(os.getpid()) if not self._is_owned(pid)}
        for pid in zombies & self._seen:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
                self.reaped += 1
                log.debug("reaped orphan %d", pid)
        self._seen = zombies - self._seen
        if self._seen:
            self._schedule()
