"""Hybrid vsock (Cloud Hypervisor / Firecracker): the ``CONNECT``/``OK`` handshake, client side.

Layer contract: the sans-IO half (:class:`HandshakeReader`, :func:`parse_ok_line`,
:func:`parse_connect_line`, :func:`format_connect`) knows bytes only and is shared with
:mod:`kuasar.transport.hvsock_server`; the IO half (:func:`dial`) knows ``asyncio`` sockets and
:mod:`kuasar.transport.unix`. Imports ``kuasar.address``, ``kuasar.config``, ``kuasar.errors``,
``kuasar._log`` only.

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

from kuasar import _log
from kuasar.address import HvsockAddress, UnixAddress
from kuasar.config import AGENT_PORT, CONSOLE_PORT, DEFAULT_LIMITS, Limits
from kuasar.errors import REASON_NO_LISTENER, REASON_SILENT, HandshakeError
from kuasar.transport import unix
from kuasar.transport._errors import map_exceptions

_MAX_U32 = 0xFFFFFFFF
_CONNECT_PREFIXES = (b"CONNECT ", b"connect ")
_FIRST_BACKOFF = 0.01
_MAX_BACKOFF = 0.2


# --------------------------------------------------------------------------- sans-IO


class HandshakeReader:
    """Accumulates one handshake line, never past its ``\\n``, bounded by ``limit`` bytes.

    ``feed`` may be given any chunk; it consumes up to and including the first ``\\n`` and hands
    back the rest untouched, so payload that follows the line is never lost.

    Args:
        limit: the longest line accepted, newline included (``Limits.handshake_line``).
    """

    def __init__(self, limit: int = DEFAULT_LIMITS.handshake_line) -> None:
        self._limit = limit
        self._buf = bytearray()
        self._line: bytes | None = None

    @property
    def received(self) -> bytes:
        """Every byte of the line consumed so far (for error messages)."""
        return bytes(self._buf)

    @property
    def line(self) -> bytes | None:
        """The complete line without its ``\\n``, once it has arrived."""
        return self._line

    def feed(self, data: bytes) -> tuple[bytes | None, bytes]:
        """Consume bytes of the line.

        Returns:
            ``(line, rest)``: the line without ``\\n`` (``None`` while incomplete) and the bytes
            of ``data`` after it, not consumed.

        Raises:
            HandshakeError: the line is longer than the limit (checked before buffering), or
                ``feed`` was called again after the line completed.
        """
        if self._line is not None:
            raise HandshakeError("handshake line already complete")
        end = data.find(b"\n")
        take = data if end < 0 else data[: end + 1]
        if len(self._buf) + len(take) > self._limit:
            room = self._limit - len(self._buf)
            self._buf += take[:room]
            raise HandshakeError(f"line longer than {self._limit} bytes: {describe(self.received)}...")
        self._buf += take
        if end < 0:
            return None, b""
        self._line = bytes(self._buf[:-1])
        return self._line, data[end + 1 :]


def describe(data: bytes) -> str:
    """``data`` as a short, printable Python bytes literal (or ``nothing``)."""
    return repr(data) if data else "nothing"


def format_connect(port: int) -> bytes:
    """The client's request line: ``CONNECT <port>\\n`` (upper case, as CH and Firecracker expect)."""
    if not 0 <= port <= _MAX_U32:
        raise HandshakeError(f"port {port} is not a u32")
    return b"CONNECT %d\n" % port


def _parse_u32(text: bytes) -> int | None:
    if not text or not text.isdigit() or len(text) > 10:
        return None
    value = int(text)
    return value if value <= _MAX_U32 else None


def parse_ok_line(line: bytes) -> int | None:
    """Parse the VMM's reply line (with or without its ``\\n``).

    Returns:
        ``None`` for a bare ``OK`` (Firecracker-style), the host port for ``OK <n>``.

    Raises:
        HandshakeError: anything else, naming what was received.
    """
    text = line.removesuffix(b"\n").removesuffix(b"\r")
    if text == b"OK":
        return None
    if text.startswith(b"OK "):
        port = _parse_u32(text[3:].strip())
        if port is not None:
            return port
    raise HandshakeError(f"unexpected reply {describe(line)} (expected OK or OK <port>)")


