"""kuasar.transport over real sockets: unix (path and abstract), vsock, and the hybrid vsock client
against raw peers that behave like a VMM (plain OK, OK + guest bytes, refusals, silence, garbage)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import socket
import stat
import struct
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from kuasar import transport
from kuasar.address import VMADDR_CID_ANY, HvsockAddress, UnixAddress, VsockAddress
from kuasar.config import TEST_LIMITS
from kuasar.errors import ConnectError, HandshakeError, TransportError, UsageError
from tests.functional.stream_helpers import close, echo

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
def sockdir() -> Iterator[str]:
    # Short paths: sun_path is 108 bytes and pytest's tmp_path can get long.
    path = tempfile.mkdtemp(prefix="kt-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@contextlib.asynccontextmanager
async def serving(
    address: UnixAddress | VsockAddress, handler: Handler
) -> AsyncIterator[asyncio.AbstractServer]:
    server = await transport.listen(address, handler)
    try:
        yield server
    finally:
        server.close()
        await server.wait_closed()


async def roundtrip(address: UnixAddress | VsockAddress | HvsockAddress, payload: bytes = b"ping\n") -> bytes:
    reader, writer = await transport.dial(address, limits=TEST_LIMITS)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), 5)
    finally:
        await close(writer)


# --------------------------------------------------------------------------- unix


@pytest.mark.asyncio
async def test_unix_path_dial_and_listen(sockdir: str) -> None:
    address = UnixAddress(os.path.join(sockdir, "echo.sock"))
    async with serving(address, echo):
        assert await roundtrip(address) == b"ping\n"


@pytest.mark.asyncio
async def test_unix_abstract_dial_and_listen() -> None:
    address = UnixAddress(f"kuasar-test-{uuid.uuid4().hex}", abstract=True)
    async with serving(address, echo):
        assert await roundtrip(address, b"abstract") == b"abstract"


@pytest.mark.asyncio
async def test_listen_applies_mode(sockdir: str) -> None:
    path = os.path.join(sockdir, "private.sock")
    server = await transport.listen(UnixAddress(path), echo, mode=0o600)
    try:
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o600
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_listen_replaces_a_stale_socket(sockdir: str) -> None:
    path = os.path.join(sockdir, "stale.sock")
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(path)  # a socket file nobody listens on any more
    dead.close()
    assert os.path.exists(path)
    async with serving(UnixAddress(path), echo):
        assert await roundtrip(UnixAddress(path)) == b"ping\n"


@pytest.mark.asyncio
async def test_listen_refuses_to_replace_a_regular_file(sockdir: str) -> None:
    path = os.path.join(sockdir, "data.txt")
    with open(path, "w") as f:
        f.write("keep me")
    with pytest.raises(TransportError, match="exists and is not a socket"):
        await transport.listen(UnixAddress(path), echo)
    with open(path) as f:
        assert f.read() == "keep me"


@pytest.mark.asyncio
async def test_listen_refuses_to_steal_a_live_socket(sockdir: str) -> None:
    address = UnixAddress(os.path.join(sockdir, "live.sock"))
    async with serving(address, echo):
        with pytest.raises(TransportError, match="another server is listening"):
            await transport.listen(address, echo)
        assert await roundtrip(address) == b"ping\n"  # the first server still owns it


@pytest.mark.asyncio
async def test_listen_in_missing_directory(sockdir: str) -> None:
    with pytest.raises(TransportError, match="cannot listen on"):
        await transport.listen(UnixAddress(os.path.join(sockdir, "nope", "x.sock")), echo)


@pytest.mark.asyncio
async def test_listen_on_hvsock_is_a_usage_error(sockdir: str) -> None:
    with pytest.raises(UsageError, match="hybrid vsock is served by a VMM"):
        await transport.listen(HvsockAddress(os.path.join(sockdir, "x.sock"), 1024), echo)


@pytest.mark.asyncio
@pytest.mark.parametrize("hybrid", [False, True], ids=["unix", "hvsock"])
async def test_missing_socket_is_connect_error(sockdir: str, hybrid: bool) -> None:
    path = os.path.join(sockdir, "missing.sock")
    address = HvsockAddress(path, 1024) if hybrid else UnixAddress(path)
    with pytest.raises(ConnectError, match=f"^socket missing: {re.escape(path)}$") as info:
        await transport.dial(address, limits=TEST_LIMITS)
    assert isinstance(info.value.__cause__, FileNotFoundError)


@pytest.mark.asyncio
async def test_missing_abstract_socket_is_connect_error() -> None:
    # Linux answers ECONNREFUSED for an abstract name nobody has bound.
    with pytest.raises(ConnectError, match="kuasar-none"):
        await transport.dial(
            UnixAddress(f"kuasar-none-{uuid.uuid4().hex}", abstract=True), limits=TEST_LIMITS
        )


@pytest.mark.asyncio
async def test_refused_socket_is_connect_error(sockdir: str) -> None:
    path = os.path.join(sockdir, "refused.sock")
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(path)
    dead.close()
    with pytest.raises(ConnectError, match=f"connection refused: {re.escape(path)}"):
        await transport.dial(HvsockAddress(path, 1024), limits=TEST_LIMITS)


@pytest.mark.asyncio
async def test_dial_a_non_socket_is_connect_error(sockdir: str) -> None:
    path = os.path.join(sockdir, "plain")
    open(path, "w").close()
    with pytest.raises(ConnectError, match=re.escape(path)):
        await transport.dial(UnixAddress(path), limits=TEST_LIMITS)


# --------------------------------------------------------------------------- vsock


def _vsock_available() -> bool:
    if not hasattr(socket, "AF_VSOCK"):
        return False
    try:
        socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM).close()
    except OSError:
        return False
    return True


def _free_vsock_port() -> int:
    return 20000 + (os.getpid() * 7 + uuid.uuid4().int) % 40000


@pytest.mark.asyncio
async def test_dial_vsock_cid_any_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="CID -1/any only makes sense to listen"):
        await transport.dial(VsockAddress(VMADDR_CID_ANY, 1024))


@contextlib.asynccontextmanager
async def vsock_echo_server() -> AsyncIterator[int]:
    if not _vsock_available():
        pytest.skip("AF_VSOCK is not available in this kernel or Python")
    port = _free_vsock_port()
    try:
        server = await transport.listen(VsockAddress(VMADDR_CID_ANY, port), echo)
    except TransportError as exc:
        pytest.skip(f"cannot bind AF_VSOCK here: {exc}")
    try:
        assert [s.getsockname() for s in server.sockets] == [(VMADDR_CID_ANY, port)]
        yield port
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_vsock_listen_on_cid_any() -> None:
    async with vsock_echo_server() as port:
        with pytest.raises(TransportError, match="address already in use"):
            await transport.listen(VsockAddress(VMADDR_CID_ANY, port), echo)


@pytest.mark.asyncio
async def test_vsock_loopback_dial() -> None:
    async with vsock_echo_server() as port:
        try:
            reader, writer = await transport.dial(VsockAddress(1, port), connect_timeout=1.0)
        except ConnectError as exc:
            pytest.skip(f"vsock loopback (CID 1) unavailable: {exc}")
        try:
            writer.write(b"over vsock")
            assert await asyncio.wait_for(reader.readexactly(10), 5) == b"over vsock"
        finally:
            await close(writer)


# --------------------------------------------------------------------------- hybrid vsock client


class FakeVMM:
    """A raw UNIX peer scripted per connection; records each request line it got."""

    def __init__(
        self, path: str, script: Callable[[int, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
    ):
        self.path = path
        self.script = script
        self.requests: list[bytes] = []
        self.server: asyncio.AbstractServer | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        index = len(self.requests)
        try:
            self.requests.append(await reader.readline())
            with contextlib.suppress(ConnectionError):  # the client may reset once it gives up
                await asyncio.wait_for(self.script(index, reader, writer), 10)
        finally:
            await close(writer)

    async def __aenter__(self) -> FakeVMM:
        self.server = await asyncio.start_unix_server(self._handle, path=self.path)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        # every scripted connection ends by itself once the client is gone
        await asyncio.wait_for(asyncio.gather(*self.tasks), 10)


def reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@pytest.mark.asyncio
async def test_hvsock_plain_ok_reply(sockdir: str) -> None:
    async def script(_: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"OK\n")
        await echo(reader, writer)

    path = os.path.join(sockdir, "fc.vsock")
    async with FakeVMM(path, script) as vmm:
        assert await roundtrip(HvsockAddress(path, 52), b"hello guest") == b"hello guest"
    assert vmm.requests == [b"CONNECT 52\n"]


@pytest.mark.asyncio
async def test_hvsock_guest_bytes_in_the_same_write_as_ok_are_kept(sockdir: str) -> None:
    banner = b"sh-5.2# " + bytes(range(256)) + b"\nmore output\n"

    async def script(_: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"OK 1073741825\n" + banner)  # one write, one segment
        await writer.drain()
        await reader.read()

    path = os.path.join(sockdir, "task.vsock")
    async with FakeVMM(path, script):
        reader, writer = await transport.dial(HvsockAddress(path, 1025), limits=TEST_LIMITS)
        try:
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), 5) == banner
        finally:
            await close(writer)


@pytest.mark.asyncio
async def test_hvsock_retries_until_the_guest_listens(sockdir: str) -> None:
    refusals = 4

    async def script(index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if index < refusals:
            return  # close without a reply, like a VMM with no guest listener yet
        writer.write(b"OK 1073741830\n")
        await echo(reader, writer)

    path = os.path.join(sockdir, "task.vsock")
    async with FakeVMM(path, script) as vmm:
        assert await roundtrip(HvsockAddress(path, 1024)) == b"ping\n"
    assert vmm.requests == [b"CONNECT 1024\n"] * (refusals + 1)


@pytest.mark.asyncio
async def test_hvsock_retries_after_reset(sockdir: str) -> None:
    async def script(index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if index < 2:
            reset(writer)
            return
        writer.write(b"OK 1073741830\n")
        await echo(reader, writer)

    path = os.path.join(sockdir, "task.vsock")
    async with FakeVMM(path, script) as vmm:
        assert await roundtrip(HvsockAddress(path, 1024)) == b"ping\n"
    assert len(vmm.requests) == 3


async def _refuse(_: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    return


@pytest.mark.asyncio
async def test_hvsock_no_retry_fails_at_once(sockdir: str) -> None:
    path = os.path.join(sockdir, "task.vsock")
    async with FakeVMM(path, _refuse) as vmm:
        with pytest.raises(HandshakeError) as info:
            await transport.dial(HvsockAddress(path, 1025), limits=TEST_LIMITS, retry=False)
    assert str(info.value) == (
        f"hybrid vsock handshake failed on {path} port 1025: "
        "connection closed before OK (no listener on that port?)"
    )
    assert info.value.hints == ("is the debug console enabled? add task.debug to the kernel parameters",)
    assert len(vmm.requests) == 1


@pytest.mark.asyncio
async def test_hvsock_gives_up_after_the_budget(sockdir: str) -> None:
    path = os.path.join(sockdir, "task.vsock")
    async with FakeVMM(path, _refuse) as vmm:
        with pytest.raises(HandshakeError) as info:
            await asyncio.wait_for(
                transport.dial(HvsockAddress(path, 1024), limits=TEST_LIMITS, connect_timeout=0.5), 10
            )
    message = str(info.value)
    assert message.startswith(
        f"hybrid vsock handshake failed on {path} port 1024: connection closed before OK"
    )
    assert "tried" in message
    assert len(vmm.requests) > 2  # it did retry
    assert any("guest agent" in hint for hint in info.value.hints)


@pytest.mark.asyncio
async def test_hvsock_silent_peer_fails_within_connect_timeout(sockdir: str) -> None:
    async def silent(_: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"OK 10")  # a partial line, then nothing
        await reader.read()

    path = os.path.join(sockdir, "task.vsock")
    async with FakeVMM(path, silent):
        with pytest.raises(HandshakeError) as info:
            # hang guard: generous outer bound, the dial's own budget is 0.5 s
            await asyncio.wait_for(
                transport.dial(HvsockAddress(path, 1025), limits=TEST_LIMITS, connect_timeout=0.5), 10
            )
    assert str(info.value) == (
        f"hybrid vsock handshake failed on {path} port 1025: no reply within 0.5 s (received b'OK 10')"
    )
    assert not isinstance(info.value, TimeoutError)  # a connect failure (125), not a --timeout (124)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("reply", "detail"),
    [
        (b"ERR nope\n", "unexpected reply b'ERR nope\\n'"),
        (b"\n", "unexpected reply b'\\n'"),
        (b"OK " + b"9" * 80 + b"\n", "line longer than 64 bytes"),
    ],
    ids=["garbage", "empty", "oversize"],
)
async def test_hvsock_bad_reply_fails_at_once(sockdir: str, reply: bytes, detail: str) -> None:
    async def script(_: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(reply)
        await writer.drain()
        await reader.read()

    path = os.path.join(sockdir, "task.vsock")
    async with FakeVMM(path, script) as vmm:
        with pytest.raises(HandshakeError) as info:
            await transport.dial(HvsockAddress(path, 1024), limits=TEST_LIMITS)
    assert str(info.value).startswith(f"hybrid vsock handshake failed on {path} port 1024: ")
    assert detail in str(info.value)
    assert len(vmm.requests) == 1  # not retried


@pytest.mark.asyncio
async def test_hvsock_trace_line(sockdir: str, caplog: pytest.LogCaptureFixture) -> None:
    async def script(_: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"OK 1073741825\n")
        await echo(reader, writer)

    path = os.path.join(sockdir, "task.vsock")
    caplog.set_level(logging.DEBUG, logger="kuasar.trace")
    async with FakeVMM(path, script):
        await roundtrip(HvsockAddress(path, 1025))
    assert f"CONNECT 1025 -> OK 1073741825 ({path})" in caplog.messages
