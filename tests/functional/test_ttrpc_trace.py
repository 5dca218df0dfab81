"""``-v`` trace lines of the ttrpc client: a real client and server over a socketpair, the lines read
from the ``kuasar.trace`` logger. One line per call when it ends; a stream gets one when it opens
and one with its totals when it closes; failures name the status and its message."""

from __future__ import annotations

import logging
import re

import pytest

from kuasar._log import TRACE_LOGGER
from kuasar.errors import DeadlineExceeded, RPCError
from kuasar.ttrpc.testing import client_server_pair
from tests.functional.ttrpc_helpers import SERVICE, Probe, Str, echo_handlers

pytestmark = pytest.mark.asyncio

#: ``(...)`` totals with the time replaced, so lines can be compared whole.
_TIME = re.compile(r", \d+\.\d (ms)\)$|, \d+\.\d\d (s)\)$")


def trace_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        _TIME.sub(", T)", record.getMessage()) for record in caplog.records if record.name == TRACE_LOGGER
    ]


@pytest.fixture
def tracing(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger=TRACE_LOGGER)
    return caplog


async def test_unary_calls_trace_one_line_each(tracing: pytest.LogCaptureFixture) -> None:
    async with client_server_pair(echo_handlers(Probe())) as (client, _):
        await client.call(SERVICE, "Echo", Str(value="hello"), Str)
        with pytest.raises(RPCError):
            await client.call(SERVICE, "Fail", Str(value="x"), Str)
        with pytest.raises(RPCError):
            await client.call(SERVICE, "Boom", Str(), Str)
    # StringValue("hello") is 7 bytes each way; a failure carries the server's status and message
    lines = trace_lines(tracing)
    assert lines[:2] == [
        f"ttrpc /{SERVICE}/Echo stream 1 -> OK (7 B in, 7 B out, T)",
        f"ttrpc /{SERVICE}/Fail stream 3 -> NOT_FOUND: no such thing: x (0 B in, 3 B out, T)",
    ]
    assert re.fullmatch(rf"ttrpc /{SERVICE}/Boom stream 5 -> UNKNOWN: .+ \(0 B in, 0 B out, T\)", lines[2])
    assert len(lines) == 3


async def test_a_local_deadline_is_traced(tracing: pytest.LogCaptureFixture) -> None:
    async with client_server_pair(echo_handlers(Probe())) as (client, _):
        with pytest.raises(DeadlineExceeded):
            await client.call(SERVICE, "Sleep", Str(value="5"), Str, timeout=0.05)
    [line] = trace_lines(tracing)
    assert line.startswith(
        f"ttrpc /{SERVICE}/Sleep stream 1 -> DEADLINE_EXCEEDED (local timeout) (0 B in, 3 B out"
    )


async def test_streams_trace_open_and_close_with_totals(tracing: pytest.LogCaptureFixture) -> None:
    async with client_server_pair(echo_handlers(Probe())) as (client, _):
        async with client.stream(
            SERVICE, "Count", Str, server_streaming=True, request=Str(value="3")
        ) as count:
            assert [message.value async for message in count] == ["0", "1", "2"]
        async with client.stream(
            SERVICE, "Upper", Str, client_streaming=True, server_streaming=True
        ) as upper:
            for word in ("ab", "c"):
                await upper.send(Str(value=word))
            await upper.close_send()
            assert [message.value async for message in upper] == ["AB", "C"]
        async with client.stream(SERVICE, "Join", Str, client_streaming=True) as join:
            await join.send(Str(value="x"))
            assert (await join.response()).value == "x"
    assert trace_lines(tracing) == [
        f"ttrpc /{SERVICE}/Count stream 1 open (server-streaming)",
        f"ttrpc /{SERVICE}/Count stream 1 -> OK (3 msgs/9 B in, 1 msg/3 B out, T)",
        f"ttrpc /{SERVICE}/Upper stream 3 open (bidi)",
        f"ttrpc /{SERVICE}/Upper stream 3 -> OK (2 msgs/7 B in, 2 msgs/7 B out, T)",
        f"ttrpc /{SERVICE}/Join stream 5 open (client-streaming)",
        f"ttrpc /{SERVICE}/Join stream 5 -> OK (1 msg/3 B in, 1 msg/3 B out, T)",
    ]


async def test_stream_failures_are_traced(tracing: pytest.LogCaptureFixture) -> None:
    async with client_server_pair(echo_handlers(Probe())) as (client, _):
        async with client.stream(
            SERVICE, "CountThenFail", Str, server_streaming=True, request=Str()
        ) as failing:
            assert (await failing.recv()) == Str(value="first")
            with pytest.raises(RPCError):
                await failing.recv()
        async with client.stream(
            SERVICE, "Count", Str, server_streaming=True, request=Str(value="50")
        ) as early:
            assert (await early.recv()) == Str(value="0")  # and leave before the end
        with pytest.raises(DeadlineExceeded):
            async with client.stream(
                SERVICE, "Upper", Str, client_streaming=True, server_streaming=True, timeout=0.05
            ) as silent:
                await silent.recv()  # the server answers nothing before it has input
    assert trace_lines(tracing) == [
        f"ttrpc /{SERVICE}/CountThenFail stream 1 open (server-streaming)",
        f"ttrpc /{SERVICE}/CountThenFail stream 1 -> ABORTED: stopped (1 msg/7 B in, 1 msg/0 B out, T)",
        f"ttrpc /{SERVICE}/Count stream 3 open (server-streaming)",
        f"ttrpc /{SERVICE}/Count stream 3 -> closed by the client before the end"
        " (1 msg/3 B in, 1 msg/4 B out, T)",
        f"ttrpc /{SERVICE}/Upper stream 5 open (bidi)",
        f"ttrpc /{SERVICE}/Upper stream 5 -> DEADLINE_EXCEEDED (local timeout)"
        " (0 msgs/0 B in, 0 msgs/0 B out, T)",
    ]


async def test_nothing_is_traced_without_verbose(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=TRACE_LOGGER)
    async with client_server_pair(echo_handlers(Probe())) as (client, _):
        await client.call(SERVICE, "Echo", Str(value="hello"), Str)
        with pytest.raises(RPCError):
            await client.call(SERVICE, "Fail", Str(value="x"), Str)
        async with client.stream(
            SERVICE, "Count", Str, server_streaming=True, request=Str(value="2")
        ) as count:
            assert len([message async for message in count]) == 2
    assert [record for record in caplog.records if record.name == TRACE_LOGGER] == []
