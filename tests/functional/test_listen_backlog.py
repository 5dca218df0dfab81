"""The listeners' accept queue holds a burst: a guest's vsock answers RST (the host sees "nothing
listens") once it is full, so ``kuasar.transport.listen`` asks for a large backlog."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import pytest

from kuasar import transport
from kuasar.address import UnixAddress

BURST = 600  # well over the old backlog of 128, under net.core.somaxconn's default of 4096


def somaxconn() -> int:
    try:
        with open("/proc/sys/net/core/somaxconn", encoding="ascii") as file:
            return int(file.read())
    except (OSError, ValueError):
        return socket.SOMAXCONN


@pytest.mark.asyncio
@pytest.mark.skipif(somaxconn() <= BURST, reason="net.core.somaxconn caps every backlog below the burst")
async def test_a_burst_of_connects_fits_while_nothing_is_accepted(tmp_path: Path) -> None:
    accepted = 0

    async def handler(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        writer.close()

    server = await transport.listen(UnixAddress(str(tmp_path / "api.sock")), handler)
    clients: list[socket.socket] = []
    try:
        # No await in this loop: the event loop accepts nothing until every connect is queued.
        for _ in range(BURST):
            client = socket.socket(socket.AF_UNIX)
            clients.append(client)
            client.setblocking(False)
            client.connect(str(tmp_path / "api.sock"))  # BlockingIOError once the queue is full
        async with asyncio.timeout(20):
            while accepted < BURST:
                await asyncio.sleep(0.01)
    finally:
        for client in clients:
            with contextlib.suppress(OSError):
                client.close()
        server.close()
        await server.wait_closed()
