"""Limits and timeouts, in one frozen, validated record passed down explicitly.

Layer contract: bottom layer; imports only ``kuasar.errors``. Nothing reads globals for a limit:
whoever needs one takes a ``Limits`` argument (default ``DEFAULT_LIMITS``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from kuasar.errors import UsageError

#: ttrpc's maximum message data length (Go and Rust: ``4 << 20``); exactly this many bytes is allowed.
TTRPC_MAX_MESSAGE = 4 << 20

#: vsock port of the agent API (ttrpc) and of the debug console, as Kuasar's vmm-task uses them.
AGENT_PORT = 1024
CONSOLE_PORT = 1025


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on everything read from the wire, and the waits around it.

    Attributes:
        max_message: largest ttrpc message data length accepted or sent.
        handshake_line: longest hybrid vsock ``OK ...`` / ``CONNECT ...`` line, newline included.
        console_header: longest ``KSR_MODE`` header line the debug console sniffs for.
        connect_timeout: total budget for dialing, including hvsock retries while the guest is not
            listening yet.
        handshake_timeout: how long a VMM-side server waits for a client's ``CONNECT`` line.
        console_sniff: how long the debug console waits for a ``KSR_MODE`` line before starting a
            plain shell.
        stream_queue: messages buffered per ttrpc stream before the connection's reader pauses.
        shutdown_grace: how long a server drains in-flight calls when it is closed.
    """

    max_message: int = TTRPC_MAX_MESSAGE
    handshake_line: int = 64
    console_header: int = 1024
    connect_timeout: float = 10.0
    handshake_timeout: float = 10.0
    console_sniff: float = 0.1
    stream_queue: int = 64
    shutdown_grace: float = 5.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value <= 0:
                raise UsageError(f"limit {field.name} must be positive, got {value!r}")
        if self.max_message > TTRPC_MAX_MESSAGE:
            raise UsageError(
                f"limit max_message {self.max_message} exceeds ttrpc's maximum of {TTRPC_MAX_MESSAGE}"
            )

    def replace(self, **changes: float) -> Limits:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


DEFAULT_LIMITS = Limits()

#: A tighter profile for tests: small buffers, short waits, so a bug shows as a failure, not a hang.
TEST_LIMITS = Limits(
    max_message=64 * 1024,
    connect_timeout=2.0,
    handshake_timeout=1.0,
    stream_queue=8,
    shutdown_grace=1.0,
)
