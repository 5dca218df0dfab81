"""OSError -> kuasar.errors, once, at the transport edge.

Layer contract: knows ``errno`` and ``kuasar.errors`` only. Every transport module wraps its socket
calls in :func:`map_exceptions`, so no caller above ``kuasar.transport`` ever sees a bare ``OSError``.

=================  =====================================================
errno              raised
=================  =====================================================
ENOENT             ``ConnectError("socket missing: <target>")``
ECONNREFUSED       ``ConnectError`` (nothing accepts on that socket)
EACCES, EPERM      ``ConnectError`` with a "run as root?" hint
ECONNRESET, EPIPE  ``ConnectionClosed``
ETIMEDOUT          ``ConnectError`` (connect timed out)
(none) path long   ``ConnectError`` (a UNIX socket path over 107 bytes)
anything else      ``ConnectError`` (dial) / ``TransportError`` (listen)
=================  =====================================================
"""

from __future__ import annotations

import errno

from kuasar.errors import (
    REASON_DENIED,
    REASON_MISSING,
    REASON_REFUSED,
    ConnectError,
    ConnectionClosed,
    KuasarError,
    Translating,
    TransportError,
)

_CLOSED = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN, errno.ESHUTDOWN, errno.ECONNABORTED})
_DENIED = frozenset({errno.EACCES, errno.EPERM})
_VSOCK_MISSING = frozenset({errno.EAFNOSUPPORT, errno.ENODEV, errno.ENOPROTOOPT})


def translate(exc: OSError, target: str, *, action: str = "connect") -> TransportError:
    """The kuasar error for ``exc`` raised while doing ``action`` on ``target`` (not raised here).

    Args:
        exc: the OS-level error.
        target: what we were talking to: a socket path or an address string.
        action: ``"connect"`` or ``"listen"`` (chooses the wording and the fallback class).
    """
    code = exc.errno
    reason = exc.strerror or str(exc)
    if code is None and "path too long" in str(exc):  # Python's own check: no errno
        return ConnectError(
            f"cannot {action} on {target}: the path is too long for a UNIX socket"
            f" ({len(target.encode())} bytes; the kernel takes at most 107)",
            hints=["Use a shorter root (-d) or sandbox ID."],
        )
    if code == errno.ENOENT:
        if action == "listen":
            return TransportError(
                f"cannot listen on {target}: directory missing", hints=["create the parent directory first"]
            )
        return ConnectError(
            f"socket missing: {target}", hints=["is the sandbox (or VMM) running?"], reason=REASON_MISSING
        )
    if code == errno.ECONNREFUSED:
        return ConnectError(
            f"connection refused: {target}",
            hints=["the socket file exists but nothing accepts on it (stale socket of a stopped VMM?)"],
            reason=REASON_REFUSED,
        )
    if code in _DENIED:
        return ConnectError(f"permission denied: {target}", hints=["run as root?"], reason=REASON_DENIED)
    if code in _CLOSED:
        return ConnectionClosed(f"connection to {target} closed by the peer ({reason})")
    if code in _VSOCK_MISSING:
        return ConnectError(
            f"cannot {action} on {target}: {reason}",
            hints=["is AF_VSOCK available? (vhost_vsock on a host, vmw_vsock_virtio_transport in a VM)"],
        )
    if code == errno.ETIMEDOUT:
        return ConnectError(f"timed out connecting to {target}")
    if code == errno.EADDRINUSE:
        return TransportError(f"cannot listen on {target}: address already in use")
    if code in (errno.ENOTSOCK, errno.ENOTDIR):
        return ConnectError(f"not a socket: {target}")
    if action == "listen":
        return TransportError(f"cannot listen on {target}: {reason}")
    return ConnectError(f"cannot connect to {target}: {reason}")


class map_exceptions(Translating):
    """``with map_exceptions(target)``: any ``OSError`` from the body re-raised as the matching
    ``TransportError``, chained.

    ``KuasarError``, non-``OSError`` exceptions (cancellation included) and asyncio's own
    ``TimeoutError`` (no errno: a deadline, handled by whoever set it) pass through unchanged.
    """

    def __init__(self, target: str, *, action: str = "connect") -> None:
        self.target = target
        self.action = action

    def translate(self, exc: BaseException) -> BaseException | None:
        if not isinstance(exc, OSError) or isinstance(exc, KuasarError):
            return None
        if isinstance(exc, TimeoutError) and exc.errno is None:
            return None
        return translate(exc, self.target, action=self.action)
