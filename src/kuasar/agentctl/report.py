"""What a call did, as ``--json`` lines or as text; and ``--list``, sans-IO.

Layer contract: ``kuasar.agentctl``; protobuf (``json_format``), ``kuasar.codes``. Returns strings
and dicts; the CLI writes them.

One ``--json`` line per call::

    {"method": "grpc.Health/Check", "code": 0, "status": "OK", "message": "",
     "elapsed_ms": 0.42, "request": {...}, "response": {...}, "auto": {"container_id": "..."}}

Messages are protobuf JSON with the .proto field names and every scalar shown (64-bit integers are
strings, bytes base64, as protobuf's JSON mapping says). A streaming call's ``response`` (and a
client-streaming call's ``request``) is a list of messages. A failure decided on this side (the
``--timeout`` expired, the connection dropped) has ``"local": true`` and code DEADLINE_EXCEEDED or
UNAVAILABLE.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format

from kuasar.agentctl.auto import DEFAULTS, ID_FIELDS
from kuasar.agentctl.fields import is_map, type_name
from kuasar.codes import CODE_NAMES, Code
from kuasar.errors import UsageError

if TYPE_CHECKING:
    from google.protobuf.descriptor import Descriptor
    from google.protobuf.message import Message

    from kuasar.agentctl.auto import Filled
    from kuasar.agentctl.catalog import Catalog, Method, Service

_NOT_SERVED = (Code.UNIMPLEMENTED, Code.INVALID_ARGUMENT)


def message_json(message: Message) -> dict[str, Any]:
    """``message`` as protobuf JSON (proto field names, scalars always shown, in field order)."""
    pool: Any = message.DESCRIPTOR.file.pool
    data = json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        descriptor_pool=pool,
    )
    ordered: dict[str, Any] = _ordered(message.DESCRIPTOR, data)
    return ordered


def _ordered(descriptor: Any, data: Any) -> Any:
    """``data`` (a message's JSON) with its keys in field order, nested messages too."""
    if not isinstance(data, dict) or descriptor.full_name.startswith("google.protobuf."):
        return data
    out: dict[str, Any] = {}
    for fd in descriptor.fields:
        if fd.name not in data:
            continue
        value = data[fd.name]
        nested = fd.message_type
        if nested is not None and is_map(fd):
            inner = nested.fields_by_name["value"].message_type
            if inner is not None:
                value = {key: _ordered(inner, item) for key, item in value.items()}
        elif nested is not None:
            value = [_ordered(nested, item) for item in value] if fd.is_repeated else _ordered(nested, value)
        out[fd.name] = value
    out.update((key, value) for key, value in data.items() if key not in out)
    return out


def status_name(code: int) -> str:
    return CODE_NAMES.get(code, f"CODE_{code}")


@dataclass
class CallResult:
    """One call's outcome.

    Attributes:
        method: the method called.
        code: the status code (0 for OK).
        message: the status message (or what failed locally).
        elapsed: seconds from sending to the end.
        requests: the request messages sent, as JSON.
        responses: the response messages, as JSON.
        auto: the fields auto values filled.
        local: the failure was decided on this side (timeout, connection).
    """

    method: Method
    code: int = 0
    message: str = ""
    elapsed: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)
    auto: Sequence[Filled] = ()
    local: bool = False

    @property
    def ok(self) -> bool:
        return self.code == Code.OK

    @property
    def status(self) -> str:
        return status_name(self.code)

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "method": self.method.path,
            "code": self.code,
            "status": self.status,
            "message": self.message,
            "elapsed_ms": round(self.elapsed * 1000, 3),
            "request": self.requests if self.method.client_streaming else (self.requests or [{}])[0],
        }
        if self.method.server_streaming:
            data["response"] = self.responses
        else:
            data["response"] = self.responses[0] if self.ok and self.responses else None
        sent = (self.requests or [{}])[0]  # the values as protobuf JSON spells them (int64 as text)
        data["auto"] = {filled.field: sent.get(filled.field, filled.value) for filled in self.auto}
        if self.local:
            data["local"] = True
        return data

    def json_line(self) -> str:
        return json.dumps(self.as_json(), separators=(", ", ": ")) + "\n"


