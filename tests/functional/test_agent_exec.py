"""The agent's Exec/Ping/GetSystemInfo handlers over real ttrpc, with real processes and PTYs."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from kuasar import ttrpc
from kuasar.agent.process import Process
from kuasar.agent.services.exec import SERVICE, exec_handlers
from kuasar.errors import CommandNotExecutable, CommandNotFound, DeadlineExceeded, RPCError
from kuasar.proto import agent_pb2 as pb
from kuasar.remote_process import STDERR, STDOUT, ProcessError, RemoteProcess, run
from kuasar.ttrpc.testing import client_server_pair
from tests.functional.cli_helpers import pids_with_cmdline


@pytest_asyncio.fixture
async def client() -> AsyncIterator[ttrpc.Client]:
    async with client_server_pair([exec_handlers(), ttrpc.health_handlers()]) as (client, _server):
        yield client


async def _collect(process: RemoteProcess) -> tuple[bytes, bytes]:
    out, err = bytearray(), bytearray()
    while (chunk := await process.read()) is not None:
        (err if chunk[0] == STDERR else out).extend(chunk[1])
    return bytes(out), bytes(err)


@pytest.mark.asyncio
async def test_stdout_and_stderr_stay_apart(client: ttrpc.Client) -> None:
    result = await run(client, ["sh", "-c", "echo out; echo err >&2"])
    assert (result.stdout, result.stderr, result.exit_status, result.signal) == (b"out\n", b"err\n", 0, 0)


@pytest.mark.asyncio
@pytest.mark.parametrize("code", [0, 1, 42, 255])
async def test_exit_codes(client: ttrpc.Client, code: int) -> None:
    result = await run(client, ["sh", "-c", f"exit {code}"])
    assert (result.exit_status, result.signal, result.returncode) == (code, 0, code)


@pytest.mark.asyncio
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGUSR1])
async def test_death_by_signal_keeps_status_and_signal_apart(client: ttrpc.Client, signum: int) -> None:
    result = await run(client, ["sh", "-c", f"kill -{int(signum)} $$"])
    assert (result.exit_status, result.signal, result.returncode) == (None, signum, -signum)


@pytest.mark.asyncio
async def test_core_dump_is_reported(client: ttrpc.Client) -> None:
    result = await run(client, ["sh", "-c", "ulimit -c unlimited 2>/dev/null; kill -QUIT $$"], cwd="/tmp")
    assert result.signal == signal.SIGQUIT
    # core_dumped depends on the host's core_pattern; the flag must at least be a bool.
    assert isinstance(result.core_dumped, bool)


@pytest.mark.asyncio
async def test_missing_command_is_not_found(client: ttrpc.Client) -> None:
    with pytest.raises(CommandNotFound) as caught:
        await run(client, ["no-such-command-ksr"])
    assert caught.value.exit_code == 127
    assert "no-such-command-ksr" in str(caught.value)


@pytest.mark.asyncio
async def test_non_executable_is_permission_denied(client: ttrpc.Client, tmp_path: os.PathLike[str]) -> None:
    script = os.path.join(tmp_path, "script.sh")
    with open(script, "w") as file:
        file.write("#!/bin/sh\necho never\n")
    os.chmod(script, 0o644)
    with pytest.raises(CommandNotExecutable) as caught:
        await run(client, [script])
    assert caught.value.exit_code == 126
    with pytest.raises(CommandNotExecutable):
        await run(client, [str(tmp_path)])  # a directory


@pytest.mark.asyncio
async def test_bad_cwd_and_empty_argv_are_invalid_arguments(client: ttrpc.Client) -> None:
    with pytest.raises(RPCError) as caught:
        await run(client, ["true"], cwd="/no/such/dir")
    assert caught.value.code == ttrpc.Code.INVALID_ARGUMENT
    with pytest.raises(RPCError) as caught:
        await run(client, [""])
    assert caught.value.code == ttrpc.Code.INVALID_ARGUMENT


@pytest.mark.asyncio
async def test_env_and_cwd(client: ttrpc.Client) -> None:
    result = await run(client, ["sh", "-c", 'echo "$FOO|$(pwd)|$PATH"'], env={"FOO": "b a r"}, cwd="/tmp")
    foo, cwd, path = result.stdout.decode().rstrip("\n").split("|")
    assert (foo, cwd) == ("b a r", "/tmp")
    assert "/bin" in path


@pytest.mark.asyncio
async def test_default_cwd_is_root(client: ttrpc.Client) -> None:
    assert (await run(client, ["pwd"])).stdout == b"/\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
@pytest.mark.asyncio
async def test_user_switch(client: ttrpc.Client) -> None:
    by_name = await run(client, ["sh", "-c", "id -u; id -g; echo $HOME"], user="nobody")
    assert by_name.stdout.split()[:2] == [b"65534", b"65534"]
    by_ids = await run(client, ["sh", "-c", "id -u; id -g"], user="1234:4321")
    assert by_ids.stdout.split() == [b"1234", b"4321"]
    with pytest.raises(RPCError) as caught:
        await run(client, ["true"], user="no-such-user-ksr")
    assert caught.value.code == ttrpc.Code.INVALID_ARGUMENT


@pytest.mark.asyncio
async def test_stdin_binary_exact_until_eof(client: ttrpc.Client) -> None:
    data = bytes(range(256)) * 64 + b"\r\n\x04\x03\x1c\r" + os.urandom(300_000)
    result = await run(client, ["cat"], input=data)
    assert result.exit_status == 0
    assert result.stdout == data
    empty = await run(client, ["wc", "-c"], input=b"")
    assert empty.stdout.strip() == b"0"


@pytest.mark.asyncio
async def test_no_stdin_reads_dev_null(client: ttrpc.Client) -> None:
    result = await run(client, ["cat"], timeout=20)
    assert (result.exit_status, result.stdout) == (0, b"")


@pytest.mark.asyncio
async def test_ten_mebibytes_of_output_exact(client: ttrpc.Client, tmp_path: os.PathLike[str]) -> None:
    data = os.urandom(10 * 1024 * 1024)
    path = os.path.join(tmp_path, "blob")
    with open(path, "wb") as file:
        file.write(data)
    sizes: list[int] = []
    digest = hashlib.sha256()
    async with RemoteProcess(client, ["cat", path]) as process:
        while (chunk := await process.read()) is not None:
            assert chunk[0] == STDOUT
            sizes.append(len(chunk[1]))
            digest.update(chunk[1])
        assert process.result().exit_status == 0
    assert sum(sizes) == len(data)
    assert max(sizes) <= 64 * 1024
    assert digest.digest() == hashlib.sha256(data).digest()


@pytest.mark.asyncio
async def test_signal_delivery(client: ttrpc.Client) -> None:
    async with RemoteProcess(client, ["sh", "-c", "echo ready; exec sleep 30"]) as process:
        assert await process.read() == (STDOUT, b"ready\n")
        await process.send_signal(signal.SIGTERM)
        result = await process.wait()
    assert (result.exit_status, result.signal) == (None, signal.SIGTERM)


@pytest.mark.asyncio
async def test_timeout_kills_and_keeps_partial_output(client: ttrpc.Client) -> None:
    marker = "876543.5"
    with pytest.raises(DeadlineExceeded) as caught:
        await run(client, ["sh", "-c", f"echo partial; sleep {marker}"], timeout=1)
    assert caught.value.stdout == b"partial\n"
    await _wait_gone(marker)


@pytest.mark.asyncio
async def test_check_raises_process_error(client: ttrpc.Client) -> None:
    with pytest.raises(ProcessError) as caught:
        await run(client, ["sh", "-c", "echo oops >&2; exit 3"], check=True)
    assert caught.value.result.exit_status == 3
    assert caught.value.result.stderr == b"oops\n"


async def _pty_line(process: RemoteProcess) -> bytes:
    line = bytearray()
    while not line.endswith(b"\n"):
        chunk = await process.read()
        assert chunk is not None, bytes(line)
        line.extend(chunk[1])
    return bytes(line)


@pytest.mark.asyncio
async def test_pty_size_and_resize(client: ttrpc.Client) -> None:
    script = "stty size; read x; stty size; [ -t 0 ] && [ -t 1 ] && echo tty"
    async with RemoteProcess(client, ["sh", "-c", script], tty=True, size=(33, 101), stdin=True) as process:
        assert await _pty_line(process) == b"33 101\r\n"
        await process.resize(50, 132)
        await process.write(b"go\r")
        rest, _ = await _collect(process)
        result = process.result()
    assert b"50 132\r\n" in rest
    assert rest.endswith(b"tty\r\n")
    assert result.exit_status == 0


@pytest.mark.asyncio
async def test_pty_merges_stderr_and_has_a_controlling_terminal(client: ttrpc.Client) -> None:
    result_out: bytes
    async with RemoteProcess(
        client, ["sh", "-c", "echo err >&2; tty; echo hi > /dev/tty"], tty=True
    ) as process:
        result_out, err = await _collect(process)
    assert err == b""
    assert b"err\r\n" in result_out and b"/dev/pts/" in result_out and b"hi\r\n" in result_out


@pytest.mark.asyncio
async def test_pty_ctrl_c_interrupts_foreground(client: ttrpc.Client) -> None:
    async with RemoteProcess(client, ["sh", "-c", "echo go; exec sleep 30"], tty=True, stdin=True) as process:
        assert await _pty_line(process) == b"go\r\n"
        await process.write(b"\x03")
        await _collect(process)
        result = process.result()
    assert result.signal == signal.SIGINT


@pytest.mark.asyncio
async def test_client_gone_kills_process_group(tmp_path: os.PathLike[str]) -> None:
    marker = "765432.5"
    async with client_server_pair(exec_handlers()) as (client, _server):
        process = RemoteProcess(client, ["sh", "-c", f"sleep {marker} & sleep {marker}"])
        await process.__aenter__()
        deadline = time.monotonic() + 10
        while len(pids_with_cmdline(marker)) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert len(pids_with_cmdline(marker)) >= 2
        client.close()
        await client.wait_closed()
        await process.__aexit__(None, None, None)  # best effort on a dead connection: no raise
    await _wait_gone(marker)


@pytest.mark.asyncio
async def test_leaving_early_kills_the_process(client: ttrpc.Client) -> None:
    marker = "765431.5"
    async with RemoteProcess(client, ["sh", "-c", f"echo up; sleep {marker}"]) as process:
        assert await process.read() == (STDOUT, b"up\n")
    await _wait_gone(marker)
    assert (await run(client, ["true"])).exit_status == 0  # the connection still works


@pytest.mark.asyncio
async def test_background_holder_of_stdout_does_not_hang_the_call(client: ttrpc.Client) -> None:
    marker = "765430.5"
    started = time.monotonic()
    result = await run(client, ["sh", "-c", f"sleep {marker} & echo done"], timeout=30)
    assert (result.exit_status, result.stdout) == (0, b"done\n")
    assert time.monotonic() - started < 20  # hang guard only
    await _wait_gone(marker)


@pytest.mark.asyncio
async def test_first_message_must_be_start(client: ttrpc.Client) -> None:
    async with client.stream(
        SERVICE, "Exec", pb.ExecOutput, client_streaming=True, server_streaming=True
    ) as s:
        await s.send(pb.ExecInput(stdin=b"x"))
        with pytest.raises(RPCError) as caught:
            await s.recv()
    assert caught.value.code == ttrpc.Code.INVALID_ARGUMENT


@pytest.mark.asyncio
async def test_container_exec_without_executor(client: ttrpc.Client) -> None:
    with pytest.raises(RPCError) as caught:
        await run(client, ["true"], container_id="c1")
    assert caught.value.code == ttrpc.Code.FAILED_PRECONDITION
    assert "containers are not supported" in caught.value.message


class _EchoExecutor:
    """A container hook that runs the command through ``env`` with a marker variable."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    async def start_exec(
        self, container_id: str, argv: list[str], *, env: dict[str, str], **options: Any
    ) -> Process:
        if container_id == "missing":
            raise RPCError(ttrpc.Code.FAILED_PRECONDITION, "no such container: 'missing'")
        if argv[0] == "no-such-command":
            raise RPCError(ttrpc.Code.NOT_FOUND, f"{argv[0]}: command not found in container {container_id}")
        self.calls.append((container_id, list(argv)))
        return await Process.start(["env", f"IN_CONTAINER={container_id}", *argv], env=env, **options)


