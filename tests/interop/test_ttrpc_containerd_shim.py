"""Python ``kuasar.ttrpc.Client`` -> containerd 1.6's ``containerd-shim-runc-v2``: a production
ttrpc server (Go ttrpc 1.1.1) serving ``containerd.task.v2.Task``, started as containerd starts it.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from google.protobuf import empty_pb2

from kuasar import ttrpc
from kuasar.errors import ConnectionClosed, RPCError
from tests.interop.peer import python_client
from tests.interop.shim import TASK, TASK_SERVICE, Shim, alive

HANG_GUARD = 10.0


@pytest.mark.asyncio
async def test_connect_reports_the_shim_pid(runc_shim: Shim) -> None:
    async with python_client(runc_shim.socket_path) as client, asyncio.timeout(HANG_GUARD):
        reply = await client.call(
            TASK_SERVICE,
            "Connect",
            TASK["ConnectRequest"](id=runc_shim.id),
            TASK["ConnectResponse"],
            timeout=5,
            metadata=runc_shim.metadata,
        )
    assert reply.shim_pid == runc_shim.pid
    assert reply.shim_pid > 1
    assert reply.task_pid == 0  # no container was created


@pytest.mark.asyncio
async def test_state_of_unknown_container_is_not_found(runc_shim: Shim) -> None:
    async with python_client(runc_shim.socket_path) as client, asyncio.timeout(HANG_GUARD):
        with pytest.raises(RPCError) as info:
            await client.call(
                TASK_SERVICE,
                "State",
                TASK["StateRequest"](id="no-such-container", exec_id=""),
                empty_pb2.Empty,
                timeout=5,
                metadata=runc_shim.metadata,
            )
        assert info.value.code == ttrpc.Code.NOT_FOUND
        assert "not found" in info.value.message
        # unknown methods get Go's text from a production server too
        with pytest.raises(RPCError) as unknown:
            await client.call(TASK_SERVICE, "NoSuchMethod", empty_pb2.Empty(), empty_pb2.Empty, timeout=5)
    assert (unknown.value.code, unknown.value.message) == (ttrpc.Code.UNIMPLEMENTED, "method NoSuchMethod")


@pytest.mark.asyncio
async def test_shutdown_stops_the_shim(runc_shim: Shim) -> None:
    async with python_client(runc_shim.socket_path) as client, asyncio.timeout(HANG_GUARD):
        # The shim may exit before its reply is flushed; containerd's own client treats a closed
        # connection on Shutdown as success too. What must hold is checked below: it is gone.
        with contextlib.suppress(ConnectionClosed):
            await client.call(
                TASK_SERVICE,
                "Shutdown",
                TASK["ShutdownRequest"](id=runc_shim.id),
                empty_pb2.Empty,
                timeout=5,
                metadata=runc_shim.metadata,
            )
        for _ in range(100):
            if not runc_shim.socket_path.exists() and not alive(runc_shim.pid):
                break
            await asyncio.sleep(0.05)
    assert not alive(runc_shim.pid)
    assert not runc_shim.socket_path.exists()
