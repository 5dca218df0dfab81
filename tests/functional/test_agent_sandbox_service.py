"""grpc.SandboxService over real ttrpc connections, driven the way Kuasar's vmm-sandboxer drives it.

The sandboxer (kuasar ``vmm/sandbox/src/client.rs``) connects with retries, loops ``Check`` with 1 s
deadlines, calls ``SetupSandbox`` with the serde JSON of the CRI ``PodSandboxConfig``, syncs the
clock in two passes, and long-polls ``GetEvents``. Nothing here changes the host: the service runs
with its report-only policy (plus a resolv.conf path in ``tmp_path``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from google.protobuf import empty_pb2

from kuasar import ttrpc
from kuasar.agent.services.events import EventBus
from kuasar.agent.services.sandbox import SandboxServiceConfig, SandboxServiceState, sandbox_handlers
from kuasar.errors import DeadlineExceeded, RPCError
from kuasar.proto import containerd_events_ttrpc_pb2 as events_pb2
from kuasar.proto import containerd_task_events_pb2, health_pb2, sandbox_pb2
from kuasar.ttrpc.testing import client_server_pair

SERVICE = "grpc.SandboxService"
Empty = empty_pb2.Empty

POD_CONFIG = {
    "metadata": {
        "name": "nginx-7d9",
        "uid": "5c0e5a1e-1f7b-4a5e-9d6c-0c2b8f3e9a11",
        "namespace": "default",
        "attempt": 0,
    },
    "hostname": "nginx-7d9",
    "log_directory": "/var/log/pods/default_nginx-7d9_5c0e5a1e-1f7b-4a5e-9d6c-0c2b8f3e9a11",
    "dns_config": {
        "servers": ["10.96.0.10"],
        "searches": ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"],
        "options": ["ndots:5"],
    },
    "port_mappings": [],
    "labels": {"app": "nginx", "io.kubernetes.pod.namespace": "default"},
    "annotations": {"kubernetes.io/config.source": "api"},
    "linux": {
        "cgroup_parent": "/kubepods/besteffort/pod5c0e5a1e",
        "security_context": {"namespace_options": {"network": 0, "pid": 1, "ipc": 0, "target_id": ""}},
        "sysctls": {"net.ipv4.ip_unprivileged_port_start": "0"},
        "overhead": None,
        "resources": None,
    },
    "windows": None,
}
EXPECTED_RESOLV = (
    "search default.svc.cluster.local svc.cluster.local cluster.local\n"
    "nameserver 10.96.0.10\n"
    "options ndots:5\n"
)


def setup_request(
    config: dict[str, object] | bytes = POD_CONFIG, url: str = "PodSandboxConfig"
) -> sandbox_pb2.SetupSandboxRequest:
    value = config if isinstance(config, bytes) else json.dumps(config).encode()
    request = sandbox_pb2.SetupSandboxRequest(
        interfaces=[
            sandbox_pb2.Interface(
                device="eth0",
                name="eth0",
                IPAddresses=[sandbox_pb2.IPAddress(family=sandbox_pb2.v4, address="10.244.1.7", mask="24")],
                mtu=1450,
                hwAddr="02:42:0a:f4:01:07",
                type="tap",
            )
        ],
        routes=[
            sandbox_pb2.Route(gateway="10.244.1.1", device="eth0", family=sandbox_pb2.v4),
            sandbox_pb2.Route(dest="10.244.1.0/24", device="eth0", source="10.244.1.7", scope=253),
        ],
    )
    request.config.type_url = url
    request.config.value = value
    return request


def report_only(tmp_path: Path, **overrides: object) -> SandboxServiceState:
    config = SandboxServiceConfig(resolv_conf=str(tmp_path / "resolv.conf"), **overrides)  # type: ignore[arg-type]
    return SandboxServiceState(config)


async def call(
    client: ttrpc.Client, method: str, request: object, response: type, timeout: float | None = 10.0
) -> object:
    return await client.call(SERVICE, method, request, response, timeout=timeout)  # type: ignore[arg-type]


async def check_loop(client: ttrpc.Client, limit: float = 10.0) -> int:
    """Kuasar's client_check: Check with a 1 s timeout until it succeeds; returns the attempts."""
    deadline = time.monotonic() + limit
    attempts = 0
    while True:
        attempts += 1
        try:
            await call(client, "Check", health_pb2.CheckRequest(service=""), Empty, timeout=1.0)
            return attempts
        except (RPCError, DeadlineExceeded):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.01)


