"""ttrpc framing: the 10-byte header and a bounded, split-safe frame decoder.

Layer contract: sans-IO. Knows bytes only: no asyncio, no sockets, no protobuf. Imports only
``kuasar.errors`` and ``kuasar.config``. The connection code (``kuasar.ttrpc._conn``) feeds it
whatever the socket returned and acts on the frames it gets back.

Wire format (SPEC.md §1)::

    offset 0  u32 BE  length     data length, header not included
    offset 4  u32 BE  stream_id
    offset 8  u8      type       1=Request 2=Response 3=Data (others: ignored by peers)
    offset 9  u8      flags
    offset 10 ...     data       ``length`` bytes

Bounds: a length above ``max_message`` is never buffered. For a known frame type the decoder
reports an :class:`OversizedFrame` (carrying the stream id and the announced length) and then
silently discards that many bytes as they arrive, as Go's receiver does, so the connection stays
in sync. An oversized frame of an *unknown* type cannot be told apart from a garbage header, so
it raises :class:`~kuasar.errors.ProtocolError` and the caller closes the connection.
"""

from __future__ import annotations

import struct

from kuasar._record import Record
from kuasar.config import TTRPC_MAX_MESSAGE
from kuasar.errors import ProtocolError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

#: Size of the frame header in bytes.
HEADER_SIZE = 10

_HEADER = struct.Struct(">IIBB")


class FrameType:
    """The frame types ttrpc defines, as plain ``int`` constants (no ``enum`` on ``kuasarctl
    exec``'s start-up path). Frames of other types are decoded and left to the caller."""

    REQUEST: Final = 1
    RESPONSE: Final = 2
    DATA: Final = 3


#: The types :class:`FrameType` names.
KNOWN_TYPES = frozenset((FrameType.REQUEST, FrameType.RESPONSE, FrameType.DATA))


class Flags:
    """Frame flags, as ``int`` bits (their meaning depends on the frame type, see SPEC.md §2)."""

    NONE: Final = 0
    REMOTE_CLOSED: Final = 0x01
    REMOTE_OPEN: Final = 0x02
    NO_DATA: Final = 0x04


class Frame(Record):
    """One ttrpc frame.

    Attributes:
        stream_id: the stream the frame belongs to.
        type: the frame type (:class:`FrameType` names the known ones).
        flags: the flags byte.
        data: the frame data (a protobuf message, or empty).
    """

    stream_id: int
    type: int
    flags: int = 0
    data: bytes = b""


class OversizedFrame(Frame):
    """A frame whose announced length exceeds the limit. Its data is not kept (``data`` is empty).

    Attributes:
        length: the length the header announced.
        limit: the decoder's limit it exceeded.
    """

    length: int = 0
    limit: int = TTRPC_MAX_MESSAGE

    @property
    def message(self) -> str:
        """Go's text for this error (used with ``RESOURCE_EXHAUSTED``)."""
        return oversize_message(self.length, self.limit)


def oversize_message(length: int, limit: int) -> str:
    """Go's error text for a message over the size limit."""
    return f"message length {length} exceed maximum message size of {limit}"


_new = object.__new__
_set = object.__setattr__


def _frame(stream_id: int, type: int, flags: int, data: bytes) -> Frame:
    """``Frame(stream_id, type, flags, data)``, made as a decoder makes one per frame: its four
    slots set directly (``Frame`` has no ``__post_init__``), without the generic record
    ``__init__``'s argument matching."""
    frame = _new(Frame)
    _set(frame, "stream_id", stream_id)
    _set(frame, "type", type)
    _set(frame, "flags", flags)
    _set(frame, "data", data)
    return frame


def encode_header(length: int, stream_id: int, type: int, flags: int) -> bytes:
    """Pack a frame header. Raises ``ValueError`` if a field does not fit."""
    if not (0 <= length <= 0xFFFFFFFF and 0 <= stream_id <= 0xFFFFFFFF):
        raise ValueError(f"frame header field out of range: length={length} stream_id={stream_id}")
    if not (0 <= type <= 0xFF and 0 <= flags <= 0xFF):
        raise ValueError(f"frame header field out of range: type={type} flags={flags}")
    return _HEADER.pack(length, stream_id, type, flags)


def encode_frame(frame: Frame) -> bytes:
    """Encode a frame, header and data. The size limit is the caller's business."""
    return encode_header(len(frame.data), frame.stream_id, frame.type, frame.flags) + frame.data


class FrameDecoder:
    """Incremental decoder: feed it any split of the byte stream, get whole frames back.

    Args:
        max_message: the largest data length accepted (ttrpc's 4 MiB by default).

    Raises (from :meth:`feed`):
        ProtocolError: an oversized frame of unknown type (a garbage header). The decoder is then
            unusable; close the connection.
    """

    def __init__(self, max_message: int = TTRPC_MAX_MESSAGE) -> None:
        self._max = max_message
        self._buf = bytearray()
        self._discard = 0  # bytes of an oversized body still to skip
        self._failed: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a frame (never more than header + max_message)."""
        return len(self._buf)

    @property
    def at_boundary(self) -> bool:
        """True when no partial frame is pending (a clean place for the stream to end)."""
        return not self._buf and not self._discard

    def check(self) -> None:
        """Raise the ``ProtocolError`` of a garbage header seen after the frames ``feed`` returned."""
        if self._failed is not None:
            raise self._failed

    def feed(self, data: bytes) -> list[Frame]:
        """Consume ``data`` and return every frame it completes, in order.

        Raises:
            ProtocolError: a garbage header (at once when no frame precedes it in this call, else
                from the next ``feed`` or ``check``).
        """
        if self._failed is not None:
            raise self._failed
        view = memoryview(data)
        if self._discard:
            skip = min(self._discard, len(view))
            self._discard -= skip
            view = view[skip:]
        frames: list[Frame] = []
        if not view:
            return frames
        self._buf += view
        buf = self._buf
        pos = 0
        end = len(buf)
        while end - pos >= HEADER_SIZE:
            length, stream_id, ftype, flags = _HEADER.unpack_from(buf, pos)
            if length > self._max:
                if ftype not in KNOWN_TYPES:
                    self._failed = ProtocolError(
                        f"ttrpc: garbage frame header (type {ftype}, length {length}, stream {stream_id})"
                    )
                    del buf[:]
                    if frames:
                        return frames  # deliver what came before the garbage; check() raises next
                    raise self._failed
                pos += HEADER_SIZE
                frames.append(OversizedFrame(stream_id, ftype, flags, b"", length, self._max))
                skip = min(length, end - pos)
                pos += skip
                self._discard = length - skip
                continue
            if end - pos - HEADER_SIZE < length:
                break
            start = pos + HEADER_SIZE
            frames.append(_frame(stream_id, ftype, flags, bytes(buf[start : start + length])))
            pos = start + length
        del buf[:pos]
        return frames
