"""Dial and listen on every address form; hand over connected asyncio streams.

Layer contract: above ``kuasar.address``, ``kuasar.config``, ``kuasar.errors``; below everything
that talks a protocol. Knows sockets, never a protocol beyond the hybrid vsock handshake. Must not
import ``kuasar.ttrpc``, ``kuasar.agent``, ``kuasar.sandbox`` or ``kuasar.ctl``. Raises only
``kuasar.errors`` (``ConnectError``, ``HandshakeError``, ``ConnectionClosed``, ``TransportError``,
``UsageError``), never a bare ``OSError``.

============================  ==================================  ==================================
address                       dial                                listen
============================  ==================================  ==================================
``unix://PATH``, bare path    AF_UNIX connect                     bind (stale socket removed), chmod
``unix://@NAME``              AF_UNIX abstract connect            abstract bind
``vsock://CID:PORT``          AF_VSOCK connect                    bind (CID ``-1``/``any`` allowed)
``hvsock://PATH:PORT``        AF_UNIX + ``CONNECT``/``OK``        ``UsageError`` (that is a VMM's job:
                                                                  :mod:`.hvsock_server`)
============================  ==================================  ==================================
"""

from __future__ import annotations

import sys

from kuasar.address import Address, HvsockAddress, UnixAddress, VsockAddress
from kuasar.config import DEFAULT_LIMITS, Limits
from kuasar.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio
    from collections.abc import Awaitable, Callable
    from types import ModuleType

    #: A connection handler, as ``asyncio.start_server`` takes it.
    Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

__all__ = ["blocking", "dial", "hvsock", "hvsock_server", "listen", "unix", "vsock"]
#: Submodules loaded on first use, so ``kuasar.transport.blocking`` (and the sans-IO handshake)
#: import no asyncio.
_LAZY = ("blocking", "hvsock", "hvsock_server", "unix", "vsock")


async def dial(
    address: Address,
    *,
    limits: Limits = DEFAULT_LIMITS,
    connect_timeout: float | None = None,
    retry: bool = True,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to ``address`` and return ``(reader, writer)``, handshake done.

    Args:
        address: any parsed address (``kuasar.address.parse_address``).
        limits: bounds; ``limits.connect_timeout`` is the default budget.
        connect_timeout: total budget in seconds (``None``: ``limits.connect_timeout``).
        retry: for hybrid vsock, retry EOF/reset before ``OK`` with backoff inside the budget;
            ``False`` makes a refusal raise at once.

    Raises:
        ConnectError: socket missing, refused, not permitted, or not connected in time.
        HandshakeError: the hybrid vsock handshake failed (names the socket, port and reply).
        UsageError: dialing ``vsock://-1:PORT`` (CID any).
    """
    from kuasar.transport import hvsock, unix, vsock

    timeout = limits.connect_timeout if connect_timeout is None else connect_timeout
    if isinstance(address, HvsockAddress):
        return await hvsock.dial(address, limits=limits, connect_timeout=timeout, retry=retry)
    if isinstance(address, UnixAddress):
        return await unix.dial(address, timeout)
    if isinstance(address, VsockAddress):
        return await vsock.dial(address, timeout)
    raise UsageError(f"cannot dial {address!r}: unknown address type")


async def listen(
    address: Address,
    handler: Handler,
    *,
    limits: Limits = DEFAULT_LIMITS,
    mode: int | None = None,
) -> asyncio.AbstractServer:
    """Serve ``handler`` for every connection accepted on ``address``.

    Args:
        address: a UNIX (path or abstract) or vsock address.
        handler: called with ``(reader, writer)`` per connection, in its own task.
        limits: accepted for symmetry with :func:`dial` (no limit applies to accepting).
        mode: for a UNIX path, the permission bits of the socket file (e.g. ``0o600``).

    Returns:
        The running asyncio server (``close()`` then ``await wait_closed()``).

    Raises:
        UsageError: ``hvsock://`` (only a VMM listens there; see :mod:`.hvsock_server`).
        TransportError: the address cannot be bound (in use, not permitted, no AF_VSOCK).
    """
    from kuasar.transport import unix, vsock

    del limits
    if isinstance(address, HvsockAddress):
        raise UsageError(
            f"cannot listen on {address}: hybrid vsock is served by a VMM",
            hints=["listen on unix://PATH or vsock://-1:PORT; kuasar.transport.hvsock_server plays the VMM"],
        )
    if isinstance(address, UnixAddress):
        return await unix.listen(address, handler, mode=mode)
    if isinstance(address, VsockAddress):
        return await vsock.listen(address, handler)
    raise UsageError(f"cannot listen on {address!r}: unknown address type")


def __getattr__(name: str) -> ModuleType:
    if name in _LAZY:
        __import__(f"kuasar.transport.{name}")
        return sys.modules[f"kuasar.transport.{name}"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
