"""Exec into a real runc container through the agent's Exec handler: a command runc cannot start is a
status (127/126 at the CLI), never runc's log line and exit 255."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from kuasar import ttrpc
from kuasar.agent.containers import ContainerManager
from kuasar.agent.services.exec import exec_handlers
from kuasar.errors import CommandNotExecutable, CommandNotFound, RPCError, UsageError
from kuasar.proto import agent_pb2 as pb
from kuasar.remote_process import SERVICE, exec_start, run
from kuasar.ttrpc.testing import client_server_pair
from tests.functional.bundle import make_bundle, runc_skip_reason, scratch_manager

pytestmark = pytest.mark.skipif(runc_skip_reason() is not None, reason=str(runc_skip_reason()))


@dataclass
class Env:
    client: ttrpc.Client
    manager: ContainerManager
    state_dir: str


@pytest_asyncio.fixture
async def env(tmp_path: object) -> AsyncIterator[Env]:
    tmp = str(tmp_path)
    manager = scratch_manager(tmp)
    try:
        await manager.create("web", make_bundle(os.path.join(tmp, "bundle"), ["sleep", "300"]))
        await manager.start("web")
        async with client_server_pair([exec_handlers(manager)]) as (client, _server):
            yield Env(client, manager, manager.state_dir)
    finally:
        await manager.close()
        manager.logs.close()


@pytest.mark.asyncio
async def test_missing_command_is_command_not_found(env: Env) -> None:
    for program in ("bash", "/no/such/tool"):
        with pytest.raises(CommandNotFound) as caught:
            await run(env.client, [program, "-c", "true"], container_id="web")
        assert str(caught.value) == f"{program}: command not found in container web"
    # runc's exec scratch files are gone again
    assert not [name for name in os.listdir(os.path.join(env.state_dir, "web")) if name.startswith("exec-")]


@pytest.mark.asyncio
async def test_not_executable_is_command_not_executable(env: Env) -> None:
    for program in ("/etc/passwd", "/etc"):
        with pytest.raises(CommandNotExecutable) as caught:
            await run(env.client, [program], container_id="web")
        assert str(caught.value).startswith(f"{program}: not executable in container web")


@pytest.mark.asyncio
async def test_bad_cwd_and_user_are_invalid_argument(env: Env) -> None:
    cases = [
        ({"cwd": "/nope"}, "chdir"),
        ({"user": "4294967295"}, "out of range"),
        ({"user": "ghost"}, "ghost"),
    ]
    for options, words in cases:
        with pytest.raises(RPCError) as caught:
            await run(env.client, ["true"], container_id="web", **options)  # type: ignore[arg-type]
        assert caught.value.code == ttrpc.Code.INVALID_ARGUMENT, caught.value
        assert words in caught.value.message


@pytest.mark.asyncio
async def test_unknown_or_stopped_container_is_failed_precondition(env: Env) -> None:
    with pytest.raises(RPCError) as unknown:
        await run(env.client, ["true"], container_id="nope")
    assert unknown.value.code == ttrpc.Code.FAILED_PRECONDITION
    await env.manager.stop("web", grace=0.2)
    with pytest.raises(RPCError) as stopped:
        await run(env.client, ["true"], container_id="web")
    assert stopped.value.code == ttrpc.Code.FAILED_PRECONDITION


@pytest.mark.asyncio
async def test_commands_that_start_keep_output_status_and_bytes(env: Env) -> None:
    result = await run(env.client, ["sh", "-c", "echo out; echo err >&2; exit 3"], container_id="web")
    assert (result.exit_status, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
    quick = await run(env.client, ["true"], container_id="web")  # exits before we look: still started
    assert (quick.exit_status, quick.stdout, quick.stderr) == (0, b"", b"")
    text = "héllo ✓"
    exact = await run(
        env.client, ["sh", "-c", 'printf "%s|%s" "$1" "$A"', "sh", text], container_id="web", env={"A": text}
    )
    assert exact.stdout == f"{text}|{text}".encode()


@pytest.mark.asyncio
async def test_non_utf8_bytes_are_refused_not_mangled(env: Env) -> None:
    # runc carries argv and env to the container through JSON, which would turn \xff into U+FFFD.
    odd = os.fsdecode(b"a\xff\xfeb")
    with pytest.raises(UsageError, match="must be UTF-8"):  # the client refuses before sending
        await run(env.client, ["printf", "%s", odd], container_id="web")
    start = pb.ExecStart.FromString(exec_start(["printf", "%s", "x"], {}, "", container_id="web").encode())
    start.argv_bytes[2] = b"a\xff"  # a client that does send them: the agent refuses
    async with env.client.stream(
        SERVICE, "Exec", pb.ExecOutput, client_streaming=True, server_streaming=True
    ) as stream:
        await stream.send(pb.ExecInput(start=start))
        with pytest.raises(RPCError) as refused:
            await stream.recv()
    assert refused.value.code == ttrpc.Code.INVALID_ARGUMENT
    assert "must be UTF-8" in refused.value.message
