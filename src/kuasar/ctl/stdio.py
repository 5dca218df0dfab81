"""Asynchronous access to the local stdin/stdout file descriptors for ``kuasarctl``.

Layer contract: ``kuasar.ctl`` only; asyncio and os. Never changes a descriptor's O_NONBLOCK flag
(a terminal is shared with the user's shell): it waits for readiness with ``add_reader``/
``add_writer`` and then does one ``os.read``/``os.write``, which cannot block. Regular files, which
epoll refuses, are read and written directly.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

from kuasar._fdio import wait_fd, write_all

CHUNK = 64 * 1024


async def read_chunks(fd: int) -> AsyncIterator[bytes]:
    """Yield what ``fd`` delivers until EOF."""
    while True:
        await wait_fd(fd)
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
        await write_all(self.fd, data)
