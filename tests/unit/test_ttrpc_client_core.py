"""The sans-IO ttrpc client core against frames built by the generated stubs: request frames and
flags byte for byte, replies fed in every split, and each way a reply can be wrong."""

from __future__ import annotations

import pytest

from kuasar.codes import Code
from kuasar.errors import ProtocolError, RPCError
from kuasar.proto import ttrpc_pb2
from kuasar.ttrpc._client_core import ClientCore, Finished, Message
from kuasar.ttrpc.framing import Flags, FrameType, encode_header


def frame(stream_id: int, kind: int, flags: int, data: bytes) -> bytes:
    return encode_header(len(data), stream_id, kind, flags) + data


def ok(stream_id: int, payload: bytes) -> bytes:
    return frame(stream_id, FrameType.RESPONSE, 0, ttrpc_pb2.Response(payload=payload).SerializeToString())


def test_requests_match_the_stubs_and_the_async_clients_flags() -> None:
    core = ClientCore(4 * 1024 * 1024)
    assert core.open("grpc.Health", "Check", b"", timeout=0.5) == 1
    assert core.open("svc", "Stream", b"", client_streaming=True, server_streaming=True) == 3
    assert core.open("svc", "Watch", b"x", server_streaming=True) == 5
    core.send(3, b"in")
    core.close_send(3)
    unary = ttrpc_pb2.Request(service="grpc.Health", method="Check", timeout_nano=500_000_000)
    expected = (
        frame(1, FrameType.REQUEST, 0, unary.SerializeToString())
        + frame(
            3,
            FrameType.REQUEST,
            Flags.REMOTE_OPEN | Flags.NO_DATA,
            ttrpc_pb2.Request(service="svc", method="Stream").SerializeToString(),
        )
        + frame(
            5,
            FrameType.REQUEST,
            Flags.REMOTE_CLOSED,
            ttrpc_pb2.Request(service="svc", method="Watch", payload=b"x").SerializeToString(),
        )
        + frame(3, FrameType.DATA, 0, b"in")
        + frame(3, FrameType.DATA, Flags.REMOTE_CLOSED | Flags.NO_DATA, b"")
    )
    assert core.data_to_send() == expected
    assert core.data_to_send() == b""


def test_replies_in_every_split() -> None:
    stream = (
        frame(3, FrameType.DATA, 0, b"one")
        + frame(3, FrameType.DATA, 0, b"")  # an empty message is a message
        + ok(1, b"pong")
        + frame(3, FrameType.DATA, Flags.REMOTE_CLOSED, b"last")
        + ok(99, b"nobody asked")
    )
    expected = [Message(3, b"one"), Message(3, b""), Finished(1, b"pong"), Message(3, b"last"), Finished(3)]
    for cut in range(len(stream) + 1):
        core = ClientCore(1024)
        core.open("s", "Unary", b"")
        core.open("s", "Stream", b"", server_streaming=True)
        assert core.receive_data(stream[:cut]) + core.receive_data(stream[cut:]) == expected, cut


def test_status_oversize_and_data_on_a_unary_call() -> None:
    core = ClientCore(16)
    for _ in range(3):
        core.open("s", "m", b"")
    status = ttrpc_pb2.Response(status=ttrpc_pb2.Status(code=Code.NOT_FOUND, message="gone"))
    events = core.receive_data(
        frame(1, FrameType.RESPONSE, 0, status.SerializeToString())
        + encode_header(17, 3, FrameType.RESPONSE, 0)
        + b"\0" * 17
        + frame(5, FrameType.DATA, 0, b"x")
    )
    errors = [event.error for event in events if isinstance(event, Finished)]
    assert isinstance(errors[0], RPCError) and (errors[0].code, errors[0].message) == (Code.NOT_FOUND, "gone")
    assert isinstance(errors[1], RPCError) and errors[1].code == Code.RESOURCE_EXHAUSTED
    assert "exceed maximum message size of 16" in errors[1].message
    assert isinstance(errors[2], ProtocolError)
    with pytest.raises(RPCError, match="exceed maximum"):
        core.open("s", "m", b"x" * 32)


def test_a_garbage_header_breaks_the_connection_after_the_good_frames() -> None:
    core = ClientCore(1024)
    core.open("s", "m", b"")
    events = core.receive_data(ok(1, b"fine") + b"\xff" * 10)
    assert events == [Finished(1, b"fine")]
    assert core.error is not None
    with pytest.raises(ProtocolError):
        core.receive_data(b"")