def _elapsed(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def not_served_hint(result: CallResult, kind: str | None) -> str | None:
    """Why a refusal probably means "no such service here", for the text output."""
    if result.local or result.code not in _NOT_SERVED:
        return None
    service = result.method.service
    if kind and not service.served_by(kind):
        return f"a {kind} guest does not serve {service.name} (it is served by: {service.origin})"
    if result.code == Code.UNIMPLEMENTED:
        return f"the server does not implement {result.method.path}"
    return None


def render_text(result: CallResult, kind: str | None = None) -> str:
    """The text form: a status line, then the response as indented JSON (unary calls)."""
    head = f"{result.method.path}: {result.status}" + ("" if result.ok else f" ({result.code})")
    if result.method.server_streaming:
        count = len(result.responses)
        head += f"{',' if result.ok else ' after'} {count} message{'s' * (count != 1)}"
    if not result.ok and result.message:
        head += f": {result.message}"
    lines = [f"{head} [{_elapsed(result.elapsed)}]"]
    hint = None if result.ok else not_served_hint(result, kind)
    if hint:
        lines.append(f"  ({hint})")
    if result.ok and not result.method.server_streaming and result.responses and result.responses[0]:
        lines.append(json.dumps(result.responses[0], indent=2, ensure_ascii=False))
    return "\n".join(lines) + "\n"


def render_stream_message(data: dict[str, Any]) -> str:
    """One message of a server stream, as it arrives (text output): compact JSON."""
    return json.dumps(data, ensure_ascii=False) + "\n"


# -- --list --------------------------------------------------------------------------------------

_DEPTH_ALL, _DEPTH_SERVICE, _DEPTH_METHOD = 1, 2, 6


def _auto_notes(method: Method) -> dict[str, str]:
    notes = {name: f"auto: {slot}" for name, slot in ID_FIELDS.get(method.path, ())}
    notes.update({name: "auto: default" for name, _ in DEFAULTS.get(method.path, ())})
    return notes


def _fields(
    descriptor: Descriptor, depth: int, indent: str, notes: dict[str, str], seen: tuple[str, ...]
) -> list[str]:
    lines = []
    for fd in descriptor.fields:
        extra = []
        if fd.containing_oneof is not None and not fd.containing_oneof.name.startswith("_"):
            extra.append(f"oneof {fd.containing_oneof.name}")
        if fd.name in notes:
            extra.append(notes[fd.name])
        suffix = f"  [{', '.join(extra)}]" if extra else ""
        lines.append(f"{indent}{fd.name}: {type_name(fd)} = {fd.number}{suffix}")
        nested: Any = fd.message_type
        if is_map(fd):
            nested = nested.fields_by_name["value"].message_type
        if nested is None or nested.full_name.startswith("google.protobuf.") or depth <= 1:
            continue
        if nested.full_name in seen:
            lines.append(f"{indent}    ... ({nested.full_name}, recursive)")
            continue
        lines.extend(_fields(nested, depth - 1, indent + "    ", {}, (*seen, nested.full_name)))
    return lines


def _signature(method: Method) -> str:
    request = ("stream " if method.client_streaming else "") + method.descriptor.input_type.full_name
    response = ("stream " if method.server_streaming else "") + method.descriptor.output_type.full_name
    return f"{method.name}({request}) -> {response}"


def _service_text(service: Service, depth: int, only: Method | None = None) -> list[str]:
    lines = [f"{service.name}  ({service.origin})"]
    for method in service.methods:
        if only is not None and method.descriptor is not only.descriptor:
            continue
        lines.append(f"  {_signature(method)}")
        request = method.descriptor.input_type
        lines.extend(_fields(request, depth, "      ", _auto_notes(method), (request.full_name,)))
    return lines


def _field_json(descriptor: Descriptor, method: Method | None) -> list[dict[str, Any]]:
    notes = _auto_notes(method) if method is not None else {}
    return [
        {"name": fd.name, "json_name": fd.json_name, "number": fd.number, "type": type_name(fd)}
        | ({"auto": notes[fd.name].removeprefix("auto: ")} if fd.name in notes else {})
        for fd in descriptor.fields
    ]


def list_json(catalog: Catalog, services: Sequence[Service], only: Method | None = None) -> str:
    """``--list --json``: one object per service with its methods and their request fields."""
    out = []
    for service in services:
        methods = [m for m in service.methods if only is None or m.descriptor is only.descriptor]
        out.append(
            {
                "service": service.name,
                "origin": service.origin,
                "methods": [
                    {
                        "name": m.name,
                        "path": m.path,
                        "kind": m.kind,
                        "request": m.descriptor.input_type.full_name,
                        "response": m.descriptor.output_type.full_name,
                        "fields": _field_json(m.descriptor.input_type, m),
                    }
                    for m in methods
                ],
            }
        )
    return json.dumps(out, indent=2) + "\n"


def list_text(catalog: Catalog, selector: str | None) -> str:
    """``--list [SERVICE|METHOD]``: services, their methods and request fields (deeper when one
    service or one method is selected).

    Raises:
        UsageError: ``selector`` names no service or method.
    """
    if not selector:
        blocks = [_service_text(service, _DEPTH_ALL) for service in catalog.services]
    else:
        services, method = select(catalog, selector)
        if method is not None:
            blocks = [_service_text(method.service, _DEPTH_METHOD, method)]
        else:
            blocks = [_service_text(service, _DEPTH_SERVICE) for service in services]
    return "\n".join("\n".join(block) + "\n" for block in blocks)


def select(catalog: Catalog, selector: str) -> tuple[list[Service], Method | None]:
    """The services (or the one method) ``--list SELECTOR`` names."""
    try:
        return [catalog.service(selector)], None
    except UsageError as service_error:
        try:
            methods = catalog.candidates(selector)
        except UsageError:
            raise service_error from None
        if len(methods) == 1:
            return [methods[0].service], methods[0]
        return [m.service for m in methods], None


def help_text(catalog: Catalog) -> str:
    """The ``help``/``list`` builtin: builtins, then every method by service."""
    import textwrap

    lines = [
        "Builtin commands: echo WORDS, sleep DURATION, repeat N [COMMAND], quit, help",
        "Agent API commands (METHOD or SERVICE/METHOD, then name=value, json://{...}, file:///f.json):",
    ]
    for service in catalog.services:
        lines.append(f"  {service.name} ({service.origin}):")
        names = " ".join(m.name for m in service.methods)
        lines.extend(textwrap.wrap(names, 96, initial_indent="    ", subsequent_indent="    "))
    lines.append("kuasarctl agent --list [SERVICE|METHOD] shows the request fields.")
    return "\n".join(lines) + "\n"
