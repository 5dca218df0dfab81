"""Blocking dial for one-shot CLI paths: a connected socket, handshake done, no asyncio.

Layer contract: the blocking driver beside the asyncio one (:mod:`kuasar.transport.hvsock`,
:mod:`kuasar.transport.unix`, :mod:`kuasar.transport.vsock`); the hybrid vsock rules (reply reader,
lines, retry schedule, error texts) come from the sans-IO :mod:`kuasar.transport._handshake`, and
``OSError`` maps through :mod:`kuasar.transport._errors`, so both drivers fail with the same errors.
Imports no asyncio (``kuasarctl exec``'s fast path), and not even ``socket``: its sockets are the
C ``_socket.socket`` that ``socket.socket`` wraps (the same methods; the ``socket`` module's enum
conversions cost about 4 ms of start-up). Callers must not need ``socket.socket`` extras
(``makefile``, ``with``, enum-valued ``family``).
"""

from __future__ import annotations

import _socket
import time

from kuasar.address import VMADDR_CID_ANY, Address, HvsockAddress, UnixAddress, VsockAddress
from kuasar.config import DEFAULT_LIMITS, Limits
from kuasar.errors import ConnectError, UsageError
from kuasar.transport._errors import map_exceptions
from kuasar.transport._handshake import (
    Backoff,
    ClosedBeforeOK,
    HandshakeReader,
    closed_error,
    format_connect,
    reply_byte,
    reply_errors,
    silent_error,
    trace_refused,
    trace_reply,
)


def dial(
    address: Address,
    *,
    limits: Limits = DEFAULT_LIMITS,
    connect_timeout: float | None = None,
    retry: bool = True,
) -> _socket.socket:
    """Connect to ``address`` and return a blocking socket (no timeout set), handshake done.

    Same contract as :func:`kuasar.transport.dial`: nothing past the ``OK`` line is consumed.

    Raises:
        ConnectError, HandshakeError, UsageError: as the asyncio ``dial``.
    """
    budget = limits.connect_timeout if connect_timeout is None else connect_timeout
    if isinstance(address, HvsockAddress):
        return _dial_hvsock(address, limits, budget, retry)
    if isinstance(address, UnixAddress):
        return _connect(
            _socket.AF_UNIX,
            address.sockaddr,
            "@" + address.path if address.abstract else address.path,
            budget,
        )
    if isinstance(address, VsockAddress):
        if address.cid == VMADDR_CID_ANY:
            raise UsageError(f"cannot dial {address}: CID -1/any only makes sense to listen")
        family = getattr(_socket, "AF_VSOCK", None)
        if family is None:
            raise ConnectError(f"cannot connect on {address}: this Python has no AF_VSOCK support")
        return _connect(family, (address.cid, address.port), str(address), budget)
    raise UsageError(f"cannot dial {address!r}: unknown address type")


def _connect(family: int, sockaddr: object, target: str, budget: float) -> _socket.socket:
    with map_exceptions(target):
        sock = _socket.socket(family, _socket.SOCK_STREAM)
    try:
        with map_exceptions(target):
            sock.settimeout(max(budget, 0.001))
            try:
                sock.connect(sockaddr)  # type: ignore[arg-type]
            except TimeoutError:
                raise ConnectError(f"timed out connecting to {target} after {budget:g} s") from None
            sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    return sock


def _dial_hvsock(address: HvsockAddress, limits: Limits, budget: float, retry: bool) -> _socket.socket:
    deadline = time.monotonic() + budget
    backoff = Backoff(deadline)
    while True:
        sock = _connect(_socket.AF_UNIX, address.path, address.path, max(deadline - time.monotonic(), 0.001))
        reply = HandshakeReader(limits.handshake_line)
        try:
            host_port = _handshake(sock, address, reply, deadline)
        except ClosedBeforeOK as exc:
            sock.close()
            trace_refused(address, exc.reason)
            delay = backoff.next_delay(time.monotonic(), retry=retry)
            if delay is None:
                raise closed_error(address, exc.reason, exc.received, backoff.attempts, budget) from None
            time.sleep(delay)
            continue
        except TimeoutError:
            sock.close()
            raise silent_error(address, reply.received, budget) from None
        except BaseException:
            sock.close()
            raise
        trace_reply(address, host_port)
        sock.settimeout(None)
        return sock


def _handshake(
    sock: _socket.socket, address: HvsockAddress, reader: HandshakeReader, deadline: float
) -> int | None:
    """Send CONNECT and read the reply line, bounded by ``deadline`` (``TimeoutError``): each read
    peeks at what came (``MSG_PEEK``) and takes it only up to the line's end, so no byte after the
    ``OK`` line is consumed (as reading byte by byte, in a recv or two instead of one per byte)."""
    with reply_errors(address, reader):
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        sock.sendall(format_connect(address.port))
        while True:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            room = max(reader.limit - len(reader.received), 1)  # one past the limit: too long
            peeked = sock.recv(room, _socket.MSG_PEEK)
            end = peeked.find(b"\n")
            taken = sock.recv(len(peeked) if end < 0 else end + 1) if peeked else b""
            done, host_port = reply_byte(reader, taken)
            if done:
                return host_port
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises
