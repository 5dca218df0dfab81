"""AF_UNIX stream sockets, by path or by abstract name: dial and listen.

Layer contract: knows ``socket``/``asyncio`` and ``kuasar.address``, ``kuasar.errors``; maps every
``OSError`` through :mod:`kuasar.transport._errors`. Nothing about hybrid vsock here (that is
:mod:`kuasar.transport.hvsock`, which uses :func:`connect_socket` for its raw socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
from collections.abc import Awaitable, Callable

from kuasar.address import UnixAddress
from kuasar.config import LISTEN_BACKLOG
from kuasar.errors import ConnectError, TransportError
from kuasar.transport._errors import map_exceptions

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def target_name(address: UnixAddress) -> str:
    """How errors name the socket: its path, or ``@name`` for an abstract socket."""
    return "@" + address.path if address.abstract else address.path


async def connect_socket(address: UnixAddress, connect_timeout: float) -> socket.socket:
    """A connected, non-blocking ``AF_UNIX`` socket (the caller owns and must close it).

    Raises:
        ConnectError: missing, refused, not permitted, or not connected within ``connect_timeout``.
    """
    target = target_name(address)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        with map_exceptions(target):
            async with asyncio.timeout(connect_timeout) as deadline:
                try:
                    await loop.sock_connect(sock, address.sockaddr)
                except asyncio.CancelledError:
                    if deadline.expired():
                        raise ConnectError(
                            f"timed out connecting to {target} after {connect_timeout:g} s"
                        ) from None
                    raise
    except BaseException:
        sock.close()
        raise
    return sock


async def open_streams(sock: socket.socket, target: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Wrap a connected ``AF_UNIX`` socket in asyncio streams (taking ownership of it)."""
    try:
        with map_exceptions(target):
            return await asyncio.open_unix_connection(sock=sock)
    except BaseException:
        sock.close()
        raise


async def dial(
    address: UnixAddress, connect_timeout: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to a UNIX socket and return its streams.

    Raises:
        ConnectError: see :func:`connect_socket`.
    """
    sock = await connect_socket(address, connect_timeout)
    return await open_streams(sock, target_name(address))


def _remove_stale(path: str) -> None:
    """Unlink ``path`` if it is a socket nobody accepts on; refuse to touch anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise TransportError(f"cannot listen on {path}: it exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.setblocking(False)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        pass  # stale: nobody listens
    except BlockingIOError:
        raise TransportError(f"cannot listen on {path}: another server is listening there") from None
    else:
        raise TransportError(f"cannot listen on {path}: another server is listening there")
    finally:
        probe.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class SocketFile:
    """The socket file a UNIX listener bound, remembered so that it can be removed at shutdown.

    :meth:`remove` unlinks the path only while it is still *this* socket (same device and inode):
    a file someone else created there since (a successor's socket) is left alone.

    Args:
        path: the bound socket's path.

    Raises:
        OSError: ``path`` cannot be examined.
    """

    def __init__(self, path: str) -> None:
        st = os.lstat(path)
        self.path = path
        self._identity = (st.st_dev, st.st_ino)

    def remove(self) -> bool:
        """Unlink the socket file if it is still ours; True when it was removed."""
        try:
            st = os.lstat(self.path)
            if not stat.S_ISSOCK(st.st_mode) or (st.st_dev, st.st_ino) != self._identity:
                return False
            os.unlink(self.path)
        except FileNotFoundError:
            return False
        return True


async def listen(address: UnixAddress, handler: Handler, *, mode: int | None = None) -> asyncio.Server:
    """Serve ``handler`` on a UNIX socket.

    A stale socket file at the path (one nobody accepts on) is removed first; a live one, or a
    non-socket file, is an error. ``mode`` is applied to the socket file right after ``bind``
    (put sockets that need privacy in a private directory: there is a short window before chmod).
    The file stays after the server closes: remove it with a :class:`SocketFile` taken right
    after ``listen``.

    Raises:
        TransportError: the path cannot be bound.
    """
    target = target_name(address)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with map_exceptions(target, action="listen"):
            if not address.abstract:
                _remove_stale(address.path)
            sock.bind(address.sockaddr)
            if mode is not None and not address.abstract:
                os.chmod(address.path, mode)
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
            return await asyncio.start_unix_server(handler, sock=sock, backlog=LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        raise
