"""The Agent API's container, logs and copy methods over a real ttrpc connection, on real runc."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from google.protobuf import empty_pb2

from kuasar.agent.services.containers import SERVICE, container_handlers
from kuasar.config import TEST_LIMITS
from kuasar.errors import RPCError
from kuasar.proto import agent_pb2 as pb
from kuasar.ttrpc.codes import Code
from kuasar.ttrpc.testing import client_server_pair
from tests.functional.bundle import make_bundle, runc_skip_reason, scratch_manager

pytestmark = pytest.mark.skipif(runc_skip_reason() is not None, reason=str(runc_skip_reason()))


@dataclass
class Api:
    client: Any
    tmp: str

    def bundle(self, name: str, *argv: str) -> str:
        return make_bundle(os.path.join(self.tmp, name), argv)

    async def call(self, method: str, request: Any, response_type: Any) -> Any:
        return await self.client.call(SERVICE, method, request, response_type, timeout=60)

    async def create(self, container_id: str, *argv: str, start: bool = True) -> pb.ContainerInfo:
        bundle = self.bundle(f"b-{container_id}", *argv)
        info = await self.call(
            "CreateContainer", pb.CreateContainerRequest(id=container_id, bundle=bundle), pb.ContainerInfo
        )
        if start:
            info = await self.call("StartContainer", pb.ContainerRequest(id=container_id), pb.ContainerInfo)
        return info

    async def logs(self, **fields: Any) -> list[pb.LogEntry]:
        request = pb.LogsRequest(**fields)
        async with self.client.stream(
            SERVICE, "Logs", pb.LogEntry, server_streaming=True, request=request
        ) as stream:
            return [entry async for entry in stream]

    async def wait_stopped(self, container_id: str) -> pb.ContainerInfo:
        async with asyncio.timeout(30):
            while True:
                listed = await self.call(
                    "ListContainers", pb.ListContainersRequest(all=True), pb.ListContainersResponse
                )
                for info in listed.containers:
                    if info.id == container_id and info.status == "stopped":
                        return info
                await asyncio.sleep(0.05)


@pytest_asyncio.fixture
async def api(tmp_path: object) -> AsyncIterator[Api]:
    tmp = str(tmp_path)
    manager = scratch_manager(tmp)
    try:
        async with client_server_pair(
            container_handlers(manager, limits=TEST_LIMITS), limits=TEST_LIMITS
        ) as (
            client,
            _server,
        ):
            yield Api(client, tmp)
    finally:
        await manager.close()
        manager.logs.close()


async def expect_code(code: Code, call: Any) -> RPCError:
    with pytest.raises(RPCError) as info:
        await call
    assert info.value.code == code, info.value
    return info.value


@pytest.mark.asyncio
async def test_lifecycle_and_bad_input(api: Api) -> None:
    created = await api.create("web", "sleep", "300", start=False)
    assert (created.id, created.status) == ("web", "created") and created.pid > 0
    await expect_code(Code.ALREADY_EXISTS, api.create("web", "sleep", "300", start=False))
    running = await api.call("StartContainer", pb.ContainerRequest(id="web"), pb.ContainerInfo)
    assert running.status == "running" and running.started_at > 0
    listed = await api.call("ListContainers", pb.ListContainersRequest(), pb.ListContainersResponse)
    assert [(c.id, c.status) for c in listed.containers] == [("web", "running")]
    await expect_code(
        Code.FAILED_PRECONDITION,
        api.call("RemoveContainer", pb.RemoveContainerRequest(id="web"), empty_pb2.Empty),
    )
    stopped = await api.call(
        "StopContainer",
        pb.StopContainerRequest(id="web", signal=signal.SIGKILL, timeout_seconds=5),
        pb.ContainerInfo,
    )
    assert stopped.status == "stopped" and stopped.HasField("exit") and stopped.exit.signal == signal.SIGKILL
    await expect_code(
        Code.FAILED_PRECONDITION,
        api.call("StopContainer", pb.StopContainerRequest(id="web"), pb.ContainerInfo),
    )
    await api.call("RemoveContainer", pb.RemoveContainerRequest(id="web"), empty_pb2.Empty)
    for method, request, response in (
        ("StartContainer", pb.ContainerRequest(id="web"), pb.ContainerInfo),
        ("StopContainer", pb.StopContainerRequest(id="web"), pb.ContainerInfo),
        ("RemoveContainer", pb.RemoveContainerRequest(id="web"), empty_pb2.Empty),
    ):
        await expect_code(Code.NOT_FOUND, api.call(method, request, response))
    await expect_code(Code.NOT_FOUND, api.logs(container_id="web"))
    await expect_code(
        Code.INVALID_ARGUMENT,
        api.call(
            "CreateContainer", pb.CreateContainerRequest(id="x", bundle="/nonexistent"), pb.ContainerInfo
        ),
    )


@pytest.mark.asyncio
async def test_remove_with_force_kills_a_running_container(api: Api) -> None:
    info = await api.create("f", "sleep", "300")
    await api.call("RemoveContainer", pb.RemoveContainerRequest(id="f", force=True), empty_pb2.Empty)
    assert not os.path.exists(f"/proc/{info.pid}")
    listed = await api.call("ListContainers", pb.ListContainersRequest(all=True), pb.ListContainersResponse)
    assert list(listed.containers) == []


@pytest.mark.asyncio
async def test_logs_tail_since_and_stream_filter(api: Api) -> None:
    await api.create("l", "sh", "-c", "echo a; echo b >&2; sleep 0.3; echo c; echo d >&2; exit 4")
    stopped = await api.wait_stopped("l")
    assert stopped.exit.exit_code == 4
    every = await api.logs(container_id="l")
    assert sorted((e.stream, e.data) for e in every) == [
        ("stderr", b"b\n"),
        ("stderr", b"d\n"),
        ("stdout", b"a\n"),
        ("stdout", b"c\n"),
    ]
    assert all(e.timestamp > 0 for e in every)
    assert [e.data for e in await api.logs(container_id="l", stdout=True)] == [b"a\n", b"c\n"]
    assert [e.data for e in await api.logs(container_id="l", stderr=True, tail=1)] == [b"d\n"]
    late = min(e.timestamp for e in every if e.data in (b"c\n", b"d\n"))
    assert sorted(e.data for e in await api.logs(container_id="l", since=late)) == [b"c\n", b"d\n"]
    assert sorted(e.data for e in await api.logs(container_id="l", until=late - 1)) == [b"a\n", b"b\n"]


@pytest.mark.asyncio
async def test_follow_sees_lines_written_after_it_started_and_ends_when_the_container_stops(api: Api) -> None:
    script = "echo first; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo second; echo third >&2"
    await api.create("follow", "sh", "-c", script)
    request = pb.LogsRequest(container_id="follow", follow=True)
    seen: list[bytes] = []
    async with asyncio.timeout(30):
        async with api.client.stream(
            SERVICE, "Logs", pb.LogEntry, server_streaming=True, request=request
        ) as stream:
            async for entry in stream:
                seen.append(entry.data)
                if entry.data == b"first\n":
                    open(os.path.join(api.tmp, "b-follow", "rootfs", "tmp", "go"), "w").close()
    assert seen == [b"first\n", b"second\n", b"third\n"]


@pytest.mark.asyncio
async def test_copy_100_mib_byte_exact_both_ways_into_a_running_container(api: Api) -> None:
    await api.create("cp", "sleep", "300")
    payload = os.urandom(1 << 20) * 100
    digest = hashlib.sha256(payload).hexdigest()
    chunk = 60 * 1024  # under TEST_LIMITS.max_message
    async with api.client.stream(SERVICE, "CopyIn", pb.CopyInResponse, client_streaming=True) as stream:
        header = pb.CopyHeader(
            container_id="cp",
            path="/tmp/big",
            kind=pb.CopyHeader.FILE,
            mode=0o600,
            mtime=1_700_000_000,
            size=len(payload),
        )
        await stream.send(pb.CopyChunk(header=header))
        for offset in range(0, len(payload), chunk):
            await stream.send(pb.CopyChunk(data=payload[offset : offset + chunk]))
        await stream.close_send()
        response = await stream.response()
    assert response.bytes_written == len(payload)
    inside = os.path.join(api.tmp, "b-cp", "rootfs", "tmp", "big")
    with open(inside, "rb") as file:
        assert hashlib.sha256(file.read()).hexdigest() == digest
    request = pb.CopyOutRequest(container_id="cp", path="/tmp/big")
    received = hashlib.sha256()
    async with api.client.stream(
        SERVICE, "CopyOut", pb.CopyChunk, server_streaming=True, request=request
    ) as out:
        first = await out.recv()
        assert first.header.size == len(payload) and first.header.mode == 0o600
        assert first.header.mtime == 1_700_000_000 and first.header.kind == pb.CopyHeader.FILE
        async for message in out:
            assert len(message.data) <= TEST_LIMITS.max_message
            received.update(message.data)
    assert received.hexdigest() == digest


@pytest.mark.asyncio
async def test_copy_refuses_escapes_and_bad_streams(api: Api) -> None:
    await api.create("esc", "sleep", "300")
    rootfs = os.path.join(api.tmp, "b-esc", "rootfs")
    os.symlink("/etc/shadow", os.path.join(rootfs, "shadow-link"))

    async def copy_out(path: str) -> bytes:
        request = pb.CopyOutRequest(container_id="esc", path=path)
        async with api.client.stream(
            SERVICE, "CopyOut", pb.CopyChunk, server_streaming=True, request=request
        ) as s:
            return b"".join([m.data async for m in s])

    await expect_code(Code.PERMISSION_DENIED, copy_out("/../../etc/passwd"))
    await expect_code(Code.PERMISSION_DENIED, copy_out("../../etc/passwd".join(["/tmp/", ""])))
    await expect_code(Code.NOT_FOUND, copy_out("/shadow-link"))  # the container's /etc/shadow: there is none
    assert b"root:x:0:0" in await copy_out("/etc/passwd")  # the bundle's own passwd
    await expect_code(Code.NOT_FOUND, copy_out_unknown(api))

    async with api.client.stream(SERVICE, "CopyIn", pb.CopyInResponse, client_streaming=True) as stream:
        await stream.send(pb.CopyChunk(data=b"no header"))
        await stream.close_send()
        await expect_code(Code.INVALID_ARGUMENT, stream.response())


async def copy_out_unknown(api: Api) -> None:
    request = pb.CopyOutRequest(container_id="ghost", path="/etc/passwd")
    async with api.client.stream(
        SERVICE, "CopyOut", pb.CopyChunk, server_streaming=True, request=request
    ) as s:
        async for _ in s:
            pass