@pytest.mark.asyncio
async def test_container_exec_goes_through_the_executor() -> None:
    executor = _EchoExecutor()
    async with client_server_pair(exec_handlers(executor)) as (client, _server):
        result = await run(client, ["sh", "-c", "echo $IN_CONTAINER $X"], container_id="c1", env={"X": "y"})
        assert result.stdout == b"c1 y\n"
        with pytest.raises(RPCError) as caught:  # not CommandNotFound: that means 127
            await run(client, ["true"], container_id="missing")
        assert caught.value.code == ttrpc.Code.FAILED_PRECONDITION
        with pytest.raises(CommandNotFound, match="command not found in container c1"):
            await run(client, ["no-such-command"], container_id="c1")
    assert executor.calls == [("c1", ["sh", "-c", "echo $IN_CONTAINER $X"])]


@pytest.mark.asyncio
async def test_ping_and_system_info(client: ttrpc.Client) -> None:
    pong = await client.call(SERVICE, "Ping", pb.PingRequest(message="hi"), pb.PingResponse)
    assert pong.message == "pong: hi" and pong.version
    assert (await client.call(SERVICE, "Ping", pb.PingRequest(), pb.PingResponse)).message == "pong"
    from google.protobuf import empty_pb2

    info = await client.call(SERVICE, "GetSystemInfo", empty_pb2.Empty(), pb.SystemInfo)
    assert info.kernel_version == os.uname().release
    assert info.hostname == os.uname().nodename
    assert info.cpu_count >= 1 and info.total_memory >= info.available_memory > 0
    assert len(info.load_average) == 3 and info.uptime > 0 and info.agent_version