@pytest_asyncio.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[ttrpc.Client, SandboxServiceState]]:
    state = report_only(tmp_path)
    async with client_server_pair(sandbox_handlers(state)) as (client, _server):
        yield client, state


async def kuasar_sequence(client: ttrpc.Client, state: SandboxServiceState, tmp_path: Path) -> None:
    """Check loop, SetupSandbox, SyncClock (two passes), GetEvents — the sandboxer's start order."""
    assert await check_loop(client) >= 1

    await call(client, "SetupSandbox", setup_request(), Empty)
    assert (tmp_path / "resolv.conf").read_text() == EXPECTED_RESOLV
    kinds = {(a.kind, a.detail, a.applied) for a in state.actions}
    assert ("hostname", "nginx-7d9", False) in kinds  # reported, not applied
    assert ("resolv.conf", str(tmp_path / "resolv.conf"), True) in kinds
    assert ("sysctl", "net.ipv4.ip_unprivileged_port_start=0", False) in kinds
    commands = [a.argv for a in state.actions if a.argv]
    assert ("ip", "addr", "add", "10.244.1.7/24", "dev", "eth0") in commands
    assert ("ip", "link", "set", "dev", "eth0", "mtu", "1450", "arp", "on", "up") in commands
    routes = [c for c in commands if "route" in c]
    # flush first, then the route without a gateway, then the one with a gateway
    assert routes == [
        ("ip", "-4", "route", "flush", "table", "main"),
        (
            "ip",
            "-4",
            "route",
            "add",
            "10.244.1.0/24",
            "dev",
            "eth0",
            "src",
            "10.244.1.7",
            "scope",
            "253",
            "proto",
            "boot",
        ),
        (
            "ip",
            "-4",
            "route",
            "add",
            "default",
            "via",
            "10.244.1.1",
            "dev",
            "eth0",
            "scope",
            "0",
            "proto",
            "boot",
        ),
    ]
    assert not any(a.applied for a in state.actions if a.argv)

    # SyncClock pass 1
    before = time.clock_gettime_ns(time.CLOCK_REALTIME)
    packet = sandbox_pb2.SyncClockPacket(ClientSendTime=before)
    reply = await call(client, "SyncClock", packet, sandbox_pb2.SyncClockPacket, timeout=1.0)
    after = time.clock_gettime_ns(time.CLOCK_REALTIME)
    assert isinstance(reply, sandbox_pb2.SyncClockPacket)
    assert reply.ClientSendTime == before
    assert before <= reply.ClientArriveTime <= reply.ServerSendTime <= after
    assert reply.ServerArriveTime == 0 and reply.Delta == 0
    # the host's arithmetic, then pass 2 with a delta far beyond any drift: not permitted → clock kept
    reply.ServerArriveTime = time.clock_gettime_ns(time.CLOCK_REALTIME)
    reply.Delta = 3600 * 10**9
    second = await call(client, "SyncClock", reply, sandbox_pb2.SyncClockPacket, timeout=1.0)
    assert second == reply
    assert abs(time.clock_gettime_ns(time.CLOCK_REALTIME) - time.time_ns()) < 10**9
    assert time.clock_gettime_ns(time.CLOCK_REALTIME) < after + 1800 * 10**9
    assert ("clock", "+3600000000000 ns", False) in {(a.kind, a.detail, a.applied) for a in state.actions}

    # GetEvents: Kuasar long-polls without a deadline; the event arrives while it waits
    poll = asyncio.ensure_future(call(client, "GetEvents", Empty(), events_pb2.Envelope, timeout=None))
    # A barrier instead of a pause: Check starts after GetEvents, so it goes on the wire after it; the
    # server starts handlers in the order it reads requests, so once Check has its answer, GetEvents
    # is being served and still waits.
    barrier = asyncio.ensure_future(call(client, "Check", health_pb2.CheckRequest(), Empty, timeout=5.0))
    await asyncio.wait_for(barrier, 10)
    assert not poll.done()
    state.events.publish_oom("c0ffee")
    envelope = await asyncio.wait_for(poll, 10)
    assert isinstance(envelope, events_pb2.Envelope)
    assert envelope.topic == "/tasks/oom"
    assert envelope.namespace == "k8s.io"
    assert envelope.event.type_url == "containerd.events.TaskOOM"
    oom = containerd_task_events_pb2.TaskOOM.FromString(envelope.event.value)
    assert oom.container_id == "c0ffee"
    assert abs(envelope.timestamp.ToNanoseconds() - time.time_ns()) < 60 * 10**9