def parse_connect_line(line: bytes) -> int:
    """Parse a client's request line as Cloud Hypervisor's muxer does (server side).

    Exactly ``CONNECT `` or ``connect `` (mixed case is rejected), then the port, trimmed of
    whitespace, as a decimal u32.

    Raises:
        HandshakeError: a malformed line.
    """
    text = line.removesuffix(b"\n")
    for prefix in _CONNECT_PREFIXES:
        if text.startswith(prefix):
            port = _parse_u32(text[len(prefix) :].strip())
            if port is not None:
                return port
            break
    raise HandshakeError(f"malformed request {describe(line)} (expected CONNECT <port>)")


# --------------------------------------------------------------------------- IO


class _ClosedBeforeOK(Exception):
    """EOF or reset before the OK line: nothing in the guest listens on the port (yet)."""

    def __init__(self, received: bytes, reason: str) -> None:
        super().__init__(reason)
        self.received = received
        self.reason = reason


def _hints(port: int) -> list[str]:
    if port == CONSOLE_PORT:
        return ["is the debug console enabled? add task.debug to the kernel parameters"]
    if port == AGENT_PORT:
        return ["is the guest agent running? it serves vsock port 1024 once the guest has booted"]
    return [f"is anything in the guest listening on vsock port {port}?"]


def _error(address: HvsockAddress, detail: str, hints: list[str], reason: str = "") -> HandshakeError:
    return HandshakeError(
        f"hybrid vsock handshake failed on {address.path} port {address.port}: {detail}",
        hints=hints,
        reason=reason,
    )


async def _handshake(sock: socket.socket, address: HvsockAddress, reader: HandshakeReader) -> int | None:
    """Send CONNECT and read the reply into ``reader`` byte by byte on a raw non-blocking socket."""
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_sendall(sock, format_connect(address.port))
        while True:
            byte = await loop.sock_recv(sock, 1)
            if not byte:
                raise _ClosedBeforeOK(reader.received, "connection closed before OK")
            line, _ = reader.feed(byte)
            if line is not None:
                return parse_ok_line(reader.received)  # the whole line, newline included, in errors
    except (ConnectionResetError, BrokenPipeError) as exc:
        raise _ClosedBeforeOK(reader.received, f"connection reset before OK ({exc.strerror})") from exc
    except HandshakeError as exc:
        raise _error(address, exc.message, _hints(address.port)) from exc
    except TimeoutError:
        raise
    except OSError as exc:
        raise _error(address, f"{exc.strerror or exc}", _hints(address.port)) from exc


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
    delay = _FIRST_BACKOFF
    attempts = 0
    last: _ClosedBeforeOK | None = None
    while True:
        attempts += 1
        remaining = max(deadline - loop.time(), 0.001)
        sock = await unix.connect_socket(unix_address, remaining)
        reply = HandshakeReader(limits.handshake_line)
        try:
            async with asyncio.timeout_at(deadline) as timer:
                host_port = await _handshake(sock, address, reply)
        except _ClosedBeforeOK as exc:
            sock.close()
            last = exc
            _log.trace("CONNECT %d -> %s (%s)", address.port, exc.reason, address.path)
            if not retry or loop.time() + delay >= deadline:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF)
            continue
        except TimeoutError:
            sock.close()
            if not timer.expired():
                raise
            raise _error(
                address,
                f"no reply within {budget:g} s (received {describe(reply.received)})",
                [
                    f"is {address.path} the hybrid vsock socket of a VMM (Cloud Hypervisor, Firecracker)?",
                    "a slow guest may need a longer --connect-timeout",
                ],
                REASON_SILENT,
            ) from None
        except BaseException:
            sock.close()
            raise
        _log.trace(
            "CONNECT %d -> OK%s (%s)",
            address.port,
            "" if host_port is None else f" {host_port}",
            address.path,
        )
        with map_exceptions(address.path):
            return await unix.open_streams(sock, address.path)
    assert last is not None
    detail = f"{last.reason} (no listener on that port?)"
    if last.received:
        detail += f", after receiving {describe(last.received)}"
    if attempts > 1:
        detail += f"; tried {attempts} times in {budget:g} s"
    raise _error(address, detail, _hints(address.port), REASON_NO_LISTENER)
