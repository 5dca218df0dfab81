"""The one exception tree of kuasar-py.

Layer contract: bottom layer. Imports nothing from kuasar; every other module may import it.
Only ``kuasar.ctl`` turns these into stderr lines and exit codes (``str(exc)`` is the one-line
message, ``exc.hints`` the follow-up lines, ``exc.exit_code`` the process exit code).

::

    KuasarError                      exit 125: kuasarctl itself failed
    ├── UsageError                   exit 2: bad flags or arguments
    ├── AddressError(UsageError)     an address string that does not parse
    ├── SandboxError                 discovery and local sandbox management
    │   ├── SandboxNotFound
    │   └── AmbiguousSandbox
    ├── TransportError               we could not talk
    │   ├── ConnectError             socket missing, refused, permission
    │   ├── HandshakeError           hybrid vsock CONNECT refused or garbled
    │   └── ConnectionClosed         the peer went away (EOF, reset, broken pipe)
    ├── ProtocolError                the peer broke the protocol (bad frame, oversize, garbage)
    ├── RPCError                     the agent answered with a non-OK ttrpc status
    ├── RemoteCommandError           the remote command could not be started
    │   ├── CommandNotFound          exit 127
    │   └── CommandNotExecutable     exit 126
    ├── Interrupted                  exit 130: Ctrl-C
    └── DeadlineExceeded(KuasarError, TimeoutError)   exit 124
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType


class KuasarError(Exception):
    """Root of every error kuasar-py raises on purpose. Catch this to catch all of them."""

    exit_code: int = 125

    def __init__(self, message: str, *, hints: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.hints: tuple[str, ...] = tuple(hints)

    def __str__(self) -> str:
        return self.message


class UsageError(KuasarError):
    """The command line or an argument is wrong."""

    exit_code = 2


class AddressError(UsageError):
    """An address string does not parse."""


class SandboxError(KuasarError):
    """Finding, starting or stopping a sandbox failed."""


class SandboxNotFound(SandboxError):
    """No sandbox matches the given ID or prefix."""


class AmbiguousSandbox(SandboxError):
    """A prefix matches several sandboxes."""

    def __init__(self, message: str, *, matches: Sequence[str], hints: Sequence[str] = ()) -> None:
        super().__init__(message, hints=hints)
        self.matches = tuple(matches)


class TransportError(KuasarError):
    """We could not talk to the peer (as opposed to the peer saying no).

    Attributes:
        reason: what went wrong, for callers that diagnose (one of the ``REASON_*`` names, or "").
    """

    def __init__(self, message: str, *, hints: Sequence[str] = (), reason: str = "") -> None:
        super().__init__(message, hints=hints)
        self.reason = reason


#: The socket file does not exist.
REASON_MISSING = "missing"
#: The socket exists but nothing accepts on it (a crashed VMM's stale socket).
REASON_REFUSED = "refused"
#: The socket may not be opened by this user.
REASON_DENIED = "permission"
#: The VMM accepted, then closed the ``CONNECT`` without ``OK``: nothing listens on that guest port.
REASON_NO_LISTENER = "no-listener"
#: The VMM accepted and never answered the ``CONNECT``.
REASON_SILENT = "silent"


class ConnectError(TransportError):
    """Connecting failed: socket missing, refused, or not permitted."""


class HandshakeError(TransportError):
    """The hybrid vsock ``CONNECT``/``OK`` handshake failed."""


class ConnectionClosed(TransportError):
    """The connection was closed or reset by the peer."""


class ProtocolError(KuasarError):
    """The peer sent something the protocol does not allow."""


#: How each gRPC status code (by number, as ``kuasar.ttrpc.Code`` numbers them) reads to an operator.
_RPC_PLAIN = {
    1: "the call was cancelled",  # CANCELLED
    2: "the agent failed",  # UNKNOWN
    3: "the agent refused",  # INVALID_ARGUMENT
    4: "the agent ran out of time",  # DEADLINE_EXCEEDED
    5: "the agent refused",  # NOT_FOUND
    6: "the agent refused",  # ALREADY_EXISTS
    7: "the agent refused (permission denied)",  # PERMISSION_DENIED
    8: "the agent refused (over a limit)",  # RESOURCE_EXHAUSTED
    9: "the agent refused",  # FAILED_PRECONDITION
    10: "the agent aborted the call",  # ABORTED
    11: "the agent refused",  # OUT_OF_RANGE
    12: "the agent does not support this call",  # UNIMPLEMENTED
    13: "the agent failed",  # INTERNAL
    14: "the agent is unavailable",  # UNAVAILABLE
    15: "the agent failed (data loss)",  # DATA_LOSS
    16: "the agent refused (not authenticated)",  # UNAUTHENTICATED
}


class RPCError(KuasarError):
    """The remote side answered a call with a non-OK status.

    ``str()`` speaks plainly, without the code's name: ``the agent failed: internal error`` (UNKNOWN,
    INTERNAL), ``the agent refused: <message>`` (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION...),
    ``the agent does not support this call: <message>`` (UNIMPLEMENTED). Programs compare ``code``.

    Attributes:
        code: the gRPC status code number (compare with ``kuasar.ttrpc.Code``).
        message: the status message, as the remote side sent it.
        details: the raw ``google.protobuf.Any`` messages of the status, if any.
    """

    def __init__(
        self, code: int, message: str, details: Sequence[object] = (), *, hints: Sequence[str] = ()
    ) -> None:
        super().__init__(message, hints=hints)
        self.code = code
        self.details = tuple(details)

    def __str__(self) -> str:
        plain = _RPC_PLAIN.get(self.code, f"the agent answered with status {self.code}")
        return f"{plain}: {self.message}" if self.message else plain


class RemoteCommandError(KuasarError):
    """The remote command could not be started."""


class CommandNotFound(RemoteCommandError):
    exit_code = 127


class CommandNotExecutable(RemoteCommandError):
    exit_code = 126


class Interrupted(KuasarError):
    """The user pressed Ctrl-C."""

    exit_code = 130


class DeadlineExceeded(KuasarError, TimeoutError):
    """A timeout expired. Carries whatever output was collected before it did."""

    exit_code = 124

    def __init__(
        self, message: str, *, hints: Sequence[str] = (), stdout: bytes = b"", stderr: bytes = b""
    ) -> None:
        super().__init__(message, hints=hints)
        self.stdout = stdout
        self.stderr = stderr


class Translating:
    """Base of the context managers that re-raise some exceptions of their body as kuasar errors.

    A class, not ``contextlib.contextmanager``: ``contextlib`` loads ``functools`` and
    ``collections``, which ``kuasarctl exec``'s start-up path does without. A subclass implements
    :meth:`translate`; ``chain = False`` hides the original (``raise ... from None``).
    """

    chain = True

    def translate(self, exc: BaseException) -> BaseException | None:
        """The exception to raise instead of ``exc``, or ``None`` to let ``exc`` pass (this base
        lets everything pass)."""
        return None

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if exc is not None and (replacement := self.translate(exc)) is not None:
            raise replacement from (exc if self.chain else None)