@pytest.mark.asyncio
async def test_kuasar_sequence_over_socketpair(tmp_path: Path) -> None:
    state = report_only(tmp_path)
    async with client_server_pair(sandbox_handlers(state)) as (client, _server):
        await kuasar_sequence(client, state, tmp_path)


@pytest.mark.asyncio
async def test_kuasar_sequence_over_unix_socket_with_connect_retry(tmp_path: Path) -> None:
    """The sandboxer dials every 10 ms until the guest listens; here the server starts late."""
    state = report_only(tmp_path)
    path = str(tmp_path / "task.sock")
    server = ttrpc.Server(sandbox_handlers(state))

    refused_twice = asyncio.Event()

    async def start_late() -> asyncio.Server:
        await refused_twice.wait()  # the guest listens only once the sandboxer has had to retry
        return await asyncio.start_unix_server(server.handle_connection, path)

    starting = asyncio.ensure_future(start_late())
    refused = 0
    async with asyncio.timeout(10):
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                refused += 1
                if refused >= 2:
                    refused_twice.set()
                await asyncio.sleep(0.01)  # the sandboxer's 10 ms redial interval
    listener = await starting
    try:
        async with ttrpc.Client(reader, writer) as client:
            await kuasar_sequence(client, state, tmp_path)
    finally:
        listener.close()
        server.close()
        await server.wait_closed()
        await listener.wait_closed()
    assert refused >= 2


@pytest.mark.asyncio
async def test_get_events_deadline_and_topic_filter(served: tuple[ttrpc.Client, SandboxServiceState]) -> None:
    client, state = served
    with pytest.raises((RPCError, DeadlineExceeded)) as info:
        await call(client, "GetEvents", Empty(), events_pb2.Envelope, timeout=0.3)
    if isinstance(info.value, RPCError):
        assert info.value.code == ttrpc.Code.DEADLINE_EXCEEDED
    # only /tasks/oom is returned (as Kuasar's guest); other topics are skipped, order kept
    state.events.publish("/tasks/exit", containerd_task_events_pb2.TaskOOM(container_id="not-an-oom"))
    state.events.publish_oom("first")
    state.events.publish_oom("second")
    got = []
    for _ in range(2):
        envelope = await call(client, "GetEvents", Empty(), events_pb2.Envelope, timeout=5.0)
        assert isinstance(envelope, events_pb2.Envelope)
        got.append(containerd_task_events_pb2.TaskOOM.FromString(envelope.event.value).container_id)
    assert got == ["first", "second"]
    assert state.events.pending() == 0


@pytest.mark.asyncio
async def test_event_bus_is_bounded() -> None:
    bus = EventBus(capacity=2)
    for name in ("a", "b", "c"):
        bus.publish_oom(name)
    assert bus.dropped == 1 and bus.pending() == 2
    first = await bus.next()
    assert containerd_task_events_pb2.TaskOOM.FromString(first.event.value).container_id == "b"


@pytest.mark.asyncio
async def test_setup_sandbox_rejects_other_config_types(
    served: tuple[ttrpc.Client, SandboxServiceState],
) -> None:
    client, state = served
    with pytest.raises(RPCError) as info:
        await call(
            client,
            "SetupSandbox",
            setup_request(url="type.googleapis.com/runtime.v1.PodSandboxConfig"),
            Empty,
        )
    assert info.value.code == ttrpc.Code.NOT_FOUND
    assert "SetUpSandbox/config/type.googleapis.com/runtime.v1.PodSandboxConfig is not supported" in str(
        info.value
    )
    with pytest.raises(RPCError) as info:
        await call(client, "SetupSandbox", sandbox_pb2.SetupSandboxRequest(), Empty)
    assert info.value.code == ttrpc.Code.NOT_FOUND
    assert not state.actions


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "PodSandboxConfig must be an object"),
        (json.dumps({"dns_config": {"servers": "10.96.0.10"}}).encode(), "dns_config.servers must be a list"),
        (json.dumps({"hostname": "bad host/name"}).encode(), "not a valid host name"),
        (json.dumps({"linux": {"sysctls": {"../../etc/passwd": "x"}}}).encode(), "not a sysctl name"),
    ],
)
async def test_setup_sandbox_rejects_malformed_json(
    served: tuple[ttrpc.Client, SandboxServiceState], tmp_path: Path, value: bytes, needle: str
) -> None:
    client, state = served
    with pytest.raises(RPCError) as info:
        await call(client, "SetupSandbox", setup_request(value), Empty)
    assert info.value.code == ttrpc.Code.INVALID_ARGUMENT
    assert "convert PodSandboxConfig failed" in str(info.value) and needle in str(info.value)
    assert not (tmp_path / "resolv.conf").exists() and not state.actions


