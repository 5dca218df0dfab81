"""Asynchronous access to the local stdin/stdout file descriptors for ``kuasarctl``.

Layer contract: ``kuasar.ctl`` only; asyncio and os. Never changes a descriptor's O_NONBLOCK flag
(a terminal is shared with the user's shell): it waits for readiness with ``add_reader``/
``add_writer`` and then does one ``os.read``/``os.write``, which cannot block. Regular files, which
epoll refuses, are read and written directly.
"""

from __future__ import annotations

from kuasar import _fdio as fdio

#: Yield what a descriptor (stdin) delivers until EOF; a terminal that hung up is EOF too.
read_chunks = fdio.read_chunks


class FdWriter:
    """Writes all of each chunk to ``fd``, yielding to the loop while the reader is slow."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    async def write(self, data: bytes) -> None:
        await fdio.write_all(self.fd, data)
