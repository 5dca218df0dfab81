"""Python ``kuasar.ttrpc.Client`` -> Go ttrpc 1.1.1 server (``go/src/kuasarpeer/server``).

Unary calls, status errors, Go's UNIMPLEMENTED texts, metadata, deadlines both locally and as
``timeout_nano`` honoured by Go, and the 4 MiB frame limit at exactly 4194304 / 4194305 bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kuasar import ttrpc
from kuasar.errors import DeadlineExceeded, RPCError
from kuasar.proto import ttrpc_pb2
from kuasar.ttrpc.framing import Frame, FrameDecoder, FrameType, encode_frame
from tests.interop.gopeers import PEER_SERVICE
from tests.interop.peer import Bytes, Empty, Int, Str, python_client, request_frame_size, value_len_for_frame

MAX = 4 << 20
HANG_GUARD = 10.0


class RawConn:
    """A raw ttrpc connection: hand-built frames out, decoded frames in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.decoder = reader, writer, FrameDecoder()
        self.frames: list[Frame] = []

    async def request(self, stream_id: int, method: str, payload: bytes, **fields: int) -> None:
        data = ttrpc_pb2.Request(service=PEER_SERVICE, method=method, payload=payload, **fields)
        self.writer.write(encode_frame(Frame(stream_id, FrameType.REQUEST, 0, data.SerializeToString())))
        await self.writer.drain()

    async def response(self) -> tuple[int, ttrpc_pb2.Response]:
        async with asyncio.timeout(HANG_GUARD):
            while not self.frames:
                chunk = await self.reader.read(1 << 16)
                assert chunk, "the Go server closed the connection"
                self.frames.extend(self.decoder.feed(chunk))
        frame = self.frames.pop(0)
        assert frame.type == FrameType.RESPONSE
        return frame.stream_id, ttrpc_pb2.Response.FromString(frame.data)


@contextlib.asynccontextmanager
async def raw_conn(path: Path) -> AsyncIterator[RawConn]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        yield RawConn(reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@pytest.mark.asyncio
async def test_unary_echo_and_many_in_flight(go_server_socket: Path) -> None:
    async with python_client(go_server_socket) as client:
        reply = await client.call(PEER_SERVICE, "Echo", Str(value="hello"), Str)
        assert reply.value == "go:hello"
        replies = await asyncio.gather(
            *(client.call(PEER_SERVICE, "Echo", Str(value=str(i)), Str) for i in range(300))
        )
        assert [r.value for r in replies] == [f"go:{i}" for i in range(300)]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("code", "message"),
    [
        (ttrpc.Code.NOT_FOUND, "no such box: pod-1"),
        (ttrpc.Code.INVALID_ARGUMENT, "bad field"),
        (ttrpc.Code.FAILED_PRECONDITION, "stopped"),
        (ttrpc.Code.UNAVAILABLE, "ünïcode message ✓"),
    ],
)
async def test_status_errors_keep_code_and_message(go_server_socket: Path, code: int, message: str) -> None:
    async with python_client(go_server_socket) as client:
        with pytest.raises(RPCError) as info:
            await client.call(PEER_SERVICE, "Raise", Str(value=f"{int(code)} {message}"), Str)
        assert (info.value.code, info.value.message) == (code, message)
        # a status error is per call: the connection keeps serving
        assert (await client.call(PEER_SERVICE, "Echo", Str(value="after"), Str)).value == "go:after"


@pytest.mark.asyncio
async def test_unknown_service_and_method_are_unimplemented_with_go_texts(go_server_socket: Path) -> None:
    async with python_client(go_server_socket) as client:
        with pytest.raises(RPCError) as service:
            await client.call("kuasar.interop.v1.Nope", "Echo", Str(), Str)
        with pytest.raises(RPCError) as method:
            await client.call(PEER_SERVICE, "Nope", Str(), Str)
    assert (service.value.code, service.value.message) == (
        ttrpc.Code.UNIMPLEMENTED,
        "service kuasar.interop.v1.Nope",
    )
    assert (method.value.code, method.value.message) == (ttrpc.Code.UNIMPLEMENTED, "method Nope")


