"""Descriptor helpers of ``kuasar.agentctl``: finding fields, naming types, completing paths.

Layer contract: ``kuasar.agentctl``; protobuf descriptors and the stdlib only, sans-IO.
"""

from __future__ import annotations

import signal
from typing import Any

from google.protobuf.descriptor import FieldDescriptor

_MAX_SHOWN = 12


def field_names(descriptor: Any) -> str:
    names = [f.name for f in descriptor.fields]
    shown = ", ".join(names[:_MAX_SHOWN]) + (", ..." if len(names) > _MAX_SHOWN else "")
    return f"valid: {shown}" if names else f"{descriptor.full_name} has no fields"


def find_field(descriptor: Any, name: str) -> FieldDescriptor | None:
    """The field called ``name`` (its .proto name or its JSON name)."""
    found: FieldDescriptor | None = descriptor.fields_by_name.get(name)
    if found is None:
        found = next((f for f in descriptor.fields if f.json_name == name), None)
    return found


def is_map(fd: FieldDescriptor) -> bool:
    return bool(fd.message_type is not None and fd.message_type.GetOptions().map_entry)


def is_well_known(fd: FieldDescriptor) -> bool:
    return fd.message_type is not None and fd.message_type.full_name.startswith("google.protobuf.")


def signal_number(text: str) -> int:
    """A signal by name (``KILL``, ``SIGKILL``, ``kill``, ``usr1``) or number text; -1 if unknown."""
    if text.isdecimal():
        return int(text)
    name = text.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    try:
        return int(signal.Signals[name])
    except KeyError:
        return -1


def type_name(fd: FieldDescriptor) -> str:
    """A field's type as ``--list`` shows it: ``string``, ``uint32``, ``grpc.Process``, enum names."""
    if is_map(fd):
        entry: Any = fd.message_type
        key, value = entry.fields_by_name["key"], entry.fields_by_name["value"]
        return f"map<{type_name(key)}, {type_name(value)}>"
    if fd.message_type is not None:
        base = fd.message_type.full_name
    elif fd.enum_type is not None:
        base = fd.enum_type.full_name
    else:
        base = _SCALAR_NAMES.get(fd.type, "?")
    return f"repeated {base}" if fd.is_repeated else base


_SCALAR_NAMES = {
    FieldDescriptor.TYPE_DOUBLE: "double",
    FieldDescriptor.TYPE_FLOAT: "float",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_UINT64: "uint64",
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_FIXED64: "fixed64",
    FieldDescriptor.TYPE_FIXED32: "fixed32",
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_UINT32: "uint32",
    FieldDescriptor.TYPE_SFIXED32: "sfixed32",
    FieldDescriptor.TYPE_SFIXED64: "sfixed64",
    FieldDescriptor.TYPE_SINT32: "sint32",
    FieldDescriptor.TYPE_SINT64: "sint64",
}


def field_completions(descriptor: Any, text: str) -> list[str]:
    """What ``text`` (a partial ``path=``) may complete to among ``descriptor``'s fields: leaves as
    ``path=``, messages also as ``path.`` (for ``-i``'s completion)."""
    *done, partial = text.split(".")
    prefix = "".join(part + "." for part in done)
    for segment in done:
        fd = find_field(descriptor, segment)
        if fd is None or fd.message_type is None or fd.is_repeated or is_well_known(fd):
            return []
        descriptor = fd.message_type
    found = []
    for fd in descriptor.fields:
        if not fd.name.startswith(partial):
            continue
        found.append(f"{prefix}{fd.name}=")
        if fd.message_type is not None and not fd.is_repeated and not is_well_known(fd):
            found.append(f"{prefix}{fd.name}.")
    return found
