"""Raw file descriptors: waiting on them from asyncio without touching their O_NONBLOCK flag, and
writing all of a buffer, from a coroutine or from a blocking driver.

Layer contract: bottom layer; os only at import (asyncio is imported by the coroutines that use it,
so the blocking drivers of ``kuasarctl exec`` can use :func:`write_all_blocking` without loading
it). Used by the agent's PTY pumps and process pipes, the blocking console and API drivers of
``kuasarctl exec`` (the user's terminal, which is shared with their shell), and the tar and file
copy code.
"""

from __future__ import annotations

import errno
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import AsyncIterator


async def wait_fd(fd: int, *, writable: bool = False) -> bool:
    """Wait until ``fd`` is readable (or writable); False when the loop cannot watch it (a regular
    file, which is always ready)."""
    import asyncio

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


def write_all_blocking(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to a blocking ``fd`` (``os.write`` may take part of it)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd``, waiting (not spinning) while it would block."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            await wait_fd(fd, writable=True)


async def read_chunks(fd: int, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    """Yield what ``fd`` delivers until EOF. EIO counts as EOF: it is what a PTY master reads once
    every slave fd is closed, and what a hung-up terminal gives."""
    while True:
        await wait_fd(fd)
        try:
            data = os.read(fd, size)
        except BlockingIOError:
            continue
        except OSError as exc:
            if exc.errno == errno.EIO:
                return
            raise
        if not data:
            return
        yield data
