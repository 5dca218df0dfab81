"""The VMM-faithful hybrid vsock server (kuasar.transport.hvsock_server) over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from kuasar import transport
from kuasar.address import HvsockAddress, UnixAddress
from kuasar.config import TEST_LIMITS, Limits
from kuasar.errors import HandshakeError
from kuasar.transport.hvsock_server import HvsockServer, port_directory_resolver
from tests.functional.stream_helpers import close, echo

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
LIMITS = TEST_LIMITS.replace(handshake_timeout=0.5)
GUEST_PORT = 1024


@pytest.fixture
def sockdir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="khs-", dir="/tmp")
    os.mkdir(os.path.join(path, "vsock"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@contextlib.asynccontextmanager
async def guest(sockdir: str, port: int, handler: Handler) -> AsyncIterator[None]:
    """A guest-side listener for ``port``, where ``port_directory_resolver`` looks for it."""
    server = await transport.listen(UnixAddress(os.path.join(sockdir, "vsock", f"{port}.sock")), handler)
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def vmm(sockdir: str, limits: Limits = LIMITS) -> AsyncIterator[HvsockServer]:
    server = HvsockServer(
        os.path.join(sockdir, "task.socket"),
        port_directory_resolver(os.path.join(sockdir, "vsock")),
        limits=limits,
    )
    async with server:
        yield server


async def raw(server: HvsockServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_unix_connection(server.path)


async def read_to_end(reader: asyncio.StreamReader) -> bytes:
    """Everything until EOF (a reset, which a close with unread data gives, also ends it)."""
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := await asyncio.wait_for(reader.read(65536), 10):
            chunks.append(chunk)
    return b"".join(chunks)


async def connect_ok(
    server: HvsockServer, port: int = GUEST_PORT
) -> tuple[int, asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await raw(server)
    writer.write(b"CONNECT %d\n" % port)
    line = await asyncio.wait_for(reader.readline(), 5)
    assert line.startswith(b"OK "), line
    return int(line[3:]), reader, writer


async def assert_serving(server: HvsockServer) -> None:
    """A good client still gets through (proof that an earlier bad one did no harm)."""
    _, reader, writer = await connect_ok(server)
    try:
        writer.write(b"still here")
        assert await asyncio.wait_for(reader.readexactly(10), 5) == b"still here"
    finally:
        await close(writer)


async def refused(server: HvsockServer, request: bytes, *, then_close: bool = False) -> bytes:
    """Send ``request``; return all the server sent back before closing on us."""
    reader, writer = await raw(server)
    try:
        writer.write(request)
        if then_close:
            writer.write_eof()
        return await read_to_end(reader)
    finally:
        await close(writer)


# --------------------------------------------------------------------------- handshake


@pytest.mark.asyncio
async def test_ok_with_host_ports_from_2_30_upward(sockdir: str) -> None:
    async with vmm(sockdir) as server, guest(sockdir, GUEST_PORT, echo):
        ports = []
        for _ in range(3):
            host_port, _, writer = await connect_ok(server)
            ports.append(host_port)
            await close(writer)
    assert ports[0] >= 1 << 30
    assert ports == sorted(set(ports))
    assert ports == [ports[0], ports[0] + 1, ports[0] + 2]


@pytest.mark.asyncio
async def test_lower_case_connect_is_accepted(sockdir: str) -> None:
    async with vmm(sockdir) as server, guest(sockdir, GUEST_PORT, echo):
        reader, writer = await raw(server)
        try:
            writer.write(b"connect 1024\nhello")
            assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"OK ")
            assert await asyncio.wait_for(reader.readexactly(5), 5) == b"hello"
        finally:
            await close(writer)


@pytest.mark.asyncio
async def test_bytes_after_the_connect_line_reach_the_guest(sockdir: str) -> None:
    got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def collect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.set_result(await reader.read())
        await close(writer)

    async with vmm(sockdir) as server, guest(sockdir, GUEST_PORT, collect):
        reader, writer = await raw(server)
        writer.write(b"CONNECT 1024\nsent in the same write")
        writer.write_eof()
        assert (await reader.readline()).startswith(b"OK ")
        assert await asyncio.wait_for(got, 5) == b"sent in the same write"
        await close(writer)


@pytest.mark.asyncio
async def test_our_client_through_our_server(sockdir: str) -> None:
    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"# ")  # the guest speaks first, right after accept
        await echo(reader, writer)

    async with vmm(sockdir) as server, guest(sockdir, 1025, greet):
        reader, writer = await transport.dial(server.hvsock_address(1025), limits=LIMITS)
        try:
            assert await asyncio.wait_for(reader.readexactly(2), 5) == b"# "
            writer.write(b"x")
            assert await asyncio.wait_for(reader.readexactly(1), 5) == b"x"
        finally:
            await close(writer)


@pytest.mark.asyncio
async def test_unknown_port_closes_without_reply(sockdir: str) -> None:
    async with vmm(sockdir) as server, guest(sockdir, GUEST_PORT, echo):
        assert await refused(server, b"CONNECT 4242\n") == b""
        await assert_serving(server)


@pytest.mark.asyncio
async def test_our_client_sees_no_listener(sockdir: str) -> None:
    async with vmm(sockdir) as server:
        with pytest.raises(HandshakeError, match="port 1025: connection closed before OK"):
            await transport.dial(HvsockAddress(server.path, 1025), limits=LIMITS, retry=False)


@pytest.mark.asyncio
async def test_stale_guest_socket_closes_without_reply(sockdir: str) -> None:
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(os.path.join(sockdir, "vsock", "2000.sock"))  # exists, nobody accepts
    dead.close()
    async with vmm(sockdir) as server, guest(sockdir, GUEST_PORT, echo):
        assert await refused(server, b"CONNECT 2000\n") == b""
        await assert_serving(server)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "request_line",
    [
        b"Connect 1024\n",
        b"CONNECT abc\n",
        b"CONNECT\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x00\x01\x02\n",
        b"CONNECT 99999999999\n",
    ],
)
async def test_garbage_closes_without_reply(sockdir: str, request_line: bytes) -> None:
    async with vmm(sockdir) as server, guest(sockdir, GUEST_PORT, echo):
        assert await refused(server, request_line) == b""
        await assert_serving(server)


@pytest.mark.asyncio
@pytest.mark.parametrize("partial", [b"connect 1024", b"CONNECT ", b"C", b""], ids=repr)
async def test_incomplete_first_line_then_close(sockdir: str, partial: bytes) -> None:
    # CH #6798 / #6621: this crashed the VM. We close and keep serving.
    async with vmm(sockdir) as server, guest(sockdir, GUEST_PORT, echo):
        assert await refused(server, partial, then_close=True) == b""
        await assert_serving(server)


@pytest.mark.asyncio
async def test_oversize_line_closes_without_reply(sockdir: str) -> None:
    async with vmm(sockdir) as server, guest(sockdir, GUEST_PORT, echo):
        assert await refused(server, b"CONNECT " + b"1" * 100) == b""  # no newline ever comes
        assert await refused(server, b"CONNECT " + b" " * 80 + b"1024\n") == b""
        await assert_serving(server)


@pytest.mark.asyncio
async def test_silent_client_is_dropped_after_the_handshake_timeout(sockdir: str) -> None:
    async with vmm(sockdir) as server, guest(sockdir, GUEST_PORT, echo):
        reader, writer = await raw(server)
        try:
            # the server gives up after 0.5 s; the bound here is only a hang guard
            assert await asyncio.wait_for(read_to_end(reader), 10) == b""
        finally:
            await close(writer)
        await assert_serving(server)


@pytest.mark.asyncio
async def test_a_silent_client_does_not_block_others(sockdir: str) -> None:
    async with (
        vmm(sockdir, TEST_LIMITS.replace(handshake_timeout=30.0)) as server,
        guest(sockdir, GUEST_PORT, echo),
    ):
        _, silent = await raw(server)
        silent.write(b"CONN")
        try:
            await assert_serving(server)
        finally:
            await close(silent)


# --------------------------------------------------------------------------- relay


@pytest.mark.asyncio
async def test_relay_is_byte_exact_for_megabytes(sockdir: str) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)
    async with vmm(sockdir) as server, guest(sockdir, GUEST_PORT, echo):
        _, reader, writer = await connect_ok(server)

        async def send() -> None:
            for start in range(0, len(payload), 100_000):
                writer.write(payload[start : start + 100_000])
                await writer.drain()
            writer.write_eof()

        try:
            sender = asyncio.create_task(send())
            received = await asyncio.wait_for(read_to_end(reader), 30)
            await sender
        finally:
            await close(writer)
    assert len(received) == len(payload)
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()


@pytest.mark.asyncio
async def test_client_half_close_guest_still_replies(sockdir: str) -> None:
    async def count_then_reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # until the client's EOF arrives through the relay
        writer.write(b"got %d bytes" % len(data))
        await close(writer)

    async with vmm(sockdir) as server, guest(sockdir, GUEST_PORT, count_then_reply):
        _, reader, writer = await connect_ok(server)
        try:
            writer.write(b"x" * 1000)
            writer.write_eof()
            assert await read_to_end(reader) == b"got 1000 bytes"
        finally:
            await close(writer)


@pytest.mark.asyncio
async def test_guest_half_close_client_still_sends(sockdir: str) -> None:
    got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def banner_then_listen(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"banner")
        writer.write_eof()  # the guest is done talking, not listening
        got.set_result(await reader.read())
        await close(writer)

    async with vmm(sockdir) as server, guest(sockdir, GUEST_PORT, banner_then_listen):
        _, reader, writer = await connect_ok(server)
        try:
            assert await read_to_end(reader) == b"banner"  # EOF reached the client
            writer.write(b"after the guest's EOF")
            writer.write_eof()
            assert await asyncio.wait_for(got, 5) == b"after the guest's EOF"
        finally:
            await close(writer)


@pytest.mark.asyncio
async def test_guest_close_gives_the_client_eof(sockdir: str) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"bye")
        await close(writer)

    async with vmm(sockdir) as server, guest(sockdir, GUEST_PORT, hang_up):
        _, reader, writer = await connect_ok(server)
        try:
            assert await read_to_end(reader) == b"bye"
        finally:
            await close(writer)


@pytest.mark.asyncio
async def test_close_stops_accepting_tears_down_relays_and_removes_the_socket(sockdir: str) -> None:
    async with guest(sockdir, GUEST_PORT, echo):
        server = HvsockServer(
            os.path.join(sockdir, "task.socket"),
            port_directory_resolver(os.path.join(sockdir, "vsock")),
            limits=LIMITS,
        )
        await server.start()
        try:
            _, reader, writer = await connect_ok(server)
            server.close()
            await asyncio.wait_for(server.wait_closed(), 10)
            assert await read_to_end(reader) == b""  # the live relay was closed
            await close(writer)
            assert not os.path.exists(server.path)
            with pytest.raises(OSError):
                await asyncio.open_unix_connection(server.path)
        finally:
            server.close()
            await server.wait_closed()


@pytest.mark.asyncio
async def test_socket_file_mode(sockdir: str) -> None:
    path = os.path.join(sockdir, "task.socket")
    async with HvsockServer(path, port_directory_resolver(sockdir), mode=0o660):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    async with HvsockServer(path, port_directory_resolver(sockdir)):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


@pytest.mark.asyncio
async def test_first_host_port_and_wrap_keep_bit_30(sockdir: str) -> None:
    async with guest(sockdir, GUEST_PORT, echo):
        server = HvsockServer(
            os.path.join(sockdir, "task.socket"),
            port_directory_resolver(os.path.join(sockdir, "vsock")),
            limits=LIMITS,
            first_host_port=(1 << 31) - 1,
        )
        async with server:
            ports = []
            for _ in range(2):
                host_port, _, writer = await connect_ok(server)
                ports.append(host_port)
                await close(writer)
    assert ports == [(1 << 31) - 1, 1 << 30]


def test_port_directory_resolver(sockdir: str) -> None:
    directory = os.path.join(sockdir, "vsock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(os.path.join(directory, "1024.sock"))
    try:
        open(os.path.join(directory, "1025.sock"), "w").close()  # not a socket
        resolve = port_directory_resolver(directory)
        assert resolve(1024) == UnixAddress(os.path.join(directory, "1024.sock"))
        assert resolve(1025) is None
        assert resolve(1026) is None
    finally:
        listener.close()


@pytest.mark.asyncio
async def test_close_does_not_wait_forever_for_a_client_that_never_reads(sockdir: str) -> None:
    written = 0

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal written
        try:
            while True:
                writer.write(b"z" * 65536)
                written += 65536
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            await close(writer)

    async with guest(sockdir, GUEST_PORT, flood):
        server = HvsockServer(
            os.path.join(sockdir, "task.socket"),
            port_directory_resolver(os.path.join(sockdir, "vsock")),
            limits=LIMITS,
        )
        await server.start()
        _, _reader, writer = await connect_ok(server)  # and never read
        try:
            # every buffer on the way is full once the flood stalls: the idle loop would otherwise
            # run the relay, which would drain the guest's side and let the flood write again
            async with asyncio.timeout(10):
                last = -1
                while written != last:
                    last = written
                    await asyncio.sleep(0.1)
            server.close()
            await asyncio.wait_for(server.wait_closed(), 10)  # hang guard; the grace is 1 s
        finally:
            writer.transport.abort()
            await close(writer)
