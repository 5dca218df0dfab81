"""AF_VSOCK stream sockets: dial ``vsock://CID:PORT`` and listen on ``vsock://-1:PORT``.

Layer contract: knows ``socket``/``asyncio`` and ``kuasar.address``, ``kuasar.errors``; maps every
``OSError`` through :mod:`kuasar.transport._errors`. Used in a guest (the agent listens on CID any)
and on a host with vhost-vsock (QEMU, StratoVirt), or ``vsock://1:PORT`` loopback.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

from kuasar.address import VMADDR_CID_ANY, VsockAddress
from kuasar.config import LISTEN_BACKLOG
from kuasar.errors import ConnectError, UsageError
from kuasar.transport._errors import map_exceptions

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _new_socket(target: str, action: str) -> socket.socket:
    family = getattr(socket, "AF_VSOCK", None)
    if family is None:
        raise ConnectError(f"cannot {action} on {target}: this Python has no AF_VSOCK support")
    with map_exceptions(target, action=action):
        return socket.socket(family, socket.SOCK_STREAM)


async def dial(
    address: VsockAddress, connect_timeout: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to an AF_VSOCK port and return its streams.

    Raises:
        UsageError: the CID is "any" (only meaningful to listen).
        ConnectError: no vsock support, refused, reset, or not connected within ``connect_timeout``.
    """
    target = str(address)
    if address.cid == VMADDR_CID_ANY:
        raise UsageError(f"cannot dial {target}: CID -1/any only makes sense to listen")
    sock = _new_socket(target, "connect")
    try:
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        with map_exceptions(target):
            async with asyncio.timeout(connect_timeout) as deadline:
                try:
                    await loop.sock_connect(sock, (address.cid, address.port))
                except asyncio.CancelledError:
                    if deadline.expired():
                        raise ConnectError(
                            f"timed out connecting to {target} after {connect_timeout:g} s"
                        ) from None
                    raise
            return await asyncio.open_connection(sock=sock)
    except BaseException:
        sock.close()
        raise


async def listen(address: VsockAddress, handler: Handler) -> asyncio.Server:
    """Serve ``handler`` on an AF_VSOCK port (CID any binds every CID, like vmm-task's ``bind_vsock``).

    Raises:
        ConnectError: no vsock support in this kernel or Python.
        TransportError: the port cannot be bound.
    """
    target = str(address)
    sock = _new_socket(target, "listen")
    try:
        with map_exceptions(target, action="listen"):
            sock.bind((address.cid, address.port))
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
            return await asyncio.start_server(handler, sock=sock, backlog=LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        raise
