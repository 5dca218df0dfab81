"""Cancellation propagates out of the tasks that serve connections — the hybrid vsock relay and the
agent's debug console — and asyncio logs nothing about them (no "exception was never retrieved",
no "Task was destroyed", no error from a stream server's callback)."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Iterator

import pytest

from kuasar.agent.console import ConsoleSessions
from kuasar.config import TEST_LIMITS
from kuasar.transport.hvsock_server import HvsockServer, port_directory_resolver
from tests.functional.cli_helpers import pids_with_cmdline, short_tmpdir
from tests.functional.stream_helpers import close, echo
from tests.functional.test_hvsock_server import GUEST_PORT, connect_ok, guest, read_to_end

GUARD = 20.0


@pytest.fixture
def sockdir() -> Iterator[str]:
    """A short private directory with the ``vsock/`` subdirectory the port resolver reads."""
    path = short_tmpdir("kcan")
    os.mkdir(os.path.join(path, "vsock"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def tasks_running(*qualnames: str) -> list[asyncio.Task[object]]:
    """Pending tasks whose coroutine is one of ``qualnames`` (the ones serving a connection)."""
    found = []
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        if not task.done() and code is not None and code.co_qualname in qualnames:
            found.append(task)
    return found


async def cancel_all(tasks: list[asyncio.Task[object]]) -> None:
    assert tasks
    for task in tasks:
        task.cancel()
    _, pending = await asyncio.wait(tasks, timeout=GUARD)
    assert not pending
    assert [task.cancelled() for task in tasks] == [True] * len(tasks)


def asyncio_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR]


@pytest.mark.asyncio
async def test_a_cancelled_relay_ends_cancelled_and_the_server_keeps_serving(
    sockdir: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = HvsockServer(
        os.path.join(sockdir, "task.socket"),
        port_directory_resolver(os.path.join(sockdir, "vsock")),
        limits=TEST_LIMITS,
    )
    async with server, guest(sockdir, GUEST_PORT, echo):
        _, reader, writer = await connect_ok(server)
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), GUARD) == b"ping"
        await cancel_all(tasks_running("HvsockServer._handle", "HvsockServer._connection"))
        assert await read_to_end(reader) == b""  # the client's end was closed
        await close(writer)
        _, reader, writer = await connect_ok(server)
        writer.write(b"again")
        assert await asyncio.wait_for(reader.readexactly(5), GUARD) == b"again"
        await close(writer)
    assert asyncio_errors(caplog) == []


@pytest.mark.asyncio
async def test_a_cancelled_console_session_ends_cancelled_with_its_shell_killed(
    sockdir: str, caplog: pytest.LogCaptureFixture
) -> None:
    marker = "765499.5"
    path = os.path.join(sockdir, "1025.sock")
    sessions = ConsoleSessions(shell="/bin/sh", limits=TEST_LIMITS)
    server = await asyncio.start_unix_server(sessions.handle, path)
    try:
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(f"echo up''stairs; exec sleep {marker}\n".encode())
        async with asyncio.timeout(GUARD):
            output = b""
            while b"upstairs" not in output:
                chunk = await reader.read(65536)
                assert chunk, output
                output += chunk
        await cancel_all(tasks_running("ConsoleSessions.handle", "serve_console"))
        assert sessions.active == 0
        await read_to_end(reader)  # whatever the shell still echoed, then EOF
        assert pids_with_cmdline(marker) == []
        await close(writer)
    finally:
        server.close()
        await server.wait_closed()
        await sessions.close()
    assert asyncio_errors(caplog) == []
