"""Hybrid vsock (Cloud Hypervisor / Firecracker): the ``CONNECT``/``OK`` handshake, client side.

Layer contract: the asyncio driver (:func:`dial`) over the sans-IO half in
:mod:`kuasar.transport._handshake` (:class:`HandshakeReader`, :func:`parse_ok_line`,
:func:`parse_connect_line`, :func:`format_connect`, the retry schedule and the error texts; re-exported
here), which the blocking driver and :mod:`kuasar.transport.hvsock_server` share. Imports
``kuasar.address``, ``kuasar.config``, ``kuasar.errors``, ``kuasar._log`` and ``kuasar.transport.unix``.

Wire (protocol-facts.md §0): the host writes ``CONNECT <port>\\n``; the VMM answers
``OK <host_port>\\n`` once the guest accepted, and from then on the socket is a byte pipe to the
guest. A refusal is a close (or reset) without any reply, which also happens while nothing in the
guest listens yet, so :func:`dial` retries that with backoff inside its budget. Guest bytes may
follow the ``OK`` line in the same segment: the reply is read one byte at a time and nothing after
``\\n`` is consumed, so the caller's ``StreamReader`` gets them all.
"""

from __future__ import annotations

import asyncio
import socket

from kuasar.address import HvsockAddress, UnixAddress
from kuasar.config import DEFAULT_LIMITS, Limits
from kuasar.transport import unix
from kuasar.transport._errors import map_exceptions
from kuasar.transport._handshake import (
    Backoff,
    ClosedBeforeOK,
    HandshakeReader,
    closed_error,
    describe,
    format_connect,
    parse_connect_line,
    parse_ok_line,
    reply_byte,
    reply_errors,
    silent_error,
    trace_refused,
    trace_reply,
)

__all__ = ["HandshakeReader", "describe", "dial", "format_connect", "parse_connect_line", "parse_ok_line"]


async def _handshake(sock: socket.socket, address: HvsockAddress, reader: HandshakeReader) -> int | None:
    """Send CONNECT and read the reply into ``reader`` byte by byte on a raw non-blocking socket."""
    loop = asyncio.get_running_loop()
    with reply_errors(address, reader):
        await loop.sock_sendall(sock, format_connect(address.port))
        while True:
            done, host_port = reply_byte(reader, await loop.sock_recv(sock, 1))
            if done:
                return host_port
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


async def dial(
    address: HvsockAddress,
    *,
    limits: Limits = DEFAULT_LIMITS,
    connect_timeout: float | None = None,
    retry: bool = True,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to the VMM's UNIX socket, do the ``CONNECT``/``OK`` handshake, return the streams.

    Args:
        address: the VMM socket and the guest vsock port.
        limits: ``handshake_line`` bounds the reply; ``connect_timeout`` is the default budget.
        connect_timeout: total budget in seconds, retries included (``None``: the limits').
        retry: retry EOF/reset before ``OK`` (the guest is not listening yet) with backoff,
            10 ms doubling to 200 ms, until the budget runs out. ``False``: fail at once.

    Returns:
        ``(reader, writer)`` on the guest connection; the reader still holds every byte the
        guest sent right after the ``OK`` line.

    Raises:
        ConnectError: the socket is missing, refused or not permitted (never retried).
        HandshakeError: the VMM closed before ``OK`` (after the retries), answered garbage or an
            oversize line, or said nothing within the budget. The message names the socket, the
            port and what was received.
    """
    budget = limits.connect_timeout if connect_timeout is None else connect_timeout
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    unix_address = UnixAddress(address.path)
    backoff = Backoff(deadline)
    while True:
        remaining = max(deadline - loop.time(), 0.001)
        sock = await unix.connect_socket(unix_address, remaining)
        reply = HandshakeReader(limits.handshake_line)
        try:
            async with asyncio.timeout_at(deadline) as timer:
                host_port = await _handshake(sock, address, reply)
        except ClosedBeforeOK as exc:
            sock.close()
            trace_refused(address, exc.reason)
            delay = backoff.next_delay(loop.time(), retry=retry)
            if delay is None:
                raise closed_error(address, exc.reason, exc.received, backoff.attempts, budget) from None
            await asyncio.sleep(delay)
            continue
        except TimeoutError:
            sock.close()
            if not timer.expired():
                raise
            raise silent_error(address, reply.received, budget) from None
        except BaseException:
            sock.close()
            raise
        trace_reply(address, host_port)
        with map_exceptions(address.path):
            return await unix.open_streams(sock, address.path)
