"""SPEC.md §8 (streaming, ttrpc >= 1.2) byte for byte, against our server and our client.

Debian's Go ttrpc (1.1.1) predates streaming, so these tests are the interop proof for it: every
frame is written and expected as literal bytes (header and hand-encoded protobuf), not through
``kuasar.ttrpc.framing``, over a real socketpair with the real ``Server``/``Client`` on the other end.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest
from google.protobuf import wrappers_pb2

from kuasar import ttrpc
from kuasar.errors import RPCError

Str = wrappers_pb2.StringValue
SERVICE = "spec.v1.S"
GUARD = 5.0


def h(text: str) -> bytes:
    """Hex with spaces for readability: ``h("00000003 00000001 03 00")``."""
    return bytes.fromhex(text)


def ld(field: int, data: bytes) -> bytes:
    """A length-delimited protobuf field, encoded by hand (short values only)."""
    assert len(data) < 128
    return bytes([field << 3 | 2, len(data)]) + data


def string_value(value: str) -> bytes:
    """``google.protobuf.StringValue`` by hand: empty string -> no bytes."""
    return ld(1, value.encode()) if value else b""


def request(method: str, payload: bytes | None) -> bytes:
    """``ttrpc.Request{service, method, payload}`` by hand."""
    body = ld(1, SERVICE.encode()) + ld(2, method.encode())
    return body + (ld(3, payload) if payload is not None else b"")


def frame(stream_id: int, ftype: int, flags: int, data: bytes = b"") -> bytes:
    return len(data).to_bytes(4, "big") + stream_id.to_bytes(4, "big") + bytes([ftype, flags]) + data


def ok_response(payload: bytes) -> bytes:
    return ld(2, payload)  # Go's success encoding: no status field


def error_response(code: int, message: str) -> bytes:
    return ld(1, bytes([0x08, code]) + ld(2, message.encode()))


def handlers() -> dict[tuple[str, str], ttrpc.Handler]:
    async def count(req: Str, stream: ttrpc.ServerStream, ctx: ttrpc.CallContext) -> None:
        for i in range(int(req.value or "0")):
            await stream.send(Str(value=str(i)))

    async def count_then_fail(req: Str, stream: ttrpc.ServerStream, ctx: ttrpc.CallContext) -> None:
        await stream.send(Str(value="0"))
        raise ttrpc.RPCError(ttrpc.Code.NOT_FOUND, "gone")

    async def join(stream: ttrpc.ServerStream, ctx: ttrpc.CallContext) -> Str:
        return Str(value=",".join([m.value async for m in stream]))

    async def upper(stream: ttrpc.ServerStream, ctx: ttrpc.CallContext) -> None:
        async for m in stream:
            await stream.send(Str(value=m.value.upper()))

    async def echo(req: Str, ctx: ttrpc.CallContext) -> Str:
        return Str(value=req.value)

    card = ttrpc.Cardinality
    return {
        (SERVICE, "Count"): ttrpc.Handler(count, card.SERVER_STREAMING, Str, Str),
        (SERVICE, "CountThenFail"): ttrpc.Handler(count_then_fail, card.SERVER_STREAMING, Str, Str),
        (SERVICE, "Join"): ttrpc.Handler(join, card.CLIENT_STREAMING, Str, Str),
        (SERVICE, "Upper"): ttrpc.Handler(upper, card.BIDI, Str, Str),
        (SERVICE, "Echo"): ttrpc.Handler(echo, card.UNARY, Str, Str),
    }


class Wire:
    """The raw end of a socketpair: write literal bytes, read an exact number of bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, *chunks: bytes) -> None:
        self.writer.write(b"".join(chunks))
        await self.writer.drain()

    async def expect(self, expected: bytes) -> None:
        async with asyncio.timeout(GUARD):
            got = await self.reader.readexactly(len(expected))
        assert got.hex(" ") == expected.hex(" ")

    async def read_frame(self) -> tuple[bytes, bytes]:
        async with asyncio.timeout(GUARD):
            header = await self.reader.readexactly(10)
            return header, await self.reader.readexactly(int.from_bytes(header[:4], "big"))