@pytest.mark.asyncio
async def test_bad_network_input_is_invalid_argument(
    served: tuple[ttrpc.Client, SandboxServiceState],
) -> None:
    client, state = served
    bad_ip = sandbox_pb2.UpdateInterfacesRequest(
        interfaces=[
            sandbox_pb2.Interface(
                name="eth0", IPAddresses=[sandbox_pb2.IPAddress(address="10.0.0.300", mask="24")]
            )
        ]
    )
    bad_mask = sandbox_pb2.UpdateInterfacesRequest(
        interfaces=[
            sandbox_pb2.Interface(
                name="eth0", IPAddresses=[sandbox_pb2.IPAddress(address="fd00::1", mask="129")]
            )
        ]
    )
    bad_route = sandbox_pb2.UpdateRoutesRequest(routes=[sandbox_pb2.Route(dest="10.0.0.0/33", device="eth0")])
    for method, request, needle in [
        ("UpdateInterfaces", bad_ip, "interfaces[0].IPAddresses[0].address"),
        ("UpdateInterfaces", bad_mask, "interfaces[0].IPAddresses[0].mask"),
        ("UpdateRoutes", bad_route, "routes[0].dest"),
    ]:
        with pytest.raises(RPCError) as info:
            await call(client, method, request, Empty)
        assert info.value.code == ttrpc.Code.INVALID_ARGUMENT, method
        assert needle in str(info.value)
    assert not state.actions
    ok = sandbox_pb2.UpdateRoutesRequest(
        routes=[sandbox_pb2.Route(dest="fd00::/64", device="eth0", family=sandbox_pb2.v6)]
    )
    await call(client, "UpdateRoutes", ok, Empty)
    assert [a.argv for a in state.actions] == [
        ("ip", "-6", "route", "flush", "table", "main"),
        ("ip", "-6", "route", "add", "fd00::/64", "dev", "eth0", "scope", "0", "proto", "boot"),
    ]


@pytest.mark.asyncio
async def test_sync_clock_refuses_a_delta_before_the_epoch(tmp_path: Path) -> None:
    """With clock changes permitted, a negative delta is applied as negative (never cast to u64);
    one that would move the clock before 1970 is refused before anything changes."""
    state = report_only(tmp_path, set_clock=True)
    async with client_server_pair(sandbox_handlers(state)) as (client, _server):
        packet = sandbox_pb2.SyncClockPacket(Delta=-(time.clock_gettime_ns(time.CLOCK_REALTIME) + 10**18))
        with pytest.raises(RPCError) as info:
            await call(client, "SyncClock", packet, sandbox_pb2.SyncClockPacket, timeout=1.0)
    assert info.value.code == ttrpc.Code.INVALID_ARGUMENT
    assert "before 1970" in str(info.value)
    assert not state.actions


@pytest.mark.asyncio
async def test_exec_vm_process_outputs(served: tuple[ttrpc.Client, SandboxServiceState]) -> None:
    client, _state = served
    Req, Resp = sandbox_pb2.ExecVMProcessRequest, sandbox_pb2.ExecVMProcessResponse
    reply = await call(client, "ExecVMProcess", Req(command="echo hello; echo ignored >&2"), Resp)
    assert reply == Resp(out="hello\n")
    data = bytes(range(32, 127)) * 1000
    reply = await call(client, "ExecVMProcess", Req(command="cat", stdin=data), Resp)
    assert isinstance(reply, Resp) and reply.out.encode() == data
    reply = await call(client, "ExecVMProcess", Req(command="printf '\\377'"), Resp)
    assert reply == Resp(out="\ufffd")
    # bash features: Kuasar runs /bin/bash -c
    reply = await call(client, "ExecVMProcess", Req(command="echo ${BASH_VERSION:+bash}"), Resp)
    assert reply == Resp(out="bash\n")


