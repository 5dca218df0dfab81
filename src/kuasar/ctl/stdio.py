"""Asynchronous access to the local stdin/stdout file descriptors for ``kuasarctl``.

Layer contract: ``kuasar.ctl`` only; asyncio and os. Never changes a descriptor's O_NONBLOCK flag
(a terminal is shared with the user's shell): it waits for readiness with ``add_reader``/
``add_writer`` and then does one ``os.read``/``os.write``, which cannot block. Regular files, which
epoll refuses, are read and written directly.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

CHUNK = 64 * 1024


async def _wait_fd(fd: int, *, writable: bool) -> bool:
    """Wait until ``fd`` is ready; False when the loop cannot watch it (a regular file)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    add, remove = (loop.add_writer, loop.remove_writer) if writable else (loop.add_reader, loop.remove_reader)
    try:
        add(fd, wake)
    except (PermissionError, ValueError):
        return False
    try:
        await ready
    finally:
        remove(fd)
    return True


async def read_chunks(fd: int) -> AsyncIterator[bytes]:
    """Yield what ``fd`` delivers until EOF."""
    while True:
        await _wait_fd(fd, writable=False)
        try:
            data = os.read(fd, CHUNK)
        except BlockingIOError:
            continue
        except OSError:
            return  # EIO from a hung-up terminal: same as EOF
        if not data:
            return
        yield data


class FdWriter:
    """Writes all of each chunk to ``fd``, yielding to the loop while the reader is slow."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.fd, view)
            except BlockingIOError:
                await _wait_fd(self.fd, writable=True)
                continue
            view = view[written:]