@contextlib.asynccontextmanager
async def raw_client_to_server() -> AsyncIterator[Wire]:
    """Our Server on one end of a socketpair; the test writes raw bytes on the other."""
    server = ttrpc.Server(handlers())
    left, right = socket.socketpair()
    server_reader, server_writer = await asyncio.open_connection(sock=left)
    serving = asyncio.get_running_loop().create_task(server.handle_connection(server_reader, server_writer))
    reader, writer = await asyncio.open_connection(sock=right)
    try:
        yield Wire(reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        server.close()
        await server.wait_closed()
        await serving


@contextlib.asynccontextmanager
async def client_to_raw_server() -> AsyncIterator[tuple[ttrpc.Client, Wire]]:
    """Our Client on one end of a socketpair; the test plays the server with raw bytes."""
    left, right = socket.socketpair()
    client_reader, client_writer = await asyncio.open_connection(sock=left)
    reader, writer = await asyncio.open_connection(sock=right)
    try:
        async with ttrpc.Client(client_reader, client_writer) as client:
            yield client, Wire(reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def assert_connection_still_serves(wire: Wire, stream_id: int) -> None:
    """A unary call (Request flags 0) on the next id gets exactly its Response: nothing stray."""
    await wire.send(frame(stream_id, 1, 0x00, request("Echo", string_value("u"))))
    await wire.expect(frame(stream_id, 2, 0x00, ok_response(string_value("u"))))


# -- our server --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_server_streaming_data_frames_then_data_0x05_empty() -> None:
    async with raw_client_to_server() as wire:
        await wire.send(frame(1, 1, 0x01, request("Count", string_value("3"))))
        await wire.expect(
            h("00000003 00000001 03 00 0a0130")
            + h("00000003 00000001 03 00 0a0131")
            + h("00000003 00000001 03 00 0a0132")
            + h("00000000 00000001 03 05")
        )
        await assert_connection_still_serves(wire, 3)


@pytest.mark.asyncio
async def test_server_streaming_error_ends_with_a_response_frame() -> None:
    async with raw_client_to_server() as wire:
        await wire.send(frame(1, 1, 0x01, request("CountThenFail", string_value("1"))))
        # Data "0", then Response{status{code: 5, message: "gone"}} -- no Data 0x05
        await wire.expect(
            h("00000003 00000001 03 00 0a0130") + h("0000000a 00000001 02 00 0a08 0805 1204 676f6e65")
        )
        await assert_connection_still_serves(wire, 3)


@pytest.mark.asyncio
async def test_client_streaming_0x06_empty_then_data_then_0x05_gets_one_response() -> None:
    async with raw_client_to_server() as wire:
        await wire.send(
            frame(1, 1, 0x06, request("Join", None)),  # Rust style: REMOTE_OPEN|NO_DATA, no payload
            frame(1, 3, 0x00, string_value("a")),
            frame(1, 3, 0x00, b""),  # zero length: the default (empty) message
            frame(1, 3, 0x00, string_value("b")),
            frame(1, 3, 0x05),
        )
        await wire.expect(h("00000008 00000001 02 00 1206 0a04 612c2c62"))  # one Response "a,,b"
        await assert_connection_still_serves(wire, 3)


@pytest.mark.asyncio
async def test_go_style_0x02_payload_is_the_first_message() -> None:
    async with raw_client_to_server() as wire:
        await wire.send(
            frame(1, 1, 0x02, request("Join", string_value("first"))),
            frame(1, 3, 0x00, string_value("second")),
            frame(1, 3, 0x05),
        )
        await wire.expect(frame(1, 2, 0x00, ok_response(string_value("first,second"))))


@pytest.mark.asyncio
async def test_go_style_0x02_with_empty_payload_carries_no_message() -> None:
    async with raw_client_to_server() as wire:
        await wire.send(
            frame(1, 1, 0x02, request("Join", b"")), frame(1, 3, 0x00, string_value("x")), frame(1, 3, 0x05)
        )
        await wire.expect(frame(1, 2, 0x00, ok_response(string_value("x"))))


@pytest.mark.asyncio
async def test_rust_style_0x06_payload_is_not_a_message() -> None:
    async with raw_client_to_server() as wire:
        # NO_DATA wins: a payload on a 0x06 Request is not delivered (Rust's rule)
        await wire.send(frame(1, 1, 0x06, request("Join", string_value("ignored"))), frame(1, 3, 0x05))
        # Response{} for an empty StringValue: proto3 drops the empty payload, so length 0
        await wire.expect(h("00000000 00000001 02 00"))


@pytest.mark.asyncio
async def test_bidi_interleaves_and_ends_with_data_0x05() -> None:
    async with raw_client_to_server() as wire:
        await wire.send(frame(1, 1, 0x06, request("Upper", None)), frame(1, 3, 0x00, string_value("ab")))
        await wire.expect(h("00000004 00000001 03 00 0a024142"))  # answered before the next is sent
        await wire.send(frame(1, 3, 0x00, string_value("cd")))
        await wire.expect(h("00000004 00000001 03 00 0a024344"))
        await wire.send(frame(1, 3, 0x05))
        await wire.expect(h("00000000 00000001 03 05"))
        await assert_connection_still_serves(wire, 3)


@pytest.mark.asyncio
async def test_data_with_remote_closed_and_data_is_delivered_then_closes() -> None:
    # Go >= 1.2 delivers it too, then answers INVALID_ARGUMENT; ours takes it as the last message.
    async with raw_client_to_server() as wire:
        await wire.send(
            frame(1, 1, 0x06, request("Join", None)),
            frame(1, 3, 0x00, string_value("a")),
            frame(1, 3, 0x01, string_value("z")),
        )
        await wire.expect(frame(1, 2, 0x00, ok_response(string_value("a,z"))))
        await assert_connection_still_serves(wire, 3)


@pytest.mark.asyncio
async def test_unary_request_flags_0_unchanged() -> None:
    async with raw_client_to_server() as wire:
        await wire.send(h("00000017 00000001 01 00") + request("Echo", string_value("hi")))
        await wire.expect(h("00000006 00000001 02 00 1204 0a026869"))


# -- our client --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_client_server_streaming_sends_0x01_with_the_message_and_stops_at_0x05() -> None:
    async with client_to_raw_server() as (client, wire):

        async def serve() -> None:
            await wire.expect(frame(1, 1, 0x01, request("Count", string_value("2"))))
            await wire.send(
                frame(1, 3, 0x00, string_value("0")),
                frame(1, 3, 0x00, b""),  # zero length: an empty message, not the end
                frame(1, 3, 0x05),
            )

        server = asyncio.create_task(serve())
        async with client.stream(
            SERVICE, "Count", Str, server_streaming=True, request=Str(value="2")
        ) as stream:
            received = [m.value async for m in stream]
        await server
        assert received == ["0", ""]


@pytest.mark.asyncio
async def test_client_streaming_sends_0x06_empty_then_data_then_0x05() -> None:
    async with (
        client_to_raw_server() as (client, wire),
        client.stream(SERVICE, "Join", Str, client_streaming=True) as stream,
    ):
        await wire.expect(frame(1, 1, 0x06, request("Join", None)))
        await stream.send(Str(value="a"))
        await stream.send(Str())
        await wire.expect(frame(1, 3, 0x00, string_value("a")) + frame(1, 3, 0x00, b""))
        await stream.close_send()
        await wire.expect(h("00000000 00000001 03 05"))
        await wire.send(frame(1, 2, 0x00, ok_response(string_value("a,"))))
        assert (await stream.response()).value == "a,"


@pytest.mark.asyncio
async def test_client_bidi_and_a_response_frame_ends_the_stream_with_its_status() -> None:
    async with client_to_raw_server() as (client, wire):
        async with client.stream(
            SERVICE, "Upper", Str, client_streaming=True, server_streaming=True
        ) as stream:
            await wire.expect(frame(1, 1, 0x06, request("Upper", None)))
            await stream.send(Str(value="ab"))
            await wire.expect(frame(1, 3, 0x00, string_value("ab")))
            await wire.send(frame(1, 3, 0x00, string_value("AB")))
            assert (await stream.recv()) == Str(value="AB")
            await wire.send(frame(1, 2, 0x00, error_response(5, "gone")))
            with pytest.raises(RPCError) as info:
                await stream.recv()
        assert (info.value.code, info.value.message) == (ttrpc.Code.NOT_FOUND, "gone")


@pytest.mark.asyncio
async def test_client_accepts_final_data_with_remote_closed_and_a_message() -> None:
    async with (
        client_to_raw_server() as (client, wire),
        client.stream(SERVICE, "Count", Str, server_streaming=True, request=Str(value="1")) as stream,
    ):
        await wire.expect(frame(1, 1, 0x01, request("Count", string_value("1"))))
        await wire.send(frame(1, 3, 0x01, string_value("last")))
        assert [m.value async for m in stream] == ["last"]
