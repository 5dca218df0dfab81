"""ttrpc over the hybrid-vsock path: client -> VMM-faithful hvsock server -> guest ttrpc server.

This is how kuasarctl reaches a guest agent: ``transport.dial(hvsock://task.socket:1024)`` does the
``CONNECT``/``OK`` handshake and hands the connected stream to ``ttrpc.Client``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator

import pytest
from google.protobuf import wrappers_pb2

from kuasar import transport, ttrpc
from kuasar.address import HvsockAddress, UnixAddress
from kuasar.errors import HandshakeError, RPCError
from kuasar.transport.hvsock_server import HvsockServer, port_directory_resolver
from tests.functional.ttrpc_helpers import SERVICE, Probe, echo_handlers

Str = wrappers_pb2.StringValue


@contextlib.asynccontextmanager
async def guest_behind_vmm() -> AsyncIterator[str]:
    """A ttrpc server listening as the guest on vsock port 1024, behind an hvsock server."""
    directory = tempfile.mkdtemp(prefix="ksrtt", dir="/tmp")
    guest = os.path.join(directory, "vsock")
    os.mkdir(guest)
    server = ttrpc.Server([echo_handlers(Probe()), ttrpc.health_handlers()])
    listener = await transport.listen(UnixAddress(os.path.join(guest, "1024.sock")), server.handle_connection)
    vmm = HvsockServer(os.path.join(directory, "task.socket"), port_directory_resolver(guest))
    try:
        async with vmm:
            yield vmm.path
    finally:
        listener.close()
        server.close()
        await server.wait_closed()
        await listener.wait_closed()
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.asynccontextmanager
async def hvsock_client(socket_path: str, port: int = 1024) -> AsyncIterator[ttrpc.Client]:
    reader, writer = await transport.dial(HvsockAddress(socket_path, port), connect_timeout=2)
    async with ttrpc.Client(reader, writer) as client:
        yield client


@pytest.mark.asyncio
async def test_unary_streaming_and_errors_over_hvsock() -> None:
    async with guest_behind_vmm() as socket_path, hvsock_client(socket_path) as client:
        assert (await client.call(SERVICE, "Echo", Str(value="hi"), Str)).value == "hi"
        from kuasar.proto import health_pb2

        health = await client.call(
            "grpc.Health", "Check", health_pb2.CheckRequest(), health_pb2.HealthCheckResponse
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        async with client.stream(
            SERVICE, "Count", Str, server_streaming=True, request=Str(value="5")
        ) as stream:
            assert [m.value async for m in stream] == ["0", "1", "2", "3", "4"]
        async with client.stream(
            SERVICE, "Upper", Str, client_streaming=True, server_streaming=True
        ) as stream:
            await stream.send(Str(value="ab"))
            assert (await stream.recv()).value == "AB"  # type: ignore[union-attr]
            await stream.close_send()
            assert await stream.recv() is None
        with pytest.raises(RPCError) as info:
            await client.call(SERVICE, "Fail", Str(value="x"), Str)
        assert info.value.code == ttrpc.Code.NOT_FOUND


@pytest.mark.asyncio
async def test_concurrent_calls_over_hvsock() -> None:
    async with guest_behind_vmm() as socket_path, hvsock_client(socket_path) as client:
        values = [str(i) for i in range(200)]
        replies = await asyncio.gather(*(client.call(SERVICE, "Echo", Str(value=v), Str) for v in values))
        assert [reply.value for reply in replies] == values


@pytest.mark.asyncio
async def test_unserved_port_is_refused_without_reply() -> None:
    async with guest_behind_vmm() as socket_path:
        reader, writer = await asyncio.open_unix_connection(socket_path)
        try:
            writer.write(b"CONNECT 1025\n")
            # a close with zero bytes, as a real VMM refuses: no "OK", no error line, no hang
            assert await asyncio.wait_for(reader.read(), 5) == b""
            assert reader.at_eof()
        finally:
            writer.close()
            await writer.wait_closed()
        with pytest.raises(HandshakeError, match="port 1025"):
            await transport.dial(HvsockAddress(socket_path, 1025), connect_timeout=0.3, retry=False)
        async with hvsock_client(socket_path) as client:  # the VMM keeps serving after a refusal
            assert (await client.call(SERVICE, "Echo", Str(value="still"), Str)).value == "still"