@pytest.mark.asyncio
async def test_exec_vm_process_failure_text(served: tuple[ttrpc.Client, SandboxServiceState]) -> None:
    client, _state = served
    command = "echo partial; echo 'no such file' >&2; exit 3"
    with pytest.raises(RPCError) as info:
        await call(
            client,
            "ExecVMProcess",
            sandbox_pb2.ExecVMProcessRequest(command=command),
            sandbox_pb2.ExecVMProcessResponse,
        )
    assert info.value.code == ttrpc.Code.UNKNOWN
    assert str(info.value).endswith(f"cmd {command} failed with exit code 3 and error message no such file\n")
    with pytest.raises(RPCError) as info:
        await call(
            client,
            "ExecVMProcess",
            sandbox_pb2.ExecVMProcessRequest(command="kill -9 $$"),
            sandbox_pb2.ExecVMProcessResponse,
        )
    assert "failed with exit code 137 " in str(info.value)


@pytest.mark.asyncio
async def test_exec_vm_process_output_is_bounded(
    served: tuple[ttrpc.Client, SandboxServiceState], tmp_path: Path
) -> None:
    client, _state = served
    pidfile = tmp_path / "yes.pid"
    # endless output: stopped at the limit, the whole process group killed
    command = f"yes & echo $! > {pidfile}; wait"
    with pytest.raises(RPCError) as info:
        await call(
            client,
            "ExecVMProcess",
            sandbox_pb2.ExecVMProcessRequest(command=command),
            sandbox_pb2.ExecVMProcessResponse,
        )
    assert info.value.code == ttrpc.Code.RESOURCE_EXHAUSTED
    assert "more than" in str(info.value)
    await _gone(int(pidfile.read_text()))
    # just over 4 MiB in one go with the default limit
    with pytest.raises(RPCError) as info:
        await call(
            client,
            "ExecVMProcess",
            sandbox_pb2.ExecVMProcessRequest(command="head -c 4194304 /dev/zero"),
            sandbox_pb2.ExecVMProcessResponse,
        )
    assert info.value.code == ttrpc.Code.RESOURCE_EXHAUSTED
    # just under the limit comes back whole
    limit = SandboxServiceConfig().exec_output_limit
    reply = await call(
        client,
        "ExecVMProcess",
        sandbox_pb2.ExecVMProcessRequest(command=f"head -c {limit} /dev/zero | tr '\\0' x"),
        sandbox_pb2.ExecVMProcessResponse,
    )
    assert isinstance(reply, sandbox_pb2.ExecVMProcessResponse) and reply.out == "x" * limit


async def _gone(pid: int) -> None:
    async with asyncio.timeout(10):
        while os.path.exists(f"/proc/{pid}") and not _is_zombie(pid):
            await asyncio.sleep(0.02)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            return file.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except OSError:
        return True


@pytest.mark.asyncio
async def test_exec_vm_process_deadline_kills_the_group(
    served: tuple[ttrpc.Client, SandboxServiceState], tmp_path: Path
) -> None:
    client, _state = served
    pidfile = tmp_path / "sleep.pid"
    command = f"sleep 60 & echo $! > {pidfile}; wait"
    with pytest.raises((RPCError, DeadlineExceeded)) as info:
        await call(
            client,
            "ExecVMProcess",
            sandbox_pb2.ExecVMProcessRequest(command=command),
            sandbox_pb2.ExecVMProcessResponse,
            timeout=0.5,
        )
    if isinstance(info.value, RPCError):
        assert info.value.code == ttrpc.Code.DEADLINE_EXCEEDED
    await _gone(int(pidfile.read_text()))


@pytest.mark.asyncio
async def test_exec_vm_process_background_holder_does_not_hang(
    served: tuple[ttrpc.Client, SandboxServiceState], tmp_path: Path
) -> None:
    """A command that leaves a child holding stdout returns once it exits (the child is ended)."""
    client, _state = served
    pidfile = tmp_path / "bg.pid"
    command = f"sleep 60 & echo $! > {pidfile}; echo done"
    reply = await call(
        client,
        "ExecVMProcess",
        sandbox_pb2.ExecVMProcessRequest(command=command),
        sandbox_pb2.ExecVMProcessResponse,
        timeout=30,
    )
    assert reply == sandbox_pb2.ExecVMProcessResponse(out="done\n")
    await _gone(int(pidfile.read_text()))


@pytest.mark.asyncio
async def test_exec_vm_process_falls_back_to_sh(tmp_path: Path) -> None:
    state = report_only(tmp_path, shells=(str(tmp_path / "no-bash"), "/bin/sh"))
    async with client_server_pair(sandbox_handlers(state)) as (client, _server):
        reply = await call(
            client,
            "ExecVMProcess",
            sandbox_pb2.ExecVMProcessRequest(command="echo $0"),
            sandbox_pb2.ExecVMProcessResponse,
        )
    assert reply == sandbox_pb2.ExecVMProcessResponse(out="/bin/sh\n")


