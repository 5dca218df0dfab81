"""``kuasar-agent`` as a real subprocess: listeners, readiness, kernel cmdline, shutdown, errors."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from kuasar.console import EXEC_HEADER, MarkerStripper, build_exec_line, new_token
from kuasar.proto import health_pb2
from kuasar.ttrpc import Client
from tests.functional.cli_helpers import pids_with_cmdline
from tests.functional.console_helpers import open_interactive

GUARD = 20.0


@dataclass
class Agent:
    process: subprocess.Popen[bytes]
    directory: str

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def stop(self) -> tuple[int, str]:
        """SIGTERM, then the exit status and everything it logged."""
        self.process.send_signal(signal.SIGTERM)
        _, err = self.process.communicate(timeout=GUARD)
        return self.process.returncode, err.decode(errors="replace")


@contextmanager
def agent(*flags: str, cmdline: str = "") -> Iterator[Agent]:
    """Start kuasar-agent with ``flags`` (``{dir}`` is replaced by a private directory) and wait for
    its ``--ready-fd`` line."""
    directory = tempfile.mkdtemp(prefix="ksragent", dir="/tmp")
    cmdline_file = os.path.join(directory, "cmdline")
    with open(cmdline_file, "w", encoding="utf-8") as file:
        file.write(cmdline + "\n")
    read_fd, write_fd = os.pipe()
    argv = [sys.executable, "-m", "kuasar.agent.main", "--cmdline", cmdline_file, "--ready-fd", str(write_fd)]
    process = subprocess.Popen(
        [*argv, *(flag.replace("{dir}", directory) for flag in flags)],
        pass_fds=(write_fd,),
        stderr=subprocess.PIPE,
    )
    os.close(write_fd)
    try:
        with os.fdopen(read_fd, "rb") as ready:
            line = ready.readline()
        assert line == b"ready\n", process.communicate(timeout=GUARD)[1].decode(errors="replace")
        yield Agent(process, directory)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=GUARD)
        shutil.rmtree(directory, ignore_errors=True)


async def console_exec(path: str, argv: list[str]) -> tuple[bytes, int | None]:
    reader, writer = await asyncio.open_unix_connection(path)
    token = new_token()
    writer.write(EXEC_HEADER + build_exec_line(argv, token))
    stripper = MarkerStripper(token)
    out = bytearray()
    try:
        async with asyncio.timeout(GUARD):
            while stripper.exit_status is None and (data := await reader.read(65536)):
                out += stripper.feed(data)
    finally:
        writer.close()
        await writer.wait_closed()
    return bytes(out), stripper.exit_status


def run_agent(*flags: str) -> subprocess.CompletedProcess[bytes]:
    argv = [sys.executable, "-m", "kuasar.agent.main", "--cmdline", os.devnull, *flags]
    return subprocess.run(argv, capture_output=True, timeout=GUARD, check=False)


def test_console_serves_and_sigterm_exits_zero() -> None:
    with agent("--console", "unix://{dir}/1025.sock", "--debug-console", "--no-agent-api") as guest:
        console = guest.path("1025.sock")
        assert os.stat(console).st_mode & 0o777 == 0o600
        assert asyncio.run(console_exec(console, ["echo", "from-agent"])) == (b"from-agent\n", 0)
        status, log = guest.stop()
    assert status == 0
    assert "Traceback" not in log


def test_sigterm_ends_live_console_sessions() -> None:
    marker = "887766.5"

    async def session(console: str, guest: Agent) -> tuple[int, str]:
        reader, writer = await open_interactive(console)
        writer.write(f"sleep {marker}\n".encode())
        deadline = time.monotonic() + GUARD
        while not pids_with_cmdline(marker) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert pids_with_cmdline(marker)
        status, log = await asyncio.to_thread(guest.stop)
        async with asyncio.timeout(GUARD):
            while await reader.read(65536):  # the agent closed the connection
                pass
        writer.close()
        await writer.wait_closed()
        return status, log

    with agent("--console", "unix://{dir}/c.sock", "--debug-console", "--no-agent-api") as guest:
        status, log = asyncio.run(session(guest.path("c.sock"), guest))
    assert status == 0
    assert pids_with_cmdline(marker) == []
    assert "Traceback" not in log and " ERROR " not in log, log


def test_task_debug_on_the_kernel_cmdline_enables_the_console_with_its_shell() -> None:
    async def shell_name(console: str) -> bytes:
        reader, writer = await open_interactive(console)
        writer.write(b'echo "shell=$0."\nexit\n')
        out = bytearray()
        async with asyncio.timeout(GUARD):
            while chunk := await reader.read(65536):
                out += chunk
        writer.close()
        await writer.wait_closed()
        return bytes(out)

    cmdline = "console=hvc0 task.debug task.debug_shell=/bin/sh quiet"
    with agent("--console", "unix://{dir}/c.sock", "--no-agent-api", cmdline=cmdline) as guest:
        assert b"shell=/bin/sh." in asyncio.run(shell_name(guest.path("c.sock")))
        assert guest.stop()[0] == 0


def test_no_debug_console_overrides_task_debug() -> None:
    flags = ("--console", "unix://{dir}/c.sock", "--no-debug-console", "--api", "unix://{dir}/api.sock")
    with agent(*flags, cmdline="task.debug") as guest:
        assert not os.path.exists(guest.path("c.sock"))
        assert os.path.exists(guest.path("api.sock"))
        assert guest.stop()[0] == 0


def test_agent_api_answers_health() -> None:
    async def check(path: str) -> int:
        reader, writer = await asyncio.open_unix_connection(path)
        async with Client(reader, writer) as client:
            reply = await client.call(
                "grpc.Health",
                "Check",
                health_pb2.CheckRequest(),
                health_pb2.HealthCheckResponse,
                timeout=GUARD,
            )
        return int(reply.status)

    with agent("--api", "unix://{dir}/api.sock", "--state-dir", "{dir}/state") as guest:
        assert os.stat(guest.path("api.sock")).st_mode & 0o777 == 0o600
        assert asyncio.run(check(guest.path("api.sock"))) == health_pb2.HealthCheckResponse.SERVING
        assert not os.path.exists(guest.path("1025.sock"))
        assert guest.stop()[0] == 0


def test_bad_address_is_a_one_line_error() -> None:
    result = run_agent("--console", "bogus://x", "--debug-console", "--no-agent-api")
    assert result.returncode == 1
    assert result.stderr.decode().startswith("kuasar-agent: invalid address 'bogus://x'")
    assert b"Traceback" not in result.stderr


def test_address_in_use_is_a_one_line_error() -> None:
    directory = tempfile.mkdtemp(prefix="ksrbusy", dir="/tmp")
    path = os.path.join(directory, "busy.sock")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as busy:
            busy.bind(path)
            busy.listen()
            result = run_agent("--console", f"unix://{path}", "--debug-console", "--no-agent-api")
        assert result.returncode == 1
        lines = result.stderr.decode().strip().splitlines()
        assert lines and lines[0].startswith("kuasar-agent: ") and path in lines[0], lines
        assert b"Traceback" not in result.stderr
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize("flag", ["--api", "--console"])
def test_hvsock_addresses_cannot_be_listened_on(flag: str, tmp_path: Path) -> None:
    flags = [flag, "hvsock:///tmp/nowhere.sock:1024"]
    flags += ["--debug-console", "--no-agent-api"] if flag == "--console" else ["--state-dir", str(tmp_path)]
    result = run_agent(*flags)
    assert result.returncode == 1
    assert result.stderr.decode().startswith("kuasar-agent: ")
    assert b"Traceback" not in result.stderr
