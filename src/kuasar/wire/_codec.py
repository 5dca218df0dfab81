"""The protobuf wire format behind :mod:`kuasar.wire`: one reader, one writer, a field table.

Layer contract: bottom layer, sans-IO, bytes in and bytes out. Imports nothing at run time (never
``google.protobuf``; ``typing`` only for the type checker). Every message in
:mod:`kuasar.wire.messages` is a table of :class:`Field` rows; :func:`encode` and :func:`decode`
below are the only serializer and parser, so a protobuf rule lives here once.

The rules follow protobuf's own parser and serializer (upb, which the generated stubs run on),
checked against them by ``tests/unit/test_wire_codec.py``:

- fields may come in any order; a known field number with another wire type is an unknown field;
  unknown fields of wire types 0, 1, 2 and 5 are skipped (not kept: nothing re-serializes them);
- a singular scalar or oneof member seen twice: the last one wins; a oneof member clears its
  siblings; a singular message field seen twice is *merged* (its bytes are concatenated),
  each occurrence must parse on its own (upb parses eagerly, even one a later field replaces);
- int32/uint32 values keep the low 32 bits of the varint, int64 the low 64, bool is "non-zero";
  enums are plain int32 (proto3 enums are open);
- strings must be UTF-8; a map entry carrying anything besides key (1) and value (2) is not put in
  the map (upb keeps such an entry as an unknown field of the parent);
- map entries are written with both key and value, in upb's deterministic order (see encode);
- tags are at most 5 bytes and 32 bits, lengths at most 5 bytes, other varints at most 10 bytes.

One deliberate difference: groups (wire types 3 and 4, deprecated since proto2) are rejected
where upb would skip them; no ttrpc peer sends them.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any, TypeVar

    from kuasar.wire._message import Message

    _M = TypeVar("_M", bound=Message)

# Field kinds. Enums are INT32: proto3 enums are open, so any int32 is a valid value.
STRING, BYTES, BOOL, INT32, UINT32, INT64, MESSAGE, MAP = range(8)
_LENGTH_DELIMITED = frozenset((STRING, BYTES, MESSAGE, MAP))
_RANGES = {INT32: (-(1 << 31), 1 << 31), UINT32: (0, 1 << 32), INT64: (-(1 << 63), 1 << 63)}
_MASK32 = 0xFFFFFFFF
_MASK64 = (1 << 64) - 1


class Malformed(Exception):
    """Why bytes do not decode; ``path`` names the enclosing fields, outermost first.

    Internal: :meth:`kuasar.wire.Message.decode` turns it into :class:`~kuasar.errors.ProtocolError`.
    """

    def __init__(self, reason: str, *path: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path = list(path)


class Field:
    """One row of a message's field table: number, attribute name, kind and shape."""

    __slots__ = ("kind", "message", "name", "number", "oneof", "repeated", "siblings", "tag", "wire_type")

    def __init__(
        self,
        number: int,
        name: str,
        kind: int,
        *,
        repeated: bool = False,
        message: type[Message] | None = None,
        oneof: str | None = None,
    ) -> None:
        self.number = number
        self.name = name
        self.kind = kind
        self.repeated = repeated
        self.message = message
        self.oneof = oneof
        self.siblings: tuple[str, ...] = ()  # the other members of its oneof, filled by Schema
        self.wire_type = 2 if kind in _LENGTH_DELIMITED else 0
        self.tag = _varint(number << 3 | self.wire_type)


class Schema:
    """A message's fields, in field-number order (the order protobuf serializes them in)."""

    __slots__ = ("by_name", "by_number", "fields", "oneofs", "repeated")

    def __init__(self, *fields: Field) -> None:
        self.fields = tuple(sorted(fields, key=lambda f: f.number))
        self.by_number = {f.number: f for f in self.fields}
        self.by_name = {f.name: f for f in self.fields}
        groups: dict[str, tuple[str, ...]] = {}
        for f in self.fields:
            if f.oneof is not None:
                groups[f.oneof] = (*groups.get(f.oneof, ()), f.name)
        for f in self.fields:
            if f.oneof is not None:
                f.siblings = tuple(name for name in groups[f.oneof] if name != f.name)
        self.oneofs = groups
        self.repeated = tuple(f.name for f in self.fields if f.repeated)


# ----------------------------------------------------------------------------------------- writer


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _write(out: bytearray, field: Field, value: Any) -> None:
    kind = field.kind
    if kind == STRING:
        data = value.encode()
    elif kind == BYTES:
        data = value
    elif kind == MESSAGE:
        data = encode(value)
    elif kind == BOOL:
        out.append(1 if value else 0)
        return
    else:
        low, high = _RANGES[kind]
        if not low <= value < high:
            raise ValueError(f"{field.name}: {value} is out of range [{low}, {high})")
        out += _varint(value & _MASK64)  # a negative int32 or int64 takes all 10 bytes
        return
    out += _varint(len(data))
    out += data


def _upb_map_order(key: str) -> bytes:
    return key.encode() + b"\xff"


