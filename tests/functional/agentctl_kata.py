"""A Kata agent that serves part of ``grpc.AgentService``, for ``kuasarctl agent``'s tests.

Written from kata-containers ``src/agent/src/rpc.rs`` at 7c6ba40c54 (the wire facts, not our code),
on the tests' own ttrpc server (``guests_ttrpc``, Rust ttrpc 0.9's texts: an unknown service is
INVALID_ARGUMENT ``<svc> service does not exist``, an unknown method UNIMPLEMENTED ``<m> method``);
the VMM in front is ours (``kuasar.transport.hvsock_server``), as the other stand-ins have it
(``guests``: their Kata agent serves ``grpc.Health`` only).

Served:

- ``grpc.Health/Check`` → SERVING; ``grpc.Health/Version`` → ``{0.0.1, 4.1.0}``;
- ``grpc.AgentService/GetGuestDetails`` → ``mem_block_size_bytes`` when asked (128 MiB here),
  ``support_mem_hotplug_probe`` false, ``agent_details`` with the version and ``init_daemon``;
- ``GetMetrics`` → a Prometheus text; ``ListInterfaces`` → ``lo``;
- ``SignalProcess``, ``WaitProcess`` on a container it does not have → INVALID_ARGUMENT
  ``InvalidContainerId`` (rpc.rs ``sandbox_err_to_ttrpc``);
- ``CreateSandbox``, ``DestroySandbox`` → Empty.

Every other AgentService method is UNIMPLEMENTED ``<m> method``, every other service INVALID_ARGUMENT.
Each Request is recorded (``calls``) before it is dispatched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from kuasar.proto import health_pb2, kata_agent_pb2, kata_types_pb2
from kuasar.transport.hvsock_server import HvsockServer, port_directory_resolver
from tests.functional.guests_ttrpc import Call, Code, Dialect, MiniTtrpcServer, RpcStatus

AGENT_VERSION = "4.1.0"
MEM_BLOCK_SIZE = 128 << 20
METRICS = "# HELP kata_agent_process_cpu_seconds_total CPU time\nkata_agent_process_cpu_seconds_total 0.25\n"


async def _check(call: Call) -> bytes:
    health_pb2.CheckRequest.FromString(call.payload)
    return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING).SerializeToString()


async def _version(call: Call) -> bytes:
    return health_pb2.VersionCheckResponse(
        grpc_version="0.0.1", agent_version=AGENT_VERSION
    ).SerializeToString()


async def _guest_details(call: Call) -> bytes:
    req = kata_agent_pb2.GuestDetailsRequest.FromString(call.payload)
    reply = kata_agent_pb2.GuestDetailsResponse(
        mem_block_size_bytes=MEM_BLOCK_SIZE if req.mem_block_size else 0,
        support_mem_hotplug_probe=False,
        agent_details=kata_agent_pb2.AgentDetails(
            version=AGENT_VERSION, init_daemon=True, storage_handlers=["9p", "virtio-fs", "blk"]
        ),
    )
    return reply.SerializeToString()


async def _metrics(call: Call) -> bytes:
    return kata_agent_pb2.Metrics(metrics=METRICS).SerializeToString()


async def _interfaces(call: Call) -> bytes:
    lo = kata_types_pb2.Interface(device="lo", name="lo", mtu=65536, type="loopback")
    lo.IPAddresses.add(family=kata_types_pb2.v4, address="127.0.0.1", mask="8")
    return kata_agent_pb2.Interfaces(Interfaces=[lo]).SerializeToString()


async def _no_container(call: Call) -> bytes:
    raise RpcStatus(Code.INVALID_ARGUMENT, "InvalidContainerId")


async def _empty(call: Call) -> bytes:
    return b""


@dataclass
class KataApiGuest:
    """A running stand-in: ``-d root id`` reaches it as a sandbox, ``socket`` is its VMM socket."""

    root: str
    id: str
    socket: str
    calls: list[Call] = field(default_factory=list)

    def methods(self, since: int = 0) -> list[str]:
        return [f"{c.service}/{c.method}" for c in self.calls[since:]]

    def payloads(self, method: str) -> list[bytes]:
        return [c.payload for c in self.calls if f"{c.service}/{c.method}" == method]


def _server(calls: list[Call]) -> MiniTtrpcServer:
    services = {
        "grpc.Health": {"Check": _check, "Version": _version},
        "grpc.AgentService": {
            "GetGuestDetails": _guest_details,
            "GetMetrics": _metrics,
            "ListInterfaces": _interfaces,
            "SignalProcess": _no_container,
            "WaitProcess": _no_container,
            "CreateSandbox": _empty,
            "DestroySandbox": _empty,
        },
    }
    return MiniTtrpcServer(services, dialect=Dialect.RUST_09, record=calls.append)


@contextlib.asynccontextmanager
async def kata_api_guest(sandbox_id: str = "kata-api-1") -> AsyncIterator[KataApiGuest]:
    """The stand-in behind a hybrid vsock VMM at ``ROOT/ID/task.vsock`` (Kuasar's layout)."""
    root = tempfile.mkdtemp(prefix="kgk", dir="/tmp")
    private = tempfile.mkdtemp(prefix="kgq", dir="/tmp")
    os.mkdir(os.path.join(root, sandbox_id))
    guest = KataApiGuest(root, sandbox_id, os.path.join(root, sandbox_id, "task.vsock"))
    ttrpc = _server(guest.calls)
    listener = await asyncio.start_unix_server(ttrpc.serve, os.path.join(private, "1024.sock"))
    vmm = HvsockServer(guest.socket, port_directory_resolver(private))
    try:
        await vmm.start()
        yield guest
    finally:
        vmm.close()
        await vmm.wait_closed()
        listener.close()
        ttrpc.close()
        await ttrpc.wait_closed()
        await listener.wait_closed()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(private, ignore_errors=True)


@contextlib.asynccontextmanager
async def kata_api_unix(path: str) -> AsyncIterator[list[Call]]:
    """The stand-in on a plain UNIX socket (``@name``: an abstract one), as a Kata test setup runs it
    (``KATA_AGENT_SERVER_ADDR=unix://...``); yields the list its calls are recorded in."""
    calls: list[Call] = []
    ttrpc = _server(calls)
    address = "\0" + path[1:] if path.startswith("@") else path
    listener = await asyncio.start_unix_server(ttrpc.serve, address)
    try:
        yield calls
    finally:
        listener.close()
        ttrpc.close()
        await ttrpc.wait_closed()
        await listener.wait_closed()
        if not path.startswith("@"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
