"""Python ttrpc client <-> Python ttrpc server over real sockets: calls, streams, deadlines."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kuasar import ttrpc
from kuasar.config import TEST_LIMITS
from kuasar.errors import ConnectionClosed, DeadlineExceeded, ProtocolError, RPCError
from kuasar.proto import health_pb2
from kuasar.ttrpc.testing import client_server_pair
from tests.functional.ttrpc_helpers import SERVICE, Probe, Str, echo_handlers, unix_client, unix_server

pytestmark = pytest.mark.asyncio


async def test_unary_over_unix_socket(tmp_path: Path) -> None:
    probe = Probe()
    async with unix_server(tmp_path, echo_handlers(probe)) as (path, _), unix_client(path) as client:
        reply = await client.call(SERVICE, "Echo", Str(value="hello"), Str)
        assert reply == Str(value="hello")
        assert (probe.contexts[0].service, probe.contexts[0].method) == (SERVICE, "Echo")
        assert probe.contexts[0].stream_id == 1
        assert probe.contexts[0].deadline is None


async def test_unary_over_socketpair_and_health() -> None:
    async with client_server_pair([echo_handlers(Probe()), ttrpc.health_handlers("9.9")]) as (client, _):
        assert (await client.call(SERVICE, "Echo", Str(value="x"), Str)).value == "x"
        check = await client.call(
            "grpc.Health", "Check", health_pb2.CheckRequest(), health_pb2.HealthCheckResponse
        )
        assert check.status == health_pb2.HealthCheckResponse.SERVING
        version = await client.call(
            "grpc.Health", "Version", health_pb2.CheckRequest(), health_pb2.VersionCheckResponse
        )
        assert version.agent_version == "9.9"


async def test_server_streaming(tmp_path: Path) -> None:
    async with unix_server(tmp_path, echo_handlers(Probe())) as (path, _), unix_client(path) as client:
        stream = client.stream(
            SERVICE, "Count", Str, client_streaming=False, server_streaming=True, request=Str(value="5")
        )
        async with stream:
            assert [m.value async for m in stream] == ["0", "1", "2", "3", "4"]
            assert await stream.recv() is None  # stays ended
        async with client.stream(
            SERVICE, "Count", Str, client_streaming=False, server_streaming=True, request=Str(value="0")
        ) as stream:
            assert await stream.recv() is None


async def test_server_streaming_error_after_data() -> None:
    async with client_server_pair(echo_handlers(Probe())) as (client, _):
        async with client.stream(
            SERVICE, "CountThenFail", Str, client_streaming=False, server_streaming=True, request=Str()
        ) as stream:
            assert (await stream.recv()) == Str(value="first")
            with pytest.raises(RPCError) as info:
                await stream.recv()
        assert (info.value.code, info.value.message) == (ttrpc.Code.ABORTED, "stopped")


async def test_client_streaming() -> None:
    async with client_server_pair(echo_handlers(Probe())) as (client, _):
        async with client.stream(
            SERVICE, "Join", Str, client_streaming=True, server_streaming=False
        ) as stream:
            for part in "abc":
                await stream.send(Str(value=part))
            assert (await stream.response()).value == "a,b,c"
        # an initial `request` is sent as the first message; zero messages is fine too
        async with client.stream(
            SERVICE, "Join", Str, client_streaming=True, server_streaming=False, request=Str(value="z")
        ) as stream:
            assert (await stream.response()).value == "z"
        async with client.stream(
            SERVICE, "Join", Str, client_streaming=True, server_streaming=False
        ) as stream:
            assert (await stream.response()).value == ""
            with pytest.raises(ProtocolError):
                await stream.send(Str(value="late"))


async def test_bidi_interleaved(tmp_path: Path) -> None:
    async with unix_server(tmp_path, echo_handlers(Probe())) as (path, _), unix_client(path) as client:  # noqa: SIM117
        async with client.stream(
            SERVICE, "Upper", Str, client_streaming=True, server_streaming=True
        ) as stream:
            for word in ["a", "bc", "", "def"]:
                await stream.send(Str(value=word))
                assert (await stream.recv()) == Str(value=word.upper())
            await stream.close_send()
            assert await stream.recv() is None


async def test_thousand_concurrent_calls_one_connection() -> None:
    async with client_server_pair(echo_handlers(Probe())) as (client, _):
        replies = await asyncio.wait_for(
            asyncio.gather(*(client.call(SERVICE, "Echo", Str(value=str(i)), Str) for i in range(1000))), 60
        )
        assert [r.value for r in replies] == [str(i) for i in range(1000)]
        assert client.active_streams == 0


async def test_concurrent_streams_and_calls_interleave() -> None:
    async with client_server_pair(echo_handlers(Probe())) as (client, _):

        async def one_stream(n: int) -> list[str]:
            async with client.stream(
                SERVICE,
                "Count",
                Str,
                client_streaming=False,
                server_streaming=True,
                request=Str(value=str(n)),
            ) as stream:
                return [m.value async for m in stream]

        results = await asyncio.gather(*(one_stream(n) for n in range(30)))
        assert results == [[str(i) for i in range(n)] for n in range(30)]


async def test_metadata_repeated_keys_keep_order() -> None:
    async with client_server_pair(echo_handlers(Probe())) as (client, _):
        metadata = [("a", "1"), ("b", "x"), ("a", "2"), ("containerd-namespace-ttrpc", "k8s.io")]
        reply = await client.call(SERVICE, "Metadata", Str(), Str, metadata=metadata)
        assert reply.value == "a=1;b=x;a=2;containerd-namespace-ttrpc=k8s.io"


async def test_deadline_is_sent_to_server() -> None:
    probe = Probe()
    async with client_server_pair(echo_handlers(probe)) as (client, _):
        before = asyncio.get_running_loop().time()
        await client.call(SERVICE, "Echo", Str(), Str, timeout=30)
        deadline = probe.contexts[0].deadline
        assert deadline is not None
        assert before < deadline <= asyncio.get_running_loop().time() + 30


async def test_client_deadline_raises_and_server_handler_is_stopped() -> None:
    probe = Probe()
    async with client_server_pair(echo_handlers(probe)) as (client, _):
        with pytest.raises(DeadlineExceeded) as info:
            await client.call(SERVICE, "Sleep", Str(value="30"), Str, timeout=0.2)
        assert isinstance(info.value, TimeoutError)
        assert client.active_streams == 0
        # the server enforces the same timeout_nano and cancels the handler
        await asyncio.wait_for(probe.cancelled.wait(), 10)
        assert (await client.call(SERVICE, "Echo", Str(value="after"), Str)).value == "after"


async def test_stream_deadline() -> None:
    async with client_server_pair(echo_handlers(Probe())) as (client, _):
        async with client.stream(
            SERVICE, "Upper", Str, client_streaming=True, server_streaming=True, timeout=0.2
        ) as stream:
            with pytest.raises(DeadlineExceeded):
                await stream.recv()
        assert client.active_streams == 0


async def test_cancelling_a_call_releases_its_stream_id() -> None:
    probe = Probe()
    async with client_server_pair(echo_handlers(probe)) as (client, _):
        task = asyncio.create_task(client.call(SERVICE, "WaitRelease", Str(), Str))
        await asyncio.wait_for(probe.started.wait(), 10)
        assert client.active_streams == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert client.active_streams == 0
        probe.release.set()  # the server now answers the abandoned stream: the client drops it
        assert (await client.call(SERVICE, "Echo", Str(value="still fine"), Str)).value == "still fine"


async def test_leaving_a_stream_early_releases_it() -> None:
    async with client_server_pair(echo_handlers(Probe()), limits=TEST_LIMITS) as (client, _):
        async with client.stream(
            SERVICE, "Count", Str, client_streaming=False, server_streaming=True, request=Str(value="100")
        ) as stream:
            assert (await stream.recv()) == Str(value="0")
        assert client.active_streams == 0
        # the rest of that stream is dropped, not queued; the connection keeps working
        assert (await client.call(SERVICE, "Echo", Str(value="ok"), Str)).value == "ok"


async def test_error_inside_stream_block_still_half_closes() -> None:
    probe = Probe()
    async with client_server_pair(echo_handlers(probe)) as (client, _):
        with pytest.raises(KeyError):
            async with client.stream(SERVICE, "Join", Str, client_streaming=True) as stream:
                await stream.send(Str(value="a"))
                raise KeyError("caller bug")
        await asyncio.wait_for(probe.input_ended.wait(), 10)  # the server saw the end of input
        assert client.active_streams == 0


async def test_full_stream_queue_pauses_the_reader_head_of_line() -> None:
    probe = Probe()
    async with (
        client_server_pair(echo_handlers(probe), limits=TEST_LIMITS) as (client, _),
        client.stream(
            SERVICE, "Count", Str, client_streaming=False, server_streaming=True, request=Str(value="50")
        ) as stream,
    ):
        await asyncio.wait_for(probe.started.wait(), 10)  # >= 20 messages are on the wire
        unary = asyncio.create_task(client.call(SERVICE, "Echo", Str(value="behind"), Str))
        done, _ = await asyncio.wait({unary}, timeout=0.3)
        assert not done, "the reader should be paused behind the unread stream (queue of 8)"
        assert [m.value async for m in stream] == [str(i) for i in range(50)]
        assert (await asyncio.wait_for(unary, 10)).value == "behind"


async def test_rpc_error_status_round_trip() -> None:
    async with client_server_pair(echo_handlers(Probe())) as (client, _):
        with pytest.raises(RPCError) as info:
            await client.call(SERVICE, "Fail", Str(value="pod-1"), Str)
        assert (info.value.code, info.value.message) == (ttrpc.Code.NOT_FOUND, "no such thing: pod-1")
        assert str(info.value) == "the agent refused: no such thing: pod-1"  # plain words, code in .code


async def test_handler_exception_is_unknown_without_details(caplog: pytest.LogCaptureFixture) -> None:
    async with client_server_pair(echo_handlers(Probe())) as (client, _):
        with pytest.raises(RPCError) as info:
            await client.call(SERVICE, "Boom", Str(), Str)
    assert info.value.code == ttrpc.Code.UNKNOWN
    assert "secret" not in info.value.message and "Traceback" not in info.value.message
    assert any(r.exc_info and "secret internal detail" in str(r.exc_info[1]) for r in caplog.records)


async def test_unknown_service_and_method_go_texts() -> None:
    async with client_server_pair(echo_handlers(Probe())) as (client, _):
        with pytest.raises(RPCError) as info:
            await client.call("no.Such", "Echo", Str(), Str)
        assert (info.value.code, info.value.message) == (ttrpc.Code.UNIMPLEMENTED, "service no.Such")
        with pytest.raises(RPCError) as info:
            await client.call(SERVICE, "Nope", Str(), Str)
        assert (info.value.code, info.value.message) == (ttrpc.Code.UNIMPLEMENTED, "method Nope")


async def test_oversize_request_refused_locally_connection_fine() -> None:
    async with client_server_pair(echo_handlers(Probe()), limits=TEST_LIMITS) as (client, _):
        with pytest.raises(RPCError) as info:
            await client.call(SERVICE, "Echo", Str(value="x" * TEST_LIMITS.max_message), Str)
        assert info.value.code == ttrpc.Code.RESOURCE_EXHAUSTED
        assert info.value.message.startswith("message length ")
        assert info.value.message.endswith(f"exceed maximum message size of {TEST_LIMITS.max_message}")
        big = "y" * (TEST_LIMITS.max_message - 100)
        assert (await client.call(SERVICE, "Echo", Str(value=big), Str)).value == big


async def test_client_close_fails_pending_and_later_calls() -> None:
    probe = Probe()
    async with client_server_pair(echo_handlers(probe)) as (client, _):
        pending = asyncio.create_task(client.call(SERVICE, "WaitRelease", Str(), Str))
        await asyncio.wait_for(probe.started.wait(), 10)
        client.close()
        with pytest.raises(ConnectionClosed):
            await pending
        with pytest.raises(ConnectionClosed):
            await client.call(SERVICE, "Echo", Str(), Str)
        assert client.closed


async def test_duplicate_handlers_rejected() -> None:
    handlers = echo_handlers(Probe())
    with pytest.raises(ValueError, match="duplicate"):
        ttrpc.Server([handlers, {(SERVICE, "Echo"): handlers[(SERVICE, "Echo")]}])