@pytest.mark.asyncio
async def test_metadata_repeated_keys_keep_value_order(go_server_socket: Path) -> None:
    sent = [("b", "1"), ("a", "x"), ("containerd-namespace-ttrpc", "k8s.io"), ("a", "y"), ("b", "2")]
    async with python_client(go_server_socket) as client:
        reply = await client.call(PEER_SERVICE, "Metadata", Empty(), Str, metadata=sent)
    # Go's ttrpc.MD is a map (the server sorts keys); values of one key arrive in wire order
    assert reply.value.split("\n") == ["a=x", "a=y", "b=1", "b=2", "containerd-namespace-ttrpc=k8s.io"]


@pytest.mark.asyncio
async def test_timeout_is_sent_as_timeout_nano(go_server_socket: Path) -> None:
    async with python_client(go_server_socket) as client:
        without = await client.call(PEER_SERVICE, "Deadline", Empty(), Int)
        within = await client.call(PEER_SERVICE, "Deadline", Empty(), Int, timeout=2.0)
    assert without.value == -1
    assert 0 < within.value <= 2_000_000_000


@pytest.mark.asyncio
async def test_local_deadline_raises_deadline_exceeded(go_server_socket: Path) -> None:
    async with python_client(go_server_socket) as client:
        async with asyncio.timeout(HANG_GUARD):
            with pytest.raises(DeadlineExceeded):
                await client.call(PEER_SERVICE, "Sleep", Int(value=5000), Int, timeout=0.2)
        # the abandoned stream's late answer (if any) must not disturb the next call
        assert (await client.call(PEER_SERVICE, "Sleep", Int(value=1), Int, timeout=5)).value == 1


@pytest.mark.asyncio
async def test_go_server_honours_timeout_nano(go_server_socket: Path) -> None:
    async with raw_conn(go_server_socket) as conn:
        await conn.request(1, "Sleep", Int(value=5000).SerializeToString(), timeout_nano=200_000_000)
        stream_id, response = await conn.response()  # long before 5 s: Go cut the handler short
    assert stream_id == 1
    assert (response.status.code, response.status.message) == (
        ttrpc.Code.DEADLINE_EXCEEDED,
        "context deadline exceeded",
    )


@pytest.mark.asyncio
async def test_frame_of_exactly_4_mib_is_accepted(go_server_socket: Path) -> None:
    length = value_len_for_frame(PEER_SERVICE, "Size", MAX)
    assert request_frame_size(PEER_SERVICE, "Size", length) == MAX
    async with python_client(go_server_socket) as client, asyncio.timeout(HANG_GUARD):
        # no timeout= (timeout_nano would add bytes): the frame is exactly 4194304 bytes of data
        reply = await client.call(PEER_SERVICE, "Size", Bytes(value=b"k" * length), Int)
    assert reply.value == length


@pytest.mark.asyncio
async def test_oversize_frame_refused_locally_connection_kept(go_server_socket: Path) -> None:
    length = value_len_for_frame(PEER_SERVICE, "Size", MAX + 1)
    async with python_client(go_server_socket) as client:
        with pytest.raises(RPCError) as info:
            await client.call(PEER_SERVICE, "Size", Bytes(value=b"k" * length), Int)
        assert info.value.code == ttrpc.Code.RESOURCE_EXHAUSTED
        assert (await client.call(PEER_SERVICE, "Echo", Str(value="still"), Str)).value == "go:still"


@pytest.mark.asyncio
async def test_go_server_answers_oversize_with_resource_exhausted_and_keeps_the_connection(
    go_server_socket: Path,
) -> None:
    length = value_len_for_frame(PEER_SERVICE, "Size", MAX + 1)
    async with raw_conn(go_server_socket) as conn:
        await conn.request(1, "Size", Bytes(value=b"k" * length).SerializeToString())
        stream_id, response = await conn.response()
        assert stream_id == 1
        assert response.status.code == ttrpc.Code.RESOURCE_EXHAUSTED
        assert response.status.message == "message length 4194305 exceed maximum message size of 4194304"
        await conn.request(3, "Echo", Str(value="next").SerializeToString())
        stream_id, response = await conn.response()
    assert stream_id == 3
    assert Str.FromString(response.payload).value == "go:next"
