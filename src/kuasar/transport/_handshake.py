"""Hybrid vsock (Cloud Hypervisor / Firecracker) handshake, sans-IO: the reply reader, the request
and reply lines, the retry schedule and the error texts, shared by every driver (the asyncio
:mod:`kuasar.transport.hvsock`, the blocking :mod:`kuasar.transport.blocking`) and by the VMM side
(:mod:`kuasar.transport.hvsock_server`).

Layer contract: bytes only; imports ``kuasar.address``, ``kuasar.config``, ``kuasar.errors`` and
``kuasar._tracing``. No sockets, no asyncio. Underscore-private to the package's users, but the
transport-side cores of ``kuasar.vmm`` (the virtio-vsock muxer) import it by name: it is the one
home of the hybrid vsock rules.
"""

from __future__ import annotations

from kuasar import _tracing
from kuasar.address import HvsockAddress
from kuasar.config import AGENT_PORT, CONSOLE_PORT, DEFAULT_LIMITS
from kuasar.errors import REASON_NO_LISTENER, REASON_SILENT, HandshakeError, Translating

_MAX_U32 = 0xFFFFFFFF
#: The first host port a VMM hands out (Cloud Hypervisor: bit 30 set).
FIRST_HOST_PORT = 1 << 30
_TOP_BIT = 1 << 31
_CONNECT_PREFIXES = (b"CONNECT ", b"connect ")
_FIRST_BACKOFF = 0.01
_MAX_BACKOFF = 0.2


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
    def limit(self) -> int:
        """The longest line accepted, newline included."""
        return self._limit

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


def port_hints(port: int) -> list[str]:
    if port == CONSOLE_PORT:
        return ["is the debug console enabled? add task.debug to the kernel parameters"]
    if port == AGENT_PORT:
        return ["is the guest agent running? it serves vsock port 1024 once the guest has booted"]
    return [f"is anything in the guest listening on vsock port {port}?"]


def handshake_error(
    address: HvsockAddress, detail: str, hints: list[str], reason: str = ""
) -> HandshakeError:
    return HandshakeError(
        f"hybrid vsock handshake failed on {address.path} port {address.port}: {detail}",
        hints=hints,
        reason=reason,
    )


class ClosedBeforeOK(Exception):
    """EOF or reset before the OK line: nothing in the guest listens on the port (yet)."""

    def __init__(self, received: bytes, reason: str) -> None:
        super().__init__(reason)
        self.received = received
        self.reason = reason


class Backoff:
    """When to retry a ``CONNECT`` the VMM closed before ``OK`` (nothing listens on the guest port
    yet): 10 ms doubling to 200 ms, while the budget lasts.

    Args:
        deadline: the budget's end on the driver's clock.
    """

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.delay = _FIRST_BACKOFF
        self.attempts = 0

    def next_delay(self, now: float, *, retry: bool) -> float | None:
        """After a failed attempt at ``now``: how long to wait before the next, or ``None`` to stop."""
        self.attempts += 1
        if not retry or now + self.delay >= self.deadline:
            return None
        delay, self.delay = self.delay, min(self.delay * 2, _MAX_BACKOFF)
        return delay


def closed_error(
    address: HvsockAddress, reason: str, received: bytes, attempts: int, budget: float
) -> HandshakeError:
    """The error after the last ``CONNECT`` was closed before ``OK``."""
    detail = f"{reason} (no listener on that port?)"
    if received:
        detail += f", after receiving {describe(received)}"
    if attempts > 1:
        detail += f"; tried {attempts} times in {budget:g} s"
    return handshake_error(address, detail, port_hints(address.port), REASON_NO_LISTENER)


def silent_error(address: HvsockAddress, received: bytes, budget: float) -> HandshakeError:
    """The error when the VMM said nothing within the budget."""
    return handshake_error(
        address,
        f"no reply within {budget:g} s (received {describe(received)})",
        [
            f"is {address.path} the hybrid vsock socket of a VMM (Cloud Hypervisor, Firecracker)?",
            "a slow guest may need a longer --connect-timeout",
        ],
        REASON_SILENT,
    )


def trace_reply(address: HvsockAddress, host_port: int | None) -> None:
    """The ``-v`` line of an accepted ``CONNECT``."""
    _tracing.trace(
        "CONNECT %d -> OK%s (%s)", address.port, "" if host_port is None else f" {host_port}", address.path
    )


def trace_refused(address: HvsockAddress, reason: str) -> None:
    """The ``-v`` line of a ``CONNECT`` closed before ``OK``."""
    _tracing.trace("CONNECT %d -> %s (%s)", address.port, reason, address.path)


def reply_byte(reader: HandshakeReader, byte: bytes) -> tuple[bool, int | None]:
    """Feed one byte of the VMM's reply, or more up to its newline: ``(done, host port)``.

    Raises:
        ClosedBeforeOK: EOF (``byte`` is empty) before the line ended.
        HandshakeError: the line is too long or is not ``OK``/``OK <port>``.
    """
    if not byte:
        raise ClosedBeforeOK(reader.received, "connection closed before OK")
    line, _ = reader.feed(byte)
    if line is None:
        return False, None
    return True, parse_ok_line(reader.received)  # the whole line, newline included, in errors


class reply_errors(Translating):
    """Around sending ``CONNECT`` and reading the reply: a reset is a refusal (``ClosedBeforeOK``,
    retried), a bad line or another socket error a ``HandshakeError``; timeouts pass through."""

    def __init__(self, address: HvsockAddress, reader: HandshakeReader) -> None:
        self.address = address
        self.reader = reader

    def translate(self, exc: BaseException) -> BaseException | None:
        if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
            return ClosedBeforeOK(self.reader.received, f"connection reset before OK ({exc.strerror})")
        if isinstance(exc, HandshakeError):
            return handshake_error(self.address, exc.message, port_hints(self.address.port))
        if isinstance(exc, TimeoutError) or not isinstance(exc, OSError):
            return None
        return handshake_error(self.address, f"{exc.strerror or exc}", port_hints(self.address.port))


def next_host_port(port: int) -> int:
    """The host port a VMM hands out after ``port``: bit 30 kept set, bit 31 never, wrapping within
    that range (Cloud Hypervisor's rule; our hvsock server and virtio-vsock muxer both use it)."""
    return ((port + 1) & ~_TOP_BIT) | FIRST_HOST_PORT
