"""The hot messages of the agent API path: frozen records (:class:`~kuasar.wire.Message`) with a field table.

Layer contract: bottom layer, sans-IO; imports only the stdlib (``types``) and the other
``kuasar.wire`` modules. Each class mirrors one message of ``src/kuasar/proto/*.proto`` (field
names, numbers and types copied from there) and must stay byte-identical to its generated stub;
``tests/unit/test_wire_codec.py`` proves it against the stubs' descriptors. A ``.proto`` change to
one of these messages needs the same change here.

Shapes: scalars default to their proto3 zero value; repeated fields are tuples; the one map field
(``ExecStart.env``) is a ``dict``; a submessage field is ``None`` when absent; a oneof is one
``None``-defaulted attribute per member (at most one set) plus a ``kind`` property naming the set
one, like the stubs' ``WhichOneof("kind")``.
"""

from __future__ import annotations

from kuasar.wire._codec import (
    BOOL,
    BYTES,
    INT32,
    INT64,
    MAP,
    MESSAGE,
    STRING,
    UINT32,
    Field,
    Schema,
    _varint,
)
from kuasar.wire._message import Message

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

#: ``types.MappingProxyType``, as ``types`` itself defines it (that module is not imported here).
_NO_ENTRIES: Mapping[str, str] = type(type.__dict__)({})


class _KindOneof(Message):
    """A message whose one oneof is named ``kind`` (the Exec stream frames)."""

    @property
    def kind(self) -> str | None:
        """The name of the member of ``kind`` that is set, or ``None`` (``WhichOneof("kind")``)."""
        return self._which("kind")


# ---------------------------------------------------------------------- ttrpc envelope (ttrpc.proto)


class KeyValue(Message):
    """``ttrpc.KeyValue``: one metadata entry of a :class:`Request`."""

    key: str = ""
    value: str = ""

    _schema = Schema(Field(1, "key", STRING), Field(2, "value", STRING))


class Request(Message):
    """``ttrpc.Request``: the envelope of a call; ``payload`` is the serialized request message."""

    service: str = ""
    method: str = ""
    payload: bytes = b""
    timeout_nano: int = 0
    metadata: tuple[KeyValue, ...] = ()

    _schema = Schema(
        Field(1, "service", STRING),
        Field(2, "method", STRING),
        Field(3, "payload", BYTES),
        Field(4, "timeout_nano", INT64),
        Field(5, "metadata", MESSAGE, repeated=True, message=KeyValue),
    )


class AnyMessage(Message):
    """``google.protobuf.Any``, as carried in :attr:`Status.details`."""

    type_url: str = ""
    value: bytes = b""

    _schema = Schema(Field(1, "type_url", STRING), Field(2, "value", BYTES))


class Status(Message):
    """``ttrpc.Status`` (``google.rpc.Status``'s field numbers): ``code`` 0 is OK."""

    code: int = 0
    message: str = ""
    details: tuple[AnyMessage, ...] = ()

    _schema = Schema(
        Field(1, "code", INT32),
        Field(2, "message", STRING),
        Field(3, "details", MESSAGE, repeated=True, message=AnyMessage),
    )


class Response(Message):
    """``ttrpc.Response``: ``status`` is ``None`` when absent (Go leaves it out on success)."""

    status: Status | None = None
    payload: bytes = b""

    _schema = Schema(Field(1, "status", MESSAGE, message=Status), Field(2, "payload", BYTES))


# The ttrpc client's per-call envelope, without the generic codec (byte-identical to it: tested).


def request_tail(payload: bytes, timeout_nano: int) -> bytes:
    """``Request(payload=payload, timeout_nano=timeout_nano).encode()``: the two fields a call
    varies (3 and 4), each written only when set, as proto3 does. The caller adds the encoded
    service and method before it (fields 1 and 2, the same for every call of a method)."""
    if not 0 <= timeout_nano < 1 << 63:
        return Request(payload=payload, timeout_nano=timeout_nano).encode()  # its range error
    out = b"\x1a" + _varint(len(payload)) + payload if payload else b""
    return out + b"\x20" + _varint(timeout_nano) if timeout_nano else out


def response_payload(data: bytes) -> bytes | None:
    """The payload of a Response holding nothing else (no status: a success as Go and we send
    it), or ``None`` when it needs :meth:`Response.decode` (a status, or anything unusual)."""
    if not data:
        return b""
    if data[0] != 0x12:  # field 2, length-delimited
        return None
    length = shift = 0
    for pos in range(1, min(len(data), 6)):
        byte = data[pos]
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            return data[pos + 1 :] if pos + 1 + length == len(data) else None
        shift += 7
    return None


# ------------------------------------------------------------------------ grpc.Health (health.proto)


class CheckRequest(Message):
    """``grpc.CheckRequest``: the argument of ``grpc.Health/Check`` and ``/Version``."""

    service: str = ""
    option_val: str = ""

    _schema = Schema(Field(1, "service", STRING), Field(2, "option_val", STRING))


