"""ContainerManager on real runc with a busybox bundle: lifecycle, exit status, logs, bad input."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from kuasar.agent.containers import ContainerManager
from kuasar.agent.logs import LogQuery, LogStore
from kuasar.errors import RPCError
from kuasar.ttrpc.codes import Code
from tests.functional.bundle import make_bundle, runc_skip_reason

pytestmark = pytest.mark.skipif(runc_skip_reason() is not None, reason=str(runc_skip_reason()))


@dataclass
class Env:
    manager: ContainerManager
    root: str
    tmp: str

    def bundle(self, name: str, *argv: str, terminal: bool = False) -> str:
        return make_bundle(os.path.join(self.tmp, name), argv, terminal=terminal)


@pytest_asyncio.fixture
async def env(tmp_path: object) -> AsyncIterator[Env]:
    tmp = str(tmp_path)
    root = os.path.join(tmp, "runc")
    manager = ContainerManager(
        LogStore(os.path.join(tmp, "logs")), root=root, state_dir=os.path.join(tmp, "state")
    )
    try:
        yield Env(manager, root, tmp)
    finally:
        await manager.close()
        manager.logs.close()


async def wait_status(manager: ContainerManager, container_id: str, status: str) -> None:
    async with asyncio.timeout(20):
        while (await manager.info(container_id)).status != status:
            await asyncio.sleep(0.05)


def runc_list(root: str) -> str:
    return subprocess.run(["runc", "--root", root, "list", "-q"], capture_output=True, text=True).stdout


@pytest.mark.asyncio
async def test_create_start_list_stop_remove(env: Env) -> None:
    bundle = env.bundle("b1", "sleep", "300")
    info = await env.manager.create("c1", bundle, {"app": "demo"})
    assert (info.status, info.bundle, dict(info.labels)) == ("created", bundle, {"app": "demo"})
    assert info.pid > 0 and info.created_at > 0
    assert "c1" in runc_list(env.root)
    started = await env.manager.start("c1")
    assert started.status == "running" and started.started_at >= info.created_at
    listed = await env.manager.list_containers()
    assert [(c.id, c.status) for c in listed] == [("c1", "running")]
    stopped = await env.manager.stop("c1", grace=0.5)  # sleep as PID 1 ignores SIGTERM: SIGKILL after grace
    assert stopped.status == "stopped"
    assert stopped.exit is not None and stopped.exit.signal == signal.SIGKILL
    assert await env.manager.list_containers() == []
    assert [c.id for c in await env.manager.list_containers(include_stopped=True)] == ["c1"]
    await env.manager.remove("c1")
    assert "c1" not in runc_list(env.root)
    with pytest.raises(RPCError) as info_err:
        await env.manager.info("c1")
    assert info_err.value.code == Code.NOT_FOUND


@pytest.mark.asyncio
async def test_exit_code_and_output_are_captured_apart(env: Env) -> None:
    bundle = env.bundle("b", "sh", "-c", "echo a; echo b >&2; exit 7")
    await env.manager.create("c", bundle)
    await env.manager.start("c")
    await wait_status(env.manager, "c", "stopped")
    info = await env.manager.info("c")
    assert info.exit is not None and (info.exit.exit_code, info.exit.signal) == (7, 0)
    assert info.finished_at >= info.started_at
    log = env.manager.logs.get("c")
    async with asyncio.timeout(10):
        while not log.closed:
            await asyncio.sleep(0.02)
    lines = [(line.stream, line.data) async for line in log.read(LogQuery())]
    assert sorted(lines) == [("stderr", b"b\n"), ("stdout", b"a\n")]


@pytest.mark.asyncio
async def test_stop_with_a_handled_signal_needs_no_kill(env: Env) -> None:
    script = "trap 'echo got-term; exit 3' TERM; echo ready; while true; do sleep 0.1; done"
    await env.manager.create("t", env.bundle("b", "sh", "-c", script))
    await env.manager.start("t")
    log = env.manager.logs.get("t")
    async with asyncio.timeout(10):
        async for line in log.read(LogQuery(follow=True)):
            if line.data == b"ready\n":
                break
    info = await env.manager.stop("t", grace=20)
    assert info.exit is not None and (info.exit.exit_code, info.exit.signal) == (3, 0)


@pytest.mark.asyncio
async def test_terminal_container_output_comes_from_the_pty(env: Env) -> None:
    await env.manager.create("tty", env.bundle("b", "sh", "-c", "tty; echo hello", terminal=True))
    await env.manager.start("tty")
    await wait_status(env.manager, "tty", "stopped")
    log = env.manager.logs.get("tty")
    async with asyncio.timeout(10):
        while not log.closed:
            await asyncio.sleep(0.02)
    text = b"".join([line.data async for line in log.read(LogQuery())])
    assert b"/dev/pts/" in text and b"hello\r\n" in text


@pytest.mark.asyncio
async def test_bad_input_gets_the_documented_statuses(env: Env) -> None:
    manager = env.manager
    for call in (manager.start("nope"), manager.stop("nope"), manager.remove("nope"), manager.info("nope")):
        with pytest.raises(RPCError) as unknown:
            await call
        assert unknown.value.code == Code.NOT_FOUND
    with pytest.raises(RPCError) as bad_bundle:
        await manager.create("x", os.path.join(env.tmp, "missing"))
    assert bad_bundle.value.code == Code.INVALID_ARGUMENT
    with pytest.raises(RPCError) as bad_id:
        await manager.create("../x", env.bundle("b0", "true"))
    assert bad_id.value.code == Code.INVALID_ARGUMENT

    bundle = env.bundle("b", "sleep", "300")
    await manager.create("d", bundle)
    with pytest.raises(RPCError) as duplicate:
        await manager.create("d", bundle)
    assert duplicate.value.code == Code.ALREADY_EXISTS
    await manager.start("d")
    with pytest.raises(RPCError) as twice:
        await manager.start("d")
    assert twice.value.code == Code.FAILED_PRECONDITION
    with pytest.raises(RPCError) as running:
        await manager.remove("d")
    assert running.value.code == Code.FAILED_PRECONDITION
    await manager.stop("d", signal=signal.SIGKILL)
    with pytest.raises(RPCError) as stopped:
        await manager.stop("d")
    assert stopped.value.code == Code.FAILED_PRECONDITION
    await manager.remove("d")


@pytest.mark.asyncio
async def test_force_remove_kills_a_running_container(env: Env) -> None:
    await env.manager.create("f", env.bundle("b", "sleep", "300"))
    info = await env.manager.start("f")
    await env.manager.remove("f", force=True)
    assert not os.path.exists(f"/proc/{info.pid}")
    assert "f" not in runc_list(env.root)


@pytest.mark.asyncio
async def test_runc_refusal_of_a_bundle_is_invalid_argument(env: Env) -> None:
    bundle = env.bundle("b", "sh")
    with open(os.path.join(bundle, "config.json"), "w", encoding="utf-8") as file:
        file.write('{"ociVersion": "1.0.2", "root": {"path": "rootfs"}}')  # no process
    with pytest.raises(RPCError) as refused:
        await env.manager.create("r", bundle)
    assert refused.value.code == Code.INVALID_ARGUMENT
    assert "runc create failed" in refused.value.message
    assert "r" not in runc_list(env.root)


@pytest.mark.asyncio
async def test_exec_argv_runs_inside_the_container(env: Env) -> None:
    await env.manager.create("e", env.bundle("b", "sleep", "300"))
    await env.manager.start("e")
    argv = env.manager.exec_argv(
        "e", ["sh", "-c", 'echo "$FOO $(id -u) $(pwd)"'], False, "/tmp", {"FOO": "x"}, "nobody"
    )
    result = subprocess.run(argv, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    assert result.stdout == b"x 65534 /tmp\n", result.stderr
    with pytest.raises(RPCError) as unknown_user:
        env.manager.exec_argv("e", ["true"], user="ghost")
    assert unknown_user.value.code == Code.INVALID_ARGUMENT
    await env.manager.remove("e", force=True)
    with pytest.raises(RPCError) as gone:
        env.manager.exec_argv("e", ["true"])
    assert gone.value.code == Code.NOT_FOUND
