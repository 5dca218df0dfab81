"""A method's arguments into its request message(s), typed by the descriptor, sans-IO.

Layer contract: ``kuasar.agentctl``; protobuf (descriptors, ``json_format``) and ``kuasar.errors``.
The one IO is reading a ``file://`` argument, through the ``read_file`` the caller passes.

Arguments apply in the order given:

- ``json://{...}`` or ``file:///path.json``: a JSON object merged into the request. A later document
  replaces the scalars and lists it names, merges into the objects it names, and ``null`` clears a
  field. Field names are the .proto names or their lowerCamelCase JSON names.
- ``path=value``: one field, typed by the descriptor: strings as given; ``bytes`` as UTF-8 text or
  ``hex:0a0b`` / ``base64:...``; booleans ``true``/``false``/``1``/``0``/``yes``/``no``; integers in
  decimal or ``0x``; enums by name or number; a field named ``signal`` also by signal name
  (``KILL``, ``SIGUSR1``, ``usr1``); messages and maps as JSON (``labels={"a": "b"}``) or field by
  field (``process.Cwd=/``, ``labels.app=web``); lists as ``[a,b]``, JSON arrays, or one value;
  list items by index (``Routes.0.dest=...``). Well-known types take their JSON forms
  (``exited_at=2024-01-01T00:00:00Z``).
- ``cid=``, ``sid=`` (and ``exec_id=`` where the request has no such field) are kata-agent-ctl's
  option names: they set the IDs auto values use, for this and later commands (``auto``).

A client-streaming method takes a list of messages: a JSON array adds one message per element, a
JSON object adds one, and a path may start with the message's index (``1.stdin=...``; default 0).

Every failure is a :class:`~kuasar.errors.UsageError` (exit 2) naming the method, the field and
what is valid, raised before anything is sent.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor

from kuasar.agentctl.fields import field_names, find_field, is_map, is_well_known, signal_number, type_name
from kuasar.agentctl.lexer import Assign, JsonDoc, Token, Word
from kuasar.errors import UsageError

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from kuasar.agentctl.catalog import Method

#: kata-agent-ctl's option names for the IDs auto values fill.
SLOT_NAMES = ("cid", "sid", "exec_id")

_FILE_URI = "file://"
_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}
_RANGES = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}
_FLOATS = (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE)
#: Well-known types whose JSON form is an object (the others': a string, number, list...).
_OBJECTS = ("google.protobuf.Empty", "google.protobuf.Any", "google.protobuf.Struct")
#: What ``json_format.ParseDict`` raises on values of the wrong shape (not only ``ParseError``).
_JSON_ERRORS = (json_format.ParseError, TypeError, ValueError, KeyError, AttributeError)

ReadFile = Callable[[str], bytes]


class ArgumentError(UsageError):
    """An argument that does not fit the method's request."""


@dataclass
class Request:
    """What a command's arguments make.

    Attributes:
        method: the method.
        messages: the request messages (exactly one unless the method is client-streaming).
        slots: ``cid``/``sid``/``exec_id`` values given on this command.
        explicit: the field paths the arguments set (``"<index>:<path>"``), which auto values leave.
    """

    method: Method
    messages: list[Message]
    slots: dict[str, str] = field(default_factory=dict)
    explicit: set[str] = field(default_factory=set)


