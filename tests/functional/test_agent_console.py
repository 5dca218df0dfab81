"""The agent's debug console over a real UNIX socket: real PTY, real shell, real processes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator

import pytest

from kuasar.agent.console import serve_console
from kuasar.config import DEFAULT_LIMITS
from kuasar.console import EXEC_HEADER, MarkerStripper, build_exec_line, new_token
from tests.functional.cli_helpers import pids_with_cmdline

GUARD = 20.0


@contextlib.asynccontextmanager
async def console_server(shell: str = "/bin/sh") -> AsyncIterator[str]:
    directory = tempfile.mkdtemp(prefix="ksrcon", dir="/tmp")
    path = os.path.join(directory, "1025.sock")
    handler = functools.partial(serve_console, shell=shell, limits=DEFAULT_LIMITS)
    server = await asyncio.start_unix_server(handler, path)
    try:
        yield path
    finally:
        server.close()
        await server.wait_closed()
        shutil.rmtree(directory, ignore_errors=True)


async def run_exec(path: str, argv: list[str], stdin: bytes | None = None) -> tuple[bytes, int | None]:
    reader, writer = await asyncio.open_unix_connection(path)
    token = new_token()
    writer.write(EXEC_HEADER + build_exec_line(argv, token, stdin=stdin is not None))
    stripper = MarkerStripper(token)
    out = bytearray()
    sent = False
    try:
        async with asyncio.timeout(GUARD):
            while data := await reader.read(65536):
                out += stripper.feed(data)
                if stdin is not None and stripper.started and not sent:
                    writer.write(stdin + b"\x04")
                    sent = True
                if stripper.exit_status is not None:
                    break
    finally:
        writer.close()
        await writer.wait_closed()
    return bytes(out), stripper.exit_status


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
        reader, writer = await asyncio.open_unix_connection(path)
        await asyncio.sleep(0.3)  # past the 100 ms sniff: plain interactive mode
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
            + build_exec_line(["sh", "-c", f"sleep {marker} & sleep {marker}"], token, stdin=False)
        )
        deadline = time.monotonic() + GUARD
        while len(pids_with_cmdline(marker)) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert len(pids_with_cmdline(marker)) >= 3
        writer.transport.abort()  # a reset, not a clean close
        deadline = time.monotonic() + 1.0
        while pids_with_cmdline(marker) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert pids_with_cmdline(marker) == []
        assert reader is not None


@pytest.mark.asyncio
async def test_sessions_leak_no_file_descriptors() -> None:
    async with console_server() as path:
        await run_exec(path, ["true"])
        await asyncio.sleep(0.5)  # the server side finishes after the client has its status
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(5):
            assert await run_exec(path, ["true"]) == (b"", 0)
        await asyncio.sleep(0.5)
        assert len(os.listdir("/proc/self/fd")) <= before


def test_agent_process_serves_and_stops_on_sigterm() -> None:
    directory = tempfile.mkdtemp(prefix="ksragent", dir="/tmp")
    console = os.path.join(directory, "1025.sock")
    read_fd, write_fd = os.pipe()
    agent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kuasar.agent.main",
            "--console",
            f"unix://{console}",
            "--debug-console",
            "--no-agent-api",
            "--cmdline",
            os.devnull,
            "--ready-fd",
            str(write_fd),
        ],
        pass_fds=(write_fd,),
        stderr=subprocess.PIPE,
    )
    os.close(write_fd)
    try:
        with os.fdopen(read_fd, "rb") as ready:
            assert ready.readline() == b"ready\n"
        assert os.stat(console).st_mode & 0o777 == 0o600
        out, status = asyncio.run(run_exec(console, ["echo", "from-agent"]))
        assert (out, status) == (b"from-agent\n", 0)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=GUARD) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        assert agent.stderr is not None
        agent.stderr.close()
        shutil.rmtree(directory, ignore_errors=True)


def test_agent_bad_address_is_one_line_error() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kuasar.agent.main",
            "--console",
            "bogus://x",
            "--debug-console",
            "--no-agent-api",
            "--cmdline",
            os.devnull,
        ],
        capture_output=True,
        timeout=GUARD,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.decode().startswith("kuasar-agent: invalid address 'bogus://x'")
    assert b"Traceback" not in result.stderr
