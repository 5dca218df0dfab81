"""OSError -> kuasar.errors mapping at the transport edge (kuasar.transport._errors)."""

from __future__ import annotations

import asyncio
import errno
import os

import pytest

from kuasar.errors import ConnectError, ConnectionClosed, KuasarError, TransportError
from kuasar.transport._errors import map_exceptions, translate


@pytest.mark.parametrize(
    ("code", "cls", "message", "hint"),
    [
        (errno.ENOENT, ConnectError, "socket missing: /run/x.sock", "running"),
        (errno.ECONNREFUSED, ConnectError, "connection refused: /run/x.sock", "stale socket"),
        (errno.EACCES, ConnectError, "permission denied: /run/x.sock", "run as root?"),
        (errno.EPERM, ConnectError, "permission denied: /run/x.sock", "run as root?"),
        (errno.ECONNRESET, ConnectionClosed, "connection to /run/x.sock closed by the peer", None),
        (errno.EPIPE, ConnectionClosed, "connection to /run/x.sock closed by the peer", None),
        (errno.ETIMEDOUT, ConnectError, "timed out connecting to /run/x.sock", None),
        (errno.ENOTSOCK, ConnectError, "not a socket: /run/x.sock", None),
        (errno.ENODEV, ConnectError, "cannot connect on /run/x.sock", "AF_VSOCK"),
        (errno.EIO, ConnectError, "cannot connect to /run/x.sock", None),
    ],
)
def test_translate_connect(code: int, cls: type[KuasarError], message: str, hint: str | None) -> None:
    exc = translate(OSError(code, os.strerror(code)), "/run/x.sock")
    assert type(exc) is cls
    assert str(exc).startswith(message)
    if hint is not None:
        assert any(hint in h for h in exc.hints)


def test_translate_listen() -> None:
    assert str(translate(OSError(errno.EADDRINUSE, "in use"), "vsock://-1:1024", action="listen")) == (
        "cannot listen on vsock://-1:1024: address already in use"
    )
    missing = translate(OSError(errno.ENOENT, "no"), "/nodir/x.sock", action="listen")
    assert "directory missing" in str(missing)
    other = translate(OSError(errno.EIO, "I/O error"), "/x.sock", action="listen")
    assert type(other) is TransportError
    assert str(other) == "cannot listen on /x.sock: I/O error"


def test_map_exceptions_chains_the_os_error() -> None:
    with pytest.raises(ConnectionClosed) as info, map_exceptions("/run/x.sock"):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")
    assert isinstance(info.value.__cause__, BrokenPipeError)


def test_map_exceptions_leaves_deadlines_and_our_errors_alone() -> None:
    with pytest.raises(TimeoutError) as info, map_exceptions("/x"):
        raise TimeoutError  # asyncio's deadline (no errno): for whoever set it
    assert not isinstance(info.value, KuasarError)
    with pytest.raises(ConnectError, match=r"^mine$"), map_exceptions("/x"):
        raise ConnectError("mine")
    with pytest.raises(asyncio.CancelledError), map_exceptions("/x"):
        raise asyncio.CancelledError
    with pytest.raises(ValueError, match="not ours"), map_exceptions("/x"):
        raise ValueError("not ours")


def test_map_exceptions_maps_socket_timeouts() -> None:
    with pytest.raises(ConnectError, match="timed out connecting to /x"), map_exceptions("/x"):
        raise TimeoutError(errno.ETIMEDOUT, "Connection timed out")
