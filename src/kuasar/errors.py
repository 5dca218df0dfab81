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

from collections.abc import Sequence


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
    """We could not talk to the peer (as opposed to the peer saying no)."""


class ConnectError(TransportError):
    """Connecting failed: socket missing, refused, or not permitted."""


class HandshakeError(TransportError):
    """The hybrid vsock ``CONNECT``/``OK`` handshake failed."""


class ConnectionClosed(TransportError):
    """The connection was closed or reset by the peer."""


class ProtocolError(KuasarError):
    """The peer sent something the protocol does not allow."""


class RPCError(KuasarError):
    """The remote side answered a call with a non-OK status.

    Attributes:
        code: the gRPC status code number (see ``kuasar.ttrpc.Code``).
        details: the raw ``google.protobuf.Any`` messages of the status, if any.
    """

    def __init__(
        self, code: int, message: str, details: Sequence[object] = (), *, hints: Sequence[str] = ()
    ) -> None:
        super().__init__(message, hints=hints)
        self.code = code
        self.details = tuple(details)

    def __str__(self) -> str:
        try:
            from kuasar.ttrpc.codes import Code  # no protobuf import: cheap

            name = Code(self.code).name
        except (ImportError, ValueError):
            name = str(self.code)
        return f"{name}: {self.message}" if self.message else name


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
