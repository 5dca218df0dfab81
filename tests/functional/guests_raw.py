"""Raw-socket helpers for checking the guest stand-ins byte by byte (blocking sockets, timeouts)."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from kuasar.proto import ttrpc_pb2

HEADER = struct.Struct(">IIBB")
TIMEOUT = 10.0


def read_line(sock: socket.socket) -> bytes:
    """One line, read byte by byte (bytes after ``\\n`` stay in the socket); ``b""`` on EOF."""
    line = b""
    while not line.endswith(b"\n"):
        byte = sock.recv(1)
        if not byte:
            return line
        line += byte
    return line


@contextmanager
def hvsock(path: str, port: int, *, timeout: float = TIMEOUT) -> Iterator[socket.socket]:
    """A connection through the VMM to guest ``port``; asserts the ``OK <host port>`` reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(b"CONNECT %d\n" % port)
        line = read_line(sock)
        assert line.startswith(b"OK "), f"CONNECT {port}: {line!r}"
        assert int(line[3:]) >= 1 << 30, line
        yield sock


def recv_exact(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise EOFError(f"EOF after {len(data)} of {count} bytes")
        data += chunk
    return data


def recv_frame(sock: socket.socket) -> tuple[int, int, int, bytes]:
    """(stream id, type, flags, data) of the next frame."""
    length, stream_id, frame_type, flags = HEADER.unpack(recv_exact(sock, HEADER.size))
    return stream_id, frame_type, flags, recv_exact(sock, length)


def send_frame(sock: socket.socket, stream_id: int, frame_type: int, data: bytes, flags: int = 0) -> None:
    sock.sendall(HEADER.pack(len(data), stream_id, frame_type, flags) + data)


def request(service: str, method: str, payload: bytes = b"", *, timeout_nano: int = 0) -> bytes:
    return ttrpc_pb2.Request(
        service=service, method=method, payload=payload, timeout_nano=timeout_nano
    ).SerializeToString()


def call(
    sock: socket.socket,
    stream_id: int,
    service: str,
    method: str,
    payload: bytes = b"",
    *,
    timeout_nano: int = 0,
) -> ttrpc_pb2.Response:
    """One unary call; asserts the reply is a Response on the same stream, with flags 0."""
    send_frame(sock, stream_id, 1, request(service, method, payload, timeout_nano=timeout_nano))
    got_id, frame_type, flags, data = recv_frame(sock)
    assert (got_id, frame_type, flags) == (stream_id, 2, 0)
    return ttrpc_pb2.Response.FromString(data)


def status(resp: ttrpc_pb2.Response) -> tuple[int, str]:
    return resp.status.code, resp.status.message


def read_until(sock: socket.socket, needle: bytes, *, timeout: float = TIMEOUT) -> bytes:
    """Everything received until ``needle`` has arrived (or EOF / timeout: then what came)."""
    deadline = time.monotonic() + timeout
    data = b""
    while needle not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    return data


def read_to_eof(sock: socket.socket, *, timeout: float = TIMEOUT) -> bytes:
    """Everything until the peer closes; raises TimeoutError if it does not within ``timeout``."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no EOF within {timeout}s; got {data[-200:]!r}")
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def wait_for(predicate: Callable[[], object], *, timeout: float = TIMEOUT) -> None:
    """Poll ``predicate()`` until it is true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.02)
