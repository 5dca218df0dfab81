"""The agent's debug console over a real UNIX socket: real PTY, real shell, real processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable

import pytest

from kuasar.agent.console import ConsoleSessions
from kuasar.agent.reaper import zombie_children
from kuasar.config import DEFAULT_LIMITS
from kuasar.console import (
    EXEC_HEADER,
    MAX_EXEC_LINE,
    ConsoleExec,
    MarkerStripper,
    StdinMode,
    build_exec_line,
    new_token,
)
from tests.functional.cli_helpers import pids_with_cmdline
from tests.functional.console_helpers import open_interactive

GUARD = 20.0


async def until(condition: Callable[[], bool], bound: float = GUARD) -> bool:
    """Poll ``condition`` until it holds, at most ``bound`` seconds; whether it held."""
    deadline = time.monotonic() + bound
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return condition()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@contextlib.asynccontextmanager
async def console_sessions(shell: str = "/bin/sh") -> AsyncIterator[tuple[str, ConsoleSessions]]:
    directory = tempfile.mkdtemp(prefix="ksrcon", dir="/tmp")
    path = os.path.join(directory, "1025.sock")
    sessions = ConsoleSessions(shell=shell, limits=DEFAULT_LIMITS)
    server = await asyncio.start_unix_server(sessions.handle, path)
    try:
        yield path, sessions
    finally:
        server.close()
        await server.wait_closed()
        await sessions.close()  # no session (and no shell process object) outlives the test's loop
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.asynccontextmanager
async def console_server(shell: str = "/bin/sh") -> AsyncIterator[str]:
    async with console_sessions(shell) as (path, _):
        yield path


async def run_exec(path: str, argv: list[str], stdin: bytes | None = None) -> tuple[bytes, int | None]:
    reader, writer = await asyncio.open_unix_connection(path)
    core = ConsoleExec(argv, stdin=StdinMode.NONE if stdin is None else StdinMode.DATA)
    writer.write(core.initiate())
    if stdin is not None:
        core.send_input(stdin)
        core.send_eof()
    out = bytearray()
    try:
        async with asyncio.timeout(GUARD):
            while not core.finished:
                data = await reader.read(65536)
                out += core.receive_data(data) if data else core.receive_eof()
                writer.write(core.data_to_send())
    finally:
        writer.close()
        await writer.wait_closed()
    return bytes(out), core.exit_status


@pytest.mark.asyncio
@pytest.mark.parametrize("shell", ["/bin/sh", "/bin/bash"])
async def test_exec_mode_output_and_status(shell: str) -> None:
    if not os.path.exists(shell):
        pytest.skip(f"{shell} missing")
    async with console_server(shell) as path:
        assert await run_exec(path, ["echo", "hi"]) == (b"hi\n", 0)
        assert await run_exec(path, ["sh", "-c", "exit 42"]) == (b"", 42)
        assert await run_exec(path, ["printf", "\\000\\377\\r\\n"]) == (b"\x00\xff\r\n", 0)
        assert await run_exec(path, ["cat"], stdin=b"line\r\n") == (b"line\r\n", 0)


@pytest.mark.asyncio
async def test_exec_mode_large_binary_output_is_exact(tmp_path: object) -> None:
    data = os.urandom(5 * 1024 * 1024)
    directory = tempfile.mkdtemp(prefix="ksrbin", dir="/tmp")
    blob = os.path.join(directory, "blob")
    with open(blob, "wb") as file:
        file.write(data)
    try:
        async with console_server() as path:
            out, status = await run_exec(path, ["cat", blob])
        assert status == 0
        assert out == data
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def read_until(reader: asyncio.StreamReader, needle: bytes) -> bytes:
    seen = bytearray()
    async with asyncio.timeout(GUARD):
        while needle not in seen:
            chunk = await reader.read(4096)
            assert chunk, f"EOF before {needle!r}; got {bytes(seen)!r}"
            seen += chunk
    return bytes(seen)


@pytest.mark.asyncio
async def test_interactive_mode_echo_and_exit() -> None:
    async with console_server() as path:
        reader, writer = await open_interactive(path)
        writer.write(b"echo $((6*7))\n")
        assert b"42" in (await read_until(reader, b"42\r\n")).replace(b"6*7", b"")
        writer.write(b"exit\n")
        async with asyncio.timeout(GUARD):
            while await reader.read(4096):
                pass
        writer.close()
        await writer.wait_closed()


@pytest.mark.asyncio
async def test_early_bytes_are_replayed_into_the_shell() -> None:
    async with console_server() as path:
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b"echo early-$((1+1))\n")  # arrives during the sniff: not a KSR header
        await read_until(reader, b"early-2")
        writer.close()
        await writer.wait_closed()


@pytest.mark.asyncio
async def test_client_disconnect_kills_the_shell_and_children() -> None:
    marker = "876543.5"
    async with console_server() as path:
        reader, writer = await asyncio.open_unix_connection(path)
        token = new_token()
        writer.write(
            EXEC_HEADER
            + build_exec_line(
                ["sh", "-c", f"sleep {marker} & sleep {marker}"],
                token,
            )
        )
        await wait_present(marker, 3)
        writer.transport.abort()  # a reset, not a clean close
        assert await wait_gone(marker) == []
        assert reader is not None


@pytest.mark.asyncio
async def test_sessions_leak_no_file_descriptors() -> None:
    async with console_sessions() as (path, sessions):
        await run_exec(path, ["true"])  # the server side finishes after the client has its status
        assert await until(lambda: sessions.active == 0)
        before = open_fds()
        for _ in range(5):
            assert await run_exec(path, ["true"]) == (b"", 0)
        assert await until(lambda: sessions.active == 0)
        assert await until(lambda: open_fds() <= before), f"{open_fds()} fds open, {before} before"
        assert zombie_children(os.getpid()) == set()


async def wait_gone(marker: str, bound: float = 1.0) -> list[int]:
    """Poll until no process has ``marker`` in its command line, at most ``bound`` seconds."""
    await until(lambda: not pids_with_cmdline(marker), bound)
    return pids_with_cmdline(marker)


async def wait_present(marker: str, count: int) -> None:
    assert await until(lambda: len(pids_with_cmdline(marker)) >= count), pids_with_cmdline(marker)


async def read_to_eof(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    async with asyncio.timeout(GUARD):
        while chunk := await reader.read(65536):
            out += chunk
    return bytes(out)


@pytest.mark.asyncio
async def test_exec_mode_terminal_is_transparent_and_silent() -> None:
    # No wrapper: a plain line in exec mode is not echoed, gets no prompt, and LF stays LF.
    async with console_server("/bin/sh") as path:
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(EXEC_HEADER + b"printf 'a\\nb\\n'; exit 3\n")
        assert await read_to_eof(reader) == b"a\nb\n"
        writer.close()
        await writer.wait_closed()


@pytest.mark.asyncio
async def test_exec_header_with_crlf_and_missing_shell_falls_back_to_sh() -> None:
    async with console_server("/nonexistent/bash") as path:
        reader, writer = await asyncio.open_unix_connection(path)
        token = new_token()
        writer.write(
            b"KSR_MODE exec\r\n"
            + build_exec_line(
                ["sh", "-c", 'echo "$0"'],
                token,
            )
        )
        stripper = MarkerStripper(token)
        out = stripper.feed(await read_to_eof(reader)) + stripper.finish()
        writer.close()
        await writer.wait_closed()
        assert (out, stripper.exit_status) == (b"sh\n", 0)


@pytest.mark.asyncio
async def test_shell_has_the_pty_as_controlling_terminal() -> None:
    async with console_server() as path:
        # /dev/tty only opens for a process with a controlling terminal (ENXIO otherwise).
        out, status = await run_exec(path, ["sh", "-c", "echo via-tty >/dev/tty && ps -o tty= -p $$"])
        assert status == 0
        first, second = out.split(b"\n", 1)
        assert first == b"via-tty"
        assert second.strip().startswith(b"pts/")


@pytest.mark.asyncio
async def test_oversized_first_line_is_replayed_not_taken_as_header() -> None:
    async with console_server() as path:
        reader, writer = await asyncio.open_unix_connection(path)
        filler = b": " + b"x" * (2 * DEFAULT_LIMITS.console_header) + b"\n"
        writer.write(filler + b"echo big-$((2+2))\n")
        await read_until(reader, b"big-4")
        writer.close()
        await writer.wait_closed()


@pytest.mark.asyncio
async def test_background_jobs_of_an_interactive_shell_die_with_the_session() -> None:
    if not os.path.exists("/bin/bash"):
        pytest.skip("/bin/bash missing")
    marker = "876544.5"
    async with console_server("/bin/bash") as path:
        reader, writer = await open_interactive(path)  # job control puts each job in its own group
        writer.write(f"sleep {marker} &\n(sleep {marker} &)\n".encode())
        await wait_present(marker, 2)
        writer.transport.abort()
        assert await wait_gone(marker) == []
        assert reader is not None


@pytest.mark.asyncio
async def test_shell_exit_ends_the_console_although_a_job_holds_the_pty() -> None:
    marker = "876545.5"
    async with console_server() as path:
        reader, writer = await open_interactive(path)
        writer.write(f"sleep {marker} &\necho bye\n".encode())
        await wait_present(marker, 1)
        writer.write(b"exit\n")
        assert b"bye" in await read_to_eof(reader)
        writer.close()
        await writer.wait_closed()
        assert await wait_gone(marker) == []


@pytest.mark.asyncio
async def test_reset_during_heavy_output_leaves_the_server_serving() -> None:
    marker = "876546"
    async with console_server() as path:
        reader, writer = await asyncio.open_unix_connection(path)
        token = new_token()
        writer.write(
            EXEC_HEADER
            + build_exec_line(
                ["yes", marker],
                token,
            )
        )
        received = 0
        async with asyncio.timeout(GUARD):
            while received < 1024 * 1024:
                chunk = await reader.read(65536)
                assert chunk
                received += len(chunk)
        writer.transport.abort()
        assert await wait_gone(marker) == []
        assert await run_exec(path, ["echo", "still-here"]) == (b"still-here\n", 0)


@pytest.mark.asyncio
async def test_longest_allowed_exec_line_runs_on_a_canonical_mode_shell() -> None:
    argv = ["sh", "-c", 'echo "${#1}"', "sh"]
    overhead = len(
        build_exec_line(
            [*argv, ""],
            new_token(),
        )
    )  # run_exec's token: same length
    argument = "x" * (MAX_EXEC_LINE - overhead)
    assert (
        len(
            build_exec_line(
                [*argv, argument],
                new_token(),
            )
        )
        == MAX_EXEC_LINE
    )
    async with console_server("/bin/sh") as path:  # dash reads lines in canonical mode
        assert await run_exec(path, [*argv, argument]) == (f"{len(argument)}\n".encode(), 0)
