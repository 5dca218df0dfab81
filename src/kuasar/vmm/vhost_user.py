"""vhost-user, sans-IO: the message codec and the backend side of one connection.

Layer contract: knows bytes and file descriptor numbers only (no sockets, no ``mmap``, no event
loop); imports ``kuasar.errors`` only. The driver reads the socket with ``recvmsg`` and feeds what
it got: ``Connection.receive_data(data, fds)`` then ``next_request()``; it writes what
``Connection.reply``/``ack`` return. Descriptors are plain ``int`` s: whoever takes a
:class:`Message` owns its ``fds`` (and closes those it does not keep); :meth:`Connection.close`
hands back the ones it still holds.

Wire (qemu ``docs/interop/vhost-user.rst``): a 12-byte little-endian header ``request: u32``,
``flags: u32`` (bits 0-1 version = 1, bit 2 reply, bit 3 need-reply), ``size: u32``, then ``size``
bytes of payload. Descriptors ride as ``SCM_RIGHTS`` on the header's bytes. Every size is checked
before it is buffered: a payload is at most :data:`MAX_PAYLOAD`, and each known request's payload
has its exact (or bounded) size.

Descriptors arrive with the first byte of the message they belong to. So that a read never holds
the tail of one message and the head of the next, read at most :meth:`Connection.bytes_wanted`
bytes at a time; descriptors fed with a chunk belong to the message the chunk's first byte is part
of.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from kuasar.errors import ProtocolError

__all__ = [
    "HEADER_SIZE",
    "MAX_FDS",
    "MAX_PAYLOAD",
    "ConfigSpace",
    "Connection",
    "MemoryRegion",
    "Message",
    "ProtocolFeature",
    "Request",
    "VhostUserError",
    "VringAddr",
    "VringFile",
    "VringState",
    "decode_memory_table",
    "decode_u64",
    "encode_memory_table",
    "encode_message",
    "encode_u64",
]


class VhostUserError(ProtocolError):
    """The front-end (QEMU) sent a message the protocol does not allow."""


class Request(enum.IntEnum):
    """Front-end message types (``VHOST_USER_*``)."""

    GET_FEATURES = 1
    SET_FEATURES = 2
    SET_OWNER = 3
    RESET_OWNER = 4
    SET_MEM_TABLE = 5
    SET_LOG_BASE = 6
    SET_LOG_FD = 7
    SET_VRING_NUM = 8
    SET_VRING_ADDR = 9
    SET_VRING_BASE = 10
    GET_VRING_BASE = 11
    SET_VRING_KICK = 12
    SET_VRING_CALL = 13
    SET_VRING_ERR = 14
    GET_PROTOCOL_FEATURES = 15
    SET_PROTOCOL_FEATURES = 16
    GET_QUEUE_NUM = 17
    SET_VRING_ENABLE = 18
    SEND_RARP = 19
    NET_SET_MTU = 20
    SET_BACKEND_REQ_FD = 21
    IOTLB_MSG = 22
    SET_VRING_ENDIAN = 23
    GET_CONFIG = 24
    SET_CONFIG = 25
    GET_INFLIGHT_FD = 31
    SET_INFLIGHT_FD = 32
    RESET_DEVICE = 34
    GET_MAX_MEM_SLOTS = 36
    ADD_MEM_REG = 37
    REM_MEM_REG = 38
    SET_STATUS = 39
    GET_STATUS = 40


class ProtocolFeature(enum.IntFlag):
    """``VHOST_USER_PROTOCOL_F_*`` bits (only the ones this package names)."""

    MQ = 1 << 0
    REPLY_ACK = 1 << 3
    BACKEND_REQ = 1 << 5
    CONFIG = 1 << 9
    INFLIGHT_SHMFD = 1 << 12
    STATUS = 1 << 16


HEADER_SIZE = 12
#: The largest payload of any message this backend accepts (a full memory table is 264 bytes,
#: ``GET_CONFIG`` at most 12 + 256).
MAX_PAYLOAD = 4096
#: The most descriptors one message may carry (``VHOST_MEMORY_BASELINE_NREGIONS``).
MAX_FDS = 8
MAX_REGIONS = 8
#: ``VHOST_USER_MAX_CONFIG_SIZE``.
MAX_CONFIG = 256

VERSION = 0x1
_VERSION_MASK = 0x3
FLAG_REPLY = 0x4
FLAG_NEED_REPLY = 0x8

#: In SET_VRING_KICK/CALL/ERR: bits 0-7 are the queue index, bit 8 says "no descriptor" (polling).
_VRING_INDEX_MASK = 0xFF
_VRING_NOFD = 0x100

_HEADER = struct.Struct("<III")
_U64 = struct.Struct("<Q")
_STATE = struct.Struct("<II")
_ADDR = struct.Struct("<IIQQQQ")
_REGION = struct.Struct("<QQQQ")
_TABLE_HEAD = struct.Struct("<II")
_CONFIG_HEAD = struct.Struct("<III")

_U64_REQUESTS = frozenset(
    {
        Request.SET_FEATURES,
        Request.SET_PROTOCOL_FEATURES,
        Request.SET_VRING_KICK,
        Request.SET_VRING_CALL,
        Request.SET_VRING_ERR,
        Request.SET_LOG_BASE,
        Request.SET_STATUS,
    }
)
_STATE_REQUESTS = frozenset(
    {Request.SET_VRING_NUM, Request.SET_VRING_BASE, Request.GET_VRING_BASE, Request.SET_VRING_ENABLE}
)
#: Requests the backend always answers with a reply of its own (REPLY_ACK does not apply).
REPLYING = frozenset(
    {
        Request.GET_FEATURES,
        Request.GET_PROTOCOL_FEATURES,
        Request.GET_VRING_BASE,
        Request.GET_QUEUE_NUM,
        Request.GET_CONFIG,
        Request.GET_INFLIGHT_FD,
        Request.GET_MAX_MEM_SLOTS,
        Request.GET_STATUS,
    }
)
#: Requests whose payload is empty (a GET_* request carries no payload except GET_CONFIG's and
#: GET_VRING_BASE's).
_EMPTY = frozenset(
    {
        Request.GET_FEATURES,
        Request.GET_PROTOCOL_FEATURES,
        Request.SET_OWNER,
        Request.RESET_OWNER,
        Request.GET_QUEUE_NUM,
        Request.GET_MAX_MEM_SLOTS,
        Request.GET_STATUS,
        Request.RESET_DEVICE,
    }
)
#: The requests that may carry descriptors, and how many.
_FD_REQUESTS: dict[int, int] = {
    Request.SET_MEM_TABLE: MAX_REGIONS,
    Request.SET_VRING_KICK: 1,
    Request.SET_VRING_CALL: 1,
    Request.SET_VRING_ERR: 1,
    Request.SET_LOG_BASE: 1,
    Request.SET_LOG_FD: 1,
    Request.SET_BACKEND_REQ_FD: 1,
    Request.SET_INFLIGHT_FD: 1,
    Request.ADD_MEM_REG: 1,
}


@dataclass(frozen=True, slots=True)
class Message:
    """One vhost-user message: its request code (an ``int``: unknown codes are kept), the flags,
    the payload and the descriptors that came with it."""

    request: int
    flags: int
    payload: bytes
    fds: tuple[int, ...] = ()

    @property
    def need_reply(self) -> bool:
        return bool(self.flags & FLAG_NEED_REPLY)

    @property
    def name(self) -> str:
        try:
            return Request(self.request).name
        except ValueError:
            return f"request {self.request}"


@dataclass(frozen=True, slots=True)
class VringState:
    """``struct vhost_vring_state``: a queue index and a number (size, base index or enable)."""

    index: int
    num: int

    def encode(self) -> bytes:
        return _STATE.pack(self.index, self.num)

    @classmethod
    def decode(cls, payload: bytes) -> VringState:
        _exact(payload, _STATE.size, "vring state")
        return cls(*_STATE.unpack(payload))


@dataclass(frozen=True, slots=True)
class VringAddr:
    """``struct vhost_vring_addr``: the three ring areas as front-end (QEMU) virtual addresses."""

    index: int
    flags: int
    desc: int
    used: int
    avail: int
    log: int

    def encode(self) -> bytes:
        return _ADDR.pack(self.index, self.flags, self.desc, self.used, self.avail, self.log)

    @classmethod
    def decode(cls, payload: bytes) -> VringAddr:
        _exact(payload, _ADDR.size, "vring address")
        return cls(*_ADDR.unpack(payload))


@dataclass(frozen=True, slots=True)
class VringFile:
    """The u64 of SET_VRING_KICK/CALL/ERR: a queue index and whether a descriptor comes with it."""

    index: int
    has_fd: bool

    def encode(self) -> bytes:
        return encode_u64(self.index | (0 if self.has_fd else _VRING_NOFD))

    @classmethod
    def decode(cls, payload: bytes) -> VringFile:
        value = decode_u64(payload)
        if value & ~(_VRING_INDEX_MASK | _VRING_NOFD):
            raise VhostUserError(f"vring file value {value:#x} has unknown bits")
        return cls(value & _VRING_INDEX_MASK, not value & _VRING_NOFD)


@dataclass(frozen=True, slots=True)
class MemoryRegion:
    """One region of guest memory: guest-physical start, size, the front-end's virtual address of
    it, and where it starts in the descriptor passed alongside."""

    guest_addr: int
    size: int
    user_addr: int
    mmap_offset: int

    def encode(self) -> bytes:
        return _REGION.pack(self.guest_addr, self.size, self.user_addr, self.mmap_offset)


@dataclass(frozen=True, slots=True)
class ConfigSpace:
    """GET_CONFIG/SET_CONFIG payload: ``offset``, ``size``, ``flags``, then ``size`` bytes."""

    offset: int
    flags: int
    data: bytes

    def encode(self) -> bytes:
        return _CONFIG_HEAD.pack(self.offset, len(self.data), self.flags) + self.data

    @classmethod
    def decode(cls, payload: bytes) -> ConfigSpace:
        if len(payload) < _CONFIG_HEAD.size:
            raise VhostUserError(f"config payload of {len(payload)} bytes is shorter than its header")
        offset, size, flags = _CONFIG_HEAD.unpack_from(payload)
        if size > MAX_CONFIG or offset + size > MAX_CONFIG:
            raise VhostUserError(f"config range {offset}+{size} exceeds {MAX_CONFIG} bytes")
        if len(payload) != _CONFIG_HEAD.size + size:
            raise VhostUserError(f"config payload of {len(payload)} bytes does not hold {size} bytes")
        return cls(offset, flags, payload[_CONFIG_HEAD.size :])


def _exact(payload: bytes, size: int, what: str) -> None:
    if len(payload) != size:
        raise VhostUserError(f"{what} payload is {len(payload)} bytes, expected {size}")


def encode_u64(value: int) -> bytes:
    return _U64.pack(value)


def decode_u64(payload: bytes) -> int:
    _exact(payload, _U64.size, "u64")
    value: int = _U64.unpack(payload)[0]
    return value


def encode_memory_table(regions: Sequence[MemoryRegion]) -> bytes:
    if len(regions) > MAX_REGIONS:
        raise VhostUserError(f"{len(regions)} memory regions, at most {MAX_REGIONS}")
    return _TABLE_HEAD.pack(len(regions), 0) + b"".join(r.encode() for r in regions)


def decode_memory_table(payload: bytes) -> tuple[MemoryRegion, ...]:
    """The regions of SET_MEM_TABLE, each checked: non-empty, and no address wraps past 2^64."""
    if len(payload) < _TABLE_HEAD.size:
        raise VhostUserError(f"memory table payload of {len(payload)} bytes has no header")
    count, _padding = _TABLE_HEAD.unpack_from(payload)
    if not 0 < count <= MAX_REGIONS:
        raise VhostUserError(f"memory table with {count} regions (1 to {MAX_REGIONS} allowed)")
    _exact(payload, _TABLE_HEAD.size + count * _REGION.size, f"memory table of {count} regions")
    regions = []
    for i in range(count):
        region = MemoryRegion(*_REGION.unpack_from(payload, _TABLE_HEAD.size + i * _REGION.size))
        ends = (region.guest_addr + region.size, region.user_addr + region.size, region.mmap_offset)
        if region.size == 0 or max(ends) + region.size > 1 << 64:
            raise VhostUserError(f"memory region {i} ({region}) is empty or wraps the address space")
        regions.append(region)
    return tuple(regions)


def encode_message(request: int, payload: bytes = b"", *, flags: int = VERSION) -> bytes:
    """A whole message: header plus payload (descriptors are the caller's to send alongside)."""
    if len(payload) > MAX_PAYLOAD:
        raise VhostUserError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return _HEADER.pack(request, flags, len(payload)) + payload


def check_payload(request: int, size: int) -> None:
    """Reject a payload size the request cannot have, before any of it is buffered.

    Raises:
        VhostUserError: the size is over :data:`MAX_PAYLOAD` or wrong for a known request.
    """
    if size > MAX_PAYLOAD:
        raise VhostUserError(f"{_name(request)}: payload of {size} bytes exceeds {MAX_PAYLOAD}")
    expected = _expected_size(request)
    if expected is not None and size != expected:
        raise VhostUserError(f"{_name(request)}: payload of {size} bytes, expected {expected}")
    if request == Request.SET_MEM_TABLE and size > _TABLE_HEAD.size + MAX_REGIONS * _REGION.size:
        raise VhostUserError(f"SET_MEM_TABLE: payload of {size} bytes is over {MAX_REGIONS} regions")
    if request in (Request.GET_CONFIG, Request.SET_CONFIG) and size > _CONFIG_HEAD.size + MAX_CONFIG:
        raise VhostUserError(f"{_name(request)}: payload of {size} bytes is over {MAX_CONFIG} config bytes")


def _expected_size(request: int) -> int | None:
    if request in _U64_REQUESTS:
        return _U64.size
    if request in _STATE_REQUESTS:
        return _STATE.size
    if request == Request.SET_VRING_ADDR:
        return _ADDR.size
    if request in _EMPTY:
        return 0
    return None


def _name(request: int) -> str:
    try:
        return Request(request).name
    except ValueError:
        return f"request {request}"


class Connection:
    """The backend side of one vhost-user connection, in h11's shape.

    Feed it what the socket gave (:meth:`receive_data`, descriptors included), take complete
    requests with :meth:`next_request`, and answer with :meth:`reply` (requests in
    :data:`REPLYING`) or :meth:`ack` (every other request; it returns the REPLY_ACK bytes when the
    front-end asked for them and ``b""`` otherwise). Replies are owed in request order: a request
    that needs an answer must be answered before the next request is handed out.

    Args:
        protocol_features: the protocol features this backend offers; the front-end's
            SET_PROTOCOL_FEATURES may only ack a subset of them, and REPLY_ACK applies once acked.
    """

    def __init__(self, protocol_features: int = 0) -> None:
        self.offered_protocol_features = protocol_features
        self.protocol_features = 0
        self._buf = bytearray()
        self._header: tuple[int, int, int] | None = None
        self._fds: list[int] = []
        self._owed: Message | None = None
        self._closed = False

    def bytes_wanted(self) -> int:
        """How many bytes complete the current header or payload: read no more than this at once."""
        if self._header is None:
            return max(HEADER_SIZE - len(self._buf), 1)
        return max(self._header[2] - len(self._buf), 1)

    def receive_data(self, data: bytes, fds: Sequence[int] = ()) -> None:
        """Buffer ``data``; ``fds`` came with it (they belong to the message ``data`` starts in)."""
        if self._closed:
            raise VhostUserError("connection already closed")
        self._fds.extend(fds)
        self._buf += data

    def next_request(self) -> Message | None:
        """The next complete request, or ``None`` until more bytes are fed.

        Raises:
            VhostUserError: a bad header, a payload size the request cannot have, a reply-flagged
                message, descriptors where the request takes none (or too many), or a request
                while an answer is still owed.
        """
        if self._header is None:
            if len(self._buf) < HEADER_SIZE:
                return None
            self._header = self._parse_header()
        request, flags, size = self._header
        if len(self._buf) < size:
            return None
        if self._owed is not None:
            raise VhostUserError(f"{_name(request)} arrived while {self._owed.name} awaits its answer")
        payload = bytes(self._buf[:size])
        del self._buf[:size]
        self._header = None
        message = Message(request, flags, payload, self._take_fds(request))
        if request in REPLYING or (message.need_reply and self._acking):
            self._owed = message
        if request == Request.SET_PROTOCOL_FEATURES:
            self._set_protocol_features(decode_u64(payload))
        return message

    def _parse_header(self) -> tuple[int, int, int]:
        request, flags, size = _HEADER.unpack_from(self._buf)
        del self._buf[:HEADER_SIZE]
        if flags & _VERSION_MASK != VERSION:
            raise VhostUserError(f"{_name(request)}: unsupported version {flags & _VERSION_MASK}")
        if flags & FLAG_REPLY:
            raise VhostUserError(f"{_name(request)}: a reply sent to the backend")
        check_payload(request, size)
        return request, flags, size

    def _take_fds(self, request: int) -> tuple[int, ...]:
        fds, self._fds = tuple(self._fds), []
        limit = _FD_REQUESTS.get(request, 0)
        if len(fds) > limit:
            self._fds = list(fds)  # kept for close() to hand back
            raise VhostUserError(f"{_name(request)} came with {len(fds)} descriptors, at most {limit}")
        return fds

    def _set_protocol_features(self, value: int) -> None:
        unknown = value & ~self.offered_protocol_features
        if unknown:
            raise VhostUserError(f"SET_PROTOCOL_FEATURES acks unoffered bits {unknown:#x}")
        self.protocol_features = value

    @property
    def _acking(self) -> bool:
        return bool(self.protocol_features & ProtocolFeature.REPLY_ACK)

    def reply(self, request: Message, payload: bytes) -> bytes:
        """The reply to a request of :data:`REPLYING`: the same code, the reply flag, ``payload``."""
        if request.request not in REPLYING:
            raise VhostUserError(f"{request.name} has no reply of its own (use ack)")
        self._settle(request)
        return encode_message(request.request, payload, flags=VERSION | FLAG_REPLY)

    def ack(self, request: Message, ok: bool = True) -> bytes:
        """The REPLY_ACK answer (u64 0 for success, 1 for failure) if one is owed, else ``b""``."""
        if request.request in REPLYING:
            raise VhostUserError(f"{request.name} needs its reply, not an ack")
        if self._owed is not request:
            return b""
        self._settle(request)
        return encode_message(request.request, encode_u64(0 if ok else 1), flags=VERSION | FLAG_REPLY)

    def _settle(self, request: Message) -> None:
        if self._owed is not request:
            raise VhostUserError(f"no answer is owed to {request.name}")
        self._owed = None

    def close(self) -> list[int]:
        """End the connection; returns the descriptors received but not handed out, to close."""
        self._closed = True
        fds, self._fds = self._fds, []
        return fds
