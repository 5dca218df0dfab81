"""The blocking ttrpc client's pipelined calls (``start`` / ``result`` / ``abandon``) against a peer
scripted frame by frame over a real socketpair: requests started together leave in one write, each
answer reaches its own call whatever the order, an abandoned call's answer is dropped."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from kuasar import wire
from kuasar.errors import RPCError
from kuasar.ttrpc.blocking import BlockingClient
from kuasar.ttrpc.framing import FrameDecoder, FrameType, encode_header


@pytest.fixture
def pair() -> Iterator[tuple[BlockingClient, socket.socket]]:
    left, right = socket.socketpair()
    client = BlockingClient(left)
    try:
        yield client, right
    finally:
        client.close()
        right.close()


def answer(stream_id: int, payload: bytes = b"", code: int = 0, message: str = "") -> bytes:
    status = None if code == 0 else wire.Status(code=code, message=message)
    data = wire.Response(status=status, payload=payload).encode()
    return encode_header(len(data), stream_id, FrameType.RESPONSE, 0) + data


def requests(peer: socket.socket) -> list[tuple[int, str]]:
    """The calls one read of ``peer`` holds: (stream id, service/method)."""
    frames = FrameDecoder(1 << 20).feed(peer.recv(1 << 16))
    return [(f.stream_id, "{0.service}/{0.method}".format(wire.Request.decode(f.data))) for f in frames]


def test_started_calls_share_one_write_and_read_their_own_answers(
    pair: tuple[BlockingClient, socket.socket],
) -> None:
    client, peer = pair
    first = client.start("grpc.Health", "Check", timeout=5)
    second = client.start("kuasar.agent.v1.Agent", "Ping", timeout=5)
    peer.setblocking(False)  # nothing is sent before a result is asked for
    with pytest.raises(BlockingIOError):
        peer.recv(1)
    peer.setblocking(True)
    peer.sendall(answer(second, b"pong") + answer(first, b"\x08\x01"))  # the other order, one send
    assert client.result(first) == b"\x08\x01"
    assert requests(peer) == [(first, "grpc.Health/Check"), (second, "kuasar.agent.v1.Agent/Ping")]
    assert client.result(second) == b"pong"


def test_an_abandoned_call_drops_its_answer(pair: tuple[BlockingClient, socket.socket]) -> None:
    client, peer = pair
    guess = client.start("kuasar.agent.v1.Agent", "Ping", timeout=5)
    check = client.start("grpc.Health", "Check", timeout=5)
    peer.sendall(answer(check, code=3, message="grpc.Health service does not exist"))
    with pytest.raises(RPCError, match="does not exist"):
        client.result(check)
    assert requests(peer) == [(guess, "kuasar.agent.v1.Agent/Ping"), (check, "grpc.Health/Check")]
    client.abandon(guess)
    peer.sendall(answer(guess, b"late") + answer(5, b"ok"))
    assert client.call("grpc.SandboxService", "Check", timeout=5) == b"ok"  # stream 5
    assert requests(peer) == [(5, "grpc.SandboxService/Check")]
