"""An ``epoll`` for the blocking drivers' loops, with ``selectors.EpollSelector``'s semantics (what
``selectors.DefaultSelector`` is on Linux) on plain fds, without importing ``selectors``.

Layer contract: leaf; stdlib ``select`` only (``kuasarctl exec``'s start-up path).
:meth:`Poller.register` refuses a regular file with ``PermissionError``, as epoll does;
:meth:`Poller.select` reports, per ready fd, :data:`READ` and :data:`WRITE` as the selector does
(an error or hang-up counts as both), masked by what the fd was registered for.
"""

from __future__ import annotations

import select

READ, WRITE = select.EPOLLIN, select.EPOLLOUT


class Poller:
    """The fds a loop waits on, and for what (:data:`READ`, :data:`WRITE` or both)."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._events: dict[int, int] = {}

    def __contains__(self, fd: int) -> bool:
        return fd in self._events

    def register(self, fd: int, events: int) -> None:
        self._epoll.register(fd, events)
        self._events[fd] = events

    def modify(self, fd: int, events: int) -> None:
        if self._events[fd] != events:
            self._epoll.modify(fd, events)
            self._events[fd] = events

    def unregister(self, fd: int) -> None:
        del self._events[fd]
        try:  # noqa: SIM105 - contextlib is not on the start-up path
            self._epoll.unregister(fd)
        except OSError:  # already closed: nothing to wait on (as selectors)
            pass

    def select(self, timeout: float | None) -> list[tuple[int, int]]:
        """Wait up to ``timeout`` seconds (``None``: for ever); the ready ``(fd, events)``."""
        wait = -1.0 if timeout is None else -(-timeout * 1e3 // 1) * 1e-3  # whole ms, rounded up
        ready = []
        for fd, event in self._epoll.poll(wait, max(len(self._events), 1)):
            events = (WRITE if event & ~READ else 0) | (READ if event & ~WRITE else 0)
            wanted = self._events.get(fd)
            if wanted is not None:
                ready.append((fd, events & wanted))
        return ready

    def close(self) -> None:
        self._epoll.close()
