"""An OCI bundle's ``config.json`` as Kata's agent API spells it (``--bundle-dir``), sans-IO.

Layer contract: ``kuasar.agentctl``; protobuf descriptors and ``json_format`` only. The caller
reads the file.

The runtime spec's JSON uses lowerCamelCase (``args``, ``oomScoreAdj``, ``uidMappings``); Kata's
``oci.proto`` (package ``grpc``) keeps Go's names (``Args``, ``OOMScoreAdj``, ``UIDMappings``). Keys
are matched to the message's fields case-insensitively (and ``ociVersion`` is ``Version``); keys
Kata has no field for are dropped and named, so the caller can say so. A relative ``root.path`` is
made absolute against the bundle directory, as kata-agent-ctl does.
"""

from __future__ import annotations

import os
from typing import Any

from google.protobuf import json_format

from kuasar.agentctl.fields import is_map
from kuasar.errors import UsageError

_RENAMED = {"ociversion": "version"}


def convert(descriptor: Any, data: Any, path: str = "") -> tuple[Any, list[str]]:
    """``data`` with each object's keys renamed to ``descriptor``'s fields; the dropped keys' paths."""
    if not isinstance(data, dict):
        return data, []
    by_name = {fd.name.lower(): fd for fd in descriptor.fields}
    out: dict[str, Any] = {}
    dropped: list[str] = []
    for key, given in data.items():
        fd = by_name.get(_RENAMED.get(key.lower(), key.lower()))
        where = f"{path}{key}"
        if fd is None:
            dropped.append(where)
            continue
        value = given
        nested = fd.message_type
        if nested is not None and not is_map(fd):
            if fd.is_repeated and isinstance(given, list):
                items = [convert(nested, item, f"{where}.") for item in given]
                value = [item for item, _ in items]
                dropped.extend(d for _, lost in items for d in lost)
            else:
                value, lost = convert(nested, given, f"{where}.")
                dropped.extend(lost)
        out[fd.name] = value
    return out, dropped


def load(message: Any, data: Any, source: str) -> list[str]:
    """Fill ``message`` (a Kata ``grpc.Spec`` or ``grpc.Process``) from OCI JSON; the dropped keys.

    Raises:
        UsageError: the JSON does not fit (a value of the wrong type).
    """
    converted, dropped = convert(message.DESCRIPTOR, data)
    try:
        json_format.ParseDict(converted, message, descriptor_pool=message.DESCRIPTOR.file.pool)
    except (json_format.ParseError, TypeError, ValueError) as exc:
        raise UsageError(f"{source}: does not fit Kata's {message.DESCRIPTOR.full_name}: {exc}") from None
    return dropped


def absolute_root(spec: dict[str, Any], bundle: str) -> dict[str, Any]:
    """``spec`` with a relative ``root.path`` made absolute against ``bundle``."""
    root = spec.get("root")
    if isinstance(root, dict) and isinstance(root.get("path"), str) and not os.path.isabs(root["path"]):
        return {**spec, "root": {**root, "path": os.path.join(os.path.abspath(bundle), root["path"])}}
    return spec