class HealthCheckResponse(Message):
    """``grpc.HealthCheckResponse``; ``status`` is a ``ServingStatus`` number (open enum)."""

    UNKNOWN = 0
    SERVING = 1
    NOT_SERVING = 2

    status: int = 0

    _schema = Schema(Field(1, "status", INT32))


# ------------------------------------------------------------------ kuasar.agent.v1 (agent.proto)


class PingRequest(Message):
    """``kuasar.agent.v1.PingRequest``; ``timestamp_secs`` is the host's wall clock, or 0."""

    message: str = ""
    timestamp_secs: int = 0

    _schema = Schema(Field(1, "message", STRING), Field(2, "timestamp_secs", INT64))


class PingResponse(Message):
    """``kuasar.agent.v1.PingResponse``: ``"pong"`` or ``"pong: <message>"``, and the version."""

    message: str = ""
    version: str = ""

    _schema = Schema(Field(1, "message", STRING), Field(2, "version", STRING))


class ExecVMProcessRequest(Message):
    """``grpc.SandboxService``'s ``ExecVMProcessRequest`` (Kuasar vmm-task): ``bash -c command``."""

    command: str = ""
    stdin: bytes = b""

    _schema = Schema(Field(1, "command", STRING), Field(2, "stdin", BYTES))


class ExecVMProcessResponse(Message):
    """``grpc.SandboxService``'s ``ExecVMProcessResponse``: the command's stdout (exit 0 only)."""

    out: str = ""

    _schema = Schema(Field(1, "out", STRING))


class TerminalSize(Message):
    """``kuasar.agent.v1.TerminalSize``, in character cells."""

    rows: int = 0
    cols: int = 0

    _schema = Schema(Field(1, "rows", UINT32), Field(2, "cols", UINT32))


class ExecStart(Message):
    """``kuasar.agent.v1.ExecStart``: what to run; the first :class:`ExecInput` of an Exec stream.

    ``argv_bytes``, ``env_bytes`` (``KEY=VALUE`` entries) and ``cwd_bytes`` are the byte-exact twins
    of ``argv``, ``env`` and ``cwd``; the agent prefers each one when set.
    """

    argv: tuple[str, ...] = ()
    env: Mapping[str, str] = _NO_ENTRIES  # decoded as a dict; left out of hash()
    cwd: str = ""
    user: str = ""
    tty: bool = False
    size: TerminalSize | None = None
    container_id: str = ""
    stdin: bool = False
    argv_bytes: tuple[bytes, ...] = ()
    env_bytes: tuple[bytes, ...] = ()
    cwd_bytes: bytes = b""

    _schema = Schema(
        Field(1, "argv", STRING, repeated=True),
        Field(2, "env", MAP),
        Field(3, "cwd", STRING),
        Field(4, "user", STRING),
        Field(5, "tty", BOOL),
        Field(6, "size", MESSAGE, message=TerminalSize),
        Field(7, "container_id", STRING),
        Field(8, "stdin", BOOL),
        Field(9, "argv_bytes", BYTES, repeated=True),
        Field(10, "env_bytes", BYTES, repeated=True),
        Field(11, "cwd_bytes", BYTES),
    )


class ExecInput(_KindOneof):
    """``kuasar.agent.v1.ExecInput``: one client-to-agent frame of an Exec stream (oneof ``kind``).

    Raises:
        ValueError: more than one member of ``kind`` is set.
    """

    start: ExecStart | None = None
    stdin: bytes | None = None
    stdin_eof: bool | None = None
    resize: TerminalSize | None = None
    signal: int | None = None

    _schema = Schema(
        Field(1, "start", MESSAGE, message=ExecStart, oneof="kind"),
        Field(2, "stdin", BYTES, oneof="kind"),
        Field(3, "stdin_eof", BOOL, oneof="kind"),
        Field(4, "resize", MESSAGE, message=TerminalSize, oneof="kind"),
        Field(5, "signal", INT32, oneof="kind"),
    )


class ExitStatus(Message):
    """``kuasar.agent.v1.ExitStatus``: ``exit_code`` is valid when ``signal`` is 0."""

    exit_code: int = 0
    signal: int = 0
    core_dumped: bool = False

    _schema = Schema(Field(1, "exit_code", INT32), Field(2, "signal", INT32), Field(3, "core_dumped", BOOL))


class ExecStarted(Message):
    """``kuasar.agent.v1.ExecStarted``: the process is running as ``pid`` in the guest."""

    pid: int = 0

    _schema = Schema(Field(1, "pid", INT32))


class ExecOutput(_KindOneof):
    """``kuasar.agent.v1.ExecOutput``: one agent-to-client frame of an Exec stream (oneof ``kind``).

    Raises:
        ValueError: more than one member of ``kind`` is set.
    """

    started: ExecStarted | None = None
    stdout: bytes | None = None
    stderr: bytes | None = None
    exit: ExitStatus | None = None

    _schema = Schema(
        Field(1, "started", MESSAGE, message=ExecStarted, oneof="kind"),
        Field(2, "stdout", BYTES, oneof="kind"),
        Field(3, "stderr", BYTES, oneof="kind"),
        Field(4, "exit", MESSAGE, message=ExitStatus, oneof="kind"),
    )