@pytest.mark.asyncio
async def test_unknown_method_is_unimplemented(served: tuple[ttrpc.Client, SandboxServiceState]) -> None:
    client, _state = served
    with pytest.raises(RPCError) as info:
        await call(client, "Shutdown", Empty(), Empty)
    assert info.value.code == ttrpc.Code.UNIMPLEMENTED


# --- applied for real, inside fresh network/UTS/mount namespaces (a stand-in for a VM guest) -------

_GUEST = r"""
import asyncio, subprocess, sys
subprocess.run(["mount", "-t", "sysfs", "sysfs", "/sys"], check=True)
mac = "02:42:0a:f4:01:07"
subprocess.run(["ip", "link", "add", "v0", "address", mac, "type", "veth", "peer", "name", "v1"], check=True)
subprocess.run(["ip", "link", "set", "v1", "up"], check=True)
from kuasar import ttrpc
from kuasar.agent.services.sandbox import SandboxServiceConfig, SandboxServiceState, sandbox_handlers

async def main():
    state = SandboxServiceState(SandboxServiceConfig.vm_guest(resolv_conf=sys.argv[2], set_clock=False))
    server = ttrpc.Server(sandbox_handlers(state))
    listener = await asyncio.start_unix_server(server.handle_connection, sys.argv[1])
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    listener.close()
    server.close()
    await server.wait_closed()
    await listener.wait_closed()

asyncio.run(main())
"""


@pytest.mark.asyncio
async def test_setup_sandbox_applied_in_namespaces(tmp_path: Path) -> None:
    """With everything permitted (as PID 1 of a VM), hostname, DNS, sysctls, the interface and the
    routes really change — here inside new net/UTS/mount namespaces, so the host is untouched."""
    path, resolv = str(tmp_path / "guest.sock"), tmp_path / "resolv.conf"
    argv = ["unshare", "--net", "--uts", "--mount", "--propagation", "private"]
    probe = await asyncio.create_subprocess_exec(*argv, "true", stderr=asyncio.subprocess.DEVNULL)
    if await probe.wait() != 0:
        pytest.skip("cannot create namespaces here (unshare --net --uts --mount failed)")
    guest = await asyncio.create_subprocess_exec(
        *argv,
        sys.executable,
        "-c",
        _GUEST,
        path,
        str(resolv),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert guest.stdin is not None and guest.stdout is not None
    try:
        async with asyncio.timeout(20):
            assert await guest.stdout.readline() == b"ready\n"
        reader, writer = await asyncio.open_unix_connection(path)
        async with ttrpc.Client(reader, writer) as client:
            await check_loop(client)
            await call(client, "SetupSandbox", setup_request(), Empty)
            exec_req = sandbox_pb2.ExecVMProcessRequest(
                command="hostname; cat /proc/sys/net/ipv4/ip_unprivileged_port_start;"
                " ip -o -4 addr show dev eth0; ip link show dev eth0; ip -4 route show table main"
            )
            reply = await call(client, "ExecVMProcess", exec_req, sandbox_pb2.ExecVMProcessResponse)
            # a MAC no link has is NOT_FOUND when applying (Kuasar: "Link not found")
            missing = sandbox_pb2.UpdateInterfacesRequest(
                interfaces=[sandbox_pb2.Interface(name="eth1", hwAddr="02:00:00:00:00:99")]
            )
            with pytest.raises(RPCError) as info:
                await call(client, "UpdateInterfaces", missing, Empty)
            assert info.value.code == ttrpc.Code.NOT_FOUND
    finally:
        guest.stdin.close()
        try:
            async with asyncio.timeout(10):
                await guest.wait()
        except TimeoutError:
            guest.kill()
            await guest.wait()
    assert isinstance(reply, sandbox_pb2.ExecVMProcessResponse)
    lines = reply.out.splitlines()
    assert lines[0] == "nginx-7d9" and lines[1] == "0"
    assert "inet 10.244.1.7/24" in reply.out
    assert "mtu 1450" in reply.out and "link/ether 02:42:0a:f4:01:07" in reply.out
    assert "default via 10.244.1.1 dev eth0" in reply.out
    assert "10.244.1.0/24 dev eth0 scope link src 10.244.1.7" in reply.out
    assert resolv.read_text() == EXPECTED_RESOLV
    assert guest.returncode == 0
