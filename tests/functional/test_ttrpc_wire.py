"""ttrpc error paths and wire rules, checked byte for byte with a raw peer on a real UNIX socket."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from kuasar import ttrpc
from kuasar.config import DEFAULT_LIMITS, TEST_LIMITS
from kuasar.errors import ConnectionClosed, RPCError
from kuasar.proto import ttrpc_pb2
from kuasar.ttrpc.framing import Flags, Frame, FrameType, encode_header
from tests.functional.ttrpc_helpers import (
    HANG_GUARD,
    SERVICE,
    Probe,
    RawPeer,
    Str,
    echo_handlers,
    unix_client,
    unix_server,
)

pytestmark = pytest.mark.asyncio
CODE = ttrpc.Code


def payload(value: str) -> bytes:
    return Str(value=value).SerializeToString()


async def assert_echo_works(peer: RawPeer, stream_id: int) -> None:
    await peer.request(stream_id, SERVICE, "Echo", payload("alive"))
    sid, response = await peer.recv_response()
    assert sid == stream_id
    assert not response.HasField("status")  # Go style: status omitted on success
    assert Str.FromString(response.payload).value == "alive"


async def test_even_stream_id_rejected_connection_kept(tmp_path: Path) -> None:
    async with unix_server(tmp_path, echo_handlers(Probe())) as (path, _), RawPeer.connect(path) as peer:
        await peer.request(2, SERVICE, "Echo", payload("x"))
        sid, response = await peer.recv_response()
        assert sid == 2
        assert response.status.code == CODE.INVALID_ARGUMENT
        assert response.status.message == "StreamID must be odd for client initiated streams"
        await assert_echo_works(peer, 3)


async def test_reused_stream_id_rejected(tmp_path: Path) -> None:
    async with unix_server(tmp_path, echo_handlers(Probe())) as (path, _), RawPeer.connect(path) as peer:
        await assert_echo_works(peer, 5)
        await peer.request(5, SERVICE, "Echo", payload("again"))
        sid, response = await peer.recv_response()
        assert (sid, response.status.code) == (5, CODE.INVALID_ARGUMENT)
        assert response.status.message == "StreamID cannot be re-used and must increment"


@pytest.mark.parametrize("limits", [DEFAULT_LIMITS, TEST_LIMITS], ids=["4MiB", "64KiB"])
async def test_oversize_request_resource_exhausted_and_connection_kept(
    tmp_path: Path, limits: object
) -> None:
    assert isinstance(limits, type(DEFAULT_LIMITS))
    size = limits.max_message + 1
    async with (
        unix_server(tmp_path, echo_handlers(Probe()), limits) as (path, _),
        RawPeer.connect(path) as peer,
    ):
        body = b"\x0a" + b"\xff" * (size - 1)  # its content never matters: it is discarded
        await peer.send_raw(encode_header(size, 1, FrameType.REQUEST, 0) + body)
        sid, response = await peer.recv_response()
        assert sid == 1
        assert response.status.code == CODE.RESOURCE_EXHAUSTED
        assert (
            response.status.message
            == f"message length {size} exceed maximum message size of {limits.max_message}"
        )
        await assert_echo_works(peer, 3)


async def test_exact_max_message_accepted(tmp_path: Path) -> None:
    limits = TEST_LIMITS
    async with (
        unix_server(tmp_path, echo_handlers(Probe()), limits) as (path, _),
        RawPeer.connect(path) as peer,
    ):
        req = ttrpc_pb2.Request(service=SERVICE, method="Echo")
        filler = limits.max_message - len(req.SerializeToString()) - 4  # tag + 3-byte varint length
        req.payload = b"\x0a" + b"\x00" * 0  # placeholder, replaced below
        req.payload = b"x" * filler
        data = req.SerializeToString()
        assert len(data) == limits.max_message
        await peer.send(Frame(1, FrameType.REQUEST, 0, data))
        _, response = await peer.recv_response()
        # payload "xxx..." is not a valid StringValue: INTERNAL from the payload decoder, not size
        assert response.status.code == CODE.INTERNAL
        assert response.status.message.startswith("ttrpc: error unmarshalling payload")


async def test_garbage_header_closes_only_that_connection(tmp_path: Path) -> None:
    async with unix_server(tmp_path, echo_handlers(Probe())) as (path, _):  # noqa: SIM117
        async with RawPeer.connect(path) as good, RawPeer.connect(path) as bad:
            await assert_echo_works(good, 1)
            await bad.send_raw(b"\xff" * 10 + b"junk")
            assert await bad.recv() is None  # server closed it
            await assert_echo_works(good, 3)


async def test_unknown_frame_type_ignored(tmp_path: Path) -> None:
    async with unix_server(tmp_path, echo_handlers(Probe())) as (path, _), RawPeer.connect(path) as peer:
        await peer.send(Frame(1, 9, 0, b"from the future"))
        await peer.send(Frame(1, FrameType.RESPONSE, 0, b""))  # a client never sends these: ignored
        await assert_echo_works(peer, 3)


async def test_undecodable_request_and_payload(tmp_path: Path) -> None:
    async with unix_server(tmp_path, echo_handlers(Probe())) as (path, _), RawPeer.connect(path) as peer:
        await peer.send(Frame(1, FrameType.REQUEST, 0, b"\xff\xff\xff"))
        _, response = await peer.recv_response()
        assert response.status.code == CODE.INVALID_ARGUMENT
        assert response.status.message.startswith("unmarshal request error")
        await peer.request(3, SERVICE, "Echo", b"\x0a\x05ab")  # truncated StringValue
        _, response = await peer.recv_response()
        assert response.status.code == CODE.INTERNAL
        await assert_echo_works(peer, 5)


async def test_unknown_service_checked_before_payload(tmp_path: Path) -> None:
    async with unix_server(tmp_path, echo_handlers(Probe())) as (path, _), RawPeer.connect(path) as peer:
        await peer.request(1, "x.Y", "Z", b"\xff\xff")
        _, response = await peer.recv_response()
        assert (response.status.code, response.status.message) == (CODE.UNIMPLEMENTED, "service x.Y")
        await peer.request(3, SERVICE, "Z", b"\xff\xff")
        _, response = await peer.recv_response()
        assert (response.status.code, response.status.message) == (CODE.UNIMPLEMENTED, "method Z")


async def test_server_side_deadline_from_timeout_nano(tmp_path: Path) -> None:
    probe = Probe()
    async with unix_server(tmp_path, echo_handlers(probe)) as (path, _), RawPeer.connect(path) as peer:
        await peer.request(1, SERVICE, "Sleep", payload("30"), timeout_nano=100_000_000)
        _, response = await peer.recv_response()
        assert response.status.code == CODE.DEADLINE_EXCEEDED
        assert probe.cancelled.is_set()


async def test_server_streaming_wire_frames(tmp_path: Path) -> None:
    async with unix_server(tmp_path, echo_handlers(Probe())) as (path, _), RawPeer.connect(path) as peer:
        await peer.request(1, SERVICE, "Count", payload("2"), flags=Flags.REMOTE_CLOSED)
        frames = [await peer.recv() for _ in range(3)]
        assert frames == [
            Frame(1, FrameType.DATA, 0, payload("0")),
            Frame(1, FrameType.DATA, 0, payload("1")),
            Frame(1, FrameType.DATA, Flags.REMOTE_CLOSED | Flags.NO_DATA, b""),
        ]
        # Go rule (ttrpc issue #126): an empty payload on a server-streaming call is still the request
        await peer.request(3, SERVICE, "Count", b"", flags=Flags.REMOTE_CLOSED)
        assert await peer.recv() == Frame(3, FrameType.DATA, Flags.REMOTE_CLOSED | Flags.NO_DATA, b"")
        # on error the server ends with a Response frame
        await peer.request(5, SERVICE, "CountThenFail", b"", flags=Flags.REMOTE_CLOSED)
        assert await peer.recv() == Frame(5, FrameType.DATA, 0, payload("first"))
        sid, response = await peer.recv_response()
        assert (sid, response.status.code, response.status.message) == (5, CODE.ABORTED, "stopped")


@pytest.mark.parametrize(
    ("flags", "first", "expect"),
    [
        (Flags.REMOTE_OPEN | Flags.NO_DATA, b"", "a,b"),  # Rust client, and ours
        (Flags.REMOTE_OPEN, b"", "a,b"),  # Go client: empty payload is not a message
        (Flags.REMOTE_OPEN, payload("p"), "p,a,b"),  # Go: a non-empty payload is the first message
        (Flags.REMOTE_OPEN | Flags.NO_DATA, payload("p"), "a,b"),  # Rust: NO_DATA wins
    ],
)
async def test_client_streaming_first_message_rules(
    tmp_path: Path, flags: int, first: bytes, expect: str
) -> None:
    async with unix_server(tmp_path, echo_handlers(Probe())) as (path, _), RawPeer.connect(path) as peer:
        await peer.request(1, SERVICE, "Join", first, flags=flags)
        await peer.send(Frame(1, FrameType.DATA, 0, payload("a")))
        await peer.send(Frame(1, FrameType.DATA, 0, payload("b")))
        await peer.send(Frame(1, FrameType.DATA, Flags.REMOTE_CLOSED | Flags.NO_DATA, b""))
        _, response = await peer.recv_response()
        assert not response.HasField("status")
        assert Str.FromString(response.payload).value == expect
        # a Data frame for the finished stream gets Go's answer
        await peer.send(Frame(1, FrameType.DATA, 0, payload("late")))
        sid, response = await peer.recv_response()
        assert (sid, response.status.code) == (1, CODE.INVALID_ARGUMENT)
        assert response.status.message == "StreamID is no longer active"


async def test_oversize_data_frame_fails_that_stream_only(tmp_path: Path) -> None:
    limits = TEST_LIMITS
    async with (
        unix_server(tmp_path, echo_handlers(Probe()), limits) as (path, _),
        RawPeer.connect(path) as peer,
    ):
        await peer.request(1, SERVICE, "Join", b"", flags=Flags.REMOTE_OPEN | Flags.NO_DATA)
        size = limits.max_message + 10
        await peer.send_raw(encode_header(size, 1, FrameType.DATA, 0) + b"\0" * size)
        _, response = await peer.recv_response()
        assert response.status.code == CODE.RESOURCE_EXHAUSTED
        await assert_echo_works(peer, 3)


# -- the client against a raw server ------------------------------------------------------------


@contextlib.asynccontextmanager
async def raw_server(
    tmp_path: Path, script: Callable[[RawPeer], Awaitable[None]]
) -> AsyncIterator[tuple[str, list[BaseException]]]:
    """A UNIX server whose one connection is driven by ``script`` (frames byte for byte)."""
    errors: list[BaseException] = []
    done = asyncio.Event()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await script(RawPeer(reader, writer))
        except BaseException as exc:
            errors.append(exc)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            done.set()

    path = str(tmp_path / "raw.sock")
    listener = await asyncio.start_unix_server(on_connect, path)
    try:
        yield path, errors
        await asyncio.wait_for(done.wait(), HANG_GUARD)
    finally:
        listener.close()
        await listener.wait_closed()


async def test_client_wire_frames_and_both_success_encodings(tmp_path: Path) -> None:
    seen: list[Frame] = []
    first_request = asyncio.Event()

    async def script(peer: RawPeer) -> None:
        for _ in range(2):  # unary x2: answer Go style, then Rust style (status {})
            frame = await peer.recv()
            assert frame is not None
            seen.append(frame)
            first_request.set()
        await peer.send(
            Frame(1, FrameType.RESPONSE, 0, b"\x12" + bytes([len(payload("go"))]) + payload("go"))
        )
        rust = ttrpc_pb2.Response(
            status=ttrpc_pb2.Status(code=0), payload=payload("rust")
        ).SerializeToString()
        assert rust.startswith(b"\x0a\x00")
        await peer.send(Frame(3, FrameType.RESPONSE, 0, rust))
        # server-streaming, client-streaming and bidi requests
        for _ in range(3):
            frame = await peer.recv()
            assert frame is not None
            seen.append(frame)
        await peer.send(Frame(5, FrameType.DATA, Flags.REMOTE_CLOSED | Flags.NO_DATA, b""))
        for _ in range(2):  # client-streaming: one Data, then the close
            frame = await peer.recv()
            assert frame is not None
            seen.append(frame)
        await peer.send(
            Frame(7, FrameType.RESPONSE, 0, ttrpc_pb2.Response(payload=payload("j")).SerializeToString())
        )
        frame = await peer.recv()  # bidi close_send
        assert frame is not None
        seen.append(frame)
        await peer.send(Frame(9, FrameType.DATA, Flags.REMOTE_CLOSED | Flags.NO_DATA, b""))

    async with raw_server(tmp_path, script) as (path, errors), unix_client(path) as client:
        first = asyncio.create_task(client.call(SERVICE, "A", Str(value="1"), Str, metadata=[("k", "v")]))
        await asyncio.wait_for(first_request.wait(), HANG_GUARD)  # A is stream 1 on the wire
        second = asyncio.create_task(client.call(SERVICE, "B", Str(value="2"), Str, timeout=5))
        assert (await first).value == "go"
        assert (await second).value == "rust"
        async with (  # noqa: SIM117
            client.stream(
                SERVICE, "S", Str, client_streaming=False, server_streaming=True, request=Str(value="s")
            ) as ss,
            client.stream(SERVICE, "C", Str, client_streaming=True, server_streaming=False) as cs,
        ):
            async with client.stream(SERVICE, "D", Str, client_streaming=True, server_streaming=True) as bidi:
                assert await ss.recv() is None
                await cs.send(Str(value="c"))
                assert (await cs.response()).value == "j"
                await bidi.close_send()
                assert await bidi.recv() is None
    assert not errors, errors
    requests = [f for f in seen if f.type == FrameType.REQUEST]
    assert [f.stream_id for f in requests] == [1, 3, 5, 7, 9]
    assert [f.flags for f in requests] == [0, 0, 0x01, 0x06, 0x06]
    decoded = [ttrpc_pb2.Request.FromString(f.data) for f in requests]
    assert [(r.service, r.method) for r in decoded] == [(SERVICE, m) for m in "ABSCD"]
    assert [(kv.key, kv.value) for kv in decoded[0].metadata] == [("k", "v")]
    assert decoded[0].timeout_nano == 0 and 0 < decoded[1].timeout_nano <= 5_000_000_000
    assert decoded[2].payload == payload("s")
    assert decoded[3].payload == b"" and decoded[4].payload == b""
    data = [f for f in seen if f.type == FrameType.DATA]
    assert data == [
        Frame(7, FrameType.DATA, 0, payload("c")),
        Frame(7, FrameType.DATA, 0x05, b""),
        Frame(9, FrameType.DATA, 0x05, b""),
    ]


async def test_connection_loss_fails_all_pending_with_one_sticky_error(tmp_path: Path) -> None:
    async def script(peer: RawPeer) -> None:
        for _ in range(5):
            assert await peer.recv() is not None
        # then hang up without answering

    async with raw_server(tmp_path, script) as (path, errors), unix_client(path) as client:
        calls = [asyncio.create_task(client.call(SERVICE, "Echo", Str(), Str)) for _ in range(5)]
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), HANG_GUARD)
        assert all(isinstance(r, ConnectionClosed) for r in results), results
        assert len({id(r) for r in results}) == 1  # one sticky error
        with pytest.raises(ConnectionClosed) as later:
            await client.call(SERVICE, "Echo", Str(), Str)
        assert later.value is results[0]
        with pytest.raises(ConnectionClosed):
            async with client.stream(SERVICE, "X", Str, server_streaming=True) as never:
                pytest.fail(f"opened a stream on a dead connection: {never}")
    assert not errors


async def test_connection_loss_fails_open_streams(tmp_path: Path) -> None:
    async def script(peer: RawPeer) -> None:
        assert await peer.recv() is not None
        await peer.send(Frame(1, FrameType.DATA, 0, payload("only")))

    async with raw_server(tmp_path, script) as (path, _), unix_client(path) as client:  # noqa: SIM117
        async with client.stream(SERVICE, "S", Str, client_streaming=True, server_streaming=True) as stream:
            assert (await stream.recv()).value == "only"  # type: ignore[union-attr]
            with pytest.raises(ConnectionClosed):
                await stream.recv()


async def test_client_rejects_data_on_unary_and_error_status_details(tmp_path: Path) -> None:
    async def script(peer: RawPeer) -> None:
        assert await peer.recv() is not None
        await peer.send(Frame(1, FrameType.DATA, 0, payload("?")))
        assert await peer.recv() is not None
        status = ttrpc_pb2.Status(code=5, message="gone")
        status.details.add().Pack(Str(value="detail"))
        await peer.send(
            Frame(3, FrameType.RESPONSE, 0, ttrpc_pb2.Response(status=status).SerializeToString())
        )

    async with raw_server(tmp_path, script) as (path, _), unix_client(path) as client:
        with pytest.raises(Exception, match="received data from non-streaming server"):
            await client.call(SERVICE, "A", Str(), Str)
        with pytest.raises(RPCError) as info:
            await client.call(SERVICE, "B", Str(), Str)
        assert (info.value.code, info.value.message) == (5, "gone")
        assert len(info.value.details) == 1


# -- graceful shutdown ----------------------------------------------------------------------------


async def test_graceful_shutdown_drains_in_flight_calls(tmp_path: Path) -> None:
    probe = Probe()
    async with unix_server(tmp_path, echo_handlers(probe)) as (path, server), unix_client(path) as client:
        in_flight = asyncio.create_task(client.call(SERVICE, "WaitRelease", Str(), Str))
        await asyncio.wait_for(probe.started.wait(), HANG_GUARD)
        server.close()
        with pytest.raises(RPCError) as info:  # new calls are refused while draining
            await client.call(SERVICE, "Echo", Str(), Str)
        assert info.value.code == CODE.UNAVAILABLE
        closing = asyncio.create_task(server.wait_closed())
        await asyncio.sleep(0.05)
        assert not closing.done()
        probe.release.set()
        assert (await asyncio.wait_for(in_flight, HANG_GUARD)).value == "released"
        await asyncio.wait_for(closing, HANG_GUARD)
        with pytest.raises(ConnectionClosed):  # the idle connection was closed
            await asyncio.wait_for(client.call(SERVICE, "Echo", Str(), Str), HANG_GUARD)


async def test_shutdown_grace_bounds_a_stuck_handler(tmp_path: Path) -> None:
    probe = Probe()
    limits = TEST_LIMITS.replace(shutdown_grace=0.3)
    async with (
        unix_server(tmp_path, echo_handlers(probe), limits) as (path, server),
        unix_client(path) as client,
    ):
        stuck = asyncio.create_task(client.call(SERVICE, "Sleep", Str(value="60"), Str))
        await asyncio.wait_for(probe.started.wait(), HANG_GUARD)
        server.close()
        await asyncio.wait_for(server.wait_closed(), HANG_GUARD)
        assert probe.cancelled.is_set()
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(stuck, HANG_GUARD)


async def test_oversized_response_fails_only_that_call(tmp_path: Path) -> None:
    limits = TEST_LIMITS
    size = limits.max_message + 1

    async def script(peer: RawPeer) -> None:
        assert await peer.recv() is not None
        await peer.send_raw(encode_header(size, 1, FrameType.RESPONSE, 0) + b"\x12" * size)
        assert await peer.recv() is not None
        await peer.send(
            Frame(3, FrameType.RESPONSE, 0, ttrpc_pb2.Response(payload=payload("ok")).SerializeToString())
        )

    async with raw_server(tmp_path, script) as (path, errors), unix_client(path, limits) as client:
        with pytest.raises(RPCError, match=f"message length {size} exceed maximum message size") as info:
            await client.call(SERVICE, "Big", Str(), Str)
        assert info.value.code == ttrpc.Code.RESOURCE_EXHAUSTED  # as Go's client: a status, not a dead link
        assert (await client.call(SERVICE, "Small", Str(), Str)).value == "ok"
    assert not errors
