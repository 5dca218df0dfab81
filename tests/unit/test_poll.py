"""kuasar._poll.Poller reports what selectors.DefaultSelector (epoll) reports, on real pipes."""

from __future__ import annotations

import os
import selectors
import tempfile

import pytest

from kuasar._poll import READ, WRITE, Poller


def test_ready_events_match_the_selector() -> None:
    read_fd, write_fd = os.pipe()
    poller, selector = Poller(), selectors.DefaultSelector()
    try:
        poller.register(read_fd, READ)
        poller.register(write_fd, READ | WRITE)
        selector.register(read_fd, selectors.EVENT_READ)
        selector.register(write_fd, selectors.EVENT_READ | selectors.EVENT_WRITE)

        def both() -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
            mine = sorted(
                (fd, (1 if ev & READ else 0) | (2 if ev & WRITE else 0)) for fd, ev in poller.select(0)
            )
            theirs = sorted((key.fd, ev) for key, ev in selector.select(0))
            return mine, theirs

        mine, theirs = both()
        assert mine == theirs == [(write_fd, 2)]
        os.write(write_fd, b"x")
        mine, theirs = both()
        assert mine == theirs == [(read_fd, 1), (write_fd, 2)]
        poller.modify(write_fd, READ)
        selector.modify(write_fd, selectors.EVENT_READ)
        os.close(read_fd)  # the write end now has an error: reported as what it waits for
        mine, theirs = both()
        assert mine == theirs
        assert write_fd in poller and read_fd in poller
        poller.unregister(read_fd)  # closed already: quietly forgotten
        assert read_fd not in poller
    finally:
        poller.close()
        selector.close()
        os.close(write_fd)


def test_a_regular_file_is_refused_as_epoll_does() -> None:
    poller = Poller()
    with tempfile.TemporaryFile() as file, pytest.raises(PermissionError):
        poller.register(file.fileno(), READ)
    assert poller.select(0) == []
    poller.close()