def encode(message: Message) -> bytes:
    """Serialize ``message`` by its field table (see :meth:`kuasar.wire.Message.encode`)."""
    out = bytearray()
    for field in message._schema.fields:
        value = getattr(message, field.name)
        if field.repeated:
            for item in value:
                out += field.tag
                _write(out, field, item)
        elif field.kind == MAP:
            # upb writes key and value of every entry, even empty ones, and its deterministic order
            # is bytewise with a longer key before its own prefix ("ab" < "a" < ""). UTF-8 never
            # holds 0xFF, so a 0xFF sentinel after each key sorts exactly that way.
            for key in sorted(value, key=_upb_map_order):
                entry = bytearray(b"\x0a")
                entry += _varint(len(k := key.encode())) + k
                entry += b"\x12" + _varint(len(v := value[key].encode())) + v
                out += field.tag + _varint(len(entry)) + entry
        elif value is None:
            continue  # an unset submessage or oneof member
        elif value or field.oneof is not None or field.kind == MESSAGE:
            out += field.tag  # proto3 implicit presence: a zero scalar stays off the wire
            _write(out, field, value)
    return bytes(out)


# ----------------------------------------------------------------------------------------- reader


def _read_varint(data: bytes, pos: int, limit: int) -> tuple[int, int]:
    """Return the varint of at most ``limit`` bytes at ``pos`` (mod 2**64) and the next position."""
    result = shift = 0
    end = len(data)
    for _ in range(limit):
        if pos >= end:
            raise Malformed(f"truncated varint at byte {pos}")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & _MASK64, pos
        shift += 7
    raise Malformed(f"varint longer than {limit} bytes at byte {pos - limit}")


def iter_fields(data: bytes) -> Iterator[tuple[int, int, Any]]:
    """Yield ``(field_number, wire_type, value)`` for each field of one serialized message.

    ``value`` is an ``int`` for wire types 0, 1 and 5 and ``bytes`` for 2; lengths are bounded by
    what is left of ``data``.

    Raises:
        Malformed: truncated or malformed input, a group, wire type 6 or 7, field number 0.
    """
    pos = 0
    end = len(data)
    while pos < end:
        start = pos
        if data[pos] < 0x80:
            tag = data[pos]
            pos += 1
        else:
            tag, pos = _read_varint(data, pos, 5)
            if tag > _MASK32:
                raise Malformed(f"tag wider than 32 bits at byte {start}")
        number = tag >> 3
        wire_type = tag & 7
        value: int | bytes
        if number == 0:
            raise Malformed(f"field number 0 at byte {start}")
        if wire_type == 0:
            value, pos = _read_varint(data, pos, 10)
        elif wire_type == 2:
            size, pos = _read_varint(data, pos, 5)
            if size > end - pos:
                raise Malformed(f"field {number}: length {size} but {end - pos} bytes left")
            value = data[pos : pos + size]
            pos += size
        elif wire_type in (1, 5):
            size = 8 if wire_type == 1 else 4
            if size > end - pos:
                raise Malformed(f"field {number}: truncated fixed{size * 8} at byte {pos}")
            value = int.from_bytes(data[pos : pos + size], "little")
            pos += size
        elif wire_type in (3, 4):
            raise Malformed(f"field {number}: groups (wire type {wire_type}) are not supported")
        else:
            raise Malformed(f"field {number}: invalid wire type {wire_type}")
        yield number, wire_type, value


def _text(data: bytes, name: str) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise Malformed("invalid UTF-8", name) from None


def _scalar(kind: int, value: Any, name: str) -> Any:
    if kind == STRING:
        return _text(value, name)
    if kind == BYTES:
        return value
    if kind == BOOL:
        return value != 0
    if kind == INT64:
        return value - (1 << 64) if value >> 63 else value
    value &= _MASK32
    return value - (1 << 32) if kind == INT32 and value >> 31 else value


def _map_entry(data: bytes, name: str) -> tuple[str, str] | None:
    key = value = ""
    clean = True
    for number, wire_type, item in iter_fields(data):
        if wire_type == 2 and number == 1:
            key = _text(item, name)
        elif wire_type == 2 and number == 2:
            value = _text(item, name)
        else:
            clean = False  # upb leaves such an entry out of the map
    return (key, value) if clean else None


def _nested(field: Field, data: bytes) -> Message:
    assert field.message is not None
    try:
        return decode(field.message, data)
    except Malformed as exc:
        exc.path.insert(0, field.name)
        raise


def decode(cls: type[_M], data: bytes) -> _M:
    """Parse ``data`` as ``cls`` by its field table (see :meth:`kuasar.wire.Message.decode`).

    Raises:
        Malformed: the bytes do not decode.
    """
    schema = cls._schema
    values: dict[str, Any] = {}
    chunks: dict[str, list[bytes]] = {}  # singular submessages: the bytes of every occurrence
    for number, wire_type, value in iter_fields(data):
        field = schema.by_number.get(number)
        if field is None or wire_type != field.wire_type:
            continue
        name = field.name
        kind = field.kind
        if field.repeated:
            item = _nested(field, value) if kind == MESSAGE else _scalar(kind, value, name)
            values.setdefault(name, []).append(item)
        elif kind == MAP:
            entry = _map_entry(value, name)
            if entry is not None:
                values.setdefault(name, {})[entry[0]] = entry[1]
        else:
            for sibling in field.siblings:
                values.pop(sibling, None)
                chunks.pop(sibling, None)
            if kind == MESSAGE:
                # Parsed now, as upb does, so a bad occurrence fails even if a later one replaces
                # it; a repeat is merged: the occurrences' bytes, parsed as one, at the end.
                item = _nested(field, value)
                if name in chunks:
                    chunks[name].append(value)
                else:
                    chunks[name] = [value]
                    values[name] = item
            else:
                values[name] = _scalar(kind, value, name)
    for name, parts in chunks.items():
        if len(parts) > 1:
            values[name] = _nested(schema.by_name[name], b"".join(parts))
    for name in schema.repeated:
        if name in values:
            values[name] = tuple(values[name])
    return cls(**values)