def _read(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


class _Composer:
    def __init__(self, method: Method, read_file: ReadFile) -> None:
        self.method = method
        self.read_file = read_file
        self.type = method.request_type()
        self.streaming = method.client_streaming
        self.messages: list[Message] = [] if self.streaming else [self.type()]
        self.slots: dict[str, str] = {}
        self.explicit: set[str] = set()
        self.index = 0

    def error(self, text: str, hints: Sequence[str] = ()) -> ArgumentError:
        return ArgumentError(f"{self.method.path}: {text}", hints=hints)

    def message(self, index: int) -> Message:
        if not self.streaming and index:
            raise self.error(f"message index {index}: {self.method.name} takes one request message")
        if index > len(self.messages):
            raise self.error(
                f"message index {index}: there are {len(self.messages)}; the next is {len(self.messages)}"
            )
        while len(self.messages) <= index:
            self.messages.append(self.type())
        return self.messages[index]

    # -- JSON documents --------------------------------------------------------------------------

    def document(self, value: Any, source: str) -> None:
        items = value if self.streaming and isinstance(value, list) else [value]
        name = self.type.DESCRIPTOR.full_name
        well_known = name.startswith("google.protobuf.")
        for item in items:
            # a well-known type in its JSON form: an Any's {"@type": ...}, a StringValue's string
            if well_known and isinstance(item, dict) == (name in _OBJECTS):
                index = len(self.messages) if self.streaming else 0
                self.whole(self.message(index), item, source)
                continue
            if not isinstance(item, dict):
                kind = "a list of objects" if self.streaming else "an object"
                raise self.error(f"{source}: the request must be {kind}, not {type(item).__name__}")
            index = len(self.messages) if self.streaming else 0
            self.merge(self.message(index), item, "", index, source)

    def merge(self, message: Message, data: dict[str, Any], prefix: str, index: int, source: str) -> None:
        descriptor: Any = message.DESCRIPTOR
        for key, value in data.items():
            fd = find_field(descriptor, key)
            path = prefix + key
            if fd is None:
                raise self.error(
                    f"{source}: unknown field {path!r} in {descriptor.full_name} ({field_names(descriptor)})"
                )
            self.explicit.add(f"{index}:{prefix}{fd.name}")
            plain_message = fd.message_type is not None and not fd.is_repeated and not is_well_known(fd)
            if value is None:
                message.ClearField(fd.name)
            elif plain_message and isinstance(value, dict):
                self.merge(getattr(message, fd.name), value, f"{path}.", index, source)
            else:
                self.set_json(message, fd, value, path, source)

    def whole(self, message: Message, value: Any, source: str) -> None:
        """Replace a well-known message with its JSON form (a wrapper's scalar, an Any's object)."""
        pool: Any = message.DESCRIPTOR.file.pool
        scratch = type(message)()
        try:
            json_format.ParseDict(value, scratch, descriptor_pool=pool)
        except _JSON_ERRORS as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise self.error(f"{source}: not a {message.DESCRIPTOR.full_name}: {detail}") from None
        message.CopyFrom(scratch)

    def set_json(self, message: Message, fd: FieldDescriptor, value: Any, path: str, source: str) -> None:
        """Replace one field with a JSON value, through ``json_format`` (so every type is covered)."""
        if message.DESCRIPTOR.full_name.startswith("google.protobuf.") and fd.message_type is None:
            # inside a well-known type json_format wants its special form; a plain field is simple
            text = json.dumps(value) if isinstance(value, bool) else str(value)
            if fd.type == FieldDescriptor.TYPE_BYTES and isinstance(value, str):
                text = "base64:" + value
            setattr(message, fd.name, self.scalar(fd, text, path))
            return
        scratch = type(message)()
        pool: Any = message.DESCRIPTOR.file.pool
        try:
            json_format.ParseDict({fd.name: value}, scratch, descriptor_pool=pool)
        except _JSON_ERRORS as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise self.error(f"{source}: field {path!r} ({type_name(fd)}): {detail}") from None
        message.ClearField(fd.name)
        if fd.is_repeated:
            getattr(message, fd.name).MergeFrom(getattr(scratch, fd.name))
        elif fd.message_type is not None:
            getattr(message, fd.name).CopyFrom(getattr(scratch, fd.name))
        else:
            setattr(message, fd.name, getattr(scratch, fd.name))

    # -- path=value ------------------------------------------------------------------------------

    def assign(self, token: Assign) -> None:
        segments = token.path.split(".")
        index = 0
        if self.streaming and segments[0].isdecimal():
            index, segments = int(segments[0]), segments[1:]
            if not segments:
                raise self.error(f"{token.path!r}: a message index needs a field after it")
        name = segments[0]
        if name in SLOT_NAMES and len(segments) == 1 and find_field(self.type.DESCRIPTOR, name) is None:
            if token.is_json:
                raise self.error(f"{token.path} must be a plain string")
            self.slots[name] = token.value
            return
        self.index = index
        self.explicit.add(f"{index}:{self.walk(self.message(index), segments, token, [])}")

    def walk(self, message: Message, segments: list[str], token: Assign, done: list[str]) -> str:
        """Set ``token``'s value at ``segments`` below ``message``; return the path as field names."""
        descriptor: Any = message.DESCRIPTOR
        segment, rest = segments[0], segments[1:]
        fd = find_field(descriptor, segment)
        if fd is None:
            where = ".".join(done) or self.method.name
            raise self.error(
                f"unknown field {segment!r} in {where} ({descriptor.full_name}; {field_names(descriptor)})"
            )
        here = [*done, fd.name]
        path = ".".join(here)
        if not rest:
            self.set_value(message, fd, token, path)
            return path
        if is_map(fd):
            return self.walk_map(message, fd, rest, token, here)
        if fd.message_type is None or is_well_known(fd):
            raise self.error(f"{path} ({type_name(fd)}) is not a message: {path}.{rest[0]} does not exist")
        if fd.is_repeated:
            item = self.list_item(message, fd, rest[0], path)
            if not rest[1:]:
                raise self.error(f"{path}.{rest[0]}: set a field of the item ({path}.{rest[0]}.FIELD=...)")
            return self.walk(item, rest[1:], token, [*here, rest[0]])
        return self.walk(getattr(message, fd.name), rest, token, here)

    def walk_map(
        self, message: Message, fd: FieldDescriptor, rest: list[str], token: Assign, here: list[str]
    ) -> str:
        entry: Any = fd.message_type
        key_fd, value_fd = entry.fields_by_name["key"], entry.fields_by_name["value"]
        path = ".".join([*here, rest[0]])
        key = self.scalar(key_fd, rest[0], f"{'.'.join(here)} key")
        mapping = getattr(message, fd.name)
        if value_fd.message_type is None:
            if len(rest) > 1:
                raise self.error(f"{path}: the values of {fd.name} are {type_name(value_fd)}, not messages")
            mapping[key] = self.typed(value_fd, token, path)
            return path
        target = mapping[key]
        if len(rest) > 1:
            return self.walk(target, rest[1:], token, [*here, rest[0]])
        value = token.value
        if not token.is_json:
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                value = None
        if not isinstance(value, dict):
            raise self.error(
                f"{path}: give the map value ({value_fd.message_type.full_name}) as a JSON object"
            )
        self.merge(target, value, f"{path}.", self.index, str(token))
        return path

    def list_item(self, message: Message, fd: FieldDescriptor, text: str, path: str) -> Message:
        items = getattr(message, fd.name)
        if not text.isdecimal():
            raise self.error(f"{path} is a list: address an item by its index ({path}.0.FIELD=...)")
        position = int(text)
        if position > len(items):
            raise self.error(f"{path}.{position}: the list has {len(items)} items; the next is {len(items)}")
        if position == len(items):
            return items.add()  # type: ignore[no-any-return]
        return items[position]  # type: ignore[no-any-return]

    def set_value(self, message: Message, fd: FieldDescriptor, token: Assign, path: str) -> None:
        scalars = fd.is_repeated and fd.message_type is None
        if token.is_json and scalars and isinstance(token.value, list):
            # a list of plain values, typed as name=value's are: [true] for strings is ["true"]
            items = [v if isinstance(v, str) else json.dumps(v) for v in token.value]
            values = [self.scalar(fd, item, f"{path}[{n}]") for n, item in enumerate(items)]
            message.ClearField(fd.name)
            getattr(message, fd.name).extend(values)
            return
        if token.is_json:
            self.set_json(message, fd, token.value, path, str(token))
            return
        text = token.value
        if fd.message_type is not None and (is_map(fd) or not is_well_known(fd) or fd.is_repeated):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                if fd.is_repeated and not is_map(fd):
                    return self.set_list(message, fd, text, path)
                raise self.error(
                    f"{path} ({type_name(fd)}): give it as JSON ({path}={{...}}) or set its fields"
                    f" ({path}.FIELD=VALUE)"
                ) from None
            self.set_json(message, fd, value, path, str(token))
            return
        if fd.message_type is not None:  # a well-known type: its JSON form, e.g. a timestamp string
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                value = text
            self.set_json(message, fd, value, path, str(token))
            return
        if fd.is_repeated:
            return self.set_list(message, fd, text, path)
        setattr(message, fd.name, self.scalar(fd, text, path))

    def set_list(self, message: Message, fd: FieldDescriptor, text: str, path: str) -> None:
        if fd.message_type is not None:
            raise self.error(f"{path} ({type_name(fd)}): give the list as a JSON array")
        inner = text.strip()
        if inner.startswith("[") and inner.endswith("]"):
            inner = inner[1:-1]
            items = [item.strip() for item in inner.split(",")] if inner.strip() else []
        else:
            items = [text]
        values = [self.scalar(fd, item, f"{path}[{n}]") for n, item in enumerate(items)]
        message.ClearField(fd.name)
        getattr(message, fd.name).extend(values)

    def typed(self, fd: FieldDescriptor, token: Assign, path: str) -> Any:
        if token.is_json:
            raise self.error(f"{path} ({type_name(fd)}) takes a plain value, not a JSON object or array")
        return self.scalar(fd, token.value, path)

    def scalar(self, fd: FieldDescriptor, text: str, path: str) -> Any:
        """``text`` as a value of ``fd``'s scalar type."""
        kind = fd.cpp_type
        if fd.type == FieldDescriptor.TYPE_BYTES:
            return self.bytes_value(text, path)
        if kind == FieldDescriptor.CPPTYPE_STRING:
            return text
        if kind == FieldDescriptor.CPPTYPE_BOOL:
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise self.error(f"{path} (bool): {text!r} is not true or false")
        if kind == FieldDescriptor.CPPTYPE_ENUM:
            return self.enum_value(fd, text, path)
        if kind in _FLOATS:
            try:
                return float(text)
            except ValueError:
                raise self.error(f"{path} ({type_name(fd)}): {text!r} is not a number") from None
        return self.int_value(fd, text, path)

    def int_value(self, fd: FieldDescriptor, text: str, path: str) -> int:
        try:
            value = int(text, 0)
        except ValueError:
            try:
                value = int(text, 10)
            except ValueError:
                value = -1 if fd.name.lower() != "signal" else signal_number(text)
                if value < 0:
                    hint = " or a signal name" if fd.name.lower() == "signal" else ""
                    raise self.error(f"{path} ({type_name(fd)}): {text!r} is not an integer{hint}") from None
        low, high = _RANGES[fd.cpp_type]
        if not low <= value <= high:
            raise self.error(f"{path} ({type_name(fd)}): {value} is out of range ({low}..{high})")
        return value

    def enum_value(self, fd: FieldDescriptor, text: str, path: str) -> int:
        enum: Any = fd.enum_type
        values = enum.values
        for value in values:
            if value.name == text:
                return int(value.number)
        for value in values:
            if value.name.lower() == text.lower():
                return int(value.number)
        if text.lstrip("-").isdecimal():
            return int(text)
        names = ", ".join(v.name for v in values)
        raise self.error(f"{path} ({enum.full_name}): {text!r} is not one of {names}")

    def bytes_value(self, text: str, path: str) -> bytes:
        try:
            if text.startswith("hex:"):
                return bytes.fromhex(text[4:])
            if text.startswith("base64:"):
                return base64.b64decode(text[7:], validate=True)
        except (ValueError, binascii.Error) as exc:
            raise self.error(f"{path} (bytes): {text!r}: {exc}") from None
        return text.encode("utf-8", "surrogateescape")

    # -- the whole command -----------------------------------------------------------------------

    def apply(self, token: Token) -> None:
        if isinstance(token, JsonDoc):
            self.document(token.value, "json://")
        elif isinstance(token, Assign):
            self.assign(token)
        elif token.text.startswith(_FILE_URI):
            self.file(token.text)
        else:
            raise self.error(
                f"unexpected argument {token.text!r}",
                hints=["Arguments are name=value, json://{...} or file:///path.json."],
            )

    def file(self, uri: str) -> None:
        path = uri[len(_FILE_URI) :]
        if not path:
            raise self.error(f"{uri}: no path (file:///absolute/path.json)")
        try:
            data = self.read_file(path)
        except OSError as exc:
            raise self.error(f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            value = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise self.error(f"{path}: malformed JSON: {exc}") from None
        self.document(value, path)


def compose(method: Method, args: Sequence[Token], *, read_file: ReadFile = _read) -> Request:
    """The request(s) ``args`` make for ``method``.

    Raises:
        ArgumentError: an unknown field (with the valid ones), a bad value for its type, malformed
            JSON, an unreadable file, or an unexpected argument.
    """
    composer = _Composer(method, read_file)
    for token in args:
        composer.apply(token)
    return Request(method, composer.messages, composer.slots, composer.explicit)


def words(args: Sequence[Token]) -> list[str]:
    """The tokens as text again (for builtins such as ``echo``)."""
    return [t.text if isinstance(t, (Word, JsonDoc)) else str(t) for t in args]