@pytest.mark.asyncio
async def test_concurrent_execs_on_one_connection(client: ttrpc.Client) -> None:
    results = await asyncio.gather(*(run(client, ["sh", "-c", f"echo {i}; exit {i}"]) for i in range(20)))
    assert [(r.exit_status, r.stdout) for r in results] == [(i, f"{i}\n".encode()) for i in range(20)]


async def _wait_gone(marker: str) -> None:
    deadline = time.monotonic() + 5
    while pids_with_cmdline(marker) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert pids_with_cmdline(marker) == []


@pytest.mark.asyncio
async def test_real_agent_over_a_unix_socket(tmp_path: os.PathLike[str]) -> None:
    import subprocess
    import sys

    from kuasar.address import UnixAddress
    from kuasar.guest import Guest

    socket_path = os.path.join(tmp_path, "api.sock")
    read_fd, write_fd = os.pipe()
    agent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kuasar.agent.main",
            "--api",
            f"unix://{socket_path}",
            "--no-debug-console",
            "--cmdline",
            os.devnull,
            "--state-dir",
            os.path.join(tmp_path, "state"),
            "--ready-fd",
            str(write_fd),
        ],
        pass_fds=(write_fd,),
        stdin=subprocess.DEVNULL,
    )
    os.close(write_fd)
    try:
        with os.fdopen(read_fd, "rb") as ready:
            assert ready.readline() == b"ready\n"
        async with await Guest.connect(UnixAddress(socket_path), probe_timeout=5) as guest:
            assert (await guest.ping("x")).message == "pong: x"
            result = await guest.run(["sh", "-c", "cat; echo err >&2; exit 5"], input=b"in\r\x04")
            assert (result.stdout, result.stderr, result.exit_status) == (b"in\r\x04", b"err\n", 5)
            with pytest.raises(CommandNotFound):
                await guest.run(["no-such-command-ksr"])
            assert (await guest.system_info()).cpu_count >= 1
    finally:
        agent.terminate()
        agent.wait(10)
