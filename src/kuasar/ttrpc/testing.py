"""Test harness: a real :class:`Client` talking to a real :class:`Server` over a socketpair.

Layer contract: ``kuasar.ttrpc`` plus stdlib ``socket``; public so services are tested the same way
the library tests itself (no mocks, real frames over a real socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterable

from kuasar.config import DEFAULT_LIMITS, Limits
from kuasar.ttrpc.client import Client
from kuasar.ttrpc.server import Server
from kuasar.ttrpc.service import HandlerMap


@contextlib.asynccontextmanager
async def client_server_pair(
    handlers: HandlerMap | Iterable[HandlerMap], *, limits: Limits = DEFAULT_LIMITS
) -> AsyncIterator[tuple[Client, Server]]:
    """Yield ``(client, server)`` connected through ``socket.socketpair()``.

    On exit the client is closed and the server shut down (graceful, bounded by
    ``limits.shutdown_grace``); both sockets are closed.
    """
    server = Server(handlers, limits=limits)
    left, right = socket.socketpair()
    try:
        server_reader, server_writer = await asyncio.open_connection(sock=left)
    except BaseException:
        left.close()
        right.close()
        raise
    serving = asyncio.get_running_loop().create_task(server.handle_connection(server_reader, server_writer))
    try:
        client_reader, client_writer = await asyncio.open_connection(sock=right)
    except BaseException:
        right.close()
        server.close()
        await server.wait_closed()
        await serving
        raise
    client = Client(client_reader, client_writer, limits=limits)
    try:
        yield client, server
    finally:
        client.close()
        await client.wait_closed()
        server.close()
        await server.wait_closed()
        await serving
