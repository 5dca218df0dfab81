"""A dependency-free protobuf codec for exactly the hot messages of the agent API path.

Layer contract: bottom layer (beside ``errors``, ``config`` and ``address``), sans-IO. Imports only
the stdlib and :mod:`kuasar.errors`; never ``google.protobuf`` or ``kuasar.proto``, whose descriptor
layer costs ~40 ms at start-up, which is the point of this package. Everything else keeps the
generated stubs.

It covers the ttrpc envelope (:class:`Request`, :class:`Response`, :class:`Status`,
:class:`KeyValue`, :class:`AnyMessage`), ``grpc.Health`` (:class:`CheckRequest`,
:class:`HealthCheckResponse`), ``Ping``, ``ExecVMProcess`` (a stock vmm-task's one-shot exec)
and the Exec stream (:class:`ExecInput`, :class:`ExecStart`, :class:`TerminalSize`,
:class:`ExecOutput`, :class:`ExecStarted`, :class:`ExitStatus`). Each is a
frozen, slotted record (dataclass-like, without the cost of creating dataclasses) with
``encode() -> bytes`` and ``decode(data) -> Self``. It must stay
byte-identical to the generated stubs in both directions; ``tests/unit/test_wire_codec.py`` proves
it. The wire rules, and the one place they differ from upb, are in :mod:`kuasar.wire._codec`.
"""

from kuasar.wire._message import Message
from kuasar.wire.messages import (
    AnyMessage,
    CheckRequest,
    ExecInput,
    ExecOutput,
    ExecStart,
    ExecStarted,
    ExecVMProcessRequest,
    ExecVMProcessResponse,
    ExitStatus,
    HealthCheckResponse,
    KeyValue,
    PingRequest,
    PingResponse,
    Request,
    Response,
    Status,
    TerminalSize,
    request_tail,
    response_payload,
)

__all__ = [
    "AnyMessage",
    "CheckRequest",
    "ExecInput",
    "ExecOutput",
    "ExecStart",
    "ExecStarted",
    "ExecVMProcessRequest",
    "ExecVMProcessResponse",
    "ExitStatus",
    "HealthCheckResponse",
    "KeyValue",
    "Message",
    "PingRequest",
    "PingResponse",
    "Request",
    "Response",
    "Status",
    "TerminalSize",
    "request_tail",
    "response_payload",
]
