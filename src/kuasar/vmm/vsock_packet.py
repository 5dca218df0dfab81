"""virtio-vsock packets, sans-IO: the 44-byte header, the operations and their flags.

Layer contract: knows bytes only; imports ``kuasar.errors`` only.

Wire (virtio spec, "Socket Device"): every field little-endian, packed::

    le64 src_cid  le64 dst_cid  le32 src_port  le32 dst_port  le32 len
    le16 type     le16 op       le32 flags     le32 buf_alloc le32 fwd_cnt

then ``len`` bytes of payload (``OP_RW`` only). ``buf_alloc`` and ``fwd_cnt`` ride on every packet:
the sender's receive buffer size, and how many bytes of the stream it has handed to its
application. ``SHUTDOWN`` carries ``SHUTDOWN_RCV``/``SHUTDOWN_SEND`` in ``flags``.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from kuasar.errors import ProtocolError

__all__ = [
    "HEADER_SIZE",
    "HOST_CID",
    "MAX_PAYLOAD",
    "SHUTDOWN_RCV",
    "SHUTDOWN_SEND",
    "TYPE_STREAM",
    "Header",
    "Op",
    "PacketError",
    "decode_packet",
]

HEADER_SIZE = 44
#: The host's CID, as every guest addresses it.
HOST_CID = 2
TYPE_STREAM = 1
TYPE_SEQPACKET = 2
SHUTDOWN_RCV = 1
SHUTDOWN_SEND = 2
SHUTDOWN_BOTH = SHUTDOWN_RCV | SHUTDOWN_SEND
#: Linux's ``VIRTIO_VSOCK_MAX_PKT_BUF_SIZE``: no payload is longer.
MAX_PAYLOAD = 64 * 1024

_HEADER = struct.Struct("<QQIIIHHIII")
assert _HEADER.size == HEADER_SIZE


class PacketError(ProtocolError):
    """A packet from the guest is malformed (short, or its length disagrees with its buffer)."""


class Op(enum.IntEnum):
    """``VIRTIO_VSOCK_OP_*``."""

    INVALID = 0
    REQUEST = 1
    RESPONSE = 2
    RST = 3
    SHUTDOWN = 4
    RW = 5
    CREDIT_UPDATE = 6
    CREDIT_REQUEST = 7


@dataclass(frozen=True, slots=True)
class Header:
    """One packet header; ``len`` is the payload length."""

    src_cid: int
    dst_cid: int
    src_port: int
    dst_port: int
    len: int
    type: int
    op: int
    flags: int
    buf_alloc: int
    fwd_cnt: int

    def encode(self) -> bytes:
        return _HEADER.pack(
            self.src_cid,
            self.dst_cid,
            self.src_port,
            self.dst_port,
            self.len,
            self.type,
            self.op,
            self.flags,
            self.buf_alloc,
            self.fwd_cnt,
        )

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> Header:
        if len(data) < HEADER_SIZE:
            raise PacketError(f"packet of {len(data)} bytes is shorter than the {HEADER_SIZE}-byte header")
        return cls(*_HEADER.unpack_from(data))

    @property
    def op_name(self) -> str:
        try:
            return Op(self.op).name
        except ValueError:
            return f"op {self.op}"


def decode_packet(data: bytes) -> tuple[Header, bytes]:
    """Split one tx buffer into its header and payload.

    Raises:
        PacketError: shorter than a header, a payload longer than the buffer holds or than
            :data:`MAX_PAYLOAD`.
    """
    header = Header.decode(data)
    if header.len > MAX_PAYLOAD:
        raise PacketError(f"{header.op_name} with a payload of {header.len} bytes, over {MAX_PAYLOAD}")
    if header.len > len(data) - HEADER_SIZE:
        raise PacketError(
            f"{header.op_name} says {header.len} payload bytes, the buffer holds {len(data) - HEADER_SIZE}"
        )
    return header, data[HEADER_SIZE : HEADER_SIZE + header.len]
